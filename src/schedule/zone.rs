//! The `timeZone` field: an IANA name, read exactly as the tz database spells it, and the
//! suggestion offered when it is not one. A field of its own, validated on its own, so it shares
//! nothing with the schedule parsers but the error type.

use chrono_tz::Tz;

use super::ScheduleError;

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

#[cfg(test)]
mod tests {
    use super::*;

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
                    assert_eq!(got.as_deref(), suggestion, "{name:?}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        assert_eq!(
            parse_time_zone("Europe/Zurch").unwrap_err().to_string(),
            "unknown time zone `Europe/Zurch` (did you mean `Europe/Zurich`?); use an IANA name such as `Europe/Zurich`, `America/New_York` or `UTC`"
        );
    }
}
