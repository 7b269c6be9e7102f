//! One step of a chain: its attempts, the back-off between them, the time each may take (its
//! own `timeout` or what is left of the phase's), and its record in `pgsched.run_steps`. Also
//! the types every way of running steps shares: how a step ended ([`StepEnd`]), what stopped a
//! phase ([`Stop`]) and the budget steps run under ([`Phase`]).

use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use tokio::time::Instant;

use super::transaction::Transaction;
use crate::duration::format_duration;
use crate::executor::policy;
use crate::executor::tasks::{run_task, Outcome, TaskContext, TaskOutcome};
use crate::spec::{HasTask, Step, Task};
use crate::store::chains::{self, StepRow};
use crate::store::states::StepStatus;

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StepEnd {
    Succeeded,
    /// Failed on its own (an error, an exit status, its own timeout), after its retries.
    Failed {
        ignored: bool,
    },
    /// Stopped (or never started) because the chain's time was up.
    ChainTimedOut,
    /// Stopped because the run was cancelled (Replace, shutdown).
    Cancelled,
}

impl StepEnd {
    /// Whether the chain goes on after this step (and steps needing it may run).
    pub(super) fn lets_chain_go_on(self) -> bool {
        matches!(self, StepEnd::Succeeded | StepEnd::Failed { ignored: true })
    }
}

/// What stopped a phase: the first step that ended the chain, and how.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    /// Index into the phase's steps.
    pub(super) step: usize,
    pub(super) end: StepEnd,
}

/// The parameters and time budget the steps of one phase (the chain's steps, or its
/// `onFailure` steps) run with.
pub(super) struct Phase<'p> {
    pub(super) params: &'p Value,
    pub(super) deadline: Option<Instant>,
    /// How the budget is named in messages.
    pub(super) budget: String,
}

/// Runs and records the steps of one run of a chain: the run's context, and the pool the
/// records are written through.
pub(super) struct StepRunner<'r, 'c> {
    pub(super) ctx: &'r TaskContext<'c>,
    pub(super) pool: &'r deadpool_postgres::Pool,
}

impl StepRunner<'_, '_> {
    /// Runs one step to its end: its attempts (with back-off between them), within the phase's
    /// time. `tx` is the chain's transaction, for SQL steps of a transactional chain.
    pub(super) async fn run_step(
        &self,
        step: &Step,
        mut row: StepRow,
        phase: &Phase<'_>,
        mut tx: Option<&mut Transaction<'_>>,
    ) -> (StepRow, StepEnd) {
        let ignore = step.ignore_error == Some(true);
        let Some(task) = step.task() else {
            return self.without_task(row, ignore).await;
        };
        let retry_limit = step.retries.as_ref().map_or(0, |r| r.limit) as i32;
        let mut attempt = 1;
        loop {
            let Some((timeout, chain_limited)) = limits(step, phase) else {
                return self.out_of_time(row, attempt, phase).await;
            };
            self.start_attempt(&mut row, attempt).await;
            let savepoint = ignore || retry_limit > 0;
            let (outcome, recoverable) = self
                .run_attempt(step, &task, phase, timeout, tx.as_deref_mut(), savepoint)
                .await;
            row.output = Some(outcome.output.clone()).filter(|o| !o.is_empty());
            row.rows_affected = outcome.rows_affected;
            row.error = outcome.error.clone();
            let end = match outcome.status {
                Outcome::Succeeded => StepEnd::Succeeded,
                Outcome::Cancelled => StepEnd::Cancelled,
                Outcome::TimedOut if chain_limited => {
                    row.error = Some(format!("stopped: {} passed", phase.budget));
                    StepEnd::ChainTimedOut
                }
                Outcome::Failed | Outcome::TimedOut if recoverable && attempt <= retry_limit => {
                    match self
                        .back_off(step, &mut row, attempt, &outcome, phase)
                        .await
                    {
                        None => {
                            attempt += 1;
                            continue;
                        }
                        Some(end) => end,
                    }
                }
                Outcome::Failed | Outcome::TimedOut => StepEnd::Failed {
                    ignored: ignore && recoverable,
                },
            };
            return self.finish(row, end).await;
        }
    }

    /// A step validation let through without a task fails without running.
    async fn without_task(&self, mut row: StepRow, ignore: bool) -> (StepRow, StepEnd) {
        row.status = StepStatus::Failed;
        row.ignored = ignore;
        row.error = Some("the step has no task".into());
        self.record(std::slice::from_ref(&row)).await;
        (row, StepEnd::Failed { ignored: ignore })
    }

    /// The phase's time was up before this attempt could start.
    async fn out_of_time(
        &self,
        mut row: StepRow,
        attempt: i32,
        phase: &Phase<'_>,
    ) -> (StepRow, StepEnd) {
        row.status = if attempt == 1 {
            StepStatus::Skipped
        } else {
            StepStatus::Failed
        };
        row.error = Some(format!("not run: {} passed", phase.budget));
        row.finished_at = row.started_at.map(|_| Utc::now());
        self.record(std::slice::from_ref(&row)).await;
        (row, StepEnd::ChainTimedOut)
    }

    async fn start_attempt(&self, row: &mut StepRow, attempt: i32) {
        row.status = StepStatus::Running;
        row.attempt = attempt;
        if attempt == 1 {
            row.started_at = Some(Utc::now());
        }
        self.record(std::slice::from_ref(row)).await;
    }

