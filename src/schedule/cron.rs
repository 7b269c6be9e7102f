//! A cron expression as a whole: its fields, each checked by `fields` (the day fields by
//! `days`), assembled into a [`Pattern`] of value sets, plus the two facts the pattern alone does
//! not say: whether the job is a cronie interval job, and whether any calendar day can match at
//! all. This is where Vixie's whole-expression rules (the day fields ORed, the `*` exception)
//! are decided, and where the next local time a pattern matches is found; nothing here knows
//! about time zones, which are `dst`'s.

use std::fmt;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike};

use super::days::{parse_day_of_month, parse_day_of_week, Days};
use super::fields::{parse_field, HOUR, MINUTE, MONTH, SECOND};
use super::ScheduleError;

/// A validated cron expression: the text shown to users and the pattern it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// What users see: the expression with its whitespace normalised, or the macro's name.
    pub(super) text: String,
    /// Which local times match.
    pub(super) pattern: Pattern,
    /// cronie's "wildcard" job: keeps real-time cadence across DST changes (see the `schedule`
    /// module doc).
    pub(super) interval: bool,
    /// False when no calendar day can ever match (`0 0 30 2 *`); saves a search of 400 years.
    pub(super) fires: bool,
}

impl CronSchedule {
    /// The expression as shown to users.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The local times a cron expression matches: a bit per value of each time field and month
/// (a 5-field expression has second 0), and the day fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pattern {
    seconds: u64,
    minutes: u64,
    hours: u64,
    months: u64,
    days: Days,
}

/// How far a search looks before it concludes there is no match: the Gregorian calendar,
/// weekdays included, repeats every 400 years, so a pattern that can match at all (`fires`)
/// matches within that many years of any start.
const SEARCH_MONTHS: u32 = 401 * 12;

