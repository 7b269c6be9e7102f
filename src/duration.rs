//! Durations as users write them in specs: `500ms`, `30s`, `15m`, `2h`, `7d` and their
//! concatenations (`1h30m`). Kept apart from `spec` because schedules (`@every 5m`) use it too.

use std::fmt;
use std::time::Duration;

/// Why a duration string was rejected; the text is shown to the user after the field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is blank.
    #[error("empty duration; write e.g. 30s, 15m, 1h30m")]
    Empty,
    /// Not numbers each followed by a unit (a bare `30` included); holds the input.
    #[error("`{0}` is not a duration: expected a number followed by a unit (ms, s, m, h, d), e.g. 30s or 1h30m")]
    Malformed(String),
    /// A unit other than `ms`, `s`, `m`, `h` and `d`.
    #[error("`{input}` has an unknown unit `{unit}`: use ms, s, m, h or d")]
    UnknownUnit {
        /// The whole duration as written.
        input: String,
        /// The unit that is not known.
        unit: String,
    },
    /// The total does not fit in a `Duration`; holds the input.
    #[error("`{0}` is too large")]
    Overflow(String),
}

/// Parses `500ms`, `30s`, `15m`, `2h`, `7d`, `1h30m`. Every number needs a unit: a bare `30`
/// is ambiguous (seconds? minutes?) and is rejected rather than guessed.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let s = input.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u128 = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(DurationError::Malformed(input.to_string()));
        }
        let number: u128 = s[start..i]
            .parse()
            .map_err(|_| DurationError::Overflow(input.to_string()))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let factor: u128 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(DurationError::Malformed(input.to_string())),
            other => {
                return Err(DurationError::UnknownUnit {
                    input: input.to_string(),
                    unit: other.to_string(),
                })
            }
        };
        total_ms = number
            .checked_mul(factor)
            .and_then(|v| total_ms.checked_add(v))
            .filter(|v| *v <= u128::from(u64::MAX))
            .ok_or_else(|| DurationError::Overflow(input.to_string()))?;
    }
    Ok(Duration::from_millis(total_ms as u64))
}

/// Formats a duration back into the shortest spec form (`90m` → `1h30m`), so plans and status
/// files show what a user would have written.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{}", ms / size, unit));
            ms %= size;
        }
    }
    out
}

/// A duration as it appears in a spec; serialises back to its canonical text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecDuration(pub Duration);

impl fmt::Display for SpecDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl serde::Serialize for SpecDuration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

impl<'de> serde::Deserialize<'de> for SpecDuration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_duration(&text)
            .map(SpecDuration)
            .map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for SpecDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(ms|s|m|h|d))+$",
            "description": "A duration: 500ms, 30s, 15m, 2h, 7d, or combinations such as 1h30m.",
            "examples": ["30s", "15m", "1h30m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_combinations() {
        let cases = [
            ("500ms", 500),
            ("30s", 30_000),
            ("15m", 900_000),
            ("2h", 7_200_000),
            ("7d", 604_800_000),
            ("1h30m", 5_400_000),
            ("1d2h3m4s5ms", 93_784_005),
            ("0s", 0),
            (" 10s ", 10_000),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    #[test]
    fn rejects_malformed_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("30"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1.5h"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("5 min"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("5min"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5w"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999d"),
            Err(DurationError::Overflow(_))
        ));
    }

    #[test]
    fn formats_canonically() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(86_400 * 7)), "7d");
    }
}
