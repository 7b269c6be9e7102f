//! One claim: a batch of runs of free jobs in one statement ([`claims::claim_free`]); and,
//! when runs that need a decision are due, a deciding claim: reads those runs, takes the lock
//! their decision needs (see [`claims::read_claim_view`]) and what is running, lets the
//! concurrency policies decide each candidate (start, wait, skip, miss, cancel), and records
//! the decisions in the same transaction.

use chrono::{DateTime, Utc};

use super::policy::{self, Candidate, Decision, Running};
use super::pool::pool_error;
use crate::spec::Runnable;
use crate::store::claims::{self, ClaimView, ClaimedRun, Finish, PendingRun, UnstartableRun};
use crate::store::states::{RunStatus, RunTrigger};
use crate::store::{Context, StoreError};

/// What one claim took.
#[derive(Debug, Default)]
pub(super) struct Claim {
    /// Runs of free jobs, to queue.
    pub(super) runs: Vec<ClaimedRun>,
    /// Runs the policies started, each into a free slot: to start first.
    pub(super) decided: Vec<ClaimedRun>,
    /// Claimed runs that cannot start: to settle at once.
    pub(super) unstartable: Vec<UnstartableRun>,
    /// Whether a due run was left waiting by its policy or for a free slot.
    pub(super) waiting: bool,
}

/// Claims up to `batch` due runs of free jobs, and decides due runs of the others when there
/// are any, starting at most `free` of those. `decide_first` (runs to decide were just made)
/// decides before the batch claim, so that they start without waiting for it.
pub(super) async fn claim(
    pool: &deadpool_postgres::Pool,
    worker: &str,
    now: DateTime<Utc>,
    (batch, free): (usize, usize),
    decide_first: bool,
) -> Result<Claim, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut taken = Claim::default();
    let mut decided = false;
    if decide_first && free > 0 {
        (taken.decided, taken.waiting) = decide_claim(&mut client, worker, now, free).await?;
        decided = true;
    }
    let free = free.saturating_sub(taken.decided.len());
    let mut decide = false;
    if batch > 0 {
        let got = claims::claim_free(&mut client, worker, now, batch as i64).await?;
        taken.runs = got.runs;
        taken.unstartable = got.unstartable;
        decide = got.policy_due && !decided;
    }
    if decide && free > 0 {
        let (more, waiting) = decide_claim(&mut client, worker, now, free).await?;
        taken.decided.extend(more);
        taken.waiting |= waiting;
    } else if decide {
        taken.waiting = true;
    }
    Ok(taken)
}

/// Decides due runs of policy and exclusive jobs (and cancels runs whose job is gone) under
/// the claim lock and records the decisions; starts at most `free`. Returns the runs started
/// and whether any due run was left waiting.
async fn decide_claim(
    client: &mut tokio_postgres::Client,
    worker: &str,
    now: DateTime<Utc>,
    free: usize,
) -> Result<(Vec<ClaimedRun>, bool), StoreError> {
    let tx = client.transaction().await.context("starting a claim")?;
    // Look past the free slots: runs that must wait should not hide runs that could start.
    let view = claims::read_claim_view(&tx, now, (free * 4).max(16) as i64).await?;
    if view.candidates.is_empty() {
        tx.commit().await.context("ending a claim")?;
        return Ok((Vec::new(), false));
    }
    let (candidates, running) = policy_inputs(&view);
    let decisions = policy::decide(&candidates, &running, now);
    let mut decided = Decided::default();
    for ((pending, candidate), decision) in view.candidates.iter().zip(candidates).zip(decisions) {
        decided.add(pending, candidate, decision, free);
    }
    claims::write_claim(
        &tx,
        worker,
        &decided.starts,
        &decided.finishes,
        &decided.cancel,
    )
    .await?;
    tx.commit().await.context("committing a claim")?;
    Ok((decided.claimed, decided.waiting))
}

/// The claim view as the concurrency policies read it.
fn policy_inputs(view: &ClaimView) -> (Vec<Candidate>, Vec<Running>) {
    let candidates = view
        .candidates
        .iter()
        .map(|p| Candidate {
            id: p.id,
            job: p.job.clone(),
            due_at: p.due_at,
            catch_up: p.trigger == RunTrigger::Catchup,
            spec: p
                .spec
                .clone()
                .zip(p.kind.as_deref())
                .and_then(|(s, kind)| Runnable::from_row(kind, s)),
        })
        .collect();
    let running = view
        .running
        .iter()
        .map(|(id, job, exclusive)| Running {
            id: *id,
            job: job.clone(),
            exclusive: *exclusive,
        })
        .collect();
    (candidates, running)
}

/// The decisions of one claim, as they are recorded.
#[derive(Default)]
struct Decided {
    /// Runs that start here.
    starts: Vec<i64>,
    /// The same runs, to execute.
    claimed: Vec<ClaimedRun>,
    /// Runs that end without starting (skipped, missed, cancelled).
    finishes: Vec<Finish>,
    /// Running runs a start replaces.
    cancel: Vec<i64>,
    /// Whether a due run was left waiting (by its policy, or for a free slot).
    waiting: bool,
}

impl Decided {
    /// Adds the decision about one candidate; a start beyond the `free` slots waits instead.
    fn add(&mut self, pending: &PendingRun, candidate: Candidate, decision: Decision, free: usize) {
        let finish = |status, error| Finish {
            id: pending.id,
            status,
            error,
        };
        match decision {
            Decision::Start | Decision::StartReplacing(_) if self.claimed.len() >= free => {
                self.waiting = true;
            }
            Decision::Start | Decision::StartReplacing(_) => {
                if let Decision::StartReplacing(ids) = &decision {
                    self.cancel.extend(ids.iter().copied());
                }
                self.starts.push(pending.id);
                self.claimed.push(ClaimedRun {
                    id: pending.id,
                    job: pending.job.clone(),
                    attempt: pending.attempt,
                    due_at: pending.due_at,
                    params: pending.params.clone(),
                    spec: std::sync::Arc::new(candidate.spec.expect("a started run has a spec")),
                });
            }
            Decision::Wait => self.waiting = true,
            Decision::Skip(error) => self.finishes.push(finish(RunStatus::Skipped, error)),
            Decision::Miss(error) => self.finishes.push(finish(RunStatus::Missed, error)),
            Decision::Cancel(error) => self.finishes.push(finish(RunStatus::Cancelled, error)),
        }
    }
}
