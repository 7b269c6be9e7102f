//! One connection to the scheduler's database that comes back after it is lost. A loop holds a
//! [`Session`], asks it for a client before each round of work ([`Session::client`] connects
//! and sets the session up when there is no live connection), and hands back the error of a
//! failed round ([`Session::failed`]): a connection that closed, or that turned read-only (a
//! failover left it on a standby), is dropped, so the next round connects afresh. How long to
//! wait before that round is the loop's [`crate::backoff::Backoff`].
//!
//! The set-up of each kind of session (its name in `pg_stat_activity`, its keepalives, its
//! settings, whether it migrates) is [`SessionOptions`]; the SQL it runs lives here in `store/`.

use crate::store::tls::Tls;
use crate::store::{migrations::migrate, Context, StoreError};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config};

/// How a [`Session`] is set up after it connects.
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// `application_name`, unless the URL names one, so the session is recognisable in
    /// `pg_stat_activity`.
    pub application_name: Option<String>,
    /// TCP keepalives, for a session that may wait long without sending.
    pub keepalive: Keepalive,
    /// Give up connecting after this long (none: the URL's `connect_timeout`, if any).
    pub connect_timeout: Option<Duration>,
    /// Migrate the schema after every (re)connection: a database restored from an older backup
    /// comes back up to date.
    pub migrate: bool,
    /// Session settings run after connecting, one of this module's constants.
    pub settings: Option<&'static str>,
}

/// TCP keepalives of a session (Unix sockets ignore them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Keepalive {
    /// The operating system's defaults.
    #[default]
    Default,
    /// A dead peer is noticed within about a minute ([`crate::store::keep_alive`]).
    Minute,
    /// Within about ten seconds: the leadership must not outlive its server by long.
    Seconds,
}

/// The settings of the Timeout loop's work session. `pgsched.expiring` keeps its own expiry
/// statements from waking it (see 0002_timeouts.sql); `lock_timeout`: a Timeout whose table
/// is locked by DDL must not stall the others; `statement_timeout`: nor one whose batch runs
/// away (no index on a huge table).
pub const TIMEOUT_WORK_SETTINGS: &str =
    "SET pgsched.expiring = 'on'; SET lock_timeout = '2s'; SET statement_timeout = '60s'";

/// A connection that comes back; see the module documentation.
pub struct Session {
    /// The parsed URL, or why it cannot be used (kept to be reported on every connect).
    target: Result<(Config, Tls), std::sync::Arc<crate::store::tls::TargetError>>,
    options: SessionOptions,
    client: Option<Client>,
}

impl Session {
    /// A session to `url` (the scheduler's database, [`crate::store::scheduler_target`]). An
    /// invalid URL is reported by [`Session::client`], every time.
    pub fn new(url: &str, options: SessionOptions) -> Session {
        let target = crate::store::scheduler_target(url).map(|(mut config, tls)| {
            if let Some(name) = &options.application_name {
                if config.get_application_name().is_none() {
                    config.application_name(name);
                }
            }
            match options.keepalive {
                Keepalive::Default => {}
                Keepalive::Minute => crate::store::keep_alive(&mut config),
                Keepalive::Seconds => {
                    config
                        .keepalives(true)
                        .keepalives_idle(Duration::from_secs(5))
                        .keepalives_interval(Duration::from_secs(2))
                        .keepalives_retries(3);
                }
            }
            if let Some(timeout) = options.connect_timeout {
                config.connect_timeout(timeout);
            }
            (config, tls)
        });
        Session {
            target: target.map_err(std::sync::Arc::new),
            options,
            client: None,
        }
    }

