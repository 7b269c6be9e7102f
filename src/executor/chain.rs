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

use std::time::Duration;

use chrono::Utc;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde_json::Value;
use tokio::time::Instant;

use super::connections::Databases;
use super::policy;
use super::tasks::{run_sql_on, run_task, Outcome, TaskContext, TaskOutcome};
use crate::duration::format_duration;
use crate::spec::{ChainSpec, HasTask, Step, Task};
use crate::store::chains::{self, StepRow};
use crate::store::describe_pg_error;
use crate::store::session::{self, TransactionState};
use crate::store::states::StepStatus;

/// How long a ROLLBACK or COMMIT may take before the connection is closed instead.
const END_WAIT: Duration = Duration::from_secs(10);

/// Runs a chain's steps (and, when it fails, its `onFailure` steps) and records each step's
/// outcome in `pgsched.run_steps` through `pool`.
pub async fn run_chain(
    chain: &ChainSpec,
    ctx: &TaskContext<'_>,
    pool: &deadpool_postgres::Pool,
) -> TaskOutcome {
    let runner = Runner { chain, ctx, pool };
    runner.run().await
}

/// How one step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepEnd {
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
    fn lets_chain_go_on(self) -> bool {
        matches!(self, StepEnd::Succeeded | StepEnd::Failed { ignored: true })
    }
}

/// What stopped a phase: the first step that ended the chain, and how.
#[derive(Debug, Clone)]
struct Stop {
    /// Index into the phase's steps.
    step: usize,
    end: StepEnd,
}

/// The parameters and time budget the steps of one phase (the chain's steps, or its
/// `onFailure` steps) run with.
struct Phase<'p> {
    params: &'p Value,
    deadline: Option<Instant>,
    /// How the budget is named in messages.
    budget: String,
}

struct Runner<'r, 'c> {
    chain: &'r ChainSpec,
    ctx: &'r TaskContext<'c>,
    pool: &'r deadpool_postgres::Pool,
}

