//! The executor's SQL: turning ticks into runs, claiming due runs, settling finished ones,
//! heartbeats, recovering runs whose worker died, and pruning history.

use super::{Context, StoreError, LOCK_CLASS};
use crate::spec::Runnable;
use crate::store::states::{RunStatus, RunTrigger, TickPhase};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::GenericClient;

/// Serialises claims across replicas, so concurrency policies and `exclusive` are decided on
/// a consistent view of what runs (a claim transaction takes about a millisecond).
pub const LOCK_CLAIM: i32 = 3;

/// NOTIFY channels: new or changed runs, changed jobs, cancellation requests.
pub const CHANNEL_RUNS: &str = "pgsched_runs";
/// Sent (by a trigger) when a job or chain row is added, changed or deleted.
pub const CHANNEL_JOBS: &str = "pgsched_jobs";
/// Asks the worker running a run to cancel it; the payload is the run's id.
pub const CHANNEL_CANCEL: &str = "pgsched_cancel";

/// A job whose ticking needs attention: new, or with a tick due.
#[derive(Debug, Clone)]
pub struct DueJob {
    /// The job's (or chain's) name.
    pub name: String,
    /// `Job` or `Chain`.
    pub kind: String,
    /// The job's spec, as stored in `pgsched.jobs.spec`.
    pub spec: Value,
    /// `New` or `Scheduled` (the state [`advance_job`] compares against).
    pub tick_state: TickPhase,
    /// The first tick not yet turned into a run; `None` for a `new` job.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The jobs with a schedule or `runAt` that are new or have a tick due at `now`.
pub async fn due_jobs(
    c: &impl GenericClient,
    now: DateTime<Utc>,
) -> Result<Vec<DueJob>, StoreError> {
    let rows = c
        .query(
            "SELECT name, spec, tick_state, next_run_at, kind FROM pgsched.jobs
              WHERE (schedule IS NOT NULL OR run_at IS NOT NULL)
                AND (tick_state = 'new' OR (tick_state = 'scheduled' AND next_run_at <= $1))",
            &[&now],
        )
        .await
        .context("reading due jobs")?;
    Ok(rows
        .iter()
        .map(|r| DueJob {
            name: r.get(0),
            spec: r.get(1),
            tick_state: r.get(2),
            next_run_at: r.get(3),
            kind: r.get(4),
        })
        .collect())
}

/// One tick turned into a run row.
#[derive(Debug, Clone)]
pub struct TickRow {
    /// The tick: the run's `scheduled_at` and `due_at`.
    pub at: DateTime<Utc>,
    /// `Pending` or `Missed`.
    pub status: RunStatus,
    /// `Schedule` or `Catchup`.
    pub trigger: RunTrigger,
    /// Why the tick did not run (for `Missed`); `None` for a pending run.
    pub error: Option<String>,
}

/// Moves a job from one tick state to the next and records its ticks, once: the update is a
/// compare-and-set on the state the caller read, and runs are unique per (job, tick), so
/// replicas racing on the same job create each run exactly once. Returns whether this call won.
pub async fn advance_job(
    c: &mut tokio_postgres::Client,
    job: &str,
    kind: &str,
    old: (TickPhase, Option<DateTime<Utc>>),
    new: (TickPhase, Option<DateTime<Utc>>),
    ticks: &[TickRow],
) -> Result<bool, StoreError> {
    let tx = c.transaction().await.context("starting a tick")?;
    let won = tx
        .execute(
            "UPDATE pgsched.jobs SET tick_state = $4, next_run_at = $5
              WHERE name = $1 AND tick_state = $2 AND next_run_at IS NOT DISTINCT FROM $3",
            &[&job, &old.0, &old.1, &new.0, &new.1],
        )
        .await
        .context("advancing a job's next tick")?
        == 1;
    if won && !ticks.is_empty() {
        let rows: Vec<Value> = ticks
            .iter()
            .map(
                |t| json!({"at": t.at, "status": t.status, "trigger": t.trigger, "error": t.error}),
            )
            .collect();
        tx.execute(
            "INSERT INTO pgsched.runs (job, kind, scheduled_at, due_at, trigger, status, error, finished_at)
             SELECT $1, $3, t.at, t.at, t.trigger, t.status, t.error,
                    CASE WHEN t.status = 'pending' THEN NULL ELSE now() END
               FROM jsonb_to_recordset($2::jsonb) AS t(at timestamptz, status text, trigger text, error text)
             ON CONFLICT (job, scheduled_at) DO NOTHING",
            &[&job, &Value::Array(rows), &kind],
        )
        .await
        .context("recording ticks as runs")?;
        if ticks.iter().any(|t| t.status == RunStatus::Pending) {
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL_RUNS, &job])
                .await
                .context("notifying executors")?;
        }
    }
    tx.commit().await.context("committing a tick")?;
    Ok(won)
}

