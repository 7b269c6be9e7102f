//! A Job's checks, and those of the scheduling fields jobs and chains share (`schedule`,
//! `runAt`, `timeZone`, retries, concurrency).

use super::Checker;
use crate::schedule::ScheduleError;
use crate::spec::model::{ConcurrencyPolicy, JobSpec, Retries, Scheduling};

impl Checker<'_, '_> {
    pub(super) fn job(&mut self, job: &JobSpec) {
        self.scheduling("spec", &job.scheduling());
        self.task("spec", job);
        if let Some(db) = &job.database {
            self.database_ref("spec.database", db);
            self.database_applies("spec", job);
        }
    }

    pub(super) fn scheduling(&mut self, base: &str, s: &Scheduling<'_>) {
        if let (Some(_), Some(_)) = (s.schedule, s.run_at) {
            self.error_hint(
                &format!("{base}.runAt"),
                "`runAt` and `schedule` are exclusive",
                Some("use `schedule` for a repeating job, `runAt` for a single run".into()),
            );
        }
        if let Some(schedule) = s.schedule {
            if let Err(e) = crate::schedule::parse_schedule(schedule) {
                let (message, hint) = split_suggestion(e);
                self.error_hint(&format!("{base}.schedule"), message, hint);
            }
        }
        if let Some(zone) = s.time_zone {
            if let Err(e) = crate::schedule::parse_time_zone(zone) {
                let (message, hint) = split_suggestion(e);
                self.error_hint(&format!("{base}.timeZone"), message, hint);
            }
        }
        self.positive(&format!("{base}.timeout"), s.timeout);
        self.positive(&format!("{base}.startingDeadline"), s.starting_deadline);
        if let Some(retries) = s.retries {
            self.retries(&format!("{base}.retries"), retries);
        }
        if let Some(max) = s.max_instances {
            if max == 0 {
                self.error(
                    &format!("{base}.maxInstances"),
                    "maxInstances must be at least 1",
                );
            } else if s.concurrency_policy != ConcurrencyPolicy::Allow {
                self.error_hint(
                    &format!("{base}.maxInstances"),
                    "maxInstances applies only with `concurrencyPolicy: Allow`",
                    Some(format!(
                        "the policy is {:?}, which runs at most one instance; set `concurrencyPolicy: Allow` or remove maxInstances",
                        s.concurrency_policy
                    )),
                );
            }
        }
        if let Some(history) = s.history {
            self.positive(&format!("{base}.history.keepFor"), history.keep_for);
        }
    }

    pub(super) fn retries(&mut self, base: &str, retries: &Retries) {
        let Some(backoff) = &retries.backoff else {
            return;
        };
        self.positive(&format!("{base}.backoff.initial"), backoff.initial);
        self.positive(&format!("{base}.backoff.max"), backoff.max);
        if let Some(factor) = backoff.factor {
            if !factor.is_finite() || factor < 1.0 {
                self.error(
                    &format!("{base}.backoff.factor"),
                    format!("factor {factor} must be a number of at least 1"),
                );
            }
        }
        if let (Some(initial), Some(max)) = (backoff.initial, backoff.max) {
            if initial > max {
                self.error(
                    &format!("{base}.backoff.max"),
                    format!("max {max} is shorter than initial {initial}"),
                );
            }
        }
    }
}

/// A schedule error as message and hint: a "did you mean" goes in the hint, where every other
/// suggestion of the loader stands.
fn split_suggestion(e: ScheduleError) -> (String, Option<String>) {
    match e {
        ScheduleError::UnknownTimeZone { name, suggestion } => (
            format!("unknown time zone `{name}`"),
            Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use an IANA name such as `Europe/Zurich`, `America/New_York` or `UTC`".into(),
            }),
        ),
        ScheduleError::UnknownMacro { name, suggestion } => (
            format!("unknown schedule macro `{name}`"),
            Some(match suggestion {
                Some(s) => format!("did you mean `{s}`?"),
                None => "use `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`, `@every <duration>` or `@after <duration>`".into(),
            }),
        ),
        ScheduleError::Special {
            field,
            value,
            token,
            problem,
        } => (
            format!("{field} field `{value}`: {problem}"),
            Some(token.hint().to_string()),
        ),
        other => (other.to_string(), None),
    }
}
