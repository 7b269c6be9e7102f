//! The claim's SQL: taking due runs for this worker. Runs of jobs whose policy needs no
//! decision (`claim_class = 'free'`: Allow, no maxInstances, not exclusive, no
//! startingDeadline) are claimed in batches by [`claim_free`], one statement under the claim
//! lock taken *shared*, so replicas claiming at once do not wait for one another. The others
//! are decided by the concurrency policies on a [`ClaimView`] read under the narrowest lock
//! that keeps them: a lock per job, or the claim lock exclusively for `exclusive` jobs
//! ([`read_claim_view`], [`write_claim`]). Also giving back claimed runs this worker did not
//! start ([`release`]).

use std::sync::Arc;

use super::{Context, StoreError, LOCK_CLASS};
use crate::spec::Runnable;
use crate::store::runs::{CHANNEL_CANCEL, CHANNEL_RUNS};
use crate::store::states::{RunStatus, RunTrigger};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::types::{ToSql, Type};

/// The claim lock: taken shared by batch claims of free runs and by claims deciding `policy`
/// jobs, exclusively by claims deciding `exclusive` jobs, so that an exclusive run starts only
/// on a consistent picture of everything that runs, while other claims never wait for each
/// other (deciding claims of one job wait for each other on the job's lock).
pub const LOCK_CLAIM: i32 = 3;

/// First key of the per-job locks a deciding claim takes (the second is the hash of the job's
/// name): "pgsj".
pub const LOCK_CLASS_JOB: i32 = 0x7067_736a;

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
    /// Whether the job is `exclusive` (its `claim_class`).
    pub exclusive: bool,
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
    /// The job's spec as it was when the run was claimed (shared by the runs of one job).
    pub spec: Arc<Runnable>,
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
    /// Running runs as the policies need them: (run id, job, whether the job is `exclusive`),
    /// for the candidates' jobs and exclusive jobs, and one other run if any runs.
    pub running: Vec<(i64, String, bool)>,
    /// The due pending runs, oldest first, locked for this claim.
    pub candidates: Vec<PendingRun>,
}

/// Opens a deciding claim: reads the due candidates that need a decision (runs of `policy` and
/// `exclusive` jobs, looked up job by job so that a backlog of free runs is not read, locked
/// with SKIP LOCKED), takes the narrowest lock that makes the decision safe, then reads what
/// the policies need to know of what runs: the running runs of the candidates' jobs and of
/// exclusive jobs, and whether anything else runs.
///
/// The lock: for runs of `policy` jobs, the claim lock shared (so that no exclusive run starts
/// meanwhile) and a lock per job, so that claims deciding different jobs go side by side; when
/// a candidate is `exclusive`, the claim lock exclusively, which waits for every other claim.
/// Locks are taken in one order (the claim lock, then the jobs' locks by key), so two claims
/// never wait for each other in a circle.
pub async fn read_claim_view(
    tx: &tokio_postgres::Transaction<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<ClaimView, StoreError> {
    let candidates: Vec<PendingRun> = tx
        .query(
            "SELECT r.id, r.job, r.due_at, r.attempt, r.params, j.spec, r.trigger, j.kind,
                    j.claim_class = 'exclusive'
               FROM pgsched.jobs j CROSS JOIN LATERAL (
                    SELECT * FROM pgsched.runs r
                     WHERE r.job = j.name AND r.kind = j.kind AND r.status = 'pending'
                       AND r.due_at <= $1
                     ORDER BY r.due_at, r.id
                     LIMIT $2
                       FOR UPDATE SKIP LOCKED) r
              WHERE j.claim_class <> 'free'
              ORDER BY r.due_at, r.id
              LIMIT $2",
            &[&now, &limit],
        )
        .await
        .context("reading due runs to decide")?
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
            exclusive: r.get::<_, Option<bool>>(8).unwrap_or(false),
        })
        .collect();
    if candidates.is_empty() {
        return Ok(ClaimView {
            running: Vec::new(),
            candidates,
        });
    }
    lock_for_decision(tx, &candidates).await?;
    let jobs: Vec<&str> = candidates.iter().map(|c| c.job.as_str()).collect();
    // UNION, not UNION ALL: the one other run may be one of the first part's.
    let running = tx
        .query(
            "SELECT r.id, r.job, coalesce(j.claim_class = 'exclusive', false)
               FROM pgsched.runs r LEFT JOIN pgsched.jobs j ON j.name = r.job AND j.kind = r.kind
              WHERE r.status = 'running' AND r.kind IN ('Job', 'Chain')
                AND (r.job = ANY($1) OR j.claim_class = 'exclusive')
             UNION
             (SELECT r.id, r.job, coalesce(j.claim_class = 'exclusive', false)
                FROM pgsched.runs r LEFT JOIN pgsched.jobs j ON j.name = r.job AND j.kind = r.kind
               WHERE r.status = 'running' AND r.kind IN ('Job', 'Chain')
               LIMIT 1)",
            &[&jobs],
        )
        .await
        .context("reading running runs")?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    Ok(ClaimView {
        running,
        candidates,
    })
}