    /// A live client: the one connected before, or a new one, set up.
    pub async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let client = self.connect().await?;
            self.client = Some(client);
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Whether the session holds a connection that has not closed.
    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// A round of work on the session failed with `error`: a connection that is gone, or that
    /// can only read (a standby after a failover), is dropped, so the next round connects again.
    /// Other errors (a constraint, a bad statement) leave it connected.
    pub fn failed(&mut self, error: &StoreError) {
        let read_only = error.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION);
        let closed = self.client.as_ref().is_none_or(Client::is_closed);
        let not_from_server =
            matches!(error, StoreError::Db { source, .. } if source.as_db_error().is_none());
        if read_only || closed || not_from_server {
            self.client = None;
        }
    }

    /// Drops the connection (closing it); the next [`Session::client`] connects again.
    pub fn disconnect(&mut self) {
        self.client = None;
    }

    async fn connect(&self) -> Result<Client, StoreError> {
        let (config, tls) = self
            .target
            .as_ref()
            .map_err(|e| StoreError::Config(e.clone()))?;
        let (mut client, connection) = config
            .connect(tls.clone())
            .await
            .context("connecting to PostgreSQL")?;
        let name = self.options.application_name.clone().unwrap_or_default();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(session = %name, error = %e, "database connection closed");
            }
        });
        if self.options.migrate {
            migrate(&mut client).await?;
        }
        if let Some(settings) = self.options.settings {
            client
                .batch_execute(settings)
                .await
                .context("setting the session up")?;
        }
        Ok(client)
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("options", &self.options)
            .field("connected", &self.is_connected())
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// Transaction control and session settings of the connections tasks run on

/// Where a session stands with respect to a transaction block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Outside a block: each statement is its own transaction.
    Idle,
    /// Inside a block (after `BEGIN`).
    InBlock,
    /// Inside a block that failed: only a rollback is accepted.
    Aborted,
}

/// Asks the server where the session stands. There is no SQL function for it, but outside a
/// block each statement starts its own transaction, whose start time is the statement's;
/// inside one the transaction started with an earlier statement; an aborted one refuses this.
pub async fn transaction_state(client: &Client) -> Result<TransactionState, tokio_postgres::Error> {
    match client
        .simple_query("SELECT transaction_timestamp() <> statement_timestamp()")
        .await
    {
        Ok(messages) => {
            let in_block = messages.iter().any(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0) == Some("t"),
                _ => false,
            });
            Ok(if in_block {
                TransactionState::InBlock
            } else {
                TransactionState::Idle
            })
        }
        Err(e) if e.code() == Some(&SqlState::IN_FAILED_SQL_TRANSACTION) => {
            Ok(TransactionState::Aborted)
        }
        Err(e) => Err(e),
    }
}

/// `BEGIN`.
pub async fn begin(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("BEGIN").await
}

/// `COMMIT`.
pub async fn commit(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("COMMIT").await
}

/// `ROLLBACK`.
pub async fn rollback(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("ROLLBACK").await
}

/// The savepoint a chain step in a transaction runs under, so that a step that fails and is
/// retried (or whose failure is allowed) undoes only its own work.
const STEP_SAVEPOINT: &str = "pgsched_step";

/// `SAVEPOINT` before a chain step.
pub async fn step_savepoint(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SAVEPOINT {STEP_SAVEPOINT}"))
        .await
}

/// `RELEASE SAVEPOINT` after a step that succeeded.
pub async fn release_step_savepoint(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("RELEASE SAVEPOINT {STEP_SAVEPOINT}"))
        .await
}

/// `ROLLBACK TO SAVEPOINT` after a step that failed.
pub async fn roll_back_step(client: &Client) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("ROLLBACK TO SAVEPOINT {STEP_SAVEPOINT}"))
        .await
}

/// `SET statement_timeout`, to the millisecond: the server-side backstop of a task's timeout.
pub async fn set_statement_timeout(
    client: &Client,
    limit: Duration,
) -> Result<(), tokio_postgres::Error> {
    client
        .batch_execute(&format!("SET statement_timeout = {}", limit.as_millis()))
        .await
}

/// `RESET statement_timeout`, so that the next task on a pooled connection has none.
pub async fn reset_statement_timeout(client: &Client) -> Result<(), tokio_postgres::Error> {
    client.batch_execute("RESET statement_timeout").await
}

/// `pg_notify(channel, payload)`: the `notify` built-in.
pub async fn notify(
    client: &Client,
    channel: &str,
    payload: &str,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
        .await
        .map(|_| ())
}