impl Pattern {
    /// The first local time at or after `from` (strictly after, unless `inclusive`) that the
    /// pattern matches, to the second. The search goes month by month, taking each month's
    /// matching days whole from `days`, then the first matching time of day: a few steps per
    /// month however sparse the pattern, never a walk through minutes.
    pub(super) fn next_match(&self, from: NaiveDateTime, inclusive: bool) -> Option<NaiveDateTime> {
        let whole = from.with_nanosecond(0)?;
        let start = if inclusive && whole == from {
            whole
        } else {
            whole.checked_add_signed(TimeDelta::seconds(1))?
        };
        let (mut year, mut month) = (start.year(), start.month());
        for _ in 0..SEARCH_MONTHS {
            if self.months & 1 << month != 0 {
                let first_day = NaiveDate::from_ymd_opt(year, month, 1)?;
                let first = first_day.weekday().num_days_from_sunday();
                let mut days = self.days.in_month(days_in_month(year, month), first);
                if year == start.year() && month == start.month() {
                    // Days before the start's are gone.
                    days &= !((1u32 << start.day()) - 1);
                }
                while days != 0 {
                    let day = first_day.with_day(days.trailing_zeros())?;
                    let time = if day == start.date() {
                        self.time_at_or_after(start.time())
                    } else {
                        Some(self.first_time())
                    };
                    if let Some(time) = time {
                        return Some(day.and_time(time));
                    }
                    days &= days - 1;
                }
            }
            (year, month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
        }
        None
    }

    /// The first matching time of day at or after `t` (whole seconds), if that day has one.
    fn time_at_or_after(&self, t: NaiveTime) -> Option<NaiveTime> {
        let (h, m, s) = (t.hour(), t.minute(), t.second());
        let first_second = self.seconds.trailing_zeros();
        if self.hours & 1 << h != 0 {
            if self.minutes & 1 << m != 0 {
                if let Some(second) = next_bit(self.seconds, s) {
                    return NaiveTime::from_hms_opt(h, m, second);
                }
            }
            if let Some(minute) = next_bit(self.minutes, m + 1) {
                return NaiveTime::from_hms_opt(h, minute, first_second);
            }
        }
        let hour = next_bit(self.hours, h + 1)?;
        NaiveTime::from_hms_opt(hour, self.minutes.trailing_zeros(), first_second)
    }

    fn first_time(&self) -> NaiveTime {
        // Every field matches at least one value, so these are in range.
        NaiveTime::from_hms_opt(
            self.hours.trailing_zeros(),
            self.minutes.trailing_zeros(),
            self.seconds.trailing_zeros(),
        )
        .unwrap_or(NaiveTime::MIN)
    }
}

/// The lowest set bit of `bits` at position `from` or above.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let above = bits.checked_shr(from)?.checked_shl(from)?;
    (above != 0).then(|| above.trailing_zeros())
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A cron expression of 5 or 6 fields (`fields`), shown to users as `text`.
pub(super) fn build_cron(text: String, fields: &[&str]) -> Result<CronSchedule, ScheduleError> {
    let (seconds, rest) = match fields {
        [seconds, rest @ ..] if fields.len() == 6 => (parse_field(&SECOND, seconds)?, rest),
        _ => (parse_field(&SECOND, "0")?, fields),
    };
    let [minute, hour, dom, month, dow] = rest else {
        unreachable!("a cron expression has 5 or 6 fields");
    };
    // In the order written, so that the first error reported is the leftmost.
    let minutes = parse_field(&MINUTE, minute)?;
    let hours = parse_field(&HOUR, hour)?;
    let dom = parse_day_of_month(dom)?;
    let months = parse_field(&MONTH, month)?;
    let days = Days::new(dom, parse_day_of_week(dow)?);
    let interval = (fields.len() == 6 && seconds.starred) || minutes.starred || hours.starred;
    let fires = days.can_match(months.bits);
    Ok(CronSchedule {
        text,
        pattern: Pattern {
            seconds: seconds.bits,
            minutes: minutes.bits,
            hours: hours.bits,
            months: months.bits,
            days,
        },
        interval,
        fires,
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use chrono::TimeDelta;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use crate::schedule::test_support::{agrees_with_the_walk, ctx, next_n, schedule, utc};
    use crate::schedule::Schedule;

    #[test]
    #[allow(clippy::too_many_lines)] // one table of cases, read row by row
    fn cron_fields_follow_vixie() {
        // (pattern, from, expected ticks in UTC)
        let cases: &[(&str, &str, &[&str])] = &[
            // Both day fields restricted: a day matches if either does. Jan 2 2026 is a Friday;
            // Feb 13 is both, and still fires once.
            (
                "0 0 13 * 5",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-02T00:00:00Z",
                    "2026-01-09T00:00:00Z",
                    "2026-01-13T00:00:00Z",
                    "2026-01-16T00:00:00Z",
                    "2026-01-23T00:00:00Z",
                    "2026-01-30T00:00:00Z",
                    "2026-02-06T00:00:00Z",
                    "2026-02-13T00:00:00Z",
                    "2026-02-20T00:00:00Z",
                ],
            ),
            // Only one restricted: only that one applies.
            (
                "0 0 13 * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-13T00:00:00Z", "2026-02-13T00:00:00Z"],
            ),
            (
                "0 0 * * 5",
                "2026-01-01T00:00:00Z",
                &["2026-01-02T00:00:00Z", "2026-01-09T00:00:00Z"],
            ),
            // A day field starting with `*` is not "restricted": odd days that are Mondays.
            (
                "0 0 */2 * 1",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-05T00:00:00Z",
                    "2026-01-19T00:00:00Z",
                    "2026-02-09T00:00:00Z",
                ],
            ),
            // ...while the same days written without `*` are ORed with Mondays.
            (
                "0 0 1-31/2 * 1",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-03T00:00:00Z",
                    "2026-01-05T00:00:00Z",
                    "2026-01-07T00:00:00Z",
                ],
            ),
            // Sunday is 0 and 7, by name in any case; 2026-01-04 is a Sunday.
            (
                "0 0 * * 0",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 0 * * 7",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 0 * * sun",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 0 * * FRI-SUN",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-02T00:00:00Z",
                    "2026-01-03T00:00:00Z",
                    "2026-01-04T00:00:00Z",
                    "2026-01-09T00:00:00Z",
                ],
            ),
            (
                "0 0 * * 5-7",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-02T00:00:00Z",
                    "2026-01-03T00:00:00Z",
                    "2026-01-04T00:00:00Z",
                    "2026-01-09T00:00:00Z",
                ],
            ),
            // 1-5 is Monday to Friday.
            (
                "0 9 * * 1-5",
                "2026-01-02T08:00:00Z",
                &[
                    "2026-01-02T09:00:00Z",
                    "2026-01-05T09:00:00Z",
                    "2026-01-06T09:00:00Z",
                    "2026-01-07T09:00:00Z",
                    "2026-01-08T09:00:00Z",
                    "2026-01-09T09:00:00Z",
                    "2026-01-12T09:00:00Z",
                ],
            ),
            (
                "0 9 * * Mon-Fri",
                "2026-01-02T08:00:00Z",
                &["2026-01-02T09:00:00Z", "2026-01-05T09:00:00Z"],
            ),
            // Month names, lists, ranges, steps.
            (
                "0 0 1 jan,JUL *",
                "2026-01-01T00:00:00Z",
                &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"],
            ),
            (
                "0 0 1 Feb-Apr *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-02-01T00:00:00Z",
                    "2026-03-01T00:00:00Z",
                    "2026-04-01T00:00:00Z",
                    "2027-02-01T00:00:00Z",
                ],
            ),
            (
                "0 8-18/5 * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T08:00:00Z",
                    "2026-01-01T13:00:00Z",
                    "2026-01-01T18:00:00Z",
                    "2026-01-02T08:00:00Z",
                ],
            ),
            (
                "15,45 * * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T00:15:00Z",
                    "2026-01-01T00:45:00Z",
                    "2026-01-01T01:15:00Z",
                ],
            ),
            (
                "*/20 * * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T00:20:00Z",
                    "2026-01-01T00:40:00Z",
                    "2026-01-01T01:00:00Z",
                ],
            ),
            // Six fields: leading seconds.
            (
                "*/10 * * * * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-01T00:00:10Z",
                    "2026-01-01T00:00:20Z",
                    "2026-01-01T00:00:30Z",
                ],
            ),
            (
                "30 0 12 * * *",
                "2026-01-01T00:00:00Z",
                &["2026-01-01T12:00:30Z", "2026-01-02T12:00:30Z"],
            ),
            // Strictly after: a tick at `from` itself is not returned; sub-second `from` too.
            (
                "0 12 * * *",
                "2026-01-01T12:00:00Z",
                &["2026-01-02T12:00:00Z"],
            ),
            (
                "0 12 * * *",
                "2026-01-01T11:59:59.999Z",
                &["2026-01-01T12:00:00Z"],
            ),
            (
                "0 12 * * *",
                "2026-01-01T12:00:00.5Z",
                &["2026-01-02T12:00:00Z"],
            ),
            // Macros.
            (
                "@yearly",
                "2026-03-01T00:00:00Z",
                &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
            ),
            (
                "@monthly",
                "2026-01-15T00:00:00Z",
                &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
            ),
            (
                "@weekly",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "@daily",
                "2026-01-01T00:00:00Z",
                &["2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"],
            ),
            (
                "@hourly",
                "2026-01-01T00:30:00Z",
                &["2026-01-01T01:00:00Z", "2026-01-01T02:00:00Z"],
            ),
            // Feb 29 only in leap years (not 2100); the 31st skips shorter months.
            (
                "0 0 29 2 *",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            ),
            (
                "0 0 29 2 *",
                "2096-03-01T00:00:00Z",
                &["2104-02-29T00:00:00Z"],
            ),
            (
                "0 0 31 * *",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-31T00:00:00Z",
                    "2026-03-31T00:00:00Z",
                    "2026-05-31T00:00:00Z",
                    "2026-07-31T00:00:00Z",
                    "2026-08-31T00:00:00Z",
                    "2026-10-31T00:00:00Z",
                    "2026-12-31T00:00:00Z",
                ],
            ),
            // Never: no Feb 30, no April 31.
            ("0 0 30 2 *", "2026-01-01T00:00:00Z", &[]),
            ("0 0 31 4,6,9,11 *", "2026-01-01T00:00:00Z", &[]),
            (
                "0 0 */30 2 *",
                "2026-01-01T00:00:00Z",
                &["2026-02-01T00:00:00Z", "2027-02-01T00:00:00Z"],
            ),
        ];
        for (pattern, from, expected) in cases {
            let got = next_n(pattern, "UTC", from, expected.len().max(1));
            assert_eq!(got, *expected, "{pattern} after {from}");
        }
    }

    #[test]
    fn never_matching_cron_ends_quickly() {
        let c = ctx("Europe/Zurich");
        for pattern in ["0 0 30 2 *", "0 0 31 2,4 *", "0 0 30 2 * "] {
            let s = schedule(pattern);
            let started = std::time::Instant::now();
            assert_eq!(
                s.next_tick_after(utc("2026-01-01T00:00:00Z"), &c),
                None,
                "{pattern}"
            );
            assert!(s
                .ticks_between(
                    utc("2026-01-01T00:00:00Z"),
                    utc("2036-01-01T00:00:00Z"),
                    &c,
                    100
                )
                .is_empty());
            assert!(
                started.elapsed() < std::time::Duration::from_millis(50),
                "{pattern}"
            );
        }
    }

    #[test]
    fn random_expressions_agree_with_the_walk() {
        // Items of each field, mixed at random: the new tokens among plain values, in lists, with
        // both day-field rules (a leading `*` or not), in zones with and without DST. The seed is
        // fixed, so a failure names an expression that fails again.
        const MINUTES: &[&str] = &["0", "30", "59", "*/20", "15,45"];
        const HOURS: &[&str] = &["0", "2", "12", "23", "1-3", "*/6", "*"];
        const DAYS: &[&str] = &[
            "1", "15", "29", "28-31", "*/10", "L", "$", "L-1", "L-7", "L-30", "LW", "1W", "15W",
            "30W", "31W", "L-2W", "*",
        ];
        const MONTHS: &[&str] = &["*", "2", "1-6", "*/3", "FEB,MAR", "10-12", "3,10,11"];
        const WEEKDAYS: &[&str] = &[
            "*",
            "5L",
            "1#2",
            "FRI#3",
            "0L",
            "7#1",
            "1#5",
            "MON-FRI#1",
            "SAT-SUN#L",
            "1-5",
            "0",
            "THU#4",
            "*/2",
            "6#5",
        ];
        const ZONES: &[&str] = &["UTC", "Europe/Zurich", "America/New_York"];
        let mut rng = StdRng::seed_from_u64(16);
        let mut pick = |items: &[&'static str]| items[rng.random_range(0..items.len())];
        let cases: Vec<(String, &str, i64)> = (0..120)
            .map(|_| {
                let (minute, hour) = (pick(MINUTES), pick(HOURS));
                let mut dom = pick(DAYS).to_string();
                if pick(&["one", "one", "two"]) == "two" {
                    dom = format!("{dom},{}", pick(DAYS));
                }
                let month = pick(MONTHS);
                let mut dow = pick(WEEKDAYS).to_string();
                if pick(&["one", "one", "two"]) == "two" {
                    dow = format!("{dow},{}", pick(WEEKDAYS));
                }
                let zone = pick(ZONES);
                let day = pick(&["0", "100", "200", "300", "400", "500", "600", "700"]);
                let text = format!("{minute} {hour} {dom} {month} {dow}");
                (text, zone, day.parse().unwrap())
            })
            .collect();
        let mut firing = 0;
        for (text, zone, day) in &cases {
            let from = utc("2024-01-01T12:00:00Z") + TimeDelta::days(*day);
            if agrees_with_the_walk(text, zone, from, 731) > 0 {
                firing += 1;
            }
        }
        // Agreeing on nothing proves little: most expressions must fire in two years.
        assert!(firing * 10 >= cases.len() * 9, "only {firing} fired");
    }

    #[test]
    fn sparse_patterns_are_found_without_walking() {
        // The search takes each month's days whole: a pattern that fires once in decades costs a
        // step per month, where a walk by minutes would take millions. (Across a zone's offset
        // changes `dst` runs the same search once per change.) Patterns that can never fire (no
        // February has a `30W` or an `L-30`) stop before any search.
        let cases: &[(&str, usize)] = &[
            ("0 0 * 2 1#5", 20),       // Feb 29 on a fifth Monday: every 28 to 40 years
            ("0 9 */4 2 1#5", 20),     // ...and on a day 4k + 1
            ("30 2 L-1W * 0#5", 1000), // the last weekday but one, or a fifth Sunday
            ("59 23 L * 6L", 1000),
        ];
        for (pattern, count) in cases {
            let Schedule::Cron(cron) = schedule(pattern) else {
                unreachable!()
            };
            let started = Instant::now();
            let mut t = utc("2026-01-01T00:00:00Z").naive_utc();
            for _ in 0..*count {
                t = cron.pattern.next_match(t, false).expect(pattern);
            }
            let took = started.elapsed();
            // Under a millisecond here, unoptimised.
            assert!(took < Duration::from_millis(100), "{pattern}: {took:?}");
        }
        // The third: days 1, 4, ..., 28 that are a fifth Monday, which in February is the 29th.
        for pattern in ["0 0 30W 2 *", "0 0 L-30 2,4 *", "0 0 */3 2 1#5"] {
            let started = Instant::now();
            let c = ctx("Europe/Zurich");
            assert_eq!(
                schedule(pattern).next_tick_after(utc("2026-01-01T00:00:00Z"), &c),
                None
            );
            assert!(started.elapsed() < Duration::from_millis(50), "{pattern}");
        }
    }
}
