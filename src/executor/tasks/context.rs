//! What every task runner is given ([`TaskContext`]) and what it ends in ([`TaskOutcome`]):
//! the types the runners and their callers (the executor, chains) share, so they sit below
//! every runner.

use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::executor::connections::Databases;

/// How much of a task's output a run keeps: the last 64 KiB of a program's stdout and
/// stderr, the first 64 KiB of an HTTP response body.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

/// What a task may know about the run it belongs to, and what it runs with.
#[derive(Debug)]
pub struct TaskContext<'a> {
    /// The job (or chain) name, for `PGSCHED_JOB` and log lines.
    pub job: &'a str,
    /// The run's id, for `PGSCHED_RUN_ID` and log lines.
    pub run_id: i64,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: i32,
    /// The run's parameters: `$1` of SQL tasks, `PGSCHED_PARAMS` of programs.
    pub params: &'a Value,
    /// Counted from the start of [`run_task`](super::run_task) (or
    /// [`run_sql_on`](super::run_sql_on)).
    pub timeout: Option<Duration>,
    /// Cancelled by the executor for `concurrencyPolicy: Replace` and on shutdown.
    pub cancel: CancellationToken,
    /// The pools SQL and `notify` tasks take their connection from.
    pub databases: &'a Databases,
    /// The `Connection` SQL and `notify` tasks run on; `None` for the scheduler's own database.
    pub database: Option<&'a str>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The task completed without error.
    Succeeded,
    /// The task failed: a SQL error, a program exiting non-zero, an unexpected HTTP status, …
    Failed,
    /// The run's timeout expired; the task was stopped.
    TimedOut,
    /// [`TaskContext::cancel`] fired; the task was stopped.
    Cancelled,
}

/// The result of one task, as the run records it.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    /// How the task ended.
    pub status: Outcome,
    /// Why the task did not succeed; `None` when it did.
    pub error: Option<String>,
    /// What the task printed or returned, bounded by [`OUTPUT_LIMIT`].
    pub output: String,
    /// Rows affected (or returned) by a SQL task.
    pub rows_affected: Option<i64>,
}

impl TaskOutcome {
    pub(super) fn succeeded(output: String) -> TaskOutcome {
        TaskOutcome {
            status: Outcome::Succeeded,
            error: None,
            output,
            rows_affected: None,
        }
    }

    pub(super) fn failed(error: impl Into<String>, output: String) -> TaskOutcome {
        TaskOutcome {
            status: Outcome::Failed,
            error: Some(error.into()),
            output,
            rows_affected: None,
        }
    }
}
