//! The `@` words of a `schedule`: the calendar macros (`@daily`, ...) expand to cron,
//! `@every` and `@after` are handed on to `every`, and an unknown word gets a "did you mean".
//! Separate so that the words, their aliases and the suggestion among them live in one place.

use super::cron::build_cron;
use super::every::parse_interval;
use super::{Schedule, ScheduleError};

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

pub(super) fn parse_macro(text: &str) -> Result<Schedule, ScheduleError> {
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
