//! A cron expression as a whole: its fields, each checked by `fields`, assembled into the numeric
//! 6-field pattern croner evaluates, plus the two facts croner cannot tell: whether the job is a
//! cronie interval job, and whether any calendar day can match at all. This is where Vixie's
//! whole-expression rules (the day fields ORed, the `*` exception) live; nothing here knows
//! about time zones, which are `dst`'s.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use super::fields::{
    parse_field, FieldSpec, DAY_OF_MONTH, DAY_OF_WEEK, HOUR, MINUTE, MONTH, SECOND,
};
use super::ScheduleError;

/// A validated cron expression: the text shown to users and the pattern croner evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// What users see: the expression with its whitespace normalised, or the macro's name.
    pub(super) text: String,
    /// Always 6 numeric fields (seconds first), so croner never sees names or macros and its own
    /// extensions cannot slip through. Shared: compiled once per distinct pattern (see `compiled`).
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

pub(super) fn build_cron(text: String, fields: &[&str]) -> Result<CronSchedule, ScheduleError> {
    let specs: &[FieldSpec] = if fields.len() == 6 {
        &[SECOND, MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    } else {
        &[MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK]
    };
    let parsed = fields
        .iter()
        .zip(specs)
        .map(|(raw, spec)| parse_field(spec, raw))
        .collect::<Result<Vec<_>, _>>()?;
    let [time_fields @ .., dom, month, dow] = parsed.as_slice() else {
        unreachable!("a cron expression has at least 5 fields");
    };

    let interval = time_fields.iter().any(|f| f.starred);
    // croner ignores a field only when it is exactly `*`, and otherwise ORs the two day fields
    // unless told to AND them; asking for AND when a field merely starts with `*` gives Vixie's
    // rule (for an exact `*` AND and "ignore" agree).
    let both_days_must_match = dom.starred || dow.starred;
    let dom_any = dom.numeric == "*";
    let dow_any = dow.numeric == "*";
    let fires =
        dom_any || (!dow_any && !both_days_must_match) || some_day_exists(month.bits, dom.bits);

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
    Ok(CronSchedule {
        text,
        cron,
        interval,
        fires,
    })
}

/// Whether some month in `months` has a day in `days`. Weekdays need no check: every
/// (month, day) pair falls on every weekday in some year.
fn some_day_exists(months: u64, days: u64) -> bool {
    const LONGEST: [u32; 12] = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    (1..=12u32).any(|m| {
        months & (1 << m) != 0 && (1..=LONGEST[m as usize - 1]).any(|d| days & (1 << d) != 0)
    })
}

#[cfg(test)]
mod tests {
    use crate::schedule::test_support::{ctx, next_n, schedule, utc};

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
}
