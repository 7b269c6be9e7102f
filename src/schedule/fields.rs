//! One cron field: the grammar of a single field (numbers, names, `*`, ranges, steps, lists,
//! and the day fields' tokens), checked against the field's range and rewritten in the form
//! croner is given: numbers only (`MON-FRI` becomes `1-5`) and the day tokens in croner's own
//! spelling (`$` becomes `L`, `FRIL` becomes `5#L`). Kept apart from `cron`, which assembles
//! the fields into an expression, because this is where nearly every mistake in a cron
//! expression is caught and explained.
//!
//! The day tokens are croner's, and croner evaluates them; this module only decides which forms
//! reach it, so that each has one documented meaning and every other form gets an error that
//! says where the token belongs:
//! - day-of-month: `L` (or pg_cron's `$`) the last day, `nW` the weekday nearest day n (croner
//!   never leaves the month), `LW` the last weekday. Quartz's `L-n` and `L-nW` are rejected:
//!   croner has no such form.
//! - day-of-week: `dL` (croner's `d#L`) the last weekday d of the month, `d#n` the nth (1 to 5),
//!   `d` a weekday or, as croner allows, a range of them (`MON-FRI#1`). Weekdays stay Vixie's:
//!   0 and 7 are Sunday.
//!
//! Every form is a list item like any other (`1,15W,L`, `1#1,5L`).

use super::error::CronToken;
use super::ScheduleError;

/// Which items a field takes beyond the plain ones.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    DayOfMonth,
    DayOfWeek,
}

pub(super) struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// The largest value worth suggesting: day-of-week 7 is only an alias of Sunday.
    shown_max: u32,
    /// Three-letter names, the first standing for `min`.
    names: &'static [&'static str],
    kind: Kind,
}

pub(super) const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
    kind: Kind::Plain,
};
pub(super) const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
    kind: Kind::Plain,
};
pub(super) const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    shown_max: 23,
    names: &[],
    kind: Kind::Plain,
};
pub(super) const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    shown_max: 31,
    names: &[],
    kind: Kind::DayOfMonth,
};
pub(super) const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    shown_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    kind: Kind::Plain,
};
pub(super) const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    shown_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    kind: Kind::DayOfWeek,
};

/// One cron field after validation.
pub(super) struct Field {
    /// The form handed to croner: `MON-FRI` becomes `1-5`, `FRIL` `5#L`, `$` `L`.
    pub(super) numeric: String,
    /// Vixie decides both the day-field rule and the DST kind on whether the field's text
    /// starts with `*`, not on what it matches (`*/2` counts, `1-31/2` does not).
    pub(super) starred: bool,
}

impl FieldSpec {
    /// An error about this field as written (`raw`), for a reason that carries its own advice.
    fn fail(&self, raw: &str, reason: String) -> ScheduleError {
        ScheduleError::Field {
            field: self.name,
            value: raw.to_string(),
            reason,
        }
    }

    /// An error about one of the day tokens in this field; the hint comes with the token. The
    /// item is named too when the field is a list of several.
    fn misplaced(&self, raw: &str, item: &str, token: CronToken, problem: &str) -> ScheduleError {
        let problem = if item == raw {
            problem.to_string()
        } else {
            format!("in `{item}`, {problem}")
        };
        ScheduleError::Special {
            field: self.name,
            value: raw.to_string(),
            token,
            problem,
        }
    }
}

/// Any field, as written (`raw`), in the form croner is given.
pub(super) fn parse_field(spec: &FieldSpec, raw: &str) -> Result<Field, ScheduleError> {
    reject_question_mark(spec, raw)?;
    let items: Vec<&str> = raw.split(',').collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(spec.fail(
            raw,
            "a list has an empty item; separate values with single commas, e.g. `1,15`".into(),
        ));
    }
    let numeric = items
        .iter()
        .map(|item| match spec.kind {
            Kind::Plain => parse_item(spec, raw, item),
            Kind::DayOfMonth => dom_item(raw, item),
            Kind::DayOfWeek => dow_item(raw, item),
        })
        .collect::<Result<Vec<String>, _>>()?;
    // croner takes `*` only as a whole field and rejects it as a list item (`*,1-5`), so
    // there it is spelt as the field's whole range, which matches the same values.
    let numeric: Vec<String> = if numeric.len() > 1 {
        numeric
            .into_iter()
            .map(|item| match item.as_str() {
                "*" => format!("{}-{}", spec.min, spec.max),
                _ => item,
            })
            .collect()
    } else {
        numeric
    };
    if spec.kind == Kind::DayOfMonth {
        both_last_forms(raw, &numeric)?;
    }
    Ok(Field {
        numeric: numeric.join(","),
        starred: raw.starts_with('*'),
    })
}

