//! Which claimed candidates start, wait, are skipped or missed, and what a finished attempt
//! becomes (done, retried later, failed). Pure, so concurrency policies, `exclusive`,
//! `startingDeadline` and back-off are tested without a database or a clock.

use crate::spec::{ConcurrencyPolicy, Retries, Runnable, Scheduling};
use crate::store::states::{ClaimClass, RunStatus};
use chrono::{DateTime, TimeDelta, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// A pending run that is due, with its job's spec (None when the job is gone).
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The run's id in `pgsched.runs`.
    pub id: i64,
    /// The job or chain the run belongs to.
    pub job: String,
    /// When the run was due; `startingDeadline` lateness is measured from here.
    pub due_at: DateTime<Utc>,
    /// A catch-up run after downtime (`missedRuns: RunAll`): under `Forbid` it waits for the
    /// running instance instead of being skipped, so every missed tick runs, oldest first.
    pub catch_up: bool,
    /// The job's spec; `None` when the job no longer exists (the run is then cancelled).
    pub spec: Option<Runnable>,
}

/// A run that is running now, anywhere.
#[derive(Debug, Clone)]
pub struct Running {
    /// The run's id in `pgsched.runs`.
    pub id: i64,
    /// The job or chain the run belongs to.
    pub job: String,
    /// Whether its job is `exclusive`: while it runs, no other run starts.
    pub exclusive: bool,
}

/// What the claim does with one due candidate; see [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start it now.
    Start,
    /// Start, and cancel these running runs of the same job first (`Replace`).
    StartReplacing(Vec<i64>),
    /// Leave pending: a slot or the exclusive lock may free up.
    Wait,
    /// Record as skipped (`Forbid` while another instance runs).
    Skip(String),
    /// Record as missed (`startingDeadline` passed).
    Miss(String),
    /// Record as cancelled (the job no longer exists).
    Cancel(String),
}

/// How a job's runs are claimed, from its scheduling fields: the same as the generated column
/// `pgsched.jobs.claim_class` (migration 0005), which the claim reads in SQL.
pub fn claim_class(s: &Scheduling<'_>) -> ClaimClass {
    if s.exclusive {
        ClaimClass::Exclusive
    } else if s.concurrency_policy != ConcurrencyPolicy::Allow
        || s.max_instances.is_some()
        || s.starting_deadline.is_some()
    {
        ClaimClass::Policy
    } else {
        ClaimClass::Free
    }
}

/// Decides each candidate in order, as if the ones before it had started.
pub fn decide(candidates: &[Candidate], running: &[Running], now: DateTime<Utc>) -> Vec<Decision> {
    let mut per_job: HashMap<&str, Vec<i64>> = HashMap::new();
    for r in running {
        per_job.entry(r.job.as_str()).or_default().push(r.id);
    }
    let mut exclusive_running = running.iter().any(|r| r.exclusive);
    let mut any_running = !running.is_empty();
    let mut out = Vec::with_capacity(candidates.len());
    for c in candidates {
        let Some(spec) = &c.spec else {
            out.push(Decision::Cancel("the job no longer exists".into()));
            continue;
        };
        let s = spec.scheduling();
        if let Some(deadline) = s.starting_deadline {
            let late = now.signed_duration_since(c.due_at);
            if late > TimeDelta::from_std(deadline.0).unwrap_or(TimeDelta::MAX) {
                out.push(Decision::Miss(format!(
                    "not started: more than startingDeadline ({deadline}) late"
                )));
                continue;
            }
        }
        if exclusive_running || (s.exclusive && any_running) {
            out.push(Decision::Wait);
            continue;
        }
        let running_here = per_job.get(c.job.as_str()).cloned().unwrap_or_default();
        let decision = match s.concurrency_policy {
            ConcurrencyPolicy::Forbid if !running_here.is_empty() && c.catch_up => Decision::Wait,
            ConcurrencyPolicy::Forbid if !running_here.is_empty() => {
                Decision::Skip("another instance was running (concurrencyPolicy: Forbid)".into())
            }
            ConcurrencyPolicy::Replace if !running_here.is_empty() => {
                Decision::StartReplacing(running_here.clone())
            }
            ConcurrencyPolicy::Allow
                if s.max_instances
                    .is_some_and(|m| running_here.len() >= m as usize) =>
            {
                Decision::Wait
            }
            _ => Decision::Start,
        };
        if matches!(decision, Decision::Start | Decision::StartReplacing(_)) {
            let slot = per_job.entry(c.job.as_str()).or_default();
            if matches!(decision, Decision::StartReplacing(_)) {
                slot.clear();
            }
            slot.push(c.id);
            any_running = true;
            exclusive_running |= s.exclusive;
        }
        out.push(decision);
    }
    out
}

