//! Which runs a scheduled job's due ticks become: the on-time run, catch-up runs after
//! downtime (`missedRuns`), ticks too late to start (`startingDeadline`), and when the job is
//! due next. Pure: the time is a parameter, so missed runs after a day of downtime and DST
//! transitions are tested without waiting.
//!
//! A job's `next_run_at` is the first tick not yet turned into a run. When it is due, every tick
//! from it up to now is considered: normally just that one; after downtime, several. The most
//! recent tick within `late_tolerance` of now counts as on time; the others were missed.

use crate::schedule::{Schedule, TickContext};
use crate::spec::MissedRuns;
use crate::store::states::TickPhase;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use std::collections::VecDeque;
use std::time::Duration;

/// At most this many missed ticks become runs (RunAll) or are recorded as missed, like
/// Kubernetes' limit of 100 missed schedules.
pub const MAX_CATCH_UP: usize = 100;
/// How far the search for missed ticks goes before giving up (a per-second job down for a day
/// has 86,400); past it, only the most recent ticks found are considered.
const MAX_TICKS_SCANNED: usize = 200_000;

/// A scheduled job's timing fields.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The parsed `schedule`; `None` for a `runAt` job.
    pub schedule: Option<Schedule>,
    /// The one-off `runAt` time; used only when there is no `schedule`.
    pub run_at: Option<DateTime<Utc>>,
    /// The time zone cron fields are read in (UTC when the spec names none).
    pub tz: Tz,
    /// What becomes of ticks missed while no scheduler ran.
    pub missed_runs: MissedRuns,
    /// A tick later than this is recorded as missed; `None`: never too late.
    pub starting_deadline: Option<Duration>,
    /// Suspended: ticks pass without becoming runs, and are not replayed on resume.
    pub suspended: bool,
}

/// Where a job's ticking stands (`pgsched.jobs.tick_state` and `next_run_at`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickState {
    /// No tick computed yet: a new job, or one whose schedule just changed.
    New,
    /// The next tick not yet turned into a run.
    Scheduled(DateTime<Utc>),
    /// `@after`: the next tick is computed when the current run finishes.
    AfterFinish,
    /// `runAt` done, or a schedule that never fires again.
    Done,
}

impl TickState {
    /// The state a job row records (`tick_state`, `next_run_at`). A `scheduled` row without
    /// a time cannot be written by pgsched; it is read as new, so the next tick is computed.
    pub fn from_row(phase: TickPhase, next_run_at: Option<DateTime<Utc>>) -> TickState {
        match (phase, next_run_at) {
            (TickPhase::Scheduled, Some(at)) => TickState::Scheduled(at),
            (TickPhase::AfterFinish, _) => TickState::AfterFinish,
            (TickPhase::Done, _) => TickState::Done,
            (TickPhase::New | TickPhase::Scheduled, _) => TickState::New,
        }
    }

    /// The row's `tick_state` and `next_run_at` for this state.
    pub fn to_row(self) -> (TickPhase, Option<DateTime<Utc>>) {
        match self {
            TickState::New => (TickPhase::New, None),
            TickState::Scheduled(at) => (TickPhase::Scheduled, Some(at)),
            TickState::AfterFinish => (TickPhase::AfterFinish, None),
            TickState::Done => (TickPhase::Done, None),
        }
    }
}

/// What one due tick becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickOutcome {
    /// A run to start (status pending).
    Run,
    /// Recorded as missed, never started.
    Missed,
}

/// One due tick and what it becomes, to be written as a run row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedTick {
    /// The tick's time (the run's `scheduled_at` and `due_at`).
    pub at: DateTime<Utc>,
    /// Run it, or record it as missed.
    pub outcome: TickOutcome,
    /// Started later than on time, after downtime.
    pub catch_up: bool,
    /// Why a tick was not run, for the run's error column.
    pub reason: Option<String>,
}

/// What [`plan_ticks`] decided for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickPlan {
    /// The due ticks, oldest first (at most [`MAX_CATCH_UP`] of them).
    pub ticks: Vec<PlannedTick>,
    /// The job's tick state to store next.
    pub next: TickState,
}