/// `?` is Quartz's "no value", which croner reads as `*`; here it is an error that says so,
/// because a field copied from Quartz also numbers its weekdays from 1 = Sunday.
fn reject_question_mark(spec: &FieldSpec, raw: &str) -> Result<(), ScheduleError> {
    if raw.contains('?') {
        return Err(ScheduleError::Extension {
            field: spec.name,
            value: raw.to_string(),
            symbol: '?',
            hint: "write `*` instead, and note that day-of-week here counts 0 (or 7) = Sunday, 1 = Monday",
        });
    }
    Ok(())
}

/// croner 4.0 keeps `L` and `LW` as two switches of the whole field, and `LW` wins: in
/// `L,LW` the last day is silently lost. Rather than run on fewer days than written, the
/// combination is refused; the last day and the last weekday then need two jobs.
fn both_last_forms(raw: &str, items: &[String]) -> Result<(), ScheduleError> {
    if items.iter().any(|i| i == "L") && items.iter().any(|i| i == "LW") {
        return Err(DAY_OF_MONTH.misplaced(
            raw,
            raw,
            CronToken::Last,
            "`L` and `LW` cannot be combined in one field (croner, which evaluates schedules, then drops `L`); write two jobs, one with `L` and one with `LW`",
        ));
    }
    Ok(())
}

/// One plain list item of numbers or names: `*`, `5`, `1-5`, `*/15`, `1-31/2`, in numbers.
fn parse_item(spec: &FieldSpec, raw: &str, item: &str) -> Result<String, ScheduleError> {
    let (base, step) = match item.split_once('/') {
        Some((base, step)) => {
            let n = step
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0 && step.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    spec.fail(
                        raw,
                        format!("step `{step}` must be a whole number of 1 or more, e.g. `*/15`"),
                    )
                })?;
            (base, Some(n))
        }
        None => (item, None),
    };
    let text = if base == "*" {
        "*".to_string()
    } else if let Some((a, b)) = base.split_once('-') {
        let low = field_value(spec, raw, a, false)?;
        let high = field_value(spec, raw, b, true)?;
        if low > high {
            return Err(spec.fail(raw, format!(
                "range `{base}` runs backwards; ranges go from low to high, so split it in two: `{low}-{},{}-{high}`",
                spec.shown_max, spec.min
            )));
        }
        format!("{low}-{high}")
    } else {
        let value = field_value(spec, raw, base, false)?;
        if let Some(step) = step {
            return Err(spec.fail(
                raw,
                format!(
                    "a step needs a range: write `{value}-{}/{step}` to start at {value}, or `*/{step}`",
                    spec.shown_max
                ),
            ));
        }
        value.to_string()
    };
    Ok(match step {
        None | Some(1) => text,
        Some(n) => format!("{text}/{n}"),
    })
}

/// One day-of-month item: a plain one, or `L`, `$`, `LW`, `nW`, in croner's spelling.
fn dom_item(raw: &str, item: &str) -> Result<String, ScheduleError> {
    let upper = item.to_ascii_uppercase();
    let day_then_w = upper
        .strip_suffix('W')
        .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()));
    let fail = |token, problem: &str| DAY_OF_MONTH.misplaced(raw, item, token, problem);
    if upper == "L" || upper == "$" {
        // pg_cron's `$` is croner's `L`.
        Ok("L".into())
    } else if upper == "LW" {
        Ok(upper)
    } else if upper.starts_with("L-") {
        Err(fail(
            CronToken::Last,
            "`L-n` and `L-nW` (n days before the last day, Quartz) are not supported: croner, which evaluates schedules, has no such form; use `L` (the last day) or `LW` (the last weekday), or a fixed day such as `28`",
        ))
    } else if let Some(day) = day_then_w {
        let d = day.parse::<u32>().ok().filter(|d| (1..=31).contains(d));
        let d = d.ok_or_else(|| {
            let problem = format!("there is no day {day}; `W` follows a day from 1 to 31");
            fail(CronToken::Weekday, &problem)
        })?;
        Ok(format!("{d}W"))
    } else if let Some((token, problem)) = misused_in_dom(&upper) {
        Err(fail(token, &problem))
    } else {
        parse_item(&DAY_OF_MONTH, raw, item)
    }
}