/// The earliest moment something may become due: a job's next tick or a pending run.
pub async fn next_wake(c: &impl GenericClient) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row = c
        .query_one(
            "SELECT least(
                 (SELECT min(next_run_at) FROM pgsched.jobs WHERE tick_state = 'scheduled'),
                 (SELECT min(due_at) FROM pgsched.runs WHERE status = 'pending' AND kind IN ('Job', 'Chain')))",
            &[],
        )
        .await
        .context("finding the next due time")?;
    Ok(row.get(0))
}

/// Whether any job has not had its first tick computed.
pub async fn has_new_jobs(c: &impl GenericClient) -> Result<bool, StoreError> {
    Ok(c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pgsched.jobs WHERE tick_state = 'new'
                              AND (schedule IS NOT NULL OR run_at IS NOT NULL))",
        &[],
    )
    .await
    .context("looking for new jobs")?
    .get(0))
}

/// A due pending run, locked for the claim.
#[derive(Debug, Clone)]
pub struct PendingRun {
    /// The run's id.
    pub id: i64,
    /// The job row's kind (`Job` or `Chain`), when the job still exists.
    pub kind: Option<String>,
    /// The job or chain the run belongs to.
    pub job: String,
    /// When the run became due.
    pub due_at: DateTime<Utc>,
    /// What made the run: a tick, a catch-up or a trigger.
    pub trigger: RunTrigger,
    /// The attempt about to start, from 1.
    pub attempt: i32,
    /// The parameters the run was triggered with (the job's defaults are not merged in).
    pub params: Value,
    /// The job's spec, `None` when the job no longer exists.
    pub spec: Option<Value>,
}

/// A run this worker has claimed and must execute.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    /// The run's id.
    pub id: i64,
    /// The job or chain the run belongs to.
    pub job: String,
    /// The attempt this execution is, from 1.
    pub attempt: i32,
    /// When the run was due (its start lateness is measured from here).
    pub due_at: DateTime<Utc>,
    /// The parameters the run was triggered with (the job's defaults are not merged in).
    pub params: Value,
    /// The job's spec as it was when the run was claimed.
    pub spec: Runnable,
}

/// What the claim decided for runs that do not start.
#[derive(Debug, Clone)]
pub struct Finish {
    /// The run's id.
    pub id: i64,
    /// `Skipped`, `Missed` or `Cancelled`.
    pub status: RunStatus,
    /// Why the run did not start, for the run's error column.
    pub error: String,
}

/// The claim transaction's view: what runs, and the due candidates (locked, SKIP LOCKED).
pub struct ClaimView {
    /// Every running job or chain run: (run id, job, whether the job is `exclusive`).
    pub running: Vec<(i64, String, bool)>,
    /// The due pending runs, oldest first, locked for this claim.
    pub candidates: Vec<PendingRun>,
}

/// Opens a claim: takes the claim lock, reads what runs and the due candidates.
pub async fn read_claim_view(
    tx: &tokio_postgres::Transaction<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<ClaimView, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_CLAIM],
    )
    .await
    .context("waiting for the claim lock")?;
    let running = tx
        .query(
            "SELECT r.id, r.job, coalesce((j.spec->>'exclusive')::boolean, false)
               FROM pgsched.runs r LEFT JOIN pgsched.jobs j ON j.name = r.job
              WHERE r.status = 'running' AND r.kind IN ('Job', 'Chain')",
            &[],
        )
        .await
        .context("reading running runs")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let candidates = tx
        .query(
            "SELECT r.id, r.job, r.due_at, r.attempt, r.params, j.spec, r.trigger, j.kind
               FROM pgsched.runs r LEFT JOIN pgsched.jobs j ON j.name = r.job AND j.kind = r.kind
              WHERE r.status = 'pending' AND r.kind IN ('Job', 'Chain') AND r.due_at <= $1
              ORDER BY r.due_at, r.id
              LIMIT $2
                FOR UPDATE OF r SKIP LOCKED",
            &[&now, &limit],
        )
        .await
        .context("reading due runs")?
        .iter()
        .map(|r| PendingRun {
            id: r.get(0),
            job: r.get(1),
            due_at: r.get(2),
            attempt: r.get(3),
            params: r.get(4),
            spec: r.get(5),
            trigger: r.get(6),
            kind: r.get(7),
        })
        .collect();
    Ok(ClaimView {
        running,
        candidates,
    })
}

