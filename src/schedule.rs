//! Schedules: the `schedule` and `timeZone` fields of a Job or Chain, parsed, and the instants at
//! which they are due. Pure: every function is handed the time it reasons about and nothing here
//! reads the clock, so the executor, the planner and the tests all get the same answers.
//!
//! Cron is read the way Vixie cron (and so pg_cron and Kubernetes) reads it: 5 fields
//! `min hour dom mon dow`, or 6 with leading seconds; numbers, names (`JAN`, `mon`), `*`, ranges,
//! steps and lists; Sunday is both 0 and 7. When day-of-month and day-of-week are both
//! restricted a day matches if either does. As in Vixie cron a day field that *starts* with `*`
//! (`*/2`) does not count as restricted, so there both fields must match: `0 0 */2 * 1` is the
//! odd-numbered days that are Mondays. Quartz syntax (`L`, `W`, `#`, `?`) and a year field are
//! rejected rather than half-supported: Quartz numbers weekdays from 1 = Sunday, so a pattern
//! written for it would silently run on the wrong days here.
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;

use crate::duration::{format_duration, parse_duration, DurationError};

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

/// A validated cron expression: the text shown to users and the pattern croner evaluates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    /// What users see: the expression with its whitespace normalised, or the macro's name.
    text: String,
    /// Always 6 numeric fields (seconds first), so croner never sees names or macros and its own
    /// extensions cannot slip through. Shared: compiled once per distinct pattern (see `compiled`).
    cron: Arc<Cron>,
    /// cronie's "wildcard" job: keeps real-time cadence across DST changes (see module doc).
    interval: bool,
    /// False when no calendar day can ever match (`0 0 30 2 *`); saves a search to year 5000.
    fires: bool,
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

