//! One cron field: the grammar of a single field (numbers, names, `*`, ranges, steps, lists),
//! checked against the field's range and rewritten in the numeric form croner is given. Kept
//! apart from `cron`, which assembles the fields into an expression, because this is where
//! nearly every mistake in a cron expression is caught and explained.

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

/// One cron field after validation.
pub(super) struct Field {
    /// Numeric form handed to croner (`MON-FRI` becomes `1-5`).
    pub(super) numeric: String,
    /// Bit `v` set when value `v` matches.
    pub(super) bits: u64,
    /// Vixie decides both the day-field rule and the DST kind on whether the field's text
    /// starts with `*`, not on which values it matches.
    pub(super) starred: bool,
}

pub(super) fn parse_field(spec: &FieldSpec, raw: &str) -> Result<Field, ScheduleError> {
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