/// Writes the claim's decisions: starts, finishes (skipped, missed, cancelled) and
/// cancellation requests for replaced runs.
pub async fn write_claim(
    tx: &tokio_postgres::Transaction<'_>,
    worker: &str,
    starts: &[i64],
    finishes: &[Finish],
    cancel: &[i64],
) -> Result<(), StoreError> {
    if !starts.is_empty() {
        tx.execute(
            "UPDATE pgsched.runs SET status = 'running', worker = $2, started_at = now(),
                    heartbeat_at = now(), cancel_requested = false, finished_at = NULL
              WHERE id = ANY($1)",
            &[&starts, &worker],
        )
        .await
        .context("starting runs")?;
    }
    if !finishes.is_empty() {
        let rows: Vec<Value> = finishes
            .iter()
            .map(|f| json!({"id": f.id, "status": f.status, "error": f.error}))
            .collect();
        tx.execute(
            "UPDATE pgsched.runs r SET status = f.status, error = f.error, finished_at = now()
               FROM jsonb_to_recordset($1::jsonb) AS f(id bigint, status text, error text)
              WHERE r.id = f.id",
            &[&Value::Array(rows)],
        )
        .await
        .context("recording skipped runs")?;
    }
    if !cancel.is_empty() {
        tx.execute(
            "UPDATE pgsched.runs SET cancel_requested = true WHERE id = ANY($1) AND status = 'running'",
            &[&cancel],
        )
        .await
        .context("requesting cancellation")?;
        for id in cancel {
            tx.execute(
                "SELECT pg_notify($1, $2)",
                &[&CHANNEL_CANCEL, &id.to_string()],
            )
            .await
            .context("notifying a cancellation")?;
        }
    }
    Ok(())
}

/// A finished attempt, settled.
#[derive(Debug, Clone)]
pub struct Completion {
    /// The run's id.
    pub id: i64,
    /// `Succeeded`, `Failed`, `Cancelled`, or `Pending` for a retry.
    pub status: RunStatus,
    /// The attempt the row records: the next one for a retry.
    pub attempt: i32,
    /// For a retry: when the next attempt is due.
    pub due_at: Option<DateTime<Utc>>,
    /// Why the attempt did not succeed; `None` when it did.
    pub error: Option<String>,
    /// What the task printed or returned, bounded by the task runner.
    pub output: String,
    /// Rows a SQL task affected or returned.
    pub rows_affected: Option<i64>,
    /// For `@after` jobs: when the job is due again.
    pub after_next: Option<(String, DateTime<Utc>)>,
}

/// Records a batch of finished attempts in one statement. Only runs still held by this worker
/// are updated: a run recovered as lost by another replica in the meantime is left alone.
pub async fn complete(
    c: &mut tokio_postgres::Client,
    worker: &str,
    done: &[Completion],
) -> Result<(), StoreError> {
    let rows: Vec<Value> = done
        .iter()
        .map(|d| {
            json!({"id": d.id, "status": d.status, "attempt": d.attempt, "due_at": d.due_at,
                   "error": d.error, "output": d.output, "rows": d.rows_affected})
        })
        .collect();
    let tx = c.transaction().await.context("starting a completion")?;
    tx.execute(
        "UPDATE pgsched.runs r
            SET status = d.status,
                attempt = d.attempt,
                due_at = coalesce(d.due_at, r.due_at),
                finished_at = CASE WHEN d.status = 'pending' THEN NULL ELSE now() END,
                worker = CASE WHEN d.status = 'pending' THEN NULL ELSE r.worker END,
                error = d.error, output = d.output, rows_affected = d.rows,
                cancel_requested = false
           FROM jsonb_to_recordset($1::jsonb)
                AS d(id bigint, status text, attempt int, due_at timestamptz, error text, output text, rows bigint)
          WHERE r.id = d.id AND r.status = 'running' AND r.worker = $2",
        &[&Value::Array(rows), &worker],
    )
    .await
    .context("recording finished runs")?;
    for d in done {
        if let Some((job, at)) = &d.after_next {
            tx.execute(
                "UPDATE pgsched.jobs SET tick_state = 'scheduled', next_run_at = $2
                  WHERE name = $1 AND tick_state = 'after-finish'",
                &[job, at],
            )
            .await
            .context("scheduling an @after job")?;
        }
    }
    // Waiting runs (maxInstances, exclusive, retries) may start now: wake the executors.
    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL_RUNS])
        .await
        .context("notifying executors")?;
    tx.commit().await.context("committing finished runs")?;
    Ok(())
}

