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

use crate::backoff::{pause, Backoff};
use crate::store::listener::{Heard, Listener};
use crate::store::session::{Keepalive, Session, SessionOptions, TIMEOUT_WORK_SETTINGS};
use crate::store::timeouts::{
    deadline_sql, expire_sql, load_timeouts, record_error, TimeoutDef, CHANNEL, RELOAD,
};
use crate::store::{describe_pg_error, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Statement};

use tokio_util::sync::CancellationToken;

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
    BadUrl(String),
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

/// Why serving on one work connection stopped.
enum Stop {
    Shutdown,
    /// The connection was lost: reconnect.
    Lost(String),
}

/// Statements prepared on the current work connection.
struct Prepared {
    deadline: Statement,
    expire: Statement,
}

/// The shortest time between two deadline computations of one Timeout. A row changed within
/// it is seen at most this much later; only a row inserted already (nearly) due could notice.
const RECOMPUTE_GAP: Duration = Duration::from_millis(10);

/// One Timeout's state in the loop.
struct Tracked {
    /// None when it cannot run (its table or columns are missing).
    def: Option<TimeoutDef>,
    prepared: Option<Prepared>,
    /// Rows may have changed: compute the deadline again before sleeping.
    dirty: bool,
    /// Failed; tried again on the next poll.
    broken: bool,
    /// When to run an expiry batch next.
    wake: Option<Instant>,
    /// The server's now() (epoch seconds) at the last expiry statement: due rows with a
    /// deadline before it were tried then, and are held by someone else.
    since: Option<f64>,
    /// When the last expiry statement was sent.
    last_expiry: Option<Instant>,
    /// Expiry statements in a row that left due rows behind (held by someone else).
    held_streak: u32,
    /// When the deadline was last computed: notifications are folded into at most one
    /// recompute per [`RECOMPUTE_GAP`], so a busy table costs the database little.
    last_recompute: Option<Instant>,
    /// The error recorded last, so a Timeout failing on every poll is logged and written once.
    error: Option<String>,
}

impl Tracked {
    fn new(def: Option<TimeoutDef>) -> Tracked {
        Tracked {
            def,
            prepared: None,
            dirty: true,
            broken: false,
            wake: None,
            since: None,
            last_expiry: None,
            held_streak: 0,
            last_recompute: None,
            error: None,
        }
    }

    /// How long after the last expiry statement to try rows held by someone else again:
    /// `base`, doubling with each statement in a row that found them still held, up to 1 s.
    fn held_retry(&self, base: Duration) -> Duration {
        let cap = base.max(Duration::from_secs(1));
        let doublings = self.held_streak.saturating_sub(1).min(10);
        base.saturating_mul(1 << doublings).min(cap)
    }

    fn recompute_deferred(&self, now: Instant) -> bool {
        self.last_recompute
            .is_some_and(|at| now < at + RECOMPUTE_GAP)
    }

    /// When the loop must next act for this Timeout: expire, or compute a deferred deadline.
    fn next_action(&self) -> Option<Instant> {
        let recompute = (self.dirty && !self.broken && self.def.is_some()).then(|| {
            self.last_recompute
                .map_or_else(Instant::now, |at| at + RECOMPUTE_GAP)
        });
        earliest(self.wake, recompute)
    }
}

/// The server time `at` (epoch seconds), on the local clock: `sent` is when the query that
/// returned the server's `now` was sent. None for never (+infinity, NULL).
fn local_instant(sent: Instant, now: f64, at: Option<f64>) -> Option<Instant> {
    let at = at?;
    if at.is_nan() || at == f64::INFINITY {
        return None;
    }
    let ahead = at - now;
    if ahead <= 0.0 {
        return Some(sent);
    }
    // Past a day the poll will have recomputed it anyway; the 1 ms makes sure the server's
    // now() has passed the deadline when the expiry statement runs.
    let ahead = Duration::from_secs_f64(ahead.min(86_400.0)) + Duration::from_millis(1);
    Some(sent + ahead)
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Errors of one Timeout's statements that will pass by themselves: retried soon, not recorded.
fn is_transient(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::T_R_SERIALIZATION_FAILURE
    )
}

struct DeadlineLoop {
    config: TimeoutConfig,
    timeouts: HashMap<String, Tracked>,
    listener: Listener,
    /// The list of Timeouts must be read again.
    reload: bool,
}

