//! The queries behind `pgsched status` and `pgsched runs` (read-only), and behind
//! `pgsched trigger`, which enqueues runs (one through `pgsched.trigger`, many through
//! `pgsched.trigger_many`).

use super::states::{RunStatus, RunTrigger};
use super::{Context, StoreError};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// One run as `pgsched runs` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunRecord {
    /// The run's id, the one `pgsched trigger` prints.
    pub id: i64,
    /// The job, chain or Timeout the run belongs to.
    pub job: String,
    /// `Job`, `Chain` or `Timeout`: a Timeout may share its name with a job or chain.
    pub kind: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `missed`, `cancelled` or `lost`.
    pub status: RunStatus,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: i32,
    /// What made the run: `schedule`, `catchup` (after downtime), `manual` or `timeout`.
    pub trigger: RunTrigger,
    /// The schedule tick the run is for; null for manual and Timeout runs.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// When the run may start (a retry's is after the back-off).
    pub due_at: DateTime<Utc>,
    /// When the current or last attempt started; null if it never started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run finished; null while pending or running.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to finish, in milliseconds; null until it finished.
    pub duration_ms: Option<i64>,
    /// The replica that ran it, as `host/pid`; null when none took it.
    pub worker: Option<String>,
    /// Why it did not succeed, or why it was skipped, missed or cancelled.
    pub error: Option<String>,
    /// What the task printed or returned, at most 64 KiB; a chain's sums up its steps.
    pub output: Option<String>,
    /// Rows a SQL task affected or returned, or a Timeout run expired.
    pub rows_affected: Option<i64>,
    /// The parameters given with `pgsched trigger` (`{}` for scheduled runs).
    pub params: serde_json::Value,
    /// A chain run's steps, every attempt's, in order (empty for jobs and timeouts).
    pub steps: Vec<StepRecord>,
}

/// One step of one attempt of a chain run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// The run's attempt this step belongs to.
    pub run_attempt: i32,
    /// 1-based; `onFailure` steps come after the chain's steps.
    pub position: i32,
    /// The step's name in the chain (default `step-<n>`, `on-failure-<n>`).
    pub name: String,
    /// `pending`, `running`, `succeeded`, `failed`, `skipped`, `cancelled` or `rolled_back`.
    pub status: String,
    /// The step's own attempt (its `retries` inside the run).
    pub attempt: i32,
    /// A failure that `ignoreError` let the chain go past.
    pub ignored: bool,
    /// An `onFailure` step, run because the chain failed or timed out.
    pub on_failure: bool,
    /// When the step started; null for a step that did not start.
    pub started_at: Option<DateTime<Utc>>,
    /// When the step ended; null while pending or running.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end, in milliseconds; null until it ended.
    pub duration_ms: Option<i64>,
    /// Why the step did not succeed.
    pub error: Option<String>,
    /// What the step's task printed or returned, at most 64 KiB.
    pub output: Option<String>,
    /// Rows a SQL step affected or returned.
    pub rows_affected: Option<i64>,
}

/// A job's (or timeout's) runs, newest first.
pub async fn runs_of(
    c: &impl GenericClient,
    job: &str,
    limit: i64,
) -> Result<Vec<RunRecord>, StoreError> {
    let rows = c
        .query(
            "SELECT id, job, status, attempt, trigger, scheduled_at, due_at, started_at, finished_at,
                    duration_ms, worker, error, output, rows_affected, params, kind
               FROM pgsched.runs WHERE job = $1 ORDER BY id DESC LIMIT $2",
            &[&job, &limit],
        )
        .await
        .context("reading runs")?;
    let ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let mut steps = steps_of(c, &ids).await?;
    Ok(rows
        .iter()
        .map(|r| RunRecord {
            id: r.get(0),
            job: r.get(1),
            status: r.get(2),
            attempt: r.get(3),
            trigger: r.get(4),
            scheduled_at: r.get(5),
            due_at: r.get(6),
            started_at: r.get(7),
            finished_at: r.get(8),
            duration_ms: r.get(9),
            worker: r.get(10),
            error: r.get(11),
            output: r.get(12),
            rows_affected: r.get(13),
            params: r.get(14),
            kind: r.get(15),
            steps: steps.remove(&r.get::<_, i64>(0)).unwrap_or_default(),
        })
        .collect())
}

