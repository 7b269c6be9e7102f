//! Schedules: the `schedule` and `timeZone` fields of a Job or Chain, parsed, and the instants at
//! which they are due. Pure: every function is handed the time it reasons about and nothing here
//! reads the clock, so the executor, the planner and the tests all get the same answers.
//!
//! Cron is read the way Vixie cron (and so pg_cron and Kubernetes) reads it: 5 fields
//! `min hour dom mon dow`, or 6 with leading seconds; numbers, names (`JAN`, `mon`), `*`, ranges,
//! steps and lists; Sunday is both 0 and 7. When day-of-month and day-of-week are both
//! restricted a day matches if either does. As in Vixie cron a day field that *starts* with `*`
//! (`*/2`) does not count as restricted, so there both fields must match: `0 0 */2 * 1` is the
//! odd-numbered days that are Mondays. The day fields also take croner's `L` (last: `L` and `LW`
//! in day-of-month, `5L` in day-of-week), `W` (nearest weekday: `15W`) and `#` (nth weekday:
//! `1#2`), and pg_cron's `$` (the last day), which croner evaluates; see `fields`. Their
//! weekdays are still Vixie's (`5L` is the last Friday), not Quartz's, which count from
//! 1 = Sunday. Quartz's `L-n`, `?` and a year field are rejected with a hint, and `@reboot` too:
//! pgsched runs nothing on start.
//!
//! Cron fields are read in the job's time zone, and daylight-saving changes are handled like
//! cronie, which sorts jobs into two kinds:
//! - *interval* jobs, whose second, minute or hour field starts with `*` (`*/15 * * * *`,
//!   `0 * * * *`, `@hourly`): every instant whose local time matches is a tick. They keep their
//!   real-time cadence: local times skipped by spring-forward do not exist and do not run, local
//!   times repeated by fall-back run in both occurrences.
//! - *wall-clock* jobs, all others (`30 2 * * *`, `0 1,13 * * *`, `@daily`): each matching local
//!   time runs once, at the first instant the clock reaches it. A skipped time runs right after
//!   the gap (several skipped times collapse into that one tick), a repeated time runs only in its
//!   first occurrence.
//!
//! Ticks are strictly increasing instants. `@every` is a fixed rate counted from the job's anchor
//! and `@after` a delay after the previous run finished; neither looks at the time zone.
//!
//! The public types and the dispatch between kinds of schedule live here; the rest is split by
//! concern, so that each part can be read and changed on its own: `cron` and `fields` parse cron
//! expressions into the pattern croner evaluates, `macros` the `@` words, `every` the `@every`
//! and `@after` durations, `zone` the `timeZone`; `dst` applies the daylight-saving rules when
//! finding cron ticks, and `offsets` finds where a zone's UTC offset changes.

mod cron;
mod dst;
mod error;
mod every;
mod fields;
mod macros;
mod offsets;
mod zone;

pub use cron::CronSchedule;
pub use error::{CronToken, ScheduleError};
pub use zone::parse_time_zone;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use crate::duration::format_duration;
use cron::build_cron;
use every::next_every;
use macros::parse_macro;

/// When a job is due: parsed from the spec's `schedule` field by [`parse_schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// A cron expression or one of the calendar macros (`@daily`, ...).
    Cron(CronSchedule),
    /// `@every <duration>`: fixed rate, counted from the job's anchor.
    Every(Duration),
    /// `@after <duration>`: this long after the previous run finished.
    After(Duration),
}

/// What a tick computation needs besides the schedule: where cron fields are read, and where
/// `@every` and `@after` count from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickContext {
    /// The zone cron fields are read in (the spec's `timeZone`, default UTC).
    pub tz: Tz,
    /// The origin of `@every` ticks, and of the first `@after` tick.
    pub anchor: DateTime<Utc>,
    /// When the previous run finished; `@after` counts from here once there is one.
    pub last_finished: Option<DateTime<Utc>>,
}

/// Parses a `schedule` field: a 5- or 6-field cron expression (with `L`, `W`, `#` and `$` in
/// the day fields), `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
/// `@hourly`, `@every <duration>` or `@after <duration>`. Macro names are case-insensitive.
pub fn parse_schedule(text: &str) -> Result<Schedule, ScheduleError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ScheduleError::Empty);
    }
    if text.starts_with('@') {
        return parse_macro(text);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields.len() {
        5 | 6 => build_cron(fields.join(" "), &fields).map(Schedule::Cron),
        7 => Err(ScheduleError::YearField {
            text: fields.join(" "),
        }),
        count => Err(ScheduleError::FieldCount {
            text: fields.join(" "),
            count,
        }),
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_schedule(s)
    }
}

