//! Executing one claimed run: its job's task or its chain, with the run's parameters, timeout
//! and cancellation, and settling the attempt (finished, or pending again for a retry) into the
//! [`Completion`] the completion loop records. A SQL task on the scheduler's database is
//! recorded here instead, in the transaction its writes wait in, so both commit together.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::chain;
use super::clock::Clock;
use super::completion::Finished;
use super::connections::Databases;
use super::in_flight::{CancelReason, InFlight};
use super::materialize::timing_of;
use super::policy::{self, AttemptResult, Settlement};
use super::tasks::{self, HeldTransaction, TaskContext, TaskOutcome};
use super::ticks;
use crate::spec::{HasTask, Runnable};
use crate::store::claims::{ClaimedRun, Unstartable, UnstartableRun};
use crate::store::runs::{self, Completion};
use crate::store::states::{Effects, RunStatus};

/// What every run executed here works with.
pub(super) struct RunEnv {
    pub(super) pool: deadpool_postgres::Pool,
    pub(super) databases: Arc<Databases>,
    pub(super) in_flight: Arc<InFlight>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) worker: String,
}

/// An attempt's completion, and whether it is recorded already (with a SQL task's writes).
pub(super) struct Executed {
    pub(super) completion: Completion,
    pub(super) recorded: bool,
}

/// Runs one claimed run's task and settles the attempt; `queued` is how long it waited in the
/// local queue.
pub(super) async fn execute(
    run: ClaimedRun,
    env: &RunEnv,
    token: CancellationToken,
    queued: Duration,
) -> Executed {
    let scheduling = run.spec.scheduling();
    let params = merged_params(scheduling.params, &run.params);
    let ctx = TaskContext {
        job: &run.job,
        run_id: run.id,
        attempt: run.attempt,
        params: &params,
        timeout: scheduling.timeout.map(|d| d.0),
        cancel: token,
        databases: &env.databases,
        database: match &*run.spec {
            Runnable::Job(job) => job.database.as_deref(),
            Runnable::Chain(_) => None,
        },
    };
    let (outcome, effects, held) = run_spec(&run.spec, &ctx, &env.pool).await;
    let result = attempt_result(&outcome, env.in_flight.reason(run.id));
    let mut completion = settle_attempt(&run, result, outcome, env.clock.as_ref());
    completion.effects = effects;
    completion.queued = queued;
    let Some(held) = held else {
        return Executed {
            completion,
            recorded: false,
        };
    };
    match record_with_writes(held, &env.worker, &completion).await {
        Ok(()) => Executed {
            completion,
            recorded: true,
        },
        Err(error) => {
            // Nothing of the attempt is committed: it failed, and may be retried.
            let mut completion = settle_attempt(
                &run,
                AttemptResult::Failed,
                TaskOutcome {
                    status: tasks::Outcome::Failed,
                    error: Some(error),
                    output: String::new(),
                    rows_affected: None,
                },
                env.clock.as_ref(),
            );
            completion.effects = Some(Effects::WithRun);
            completion.queued = queued;
            Executed {
                completion,
                recorded: false,
            }
        }
    }
}

/// Records the run as the SQL task's transaction ends, and commits both. A run no longer held
/// by this worker (another replica recovered it meanwhile) is rolled back with its writes, so
/// that they happen once, by the attempt that is recorded. Errs with why nothing committed.
async fn record_with_writes(
    held: HeldTransaction,
    worker: &str,
    completion: &Completion,
) -> Result<(), String> {
    let statement = held.prepare_cached(runs::RECORD).await.map_err(|e| {
        format!(
            "recording the run with its writes: {}",
            crate::store::describe_pg_error(&e)
        )
    })?;
    let done = std::slice::from_ref(completion);
    match runs::record(held.client(), worker, done, Some(&statement)).await {
        Ok(1) => held.commit().await.map_err(|e| {
            format!(
                "committing the run with its writes: {}",
                crate::store::describe_pg_error(&e)
            )
        }),
        Ok(_) => {
            tracing::warn!(
                run = completion.id,
                "the run was taken over by another worker; its writes here are rolled back"
            );
            Ok(())
        }
        Err(e) => Err(format!("recording the run with its writes: {e}")),
    }
}

/// Settles an attempt's result by the job's retry policy into the run's completion.
fn settle_attempt(
    run: &ClaimedRun,
    result: AttemptResult,
    outcome: TaskOutcome,
    clock: &dyn Clock,
) -> Completion {
    let now = clock.now();
    let retries = run.spec.scheduling().retries;
    let settlement = policy::settle(result, run.attempt, retries, now, rand::random());
    settle(run, settlement, result, outcome, now)
}

