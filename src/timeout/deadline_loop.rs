//! The deadline loop proper ([`DeadlineLoop`]): on one work connection at a time, it reads
//! the Timeouts, computes their deadlines, sleeps until the earliest (or a notification, or
//! the poll), and runs the expiry batches that are due, taking turns between Timeouts. It
//! decides what a failed statement means: the connection is gone (reconnect), it will pass
//! (retry soon), or it is the Timeout's own problem (record it, retry on the poll).

use super::tracked::{earliest, local_instant, Prepared, Tracked};
use super::{TimeoutConfig, TimeoutError, TimeoutMetrics};
use crate::backoff::{pause, Backoff};
use crate::store::listener::{Heard, Listener};
use crate::store::session::Session;
use crate::store::timeouts::{deadline_sql, expire_sql, load_timeouts, record_error, RELOAD};
use crate::store::{describe_pg_error, StoreError};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

/// Why serving on one work connection stopped.
enum Stop {
    Shutdown,
    /// The connection was lost: reconnect.
    Lost(String),
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

pub(super) struct DeadlineLoop {
    pub(super) config: TimeoutConfig,
    pub(super) timeouts: HashMap<String, Tracked>,
    pub(super) listener: Listener,
    /// The list of Timeouts must be read again.
    pub(super) reload: bool,
}

impl DeadlineLoop {
    pub(super) async fn run(
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
                            tracing::warn!(error = %why, "lost the Timeout work connection; reconnecting");
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
        let mut seen = HashSet::new();
        for timeout in loaded {
            seen.insert(timeout.name.clone());
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
        self.timeouts.retain(|name, _| seen.contains(name));
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
                        for (other, o) in &mut self.timeouts {
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