/// How an attempt ended, as the task runner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptResult {
    /// The task succeeded.
    Succeeded,
    /// The task failed; retried if the job has retries left.
    Failed,
    /// The run's timeout stopped the task; retried like a failure.
    TimedOut,
    /// Cancelled because a newer instance replaced it.
    Replaced,
    /// Cancelled because this worker is shutting down: run it again elsewhere.
    Interrupted,
}

/// What the run's row becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// Done for good, with this status (`Succeeded`, `Failed` or `Cancelled`).
    Finished(RunStatus),
    /// Back to pending, for another attempt at `due_at`.
    Retry {
        /// The number of the next attempt (unchanged after a shutdown, which does not count).
        attempt: i32,
        /// When the next attempt is due: after the back-off, or at once after a shutdown.
        due_at: DateTime<Utc>,
    },
}

/// Retry delay after the first failure when the spec sets no `backoff.initial`.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(10);
/// Longest retry delay when the spec sets no `backoff.max`.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Growth of the retry delay per failure when the spec sets no `backoff.factor`.
pub const DEFAULT_BACKOFF_FACTOR: f64 = 2.0;

/// The delay before attempt `attempt + 1` after attempt `attempt` failed: exponential, capped,
/// and spread by ±20 % (`jitter` in [0, 1)) so that a batch of failures does not retry in step.
pub fn backoff(retries: &Retries, attempt: i32, jitter: f64) -> Duration {
    let b = retries.backoff.as_ref();
    let initial = b
        .and_then(|b| b.initial)
        .map_or(DEFAULT_BACKOFF_INITIAL, |d| d.0);
    let max = b.and_then(|b| b.max).map_or(DEFAULT_BACKOFF_MAX, |d| d.0);
    let factor = b.and_then(|b| b.factor).unwrap_or(DEFAULT_BACKOFF_FACTOR);
    let exponent = (attempt.max(1) - 1).min(60);
    let base = (initial.as_secs_f64() * factor.powi(exponent)).min(max.as_secs_f64());
    let spread = 0.8 + 0.4 * jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64((base * spread).min(max.as_secs_f64()).max(0.0))
}