impl Runner<'_, '_> {
    async fn run(&self) -> TaskOutcome {
        let chain = self.chain;
        let names = chain.step_names();
        let mut rows: Vec<StepRow> = names
            .iter()
            .enumerate()
            .map(|(i, name)| StepRow::pending(i as i32 + 1, name, false))
            .collect();
        self.begin(&rows).await;

        let timeout_text = self.ctx.timeout.map(format_duration);
        let main = Phase {
            params: self.ctx.params,
            deadline: self.ctx.timeout.map(|t| Instant::now() + t),
            budget: match &timeout_text {
                Some(t) => format!("the chain's timeout ({t})"),
                None => "the chain's timeout".into(),
            },
        };

        let transactional = chain.transaction == Some(true);
        let mut commit_error = None;
        let stop = if transactional {
            let database = chain
                .steps
                .iter()
                .find(|s| s.sql.is_some())
                .and_then(|s| s.database.as_deref());
            let mut tx = Transaction::new(self.ctx.databases, database);
            let stop = self.run_line(&chain.steps, &mut rows, &main, &mut tx).await;
            let rolled_back = match &stop {
                None => match tx.commit().await {
                    Ok(()) => false,
                    Err(e) => {
                        commit_error = Some(format!("the transaction could not be committed: {e}"));
                        true
                    }
                },
                Some(_) => {
                    tx.rollback().await;
                    true
                }
            };
            if rolled_back && tx.began {
                for (row, step) in rows.iter_mut().zip(&chain.steps) {
                    if step.sql.is_some() && row.status == StepStatus::Succeeded {
                        row.status = StepStatus::RolledBack;
                    }
                }
            }
            stop
        } else {
            let needs = self.needs();
            self.run_graph(&chain.steps, &mut rows, &needs, &main).await
        };
        self.skip_rest(&mut rows, stop.as_ref(), chain.is_graph());

        // What failed, for the run's error and the onFailure steps' parameters.
        let failure: Option<(Option<String>, String, StepEnd)> = match (&stop, &commit_error) {
            (Some(s), _) => Some((
                Some(rows[s.step].name.clone()),
                rows[s.step]
                    .error
                    .clone()
                    .unwrap_or_else(|| "failed".into()),
                s.end,
            )),
            (None, Some(e)) => Some((None, e.clone(), StepEnd::Failed { ignored: false })),
            (None, None) => None,
        };

        // onFailure: after a failure or the chain's timeout, not after a cancellation.
        let mut handler_failure = None;
        let handlers = chain.on_failure_steps();
        if let Some((failed_step, error, end)) = &failure {
            if *end != StepEnd::Cancelled && !handlers.is_empty() {
                let will_retry = chain
                    .retries
                    .as_ref()
                    .is_some_and(|r| self.ctx.attempt <= r.limit as i32);
                let mut params = self.ctx.params.as_object().cloned().unwrap_or_default();
                params.insert(
                    "failedStep".into(),
                    failed_step.clone().map_or(Value::Null, Value::String),
                );
                params.insert("error".into(), Value::String(error.clone()));
                params.insert("attempt".into(), Value::from(self.ctx.attempt));
                params.insert("willRetry".into(), Value::Bool(will_retry));
                let params = Value::Object(params);
                let phase = Phase {
                    params: &params,
                    deadline: self.ctx.timeout.map(|t| Instant::now() + t),
                    budget: match &timeout_text {
                        Some(t) => format!("the onFailure steps' time (the chain's timeout, {t})"),
                        None => "the onFailure steps' time".into(),
                    },
                };
                let first = rows.len();
                let mut handler_rows: Vec<StepRow> = chain
                    .on_failure_names()
                    .iter()
                    .enumerate()
                    .map(|(i, name)| StepRow::pending((first + i) as i32 + 1, name, true))
                    .collect();
                self.record(&handler_rows).await;
                let needs: Vec<Vec<usize>> = (0..handlers.len())
                    .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
                    .collect();
                let stop = self
                    .run_graph(handlers, &mut handler_rows, &needs, &phase)
                    .await;
                self.skip_rest(&mut handler_rows, stop.as_ref(), false);
                if let Some(s) = stop {
                    let row = &handler_rows[s.step];
                    handler_failure = Some(format!(
                        "onFailure step `{}` failed too: {}",
                        row.name,
                        row.error.as_deref().unwrap_or("failed")
                    ));
                }
                rows.extend(handler_rows);
            }
        }
        self.record(&rows).await;

        let rows_affected = rows
            .iter()
            .filter(|r| !r.on_failure && r.status == StepStatus::Succeeded)
            .filter_map(|r| r.rows_affected)
            .reduce(|a, b| a.saturating_add(b));
        let output = summary(&rows);
        let Some((failed_step, error, end)) = failure else {
            return TaskOutcome {
                status: Outcome::Succeeded,
                error: None,
                output,
                rows_affected,
            };
        };
        let mut message = match (end, &failed_step) {
            (StepEnd::ChainTimedOut, Some(step)) => {
                format!("timed out: {} passed during step `{step}`", main.budget)
            }
            (StepEnd::Cancelled, Some(step)) => format!("cancelled during step `{step}`"),
            (_, Some(step)) => format!("step `{step}` failed: {error}"),
            (_, None) => error,
        };
        if let Some(more) = handler_failure {
            message.push_str("; ");
            message.push_str(&more);
        }
        TaskOutcome {
            status: match end {
                StepEnd::ChainTimedOut => Outcome::TimedOut,
                StepEnd::Cancelled => Outcome::Cancelled,
                _ => Outcome::Failed,
            },
            error: Some(message),
            output,
            rows_affected,
        }
    }

    /// For each step, the steps it waits for: its `needs` in a graph, the step before it in a
    /// line.
    fn needs(&self) -> Vec<Vec<usize>> {
        let steps = &self.chain.steps;
        if !self.chain.is_graph() {
            return (0..steps.len())
                .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
                .collect();
        }
        let names = self.chain.step_names();
        steps
            .iter()
            .map(|s| {
                s.needs
                    .iter()
                    .flatten()
                    // Validation guarantees every name is a step's.
                    .filter_map(|n| names.iter().position(|x| x == n))
                    .collect()
            })
            .collect()
    }

