//! A cron expression as a whole: its fields, each checked by `fields`, assembled into the
//! 6-field pattern croner evaluates (numbers, and the day tokens in croner's spelling), plus the
//! two facts croner cannot tell: whether the job is a cronie interval job, and whether any
//! calendar day can match at all. This is where Vixie's whole-expression rules (the day fields
//! ORed, the `*` exception) live; nothing here knows about time zones, which are `dst`'s.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{Datelike, NaiveDate};
use croner::parser::{CronParser, Seconds, Year};
use croner::time::days_in_month;
use croner::{Cron, CronPattern, Weekday};

use super::fields::{
    parse_field, FieldSpec, DAY_OF_MONTH, DAY_OF_WEEK, HOUR, MINUTE, MONTH, SECOND,
};
use super::ScheduleError;

/// A validated cron expression: the text shown to users and the pattern croner evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// What users see: the expression with its whitespace normalised, or the macro's name.
    pub(super) text: String,
    /// Always 6 fields (seconds first), in numbers and with only the day tokens `fields` lets
    /// through, so croner never sees names, macros or its other extensions (`?`, `+`).
    /// Shared: compiled once per distinct pattern (see `compiled`).
    pub(super) cron: Arc<Cron>,
    /// cronie's "wildcard" job: keeps real-time cadence across DST changes (see the `schedule`
    /// module doc).
    pub(super) interval: bool,
    /// False when no calendar day can ever match (`0 0 30 2 *`); saves a search to year 5000.
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

/// croner's parse costs about 20 µs (it fills a bitfield for every year it could match), and a
/// spec directory repeats the same few schedules many times: patterns are compiled once per
/// process. The cache is bounded; past its size it is simply cleared.
fn compiled(numeric: &str, both_days_must_match: bool) -> Result<Arc<Cron>, String> {
    const MAX_CACHED: usize = 4096;
    type Cache = Mutex<HashMap<(String, bool), Arc<Cron>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (numeric.to_string(), both_days_must_match);
    if let Some(hit) = cache.lock().expect("cron cache").get(&key) {
        return Ok(hit.clone());
    }
    let cron = CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Disallowed)
        .dom_and_dow(both_days_must_match)
        .build()
        .parse(numeric)
        .map_err(|e| e.to_string())?;
    let cron = Arc::new(cron);
    let mut cache = cache.lock().expect("cron cache");
    if cache.len() >= MAX_CACHED {
        cache.clear();
    }
    cache.insert(key, cron.clone());
    Ok(cron)
}

/// A cron expression of 5 or 6 fields (`fields`), shown to users as `text`.
pub(super) fn build_cron(text: String, fields: &[&str]) -> Result<CronSchedule, ScheduleError> {
    let specs: &[FieldSpec] = if fields.len() == 6 {
        &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    } else {
        &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    };
    // In the order written, so that the first error reported is the leftmost.
    let parsed = fields
        .iter()
        .zip(specs)
        .map(|(raw, spec)| parse_field(spec, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let [time_fields @ .., dom, _, dow] = parsed.as_slice() else {
        unreachable!("a cron expression has at least 5 fields");
    };

    let interval = time_fields.iter().any(|f| f.starred);
    // croner ignores a field only when it is exactly `*`, and otherwise ORs the two day fields
    // unless told to AND them; asking for AND when a field merely starts with `*` gives Vixie's
    // rule (for an exact `*` AND and "ignore" agree).
    let both_days_must_match = dom.starred || dow.starred;

    let mut numeric = String::new();
    if fields.len() == 5 {
        numeric.push_str("0 ");
    }
    numeric.push_str(
        &parsed
            .iter()
            .map(|f| f.numeric.as_str())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let cron = compiled(&numeric, both_days_must_match).map_err(|message| ScheduleError::Cron {
        text: text.clone(),
        message,
    })?;
    let fires = some_day_matches(&cron.pattern);
    Ok(CronSchedule {
        text,
        cron,
        interval,
        fires,
    })
}

/// Whether any calendar day can ever match, asked of croner's own day rule for every day of
/// 2001 to 2028. Which days of a month match depends only on the month's length and the
/// weekday of its 1st, and those 28 years hold every kind of year (each weekday for January
/// 1st, leap or not), so the answer is exact; the scan stops at the first match, so only a
/// pattern that never fires (`0 0 30 2 *`, `0 0 */8 2 1#5`) pays for all 28 years, once, where
/// croner would search to year 5000 at every tick.
fn some_day_matches(pattern: &CronPattern) -> bool {
    (2001..=2028).any(|year| {
        (1..=12u32)
            .filter(|&month| pattern.month_match(month).unwrap_or(false))
            .any(|month| {
                (1..=days_in_month(year, month)).any(|day| {
                    NaiveDate::from_ymd_opt(year, month, day).is_some_and(|date| {
                        let weekday =
                            Weekday::from_days_from_sunday(date.weekday().num_days_from_sunday());
                        pattern
                            .day_match(year, month, day, weekday)
                            .unwrap_or(false)
                    })
                })
            })
    })
}

#[cfg(test)]
mod tests {
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
    fn never_matching_cron_ends_without_searching() {
        let c = ctx("Europe/Zurich");
        for pattern in ["0 0 30 2 *", "0 0 31 2,4 *", "0 0 30 2 * "] {
            let s = schedule(pattern);
            // Known at parse time, so no tick search runs (croner's would go on to year 5000).
            assert!(
                matches!(&s, Schedule::Cron(cron) if !cron.fires),
                "{pattern}"
            );
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
            "1", "15", "29", "28-31", "*/10", "L", "$", "LW", "1W", "15W", "30W", "31W", "*",
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
                let second = pick(DAYS);
                // `L` (or `$`) with `LW` is refused (see `fields`), so it is not drawn.
                let last_and_last_weekday = [dom.as_str(), second].contains(&"LW")
                    && ["L", "$"]
                        .iter()
                        .any(|l| [dom.as_str(), second].contains(l));
                if pick(&["one", "one", "two"]) == "two" && !last_and_last_weekday {
                    dom = format!("{dom},{second}");
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
    fn whether_a_pattern_can_ever_fire_is_known_when_it_is_parsed() {
        // Asked of croner's day rule (`some_day_matches`), not by searching: no February has a
        // `30W`, and days 1, 9, 17 and 25 are never a fifth Monday.
        let fires = |pattern: &str| match schedule(pattern) {
            Schedule::Cron(cron) => cron.fires,
            other => panic!("{other:?}"),
        };
        for never in [
            "0 0 30 2 *",
            "0 0 30W 2 *",
            "0 0 31W 4,6 *",
            "0 0 */8 2 1#5",
        ] {
            assert!(!fires(never), "{never}");
        }
        // A leap February starting on a Monday has a fifth Monday, the 29th (2016, 2044).
        for sometimes in ["0 0 29W 2 *", "0 0 * 2 1#5", "0 0 */4 2 1#5", "0 0 L 2 5L"] {
            assert!(fires(sometimes), "{sometimes}");
        }
    }
}