/// Registers or refreshes this worker, beats for its running runs, and returns the ids of
/// its runs someone asked to cancel.
pub async fn heartbeat(
    c: &impl GenericClient,
    worker: &str,
    hostname: &str,
    pid: i32,
) -> Result<Vec<i64>, StoreError> {
    c.execute(
        "INSERT INTO pgsched.workers (id, hostname, pid, version) VALUES ($1, $2, $3, $4)
         ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()",
        &[&worker, &hostname, &pid, &env!("CARGO_PKG_VERSION")],
    )
    .await
    .context("registering the worker")?;
    Ok(c.query(
        "UPDATE pgsched.runs SET heartbeat_at = now()
              WHERE worker = $1 AND status = 'running' RETURNING id, cancel_requested",
        &[&worker],
    )
    .await
    .context("beating for running runs")?
    .iter()
    .filter(|r| r.get::<_, bool>(1))
    .map(|r| r.get(0))
    .collect())
}

/// Fails runs whose worker stopped beating for `stale_ms`, and retries those with retries
/// left (the attempt counts: a run that kills its worker should not loop forever). Returns
/// (retried, lost) counts.
pub async fn recover_lost(c: &impl GenericClient, stale_ms: i64) -> Result<(u64, u64), StoreError> {
    let rows = c
        .query(
            "WITH lost AS (
                 SELECT r.id, r.attempt, r.worker,
                        coalesce((j.spec->'retries'->>'limit')::int, 0) AS retry_limit
                   FROM pgsched.runs r LEFT JOIN pgsched.jobs j ON j.name = r.job
                  WHERE r.status = 'running'
                    AND r.heartbeat_at < now() - make_interval(secs => $1::bigint / 1000.0)
                    FOR UPDATE OF r SKIP LOCKED)
             UPDATE pgsched.runs r
                SET status = CASE WHEN l.attempt <= l.retry_limit THEN 'pending' ELSE 'lost' END,
                    attempt = CASE WHEN l.attempt <= l.retry_limit THEN l.attempt + 1 ELSE l.attempt END,
                    due_at = CASE WHEN l.attempt <= l.retry_limit THEN now() ELSE r.due_at END,
                    finished_at = CASE WHEN l.attempt <= l.retry_limit THEN NULL ELSE now() END,
                    worker = CASE WHEN l.attempt <= l.retry_limit THEN NULL ELSE r.worker END,
                    error = 'lost: worker ' || coalesce(l.worker, '?') || ' stopped sending heartbeats'
               FROM lost l
              WHERE r.id = l.id
          RETURNING r.status",
            &[&stale_ms],
        )
        .await
        .context("recovering lost runs")?;
    let retried = rows
        .iter()
        .filter(|r| r.get::<_, RunStatus>(0) == RunStatus::Pending)
        .count() as u64;
    if retried > 0 {
        c.execute("SELECT pg_notify($1, '')", &[&CHANNEL_RUNS])
            .await
            .context("notifying executors")?;
    }
    c.execute(
        "DELETE FROM pgsched.workers WHERE heartbeat_at < now() - make_interval(secs => $1::bigint / 1000.0)",
        &[&stale_ms],
    )
    .await
    .context("removing dead workers")?;
    Ok((retried, rows.len() as u64 - retried))
}

/// Removes this worker's row on a clean stop.
pub async fn unregister(c: &impl GenericClient, worker: &str) -> Result<(), StoreError> {
    c.execute("DELETE FROM pgsched.workers WHERE id = $1", &[&worker])
        .await
        .context("unregistering the worker")?;
    Ok(())
}

/// Deletes finished runs past their job's, chain's or Timeout's `history` limits, at most
/// `batch` per call, so a large backlog is pruned in small transactions. A Timeout may share
/// its name with a job, so runs are told apart by kind as well as by name.
pub async fn prune_history(c: &impl GenericClient, batch: i64) -> Result<u64, StoreError> {
    c.execute(
        "DELETE FROM pgsched.runs WHERE id IN (
             SELECT id FROM (
                 SELECT r.id, r.status, r.finished_at, coalesce(j.spec, t.spec)->'history' AS h,
                        row_number() OVER (PARTITION BY r.kind = 'Timeout', r.job, r.status = 'succeeded'
                                           ORDER BY r.id DESC) AS n
                   FROM pgsched.runs r
                   LEFT JOIN pgsched.jobs j ON r.kind <> 'Timeout' AND j.name = r.job
                   LEFT JOIN pgsched.timeouts t ON r.kind = 'Timeout' AND t.name = r.job
                  WHERE r.status IN ('succeeded', 'failed', 'skipped', 'missed', 'cancelled', 'lost')
             ) x
              WHERE (x.status = 'succeeded' AND x.n > coalesce((x.h->>'keepSucceeded')::int, 100))
                 OR (x.status <> 'succeeded' AND x.n > coalesce((x.h->>'keepFailed')::int, 100))
                 OR (x.h ? 'keepFor' AND x.finished_at < now() - pgsched.duration(x.h->>'keepFor'))
              LIMIT $1)",
        &[&batch],
    )
    .await
    .context("pruning run history")
}
