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
    /// One of the day tokens (`L`, `W`, `#`, `$`) where it is not allowed, or in a form it does
    /// not take (`32W`, `1#6`, `LW5`, Quartz's `L-3`).
    #[error("{field} field `{value}`: {problem}; {}", .token.hint())]
    Special {
        /// The field's name.
        field: &'static str,
        /// The field as written.
        value: String,
        /// The token at fault; its hint says what it means and where it is allowed.
        token: CronToken,
        /// What is wrong with this use of it.
        problem: String,
    },
    /// A Quartz cron extension that pgsched does not support: `?`.
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

/// The tokens cron takes beyond numbers, names, `*`, ranges, steps and lists, all about days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronToken {
    /// `L`: the last day of the month (`L`, `LW`), or a weekday's last occurrence (`5L`).
    Last,
    /// `W`: the weekday (Monday to Friday) nearest a day of the month (`15W`, `LW`).
    Weekday,
    /// `#`: one occurrence of a weekday in the month (`1#2`, the second Monday).
    Nth,
    /// `$`: pg_cron's last day of the month, the same as `L`.
    Dollar,
}

impl CronToken {
    /// The token as written.
    pub fn symbol(self) -> char {
        match self {
            CronToken::Last => 'L',
            CronToken::Weekday => 'W',
            CronToken::Nth => '#',
            CronToken::Dollar => '$',
        }
    }