    /// Runs steps one after another, SQL steps in `tx`. Returns the step that stopped them.
    async fn run_line(
        &self,
        steps: &[Step],
        rows: &mut [StepRow],
        phase: &Phase<'_>,
        tx: &mut Transaction<'_>,
    ) -> Option<Stop> {
        for (i, step) in steps.iter().enumerate() {
            let (row, end) = self
                .run_step(step, rows[i].clone(), phase, Some(&mut *tx))
                .await;
            rows[i] = row;
            if !end.lets_chain_go_on() {
                return Some(Stop { step: i, end });
            }
        }
        None
    }

    /// Runs steps as soon as what they need has finished, in parallel. After a step stops the
    /// chain, no further step starts and the running ones finish. Returns the first step that
    /// stopped the chain.
    async fn run_graph(
        &self,
        steps: &[Step],
        rows: &mut [StepRow],
        needs: &[Vec<usize>],
        phase: &Phase<'_>,
    ) -> Option<Stop> {
        #[derive(Clone, Copy, PartialEq)]
        enum State {
            Waiting,
            Running,
            Done(StepEnd),
        }
        let mut state = vec![State::Waiting; steps.len()];
        let mut stop: Option<Stop> = None;
        let mut running = FuturesUnordered::new();
        loop {
            if stop.is_none() {
                for i in 0..steps.len() {
                    let ready = state[i] == State::Waiting
                        && needs[i].iter().all(
                            |&j| matches!(state[j], State::Done(end) if end.lets_chain_go_on()),
                        );
                    if ready {
                        state[i] = State::Running;
                        let row = rows[i].clone();
                        let step = &steps[i];
                        running.push(async move {
                            let (row, end) = self.run_step(step, row, phase, None).await;
                            (i, row, end)
                        });
                    }
                }
            }
            let Some((i, row, end)) = running.next().await else {
                break;
            };
            rows[i] = row;
            state[i] = State::Done(end);
            if !end.lets_chain_go_on() && stop.is_none() {
                stop = Some(Stop { step: i, end });
            }
        }
        stop
    }

    /// Runs one step to its end: its attempts (with back-off between them), within the phase's
    /// time. `tx` is the chain's transaction, for SQL steps of a transactional chain.
    async fn run_step(
        &self,
        step: &Step,
        mut row: StepRow,
        phase: &Phase<'_>,
        mut tx: Option<&mut Transaction<'_>>,
    ) -> (StepRow, StepEnd) {
        let ignore = step.ignore_error == Some(true);
        let Some(task) = step.task() else {
            row.status = StepStatus::Failed;
            row.ignored = ignore;
            row.error = Some("the step has no task".into());
            self.record(std::slice::from_ref(&row)).await;
            return (row, StepEnd::Failed { ignored: ignore });
        };
        let retry_limit = step.retries.as_ref().map_or(0, |r| r.limit) as i32;
        let mut attempt = 1;
        loop {
            let Some((timeout, chain_limited)) = limits(step, phase) else {
                // The phase's time was up before this attempt could start.
                row.status = if attempt == 1 {
                    StepStatus::Skipped
                } else {
                    StepStatus::Failed
                };
                row.error = Some(format!("not run: {} passed", phase.budget));
                row.finished_at = row.started_at.map(|_| Utc::now());
                self.record(std::slice::from_ref(&row)).await;
                return (row, StepEnd::ChainTimedOut);
            };
            row.status = StepStatus::Running;
            row.attempt = attempt;
            if attempt == 1 {
                row.started_at = Some(Utc::now());
            }
            self.record(std::slice::from_ref(&row)).await;

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
            let savepoint = ignore || retry_limit > 0;
            let (outcome, recoverable) = match (&task, tx.as_deref_mut()) {
                (Task::Sql(sql), Some(tx)) => tx.run_sql(sql, &step_ctx, savepoint).await,
                _ => (run_task(&task, &step_ctx).await, true),
            };
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
                Outcome::Failed | Outcome::TimedOut => {
                    if recoverable && attempt <= retry_limit {
                        let retries = step.retries.as_ref().expect("a retry limit");
                        let wait = policy::backoff(retries, attempt, rand::random());
                        row.error = Some(format!(
                            "attempt {attempt} failed: {}; retrying in {}",
                            outcome.error.as_deref().unwrap_or("failed"),
                            format_duration(wait)
                        ));
                        self.record(std::slice::from_ref(&row)).await;
                        match self.wait(wait, phase).await {
                            None => {
                                attempt += 1;
                                continue;
                            }
                            Some(end) => {
                                row.error = Some(match end {
                                    StepEnd::Cancelled => "cancelled".into(),
                                    _ => format!("stopped: {} passed", phase.budget),
                                });
                                end
                            }
                        }
                    } else {
                        StepEnd::Failed {
                            ignored: ignore && recoverable,
                        }
                    }
                }
            };
            row.finished_at = Some(Utc::now());
            row.status = match end {
                StepEnd::Succeeded => StepStatus::Succeeded,
                StepEnd::Failed { .. } | StepEnd::ChainTimedOut => StepStatus::Failed,
                StepEnd::Cancelled => StepStatus::Cancelled,
            };
            row.ignored = matches!(end, StepEnd::Failed { ignored: true });
            self.record(std::slice::from_ref(&row)).await;
            return (row, end);
        }
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

