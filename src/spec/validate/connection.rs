//! A Connection's checks: a PostgreSQL URL without a password, and where the password is
//! read from instead.

use super::Checker;
use crate::spec::model::ConnectionSpec;

impl Checker<'_, '_> {
    pub(super) fn connection(&mut self, c: &ConnectionSpec) {
        let example = "e.g. postgres://report@db2:5432/reporting?sslmode=require";
        let scheme = c.url.split_once("://").map(|(scheme, _)| scheme.trim());
        let parsed = if c.url.trim().is_empty() {
            // An empty conninfo parses, as "every default": never what was meant.
            self.error_hint("spec.url", "the URL is empty", Some(example.into()));
            None
        } else if let Some(scheme) = scheme.filter(|s| !matches!(*s, "postgres" | "postgresql")) {
            // Only the scheme is shown: the rest may hold a password.
            self.error_hint(
                "spec.url",
                format!("`{scheme}://` is not a PostgreSQL URL"),
                Some(format!("write postgres:// or postgresql://, {example}")),
            );
            None
        } else {
            // libpq's reading, TLS keys included (`sslmode=verify-full`, `sslrootcert`), as
            // pgsched connects with it. The certificate files are not read here: they live on
            // the machine pgsched runs on, not where the specs are validated.
            Some(crate::pgurl::parse(&c.url))
        };
        match parsed {
            Some(Err(e)) => {
                self.error_hint(
                    "spec.url",
                    format!("not a PostgreSQL connection URL: {e}"),
                    Some(example.into()),
                );
            }
            // Say where without repeating the secret.
            Some(Ok(conn)) if conn.config.get_password().is_some() => self.error_hint(
                "spec.url",
                "the URL contains a password; secrets must not be written in spec files",
                Some(
                    "remove it from the URL and use `passwordFromEnv` or `passwordFromFile`".into(),
                ),
            ),
            None | Some(Ok(_)) => {}
        }
        if c.password_from_env.is_some() && c.password_from_file.is_some() {
            self.error(
                "spec.passwordFromFile",
                "`passwordFromEnv` and `passwordFromFile` are exclusive",
            );
        }
        if let Some(var) = &c.password_from_env {
            let valid = !var.is_empty()
                && !var.as_bytes()[0].is_ascii_digit()
                && var.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                self.error(
                    "spec.passwordFromEnv",
                    format!("`{var}` is not an environment variable name"),
                );
            }
        }
        if let Some(file) = &c.password_from_file {
            if file.trim().is_empty() {
                self.error("spec.passwordFromFile", "the path is empty");
            }
        }
    }
}
