//! When a cron schedule is next due in its time zone: croner's matches on local time, carried
//! across changes of the UTC offset by cronie's daylight-saving rules (stated in the `schedule`
//! module doc). This is the one place those rules are applied; the rest of the cron path works
//! on naive local times and never sees a zone.
//!
//! The UTC time line is cut into segments of constant UTC offset. Within one, local time is UTC
//! plus that offset, so croner, run on naive local times, finds matches and they map back one to
//! one. Crossing into the next segment is where the DST rules apply. chrono-tz does not list its
//! transitions, so they are found by probing offsets.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use super::offsets::{first_offset_change, instant, offset_at, wall};
use super::CronSchedule;

/// The most segments one search crosses before giving up: a DST zone has two a year, and the
/// rarest patterns that match at all (Feb 29 that is also a Monday) recur within a few decades.
const MAX_SEGMENTS: usize = 1_000;

impl CronSchedule {
    pub(super) fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        if !self.fires {
            return None;
        }
        let mut segment_start = t;
        let mut offset = offset_at(tz, t);
        let mut from = wall(t, offset)?;
        let mut inclusive = false;
        for _ in 0..MAX_SEGMENTS {
            let m = self.next_wall_match(from, inclusive)?;
            let x = instant(m, offset)?;
            if let Some(change) = first_offset_change(tz, segment_start, x, offset) {
                // The clock changed before it reached `m`: continue in the next segment.
                let before = offset;
                offset = offset_at(tz, change);
                segment_start = change;
                let clock_would_show = wall(change, before)?;
                let clock_shows = wall(change, offset)?;
                inclusive = true;
                if offset > before {
                    // Spring forward: local times [clock_would_show, clock_shows) never happen.
                    if !self.interval
                        && self
                            .next_wall_match(clock_would_show, true)
                            .is_some_and(|g| g < clock_shows)
                    {
                        return Some(change);
                    }
                    from = clock_shows;
                } else {
                    // Fall back: local times [clock_shows, clock_would_show) happen again.
                    from = if self.interval {
                        clock_shows
                    } else {
                        clock_would_show
                    };
                }
                continue;
            }
            if !self.interval {
                // `t` may sit in the second pass of a repeated hour, where a wall-clock job
                // has already had its runs.
                if let Some(repeat_end) = repeat_end(tz, m, x) {
                    from = repeat_end;
                    inclusive = true;
                    continue;
                }
            }
            return Some(x);
        }
        None
    }

    /// The first local time at or after `from` that the pattern matches.
    fn next_wall_match(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        // croner errors past year 5000; that is as good as never.
        self.cron.find_next_occurrence(&from, inclusive).ok()
    }
}