/// Takes the lock a decision about `candidates` needs (see [`read_claim_view`]).
async fn lock_for_decision(
    tx: &tokio_postgres::Transaction<'_>,
    candidates: &[PendingRun],
) -> Result<(), StoreError> {
    if candidates.iter().any(|c| c.exclusive) {
        tx.execute(
            "SELECT pg_advisory_xact_lock($1, $2)",
            &[&LOCK_CLASS, &LOCK_CLAIM],
        )
        .await
        .context("waiting for the claim lock")?;
        return Ok(());
    }
    let jobs: Vec<&str> = candidates.iter().map(|c| c.job.as_str()).collect();
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, $2)",
        &[&LOCK_CLASS, &LOCK_CLAIM],
    )
    .await
    .context("waiting for the claim lock")?;
    // In key order: the aggregate takes its input in the subquery's order.
    tx.execute(
        "SELECT count(pg_advisory_xact_lock($1, k))
           FROM (SELECT DISTINCT hashtext(j) AS k FROM unnest($2::text[]) j ORDER BY 1) keys",
        &[&LOCK_CLASS_JOB, &jobs],
    )
    .await
    .context("waiting for the jobs' locks")?;
    Ok(())
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

/// Claims up to `limit` due runs of `free` jobs for `worker`, oldest first, in one statement
/// under the claim lock taken shared (none while an `exclusive` run runs), and says whether
/// runs that need a decision are due too. The spec comes once per job, shared by its runs.
pub async fn claim_free(
    c: &mut tokio_postgres::Client,
    worker: &str,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<FreeClaim, StoreError> {
    let tx = c.transaction().await.context("starting a claim")?;
    // Three statements, sent together: the lock comes first, and the claim, a statement of
    // its own, sees every run an exclusive claim committed before the lock was granted.
    let lock_params: [(&(dyn ToSql + Sync), Type); 2] =
        [(&LOCK_CLASS, Type::INT4), (&LOCK_CLAIM, Type::INT4)];
    let claim_params: [(&(dyn ToSql + Sync), Type); 3] = [
        (&now, Type::TIMESTAMPTZ),
        (&limit, Type::INT8),
        (&worker, Type::TEXT),
    ];
    let due_params: [(&(dyn ToSql + Sync), Type); 1] = [(&now, Type::TIMESTAMPTZ)];
    let lock = tx.query_typed("SELECT pg_advisory_xact_lock_shared($1, $2)", &lock_params);
    let claim = tx.query_typed(CLAIM_FREE, &claim_params);
    let policy_due = tx.query_typed(POLICY_DUE, &due_params);
    let (lock, claim, policy_due) = futures_util::join!(lock, claim, policy_due);
    lock.context("waiting for the claim lock")?;
    let rows = claim.context("claiming due runs")?;
    let policy_due: bool = policy_due.context("looking for runs to decide")?[0].get(0);
    tx.commit().await.context("committing a claim")?;
    let mut claimed = FreeClaim {
        runs: Vec::with_capacity(rows.len()),
        unstartable: Vec::new(),
        policy_due,
    };
    // The rows come grouped by job; the first of each group carries the spec (JSON null when
    // the job is gone).
    let mut spec: Option<(String, Result<Arc<Runnable>, Unstartable>)> = None;
    for r in &rows {
        let job: String = r.get(1);
        if let Some(value) = r.get::<_, Option<Value>>(5) {
            let kind: String = r.get(6);
            let parsed = match value {
                Value::Null => Err(Unstartable::JobGone),
                // Validation keeps unreadable specs out; a row written by hand may be one.
                value => Runnable::from_row(&kind, value)
                    .map(Arc::new)
                    .ok_or(Unstartable::Unreadable),
            };
            spec = Some((job.clone(), parsed));
        }
        let (id, attempt) = (r.get(0), r.get(3));
        match &spec {
            Some((name, Ok(shared))) if *name == job => claimed.runs.push(ClaimedRun {
                id,
                job,
                attempt,
                due_at: r.get(2),
                params: r.get(4),
                spec: shared.clone(),
            }),
            Some((name, Err(why))) if *name == job => claimed.unstartable.push(UnstartableRun {
                id,
                job,
                attempt,
                why: *why,
            }),
            _ => claimed.unstartable.push(UnstartableRun {
                id,
                job,
                attempt,
                why: Unstartable::Unreadable,
            }),
        }
    }
    Ok(claimed)
}

/// What [`claim_free`] took, and whether due runs wait for a deciding claim.
#[derive(Debug)]
pub struct FreeClaim {
    /// The runs claimed, grouped by job.
    pub runs: Vec<ClaimedRun>,
    /// Runs claimed that cannot start: they are settled at once.
    pub unstartable: Vec<UnstartableRun>,
    /// Whether runs of `policy` or `exclusive` jobs are due.
    pub policy_due: bool,
}

/// A claimed run that cannot start.
#[derive(Debug, Clone)]
pub struct UnstartableRun {
    /// The run's id.
    pub id: i64,
    /// The job or chain it belongs to.
    pub job: String,
    /// The attempt it would have been.
    pub attempt: i32,
    /// Why it cannot start.
    pub why: Unstartable,
}

/// Why a claimed run cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstartable {
    /// Its job or chain was deleted: the run is cancelled.
    JobGone,
    /// Its job's spec in `pgsched.jobs` does not read as a spec: the run fails.
    Unreadable,
}

