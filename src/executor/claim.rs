//! One claim: under the claim lock, reads the due runs and what is running, lets the
//! concurrency policies decide each candidate (start, wait, skip, miss, cancel), and records
//! the decisions in the same transaction.

use chrono::{DateTime, Utc};

use super::policy::{self, Candidate, Decision, Running};
use super::pool::pool_error;
use crate::spec::Runnable;
use crate::store::runs::{self, ClaimView, ClaimedRun, Finish, PendingRun};
use crate::store::states::{RunStatus, RunTrigger};
use crate::store::{Context, StoreError};

/// Claims up to `free` due runs: decides each candidate (start, wait, skip, miss, cancel) under
/// the claim lock and records the decisions. Returns the runs to execute and whether any due
/// run was left waiting.
pub(super) async fn claim(
    pool: &deadpool_postgres::Pool,
    worker: &str,
    now: DateTime<Utc>,
    free: usize,
) -> Result<(Vec<ClaimedRun>, bool), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.context("starting a claim")?;
    // Look past the free slots: runs that must wait should not hide runs that could start.
    let view = runs::read_claim_view(&tx, now, (free * 4).max(16) as i64).await?;
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
    runs::write_claim(
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
                    spec: candidate.spec.expect("a started run has a spec"),
                });
            }
            Decision::Wait => self.waiting = true,
            Decision::Skip(error) => self.finishes.push(finish(RunStatus::Skipped, error)),
            Decision::Miss(error) => self.finishes.push(finish(RunStatus::Missed, error)),
            Decision::Cancel(error) => self.finishes.push(finish(RunStatus::Cancelled, error)),
        }
    }
}