    /// What the token means and where it is allowed: the hint of every error about it.
    pub fn hint(self) -> &'static str {
        match self {
            CronToken::Last => "`L` means last: in day-of-month `L` is the last day of the month and `LW` its last weekday (Quartz's `L-2`, two days before it, is not supported); in day-of-week it follows a weekday, so `5L` or `FRIL` is the last Friday of the month; no other field takes it",
            CronToken::Weekday => "`W` means the weekday, Monday to Friday, nearest a day of the same month, and is allowed only in day-of-month after one day: `15W` is the weekday nearest the 15th, `LW` the last weekday of the month; for Monday to Friday in day-of-week write `1-5`",
            CronToken::Nth => "`#` picks one occurrence of a weekday in the month and is allowed only in day-of-week, between a weekday and a number from 1 to 5: `1#2` or `MON#2` is the second Monday, and `5L` the last Friday",
            CronToken::Dollar => "`$` is pg_cron's last day of the month, the same as `L`, and is allowed only in day-of-month as a day of its own, such as `$` or `1,$`; for the last weekday write `LW`",
        }
    }
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
            parse_schedule("0 0 ? * 5"),
            Err(ScheduleError::Extension {
                symbol: '?',
                field: "day-of-month",
                ..
            })
        ));
    }

    #[test]
    #[allow(clippy::too_many_lines)] // one table of cases, read row by row
    fn day_tokens_in_the_wrong_place_say_what_they_mean_and_where_they_go() {
        // (input, field, token, a fragment of the problem)
        let cases = [
            (
                "L * * * *",
                "minute",
                CronToken::Last,
                "`L` has no meaning in the minute field",
            ),
            ("0 L * * *", "hour", CronToken::Last, "in the hour field"),
            (
                "L 0 0 * * *",
                "second",
                CronToken::Last,
                "in the second field",
            ),
            ("0 0 1 L *", "month", CronToken::Last, "in the month field"),
            (
                "0 0 1 1,L *",
                "month",
                CronToken::Last,
                "in the month field",
            ),
            (
                "L-2 * * * *",
                "minute",
                CronToken::Last,
                "in the minute field",
            ),
            ("0 0 1 LW *", "month", CronToken::Last, "in the month field"),
            (
                "0 15W * * *",
                "hour",
                CronToken::Weekday,
                "`W` has no meaning in the hour",
            ),
            (
                "5#2 * * * *",
                "minute",
                CronToken::Nth,
                "`#` has no meaning",
            ),
            (
                "0 0 1 $ *",
                "month",
                CronToken::Dollar,
                "`$` has no meaning",
            ),
            (
                "0 0 32W * *",
                "day-of-month",
                CronToken::Weekday,
                "there is no day 32",
            ),
            (
                "0 0 0W * *",
                "day-of-month",
                CronToken::Weekday,
                "there is no day 0",
            ),
            (
                "0 0 1,32W * *",
                "day-of-month",
                CronToken::Weekday,
                "in `32W`, there is no day 32",
            ),
            (
                "0 0 * * 1,L",
                "day-of-week",
                CronToken::Last,
                "in `L`, `L` needs a weekday before it",
            ),
            (
                "0 0 W * *",
                "day-of-month",
                CronToken::Weekday,
                "`W` needs a day before it",
            ),
            (
                "0 0 LW5 * *",
                "day-of-month",
                CronToken::Weekday,
                "nothing may follow `W`",
            ),
            (
                "0 0 15W2 * *",
                "day-of-month",
                CronToken::Weekday,
                "nothing may follow `W`",
            ),
            (
                "0 0 1-5W * *",
                "day-of-month",
                CronToken::Weekday,
                "not a range or a step",
            ),
            (
                "0 0 L-0 * *",
                "day-of-month",
                CronToken::Last,
                "`L-n` and `L-nW` (n days before the last day, Quartz) are not supported",
            ),
            (
                "0 0 L-31 * *",
                "day-of-month",
                CronToken::Last,
                "`L-n` and `L-nW` (n days before the last day, Quartz) are not supported",
            ),
            (
                "0 0 L- * *",
                "day-of-month",
                CronToken::Last,
                "`L-n` and `L-nW` (n days before the last day, Quartz) are not supported",
            ),
            (
                "0 0 15-L * *",
                "day-of-month",
                CronToken::Last,
                "a range cannot end at `L`; write `15-31`",
            ),
            (
                "0 0 5L * *",
                "day-of-month",
                CronToken::Last,
                "is day-of-week syntax",
            ),
            (
                "0 0 L5 * *",
                "day-of-month",
                CronToken::Last,
                "`L` stands alone or as `LW`",
            ),
            (
                "0 0 L-3 * *",
                "day-of-month",
                CronToken::Last,
                "use `L` (the last day) or `LW` (the last weekday), or a fixed day",
            ),
            (
                "0 0 1,L-2W * *",
                "day-of-month",
                CronToken::Last,
                "in `L-2W`, `L-n` and `L-nW`",
            ),
            (
                "0 0 L,LW * *",
                "day-of-month",
                CronToken::Last,
                "`L` and `LW` cannot be combined",
            ),
            (
                "0 0 lw,$ * *",
                "day-of-month",
                CronToken::Last,
                "`L` and `LW` cannot be combined",
            ),
            (
                "0 0 1#2 * *",
                "day-of-month",
                CronToken::Nth,
                "is day-of-week syntax",
            ),
            (
                "0 0 $W * *",
                "day-of-month",
                CronToken::Dollar,
                "takes nothing before or after",
            ),
            (
                "0 0 1-$ * *",
                "day-of-month",
                CronToken::Dollar,
                "takes nothing before or after",
            ),
            (
                "0 0 * * 1#6",
                "day-of-week",
                CronToken::Nth,
                "at most 5 of each weekday, so there is no occurrence 6",
            ),
            (
                "0 0 * * 1#0",
                "day-of-week",
                CronToken::Nth,
                "a number from 1 (the first) to 5",
            ),
            (
                "0 0 * * 1#",
                "day-of-week",
                CronToken::Nth,
                "a number from 1 (the first) to 5",
            ),
            (
                "0 0 * * #2",
                "day-of-week",
                CronToken::Nth,
                "`#` needs a weekday before it",
            ),
            (
                "0 0 * * L",
                "day-of-week",
                CronToken::Last,
                "`L` needs a weekday before it",
            ),
            (
                "0 0 * * 1,L",
                "day-of-week",
                CronToken::Last,
                "`L` needs a weekday before it",
            ),
            (
                "0 0 * * 5W",
                "day-of-week",
                CronToken::Weekday,
                "`W` has no meaning in the day-of-week",
            ),
            (
                "0 0 * * LW",
                "day-of-week",
                CronToken::Weekday,
                "`W` has no meaning",
            ),
            (
                "0 0 * * 5L2",
                "day-of-week",
                CronToken::Last,
                "comes once, right after a weekday",
            ),
            (
                "0 0 * * 1#2#3",
                "day-of-week",
                CronToken::Nth,
                "a number from 1",
            ),
            (
                "0 0 * * */2#1",
                "day-of-week",
                CronToken::Nth,
                "not `*` or a step",
            ),
            (
                "0 0 * * 1-5/2L",
                "day-of-week",
                CronToken::Last,
                "not `*` or a step",
            ),
            (
                "0 0 * * $",
                "day-of-week",
                CronToken::Dollar,
                "`$` has no meaning",
            ),
        ];
        for (input, field_name, expected_token, fragment) in cases {
            let err = parse_schedule(input).expect_err(input);
            let ScheduleError::Special {
                field,
                token,
                ref problem,
                ..
            } = err
            else {
                panic!("{input:?}: {err:?}");
            };
            assert_eq!(
                (field, token),
                (field_name, expected_token),
                "{input:?}: {err}"
            );
            assert!(
                problem.contains(fragment),
                "{input:?}: {problem:?} lacks {fragment:?}"
            );
            // The message ends with the hint: what the token means and where it is allowed.
            assert!(err.to_string().ends_with(token.hint()), "{input:?}: {err}");
        }
        // Out of range values keep the plain message.
        for (input, fragment) in [
            (
                "0 0 * * 8L",
                "8 is out of range; the day-of-week field takes 0-7",
            ),
            ("0 0 * * 9#1", "9 is out of range"),
            ("0 0 * * FRIDAY#1", "`FRIDAY` is not a value"),
            ("0 0 * JULY *", "`JULY` is not a value"),
        ] {
            let err = parse_schedule(input).expect_err(input).to_string();
            assert!(
                err.contains(fragment),
                "{input:?}: {err:?} lacks {fragment:?}"
            );
        }
    }

    #[test]
    fn every_hint_says_what_the_token_means_and_where_it_is_allowed() {
        for (token, meaning, place) in [
            (CronToken::Last, "`L` means last", "in day-of-month"),
            (
                CronToken::Weekday,
                "nearest a day",
                "allowed only in day-of-month",
            ),
            (
                CronToken::Nth,
                "one occurrence of a weekday",
                "allowed only in day-of-week",
            ),
            (
                CronToken::Dollar,
                "last day of the month",
                "allowed only in day-of-month",
            ),
        ] {
            assert!(token.hint().contains(meaning), "{token:?}");
            assert!(token.hint().contains(place), "{token:?}");
            assert!(token.hint().contains(token.symbol()), "{token:?}");
        }
    }
}
