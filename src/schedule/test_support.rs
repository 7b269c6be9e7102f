//! What the schedule tests share: instants written as RFC 3339 text, a `TickContext` with a fixed
//! anchor, ticks chained through `next_tick_after`, and the slow, obvious oracle croner's search
//! (with the DST rules on top) is checked against: a plain matcher and a minute-by-minute walk
//! of real time. One copy, because the tests of `cron`, `dst`, `every`, the day tokens and the
//! module itself all read and write ticks the same way.

use chrono::{
    DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, SecondsFormat, TimeDelta, Timelike, Utc,
};
use chrono_tz::Tz;
use std::cell::Cell;

use super::{parse_schedule, Schedule, TickContext};

pub(super) fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .with_timezone(&Utc)
}

pub(super) fn ctx(tz: &str) -> TickContext {
    TickContext {
        tz: tz.parse().unwrap(),
        anchor: utc("2026-01-01T00:00:00Z"),
        last_finished: None,
    }
}

pub(super) fn show(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub(super) fn schedule(text: &str) -> Schedule {
    parse_schedule(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// The next `n` ticks after `from`, chained through `next_tick_after`.
pub(super) fn next_n(text: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
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

/// A cron expression read the plainest way there is, for the walk: each field kept as text and
/// each item tested against one date at a time, with the day tokens' meanings written as their
/// definitions (the last day is the one before the next month's 1st; the nearest weekday is the
/// Monday-to-Friday day of the month at the least distance). It shares no code with the
/// parser or the search, so the two can check each other.
pub(super) struct Plain {
    /// minute, hour, day-of-month, month, day-of-week.
    fields: Vec<String>,
    /// cronie's interval job: the minute or hour field starts with `*`.
    interval: bool,
    /// Which minutes and hours match, read once: the walk asks about every minute.
    minutes: Vec<bool>,
    hours: Vec<bool>,
    /// The last day asked about and its answer, for the same reason.
    last_day_asked: Cell<Option<(NaiveDate, bool)>>,
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Plain {
    pub(super) fn new(text: &str) -> Plain {
        let text = match text {
            "@yearly" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let fields: Vec<String> = text
            .split_whitespace()
            .map(str::to_ascii_uppercase)
            .collect();
        assert_eq!(
            fields.len(),
            5,
            "the walk takes 5-field expressions: {text}"
        );
        let interval = fields[0].starts_with('*') || fields[1].starts_with('*');
        let minutes = (0..60).map(|m| values_match(&fields[0], m, &[])).collect();
        let hours = (0..24).map(|h| values_match(&fields[1], h, &[])).collect();
        Plain {
            fields,
            interval,
            minutes,
            hours,
            last_day_asked: Cell::new(None),
        }
    }

    /// Whether local time `t` (whole minutes) matches.
    pub(super) fn matches(&self, t: NaiveDateTime) -> bool {
        self.minutes[t.minute() as usize]
            && self.hours[t.hour() as usize]
            && self.day_matches(t.date())
    }

    /// Whether some time of local day `date` can match.
    pub(super) fn day_matches(&self, date: NaiveDate) -> bool {
        match self.last_day_asked.get() {
            Some((asked, answer)) if asked == date => answer,
            _ => {
                let answer = self.day_rule(date);
                self.last_day_asked.set(Some((date, answer)));
                answer
            }
        }
    }

    fn day_rule(&self, date: NaiveDate) -> bool {
        let (dom, dow) = (&self.fields[2], &self.fields[4]);
        let by_date = dom.split(',').any(|item| dom_item_matches(item, date));
        let by_weekday = dow.split(',').any(|item| dow_item_matches(item, date));
        let days = if dom.starts_with('*') || dow.starts_with('*') {
            by_date && by_weekday
        } else {
            by_date || by_weekday
        };
        values_match(&self.fields[3], date.month(), &MONTHS) && days
    }
}

/// Whether `value` is in a list of numbers, names, `*`, ranges and steps. Names count from the
/// field's first value (January is 1, Sunday 0).
fn values_match(list: &str, value: u32, names: &[&str]) -> bool {
    let first = if names.len() == 12 { 1 } else { 0 };
    let number = |s: &str| {
        names
            .iter()
            .position(|n| *n == s)
            .map_or_else(|| s.parse::<u32>().unwrap(), |i| i as u32 + first)
    };
    list.split(',').any(|item| {
        let (range, step) = item.split_once('/').unwrap_or((item, "1"));
        let step: u32 = step.parse().unwrap();
        let (low, high) = match range.split_once('-') {
            _ if range == "*" => (first, 59),
            Some((a, b)) => (number(a), number(b)),
            None => (number(range), number(range)),
        };
        (low..=high).step_by(step as usize).any(|v| v == value)
    })
}

fn last_day(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.unwrap().pred_opt().unwrap().day()
}

fn is_weekday(date: NaiveDate, day: u32) -> bool {
    let d = date.with_day(day).unwrap();
    !matches!(d.weekday(), chrono::Weekday::Sat | chrono::Weekday::Sun)
}

fn dom_item_matches(item: &str, date: NaiveDate) -> bool {
    let last = last_day(date);
    let day = date.day();
    // `L` is the last day; `$` is `L`.
    let target = |spec: &str| -> Option<u32> {
        match spec {
            "L" | "$" => Some(last),
            _ => Some(spec.parse::<u32>().unwrap()).filter(|d| *d <= last),
        }
    };
    if let Some(spec) = item.strip_suffix('W') {
        let Some(n) = target(spec) else { return false };
        let nearest = (1..=last)
            .filter(|d| is_weekday(date, *d))
            .min_by_key(|d| d.abs_diff(n));
        return nearest == Some(day);
    }
    if item == "L" || item == "$" {
        return target(item) == Some(day);
    }
    values_match(&item.replace('*', "1-31"), day, &[])
}

fn dow_item_matches(item: &str, date: NaiveDate) -> bool {
    let weekday = date.weekday().num_days_from_sunday();
    let (set, which) = match item.split_once('#') {
        Some((set, which)) => (set, which),
        None => match item.strip_suffix('L') {
            Some(set) => (set, "L"),
            None => (item, ""),
        },
    };
    // Sunday is 0 and 7; a range ending on Sunday (`FRI-SUN`) ends on 7.
    let set = set.replace('*', "0-7").replace("-SUN", "-7");
    let in_set = values_match(&set, weekday, &WEEKDAYS)
        || (weekday == 0 && values_match(&set, 7, &WEEKDAYS));
    let occurrence = (date.day() - 1) / 7 + 1;
    in_set
        && match which {
            "" => true,
            "L" => date.day() + 7 > last_day(date),
            n => n.parse::<u32>().unwrap() == occurrence,
        }
}

/// The ticks of `text` in `(from, to]` in zone `tz`, found by walking real time minute by
/// minute: the DST rule stated directly, as cronie applies it. An interval job ticks whenever
/// the local time matches. A wall-clock job ticks when the clock first reaches a matching
/// local time: any match in (latest local time shown so far, local time now]. To keep a walk
/// over years quick, the rest of a local day on which nothing can match is stepped over in
/// one go, but only while the UTC offset holds (checked every hour), where every minute would
/// see just its own local time of that same day.
pub(super) fn walk(text: &str, tz: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
    let plain = Plain::new(text);
    let tz: Tz = tz.parse().unwrap();
    assert_eq!(
        from.timestamp() % 60,
        0,
        "the walk starts on a whole minute"
    );
    let minute = TimeDelta::minutes(1);
    let local_at = |x: DateTime<Utc>| x.with_timezone(&tz).naive_local();
    let offset_at = |x: DateTime<Utc>| x.with_timezone(&tz).offset().fix();
    let mut ticks = Vec::new();
    let mut shown = local_at(from);
    let mut x = from + minute;
    while x <= to {
        let local = local_at(x);
        let tick = if plain.interval {
            plain.matches(local)
        } else {
            let mut m = shown + minute;
            let mut any = false;
            while m <= local && !any {
                any = plain.matches(m);
                m += minute;
            }
            any
        };
        if tick {
            ticks.push(show(x));
        }
        shown = shown.max(local);
        x += minute;
        if !plain.day_matches(local.date()) {
            let midnight = local
                .date()
                .succ_opt()
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap();
            let skip_to = x - minute + (midnight - local);
            let offset = offset_at(x - minute);
            let mut probe = x;
            while probe < skip_to && offset_at(probe) == offset {
                probe = (probe + TimeDelta::hours(1)).min(skip_to);
            }
            if probe >= skip_to && offset_at(skip_to) == offset {
                shown = shown.max(local_at(skip_to - minute));
                x = skip_to;
            }
        }
    }
    ticks
}

/// Every tick of `text` in `tz` over `days` days from `from`, found by the search and by the
/// walk, must be the same. Returns how many there were.
pub(super) fn agrees_with_the_walk(text: &str, tz: &str, from: DateTime<Utc>, days: i64) -> usize {
    let to = from + TimeDelta::days(days);
    let expected = walk(text, tz, from, to);
    let got: Vec<String> = schedule(text)
        .ticks_between(from, to, &ctx(tz), 1_000_000)
        .into_iter()
        .map(show)
        .collect();
    assert_eq!(got, expected, "{text} in {tz} from {from}");
    got.len()
}