/// If local time `m`, reached at `x`, was already shown once before `x` (`x` lies in the second
/// pass of a fall-back), the local time at which that second pass ends.
fn repeat_end(tz: Tz, m: NaiveDateTime, x: DateTime<Utc>) -> Option<NaiveDateTime> {
    let LocalResult::Ambiguous(first, _) = tz.from_local_datetime(&m) else {
        return None;
    };
    let first = first.with_timezone(&Utc);
    if first >= x {
        return None;
    }
    let before = offset_at(tz, first);
    let change = first_offset_change(tz, first, x, before)?;
    wall(change, before)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::test_support::{ctx, next_n, schedule, show, utc, walk};
    use chrono::{NaiveDate, TimeDelta};

    #[test]
    #[allow(clippy::too_many_lines)] // one table of cases, read row by row
    fn dst_transitions_follow_cronie() {
        // Europe/Zurich 2026: 02:00 CET -> 03:00 CEST on Mar 29 (01:00Z),
        //                     03:00 CEST -> 02:00 CET on Oct 25 (01:00Z).
        // America/New_York 2026: 02:00 EST -> 03:00 EDT on Mar 8 (07:00Z),
        //                        02:00 EDT -> 01:00 EST on Nov 1 (06:00Z).
        let cases: &[(&str, &str, &str, &[&str])] = &[
            // Skipped local time: once, right after the gap.
            (
                "Europe/Zurich",
                "30 2 * * *",
                "2026-03-27T12:00:00Z",
                &[
                    "2026-03-28T01:30:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-30T00:30:00Z",
                ],
            ),
            (
                "America/New_York",
                "30 2 * * *",
                "2026-03-07T12:00:00Z",
                &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
            ),
            // Repeated local time: once, the first occurrence.
            (
                "Europe/Zurich",
                "30 2 * * *",
                "2026-10-24T12:00:00Z",
                &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            (
                "America/New_York",
                "30 1 * * *",
                "2026-10-31T12:00:00Z",
                &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            // Between the two occurrences, or inside the second pass: the second is not a tick.
            (
                "America/New_York",
                "30 1 * * *",
                "2026-11-01T05:40:00Z",
                &["2026-11-02T06:30:00Z"],
            ),
            (
                "America/New_York",
                "30 1 * * *",
                "2026-11-01T06:10:00Z",
                &["2026-11-02T06:30:00Z"],
            ),
            (
                "Europe/Zurich",
                "30 2 * * *",
                "2026-10-25T01:10:00Z",
                &["2026-10-26T01:30:00Z"],
            ),
            // Lists are wall-clock jobs too (croner alone treats them as interval jobs).
            (
                "America/New_York",
                "0 1,13 * * *",
                "2026-10-31T12:00:00Z",
                &[
                    "2026-10-31T17:00:00Z",
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T18:00:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "0 2,14 * * *",
                "2026-03-28T12:00:00Z",
                &[
                    "2026-03-28T13:00:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T12:00:00Z",
                ],
            ),
            // Several skipped times collapse into one tick; so does a time right after the gap.
            (
                "Europe/Zurich",
                "0,30 2 * * *",
                "2026-03-28T12:00:00Z",
                &[
                    "2026-03-29T01:00:00Z",
                    "2026-03-30T00:00:00Z",
                    "2026-03-30T00:30:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "0 2,3 * * *",
                "2026-03-28T12:00:00Z",
                &[
                    "2026-03-29T01:00:00Z",
                    "2026-03-30T00:00:00Z",
                    "2026-03-30T01:00:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "0,30 2 * * *",
                "2026-10-24T12:00:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-26T01:00:00Z",
                ],
            ),
            // Interval jobs keep real time: through the repeat...
            (
                "America/New_York",
                "*/30 * * * *",
                "2026-11-01T04:50:00Z",
                &[
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T05:30:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T06:30:00Z",
                    "2026-11-01T07:00:00Z",
                ],
            ),
            (
                "America/New_York",
                "0 * * * *",
                "2026-11-01T03:30:00Z",
                &[
                    "2026-11-01T04:00:00Z",
                    "2026-11-01T05:00:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T07:00:00Z",
                ],
            ),
            (
                "America/New_York",
                "*/30 * * * *",
                "2026-11-01T06:10:00Z",
                &["2026-11-01T06:30:00Z", "2026-11-01T07:00:00Z"],
            ),
            (
                "Europe/Zurich",
                "@hourly",
                "2026-10-24T23:30:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T02:00:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "*/15 2 * * *",
                "2026-10-24T23:50:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T00:15:00Z",
                    "2026-10-25T00:30:00Z",
                    "2026-10-25T00:45:00Z",
                    "2026-10-25T01:00:00Z",
                ],
            ),
            // ...and across the gap, where skipped local times simply do not exist.
            (
                "Europe/Zurich",
                "*/15 * * * *",
                "2026-03-29T00:30:00Z",
                &[
                    "2026-03-29T00:45:00Z",
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T01:15:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "30 * * * *",
                "2026-03-29T00:00:00Z",
                &["2026-03-29T00:30:00Z", "2026-03-29T01:30:00Z"],
            ),
            (
                "America/New_York",
                "0 * * * *",
                "2026-03-08T05:30:00Z",
                &[
                    "2026-03-08T06:00:00Z",
                    "2026-03-08T07:00:00Z",
                    "2026-03-08T08:00:00Z",
                ],
            ),
            (
                "Europe/Zurich",
                "*/15 2 * * *",
                "2026-03-28T12:00:00Z",
                &["2026-03-30T00:00:00Z"],
            ),
        ];
        for (tz, pattern, from, expected) in cases {
            let got = next_n(pattern, tz, from, expected.len());
            assert_eq!(got, *expected, "{pattern} in {tz} after {from}");
        }
    }

    #[test]
    fn daily_jobs_fire_once_every_day_across_transitions() {
        // Eight local days around each transition; every daily time must tick on each of them,
        // and the tick's local time is the scheduled one except on a skipped one (gap end).
        let windows = [
            ("Europe/Zurich", (2026, 3, 25)),
            ("Europe/Zurich", (2026, 10, 21)),
            ("America/New_York", (2026, 3, 4)),
            ("America/New_York", (2026, 10, 28)),
        ];
        let times = [
            (0, 0),
            (1, 30),
            (2, 0),
            (2, 30),
            (2, 59),
            (3, 0),
            (12, 0),
            (23, 59),
        ];
        for (tz_name, (y, m, d)) in windows {
            let tz: Tz = tz_name.parse().unwrap();
            let first_day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
            let midnight = |day: NaiveDate| {
                tz.from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
                    .single()
                    .unwrap()
                    .with_timezone(&Utc)
            };
            let from = midnight(first_day) - TimeDelta::seconds(1);
            let to = midnight(first_day + TimeDelta::days(8)) - TimeDelta::seconds(1);
            for (hour, minute) in times {
                let pattern = format!("{minute} {hour} * * *");
                let ticks = schedule(&pattern).ticks_between(from, to, &ctx(tz_name), 100);
                let local: Vec<_> = ticks
                    .iter()
                    .map(|t| t.with_timezone(&tz).naive_local())
                    .collect();
                let expected_days: Vec<_> = first_day.iter_days().take(8).collect();
                let days: Vec<_> = local.iter().map(chrono::NaiveDateTime::date).collect();
                assert_eq!(days, expected_days, "{pattern} in {tz_name}: {local:?}");
                for l in &local {
                    let scheduled = l.date().and_hms_opt(hour, minute, 0).unwrap();
                    let skipped = tz.from_local_datetime(&scheduled) == LocalResult::None;
                    assert!(
                        *l == scheduled || (skipped && *l > scheduled),
                        "{pattern} in {tz_name}: {l}"
                    );
                }
            }
        }
    }

    #[test]
    fn agrees_with_a_minute_by_minute_walk_around_transitions() {
        // The DST rule stated directly, as cronie applies it (`test_support::walk`).
        let windows = [
            ("Europe/Zurich", "2026-03-27T00:00:00Z"),
            ("Europe/Zurich", "2026-10-23T00:00:00Z"),
            ("America/New_York", "2026-03-06T00:00:00Z"),
            ("America/New_York", "2026-10-30T00:00:00Z"),
            // 30-minute shifts.
            ("Australia/Lord_Howe", "2026-04-03T00:00:00Z"),
            ("Australia/Lord_Howe", "2026-10-02T00:00:00Z"),
            // Transitions at local midnight.
            ("America/Santiago", "2026-04-03T00:00:00Z"),
            ("America/Santiago", "2026-09-04T00:00:00Z"),
            // A whole day skipped.
            ("Pacific/Apia", "2011-12-28T00:00:00Z"),
        ];
        let patterns = [
            "30 2 * * *",
            "0 2 * * *",
            "59 1 * * *",
            "0 3 * * *",
            "0 1,13 * * *",
            "0,30 1-3 * * *",
            "@daily",
            "*/15 * * * *",
            "45 * * * *",
            "*/20 2 * * *",
            "0 0 * * 0",
        ];
        for (tz_name, start) in windows {
            let from = utc(start);
            let to = from + TimeDelta::days(4);
            for pattern in patterns {
                let expected = walk(pattern, tz_name, from, to);
                let got: Vec<_> = schedule(pattern)
                    .ticks_between(from, to, &ctx(tz_name), 10_000)
                    .into_iter()
                    .map(show)
                    .collect();
                assert!(!expected.is_empty(), "{pattern} in {tz_name}");
                assert_eq!(got, expected, "{pattern} in {tz_name} from {start}");
            }
        }
    }

    #[test]
    fn interval_jobs_count_real_time_on_transition_days() {
        // Local days of 23 and 25 hours.
        let cases = [
            (
                "America/New_York",
                "*/15 * * * *",
                "2026-03-08T05:00:00Z",
                "2026-03-09T04:00:00Z",
                92,
            ),
            (
                "America/New_York",
                "*/15 * * * *",
                "2026-11-01T04:00:00Z",
                "2026-11-02T05:00:00Z",
                100,
            ),
            (
                "Europe/Zurich",
                "0 * * * *",
                "2026-03-28T23:00:00Z",
                "2026-03-29T22:00:00Z",
                23,
            ),
            (
                "Europe/Zurich",
                "0 * * * *",
                "2026-10-24T22:00:00Z",
                "2026-10-25T23:00:00Z",
                25,
            ),
            // A wall-clock job in the repeated hour runs once per listed minute.
            (
                "America/New_York",
                "0,30 1 * * *",
                "2026-11-01T04:00:00Z",
                "2026-11-02T05:00:00Z",
                2,
            ),
        ];
        for (tz, pattern, from, to, count) in cases {
            // `from` is the local midnight; (from - 1s, to - 1s] covers exactly that local day.
            let from = utc(from) - TimeDelta::seconds(1);
            let to = utc(to) - TimeDelta::seconds(1);
            let ticks = schedule(pattern).ticks_between(from, to, &ctx(tz), 1_000);
            assert_eq!(ticks.len(), count, "{pattern} in {tz}");
            assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{pattern} in {tz}");
        }
    }

    #[test]
    fn ticks_are_strictly_increasing_over_a_year() {
        let patterns = [
            "*/15 * * * *",
            "30 2 * * *",
            "0 1,2,3 * * *",
            "0,30 1-3 * * *",
            "0 0 13 * 5",
            "15 */2 * * *",
        ];
        for tz in [
            "Europe/Zurich",
            "America/New_York",
            "Australia/Lord_Howe",
            "UTC",
        ] {
            for pattern in patterns {
                let ticks = schedule(pattern).ticks_between(
                    utc("2026-01-01T00:00:00Z"),
                    utc("2027-01-01T00:00:00Z"),
                    &ctx(tz),
                    100_000,
                );
                assert!(!ticks.is_empty(), "{pattern} in {tz}");
                assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{pattern} in {tz}");
            }
        }
    }

    #[test]
    fn zones_with_odd_transitions() {
        // Lord Howe moves by 30 minutes (02:00 -> 02:30 on 2026-10-04, 02:00 -> 01:30 on
        // 2026-04-05); a daily 02:15 job still runs once each day.
        let tz: Tz = "Australia/Lord_Howe".parse().unwrap();
        let c = ctx("Australia/Lord_Howe");
        for (from, to) in [
            ("2026-04-02T00:00:00Z", "2026-04-09T00:00:00Z"),
            ("2026-10-01T00:00:00Z", "2026-10-08T00:00:00Z"),
        ] {
            let ticks = schedule("15 2 * * *").ticks_between(utc(from), utc(to), &c, 100);
            let days: Vec<NaiveDate> = ticks
                .iter()
                .map(|t| t.with_timezone(&tz).date_naive())
                .collect();
            assert_eq!(ticks.len(), 7, "{days:?}");
            assert!(
                days.windows(2).all(|w| w[1] == w[0].succ_opt().unwrap()),
                "{days:?}"
            );
        }
        // Samoa skipped 2011-12-30 entirely: a daily job has no local time that day, and the
        // first instant after the gap (Dec 31 00:00 local) gets one tick for it.
        let samoa = schedule("0 12 * * *").ticks_between(
            utc("2011-12-28T00:00:00Z"),
            utc("2012-01-02T00:00:00Z"),
            &ctx("Pacific/Apia"),
            100,
        );
        assert!(samoa.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(samoa.len(), 6, "{samoa:?}");
    }
}
