//! The executor's SQL: turning ticks into runs, claiming due runs, settling finished ones,
//! heartbeats, recovering runs whose worker died, and pruning history.

use super::{Context, StoreError};
use crate::store::states::{Effects, RunStatus, RunTrigger, TickPhase};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::GenericClient;

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
             ON CONFLICT (job, scheduled_at) WHERE scheduled_at IS NOT NULL DO NOTHING",
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
    /// How a SQL task's writes were committed; `None` for other tasks.
    pub effects: Option<Effects>,
    /// How long the run waited in the local queue between its claim and its start: the
    /// claim records the claim's time as `started_at`, the completion moves it to the start.
    pub queued: std::time::Duration,
}

/// Records a batch of finished attempts in one statement, in a transaction of its own (see
/// [`record`]), and wakes the executors; an empty batch (its runs recorded with their SQL
/// task's writes) only wakes them.
pub async fn complete(
    c: &mut tokio_postgres::Client,
    worker: &str,
    done: &[Completion],
) -> Result<(), StoreError> {
    if done.is_empty() {
        return wake_executors(&*c).await;
    }
    let tx = c.transaction().await.context("starting a completion")?;
    record(&tx, worker, done, None).await?;
    wake_executors(&tx).await?;
    tx.commit().await.context("committing finished runs")?;
    Ok(())
}

/// The statement [`record`] runs: finished attempts, one array per column, side by side.
pub const RECORD: &str = "UPDATE pgsched.runs r
                SET status = d.status,
                    attempt = d.attempt,
                    due_at = coalesce(d.due_at, r.due_at),
                    started_at = CASE WHEN d.status = 'pending' THEN NULL
                                      ELSE r.started_at + make_interval(secs => d.queued_us / 1e6) END,
                    finished_at = CASE WHEN d.status = 'pending' THEN NULL ELSE now() END,
                    worker = CASE WHEN d.status = 'pending' THEN NULL ELSE r.worker END,
                    error = d.error, output = d.output, rows_affected = d.rows,
                    cancel_requested = false, effects = d.effects
               FROM unnest($1::bigint[], $2::text[], $3::int[], $4::timestamptz[], $5::text[],
                           $6::text[], $7::bigint[], $8::bigint[], $9::text[])
                    AS d(id, status, attempt, due_at, error, output, rows, queued_us, effects)
              -- The runs by their primary key (`id = ANY`), then joined to the arrays. The
              -- worker and status checks sit in a coalesce on purpose: as plain conditions
              -- their estimate (from statistics taken when no run was running) is a row or
              -- two, and the planner then scans the table, or the partial index of running
              -- runs full of a drain's dead entries, once per finished run.
              WHERE r.id = d.id AND r.id = ANY($1)
                AND coalesce(r.worker = $10 AND r.status = 'running', false)";

/// Records finished attempts in one statement, inside the caller's transaction (a batch's, or
/// the one a SQL task's writes wait in). Only runs still held by this worker are updated: a run
/// recovered as lost by another replica in the meantime is left alone. Returns how many were
/// recorded. Does not wake the executors: see [`wake_executors`]. `prepared` is [`RECORD`]
/// prepared on `c`'s connection, for callers that record one run at a time and keep it.
pub async fn record(
    c: &impl GenericClient,
    worker: &str,
    done: &[Completion],
    prepared: Option<&tokio_postgres::Statement>,
) -> Result<u64, StoreError> {
    // One array per column: the statement reads them side by side (cheaper than JSON).
    let ids: Vec<i64> = done.iter().map(|d| d.id).collect();
    let statuses: Vec<&str> = done.iter().map(|d| d.status.as_str()).collect();
    let attempts: Vec<i32> = done.iter().map(|d| d.attempt).collect();
    let due: Vec<Option<DateTime<Utc>>> = done.iter().map(|d| d.due_at).collect();
    let errors: Vec<Option<&str>> = done.iter().map(|d| d.error.as_deref()).collect();
    let outputs: Vec<&str> = done.iter().map(|d| d.output.as_str()).collect();
    let rows: Vec<Option<i64>> = done.iter().map(|d| d.rows_affected).collect();
    let queued: Vec<i64> = done
        .iter()
        .map(|d| i64::try_from(d.queued.as_micros()).unwrap_or(i64::MAX))
        .collect();
    let effects: Vec<Option<&str>> = done
        .iter()
        .map(|d| d.effects.map(Effects::as_str))
        .collect();
    let params: [(&(dyn ToSql + Sync), Type); 10] = [
        (&ids, Type::INT8_ARRAY),
        (&statuses, Type::TEXT_ARRAY),
        (&attempts, Type::INT4_ARRAY),
        (&due, Type::TIMESTAMPTZ_ARRAY),
        (&errors, Type::TEXT_ARRAY),
        (&outputs, Type::TEXT_ARRAY),
        (&rows, Type::INT8_ARRAY),
        (&queued, Type::INT8_ARRAY),
        (&effects, Type::TEXT_ARRAY),
        (&worker, Type::TEXT),
    ];
    let recorded = match prepared {
        Some(statement) => c.execute(statement, &params.map(|(value, _)| value)).await,
        None => c.execute_typed(RECORD, &params).await,
    }
    .context("recording finished runs")?;
    for d in done {
        if let Some((job, at)) = &d.after_next {
            c.execute(
                "UPDATE pgsched.jobs SET tick_state = 'scheduled', next_run_at = $2
                  WHERE name = $1 AND tick_state = 'after-finish'",
                &[job, at],
            )
            .await
            .context("scheduling an @after job")?;
        }
    }
    Ok(recorded)
}

/// Wakes the executors after runs finished: waiting runs (maxInstances, exclusive, retries)
/// may start now. Once per batch of finished runs, not once per run.
pub async fn wake_executors(c: &impl GenericClient) -> Result<(), StoreError> {
    c.execute("SELECT pg_notify($1, '')", &[&CHANNEL_RUNS])
        .await
        .context("notifying executors")?;
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
