//! The claim loop: on every wake-up (a notification, the timer to the next due tick or run,
//! the poll), turns due ticks into runs, claims what the free slots allow and starts each
//! claimed run as a task of its own; on shutdown, lets the running runs finish within the grace
//! period and cancels the rest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::claim::claim;
use super::clock::Clock;
use super::completion::Finished;
use super::connections::Databases;
use super::execute::execute;
use super::in_flight::{CancelReason, InFlight};
use super::materialize::materialize;
use super::observer::Observer;
use super::pool::{is_read_only, pool_error};
use crate::backoff::Backoff;
use crate::store::runs::{self, ClaimedRun};
use crate::store::StoreError;

/// What the claim loop works with, and the runs it started.
pub(super) struct ClaimLoop {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) databases: Arc<Databases>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) in_flight: Arc<InFlight>,
    /// Where finished attempts go (the completion loop).
    pub(super) done: mpsc::UnboundedSender<Finished>,
    pub(super) observer: Observer,
    pub(super) worker: String,
    pub(super) poll: Duration,
    /// One permit per run that may execute at once.
    pub(super) slots: Arc<Semaphore>,
    pub(super) tasks: JoinSet<()>,
}

impl ClaimLoop {
    /// Claims and starts runs until `shutdown` is cancelled.
    pub(super) async fn run(&mut self, wake: &Notify, shutdown: &CancellationToken) {
        // A failed step (the database went away) is retried sooner at first.
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        // After a claim that left runs waiting (maxInstances, exclusive), wait for an event rather
        // than spinning on runs that are due but cannot start yet.
        let mut waiting_for_event = false;
        let mut connections_read: Option<Instant> = None;
        loop {
            let refresh_connections = connections_read.is_none_or(|t| t.elapsed() >= self.poll);
            let sleep_for = match self.step(refresh_connections).await {
                Ok((next, left_waiting)) => {
                    if refresh_connections {
                        connections_read = Some(Instant::now());
                    }
                    backoff.reset();
                    waiting_for_event = left_waiting;
                    self.sleep_until_due(next, waiting_for_event)
                }
                Err(e) => {
                    let wait = backoff.next_wait();
                    tracing::warn!(error = %e, retry_in = ?wait, "executor step failed");
                    if is_read_only(&e) {
                        // A failover left us on a standby: drop every pooled connection.
                        self.pool.retain(|_, _| false);
                    }
                    wait
                }
            };
            // Reap finished tasks so the JoinSet does not grow.
            while self.tasks.try_join_next().is_some() {}
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
                // Every slot busy, or runs waiting on a slot: the next thing worth doing is when a
                // run of ours finishes (others' finishes arrive as notifications).
                Some(_) = self.tasks.join_next(),
                    if (waiting_for_event || self.slots.available_permits() == 0) && !self.tasks.is_empty() => {}
            }
        }
    }

    /// One pass: refreshes the named Connections when asked, turns due ticks into runs,
    /// claims and starts what the free slots allow. Returns when the next run is due and
    /// whether a due run was left waiting.
    async fn step(
        &mut self,
        refresh_connections: bool,
    ) -> Result<(Option<DateTime<Utc>>, bool), StoreError> {
        let now = self.clock.now();
        // Connections change only on apply: read them once per poll interval, not per claim.
        if refresh_connections {
            connections_refresh(&self.pool, &self.databases).await?;
        }
        materialize(&self.pool, self.clock.as_ref(), self.poll).await?;
        let free = self.slots.available_permits();
        let mut left_waiting = false;
        if free > 0 {
            let (claimed, waiting) = claim(&self.pool, &self.worker, now, free).await?;
            left_waiting = waiting;
            for run in claimed {
                self.start(run).await;
            }
        }
        let next = runs::next_wake(&**self.pool.get().await.map_err(pool_error)?).await?;
        Ok((next, left_waiting))
    }

    /// Starts a claimed run as a task of its own, holding one slot until it is done.
    async fn start(&mut self, run: ClaimedRun) {
        let permit = self
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        // Not a child of `shutdown`: running runs get the grace period first.
        let token = CancellationToken::new();
        self.in_flight.insert(run.id, token.clone());
        let databases = self.databases.clone();
        let pool = self.pool.clone();
        let done = self.done.clone();
        let in_flight = self.in_flight.clone();
        let clock = self.clock.clone();
        let observer = self.observer.0.clone();
        self.tasks.spawn(async move {
            let job = run.job.clone();
            let began = std::time::Instant::now();
            if let Some(o) = &observer {
                let late = (clock.now() - run.due_at).to_std().unwrap_or_default();
                o.started(&job, late);
            }
            let completion =
                execute(run, &pool, &databases, token, &in_flight, clock.as_ref()).await;
            in_flight.remove(completion.id);
            // Observers hear of it once it is recorded (see `complete_loop`).
            let _ = done.send(Finished {
                completion,
                job,
                took: began.elapsed(),
            });
            drop(permit);
        });
    }

    /// How long to sleep after a pass: until the next run is due, at most the poll interval;
    /// the whole poll interval when runs are waiting for an event.
    fn sleep_until_due(&self, next: Option<DateTime<Utc>>, waiting_for_event: bool) -> Duration {
        let now = self.clock.now();
        match next {
            Some(at) if !waiting_for_event => {
                (at - now).to_std().unwrap_or(Duration::ZERO).min(self.poll)
            }
            _ => self.poll,
        }
    }

    /// Shutdown: no more claims. Lets running runs finish within `grace`, then cancels the
    /// rest (they go back to pending for another worker) and waits for them.
    pub(super) async fn drain(mut self, grace: Duration) {
        tracing::info!(running = self.in_flight.len(), grace = ?grace, "stopping: waiting for running runs");
        let graceful = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if graceful.is_err() {
            tracing::warn!(
                running = self.in_flight.len(),
                "grace period over: cancelling running runs; they will be retried"
            );
            self.in_flight.cancel_all(CancelReason::Shutdown);
            while self.tasks.join_next().await.is_some() {}
        }
    }
}

/// Keeps the named Connections' pools in step with `pgsched.connections`.
async fn connections_refresh(
    pool: &deadpool_postgres::Pool,
    databases: &Databases,
) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let specs = crate::store::objects::connection_specs(&**client, None).await?;
    databases.set_connections(specs);
    Ok(())
}