    /// One attempt of the step's task: a SQL step of a transactional chain in `tx`, anything
    /// else on its own. Returns the outcome and whether the chain can go on after a failure.
    async fn run_attempt(
        &self,
        step: &Step,
        task: &Task<'_>,
        phase: &Phase<'_>,
        timeout: Option<Duration>,
        tx: Option<&mut Transaction<'_>>,
        savepoint: bool,
    ) -> (TaskOutcome, bool) {
        let step_ctx = TaskContext {
            job: self.ctx.job,
            run_id: self.ctx.run_id,
            attempt: self.ctx.attempt,
            params: phase.params,
            timeout,
            cancel: self.ctx.cancel.clone(),
            databases: self.ctx.databases,
            database: step.database.as_deref(),
        };
        match (task, tx) {
            (Task::Sql(sql), Some(tx)) => tx.run_sql(sql, &step_ctx, savepoint).await,
            _ => (run_task(task, &step_ctx).await, true),
        }
    }

    /// Records a failed attempt that will be retried and waits out its back-off; `Some` when
    /// the step ends during the wait instead (the phase's time ran out, the run was cancelled).
    async fn back_off(
        &self,
        step: &Step,
        row: &mut StepRow,
        attempt: i32,
        outcome: &TaskOutcome,
        phase: &Phase<'_>,
    ) -> Option<StepEnd> {
        let retries = step.retries.as_ref().expect("a retry limit");
        let wait = policy::backoff(retries, attempt, rand::random());
        row.error = Some(format!(
            "attempt {attempt} failed: {}; retrying in {}",
            outcome.error.as_deref().unwrap_or("failed"),
            format_duration(wait)
        ));
        self.record(std::slice::from_ref(row)).await;
        let end = self.wait(wait, phase).await?;
        row.error = Some(match end {
            StepEnd::Cancelled => "cancelled".into(),
            _ => format!("stopped: {} passed", phase.budget),
        });
        Some(end)
    }

    /// Records how the step ended.
    async fn finish(&self, mut row: StepRow, end: StepEnd) -> (StepRow, StepEnd) {
        row.finished_at = Some(Utc::now());
        row.status = match end {
            StepEnd::Succeeded => StepStatus::Succeeded,
            StepEnd::Failed { .. } | StepEnd::ChainTimedOut => StepStatus::Failed,
            StepEnd::Cancelled => StepStatus::Cancelled,
        };
        row.ignored = matches!(end, StepEnd::Failed { ignored: true });
        self.record(std::slice::from_ref(&row)).await;
        (row, end)
    }

    /// Waits out a retry's back-off; `Some` when the phase's time ran out or the run was
    /// cancelled first.
    async fn wait(&self, wait: Duration, phase: &Phase<'_>) -> Option<StepEnd> {
        let deadline = async {
            match phase.deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.ctx.cancel.cancelled() => Some(StepEnd::Cancelled),
            _ = deadline => Some(StepEnd::ChainTimedOut),
            _ = tokio::time::sleep(wait) => None,
        }
    }

    /// Starts this attempt's records. Records are for people: failing to write them is logged
    /// and does not fail the chain.
    pub(super) async fn begin(&self, rows: &[StepRow]) {
        let result = async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            chains::begin_attempt(&**client, self.ctx.run_id, self.ctx.attempt, rows)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(job = self.ctx.job, run_id = self.ctx.run_id, %error, "cannot record chain steps");
        }
    }

    pub(super) async fn record(&self, rows: &[StepRow]) {
        let result = async {
            let client = self.pool.get().await.map_err(|e| e.to_string())?;
            chains::write_steps(&**client, self.ctx.run_id, self.ctx.attempt, rows)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(job = self.ctx.job, run_id = self.ctx.run_id, %error, "cannot record chain steps");
        }
    }
}

/// The timeout a step's attempt runs with, and whether it is the phase's remaining time
/// (rather than the step's own `timeout`). `None` when the phase's time is already up.
fn limits(step: &Step, phase: &Phase<'_>) -> Option<(Option<Duration>, bool)> {
    let remaining = phase
        .deadline
        .map(|d| d.saturating_duration_since(Instant::now()));
    match (step.timeout.map(|t| t.0), remaining) {
        (_, Some(r)) if r.is_zero() => None,
        (Some(own), Some(r)) if own < r => Some((Some(own), false)),
        (_, Some(r)) => Some((Some(r), true)),
        (Some(own), None) => Some((Some(own), false)),
        (None, None) => Some((None, false)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(timeout: Option<u64>) -> Step {
        let mut yaml = "sql: SELECT 1\n".to_string();
        if let Some(ms) = timeout {
            yaml.push_str(&format!("timeout: {ms}ms\n"));
        }
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[tokio::test]
    async fn a_step_runs_with_the_shorter_of_its_timeout_and_the_chains_time() {
        let params = Value::Null;
        let phase = |left: Option<u64>| Phase {
            params: &params,
            deadline: left.map(|ms| Instant::now() + Duration::from_millis(ms)),
            budget: String::new(),
        };
        assert_eq!(limits(&step(None), &phase(None)), Some((None, false)));
        let own = limits(&step(Some(100)), &phase(Some(60_000))).unwrap();
        assert_eq!(own, (Some(Duration::from_millis(100)), false));
        let (t, chain) = limits(&step(Some(60_000)), &phase(Some(1_000))).unwrap();
        assert!(chain && t.unwrap() <= Duration::from_millis(1_000));
        let (t, chain) = limits(&step(None), &phase(Some(1_000))).unwrap();
        assert!(chain && t.is_some());
        assert_eq!(limits(&step(Some(100)), &phase(Some(0))), None);
    }
}