/// Settles a finished attempt: success, a retry if the job has retries left, or failure.
pub fn settle(
    result: AttemptResult,
    attempt: i32,
    retries: Option<&Retries>,
    now: DateTime<Utc>,
    jitter: f64,
) -> Settlement {
    let retry = |retries: &Retries| Settlement::Retry {
        attempt: attempt + 1,
        due_at: now
            + TimeDelta::from_std(backoff(retries, attempt, jitter)).unwrap_or(TimeDelta::MAX),
    };
    match result {
        AttemptResult::Succeeded => Settlement::Finished(RunStatus::Succeeded),
        AttemptResult::Replaced => Settlement::Finished(RunStatus::Cancelled),
        AttemptResult::Interrupted => Settlement::Retry {
            // Not the job's fault: the attempt does not count.
            attempt,
            due_at: now,
        },
        AttemptResult::Failed | AttemptResult::TimedOut => match retries {
            Some(r) if attempt <= r.limit as i32 => retry(r),
            _ => Settlement::Finished(RunStatus::Failed),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::duration::SpecDuration;
    use crate::spec::Backoff;

    fn spec(yaml: &str) -> Runnable {
        Runnable::from_row(
            "Job",
            serde_saphyr::from_str::<serde_json::Value>(yaml).unwrap(),
        )
        .unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cand(id: i64, job: &str, spec_yaml: &str) -> Candidate {
        Candidate {
            id,
            job: job.into(),
            due_at: now(),
            catch_up: false,
            spec: Some(spec(spec_yaml)),
        }
    }

    fn running(id: i64, job: &str, exclusive: bool) -> Running {
        Running {
            id,
            job: job.into(),
            exclusive,
        }
    }

    #[test]
    fn forbid_skips_while_another_runs_and_in_the_same_batch() {
        let c = [cand(1, "a", "sql: x"), cand(2, "a", "sql: x")];
        assert_eq!(
            decide(&c, &[], now()),
            vec![
                Decision::Start,
                Decision::Skip("another instance was running (concurrencyPolicy: Forbid)".into())
            ]
        );
        assert!(matches!(
            decide(&c[..1], &[running(9, "a", false)], now())[0],
            Decision::Skip(_)
        ));
        assert_eq!(
            decide(&c[..1], &[running(9, "b", false)], now()),
            vec![Decision::Start]
        );
    }

    #[test]
    fn forbid_lets_catch_up_runs_wait_their_turn() {
        let mut first = cand(1, "a", "sql: x");
        first.catch_up = true;
        let mut second = cand(2, "a", "sql: x");
        second.catch_up = true;
        assert_eq!(
            decide(&[first, second], &[], now()),
            vec![Decision::Start, Decision::Wait]
        );
    }

    #[test]
    fn replace_cancels_the_running_instance() {
        let c = [cand(1, "a", "{sql: x, concurrencyPolicy: Replace}")];
        assert_eq!(
            decide(&c, &[running(9, "a", false)], now()),
            vec![Decision::StartReplacing(vec![9])]
        );
    }

    #[test]
    fn allow_respects_max_instances() {
        let y = "{sql: x, concurrencyPolicy: Allow, maxInstances: 2}";
        let c = [cand(1, "a", y), cand(2, "a", y), cand(3, "a", y)];
        assert_eq!(
            decide(&c, &[], now()),
            vec![Decision::Start, Decision::Start, Decision::Wait]
        );
        let unbounded = [cand(1, "a", "{sql: x, concurrencyPolicy: Allow}")];
        assert_eq!(
            decide(
                &unbounded,
                &[running(7, "a", false), running(8, "a", false)],
                now()
            ),
            vec![Decision::Start]
        );
    }

    #[test]
    fn exclusive_waits_for_others_and_holds_everyone_else() {
        let c = [
            cand(1, "x", "{sql: x, exclusive: true}"),
            cand(2, "b", "sql: x"),
        ];
        assert_eq!(
            decide(&c, &[], now()),
            vec![Decision::Start, Decision::Wait]
        );
        assert_eq!(
            decide(&c, &[running(9, "z", false)], now()),
            vec![Decision::Wait, Decision::Start]
        );
        assert_eq!(
            decide(&c[1..], &[running(9, "x", true)], now()),
            vec![Decision::Wait]
        );
    }

    #[test]
    fn starting_deadline_and_deleted_jobs() {
        let mut late = cand(1, "a", "{sql: x, startingDeadline: 1m}");
        late.due_at = now() - TimeDelta::seconds(61);
        let mut fine = cand(2, "b", "{sql: x, startingDeadline: 1m}");
        fine.due_at = now() - TimeDelta::seconds(59);
        let gone = Candidate {
            id: 3,
            job: "c".into(),
            due_at: now(),
            catch_up: false,
            spec: None,
        };
        let d = decide(&[late, fine, gone], &[], now());
        assert!(matches!(&d[0], Decision::Miss(m) if m.contains("1m")));
        assert_eq!(d[1], Decision::Start);
        assert!(matches!(&d[2], Decision::Cancel(_)));
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let r = Retries {
            limit: 5,
            backoff: Some(Backoff {
                initial: Some(SpecDuration(Duration::from_secs(10))),
                max: Some(SpecDuration(Duration::from_secs(60))),
                factor: Some(2.0),
            }),
        };
        assert_eq!(backoff(&r, 1, 0.5), Duration::from_secs(10));
        assert_eq!(backoff(&r, 2, 0.5), Duration::from_secs(20));
        assert_eq!(backoff(&r, 3, 0.5), Duration::from_secs(40));
        assert_eq!(backoff(&r, 4, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(&r, 40, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(&r, 1, 0.0), Duration::from_secs(8));
        assert_eq!(backoff(&r, 1, 0.999_999).as_secs(), 11);
        let defaults = Retries {
            limit: 1,
            backoff: None,
        };
        assert_eq!(backoff(&defaults, 1, 0.5), DEFAULT_BACKOFF_INITIAL);
    }

    #[test]
    fn settling_attempts() {
        let r = Retries {
            limit: 2,
            backoff: None,
        };
        assert_eq!(
            settle(AttemptResult::Succeeded, 1, Some(&r), now(), 0.5),
            Settlement::Finished(RunStatus::Succeeded)
        );
        assert_eq!(
            settle(AttemptResult::Failed, 1, Some(&r), now(), 0.5),
            Settlement::Retry {
                attempt: 2,
                due_at: now() + TimeDelta::seconds(10)
            }
        );
        assert!(matches!(
            settle(AttemptResult::TimedOut, 2, Some(&r), now(), 0.5),
            Settlement::Retry { attempt: 3, .. }
        ));
        assert_eq!(
            settle(AttemptResult::Failed, 3, Some(&r), now(), 0.5),
            Settlement::Finished(RunStatus::Failed)
        );
        assert_eq!(
            settle(AttemptResult::Failed, 1, None, now(), 0.5),
            Settlement::Finished(RunStatus::Failed)
        );
        assert_eq!(
            settle(AttemptResult::Replaced, 1, Some(&r), now(), 0.5),
            Settlement::Finished(RunStatus::Cancelled)
        );
        assert_eq!(
            settle(AttemptResult::Interrupted, 2, Some(&r), now(), 0.5),
            Settlement::Retry {
                attempt: 2,
                due_at: now()
            }
        );
    }
}
