//! One cron field: the grammar of a single field (numbers, names, `*`, ranges, steps, lists),
//! checked against the field's range and turned into the set of values it matches. Kept apart
//! from `cron`, which assembles the fields into an expression, because this is where nearly
//! every mistake in a cron expression is caught and explained. The day fields' own tokens
//! (`L`, `W`, `#`, `$`) are `days`'s; this module only recognises them where they do not belong,
//! to say where they do.

use super::error::CronToken;
use super::ScheduleError;

pub(super) struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    /// The largest value worth suggesting: day-of-week 7 is only an alias of Sunday.
    shown_max: u32,
    /// Three-letter names, the first standing for `min`.
    names: &'static [&'static str],
}

pub(super) const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
};
pub(super) const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    shown_max: 59,
    names: &[],
};
pub(super) const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    shown_max: 23,
    names: &[],
};
pub(super) const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    shown_max: 31,
    names: &[],
};
pub(super) const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    shown_max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
pub(super) const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    shown_max: 6,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// One plain cron field after validation.
pub(super) struct Field {
    /// Bit `v` set when value `v` matches.
    pub(super) bits: u64,
    /// Vixie decides both the day-field rule and the DST kind on whether the field's text
    /// starts with `*`, not on which values it matches.
    pub(super) starred: bool,
}

impl FieldSpec {
    /// An error about this field as written (`raw`), for a reason that carries its own advice.
    pub(super) fn fail(&self, raw: &str, reason: String) -> ScheduleError {
        ScheduleError::Field {
            field: self.name,
            value: raw.to_string(),
            reason,
        }
    }

    /// An error about one of the extended tokens in this field; the hint comes with the token.
    pub(super) fn misplaced(&self, raw: &str, token: CronToken, problem: String) -> ScheduleError {
        ScheduleError::Special {
            field: self.name,
            value: raw.to_string(),
            token,
            problem,
        }
    }
}

/// A field without day tokens: second, minute, hour or month.
pub(super) fn parse_field(spec: &FieldSpec, raw: &str) -> Result<Field, ScheduleError> {
    reject_question_mark(spec, raw)?;
    let mut bits = 0;
    for item in list_items(spec, raw)? {
        bits |= parse_item(spec, raw, item)?;
    }
    Ok(Field {
        bits,
        starred: raw.starts_with('*'),
    })
}

/// `?` is Quartz's "no value", which croner reads as `*`; here it is an error that says so,
/// because a field copied from Quartz also numbers its weekdays from 1 = Sunday.
pub(super) fn reject_question_mark(spec: &FieldSpec, raw: &str) -> Result<(), ScheduleError> {
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

/// The comma-separated items of a field; an empty one is an error.
pub(super) fn list_items<'a>(
    spec: &FieldSpec,
    raw: &'a str,
) -> Result<Vec<&'a str>, ScheduleError> {
    let items: Vec<&str> = raw.split(',').collect();
    if items.iter().any(|item| item.is_empty()) {
        return Err(spec.fail(
            raw,
            "a list has an empty item; separate values with single commas, e.g. `1,15`".into(),
        ));
    }
    Ok(items)
}

/// One list item of numbers or names: `*`, `5`, `1-5`, `*/15`, `1-31/2`, as the bits it sets.
pub(super) fn parse_item(spec: &FieldSpec, raw: &str, item: &str) -> Result<u64, ScheduleError> {
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
    let (low, high) = if base == "*" {
        (spec.min, spec.max)
    } else if let Some((a, b)) = base.split_once('-') {
        let low = field_value(spec, raw, a, false)?;
        let high = field_value(spec, raw, b, true)?;
        if low > high {
            return Err(spec.fail(raw, format!(
                "range `{base}` runs backwards; ranges go from low to high, so split it in two: `{low}-{},{}-{high}`",
                spec.shown_max, spec.min
            )));
        }
        (low, high)
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
        (value, value)
    };
    let step = step.unwrap_or(1);
    Ok((low..=high)
        .step_by(step as usize)
        .fold(0, |bits, v| bits | 1 << v))
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
    if let Some(token) = day_token(token) {
        return Err(spec.misplaced(
            raw,
            token,
            format!(
                "`{}` has no meaning in the {} field",
                token.symbol(),
                spec.name
            ),
        ));
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
    fn items_set_the_bits_they_name() {
        let bits = |spec: &FieldSpec, raw: &str| parse_field(spec, raw).unwrap().bits;
        assert_eq!(bits(&MINUTE, "*/20"), 1 | 1 << 20 | 1 << 40);
        assert_eq!(bits(&HOUR, "9-17/4"), 1 << 9 | 1 << 13 | 1 << 17);
        assert_eq!(bits(&MONTH, "feb,Dec"), 1 << 2 | 1 << 12);
        assert_eq!(bits(&SECOND, "0,59"), 1 | 1 << 59);
        assert!(parse_field(&MINUTE, "*/5").unwrap().starred);
        assert!(!parse_field(&MINUTE, "0-59/5").unwrap().starred);
    }
}