/// What is wrong with a day-of-month item that uses a day token in a form it does not take.
fn misused_in_dom(upper: &str) -> Option<(CronToken, String)> {
    let found = if upper.contains('#') {
        (
            CronToken::Nth,
            "`#` is day-of-week syntax, not day-of-month".to_string(),
        )
    } else if upper.contains('$') {
        (
            CronToken::Dollar,
            "`$` takes nothing before or after it".to_string(),
        )
    } else if upper == "W" {
        (CronToken::Weekday, "`W` needs a day before it".to_string())
    } else if upper.contains('W') {
        let problem = if upper.ends_with('W') {
            "`W` follows one day, not a range or a step"
        } else {
            "nothing may follow `W`"
        };
        (CronToken::Weekday, problem.to_string())
    } else if upper.contains('L') {
        let problem = if let Some((low, _)) = upper.split_once("-L") {
            format!("a range cannot end at `L`; write `{low}-31`, since days a month does not have simply do not match")
        } else if upper.ends_with('L') {
            "a weekday's last occurrence (`5L`) is day-of-week syntax, not day-of-month".to_string()
        } else {
            "`L` stands alone or as `LW`".to_string()
        };
        (CronToken::Last, problem)
    } else {
        return None;
    };
    Some(found)
}

/// Which occurrence of a weekday a day-of-week item asks for.
enum Occurrence {
    Every,
    Nth(u32),
    Last,
}

/// One day-of-week item: a plain one, or `dL`, `d#L`, `d#n` (`d` a weekday or a range of them),
/// as croner's `d#L` and `d#n` with `d` in numbers.
fn dow_item(raw: &str, item: &str) -> Result<String, ScheduleError> {
    let upper = item.to_ascii_uppercase();
    let fail = |token, problem: &str| DAY_OF_WEEK.misplaced(raw, item, token, problem);
    if upper.replace("WED", "").contains('W') {
        return Err(fail(
            CronToken::Weekday,
            "`W` has no meaning in the day-of-week field",
        ));
    }
    if upper.contains('$') {
        return Err(fail(
            CronToken::Dollar,
            "`$` has no meaning in the day-of-week field",
        ));
    }
    let (base, occurrence) = match upper.split_once('#') {
        Some((base, n)) => (
            base,
            occurrence_after_hash(n).map_err(|p| fail(CronToken::Nth, &p))?,
        ),
        None => match upper.strip_suffix('L') {
            Some(base) => (base, Occurrence::Last),
            None => (upper.as_str(), Occurrence::Every),
        },
    };
    let (token, suffix) = match occurrence {
        Occurrence::Every => (CronToken::Last, String::new()),
        Occurrence::Last => (CronToken::Last, "#L".to_string()),
        Occurrence::Nth(n) => (CronToken::Nth, format!("#{n}")),
    };
    // No weekday name contains an `L`, so any left over is misplaced.
    if base.contains('L') || base.contains('#') {
        return Err(fail(token, "`L` or `#n` comes once, right after a weekday"));
    }
    if base.is_empty() {
        let problem = format!("`{}` needs a weekday before it", token.symbol());
        return Err(fail(token, &problem));
    }
    if !suffix.is_empty() && (base.starts_with('*') || base.contains('/')) {
        return Err(fail(
            token,
            "`L` and `#` follow a weekday or a range of them, not `*` or a step",
        ));
    }
    Ok(parse_item(&DAY_OF_WEEK, raw, base)? + &suffix)
}

