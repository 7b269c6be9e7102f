//! The Timeout kind's deadline loop: rows of an application table change state (or go) when a
//! time limit passes, on time, and never while someone else holds them.
//!
//! For each Timeout that is not suspended the loop knows the next deadline, `min(column) +
//! after` over the rows matching `where`, and sleeps until the earliest across all Timeouts.
//! It learns of new rows from the statement-level trigger `apply` installs on each table
//! (NOTIFY on `pgsched_timeouts` with the Timeout's name), of changed Timeouts from `apply`'s
//! own NOTIFY (`*`), and, as a fallback for anything missed, from a poll (default 5 s): a lost
//! notification delays an expiry by at most the poll interval.
//!
//! At a deadline it runs expiry batches: one statement each that picks due rows `FOR UPDATE
//! SKIP LOCKED`, re-checks the condition and the deadline, applies `set` or deletes, records
//! the run and stores the next deadline (see [`crate::store::timeouts::expire_sql`]). Rows
//! another transaction holds are left and tried again [`TimeoutConfig::locked_retry`] later
//! (backing off to 1 s while they stay held),
//! while rows that fall due in between are still expired on time. Timeouts take turns one
//! batch at a time, so a large backlog in one does not hold up the others, and a Timeout that
//! fails (its table was dropped) records `last_error` and is retried on the next poll.
//!
//! Two connections: a dedicated one that only LISTENs (reconnected with back-off and
//! resubscribed after a loss, after which everything is recomputed, since notifications may
//! have been missed) and a work connection for the queries (also reconnected with back-off).
//! Deadlines are computed by the server with its own now(), and the loop converts them to its
//! own monotonic clock by offset from when it asked, so clock differences between the two
//! machines do not matter.

use crate::store::listener::Listener;
use crate::store::session::{Keepalive, Session, SessionOptions, TIMEOUT_WORK_SETTINGS};
use crate::store::timeouts::CHANNEL;
use crate::store::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod deadline_loop;
mod tracked;

use deadline_loop::DeadlineLoop;

/// How the deadline loop runs.
#[derive(Debug, Clone)]
pub struct TimeoutConfig {
    /// The scheduler's database (tokio-postgres key=value or URL form).
    pub database_url: String,
    /// The fallback: every Timeout's deadline is recomputed, and the list of Timeouts read
    /// again, this often, whatever notifications say. Default 5 s.
    pub poll: Duration,
    /// Recorded as `runs.worker` of each firing: which replica expired the rows.
    pub worker: String,
    /// How soon due rows that another transaction held locked are tried again. Default 100 ms;
    /// while the same rows stay held, the wait doubles up to 1 s, so a transaction left open
    /// for hours costs one statement a second, not ten.
    pub locked_retry: Duration,
    /// Counters the loop keeps, for /metrics and benchmarks.
    pub metrics: Arc<TimeoutMetrics>,
}

/// What the deadline loop has done since it started. Read with `Ordering::Relaxed`.
#[derive(Debug, Default)]
pub struct TimeoutMetrics {
    /// Statements sent on the work connection (connection set-up aside): the load the loop
    /// puts on the database.
    pub statements: AtomicU64,
    /// Expiry statements run.
    pub batches: AtomicU64,
    /// Rows expired (updated or deleted).
    pub rows_expired: AtomicU64,
    /// Notifications received on the listen connection.
    pub notifications: AtomicU64,
    /// Failures recorded as a Timeout's `last_error`.
    pub failures: AtomicU64,
    /// Times the work or listen connection was (re)established.
    pub connects: AtomicU64,
}

impl TimeoutMetrics {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl TimeoutConfig {
    /// The defaults: a 5 s poll, locked rows retried after 100 ms, worker `host/pid`.
    pub fn new(database_url: impl Into<String>) -> TimeoutConfig {
        TimeoutConfig {
            database_url: database_url.into(),
            poll: Duration::from_secs(5),
            worker: crate::executor::default_worker_name(),
            locked_retry: Duration::from_millis(100),
            metrics: Arc::default(),
        }
    }
}

/// Why the deadline loop stopped other than by shutdown. Connection losses and failing
/// Timeouts are not errors of the loop: it reconnects, records them and goes on.
#[derive(Debug, thiserror::Error)]
pub enum TimeoutError {
    /// The URL does not parse or its TLS files cannot be used; the reason, never the URL.
    #[error("the database URL is not valid: {0}")]
    BadUrl(#[source] crate::store::tls::TargetError),
    /// A database error retrying cannot fix, such as a schema newer than this pgsched.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Runs the deadline loop until `shutdown` is cancelled, then returns `Ok(())`. It returns an
/// error only for what retrying cannot fix: an unparsable URL, or a schema newer than this
/// pgsched.
pub async fn run_timeouts(
    config: TimeoutConfig,
    shutdown: CancellationToken,
) -> Result<(), TimeoutError> {
    let (pg, tls) =
        crate::store::scheduler_target(&config.database_url).map_err(TimeoutError::BadUrl)?;
    let listener = Listener::spawn(
        &pg,
        tls.clone(),
        &[CHANNEL],
        "pgsched timeouts (listen)",
        &shutdown,
    );
    let span = tracing::debug_span!(
        "timeouts",
        worker = %config.worker,
        db = pg.get_dbname().unwrap_or_default()
    );
    let mut deadline_loop = DeadlineLoop {
        config,
        timeouts: HashMap::new(),
        listener,
        reload: true,
    };
    let work = Session::new(
        &deadline_loop.config.database_url,
        SessionOptions {
            application_name: Some("pgsched timeouts".into()),
            keepalive: Keepalive::Minute,
            migrate: true,
            settings: Some(TIMEOUT_WORK_SETTINGS),
            ..SessionOptions::default()
        },
    );
    let result = tracing::Instrument::instrument(deadline_loop.run(work, &shutdown), span).await;
    deadline_loop.listener.stop().await;
    result
}
