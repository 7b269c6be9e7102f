//! Executing one claimed run: its job's task or its chain, with the run's parameters, timeout
//! and cancellation, and settling the attempt (finished, or pending again for a retry) into the
//! [`Completion`] the completion loop records.

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::chain;
use super::clock::Clock;
use super::connections::Databases;
use super::in_flight::{CancelReason, InFlight};
use super::materialize::timing_of;
use super::policy::{self, AttemptResult, Settlement};
use super::tasks::{self, TaskContext, TaskOutcome};
use super::ticks;
use crate::spec::{HasTask, Runnable};
use crate::store::runs::{ClaimedRun, Completion};
use crate::store::states::RunStatus;

/// Runs one claimed run's task and settles the attempt.
pub(super) async fn execute(
    run: ClaimedRun,
    pool: &deadpool_postgres::Pool,
    databases: &Databases,
    token: CancellationToken,
    in_flight: &InFlight,
    clock: &dyn Clock,
) -> Completion {
    let scheduling = run.spec.scheduling();
    let params = merged_params(scheduling.params, &run.params);
    let timeout = scheduling.timeout.map(|d| d.0);
    let ctx = TaskContext {
        job: &run.job,
        run_id: run.id,
        attempt: run.attempt,
        params: &params,
        timeout,
        cancel: token,
        databases,
        database: match &run.spec {
            Runnable::Job(job) => job.database.as_deref(),
            Runnable::Chain(_) => None,
        },
    };
    let outcome = run_spec(&run.spec, &ctx, pool).await;
    let result = attempt_result(&outcome, in_flight.reason(run.id));
    let now = clock.now();
    let settlement = policy::settle(result, run.attempt, scheduling.retries, now, rand::random());
    settle(&run, settlement, result, outcome, now)
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

/// Runs the job's task, or the chain.
async fn run_spec(
    spec: &Runnable,
    ctx: &TaskContext<'_>,
    pool: &deadpool_postgres::Pool,
) -> TaskOutcome {
    match spec {
        Runnable::Job(job) => match job.task() {
            Some(task) => tasks::run_task(&task, ctx).await,
            None => TaskOutcome {
                status: tasks::Outcome::Failed,
                error: Some("the job has no task".into()),
                output: String::new(),
                rows_affected: None,
            },
        },
        Runnable::Chain(chain) => chain::run_chain(chain, ctx, pool).await,
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
    }
}
