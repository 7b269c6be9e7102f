//! Why a `schedule` or `timeZone` was rejected. Every parser of this module reports through the
//! one `ScheduleError`, so its messages, the text users read after the field path, are kept
//! together here, where they can be read, and tested, as one set.

use crate::duration::DurationError;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::parse_schedule;

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
}