/// The batch claim: due pending runs of free jobs, oldest first, skipping rows another claim
/// holds, none while an exclusive run runs; returned grouped by job, the job's spec on the
/// first row of each group.
const CLAIM_FREE: &str = "
    WITH picked AS (
        SELECT r.id FROM pgsched.runs r
         WHERE r.status = 'pending' AND r.due_at <= $1 AND r.kind IN ('Job', 'Chain')
           -- Written as a subquery, not a join: its estimate (half the rows) keeps the plan
           -- on the index in due order, where a join's estimate can turn it into a sort of
           -- the whole backlog. A run whose job is gone passes, and is cancelled.
           AND (SELECT j.claim_class <> 'free' FROM pgsched.jobs j
                 WHERE j.name = r.job AND j.kind = r.kind) IS NOT TRUE
           AND NOT EXISTS (SELECT 1 FROM pgsched.jobs x JOIN pgsched.runs xr
                                  ON xr.job = x.name AND xr.kind = x.kind
                            WHERE x.claim_class = 'exclusive' AND xr.status = 'running')
         ORDER BY r.due_at, r.id
         LIMIT $2
           FOR UPDATE OF r SKIP LOCKED),
    claimed AS (
        UPDATE pgsched.runs r
           SET status = 'running', worker = $3, started_at = now(), heartbeat_at = now(),
               cancel_requested = false, finished_at = NULL
          FROM picked p WHERE r.id = p.id
        RETURNING r.id, r.job, r.kind, r.due_at, r.attempt, r.params)
    SELECT c.id, c.job, c.due_at, c.attempt, c.params,
           CASE WHEN row_number() OVER (PARTITION BY c.job, c.kind ORDER BY c.id) = 1
                THEN coalesce(j.spec, 'null') END,
           c.kind
      FROM claimed c LEFT JOIN pgsched.jobs j ON j.name = c.job AND j.kind = c.kind
     ORDER BY c.job, c.kind, c.id";

/// Whether due runs of policy or exclusive jobs wait for a deciding claim: looked up job by
/// job (they are few) in `runs_pending_by_job`, so that a backlog of free runs is not read.
const POLICY_DUE: &str = "
    SELECT EXISTS (
        SELECT 1 FROM pgsched.jobs j CROSS JOIN LATERAL (
            SELECT 1 FROM pgsched.runs r
             WHERE r.job = j.name AND r.kind = j.kind AND r.status = 'pending' AND r.due_at <= $1
             ORDER BY r.due_at LIMIT 1) due
         WHERE j.claim_class <> 'free')";

/// Gives runs this worker claimed but did not start back to the queue, due as they were and
/// with their attempt unchanged, and wakes the executors. Returns how many went back.
pub async fn release(
    c: &tokio_postgres::Client,
    worker: &str,
    ids: &[i64],
) -> Result<u64, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let back = c
        .execute(
            "UPDATE pgsched.runs SET status = 'pending', worker = NULL, started_at = NULL,
                    heartbeat_at = NULL
              WHERE id = ANY($1) AND worker = $2 AND status = 'running'",
            &[&ids, &worker],
        )
        .await
        .context("giving back unstarted runs")?;
    if back > 0 {
        c.execute("SELECT pg_notify($1, '')", &[&CHANNEL_RUNS])
            .await
            .context("notifying executors")?;
    }
    Ok(back)
}
