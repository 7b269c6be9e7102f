//! What the schedule tests share: instants written as RFC 3339 text, a `TickContext` with a fixed
//! anchor, and ticks chained through `next_tick_after`. One copy, because the tests of `cron`,
//! `dst`, `every` and the module itself all read and write ticks the same way.

use chrono::{DateTime, SecondsFormat, Utc};

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
