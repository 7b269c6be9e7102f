//! Scalars resolved to their YAML 1.2 core type, as serde-saphyr resolves an untyped value:
//! tags (only the core ones and `!` are honoured), plain scalars by the core schema, and the
//! integer and float syntax behind both.

use super::error::SyntaxError;
use super::location::Position;
use super::node::NodeValue;
use serde_saphyr::granit_parser::{ScalarStyle, Tag};
use std::borrow::Cow;

/// What a tag asks for. Only the YAML core tags and the non-specific `!` are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TagKind {
    Str,
    NonSpecific,
    Null,
    Bool,
    Int,
    Float,
    Seq,
    Map,
    Merge,
    Unsupported,
}

pub(super) fn classify(tag: &Tag) -> TagKind {
    match tag.core_suffix() {
        Some("str") => return TagKind::Str,
        Some("null") => return TagKind::Null,
        Some("bool") => return TagKind::Bool,
        Some("int") => return TagKind::Int,
        Some("float") => return TagKind::Float,
        Some("seq") => return TagKind::Seq,
        Some("map") => return TagKind::Map,
        _ => {}
    }
    if tag
        .suffix_in_namespace("tag:yaml.org,2002:")
        .is_some_and(|s| s == "merge")
    {
        return TagKind::Merge;
    }
    match tag.suffix_in_namespace("!").as_deref() {
        Some("" | "!") => TagKind::NonSpecific,
        _ => TagKind::Unsupported,
    }
}

/// A tag we do not honour on this node: a core tag on the wrong kind of node (`!!int` on a
/// list), or any other tag (`!secret`, `!!binary`), which serde-saphyr mostly ignored.
fn unsupported_tag(tag: &Tag, on: &str, position: Option<Position>) -> SyntaxError {
    let message = match classify(tag) {
        TagKind::Unsupported => format!(
            "unsupported tag `{}`: only the YAML core tags !!str, !!int, !!float, !!bool, !!null, !!seq and !!map are understood",
            tag.original()
        ),
        TagKind::Merge => format!("tag `{}` belongs only on a merge key `<<`", tag.original()),
        _ => format!("tag `{}` cannot be used on {on}", tag.original()),
    };
    SyntaxError::new(message, position)
}

pub(super) fn check_collection_tag(
    tag: Option<&Tag>,
    kind: TagKind,
    position: Option<Position>,
) -> Result<(), SyntaxError> {
    match tag {
        None => Ok(()),
        Some(tag) => match classify(tag) {
            TagKind::NonSpecific => Ok(()),
            found if found == kind => Ok(()),
            _ if kind == TagKind::Seq => Err(unsupported_tag(tag, "a list", position)),
            _ => Err(unsupported_tag(tag, "a mapping", position)),
        },
    }
}

/// The value of a scalar as written, with its style and tag.
pub(super) fn resolve_scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    position: Option<Position>,
) -> Result<NodeValue, SyntaxError> {
    let Some(tag) = tag else {
        return if style == ScalarStyle::Plain {
            resolve_plain(text).map_err(|message| SyntaxError::new(message, position))
        } else {
            // Quoted and block scalars are always text.
            Ok(NodeValue::Str(text.into_owned()))
        };
    };
    let invalid = |what: &str| {
        SyntaxError::new(
            format!("`{}` is not a valid {what}", yaml_trim(&text)),
            position,
        )
    };
    match classify(tag) {
        TagKind::Str | TagKind::NonSpecific => Ok(NodeValue::Str(text.into_owned())),
        TagKind::Null => Ok(NodeValue::Null),
        TagKind::Bool => parse_core_bool(&text)
            .map(NodeValue::Bool)
            .ok_or_else(|| invalid("!!bool (true or false)")),
        TagKind::Int => {
            let value = if yaml_trim(&text).starts_with('-') {
                parse_i64(&text).map(NodeValue::Int)
            } else {
                parse_u64(&text).map(uint_value)
            };
            value.ok_or_else(|| invalid("!!int"))
        }
        TagKind::Float => match parse_float(&text) {
            Some(f) if f.is_finite() => Ok(NodeValue::Float(f)),
            Some(_) => Err(SyntaxError::new(non_finite(&text), position)),
            None => Err(invalid("!!float")),
        },
        TagKind::Seq | TagKind::Map | TagKind::Merge | TagKind::Unsupported => {
            Err(unsupported_tag(tag, "a scalar", position))
        }
    }
}

fn non_finite(text: &str) -> String {
    format!("non-finite float `{text}` is not supported (write it in quotes to mean the text)")
}