/// Decides what the due ticks of one job become at `now`.
pub fn plan_ticks(
    timing: &Timing,
    state: TickState,
    now: DateTime<Utc>,
    late_tolerance: Duration,
) -> TickPlan {
    let first = match state {
        TickState::AfterFinish | TickState::Done => return TickPlan::nothing(state),
        TickState::New => return TickPlan::nothing(initial_state(timing, now)),
        TickState::Scheduled(at) if at > now => return TickPlan::nothing(state),
        TickState::Scheduled(at) => at,
    };
    let (due, skipped_older, next) = due_ticks(timing, first, now);
    if timing.suspended {
        // No new instances while suspended; the ticks pass unrecorded and resuming does not
        // replay them.
        return TickPlan::nothing(next);
    }
    let ticks = due
        .iter()
        .map(|&at| plan_tick(timing, at, &due, now, late_tolerance))
        .collect();
    if skipped_older > 0 {
        tracing::warn!(
            skipped_older,
            "more than {MAX_CATCH_UP} ticks were missed; only the most recent {MAX_CATCH_UP} are considered"
        );
    }
    TickPlan { ticks, next }
}

impl TickPlan {
    /// No tick is due: only the tick state may move on.
    fn nothing(next: TickState) -> TickPlan {
        TickPlan {
            ticks: Vec::new(),
            next,
        }
    }
}

/// Every due tick from `first` up to `now`, oldest first, how many older ones were left out
/// (of a long series only the most recent [`MAX_CATCH_UP`] matter), and the tick state after
/// them.
fn due_ticks(
    timing: &Timing,
    first: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (VecDeque<DateTime<Utc>>, usize, TickState) {
    let mut due: VecDeque<DateTime<Utc>> = VecDeque::from([first]);
    let mut skipped_older = 0usize;
    let next = match (&timing.schedule, timing.run_at) {
        (Some(Schedule::After(_)), _) => TickState::AfterFinish,
        (Some(schedule), _) => {
            let ctx = TickContext {
                tz: timing.tz,
                anchor: first,
                last_finished: None,
            };
            let mut cursor = first;
            let mut scanned = 0;
            while let Some(t) = schedule.next_tick_after(cursor, &ctx) {
                if t > now || scanned >= MAX_TICKS_SCANNED {
                    break;
                }
                due.push_back(t);
                if due.len() > MAX_CATCH_UP {
                    due.pop_front();
                    skipped_older += 1;
                }
                cursor = t;
                scanned += 1;
            }
            match schedule.next_tick_after(cursor.max(now), &ctx) {
                Some(t) => TickState::Scheduled(t),
                None => TickState::Done,
            }
        }
        (None, Some(_)) => TickState::Done,
        (None, None) => TickState::Done,
    };
    (due, skipped_older, next)
}

/// What the due tick `at` (one of `due`) becomes: the most recent tick runs when it is on
/// time, the others as `missedRuns` says, and a run more than `startingDeadline` late is
/// recorded as missed instead.
fn plan_tick(
    timing: &Timing,
    at: DateTime<Utc>,
    due: &VecDeque<DateTime<Utc>>,
    now: DateTime<Utc>,
    late_tolerance: Duration,
) -> PlannedTick {
    let latest = *due.back().expect("at least the first tick");
    let on_time = |t: DateTime<Utc>| now.signed_duration_since(t) <= delta(late_tolerance);
    let past_deadline = |t: DateTime<Utc>| {
        timing
            .starting_deadline
            .is_some_and(|d| now.signed_duration_since(t) > delta(d))
    };
    let run = match timing.missed_runs {
        _ if on_time(at) && at == latest => true,
        MissedRuns::Skip => false,
        MissedRuns::RunOnce => at == latest,
        MissedRuns::RunAll => true,
    };
    if run && past_deadline(at) {
        PlannedTick {
            at,
            outcome: TickOutcome::Missed,
            catch_up: false,
            reason: Some(format!(
                "not started: more than startingDeadline ({}) late",
                crate::duration::format_duration(timing.starting_deadline.unwrap_or_default())
            )),
        }
    } else if run {
        PlannedTick {
            at,
            outcome: TickOutcome::Run,
            catch_up: !on_time(at),
            reason: None,
        }
    } else {
        PlannedTick {
            at,
            outcome: TickOutcome::Missed,
            catch_up: false,
            reason: Some(missed_reason(timing.missed_runs).to_string()),
        }
    }
}

/// Why a tick that was not run is recorded as missed.
fn missed_reason(missed_runs: MissedRuns) -> &'static str {
    match missed_runs {
        MissedRuns::Skip => "missed while no scheduler ran (missedRuns: Skip)",
        MissedRuns::RunOnce => {
            "missed while no scheduler ran; one catch-up run was made (missedRuns: RunOnce)"
        }
        MissedRuns::RunAll => "missed while no scheduler ran",
    }
}

