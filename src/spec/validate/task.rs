//! The task of a job or a chain step: exactly one of `sql`, `command`, `shell` and `builtin`,
//! each well-formed, with only the fields that apply to it (`env`, `workingDir`, `database`).

use super::Checker;
use crate::spec::model::{Builtin, HasTask};
use crate::spec::sql::scan_sql;
use crate::spec::yaml::FieldPath;

impl Checker<'_, '_> {
    /// `database` says where SQL runs: a task that runs none would silently ignore it.
    pub(super) fn database_applies(&mut self, base: &str, t: &dyn HasTask) {
        let set = t.task_fields_set();
        let uses_database =
            t.sql().is_some() || matches!(t.builtin(), Some(Builtin::Notify { .. }));
        if set.len() == 1 && !uses_database {
            self.error_hint(
                &format!("{base}.database"),
                format!(
                    "`database` applies only to `sql` tasks and the `notify` builtin, not to `{}`",
                    set[0]
                ),
                Some("remove `database`".into()),
            );
        }
    }

    pub(super) fn task(&mut self, base: &str, t: &dyn HasTask) {
        if !self.one_task(base, &t.task_fields_set()) {
            return;
        }
        self.env_and_working_dir(base, t);
        if let Some(sql) = t.sql() {
            self.task_sql(base, sql);
        }
        if let Some(argv) = t.command() {
            if argv.first().is_none_or(|p| p.trim().is_empty()) {
                self.error_hint(
                    &format!("{base}.command"),
                    "the command is empty",
                    Some(
                        "write the program and its arguments, e.g. [pg_dump, --format=custom, app]"
                            .into(),
                    ),
                );
            }
        }
        if let Some(script) = t.shell() {
            if script.trim().is_empty() {
                self.error(&format!("{base}.shell"), "the shell script is empty");
            }
        }
        if let Some(builtin) = t.builtin() {
            self.builtin(&format!("{base}.builtin"), builtin);
        }
    }

    /// Whether exactly one task field is set; reports the error when not.
    fn one_task(&mut self, base: &str, set: &[&'static str]) -> bool {
        match set.len() {
            0 => {
                self.error_hint(
                    base,
                    "no task",
                    Some("set exactly one of `sql`, `command`, `shell` or `builtin`".into()),
                );
                false
            }
            1 => true,
            _ => {
                self.error_hint(
                    &format!("{base}.{}", set[1]),
                    format!("`{}` and `{}` are both set", set[0], set[1]),
                    Some("a task has exactly one of `sql`, `command`, `shell` or `builtin`".into()),
                );
                false
            }
        }
    }

    /// `env` and `workingDir`: only for a child process, and no variable pgsched sets itself.
    fn env_and_working_dir(&mut self, base: &str, t: &dyn HasTask) {
        if t.command().is_none() && t.shell().is_none() {
            if !t.env().is_empty() {
                self.error(
                    &format!("{base}.env"),
                    "`env` applies only to `command` and `shell` tasks",
                );
            }
            if t.working_dir().is_some() {
                self.error(
                    &format!("{base}.workingDir"),
                    "`workingDir` applies only to `command` and `shell` tasks",
                );
            }
        }
        for key in t.env().keys() {
            let valid = !key.is_empty()
                && !key.as_bytes()[0].is_ascii_digit()
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if valid && key.starts_with("PGSCHED_") {
                let path = FieldPath::parse(base).key("env").key(key.clone());
                self.error_at(
                    path,
                    format!("`{key}` is set by pgsched for every run (PGSCHED_PARAMS, PGSCHED_JOB, PGSCHED_RUN_ID, PGSCHED_ATTEMPT)"),
                )
                .hint = Some("choose a name that does not start with PGSCHED_".into());
            }
            if !valid {
                let path = FieldPath::parse(base).key("env").key(key.clone());
                self.error_at(
                    path,
                    format!("`{key}` is not a valid environment variable name (letters, digits and _, not starting with a digit)"),
                );
            }
        }
    }

    fn task_sql(&mut self, base: &str, sql: &str) {
        let shape = scan_sql(sql);
        if shape.statements == 0 {
            self.error(&format!("{base}.sql"), "the SQL is empty");
        } else if shape.max_param > 1 {
            self.error_hint(
                &format!("{base}.sql"),
                format!(
                    "the SQL uses ${}, but only $1 (the run's parameters as jsonb) is bound",
                    shape.max_param
                ),
                Some("read values from $1, e.g. ($1->>'user_id')::bigint".into()),
            );
        } else if shape.max_param == 1 && shape.statements > 1 {
            self.error_hint(
                &format!("{base}.sql"),
                format!("the SQL uses $1 but holds {} statements", shape.statements),
                Some("a statement with parameters must be a single statement; split it into chain steps".into()),
            );
        }
    }

    fn builtin(&mut self, base: &str, builtin: &Builtin) {
        match builtin {
            Builtin::Sleep { .. } => {}
            Builtin::Log { message, .. } => {
                if message.trim().is_empty() {
                    self.error(&format!("{base}.message"), "the log message is empty");
                }
            }
            Builtin::Notify { channel, .. } => {
                if channel.is_empty() || channel.len() > 63 {
                    self.error(
                        &format!("{base}.channel"),
                        "a NOTIFY channel name must have 1 to 63 bytes",
                    );
                }
            }
            Builtin::Http {
                url,
                expect_status,
                headers,
                ..
            } => {
                let rest = url
                    .strip_prefix("http://")
                    .or_else(|| url.strip_prefix("https://"));
                match rest {
                    None => self.error_hint(
                        &format!("{base}.url"),
                        format!("`{url}` is not an http:// or https:// URL"),
                        None,
                    ),
                    Some(rest) if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) => {
                        self.error(&format!("{base}.url"), format!("`{url}` has no host"));
                    }
                    Some(_) => {}
                }
                if expect_status.as_ref().is_some_and(Vec::is_empty) {
                    self.error_hint(
                        &format!("{base}.expectStatus"),
                        "`expectStatus` is empty, so every response would fail the run",
                        Some("list the accepted codes, e.g. [200, 204], or remove it to accept any 2xx".into()),
                    );
                }
                for name in headers.keys() {
                    // RFC 9110 token characters.
                    let valid = !name.is_empty()
                        && name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                    if !valid {
                        self.error_at(
                            FieldPath::parse(base).key("headers").key(name.clone()),
                            format!("`{name}` is not an HTTP header name"),
                        );
                    }
                }
                for (i, code) in expect_status.iter().flatten().enumerate() {
                    if !(100..=599).contains(code) {
                        self.error(
                            &format!("{base}.expectStatus[{i}]"),
                            format!("{code} is not an HTTP status code (100 to 599)"),
                        );
                    }
                }
            }
        }
    }
}