/// Resolves an untagged plain scalar by the YAML 1.2 core schema, as serde-saphyr does for an
/// untyped value with strict booleans:
///
/// - `null`, `Null`, `NULL`, `~` and nothing are null;
/// - `true`, `True`, `TRUE`, `false`, `False`, `FALSE` are booleans (`yes`, `on`... are text);
/// - integers in decimal (no leading zeros), `0x` hex, `0o` octal and `0b` binary, with an
///   optional sign and single underscores between digits: `1_000`, `-0x1F`; a negative one
///   must fit an i64, a positive one a u64;
/// - floats as Rust reads them (`1.5`, `.5`, `1e3`, also `007` and integers too large for 64
///   bits); `.inf`, `-.inf`, `.nan` and literals too large for an f64 are rejected, as
///   serde-saphyr rejects non-finite floats in untyped values;
/// - everything else is text.
pub(crate) fn resolve_plain(text: Cow<'_, str>) -> Result<NodeValue, String> {
    if matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL") {
        return Ok(NodeValue::Null);
    }
    if let Some(b) = parse_core_bool(&text) {
        return Ok(NodeValue::Bool(b));
    }
    let t = yaml_trim(&text);
    // Numbers start with a digit, a sign or a dot: most text is settled here.
    if t.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
        if t.starts_with('-') {
            if let Some(i) = parse_i64(t) {
                return Ok(NodeValue::Int(i));
            }
        } else if let Some(u) = parse_u64(t) {
            return Ok(uint_value(u));
        }
        match parse_float(t) {
            Some(f) if f.is_finite() => return Ok(NodeValue::Float(f)),
            Some(_) => return Err(non_finite(&text)),
            None => {}
        }
    }
    Ok(NodeValue::Str(text.into_owned()))
}

fn uint_value(u: u64) -> NodeValue {
    match i64::try_from(u) {
        Ok(i) => NodeValue::Int(i),
        Err(_) => NodeValue::UInt(u),
    }
}

/// ASCII padding that serde-saphyr ignores around numbers and booleans.
fn yaml_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

fn parse_core_bool(s: &str) -> Option<bool> {
    match yaml_trim(s) {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// The radix of an integer from its prefix, and its digits.
fn radix_and_digits(unsigned: &str) -> (u32, &str) {
    for (prefixes, radix) in [(["0x", "0X"], 16), (["0o", "0O"], 8), (["0b", "0B"], 2)] {
        for prefix in prefixes {
            if let Some(digits) = unsigned.strip_prefix(prefix) {
                return (radix, digits);
            }
        }
    }
    (10, unsigned)
}

/// Digits in `radix`, with single underscores allowed between digits; `None` on overflow.
fn parse_digits(digits: &str, radix: u32) -> Option<u128> {
    let bytes = digits.as_bytes();
    let mut value: u128 = 0;
    let mut seen = false;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'_' {
            let between =
                i > 0 && bytes[i - 1] != b'_' && bytes.get(i + 1).is_some_and(|&n| n != b'_');
            if !between {
                return None;
            }
            continue;
        }
        let digit = (b as char).to_digit(radix)?;
        value = value
            .checked_mul(u128::from(radix))?
            .checked_add(u128::from(digit))?;
        seen = true;
    }
    seen.then_some(value)
}

/// The magnitude of an integer written without its sign; decimal ones have no leading zeros.
fn parse_magnitude(unsigned: &str) -> Option<u128> {
    let (radix, digits) = radix_and_digits(unsigned);
    if radix == 10 && digits.starts_with('0') && digits != "0" {
        return None;
    }
    parse_digits(digits, radix)
}

fn parse_u64(s: &str) -> Option<u64> {
    let t = yaml_trim(s);
    if t.starts_with('-') {
        return None;
    }
    let magnitude = parse_magnitude(t.strip_prefix('+').unwrap_or(t))?;
    u64::try_from(magnitude).ok()
}

fn parse_i64(s: &str) -> Option<i64> {
    let t = yaml_trim(s);
    let (negative, unsigned) = match t.strip_prefix('+') {
        Some(rest) => (false, rest),
        None => match t.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, t),
        },
    };
    let magnitude = i128::try_from(parse_magnitude(unsigned)?).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// A float, or an infinity for a literal too large for an f64 (which the callers reject).
fn parse_float(s: &str) -> Option<f64> {
    let t = yaml_trim(s);
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    match unsigned {
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        ".inf" | ".Inf" | ".INF" if negative => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        _ => {}
    }
    // Rust also reads `inf`, `infinity` and `nan`: those stay text, so a non-finite result
    // counts only for a numeral that overflows (`1e999`).
    match t.parse::<f64>() {
        Ok(f) if f.is_finite() => Some(f),
        Ok(f) if f.is_infinite() && unsigned.starts_with(|c: char| c.is_ascii_digit()) => Some(f),
        _ => None,
    }
}