/// The first tick of a new job (or one whose schedule changed): never in the past, so a new
/// job does not catch up on ticks from before it existed. `runAt` in the past runs once now.
fn initial_state(timing: &Timing, now: DateTime<Utc>) -> TickState {
    match (&timing.schedule, timing.run_at) {
        (Some(Schedule::After(d)), _) => now
            .checked_add_signed(delta(*d))
            .map_or(TickState::Done, TickState::Scheduled),
        (Some(schedule), _) => {
            let ctx = TickContext {
                tz: timing.tz,
                anchor: now,
                last_finished: None,
            };
            match schedule.next_tick_after(now, &ctx) {
                Some(t) => TickState::Scheduled(t),
                None => TickState::Done,
            }
        }
        (None, Some(at)) => TickState::Scheduled(at),
        (None, None) => TickState::Done,
    }
}

/// When an `@after` job is due again once a run finished at `finished`.
pub fn after_finish(timing: &Timing, finished: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match &timing.schedule {
        Some(Schedule::After(d)) => finished.checked_add_signed(delta(*d)),
        _ => None,
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::parse_schedule;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn timing(schedule: &str, missed: MissedRuns) -> Timing {
        Timing {
            schedule: Some(parse_schedule(schedule).unwrap()),
            run_at: None,
            tz: chrono_tz::UTC,
            missed_runs: missed,
            starting_deadline: None,
            suspended: false,
        }
    }

    const TOLERANCE: Duration = Duration::from_secs(5);

    /// The plan of a job due since 08:00, seen at 10:30: three hourly ticks of downtime.
    fn after_downtime(t: &Timing) -> TickPlan {
        plan_ticks(
            t,
            TickState::Scheduled(utc("2026-11-22T08:00:00Z")),
            utc("2026-11-22T10:30:00Z"),
            TOLERANCE,
        )
    }

    fn runs(plan: &TickPlan) -> Vec<(String, TickOutcome, bool)> {
        plan.ticks
            .iter()
            .map(|t| (t.at.format("%H:%M").to_string(), t.outcome, t.catch_up))
            .collect()
    }

    #[test]
    fn a_new_job_starts_at_its_next_tick_without_catching_up() {
        let t = timing("0 * * * *", MissedRuns::RunAll);
        let plan = plan_ticks(&t, TickState::New, utc("2026-11-22T10:30:00Z"), TOLERANCE);
        assert!(plan.ticks.is_empty());
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T11:00:00Z")));
    }

    #[test]
    fn not_due_yet_changes_nothing() {
        let t = timing("0 * * * *", MissedRuns::RunOnce);
        let state = TickState::Scheduled(utc("2026-11-22T11:00:00Z"));
        let plan = plan_ticks(&t, state, utc("2026-11-22T10:59:59Z"), TOLERANCE);
        assert!(plan.ticks.is_empty());
        assert_eq!(plan.next, state);
    }

    #[test]
    fn an_on_time_tick_runs_and_the_next_is_scheduled() {
        let t = timing("0 * * * *", MissedRuns::Skip);
        let plan = plan_ticks(
            &t,
            TickState::Scheduled(utc("2026-11-22T11:00:00Z")),
            utc("2026-11-22T11:00:00.003Z"),
            TOLERANCE,
        );
        assert_eq!(runs(&plan), vec![("11:00".into(), TickOutcome::Run, false)]);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T12:00:00Z")));
    }

    #[test]
    fn after_downtime_run_once_makes_one_catch_up_run() {
        let t = timing("0 * * * *", MissedRuns::RunOnce);
        let plan = after_downtime(&t);
        assert_eq!(
            runs(&plan),
            vec![
                ("08:00".into(), TickOutcome::Missed, false),
                ("09:00".into(), TickOutcome::Missed, false),
                ("10:00".into(), TickOutcome::Run, true),
            ]
        );
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T11:00:00Z")));
    }

    #[test]
    fn after_downtime_run_all_runs_each_oldest_first() {
        let t = timing("0 * * * *", MissedRuns::RunAll);
        let plan = after_downtime(&t);
        assert_eq!(
            runs(&plan),
            vec![
                ("08:00".into(), TickOutcome::Run, true),
                ("09:00".into(), TickOutcome::Run, true),
                ("10:00".into(), TickOutcome::Run, true),
            ]
        );
    }

    #[test]
    fn after_downtime_skip_runs_nothing_late() {
        let t = timing("0 * * * *", MissedRuns::Skip);
        let plan = after_downtime(&t);
        assert!(plan.ticks.iter().all(|t| t.outcome == TickOutcome::Missed));
        assert_eq!(plan.ticks.len(), 3);
        // The latest tick still runs under Skip when it is on time.
        let plan = plan_ticks(
            &t,
            TickState::Scheduled(utc("2026-11-22T08:00:00Z")),
            utc("2026-11-22T10:00:01Z"),
            TOLERANCE,
        );
        assert_eq!(plan.ticks.last().unwrap().outcome, TickOutcome::Run);
    }

    #[test]
    fn run_all_is_capped_at_the_most_recent_hundred() {
        let t = timing("* * * * *", MissedRuns::RunAll);
        let plan = plan_ticks(
            &t,
            TickState::Scheduled(utc("2026-11-22T00:00:00Z")),
            utc("2026-11-22T10:00:30Z"),
            TOLERANCE,
        );
        assert_eq!(plan.ticks.len(), MAX_CATCH_UP);
        assert_eq!(plan.ticks[0].at, utc("2026-11-22T08:21:00Z"));
        assert_eq!(plan.ticks[99].at, utc("2026-11-22T10:00:00Z"));
        assert!(plan.ticks.windows(2).all(|w| w[0].at < w[1].at));
    }

    #[test]
    fn starting_deadline_records_late_ticks_as_missed() {
        let mut t = timing("0 * * * *", MissedRuns::RunAll);
        t.starting_deadline = Some(Duration::from_secs(3600));
        let plan = after_downtime(&t);
        assert_eq!(
            runs(&plan),
            vec![
                ("08:00".into(), TickOutcome::Missed, false),
                ("09:00".into(), TickOutcome::Missed, false),
                ("10:00".into(), TickOutcome::Run, true),
            ]
        );
        assert!(plan.ticks[0]
            .reason
            .as_ref()
            .unwrap()
            .contains("startingDeadline"));
    }

    #[test]
    fn suspended_jobs_advance_without_runs() {
        let mut t = timing("0 * * * *", MissedRuns::RunAll);
        t.suspended = true;
        let plan = after_downtime(&t);
        assert!(plan.ticks.is_empty());
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T11:00:00Z")));
    }

    #[test]
    fn run_at_runs_once_then_is_done() {
        let t = Timing {
            schedule: None,
            run_at: Some(utc("2026-11-22T12:00:00Z")),
            tz: chrono_tz::UTC,
            missed_runs: MissedRuns::RunOnce,
            starting_deadline: None,
            suspended: false,
        };
        let plan = plan_ticks(&t, TickState::New, utc("2026-11-22T10:00:00Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T12:00:00Z")));
        let plan = plan_ticks(&t, plan.next, utc("2026-11-22T12:00:00.01Z"), TOLERANCE);
        assert_eq!(plan.ticks.len(), 1);
        assert_eq!(plan.ticks[0].outcome, TickOutcome::Run);
        assert_eq!(plan.next, TickState::Done);
        // A runAt already past when the job is created still runs, once.
        let plan = plan_ticks(&t, TickState::New, utc("2026-11-23T10:00:00Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T12:00:00Z")));
    }

    #[test]
    fn every_is_a_fixed_rate_and_after_waits_for_the_finish() {
        let t = timing("@every 10s", MissedRuns::RunOnce);
        let plan = plan_ticks(&t, TickState::New, utc("2026-11-22T10:00:00Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T10:00:10Z")));
        let plan = plan_ticks(&t, plan.next, utc("2026-11-22T10:00:10.5Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T10:00:20Z")));

        let t = timing("@after 30s", MissedRuns::RunOnce);
        let plan = plan_ticks(&t, TickState::New, utc("2026-11-22T10:00:00Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-11-22T10:00:30Z")));
        let plan = plan_ticks(&t, plan.next, utc("2026-11-22T10:00:30Z"), TOLERANCE);
        assert_eq!(plan.ticks.len(), 1);
        assert_eq!(plan.next, TickState::AfterFinish);
        assert_eq!(
            after_finish(&t, utc("2026-11-22T10:00:45Z")),
            Some(utc("2026-11-22T10:01:15Z"))
        );
    }

    #[test]
    fn a_daily_job_across_a_dst_change_in_its_zone() {
        let mut t = timing("30 2 * * *", MissedRuns::RunOnce);
        t.tz = "Europe/Zurich".parse().unwrap();
        // 2026-03-29 02:30 Zurich does not exist: it runs right after the gap, 03:00 CEST = 01:00Z.
        let plan = plan_ticks(&t, TickState::New, utc("2026-03-28T12:00:00Z"), TOLERANCE);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-03-29T01:00:00Z")));
        let plan = plan_ticks(&t, plan.next, utc("2026-03-29T01:00:00Z"), TOLERANCE);
        assert_eq!(plan.ticks.len(), 1);
        assert_eq!(plan.next, TickState::Scheduled(utc("2026-03-30T00:30:00Z")));
    }
}
