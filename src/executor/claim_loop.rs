//! The claim loop: on every wake-up (a notification, the timer to the next due tick or run,
//! the poll, the local queue running low), turns due ticks into runs, claims runs into the
//! local queue and starts queued runs into free slots, each as a task of its own; on
//! shutdown, gives back what it has not started, lets the running runs finish within the
//! grace period and cancels the rest.
//!
//! A finished run frees a slot, and the next queued run starts there from memory: the
//! database is asked again only when the queue runs low while more is due, so a backlog of
//! quick runs costs a claim per batch, not per run.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::claim::{claim, Claim};
use super::completion::Finished;
use super::connections::Databases;
use super::execute::{execute, unstartable, Executed, RunEnv};
use super::in_flight::CancelReason;
use super::local_queue::LocalQueue;
use super::materialize::materialize;
use super::observer::Observer;
use super::pool::{is_read_only, pool_error};
use crate::backoff::Backoff;
use crate::store::claims::{self, ClaimedRun};
use crate::store::runs;
use crate::store::StoreError;

/// What the claim loop works with, and the runs it started.
pub(super) struct ClaimLoop {
    /// The pools, the runs in flight, the clock and the worker's name, which the runs
    /// started here share.
    pub(super) env: Arc<RunEnv>,
    /// Where finished attempts go (the completion loop).
    pub(super) done: mpsc::UnboundedSender<Finished>,
    pub(super) observer: Observer,
    pub(super) poll: Duration,
    /// One permit per run that may execute at once.
    pub(super) slots: Arc<Semaphore>,
    pub(super) tasks: JoinSet<()>,
    /// Claimed runs not started yet.
    pub(super) queue: LocalQueue,
    /// Runs taken out of the queue after a failed step, to give back once the database answers:
    /// while it does not, heartbeats may be failing too, and another replica may recover them.
    pub(super) to_release: Vec<i64>,
    /// Whether the last claim took all it asked for: more is probably due.
    pub(super) more_due: bool,
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
        let mut step_now = true;
        let mut deadline = tokio::time::Instant::now();
        loop {
            if step_now {
                // The named Connections are read again once per poll interval.
                let periodic = connections_read.is_none_or(|t| t.elapsed() >= self.poll);
                let sleep_for = match self.step(periodic).await {
                    Ok((next, left_waiting)) => {
                        if periodic {
                            connections_read = Some(Instant::now());
                        }
                        backoff.reset();
                        waiting_for_event = left_waiting;
                        self.sleep_until_due(next, waiting_for_event)
                    }
                    Err(e) => self.step_failed(&e, &mut backoff),
                };
                deadline = tokio::time::Instant::now() + sleep_for;
            }
            self.dispatch();
            // Reap finished tasks so the JoinSet does not grow.
            while self.tasks.try_join_next().is_some() {}
            if shutdown.is_cancelled() {
                break;
            }
            if self.more_due && self.queue.low(self.slots.available_permits()) {
                // The runs just claimed are gone already: claim again at once.
                step_now = true;
                continue;
            }
            step_now = tokio::select! {
                _ = shutdown.cancelled() => break,
                // Something new is due, or a run finished elsewhere: worth a look unless a
                // backlog is being drained (its next claim comes when the queue runs low).
                _ = wake.notified() => waiting_for_event
                    || !self.more_due
                    || self.queue.low(self.slots.available_permits()),
                _ = tokio::time::sleep_until(deadline) => true,
                // A slot freed: the next queued run starts (above); claim again when runs wait
                // for one, or the queue runs low while more is due.
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    self.dispatch();
                    waiting_for_event
                        || (self.more_due && self.queue.low(self.slots.available_permits()))
                }
            };
        }
    }

    /// After a failed step: stops starting queued runs (they are given back once the
    /// database answers) and says how long to wait before the next try.
    fn step_failed(&mut self, e: &StoreError, backoff: &mut Backoff) -> Duration {
        let wait = backoff.next_wait();
        tracing::warn!(error = %e, retry_in = ?wait, "executor step failed");
        if is_read_only(e) {
            // A failover left us on a standby: drop every pooled connection.
            self.env.pool.retain(|_, _| false);
        }
        self.to_release.extend(self.queue.take_all());
        self.more_due = false;
        wait
    }

    /// One pass: gives back runs held since a failed step, refreshes the named Connections
    /// when `periodic`, turns due ticks into runs, claims into the local queue and starts what
    /// the free slots allow. Returns when the next run is due and
    /// whether a due run was left waiting.
    async fn step(&mut self, periodic: bool) -> Result<(Option<DateTime<Utc>>, bool), StoreError> {
        if !self.to_release.is_empty() {
            let client = self.env.pool.get().await.map_err(pool_error)?;
            claims::release(&client, &self.env.worker, &self.to_release).await?;
            self.to_release.clear();
        }
        let now = self.env.clock.now();
        // Connections change only on apply: read them once per poll interval, not per claim.
        if periodic {
            connections_refresh(&self.env.pool, &self.env.databases).await?;
        }
        let decide_first = materialize(&self.env.pool, self.env.clock.as_ref(), self.poll).await?;
        self.dispatch();
        let free = self.slots.available_permits();
        // No batch claim while the queue holds a backlog's worth (the next comes when it runs
        // low) or has no room; runs to decide just made are decided regardless.
        let batch = if self.more_due && !self.queue.low(free) {
            0
        } else {
            self.queue.want(free)
        };
        if batch == 0 && !decide_first {
            self.more_due = true;
            return Ok((None, false));
        }
        let got = claim(
            &self.env.pool,
            &self.env.worker,
            now,
            (batch, free),
            decide_first,
        )
        .await?;
        tracing::trace!(
            batch,
            got = got.runs.len(),
            decided = got.decided.len(),
            free,
            queued = self.queue.len(),
            "claimed"
        );
        self.queue.claimed(batch, got.runs.len());
        self.more_due = got.runs.len() >= batch;
        let left_waiting = got.waiting;
        // Started by the loop's dispatch, right after this step.
        self.enqueue(got);
        if self.more_due {
            // More is due now: finishing runs bring the next claim, not a timer.
            return Ok((None, left_waiting));
        }
        let next = runs::next_wake(&**self.env.pool.get().await.map_err(pool_error)?).await?;
        Ok((next, left_waiting))
    }

    /// Puts what a claim took in the local queue; runs that cannot start are settled.
    fn enqueue(&mut self, got: Claim) {
        let now = Instant::now();
        self.queue.push_front(got.decided, now);
        self.queue.push_back(got.runs, now);
        for run in got.unstartable {
            let _ = self.done.send(unstartable(run));
        }
    }

    /// Starts queued runs into the free slots.
    fn dispatch(&mut self) {
        while let Ok(permit) = self.slots.clone().try_acquire_owned() {
            let Some((run, waited)) = self.queue.pop(Instant::now()) else {
                break;
            };
            self.start(run, waited, permit);
        }
    }

    /// Starts a claimed run as a task of its own, holding its slot until it is done.
    fn start(&mut self, run: ClaimedRun, queued: Duration, permit: OwnedSemaphorePermit) {
        // Not a child of `shutdown`: running runs get the grace period first.
        let token = CancellationToken::new();
        self.env.in_flight.insert(run.id, token.clone());
        let env = self.env.clone();
        let done = self.done.clone();
        let observer = self.observer.0.clone();
        self.tasks.spawn(async move {
            let job = run.job.clone();
            let began = std::time::Instant::now();
            if let Some(o) = &observer {
                let late = (env.clock.now() - run.due_at).to_std().unwrap_or_default();
                o.started(&job, late);
            }
            let Executed {
                completion,
                recorded,
            } = execute(run, &env, token, queued).await;
            env.in_flight.remove(completion.id);
            // Observers hear of it once it is recorded (see `complete_loop`).
            let _ = done.send(Finished {
                completion,
                job,
                took: began.elapsed(),
                recorded,
            });
            drop(permit);
        });
    }

    /// How long to sleep after a pass: until the next run is due, at most the poll interval;
    /// the whole poll interval when runs are waiting for an event.
    fn sleep_until_due(&self, next: Option<DateTime<Utc>>, waiting_for_event: bool) -> Duration {
        let now = self.env.clock.now();
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
        // What never started goes back first, for other replicas to take at once.
        tracing::debug!(
            queued = self.queue.len(),
            "stopping: giving back queued runs"
        );
        self.to_release.extend(self.queue.take_all());
        if !self.to_release.is_empty() {
            let back = async {
                let client = self.env.pool.get().await.map_err(pool_error)?;
                claims::release(&client, &self.env.worker, &self.to_release).await
            };
            match back.await {
                Ok(n) => tracing::info!(runs = n, "gave back claimed runs not started"),
                Err(e) => tracing::warn!(error = %e, runs = self.to_release.len(),
                    "cannot give back claimed runs; they are recovered once this worker's heartbeats stop"),
            }
        }
        tracing::info!(running = self.env.in_flight.len(), grace = ?grace, "stopping: waiting for running runs");
        let graceful = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if graceful.is_err() {
            tracing::warn!(
                running = self.env.in_flight.len(),
                "grace period over: cancelling running runs; they will be retried"
            );
            self.env.in_flight.cancel_all(CancelReason::Shutdown);
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