/// The occurrence written after `#`: `L`, or 1 to 5; the error's problem otherwise.
fn occurrence_after_hash(n: &str) -> Result<Occurrence, String> {
    let number = n
        .parse::<u32>()
        .ok()
        .filter(|_| n.bytes().all(|b| b.is_ascii_digit()));
    match number {
        _ if n == "L" => Ok(Occurrence::Last),
        Some(n @ 1..=5) => Ok(Occurrence::Nth(n)),
        Some(n) if n > 5 => Err(format!(
            "a month has at most 5 of each weekday, so there is no occurrence {n}"
        )),
        _ => Err("`#` takes a number from 1 (the first) to 5".into()),
    }
}

fn field_value(
    spec: &FieldSpec,
    raw: &str,
    token: &str,
    range_end: bool,
) -> Result<u32, ScheduleError> {
    let allowed = if spec.names.is_empty() {
        format!("{}-{}", spec.min, spec.max)
    } else if spec.max == 7 {
        format!("0-7 (0 and 7 are Sunday) or {}", spec.names.join(", "))
    } else {
        format!("{}-{} or {}", spec.min, spec.max, spec.names.join(", "))
    };
    if token.is_empty() {
        return Err(spec.fail(
            raw,
            format!(
                "a value is missing; the {} field takes {allowed}",
                spec.name
            ),
        ));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return token
            .parse::<u32>()
            .ok()
            .filter(|v| (spec.min..=spec.max).contains(v))
            .ok_or_else(|| {
                spec.fail(
                    raw,
                    format!(
                        "{token} is out of range; the {} field takes {allowed}",
                        spec.name
                    ),
                )
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
    if let Some(day_token) = day_token(token) {
        let problem = format!(
            "`{}` has no meaning in the {} field",
            day_token.symbol(),
            spec.name
        );
        return Err(spec.misplaced(raw, raw, day_token, &problem));
    }
    Err(spec.fail(
        raw,
        format!(
            "`{token}` is not a value; the {} field takes {allowed}",
            spec.name
        ),
    ))
}

/// Which day token a value that is neither a number nor a name is a misplaced use of, if any:
/// reached only in fields (or positions) where none of them is allowed.
fn day_token(token: &str) -> Option<CronToken> {
    let upper = token.to_ascii_uppercase();
    // A number, or nothing, then the letter: `5L`, `L`, `15W`, `W`. Other words (`JULY`,
    // `MONDAY`) are not day tokens and get the plain "not a value" message.
    let number_then = |letter: char| {
        upper
            .strip_suffix(letter)
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
    };
    if upper.contains('#') {
        Some(CronToken::Nth)
    } else if upper.contains('$') {
        Some(CronToken::Dollar)
    } else if number_then('W') {
        Some(CronToken::Weekday)
    } else if number_then('L') || upper == "LW" {
        Some(CronToken::Last)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_reach_croner_in_numbers_and_its_own_spelling() {
        let numeric = |spec: &FieldSpec, raw: &str| parse_field(spec, raw).unwrap().numeric;
        assert_eq!(numeric(&MINUTE, "*/20"), "*/20");
        assert_eq!(numeric(&MINUTE, "*/1"), "*");
        assert_eq!(numeric(&DAY_OF_WEEK, "*,1-5"), "0-7,1-5");
        assert_eq!(numeric(&HOUR, "9-17/4"), "9-17/4");
        assert_eq!(numeric(&MONTH, "feb,Dec"), "2,12");
        assert_eq!(numeric(&DAY_OF_WEEK, "MON-FRI"), "1-5");
        assert_eq!(numeric(&DAY_OF_WEEK, "fri-sun"), "5-7");
        assert_eq!(numeric(&DAY_OF_MONTH, "1,15w,l"), "1,15W,L");
        assert_eq!(numeric(&DAY_OF_MONTH, "$"), "L");
        assert_eq!(numeric(&DAY_OF_MONTH, "lw,015W"), "LW,15W");
        assert_eq!(numeric(&DAY_OF_WEEK, "FRIL,5L,5#l"), "5#L,5#L,5#L");
        assert_eq!(numeric(&DAY_OF_WEEK, "mon#2,7#1"), "1#2,7#1");
        assert_eq!(numeric(&DAY_OF_WEEK, "MON-FRI#1,SAT-SUNL"), "1-5#1,6-7#L");
        assert!(parse_field(&MINUTE, "*/5").unwrap().starred);
        assert!(!parse_field(&MINUTE, "0-59/5").unwrap().starred);
    }
}