/// A run's parameters: the job's defaults overlaid with the trigger's.
pub fn merged_params(
    defaults: Option<&serde_json::Map<String, serde_json::Value>>,
    given: &serde_json::Value,
) -> serde_json::Value {
    let mut merged = defaults.cloned().unwrap_or_default();
    if let Some(given) = given.as_object() {
        for (k, v) in given {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::Value::Object(merged)
}

/// Runs the job's task, or the chain; for a SQL task, how its writes are committed and the
/// transaction they wait in.
async fn run_spec(
    spec: &Runnable,
    ctx: &TaskContext<'_>,
    pool: &deadpool_postgres::Pool,
) -> (TaskOutcome, Option<Effects>, Option<HeldTransaction>) {
    match spec {
        Runnable::Job(job) => match job.task() {
            Some(task) => tasks::run_task_with_run(&task, ctx).await,
            None => (
                TaskOutcome {
                    status: tasks::Outcome::Failed,
                    error: Some("the job has no task".into()),
                    output: String::new(),
                    rows_affected: None,
                },
                None,
                None,
            ),
        },
        Runnable::Chain(chain) => (chain::run_chain(chain, ctx, pool).await, None, None),
    }
}

/// How the attempt ended, as the retry policy reads it: a cancellation is a replacement or
/// an interrupted attempt, depending on why the run was cancelled.
fn attempt_result(outcome: &TaskOutcome, reason: Option<CancelReason>) -> AttemptResult {
    match outcome.status {
        tasks::Outcome::Succeeded => AttemptResult::Succeeded,
        tasks::Outcome::Failed => AttemptResult::Failed,
        tasks::Outcome::TimedOut => AttemptResult::TimedOut,
        tasks::Outcome::Cancelled => match reason {
            Some(CancelReason::Replaced) => AttemptResult::Replaced,
            _ => AttemptResult::Interrupted,
        },
    }
}

/// The row the attempt leaves: finished, or pending again for a retry, and for a finished run
/// of an `@after` job when it is due next.
fn settle(
    run: &ClaimedRun,
    settlement: Settlement,
    result: AttemptResult,
    outcome: TaskOutcome,
    now: DateTime<Utc>,
) -> Completion {
    let (status, attempt, due_at) = match settlement {
        Settlement::Finished(status) => (status, run.attempt, None),
        Settlement::Retry { attempt, due_at } => (RunStatus::Pending, attempt, Some(due_at)),
    };
    let error = match result {
        AttemptResult::Replaced => {
            Some("cancelled: replaced by a newer instance (concurrencyPolicy: Replace)".into())
        }
        AttemptResult::Interrupted => {
            Some("interrupted: the worker shut down; the run will be retried".into())
        }
        _ => outcome.error,
    };
    let after_next = match status {
        RunStatus::Pending => None,
        _ => timing_of(&run.spec)
            .and_then(|t| ticks::after_finish(&t, now))
            .map(|at| (run.job.clone(), at)),
    };
    if status == RunStatus::Failed {
        tracing::warn!(job = %run.job, run = run.id, attempt = run.attempt, error = ?error, "run failed");
    }
    Completion {
        id: run.id,
        status,
        attempt,
        due_at,
        error,
        output: outcome.output,
        rows_affected: outcome.rows_affected,
        after_next,
        effects: None,
        queued: Duration::ZERO,
    }
}

/// A claimed run that cannot start, settled without running: cancelled when its job is gone
/// (as a deciding claim does), failed when its spec cannot be read.
pub(super) fn unstartable(run: UnstartableRun) -> Finished {
    let (status, error) = match run.why {
        Unstartable::JobGone => (RunStatus::Cancelled, "the job no longer exists"),
        Unstartable::Unreadable => {
            tracing::warn!(job = %run.job, run = run.id, "the run's job spec cannot be read; the run fails");
            (
                RunStatus::Failed,
                "the job's spec in pgsched.jobs cannot be read: apply the spec files again",
            )
        }
    };
    Finished {
        completion: Completion {
            id: run.id,
            status,
            attempt: run.attempt,
            due_at: None,
            error: Some(error.into()),
            output: String::new(),
            rows_affected: None,
            after_next: None,
            effects: None,
            queued: Duration::ZERO,
        },
        job: run.job,
        took: Duration::ZERO,
        recorded: false,
    }
}