    /// Records the steps that did not run as skipped, saying why.
    fn skip_rest(&self, rows: &mut [StepRow], stop: Option<&Stop>, graph: bool) {
        let Some(stop) = stop else { return };
        let stopper = rows[stop.step].name.clone();
        let general = match stop.end {
            StepEnd::ChainTimedOut => "not run: the chain's time was up".to_string(),
            StepEnd::Cancelled => "not run: the run was cancelled".to_string(),
            _ if graph => format!("not run: the chain stopped after step `{stopper}` failed"),
            _ => format!("not run: step `{stopper}` failed"),
        };
        let needs = if graph { self.needs() } else { Vec::new() };
        for i in 0..rows.len() {
            if rows[i].status != StepStatus::Pending {
                continue;
            }
            // In a graph, name the step it waited for that did not finish, if any.
            let reason = needs
                .get(i)
                .into_iter()
                .flatten()
                .find_map(|&j| match rows[j].status {
                    StepStatus::Failed if !rows[j].ignored => Some(format!(
                        "not run: it needs `{}`, which failed",
                        rows[j].name
                    )),
                    StepStatus::Skipped | StepStatus::Pending => Some(format!(
                        "not run: it needs `{}`, which did not run",
                        rows[j].name
                    )),
                    StepStatus::Cancelled => Some(format!(
                        "not run: it needs `{}`, which was cancelled",
                        rows[j].name
                    )),
                    _ => None,
                })
                .unwrap_or_else(|| general.clone());
            rows[i].status = StepStatus::Skipped;
            rows[i].error = Some(reason);
        }
    }

