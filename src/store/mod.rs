//! Everything that speaks SQL: connecting, migrations, reading the managed objects, applying
//! a plan in one transaction, and the plan-time checks against the live schema. Every
//! identifier that comes from a spec is quoted and every value is bound as a parameter.

pub mod chains;
pub mod checks;
pub mod claims;
pub mod leader;
pub mod listener;
pub mod migrations;
pub mod objects;
pub mod report;
pub mod runs;
pub mod session;
pub mod states;
pub mod timeouts;
pub mod tls;

/// Advisory lock keys (two-int form, first int "pgsc"). One for migrations, one for applying
/// plans, so two processes starting or reconciling at once take turns.
pub const LOCK_CLASS: i32 = 0x7067_7363;
/// Second key of the lock held while migrating the schema.
pub const LOCK_MIGRATE: i32 = 1;
/// Second key of the lock held while applying a plan.
pub const LOCK_RECONCILE: i32 = 2;

/// A database error with what pgsched was doing when it happened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query or connection failed.
    #[error("{context}: {}", describe_pg_error(.source))]
    Db {
        /// What pgsched was doing, e.g. `reading connections`.
        context: String,
        /// The driver's error; [`StoreError::code`] gives its SQLSTATE.
        #[source]
        source: tokio_postgres::Error,
    },
    /// A newer pgsched migrated the schema; this one must not touch it.
    #[error("the pgsched schema is at version {found}, newer than this pgsched knows ({known}); upgrade pgsched")]
    SchemaTooNew {
        /// The version recorded in the database.
        found: i32,
        /// The newest version this build has migrations for.
        known: i32,
    },
    /// No connection could be had (pool closed or timed out, no answer in time).
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database URL (or its TLS files) cannot be used; holds the reason, never the URL.
    #[error("the database URL: {0}")]
    Config(#[source] std::sync::Arc<tls::TargetError>),
}

impl StoreError {
    /// The server's SQLSTATE, when the server raised the error.
    pub fn code(&self) -> Option<&tokio_postgres::error::SqlState> {
        match self {
            StoreError::Db { source, .. } => source.code(),
            _ => None,
        }
    }
}

/// Adds context to a tokio-postgres result.
pub trait Context<T> {
    /// Wraps an error as [`StoreError::Db`] with `what` (what pgsched was doing).
    fn context(self, what: impl Into<String>) -> Result<T, StoreError>;
}

impl<T> Context<T> for Result<T, tokio_postgres::Error> {
    fn context(self, what: impl Into<String>) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Db {
            context: what.into(),
            source,
        })
    }
}

/// The server's message with its detail and hint, rather than tokio-postgres' terse "db error".
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(detail) = db.detail() {
                s.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                s.push_str(&format!("; hint: {hint}"));
            }
            s
        }
        None => {
            let text = e.to_string();
            match std::error::Error::source(e) {
                Some(inner) => format!("{text}: {inner}"),
                None => text,
            }
        }
    }
}

/// The scheduler's own database (`--database-url`): the URL with its TLS ([`tls::target`]), and,
/// as libpq does, when the URL has no password, the one from `PGPASSWORD`, else from the
/// password file (`PGPASSFILE`, default `~/.pgpass`), so deployments keep the secret out of
/// the URL. Named Connections never use these: theirs come from their specs.
pub fn scheduler_target(url: &str) -> Result<(tokio_postgres::Config, tls::Tls), tls::TargetError> {
    use std::os::unix::ffi::OsStrExt;
    let (mut config, tls) = tls::target(url)?;
    if config.get_password().is_none() {
        if let Some(password) = std::env::var_os("PGPASSWORD").filter(|p| !p.is_empty()) {
            config.password(password.as_bytes());
        } else if let Some(password) = password_from_file(&config) {
            config.password(password);
        }
    }
    Ok((config, tls))
}

/// The password file's entry for `config`, if the file exists, is private, and has one.
fn password_from_file(config: &tokio_postgres::Config) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = match std::env::var_os("PGPASSFILE").filter(|p| !p.is_empty()) {
        Some(path) => std::path::PathBuf::from(path),
        None => std::path::Path::new(&std::env::var_os("HOME")?).join(".pgpass"),
    };
    let meta = std::fs::metadata(&path).ok()?;
    if !meta.is_file() {
        tracing::warn!(file = %path.display(), "the password file is not a plain file; ignored");
        return None;
    }
    if meta.permissions().mode() & 0o077 != 0 {
        // libpq's rule: a password file others can read is ignored, with a warning.
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                file = %path.display(),
                "the password file has group or world access and is ignored; chmod 0600 it"
            );
        });
        return None;
    }
    let (host, port, database, user) =
        crate::pgurl::pgpass_key(config, || whoami::username().ok())?;
    let text = std::fs::read(&path).ok()?;
    // An empty password counts as none, as in libpq.
    crate::pgurl::pgpass_lookup(
        &String::from_utf8_lossy(&text),
        &host,
        port,
        &database,
        &user,
    )
    .filter(|password| !password.is_empty())
}

/// TCP keepalives for a connection that may wait long without sending (a LISTEN, a loop that
/// sleeps to a far deadline): without them a peer that vanished from the network is noticed
/// only after hours. Unix sockets ignore them.
pub fn keep_alive(config: &mut tokio_postgres::Config) {
    config
        .keepalives_idle(std::time::Duration::from_secs(30))
        .keepalives_interval(std::time::Duration::from_secs(10))
        .keepalives_retries(3);
}

/// Opens a connection to the scheduler's database ([`scheduler_target`]) and drives it on a
/// background task.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    let (config, tls) = scheduler_target(url).map_err(|e| StoreError::Config(e.into()))?;
    let (client, connection) = config
        .connect(tls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Quotes an identifier for SQL: `booking` → `"booking"`, with inner quotes doubled.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `schema.table` or `table` (schema `public`) → (schema, table).
pub fn split_table(table: &str) -> (String, String) {
    match table.split_once('.') {
        Some((schema, name)) => (schema.to_string(), name.to_string()),
        None => ("public".to_string(), table.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("booking"), "\"booking\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(split_table("app.booking"), ("app".into(), "booking".into()));
        assert_eq!(split_table("booking"), ("public".into(), "booking".into()));
    }
}
