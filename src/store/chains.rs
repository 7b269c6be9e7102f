//! The step records of chain runs (`pgsched.run_steps`), written as steps start and finish.
//!
//! Each attempt of a run has its own records (`run_attempt`); a record is written whole and
//! upserted, so a step's record can be rewritten as it goes from pending to running to its end.

use super::{Context, StoreError};
use crate::store::states::StepStatus;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

/// One step of one attempt of a chain run, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    /// 1-based; `onFailure` steps come after the chain's steps.
    pub position: i32,
    /// The step's recorded name: its `name`, or `step-<n>` / `on-failure-<n>`.
    pub name: String,
    /// Where the step stands.
    pub status: StepStatus,
    /// The step's own attempt (its `retries` inside the run).
    pub attempt: i32,
    /// A failure that `ignoreError` let the chain go past.
    pub ignored: bool,
    /// One of the chain's `onFailure` steps rather than its `steps`.
    pub on_failure: bool,
    /// When the step's first attempt started; `None` while pending.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended; `None` until then.
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it did not succeed; `None` when it did (or has not ended).
    pub error: Option<String>,
    /// What the step printed or returned, bounded; `None` when empty.
    pub output: Option<String>,
    /// Rows affected (or returned) by a SQL step; `None` for other tasks.
    pub rows_affected: Option<i64>,
}

impl StepRow {
    /// A step that has not started.
    pub fn pending(position: i32, name: impl Into<String>, on_failure: bool) -> StepRow {
        StepRow {
            position,
            name: name.into(),
            status: StepStatus::Pending,
            attempt: 1,
            ignored: false,
            on_failure,
            started_at: None,
            finished_at: None,
            error: None,
            output: None,
            rows_affected: None,
        }
    }

    fn to_json(&self) -> Value {
        json!({
            "position": self.position, "name": self.name, "status": self.status,
            "attempt": self.attempt, "ignored": self.ignored, "on_failure": self.on_failure,
            "started_at": self.started_at, "finished_at": self.finished_at,
            "error": self.error, "output": self.output, "rows_affected": self.rows_affected,
        })
    }
}

/// Starts the records of one attempt of a run: removes what an earlier try of the same attempt
/// left (a worker that shut down runs the attempt again) and writes `rows`.
pub async fn begin_attempt(
    c: &impl GenericClient,
    run_id: i64,
    run_attempt: i32,
    rows: &[StepRow],
) -> Result<(), StoreError> {
    c.execute(
        "DELETE FROM pgsched.run_steps WHERE run_id = $1 AND run_attempt = $2",
        &[&run_id, &run_attempt],
    )
    .await
    .context("clearing the steps of an interrupted attempt")?;
    write_steps(c, run_id, run_attempt, rows).await
}

/// Writes (inserts or replaces) step records of one attempt of a run, in one statement.
pub async fn write_steps(
    c: &impl GenericClient,
    run_id: i64,
    run_attempt: i32,
    rows: &[StepRow],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(rows.iter().map(StepRow::to_json).collect());
    c.execute(
        "INSERT INTO pgsched.run_steps (run_id, run_attempt, position, name, status, attempt,
                                        ignored, on_failure, started_at, finished_at, error,
                                        output, rows_affected)
         SELECT $1, $2, r.position, r.name, r.status, r.attempt, r.ignored, r.on_failure,
                r.started_at, r.finished_at, r.error, r.output, r.rows_affected
           FROM jsonb_to_recordset($3::jsonb) AS r(position int, name text, status text,
                attempt int, ignored boolean, on_failure boolean, started_at timestamptz,
                finished_at timestamptz, error text, output text, rows_affected bigint)
         ON CONFLICT (run_id, run_attempt, position) DO UPDATE
            SET name = excluded.name, status = excluded.status, attempt = excluded.attempt,
                ignored = excluded.ignored, on_failure = excluded.on_failure,
                started_at = excluded.started_at, finished_at = excluded.finished_at,
                error = excluded.error, output = excluded.output,
                rows_affected = excluded.rows_affected",
        &[&run_id, &run_attempt, &rows],
    )
    .await
    .context("recording chain steps")?;
    Ok(())
}