    /// Starts this attempt's records. Records are for people: failing to write them is logged
    /// and does not fail the chain.
    async fn begin(&self, rows: &[StepRow]) {
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

    async fn record(&self, rows: &[StepRow]) {
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

/// `3 steps: 2 succeeded, 1 failed (ignored)`, and the onFailure steps likewise.
fn summary(rows: &[StepRow]) -> String {
    fn counts(rows: &[&StepRow]) -> String {
        let count = |f: &dyn Fn(&StepRow) -> bool| rows.iter().filter(|r| f(r)).count();
        let parts = [
            (count(&|r| r.status == StepStatus::Succeeded), "succeeded"),
            (
                count(&|r| r.status == StepStatus::Failed && !r.ignored),
                "failed",
            ),
            (
                count(&|r| r.status == StepStatus::Failed && r.ignored),
                "failed (ignored)",
            ),
            (
                count(&|r| r.status == StepStatus::RolledBack),
                "rolled back",
            ),
            (count(&|r| r.status == StepStatus::Cancelled), "cancelled"),
            (count(&|r| r.status == StepStatus::Skipped), "skipped"),
            (
                count(&|r| matches!(r.status, StepStatus::Pending | StepStatus::Running)),
                "unfinished",
            ),
        ];
        parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let main: Vec<&StepRow> = rows.iter().filter(|r| !r.on_failure).collect();
    let handlers: Vec<&StepRow> = rows.iter().filter(|r| r.on_failure).collect();
    let mut text = format!(
        "{} step{}: {}",
        main.len(),
        if main.len() == 1 { "" } else { "s" },
        counts(&main)
    );
    if !handlers.is_empty() {
        text.push_str(&format!("; onFailure: {}", counts(&handlers)));
    }
    text
}

/// The chain's transaction: one connection of the SQL steps' database, opened by the first
/// SQL step. A connection that saw an interrupted statement (or whose state is unknown) is
/// closed rather than returned to the pool, since a late cancel request could still hit it.
struct Transaction<'d> {
    databases: &'d Databases,
    database: Option<&'d str>,
    conn: Option<deadpool_postgres::Object>,
    /// The connector `conn` was made with, for cancel requests.
    tls: Option<crate::store::tls::Tls>,
    /// Whether BEGIN ran (so there is work to commit or roll back).
    began: bool,
    /// Close the connection at the end instead of returning it to the pool.
    discard: bool,
}

impl<'d> Transaction<'d> {
    fn new(databases: &'d Databases, database: Option<&'d str>) -> Self {
        Transaction {
            databases,
            database,
            conn: None,
            tls: None,
            began: false,
            discard: false,
        }
    }

    /// Runs one SQL step in the transaction, inside a savepoint when asked. Returns the
    /// outcome and whether the transaction can go on after a failure (rolled back to the
    /// savepoint, or nothing begun yet).
    async fn run_sql(
        &mut self,
        sql: &str,
        ctx: &TaskContext<'_>,
        savepoint: bool,
    ) -> (TaskOutcome, bool) {
        if self.conn.is_none() {
            let got = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return (interrupted(Outcome::Cancelled, "cancelled"), true),
                _ = sleep_for(ctx.timeout) => return (interrupted(Outcome::TimedOut, "timed out waiting for a connection"), true),
                got = self.databases.get(self.database) => got,
            };
            let (conn, tls) = match got {
                Ok(got) => got,
                Err(e) => return (failed(e.to_string()), true),
            };
            if let Err(e) = session::begin(&conn).await {
                drop(deadpool_postgres::Object::take(conn));
                return (failed(describe_pg_error(&e)), true);
            }
            self.conn = Some(conn);
            self.tls = Some(tls);
            self.began = true;
        }
        let client: &tokio_postgres::Client = self.conn.as_ref().expect("connected");
        if savepoint {
            if let Err(e) = session::step_savepoint(client).await {
                self.discard = true;
                return (
                    failed(format!(
                        "cannot take a savepoint: {}",
                        describe_pg_error(&e)
                    )),
                    false,
                );
            }
        }
        let tls = self.tls.as_ref().expect("set with the connection");
        let mut outcome = run_sql_on(client, tls, sql, ctx).await;
        if matches!(outcome.status, Outcome::TimedOut | Outcome::Cancelled) {
            self.discard = true;
        }
        if outcome.status == Outcome::Succeeded {
            if let Err(error) = still_in_transaction(client).await {
                self.discard = true;
                outcome.status = Outcome::Failed;
                outcome.error = Some(error);
                return (outcome, false);
            }
            if savepoint {
                if let Err(e) = session::release_step_savepoint(client).await {
                    self.discard = true;
                    return (
                        failed(format!(
                            "cannot release the savepoint: {}",
                            describe_pg_error(&e)
                        )),
                        false,
                    );
                }
            }
            return (outcome, true);
        }
        if !savepoint {
            return (outcome, false);
        }
        match session::roll_back_step(client).await {
            Ok(()) => (outcome, true),
            Err(e) => {
                self.discard = true;
                let error = format!(
                    "{}; then the rollback to the savepoint failed: {}",
                    outcome.error.as_deref().unwrap_or("failed"),
                    describe_pg_error(&e)
                );
                outcome.error = Some(error);
                (outcome, false)
            }
        }
    }

    /// Commits what the SQL steps did.
    async fn commit(&mut self) -> Result<(), String> {
        let Some(conn) = self.conn.take() else {
            return Ok(());
        };
        match tokio::time::timeout(END_WAIT, session::commit(&conn)).await {
            Ok(Ok(())) => {
                self.release(conn);
                Ok(())
            }
            Ok(Err(e)) => {
                self.discard = true;
                self.release(conn);
                Err(describe_pg_error(&e))
            }
            Err(_) => {
                self.discard = true;
                self.release(conn);
                Err(format!(
                    "COMMIT did not finish within {}",
                    format_duration(END_WAIT)
                ))
            }
        }
    }

    /// Rolls back everything the SQL steps did.
    async fn rollback(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if !self.discard {
            match tokio::time::timeout(END_WAIT, session::rollback(&conn)).await {
                Ok(Ok(())) => {}
                _ => self.discard = true,
            }
        }
        // A discarded connection is closed: the server rolls its transaction back.
        self.release(conn);
    }

    fn release(&self, conn: deadpool_postgres::Object) {
        if self.discard {
            drop(deadpool_postgres::Object::take(conn));
        } else {
            drop(conn);
        }
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // Never hand a connection that is inside a transaction back to the pool.
        if let Some(conn) = self.conn.take() {
            drop(deadpool_postgres::Object::take(conn));
        }
    }
}

/// Fails when a step's SQL ended the chain's transaction (COMMIT or ROLLBACK of its own), or
/// left it aborted.
async fn still_in_transaction(client: &tokio_postgres::Client) -> Result<(), String> {
    match session::transaction_state(client).await {
        Ok(TransactionState::InBlock) => Ok(()),
        Ok(TransactionState::Idle) => Err("the step's SQL ended the chain's transaction (COMMIT or ROLLBACK in a step); what the SQL steps did until then may have been committed".into()),
        Ok(TransactionState::Aborted) => {
            Err("the step's SQL left the chain's transaction aborted".into())
        }
        Err(e) => Err(describe_pg_error(&e)),
    }
}

async fn sleep_for(limit: Option<Duration>) {
    match limit {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

fn failed(error: String) -> TaskOutcome {
    TaskOutcome {
        status: Outcome::Failed,
        error: Some(error),
        output: String::new(),
        rows_affected: None,
    }
}

fn interrupted(status: Outcome, error: &str) -> TaskOutcome {
    TaskOutcome {
        status,
        error: Some(error.into()),
        output: String::new(),
        rows_affected: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: StepStatus, ignored: bool, on_failure: bool) -> StepRow {
        StepRow {
            status,
            ignored,
            ..StepRow::pending(1, "x", on_failure)
        }
    }

    #[test]
    fn the_summary_counts_steps_by_outcome() {
        let rows = [
            row(StepStatus::Succeeded, false, false),
            row(StepStatus::Failed, true, false),
            row(StepStatus::Succeeded, false, false),
        ];
        assert_eq!(summary(&rows), "3 steps: 2 succeeded, 1 failed (ignored)");
        let rows = [
            row(StepStatus::RolledBack, false, false),
            row(StepStatus::Failed, false, false),
            row(StepStatus::Skipped, false, false),
            row(StepStatus::Succeeded, false, true),
        ];
        assert_eq!(
            summary(&rows),
            "3 steps: 1 failed, 1 rolled back, 1 skipped; onFailure: 1 succeeded"
        );
        assert_eq!(
            summary(&[row(StepStatus::Succeeded, false, false)]),
            "1 step: 1 succeeded"
        );
    }

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
