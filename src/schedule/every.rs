//! `@every` and `@after`: schedules given as a duration rather than a calendar pattern. Their
//! duration is parsed here, and `@every`'s fixed-rate arithmetic (exact to the nanosecond,
//! counted from the anchor) is here too. Neither reads the time zone, which is why they share
//! nothing with the cron files.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::ScheduleError;
use crate::duration::parse_duration;

pub(super) fn parse_interval(
    name: &'static str,
    argument: &str,
) -> Result<Duration, ScheduleError> {
    if argument.is_empty() {
        return Err(ScheduleError::MissingDuration { name });
    }
    let duration = parse_duration(argument).map_err(|reason| ScheduleError::Duration {
        name,
        text: argument.to_string(),
        reason,
    })?;
    if duration.is_zero() {
        return Err(ScheduleError::ZeroDuration {
            name,
            text: argument.to_string(),
        });
    }
    Ok(duration)
}

pub(super) fn next_every(
    anchor: DateTime<Utc>,
    period: Duration,
    t: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if period.is_zero() {
        return None;
    }
    if t < anchor {
        return Some(anchor);
    }
    let elapsed = nanos(t - anchor);
    let period = i128::try_from(period.as_nanos()).ok()?;
    let offset = (elapsed / period + 1).checked_mul(period)?;
    let secs = i64::try_from(offset.div_euclid(1_000_000_000)).ok()?;
    let subsec = u32::try_from(offset.rem_euclid(1_000_000_000)).ok()?;
    anchor.checked_add_signed(TimeDelta::new(secs, subsec)?)
}

fn nanos(d: TimeDelta) -> i128 {
    i128::from(d.num_seconds()) * 1_000_000_000 + i128::from(d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_support::{ctx, schedule, show, utc};
    use crate::schedule::Schedule;

    #[test]
    fn every_is_a_fixed_rate_from_the_anchor() {
        let c = ctx("America/New_York"); // anchor 2026-01-01T00:00:00Z; zone is ignored
        let s = schedule("@every 15m");
        let cases = [
            ("2025-12-31T23:59:59Z", "2026-01-01T00:00:00Z"),
            ("2025-06-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:15:00Z"),
            ("2026-01-01T00:14:59.999Z", "2026-01-01T00:15:00Z"),
            ("2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"),
            ("2026-03-08T07:01:00Z", "2026-03-08T07:15:00Z"),
            ("2027-01-01T00:00:00Z", "2027-01-01T00:15:00Z"),
        ];
        for (t, expected) in cases {
            assert_eq!(
                s.next_tick_after(utc(t), &c).map(show).as_deref(),
                Some(expected),
                "{t}"
            );
        }
        let odd = schedule("@every 1h30m");
        assert_eq!(
            odd.next_tick_after(utc("2026-01-01T02:00:00Z"), &c)
                .map(show)
                .as_deref(),
            Some("2026-01-01T03:00:00Z")
        );
        let ticks = s.ticks_between(
            utc("2026-01-01T00:10:00Z"),
            utc("2026-01-01T01:00:00Z"),
            &c,
            100,
        );
        assert_eq!(
            ticks.into_iter().map(show).collect::<Vec<_>>(),
            [
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
                "2026-01-01T00:45:00Z",
                "2026-01-01T01:00:00Z"
            ]
        );
        assert_eq!(
            s.ticks_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2026-12-31T00:00:00Z"),
                &c,
                3
            )
            .len(),
            3
        );
        assert_eq!(
            Schedule::Every(Duration::ZERO).next_tick_after(utc("2026-01-01T00:00:00Z"), &c),
            None
        );
        assert!(Schedule::Every(Duration::ZERO)
            .ticks_between(
                utc("2026-01-01T00:00:00Z"),
                utc("2026-01-02T00:00:00Z"),
                &c,
                10
            )
            .is_empty());
    }

    #[test]
    fn after_counts_from_the_last_finish() {
        let s = schedule("@after 10m");
        let mut c = ctx("UTC");
        let now = utc("2026-01-01T00:05:00Z");
        // Never ran: from the anchor.
        assert_eq!(
            s.next_tick_after(now, &c).map(show).as_deref(),
            Some("2026-01-01T00:10:00Z")
        );
        c.last_finished = Some(utc("2026-01-01T03:00:00Z"));
        assert_eq!(
            s.next_tick_after(now, &c).map(show).as_deref(),
            Some("2026-01-01T03:10:00Z")
        );
        // Overdue: at or before `t` means run now.
        let later = utc("2026-01-01T05:00:00Z");
        assert_eq!(
            s.next_tick_after(later, &c).map(show).as_deref(),
            Some("2026-01-01T03:10:00Z")
        );
        // At most one tick, and only inside the window.
        let window = |from: &str, to: &str| {
            s.ticks_between(utc(from), utc(to), &c, 100)
                .into_iter()
                .map(show)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            window("2026-01-01T03:00:00Z", "2026-01-01T04:00:00Z"),
            ["2026-01-01T03:10:00Z"]
        );
        assert_eq!(
            window("2026-01-01T03:10:00Z", "2026-01-01T04:00:00Z"),
            Vec::<String>::new()
        );
        assert_eq!(
            window("2026-01-01T03:00:00Z", "2026-01-01T03:05:00Z"),
            Vec::<String>::new()
        );
    }
}