/// Why a `schedule` or `timeZone` was rejected. The text follows the field path in messages
/// (`spec.schedule: ...`), so it names the problem and shows how to write it instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The schedule is blank.
    #[error("empty schedule; write a cron expression such as `0 2 * * *`, a macro such as `@daily`, or `@every 15m`")]
    Empty,
    /// A cron expression whose field count is not 5, 6 or 7.
    #[error("`{text}` has {count} fields; a cron schedule has 5 (`minute hour day-of-month month day-of-week`, e.g. `0 2 * * *`) or 6 with leading seconds (e.g. `*/10 * * * * *`)")]
    FieldCount {
        /// The expression, its fields joined by single spaces.
        text: String,
        /// How many fields it has.
        count: usize,
    },
    /// A 7-field (Quartz-style, with a year) expression.
    #[error("`{text}` has 7 fields, but a year field is not supported; drop the year and write 5 fields (e.g. `0 2 * * *`) or 6 with leading seconds")]
    YearField {
        /// The expression, its fields joined by single spaces.
        text: String,
    },
    /// One cron field is out of range or malformed.
    #[error("{field} field `{value}`: {reason}")]
    Field {
        /// The field's name: `second`, `minute`, `hour`, `day-of-month`, ...
        field: &'static str,
        /// The field as written.
        value: String,
        /// What is wrong with it and what it takes instead.
        reason: String,
    },
    /// A Quartz cron extension (`?`, `#`, `L`, `W`) that pgsched does not support.
    #[error("{field} field `{value}`: `{symbol}` is Quartz cron syntax, which pgsched does not support; {hint}")]
    Extension {
        /// The field's name.
        field: &'static str,
        /// The field as written.
        value: String,
        /// The unsupported symbol.
        symbol: char,
        /// How to write the field without it.
        hint: &'static str,
    },
    /// An `@` word that is not a known macro.
    #[error("unknown schedule macro `{name}`{}; use `@yearly`, `@monthly`, `@weekly`, `@daily`, `@hourly`, `@every <duration>` or `@after <duration>`", did_you_mean(.suggestion))]
    UnknownMacro {
        /// The word as written, `@` included.
        name: String,
        /// The closest known macro, if one is close enough.
        suggestion: Option<String>,
    },
    /// `@reboot`: pgsched does not run jobs when it starts.
    #[error("`@reboot` is not supported: pgsched does not run jobs when it starts; use `runAt` for a single run, or `@every <duration>`")]
    Reboot,
    /// A fixed macro such as `@daily` followed by more text.
    #[error("`{name}` takes no argument, but `{argument}` follows it; for another time of day write a cron expression, e.g. `0 2 * * *`")]
    UnexpectedArgument {
        /// The macro as written.
        name: String,
        /// The text after it.
        argument: String,
    },
    /// `@every` or `@after` without a duration.
    #[error("`{name}` needs a duration, e.g. `{name} 15m`")]
    MissingDuration {
        /// `@every` or `@after`.
        name: &'static str,
    },
    /// The duration after `@every` or `@after` does not parse.
    #[error("`{name} {text}`: {reason}")]
    Duration {
        /// `@every` or `@after`.
        name: &'static str,
        /// The duration as written.
        text: String,
        /// Why it does not parse.
        reason: DurationError,
    },
    /// `@every 0s` or `@after 0s`: the interval must be positive.
    #[error("`{name} {text}`: the duration must be greater than zero, e.g. `{name} 15m`")]
    ZeroDuration {
        /// `@every` or `@after`.
        name: &'static str,
        /// The duration as written.
        text: String,
    },
    /// The fields each parsed, but the cron library rejected the expression as a whole.
    #[error("`{text}` is not a valid cron expression: {message}")]
    Cron {
        /// The expression (or the macro) as shown to the user.
        text: String,
        /// The library's message.
        message: String,
    },
    /// A `timeZone` that is not an IANA name.
    #[error("unknown time zone `{name}`{}; use an IANA name such as `Europe/Zurich`, `America/New_York` or `UTC`", did_you_mean(.suggestion))]
    UnknownTimeZone {
        /// The name as written, trimmed.
        name: String,
        /// The closest IANA name, if one is close enough.
        suggestion: Option<String>,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// Parses a `schedule` field: a 5- or 6-field cron expression, `@yearly` (`@annually`),
/// `@monthly`, `@weekly`, `@daily` (`@midnight`), `@hourly`, `@every <duration>` or
/// `@after <duration>`. Macro names are case-insensitive.
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

/// Parses a `timeZone` field: an IANA name, exactly as the tz database spells it. Case is not
/// forgiven (Kubernetes doesn't either); the error then suggests the right spelling.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    let name = name.trim();
    name.parse::<Tz>()
        .map_err(|_| ScheduleError::UnknownTimeZone {
            name: name.to_string(),
            suggestion: closest_time_zone(name).map(str::to_string),
        })
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

// ---------------------------------------------------------------------------------------------
// Parsing

/// What an unknown macro is compared against for a "did you mean".
const MACROS: [&str; 9] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
    "@every",
    "@after",
];

fn parse_macro(text: &str) -> Result<Schedule, ScheduleError> {
    let (name, argument) = match text.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (text, ""),
    };
    let lower = name.to_ascii_lowercase();
    let (canonical, expansion) = match lower.as_str() {
        "@yearly" | "@annually" => ("@yearly", "0 0 1 1 *"),
        "@monthly" => ("@monthly", "0 0 1 * *"),
        "@weekly" => ("@weekly", "0 0 * * 0"),
        "@daily" | "@midnight" => ("@daily", "0 0 * * *"),
        "@hourly" => ("@hourly", "0 * * * *"),
        "@every" => return parse_interval("@every", argument).map(Schedule::Every),
        "@after" => return parse_interval("@after", argument).map(Schedule::After),
        "@reboot" => return Err(ScheduleError::Reboot),
        _ => {
            return Err(ScheduleError::UnknownMacro {
                name: name.to_string(),
                suggestion: closest(&lower, MACROS.iter().copied(), 0.8).map(str::to_string),
            })
        }
    };
    if !argument.is_empty() {
        return Err(ScheduleError::UnexpectedArgument {
            name: name.to_string(),
            argument: argument.to_string(),
        });
    }
    let fields: Vec<&str> = expansion.split_whitespace().collect();
    build_cron(canonical.to_string(), &fields).map(Schedule::Cron)
}