impl Schedule {
    /// The next tick strictly after `t`.
    ///
    /// - Cron: the first tick after `t`, fields read in `ctx.tz` (DST rules in the module doc);
    ///   `None` if the expression can never match (`0 0 30 2 *`).
    /// - Every(d): fixed rate: the smallest `anchor + k*d` (k >= 0) after `t`.
    /// - After(d): `(last_finished or anchor) + d`. This may be at or before `t`, which means the
    ///   run is overdue and should start now.
    pub fn next_tick_after(&self, t: DateTime<Utc>, ctx: &TickContext) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron(cron) => cron.next_after(t, ctx.tz),
            Schedule::Every(period) => next_every(ctx.anchor, *period, t),
            Schedule::After(delay) => ctx
                .last_finished
                .unwrap_or(ctx.anchor)
                .checked_add_signed(TimeDelta::from_std(*delay).ok()?),
        }
    }

    /// Every tick in `(from, to]`, oldest first, at most `limit` of them: the runs missed while no
    /// scheduler ran. `@after` has no series of ticks; it yields its one due time if that falls
    /// in the window.
    pub fn ticks_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        ctx: &TickContext,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut ticks = Vec::new();
        if limit == 0 || to <= from {
            return ticks;
        }
        match self {
            Schedule::After(_) => {
                if let Some(due) = self.next_tick_after(from, ctx) {
                    if from < due && due <= to {
                        ticks.push(due);
                    }
                }
            }
            Schedule::Every(period) => {
                let Ok(step) = TimeDelta::from_std(*period) else {
                    return ticks;
                };
                let mut next = next_every(ctx.anchor, *period, from);
                while let Some(tick) = next {
                    if tick > to || ticks.len() == limit {
                        break;
                    }
                    ticks.push(tick);
                    next = tick.checked_add_signed(step);
                }
            }
            Schedule::Cron(cron) => {
                let mut cursor = from;
                while ticks.len() < limit {
                    match cron.next_after(cursor, ctx.tz) {
                        Some(tick) if tick <= to => {
                            ticks.push(tick);
                            cursor = tick;
                        }
                        _ => break,
                    }
                }
            }
        }
        ticks
    }

    /// The canonical text, for plans, status files and tables: a cron expression with single
    /// spaces, macro aliases resolved (`@annually` shows as `@yearly`), durations in their
    /// shortest form (`@every 90m` shows as `@every 1h30m`).
    pub fn as_str(&self) -> Cow<'_, str> {
        match self {
            Schedule::Cron(cron) => Cow::Borrowed(cron.as_str()),
            Schedule::Every(period) => Cow::Owned(format!("@every {}", format_duration(*period))),
            Schedule::After(delay) => Cow::Owned(format!("@after {}", format_duration(*delay))),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

#[cfg(test)]
mod day_token_tests;
#[cfg(test)]
mod test_support;

#[cfg(test)]
mod tests {
    use super::test_support::{ctx, schedule, show, utc};
    use super::*;

    #[test]
    fn parses_and_shows_canonical_text() {
        let cases = [
            ("0 2 * * *", "0 2 * * *"),
            ("  0   2 *\t* *  ", "0 2 * * *"),
            ("*/10 * * * * *", "*/10 * * * * *"),
            ("0 9 * * mon-fri", "0 9 * * mon-fri"),
            ("0 9  lw * fri#3", "0 9 lw * fri#3"),
            ("0 0 $ * *", "0 0 $ * *"),
            ("@yearly", "@yearly"),
            ("@annually", "@yearly"),
            ("@MONTHLY", "@monthly"),
            ("@weekly", "@weekly"),
            ("@daily", "@daily"),
            ("@midnight", "@daily"),
            ("@hourly", "@hourly"),
            ("@every 15m", "@every 15m"),
            ("@every 90m", "@every 1h30m"),
            ("@after 30s", "@after 30s"),
            ("@Every 500ms", "@every 500ms"),
        ];
        for (input, shown) in cases {
            let s = schedule(input);
            assert_eq!(s.as_str(), shown, "{input}");
            assert_eq!(s.to_string(), shown, "{input}");
        }
        assert_eq!(
            schedule("@every 1h30m"),
            Schedule::Every(Duration::from_secs(5400))
        );
        assert_eq!(
            schedule("@after 2h"),
            Schedule::After(Duration::from_secs(7200))
        );
        assert_eq!("@daily".parse::<Schedule>().unwrap(), schedule("@midnight"));
    }

    #[test]
    fn ticks_between_is_half_open_and_bounded() {
        let c = ctx("UTC");
        let every_second = schedule("* * * * * *");
        let (from, to) = (utc("2026-01-01T00:00:00Z"), utc("2026-01-02T00:00:00Z"));
        assert_eq!(every_second.ticks_between(from, to, &c, 5).len(), 5);
        assert!(every_second.ticks_between(from, to, &c, 0).is_empty());
        assert!(every_second.ticks_between(to, from, &c, 5).is_empty());
        assert!(every_second.ticks_between(from, from, &c, 5).is_empty());

        let hourly = schedule("@hourly");
        let ticks = hourly.ticks_between(
            utc("2026-01-01T01:00:00Z"),
            utc("2026-01-01T04:00:00Z"),
            &c,
            100,
        );
        assert_eq!(
            ticks.into_iter().map(show).collect::<Vec<_>>(),
            [
                "2026-01-01T02:00:00Z",
                "2026-01-01T03:00:00Z",
                "2026-01-01T04:00:00Z"
            ]
        );
        let never = schedule("0 0 30 2 *");
        assert!(never.ticks_between(from, to, &c, usize::MAX).is_empty());
    }
}
