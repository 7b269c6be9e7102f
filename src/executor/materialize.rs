//! Turning due ticks into runs: for every scheduled job that is due, [`super::ticks`] plans
//! what its ticks become, and the plan is written as run rows with the job's next tick. Also
//! how a job's spec reads as the timing [`Timing`] the planning works with.

use std::time::Duration;

use chrono::Utc;

use super::clock::Clock;
use super::policy::claim_class;
use super::pool::pool_error;
use super::ticks::{plan_ticks, TickOutcome, TickState, Timing};
use crate::spec::Runnable;
use crate::store::runs;
use crate::store::states::{ClaimClass, RunStatus, RunTrigger};
use crate::store::StoreError;

/// Turns every due tick of every scheduled job into runs (or missed records). Returns whether
/// it made pending runs that need a deciding claim (of jobs that are not `free`), so that the
/// claim decides them first: a Forbid cron job's tick then starts without waiting for a batch
/// claim that has nothing for it.
pub(super) async fn materialize(
    pool: &deadpool_postgres::Pool,
    clock: &dyn Clock,
    poll: Duration,
) -> Result<bool, StoreError> {
    let mut to_decide = false;
    let mut client = pool.get().await.map_err(pool_error)?;
    let now = clock.now();
    // A tick found within this much of its time counts as on time; older ones were missed.
    let tolerance = poll + Duration::from_secs(1);
    for job in runs::due_jobs(&**client, now).await? {
        let Some(spec) = Runnable::from_row(&job.kind, job.spec.clone()) else {
            continue;
        };
        let Some(timing) = timing_of(&spec) else {
            continue;
        };
        let state = TickState::from_row(job.tick_state, job.next_run_at);
        let plan = plan_ticks(&timing, state, now, tolerance);
        let ticks: Vec<runs::TickRow> = plan
            .ticks
            .iter()
            .map(|t| runs::TickRow {
                at: t.at,
                status: match t.outcome {
                    TickOutcome::Run => RunStatus::Pending,
                    TickOutcome::Missed => RunStatus::Missed,
                },
                trigger: if t.catch_up {
                    RunTrigger::Catchup
                } else {
                    RunTrigger::Schedule
                },
                error: t.reason.clone(),
            })
            .collect();
        let won = runs::advance_job(
            &mut client,
            &job.name,
            &job.kind,
            (job.tick_state, job.next_run_at),
            plan.next.to_row(),
            &ticks,
        )
        .await?;
        to_decide |= won
            && claim_class(&spec.scheduling()) != ClaimClass::Free
            && ticks.iter().any(|t| t.status == RunStatus::Pending);
    }
    Ok(to_decide)
}

/// The timing fields of a job spec, parsed (validation guarantees they parse).
pub(super) fn timing_of(spec: &Runnable) -> Option<Timing> {
    let s = spec.scheduling();
    Some(Timing {
        schedule: match s.schedule {
            Some(text) => Some(crate::schedule::parse_schedule(text).ok()?),
            None => None,
        },
        run_at: s.run_at.map(|t| t.with_timezone(&Utc)),
        tz: s
            .time_zone
            .map(crate::schedule::parse_time_zone)
            .transpose()
            .ok()?
            .unwrap_or(chrono_tz::UTC),
        missed_runs: s.missed_runs,
        starting_deadline: s.starting_deadline.map(|d| d.0),
        suspended: s.suspend,
    })
}