impl DeadlineLoop {
    async fn run(
        &mut self,
        mut work: Session,
        shutdown: &CancellationToken,
    ) -> Result<(), TimeoutError> {
        let mut backoff = Backoff::reconnect();
        loop {
            if shutdown.is_cancelled() {
                return Ok(());
            }
            match work.client().await {
                Ok(client) => {
                    backoff.reset();
                    TimeoutMetrics::add(&self.config.metrics.connects, 1);
                    match self.serve(client, shutdown).await {
                        Stop::Shutdown => return Ok(()),
                        Stop::Lost(why) => {
                            tracing::warn!(error = %why, "lost the Timeout work connection; reconnecting")
                        }
                    }
                    work.disconnect();
                }
                Err(e @ StoreError::SchemaTooNew { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(error = %e, "cannot connect for Timeouts; retrying"),
            }
            if !pause(backoff.next_wait(), shutdown).await {
                return Ok(());
            }
        }
    }

    /// The loop proper, on one work connection.
    async fn serve(&mut self, client: &Client, shutdown: &CancellationToken) -> Stop {
        // Statements belong to the old connection, and anything may have changed meanwhile.
        for t in self.timeouts.values_mut() {
            t.prepared = None;
            t.dirty = true;
        }
        self.reload = true;
        let mut next_poll = Instant::now() + self.config.poll;
        loop {
            if shutdown.is_cancelled() {
                return Stop::Shutdown;
            }
            if let Err(stop) = self.step(client, shutdown).await {
                return stop;
            }
            let wake = self
                .timeouts
                .values()
                .filter_map(Tracked::next_action)
                .min()
                .map_or(next_poll, |w| w.min(next_poll));
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Stop::Shutdown,
                Some(heard) = self.listener.recv() => self.note(heard),
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= next_poll {
                next_poll = Instant::now() + self.config.poll;
                self.reload = true;
                for t in self.timeouts.values_mut() {
                    t.dirty = true;
                }
            }
        }
    }

    fn note(&mut self, heard: Heard) {
        tracing::trace!(?heard, "woken");
        let metrics = &self.config.metrics;
        match heard {
            Heard::Notification(n) => {
                TimeoutMetrics::add(&metrics.notifications, 1);
                if n.payload() == RELOAD {
                    self.reload = true;
                } else if let Some(t) = self.timeouts.get_mut(n.payload()) {
                    // Rows changed in this Timeout's table.
                    t.dirty = true;
                }
            }
            Heard::Subscribed => {
                TimeoutMetrics::add(&metrics.connects, 1);
                self.reload = true;
                for t in self.timeouts.values_mut() {
                    t.dirty = true;
                }
            }
        }
    }

    fn drain_wakes(&mut self) {
        while let Some(heard) = self.listener.try_recv() {
            self.note(heard);
        }
    }

    /// Reloads, recomputes what changed, and runs every expiry that is due, until nothing is.
    async fn step(&mut self, client: &Client, shutdown: &CancellationToken) -> Result<(), Stop> {
        loop {
            self.drain_wakes();
            if self.reload {
                self.reload(client).await?;
            }
            let now = Instant::now();
            let mut names: Vec<String> = self.timeouts.keys().cloned().collect();
            names.sort();
            for name in &names {
                let t = &self.timeouts[name];
                // A due Timeout needs no recompute: its expiry statement returns the same.
                if t.dirty
                    && !t.broken
                    && t.def.is_some()
                    && t.wake.is_none_or(|w| w > now)
                    && !t.recompute_deferred(now)
                {
                    self.recompute(client, name).await?;
                }
            }
            // One batch per due Timeout per round: a backlog in one does not starve the others.
            let now = Instant::now();
            let due: Vec<&String> = names
                .iter()
                .filter(|n| {
                    self.timeouts
                        .get(*n)
                        .and_then(|t| t.wake)
                        .is_some_and(|w| w <= now)
                })
                .collect();
            if due.is_empty() {
                return Ok(());
            }
            for name in due {
                if shutdown.is_cancelled() {
                    return Err(Stop::Shutdown);
                }
                self.expire_batch(client, name).await?;
            }
        }
    }

    /// Reads the list of Timeouts again: new ones are tracked, changed ones start afresh,
    /// removed (or suspended) ones are dropped, and broken ones are tried again.
    async fn reload(&mut self, client: &Client) -> Result<(), Stop> {
        self.count_statements(1);
        let loaded = match load_timeouts(client).await {
            Ok(loaded) => loaded,
            Err(e) if client.is_closed() => return Err(Stop::Lost(e.to_string())),
            Err(e) => {
                // Tried again on the next poll; meanwhile the known Timeouts keep running.
                tracing::warn!(error = %e, "cannot read the Timeouts");
                self.reload = false;
                return Ok(());
            }
        };
        self.reload = false;
        let mut seen = HashMap::new();
        for timeout in loaded {
            seen.insert(timeout.name.clone(), ());
            match timeout.def {
                Ok(def) => {
                    let keep = self
                        .timeouts
                        .get(&timeout.name)
                        .is_some_and(|t| !t.broken && t.def.as_ref() == Some(&def));
                    if !keep {
                        let mut t = Tracked::new(Some(def));
                        t.error = self.carry_error(&timeout.name);
                        self.timeouts.insert(timeout.name.clone(), t);
                    }
                }
                Err(message) => {
                    let mut t = Tracked::new(None);
                    t.broken = true;
                    t.dirty = false;
                    t.error = self.carry_error(&timeout.name);
                    self.timeouts.insert(timeout.name.clone(), t);
                    self.fail(client, &timeout.name, &message).await?;
                }
            }
        }
        self.timeouts.retain(|name, _| seen.contains_key(name));
        Ok(())
    }

    /// Records a Timeout's failure; it is tried again on the next poll.
    async fn fail(&mut self, client: &Client, name: &str, message: &str) -> Result<(), Stop> {
        let Some(t) = self.timeouts.get_mut(name) else {
            return Ok(());
        };
        t.broken = true;
        t.wake = None;
        t.prepared = None;
        if t.error.as_deref() == Some(message) {
            tracing::debug!(timeout = name, error = message, "Timeout still failing");
            return Ok(());
        }
        t.error = Some(message.to_string());
        tracing::warn!(
            timeout = name,
            error = message,
            "Timeout failed; retrying on every poll"
        );
        TimeoutMetrics::add(&self.config.metrics.failures, 1);
        self.count_statements(1);
        match record_error(client, name, message).await {
            Ok(()) => Ok(()),
            Err(e) if client.is_closed() => Err(Stop::Lost(e.to_string())),
            Err(e) => {
                tracing::warn!(timeout = name, error = %e, "cannot record the Timeout's error");
                Ok(())
            }
        }
    }

    /// A statement of one Timeout failed: the connection is gone, it will pass (retry soon),
    /// or it is the Timeout's own problem (record it, retry on the poll).
    async fn failed(
        &mut self,
        client: &Client,
        name: &str,
        e: tokio_postgres::Error,
    ) -> Result<(), Stop> {
        // Not from the server (an I/O error, a closed connection): the connection's problem.
        if client.is_closed() || e.as_db_error().is_none() {
            return Err(Stop::Lost(describe_pg_error(&e)));
        }
        if is_transient(&e) {
            tracing::info!(timeout = name, error = %describe_pg_error(&e), "Timeout delayed; retrying in 1 s");
            if let Some(t) = self.timeouts.get_mut(name) {
                t.wake = Some(Instant::now() + Duration::from_secs(1));
                t.dirty = false;
            }
            return Ok(());
        }
        self.fail(client, name, &describe_pg_error(&e)).await
    }

    fn count_statements(&self, n: u64) {
        TimeoutMetrics::add(&self.config.metrics.statements, n);
    }

    /// The error a Timeout had before it is tracked afresh.
    fn carry_error(&mut self, name: &str) -> Option<String> {
        self.timeouts.get_mut(name).and_then(|t| t.error.take())
    }

    async fn prepare(&mut self, client: &Client, name: &str) -> Result<bool, Stop> {
        let Some(t) = self.timeouts.get(name) else {
            return Ok(false);
        };
        if t.prepared.is_some() {
            return Ok(true);
        }
        let Some(def) = t.def.clone() else {
            return Ok(false);
        };
        self.count_statements(2);
        let prepared = async {
            Ok::<_, tokio_postgres::Error>(Prepared {
                deadline: client.prepare(&deadline_sql(&def)).await?,
                expire: client.prepare(&expire_sql(&def)).await?,
            })
        }
        .await;
        match prepared {
            Ok(p) => {
                if let Some(t) = self.timeouts.get_mut(name) {
                    t.prepared = Some(p);
                }
                Ok(true)
            }
            Err(e) => {
                self.failed(client, name, e).await?;
                Ok(false)
            }
        }
    }

    /// Computes a Timeout's next deadline (and stores it when it changed).
    async fn recompute(&mut self, client: &Client, name: &str) -> Result<(), Stop> {
        if !self.prepare(client, name).await? {
            return Ok(());
        }
        let t = &self.timeouts[name];
        let (Some(def), Some(prepared)) = (&t.def, &t.prepared) else {
            return Ok(());
        };
        let sent = Instant::now();
        let result = client
            .query_one(&prepared.deadline, &[&def.name, &def.after_us, &t.since])
            .await;
        self.count_statements(1);
        match result {
            Ok(row) => {
                let earliest_deadline: Option<f64> = row.get(0);
                let upcoming: Option<f64> = row.get(1);
                let now: f64 = row.get(2);
                let t = self.timeouts.get_mut(name).expect("tracked");
                t.dirty = false;
                t.error = None;
                t.last_recompute = Some(sent);
                // Due rows from before the last expiry statement were held by someone else.
                let held = matches!((earliest_deadline, t.since), (Some(e), Some(s)) if e <= s);
                if !held {
                    t.held_streak = 0;
                }
                let retry = held.then(|| {
                    t.last_expiry.unwrap_or(sent) + t.held_retry(self.config.locked_retry)
                });
                t.wake = earliest(local_instant(sent, now, upcoming), retry);
                tracing::trace!(timeout = name, ?earliest_deadline, ?upcoming, now, since = ?t.since, held,
                    wake_in = ?t.wake.map(|w| w.saturating_duration_since(Instant::now())), "recomputed");
                Ok(())
            }
            Err(e) => self.failed(client, name, e).await,
        }
    }

    /// Runs one expiry batch of a Timeout and works out when it is due next.
    async fn expire_batch(&mut self, client: &Client, name: &str) -> Result<(), Stop> {
        if !self.prepare(client, name).await? {
            return Ok(());
        }
        let t = &self.timeouts[name];
        let (Some(def), Some(prepared)) = (&t.def, &t.prepared) else {
            return Ok(());
        };
        let values = def.set_values();
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &def.name,
            &def.after_us,
            &def.batch_size,
            &self.config.worker,
        ];
        params.extend(values.iter().map(|v| v as &(dyn ToSql + Sync)));
        let sent = Instant::now();
        let result = client.query_one(&prepared.expire, &params).await;
        let metrics = &self.config.metrics;
        TimeoutMetrics::add(&metrics.statements, 1);
        TimeoutMetrics::add(&metrics.batches, 1);
        match result {
            Ok(row) => {
                let changed: i64 = row.get(0);
                TimeoutMetrics::add(&metrics.rows_expired, changed.max(0) as u64);
                let left_behind: Option<f64> = row.get(1);
                let upcoming: Option<f64> = row.get(2);
                let now: f64 = row.get(3);
                let def = def.clone();
                let t = self.timeouts.get_mut(name).expect("tracked");
                t.dirty = false;
                t.error = None;
                t.last_recompute = Some(sent);
                t.since = Some(now);
                t.last_expiry = Some(sent);
                t.wake = if changed >= def.batch_size {
                    // More may be due right now: another batch after the others had a turn.
                    t.held_streak = 0;
                    Some(sent)
                } else if left_behind.is_some() {
                    t.held_streak += 1;
                    let retry = sent + t.held_retry(self.config.locked_retry);
                    earliest(local_instant(sent, now, upcoming), Some(retry))
                } else {
                    t.held_streak = 0;
                    local_instant(sent, now, upcoming)
                };
                tracing::trace!(timeout = name, changed, ?left_behind, ?upcoming, now, streak = t.held_streak,
                    wake_in = ?t.wake.map(|w| w.saturating_duration_since(Instant::now())), "expiry batch");
                if changed > 0 {
                    tracing::debug!(timeout = name, rows = changed, "expired");
                    if matches!(def.expiry, crate::store::timeouts::Expiry::Set(_)) {
                        // The loop's own statements do not wake it: an update may have made
                        // rows match another Timeout on the same table.
                        for (other, o) in self.timeouts.iter_mut() {
                            if other != name
                                && o.def.as_ref().is_some_and(|d| d.table_oid == def.table_oid)
                            {
                                o.dirty = true;
                            }
                        }
                    }
                }
                Ok(())
            }
            Err(e) => self.failed(client, name, e).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_times_become_local_instants() {
        let sent = Instant::now();
        assert_eq!(local_instant(sent, 100.0, None), None);
        assert_eq!(local_instant(sent, 100.0, Some(f64::INFINITY)), None);
        assert_eq!(
            local_instant(sent, 100.0, Some(f64::NEG_INFINITY)),
            Some(sent)
        );
        assert_eq!(local_instant(sent, 100.0, Some(99.0)), Some(sent));
        assert_eq!(
            local_instant(sent, 100.0, Some(102.5)),
            Some(sent + Duration::from_millis(2501))
        );
        // Far deadlines are capped at a day: the poll recomputes long before.
        assert!(
            local_instant(sent, 0.0, Some(1e12)).unwrap() <= sent + Duration::from_secs(86_401)
        );
    }

    #[test]
    fn held_rows_are_retried_sooner_then_every_second() {
        let mut t = Tracked::new(None);
        let base = Duration::from_millis(100);
        let waits: Vec<u128> = (1..=6)
            .map(|streak| {
                t.held_streak = streak;
                t.held_retry(base).as_millis()
            })
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        t.held_streak = 40;
        assert_eq!(t.held_retry(base), Duration::from_secs(1));
        assert_eq!(t.held_retry(Duration::from_secs(3)), Duration::from_secs(3));
    }
}
