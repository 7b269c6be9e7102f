//! Chains: a chain's steps run as one run of the chain.
//!
//! - **A line.** Without `needs`, steps run one after another. The first step that fails and
//!   is not ignored (`ignoreError`) stops the chain: the steps after it are recorded as
//!   `skipped`, never run.
//! - **A transaction.** With `transaction: true`, every SQL step runs on one connection in one
//!   transaction (opened by the first SQL step, committed after the last step). A failure that
//!   stops the chain rolls all of it back; an ignored SQL failure is rolled back to a savepoint
//!   taken just before the step, and the chain goes on. A step retry in the transaction rolls
//!   back to that savepoint first. Command, shell and builtin steps run between the SQL steps
//!   and cannot be rolled back.
//! - **A graph.** Once any step has `needs`, each step waits only for the steps it needs (a
//!   step without `needs` starts at once), and steps whose needs are met run in parallel. A
//!   step that fails and is not ignored stops the chain: no further step starts, steps already
//!   running finish, the rest are recorded as `skipped`. An ignored failure counts as finished
//!   for the steps that need it.
//! - **Retries** of a step happen inside the run, with back-off (`policy::backoff`); the run's
//!   own `retries` retry the whole chain (settled by the executor like a job's).
//! - **Time.** The chain's `timeout` bounds the whole run: the step running when it passes is
//!   stopped (SQL cancelled, programs signalled), nothing else starts, and a transaction is
//!   rolled back. A step's own `timeout` is a failure of that step (ignorable, retryable).
//! - **onFailure** steps run, in order, when the chain failed or timed out (after the rollback;
//!   not when the run was cancelled), each on its own (never in the chain's transaction), with
//!   the run's parameters plus `failedStep`, `error`, `attempt` and `willRetry`, under a fresh
//!   budget of the chain's `timeout`.
//!
//! Every step is recorded in `pgsched.run_steps` as it starts and ends (per attempt of the run);
//! the run's own output summarises them and its error names the step that failed.
//!
//! This file owns a run of a chain from start to end (its phases, the `onFailure` steps'
//! parameters); one step and its attempts are `step`, the order steps run in is `graph`, the
//! transactional mode is `transactional` (on the connection of `transaction`), and what the
//! run records as its own outcome is `outcome`.

mod graph;
mod outcome;
mod step;
mod transaction;
mod transactional;

use serde_json::Value;
use tokio::time::Instant;

use crate::duration::format_duration;
use crate::executor::tasks::{TaskContext, TaskOutcome};
use crate::spec::ChainSpec;
use crate::store::chains::StepRow;
use graph::{line, needs, run_graph, skip_rest};
use outcome::{chain_outcome, failure_of, Failure};
use step::{Phase, StepEnd, StepRunner};
use transactional::run_in_transaction;

/// Runs a chain's steps (and, when it fails, its `onFailure` steps) and records each step's
/// outcome in `pgsched.run_steps` through `pool`.
pub async fn run_chain(
    chain: &ChainSpec,
    ctx: &TaskContext<'_>,
    pool: &deadpool_postgres::Pool,
) -> TaskOutcome {
    let runner = Runner {
        chain,
        steps: StepRunner { ctx, pool },
    };
    runner.run().await
}

/// One run of a chain: the chain, and what runs and records its steps.
struct Runner<'r, 'c> {
    chain: &'r ChainSpec,
    steps: StepRunner<'r, 'c>,
}

impl Runner<'_, '_> {
    async fn run(&self) -> TaskOutcome {
        let chain = self.chain;
        let ctx = self.steps.ctx;
        let mut rows: Vec<StepRow> = chain
            .step_names()
            .iter()
            .enumerate()
            .map(|(i, name)| StepRow::pending(i as i32 + 1, name, false))
            .collect();
        self.steps.begin(&rows).await;

        let timeout_text = ctx.timeout.map(format_duration);
        let main = Phase {
            params: ctx.params,
            deadline: ctx.timeout.map(|t| Instant::now() + t),
            budget: match &timeout_text {
                Some(t) => format!("the chain's timeout ({t})"),
                None => "the chain's timeout".into(),
            },
        };
        let (stop, commit_error) = if chain.transaction == Some(true) {
            run_in_transaction(&self.steps, chain, &mut rows, &main).await
        } else {
            let needs = needs(chain);
            let stop = run_graph(&self.steps, &chain.steps, &mut rows, &needs, &main).await;
            (stop, None)
        };
        let graph_needs = chain.is_graph().then(|| needs(chain));
        skip_rest(&mut rows, stop.as_ref(), graph_needs.as_deref());

        let failure = failure_of(stop.as_ref(), commit_error, &rows);
        // onFailure: after a failure or the chain's timeout, not after a cancellation.
        let handler_failure = match &failure {
            Some(f) if f.end != StepEnd::Cancelled => {
                self.on_failure(f, &mut rows, timeout_text.as_deref()).await
            }
            _ => None,
        };
        self.steps.record(&rows).await;
        chain_outcome(&rows, failure, handler_failure, &main.budget)
    }

    /// Runs the onFailure steps, if the chain has any, and adds their records to `rows`.
    /// Returns how they failed, for the run's error.
    async fn on_failure(
        &self,
        failure: &Failure,
        rows: &mut Vec<StepRow>,
        timeout_text: Option<&str>,
    ) -> Option<String> {
        let handlers = self.chain.on_failure_steps();
        if handlers.is_empty() {
            return None;
        }
        let params = self.failure_params(failure);
        let phase = Phase {
            params: &params,
            deadline: self.steps.ctx.timeout.map(|t| Instant::now() + t),
            budget: match timeout_text {
                Some(t) => format!("the onFailure steps' time (the chain's timeout, {t})"),
                None => "the onFailure steps' time".into(),
            },
        };
        let first = rows.len();
        let mut handler_rows: Vec<StepRow> = self
            .chain
            .on_failure_names()
            .iter()
            .enumerate()
            .map(|(i, name)| StepRow::pending((first + i) as i32 + 1, name, true))
            .collect();
        self.steps.record(&handler_rows).await;
        let needs = line(handlers.len());
        let stop = run_graph(&self.steps, handlers, &mut handler_rows, &needs, &phase).await;
        skip_rest(&mut handler_rows, stop.as_ref(), None);
        let handler_failure = stop.map(|s| {
            let row = &handler_rows[s.step];
            format!(
                "onFailure step `{}` failed too: {}",
                row.name,
                row.error.as_deref().unwrap_or("failed")
            )
        });
        rows.extend(handler_rows);
        handler_failure
    }

    /// The onFailure steps' parameters: the run's, plus what failed and whether the run will
    /// be retried.
    fn failure_params(&self, failure: &Failure) -> Value {
        let ctx = self.steps.ctx;
        let will_retry = self
            .chain
            .retries
            .as_ref()
            .is_some_and(|r| ctx.attempt <= r.limit as i32);
        let mut params = ctx.params.as_object().cloned().unwrap_or_default();
        params.insert(
            "failedStep".into(),
            failure.step.clone().map_or(Value::Null, Value::String),
        );
        params.insert("error".into(), Value::String(failure.error.clone()));
        params.insert("attempt".into(), Value::from(ctx.attempt));
        params.insert("willRetry".into(), Value::Bool(will_retry));
        Value::Object(params)
    }
}