fn parse_interval(name: &'static str, argument: &str) -> Result<Duration, ScheduleError> {
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

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// The largest value worth suggesting: day-of-week 7 is only an alias of Sunday.
    shown_max: u32,
    /// Three-letter names, the first standing for `min`.
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    shown_max: 23,
    names: &[],
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    shown_max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    shown_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    shown_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// One cron field after validation.
struct Field {
    /// Numeric form handed to croner (`MON-FRI` becomes `1-5`).
    numeric: String,
    /// Bit `v` set when value `v` matches.
    bits: u64,
    /// Vixie decides both the day-field rule and the DST kind on whether the field's text
    /// starts with `*`, not on which values it matches.
    starred: bool,
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

fn build_cron(text: String, fields: &[&str]) -> Result<CronSchedule, ScheduleError> {
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

fn parse_field(spec: &FieldSpec, raw: &str) -> Result<Field, ScheduleError> {
    let fail = |reason: String| ScheduleError::Field {
        field: spec.name,
        value: raw.to_string(),
        reason,
    };
    if let Some(symbol) = raw.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(quartz(spec, raw, symbol));
    }

    let mut items = Vec::new();
    let mut bits = 0u64;
    for item in raw.split(',') {
        if item.is_empty() {
            return Err(fail(
                "a list has an empty item; separate values with single commas, e.g. `1,15`".into(),
            ));
        }
        let (base, step) = match item.split_once('/') {
            Some((base, step)) => {
                let n = step
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0 && step.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        fail(format!(
                            "step `{step}` must be a whole number of 1 or more, e.g. `*/15`"
                        ))
                    })?;
                (base, Some(n))
            }
            None => (item, None),
        };
        let (low, high, text) = if base == "*" {
            (spec.min, spec.max, "*".to_string())
        } else if let Some((a, b)) = base.split_once('-') {
            let low = field_value(spec, raw, a, false)?;
            let high = field_value(spec, raw, b, true)?;
            if low > high {
                return Err(fail(format!(
                    "range `{base}` runs backwards; ranges go from low to high, so split it in two: `{low}-{},{}-{high}`",
                    spec.shown_max, spec.min
                )));
            }
            (low, high, format!("{low}-{high}"))
        } else {
            let value = field_value(spec, raw, base, false)?;
            if let Some(step) = step {
                return Err(fail(format!(
                    "a step needs a range: write `{value}-{}/{step}` to start at {value}, or `*/{step}`",
                    spec.shown_max
                )));
            }
            (value, value, value.to_string())
        };
        let step = step.unwrap_or(1);
        for v in (low..=high).step_by(step as usize) {
            bits |= 1 << v;
        }
        items.push(match step {
            1 => text,
            n => format!("{text}/{n}"),
        });
    }
    Ok(Field {
        numeric: items.join(","),
        bits,
        starred: raw.starts_with('*'),
    })
}

fn field_value(
    spec: &FieldSpec,
    raw: &str,
    token: &str,
    range_end: bool,
) -> Result<u32, ScheduleError> {
    let fail = |reason: String| ScheduleError::Field {
        field: spec.name,
        value: raw.to_string(),
        reason,
    };
    let allowed = if spec.names.is_empty() {
        format!("{}-{}", spec.min, spec.max)
    } else if spec.max == 7 {
        format!("0-7 (0 and 7 are Sunday) or {}", spec.names.join(", "))
    } else {
        format!("{}-{} or {}", spec.min, spec.max, spec.names.join(", "))
    };
    if token.is_empty() {
        return Err(fail(format!(
            "a value is missing; the {} field takes {allowed}",
            spec.name
        )));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return token
            .parse::<u32>()
            .ok()
            .filter(|v| (spec.min..=spec.max).contains(v))
            .ok_or_else(|| {
                fail(format!(
                    "{token} is out of range; the {} field takes {allowed}",
                    spec.name
                ))
            });
    }
    if let Some(index) = spec
        .names
        .iter()
        .position(|n| n.eq_ignore_ascii_case(token))
    {
        let value = spec.min + index as u32;
        // `FRI-SUN` means Friday to Sunday, which needs Sunday's other number.
        return Ok(if range_end && spec.max == 7 && value == 0 {
            7
        } else {
            value
        });
    }
    let upper = token.to_ascii_uppercase();
    let digits_then = |suffix: char| {
        upper.len() > 1
            && upper.ends_with(suffix)
            && upper[..upper.len() - 1].bytes().all(|b| b.is_ascii_digit())
    };
    if upper == "L" || upper == "LW" || digits_then('L') {
        return Err(quartz(spec, raw, 'L'));
    }
    if digits_then('W') {
        return Err(quartz(spec, raw, 'W'));
    }
    Err(fail(format!(
        "`{token}` is not a value; the {} field takes {allowed}",
        spec.name
    )))
}