/// The step records of these runs, by run, in attempt and position order.
async fn steps_of(
    c: &impl GenericClient,
    runs: &[i64],
) -> Result<std::collections::HashMap<i64, Vec<StepRecord>>, StoreError> {
    let mut by_run: std::collections::HashMap<i64, Vec<StepRecord>> = Default::default();
    if runs.is_empty() {
        return Ok(by_run);
    }
    let rows = c
        .query(
            "SELECT run_id, run_attempt, position, name, status, attempt, ignored, on_failure,
                    started_at, finished_at,
                    (extract(epoch FROM finished_at - started_at) * 1000)::bigint,
                    error, output, rows_affected
               FROM pgsched.run_steps WHERE run_id = ANY($1)
              ORDER BY run_id, run_attempt, position",
            &[&runs],
        )
        .await
        .context("reading chain steps")?;
    for r in &rows {
        by_run.entry(r.get(0)).or_default().push(StepRecord {
            run_attempt: r.get(1),
            position: r.get(2),
            name: r.get(3),
            status: r.get(4),
            attempt: r.get(5),
            ignored: r.get(6),
            on_failure: r.get(7),
            started_at: r.get(8),
            finished_at: r.get(9),
            duration_ms: r.get(10),
            error: r.get(11),
            output: r.get(12),
            rows_affected: r.get(13),
        });
    }
    Ok(by_run)
}

/// One object as `pgsched status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    /// `Job`, `Chain` or `Timeout` (`Connection` too, in status files).
    pub kind: String,
    /// The object's name, unique per kind.
    pub name: String,
    /// The `schedule` expression; `after` and its interval for a Timeout; null if none.
    pub schedule: Option<String>,
    /// `suspend: true`: no new runs are scheduled (running ones finish).
    pub suspended: bool,
    /// 1 when created, plus one each time its spec file changed it.
    pub generation: i64,
    /// The spec file, relative to the spec directory; null for a row made by hand.
    pub source_file: Option<String>,
    /// The hash of the spec the row holds; status files compare it with the file's.
    #[serde(skip_serializing)]
    pub spec_hash: Option<String>,
    /// Written from a spec file (false: a row someone inserted by hand).
    #[serde(skip_serializing)]
    pub managed: bool,
    /// The next tick (a Timeout's next deadline); null when none is planned.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Runs running now, on any replica.
    pub active: i64,
    /// Runs in the kept history that succeeded.
    pub succeeded: i64,
    /// Runs in the kept history that failed or were lost (their worker died).
    pub failed: i64,
    /// Runs in the kept history that were skipped or missed.
    pub skipped: i64,
    /// The latest run that has left `pending`; null before the first.
    pub last_run: Option<LastRun>,
    /// When the latest successful run finished.
    pub last_successful_at: Option<DateTime<Utc>>,
    /// The tick of the latest scheduled run (manual runs have none).
    pub last_scheduled_at: Option<DateTime<Utc>>,
}

/// An object's latest run that has left `pending`, as `pgsched status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRun {
    /// The run's id: `pgsched runs NAME` shows it in full.
    pub id: i64,
    /// `running`, `succeeded`, `failed`, `skipped`, `missed`, `cancelled` or `lost`.
    pub status: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: i32,
    /// When the current or last attempt started; null if it never started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run finished; null while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to finish, in milliseconds; null until it finished.
    pub duration_ms: Option<i64>,
    /// The replica that ran it, as `host/pid`; null when none took it.
    pub worker: Option<String>,
    /// Why it did not succeed, or why it was skipped, missed or cancelled.
    pub error: Option<String>,
}

/// Every job, chain and timeout (or the one named) with its run totals and last run.
pub async fn status(
    c: &impl GenericClient,
    name: Option<&str>,
) -> Result<Vec<ObjectStatus>, StoreError> {
    objects_with_runs(c, name, false).await
}

/// Like [`status`], with Connections too (status files list every object of a file).
pub async fn status_of_everything(c: &impl GenericClient) -> Result<Vec<ObjectStatus>, StoreError> {
    objects_with_runs(c, None, true).await
}