fn quartz(spec: &FieldSpec, raw: &str, symbol: char) -> ScheduleError {
    ScheduleError::Extension {
        field: spec.name,
        value: raw.to_string(),
        symbol,
        hint: match symbol {
            '?' => "write `*` instead, and note that day-of-week here counts 0 (or 7) = Sunday, 1 = Monday",
            _ => "use numbers, names, `*`, ranges (`1-5`), steps (`*/15`) and lists (`1,15`)",
        },
    }
}

/// The candidate most similar to `wanted` (Jaro-Winkler, case-insensitive), if similar enough;
/// ties go to the earlier candidate.
fn closest<'a>(
    wanted: &str,
    candidates: impl Iterator<Item = &'a str>,
    threshold: f64,
) -> Option<&'a str> {
    let wanted = wanted.to_ascii_lowercase();
    let mut best: Option<(f64, &str)> = None;
    for candidate in candidates {
        let score = strsim::jaro_winkler(&wanted, &candidate.to_ascii_lowercase());
        if score >= threshold && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

fn closest_time_zone(name: &str) -> Option<&'static str> {
    // People write the city alone, or with spaces: compare against the city part too.
    let wanted = name.to_ascii_lowercase().replace(' ', "_");
    if wanted.is_empty() {
        return None;
    }
    let mut best: Option<(f64, &'static str)> = None;
    for tz in chrono_tz::TZ_VARIANTS {
        let candidate = tz.name();
        let lower = candidate.to_ascii_lowercase();
        let city = lower.rsplit('/').next().unwrap_or(&lower);
        let score = strsim::jaro_winkler(&wanted, &lower).max(strsim::jaro_winkler(&wanted, city));
        if score >= 0.85 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, candidate));
        }
    }
    best.map(|(_, c)| c)
}

// ---------------------------------------------------------------------------------------------
// Ticks
//
// The UTC time line is cut into segments of constant UTC offset. Within one, local time is UTC
// plus that offset, so croner, run on naive local times, finds matches and they map back one to
// one. Crossing into the next segment is where the DST rules apply. chrono-tz does not list its
// transitions, so they are found by probing offsets.

/// The most segments one search crosses before giving up: a DST zone has two a year, and the
/// rarest patterns that match at all (Feb 29 that is also a Monday) recur within a few decades.
const MAX_SEGMENTS: usize = 1_000;

/// Offsets are probed this far apart (seconds), then bisected. No zone changes its offset and back
/// within six hours.
const OFFSET_PROBE_SECS: i64 = 6 * 3600;

impl CronSchedule {
    fn next_after(&self, t: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
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

/// The first instant in `(after, until]` whose UTC offset is not `offset` (the offset at
/// `after`); `None` if it holds throughout.
fn first_offset_change(
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    offset: i32,
) -> Option<DateTime<Utc>> {
    // Transitions fall on whole seconds, so flooring `after` keeps its offset.
    let mut low = after.timestamp();
    let end = until.timestamp();
    while low < end {
        let high = low.saturating_add(OFFSET_PROBE_SECS).min(end);
        if offset_at_secs(tz, high)? != offset {
            let (mut same, mut changed) = (low, high);
            while changed - same > 1 {
                let mid = same + (changed - same) / 2;
                if offset_at_secs(tz, mid)? == offset {
                    same = mid;
                } else {
                    changed = mid;
                }
            }
            return DateTime::from_timestamp(changed, 0);
        }
        low = high;
    }
    None
}

fn offset_at(tz: Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

fn offset_at_secs(tz: Tz, secs: i64) -> Option<i32> {
    DateTime::from_timestamp(secs, 0).map(|t| offset_at(tz, t))
}

/// The local time at instant `t` under `offset`.
fn wall(t: DateTime<Utc>, offset: i32) -> Option<NaiveDateTime> {
    t.naive_utc()
        .checked_add_signed(TimeDelta::seconds(offset.into()))
}

/// The instant at which local time `m` shows under `offset`.
fn instant(m: NaiveDateTime, offset: i32) -> Option<DateTime<Utc>> {
    m.checked_sub_signed(TimeDelta::seconds(offset.into()))
        .map(|n| n.and_utc())
}

fn next_every(anchor: DateTime<Utc>, period: Duration, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
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
    use chrono::{NaiveDate, SecondsFormat};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .with_timezone(&Utc)
    }

    fn ctx(tz: &str) -> TickContext {
        TickContext {
            tz: tz.parse().unwrap(),
            anchor: utc("2026-01-01T00:00:00Z"),
            last_finished: None,
        }
    }

    fn show(t: DateTime<Utc>) -> String {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn schedule(text: &str) -> Schedule {
        parse_schedule(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The next `n` ticks after `from`, chained through `next_tick_after`.
    fn next_n(text: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
        let s = schedule(text);
        let c = ctx(tz);
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = s.next_tick_after(t, &c) else {
                break;
            };
            assert!(next > t, "{text}: {next} is not after {t}");
            out.push(show(next));
            t = next;
        }
        out
    }

    #[test]
    fn parses_and_shows_canonical_text() {
        let cases = [
            ("0 2 * * *", "0 2 * * *"),
            ("  0   2 *\t* *  ", "0 2 * * *"),
            ("*/10 * * * * *", "*/10 * * * * *"),
            ("0 9 * * mon-fri", "0 9 * * mon-fri"),
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
    fn rejects_with_a_message_that_says_what_to_write() {
        // (input, a fragment the message must contain)
        let cases = [
            ("", "empty schedule"),
            ("   ", "empty schedule"),
            ("* * * *", "has 4 fields"),
            ("0 0 0 1 1 * 2026", "year field is not supported"),
            ("0 0 0 1 1 * 2026 x", "has 8 fields"),
            (
                "61 * * * *",
                "minute field `61`: 61 is out of range; the minute field takes 0-59",
            ),
            ("0 24 * * *", "hour field `24`"),
            ("0 0 0 * *", "day-of-month field `0`"),
            ("0 0 32 * *", "day-of-month field `32`"),
            ("0 0 * 13 *", "month field `13`"),
            ("0 0 * * 8", "0-7 (0 and 7 are Sunday)"),
            ("60 * * * * *", "second field `60`"),
            ("0 0 L * *", "`L` is Quartz cron syntax"),
            ("0 0 LW * *", "`L` is Quartz cron syntax"),
            ("0 0 15W * *", "`W` is Quartz cron syntax"),
            ("0 0 * * 5L", "`L` is Quartz cron syntax"),
            ("0 0 * * 5#2", "`#` is Quartz cron syntax"),
            (
                "0 0 ? * MON",
                "`?` is Quartz cron syntax, which pgsched does not support; write `*` instead",
            ),
            ("0 0 * * +1", "day-of-week field `+1`"),
            (
                "5/10 * * * *",
                "a step needs a range: write `5-59/10` to start at 5, or `*/10`",
            ),
            (
                "*/0 * * * *",
                "step `0` must be a whole number of 1 or more",
            ),
            ("*/x * * * *", "step `x`"),
            ("0 0 * * MONDAY", "`MONDAY` is not a value"),
            (
                "0 0 * MON *",
                "`MON` is not a value; the month field takes 1-12 or JAN",
            ),
            (
                "0 0 * * FRI-MON",
                "runs backwards; ranges go from low to high, so split it in two: `5-6,0-1`",
            ),
            ("0 22-2 * * *", "split it in two: `22-23,0-2`"),
            ("1,,2 * * * *", "empty item"),
            ("1- * * * *", "a value is missing"),
            ("@reboot", "`@reboot` is not supported"),
            ("@every", "`@every` needs a duration, e.g. `@every 15m`"),
            ("@after", "`@after` needs a duration"),
            ("@every 0s", "must be greater than zero"),
            ("@after 0ms", "must be greater than zero"),
            ("@every 5x", "`@every 5x`: `5x` has an unknown unit"),
            ("@every 10", "`@every 10`: `10` is not a duration"),
            ("@daily 5", "`@daily` takes no argument"),
            (
                "@dayly",
                "unknown schedule macro `@dayly` (did you mean `@daily`?)",
            ),
            ("@fortnightly", "unknown schedule macro `@fortnightly`; use"),
        ];
        for (input, fragment) in cases {
            let err = parse_schedule(input).expect_err(input).to_string();
            assert!(
                err.contains(fragment),
                "{input:?}: {err:?} lacks {fragment:?}"
            );
        }
        assert_eq!(parse_schedule("@reboot"), Err(ScheduleError::Reboot));
        assert!(matches!(
            parse_schedule("0 0 * * 5#2"),
            Err(ScheduleError::Extension {
                symbol: '#',
                field: "day-of-week",
                ..
            })
        ));
    }

    #[test]
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
                let days: Vec<_> = local.iter().map(|l| l.date()).collect();
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
        // The DST rule stated directly, as cronie applies it: walk real time minute by minute.
        // An interval job ticks whenever the local time matches. A wall-clock job ticks when the
        // clock first reaches a matching local time: any match in (latest local time shown so
        // far, local time now].
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
        let minute = TimeDelta::minutes(1);
        for (tz_name, start) in windows {
            let tz: Tz = tz_name.parse().unwrap();
            let from = utc(start);
            let to = from + TimeDelta::days(4);
            for pattern in patterns {
                let Schedule::Cron(cron) = schedule(pattern) else {
                    unreachable!()
                };
                let matches = |local: NaiveDateTime| cron.cron.is_time_matching(&local).unwrap();
                let mut expected = Vec::new();
                let mut shown = from.with_timezone(&tz).naive_local();
                let mut x = from + minute;
                while x <= to {
                    let local = x.with_timezone(&tz).naive_local();
                    let tick = if cron.interval {
                        matches(local)
                    } else {
                        let mut m = shown + minute;
                        let mut any = false;
                        while m <= local && !any {
                            any = matches(m);
                            m += minute;
                        }
                        any
                    };
                    if tick {
                        expected.push(show(x));
                    }
                    shown = shown.max(local);
                    x += minute;
                }
                let got: Vec<_> = Schedule::Cron(cron.clone())
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

    #[test]
    fn time_zones_are_iana_names_with_hints() {
        for name in ["UTC", "Europe/Zurich", "America/New_York", " Asia/Tokyo "] {
            assert_eq!(parse_time_zone(name).unwrap().name(), name.trim());
        }
        let cases = [
            ("Europe/Zurch", Some("Europe/Zurich")),
            ("europe/zurich", Some("Europe/Zurich")),
            ("America/NewYork", Some("America/New_York")),
            ("New York", Some("America/New_York")),
            ("Zurich", Some("Europe/Zurich")),
            ("", None),
            ("+02:00", None),
        ];
        for (name, suggestion) in cases {
            match parse_time_zone(name) {
                Err(ScheduleError::UnknownTimeZone {
                    suggestion: got, ..
                }) => {
                    assert_eq!(got.as_deref(), suggestion, "{name:?}")
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(
            parse_time_zone("Europe/Zurch").unwrap_err().to_string(),
            "unknown time zone `Europe/Zurch` (did you mean `Europe/Zurich`?); use an IANA name such as `Europe/Zurich`, `America/New_York` or `UTC`"
        );
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