async fn objects_with_runs(
    c: &impl GenericClient,
    name: Option<&str>,
    with_connections: bool,
) -> Result<Vec<ObjectStatus>, StoreError> {
    let rows = c
        .query(
            "WITH objects AS (
                 SELECT kind, name, schedule, suspended, generation, source_file, next_run_at, spec_hash, managed
                   FROM pgsched.jobs
                 UNION ALL
                 SELECT 'Timeout', name, 'after ' || after::text, suspended, generation, source_file, next_deadline,
                        spec_hash, managed
                   FROM pgsched.timeouts
                 UNION ALL
                 SELECT 'Connection', name, NULL, false, generation, source_file, NULL, spec_hash, managed
                   FROM pgsched.connections WHERE $2)
             SELECT o.kind, o.name, o.schedule, o.suspended, o.generation, o.source_file, o.next_run_at,
                    t.active, t.succeeded, t.failed, t.skipped, t.last_success, t.last_scheduled,
                    l.id, l.status, l.attempt, l.started_at, l.finished_at, l.duration_ms, l.worker, l.error,
                    o.spec_hash, o.managed
               FROM objects o
               LEFT JOIN LATERAL (
                   SELECT count(*) FILTER (WHERE status = 'running') AS active,
                          count(*) FILTER (WHERE status = 'succeeded') AS succeeded,
                          count(*) FILTER (WHERE status IN ('failed', 'lost')) AS failed,
                          count(*) FILTER (WHERE status IN ('skipped', 'missed')) AS skipped,
                          max(finished_at) FILTER (WHERE status = 'succeeded') AS last_success,
                          max(scheduled_at) AS last_scheduled
                     FROM pgsched.runs r WHERE r.job = o.name AND r.kind = o.kind) t ON true
               LEFT JOIN LATERAL (
                   SELECT id, status, attempt, started_at, finished_at, duration_ms, worker, error
                     FROM pgsched.runs r
                    WHERE r.job = o.name AND r.kind = o.kind AND r.status NOT IN ('pending')
                    ORDER BY r.id DESC LIMIT 1) l ON true
              WHERE $1::text IS NULL OR o.name = $1
              ORDER BY o.kind, o.name",
            &[&name, &with_connections],
        )
        .await
        .context("reading status")?;
    Ok(rows
        .iter()
        .map(|r| ObjectStatus {
            kind: r.get(0),
            name: r.get(1),
            schedule: r.get(2),
            suspended: r.get(3),
            generation: r.get(4),
            source_file: r.get(5),
            spec_hash: r.get(21),
            managed: r.get(22),
            next_run_at: r.get(6),
            active: r.get(7),
            succeeded: r.get(8),
            failed: r.get(9),
            skipped: r.get(10),
            last_successful_at: r.get(11),
            last_scheduled_at: r.get(12),
            last_run: r.get::<_, Option<i64>>(13).map(|id| LastRun {
                id,
                status: r.get(14),
                attempt: r.get(15),
                started_at: r.get(16),
                finished_at: r.get(17),
                duration_ms: r.get(18),
                worker: r.get(19),
                error: r.get(20),
            }),
        })
        .collect())
}

/// Enqueues an on-demand run through `pgsched.trigger`; returns its id.
pub async fn trigger(
    c: &impl GenericClient,
    job: &str,
    params: &serde_json::Value,
    at: Option<DateTime<Utc>>,
) -> Result<i64, StoreError> {
    Ok(c.query_one(
        "SELECT pgsched.trigger($1, $2::jsonb, coalesce($3, now()))",
        &[&job, params, &at],
    )
    .await
    .context(format!("triggering {job}"))?
    .get(0))
}

/// How many parameter sets `pgsched trigger --params-file` passes to one [`trigger_many`] call:
/// large enough that the round trip is a small part of each batch's time (enqueueing 10,000
/// runs takes tens of milliseconds), small enough that one batch's parameters and ids stay a few
/// megabytes in the client and the server whatever the file's size.
pub const TRIGGER_BATCH: usize = 10_000;

/// Enqueues one on-demand run per parameter set through `pgsched.trigger_many`, with one INSERT
/// and one NOTIFY on `pgsched_runs` (none for an empty slice), in `c`'s transaction if it is
/// one; returns the run ids in the order of `params`. Each set must be a JSON object, and the
/// job must exist (the errors of `pgsched.trigger`, with the SQLSTATE in
/// [`StoreError::code`]); `at` (default now) is when every run is due.
pub async fn trigger_many(
    c: &impl GenericClient,
    job: &str,
    params: &[serde_json::Value],
    at: Option<DateTime<Utc>>,
) -> Result<Vec<i64>, StoreError> {
    Ok(c.query_one(
        "SELECT pgsched.trigger_many($1, $2::jsonb[], coalesce($3, now()))",
        &[&job, &params, &at],
    )
    .await
    .context(format!("triggering {} runs of {job}", params.len()))?
    .get(0))
}

/// Enqueues one run per parameter set, `batch` sets (the command line's default:
/// [`TRIGGER_BATCH`]) per [`trigger_many`] call, all in one transaction: the runs are enqueued all or none (a failed
/// batch rolls back the ones before it), and no executor sees, or is woken for, any of them
/// before the last is in. Returns the ids in the order of `params`. An empty `params` still
/// asks the database once, so an unknown job is an error whatever the list holds.
pub async fn trigger_in_batches(
    client: &mut tokio_postgres::Client,
    job: &str,
    params: &[serde_json::Value],
    at: Option<DateTime<Utc>>,
    batch: usize,
) -> Result<Vec<i64>, StoreError> {
    let tx = client
        .transaction()
        .await
        .context(format!("starting to enqueue runs of {job}"))?;
    let mut ids = Vec::with_capacity(params.len());
    if params.is_empty() {
        trigger_many(&tx, job, params, at).await?;
    }
    for chunk in params.chunks(batch.max(1)) {
        ids.extend(trigger_many(&tx, job, chunk, at).await?);
    }
    tx.commit()
        .await
        .context(format!("committing {} runs of {job}", params.len()))?;
    Ok(ids)
}

/// Runs due and waiting for a worker: the backlog /metrics reports.
pub async fn pending_runs(c: &impl GenericClient) -> Result<i64, StoreError> {
    Ok(c.query_one(
        "SELECT count(*) FROM pgsched.runs WHERE status = 'pending' AND due_at <= now()",
        &[],
    )
    .await
    .context("counting pending runs")?
    .get(0))
}
