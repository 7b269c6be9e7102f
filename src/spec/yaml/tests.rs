//! Tests of the YAML tree: positions and paths, the core-schema resolution of scalars, tags,
//! aliases, merge keys and the limits.

use super::scalar::resolve_plain;
use super::*;
use std::borrow::Cow;

#[test]
fn positions_of_nested_values_and_keys() {
    let text = "a: 1\nb:\n  c: [x, y]\n  d: hello\n---\n- 1\n- two\n";
    let docs = parse_documents(text).unwrap();
    assert_eq!(docs.len(), 2);
    let doc = &docs[0];
    assert_eq!(doc.locate(&FieldPath::parse("b.d")).unwrap().line, 4);
    assert_eq!(doc.locate(&FieldPath::parse("b.d")).unwrap().column, 6);
    assert_eq!(doc.locate(&FieldPath::parse("b.c[1]")).unwrap().line, 3);
    assert_eq!(doc.locate_key(&FieldPath::parse("b"), "d").unwrap().line, 4);
    // A missing field points at the deepest existing ancestor (a block mapping: its key).
    assert_eq!(doc.locate(&FieldPath::parse("b.zzz")).unwrap().line, 2);
    assert_eq!(docs[1].locate(&FieldPath::parse("[1]")).unwrap().line, 7);
}

#[test]
fn strict_booleans_keep_yes_as_text() {
    let docs = parse_documents("a: yes\nb: true\nc: no\n").unwrap();
    let json = docs[0].to_json();
    assert_eq!(json["a"], "yes");
    assert_eq!(json["b"], true);
    assert_eq!(json["c"], "no");
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse_documents("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
    assert!(err.position.is_some(), "{err:?}");
}

#[test]
fn duplicate_keys_are_kept_and_found_with_their_path() {
    let docs = parse_documents("a: 1\nb:\n  - c: 1\n    c: 2\na: 2\n").unwrap();
    let dups = docs[0].duplicate_keys();
    let shown: Vec<(String, usize, usize)> = dups
        .iter()
        .map(|(p, at, first)| (p.to_string(), at.unwrap().line, first.unwrap().line))
        .collect();
    assert_eq!(
        shown,
        vec![("b[0].c".to_string(), 4, 3), ("a".to_string(), 5, 1)]
    );
}

#[test]
fn values_on_later_lines_are_located_at_their_key() {
    let docs = parse_documents("a:\n  b: 1\nc: |\n  text\nd: [1]\n").unwrap();
    let doc = &docs[0];
    assert_eq!(doc.locate(&FieldPath::parse("a")).unwrap().line, 1);
    assert_eq!(doc.locate(&FieldPath::parse("a.b")).unwrap().line, 2);
    assert_eq!(doc.locate(&FieldPath::parse("c")).unwrap().line, 3);
    assert_eq!(doc.locate(&FieldPath::parse("d")).unwrap().column, 4);
}

#[test]
fn field_paths_render_and_parse() {
    let p = FieldPath::root()
        .key("spec")
        .key("steps")
        .index(1)
        .key("name");
    assert_eq!(p.to_string(), "spec.steps[1].name");
    assert_eq!(FieldPath::parse("spec.steps[1].name"), p);
}

#[test]
fn empty_documents_are_skipped() {
    assert!(parse_documents("").unwrap().is_empty());
    assert_eq!(parse_documents("---\n---\na: 1\n").unwrap().len(), 1);
}

/// The one document of `text`.
fn doc(text: &str) -> Node {
    let mut docs = parse_documents(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
    assert_eq!(docs.len(), 1, "{text:?}");
    docs.remove(0)
}

/// The value of `k` in `k: <scalar>`.
fn value(scalar: &str) -> NodeValue {
    doc(&format!("k: {scalar}\n"))
        .get("k")
        .unwrap()
        .value
        .clone()
}

fn error(text: &str) -> SyntaxError {
    parse_documents(text).expect_err(text)
}

#[test]
fn plain_scalars_resolve_by_the_core_schema() {
    // Over 80 lines because it is one flat table of cases, each checked the same way: split, it
    // would only be harder to scan for a missing case.
    use NodeValue::*;
    let cases = [
        // Null: only these spellings, and nothing at all.
        ("null", Null),
        ("Null", Null),
        ("NULL", Null),
        ("~", Null),
        ("", Null),
        ("nUll", Str("nUll".into())),
        // Booleans: the YAML 1.2 spellings only.
        ("true", Bool(true)),
        ("True", Bool(true)),
        ("TRUE", Bool(true)),
        ("false", Bool(false)),
        ("FALSE", Bool(false)),
        ("tRue", Str("tRue".into())),
        ("yes", Str("yes".into())),
        ("on", Str("on".into())),
        ("n", Str("n".into())),
        // Integers.
        ("0", Int(0)),
        ("-0", Int(0)),
        ("+12", Int(12)),
        ("-12", Int(-12)),
        ("1_000", Int(1000)),
        ("0x1F", Int(31)),
        ("0X1f", Int(31)),
        ("-0x1F", Int(-31)),
        ("0o17", Int(15)),
        ("0b101", Int(5)),
        ("9223372036854775807", Int(i64::MAX)),
        ("-9223372036854775808", Int(i64::MIN)),
        ("9223372036854775808", UInt(9_223_372_036_854_775_808)),
        ("18446744073709551615", UInt(u64::MAX)),
        ("0xFFFFFFFFFFFFFFFF", UInt(u64::MAX)),
        // Beyond 64 bits, or with a leading zero: a float, as serde-saphyr reads them.
        ("18446744073709551616", Float(18_446_744_073_709_551_616.0)),
        ("-9223372036854775809", Float(-9_223_372_036_854_775_809.0)),
        ("007", Float(7.0)),
        ("-007", Float(-7.0)),
        // Not integers.
        ("1__000", Str("1__000".into())),
        ("_1", Str("_1".into())),
        ("1_", Str("1_".into())),
        ("0x", Str("0x".into())),
        ("0o8", Str("0o8".into())),
        ("0b102", Str("0b102".into())),
        ("0x10000000000000000", Str("0x10000000000000000".into())),
        // Floats.
        ("1.5", Float(1.5)),
        ("-1.5", Float(-1.5)),
        ("+1.5", Float(1.5)),
        (".5", Float(0.5)),
        ("5.", Float(5.0)),
        ("1e3", Float(1000.0)),
        ("1.5e-3", Float(0.0015)),
        ("1e-999", Float(0.0)),
        // Text that only looks like a number.
        ("inf", Str("inf".into())),
        ("nan", Str("nan".into())),
        ("infinity", Str("infinity".into())),
        ("1_000.5", Str("1_000.5".into())),
        ("12:30", Str("12:30".into())),
        ("1.2.3", Str("1.2.3".into())),
        ("0.1.2", Str("0.1.2".into())),
        ("1e", Str("1e".into())),
        ("-", Str("-".into())),
        (".", Str(".".into())),
        ("30s", Str("30s".into())),
        ("Europe/Zurich", Str("Europe/Zurich".into())),
    ];
    for (text, expected) in cases {
        assert_eq!(
            resolve_plain(Cow::Borrowed(text)),
            Ok(expected.clone()),
            "{text:?}"
        );
        if !text.is_empty() && text != "-" {
            assert_eq!(value(text), expected, "k: {text}");
        }
    }
}

#[test]
fn non_finite_floats_are_rejected() {
    for text in [
        ".inf", "-.inf", "+.inf", ".Inf", ".INF", ".nan", ".NaN", "-.nan", "1e999", "-1e999",
    ] {
        assert!(resolve_plain(Cow::Borrowed(text)).is_err(), "{text:?}");
        let e = error(&format!("a: 1\nk: {text}\n"));
        assert!(e.message.contains("non-finite float"), "{e:?}");
        assert_eq!(e.position, Some(Position { line: 2, column: 4 }));
    }
    // In quotes they are text.
    assert_eq!(value("\".inf\""), NodeValue::Str(".inf".into()));
}

#[test]
fn quoted_and_block_scalars_are_always_text() {
    assert_eq!(value("\"5\""), NodeValue::Str("5".into()));
    assert_eq!(value("'true'"), NodeValue::Str("true".into()));
    assert_eq!(value("\"null\""), NodeValue::Str("null".into()));
    assert_eq!(value("''"), NodeValue::Str(String::new()));
    assert_eq!(value("|\n  5\n"), NodeValue::Str("5\n".into()));
    assert_eq!(value(">-\n  1.5\n"), NodeValue::Str("1.5".into()));
}

#[test]
fn core_tags_are_honoured_and_other_tags_rejected() {
    assert_eq!(value("!!str 5"), NodeValue::Str("5".into()));
    assert_eq!(value("!!str null"), NodeValue::Str("null".into()));
    assert_eq!(value("! true"), NodeValue::Str("true".into()));
    assert_eq!(value("!!int \"12\""), NodeValue::Int(12));
    assert_eq!(value("!!int -0x10"), NodeValue::Int(-16));
    assert_eq!(value("!!float 5"), NodeValue::Float(5.0));
    assert_eq!(value("!!bool \"false\""), NodeValue::Bool(false));
    assert_eq!(value("!!null whatever"), NodeValue::Null);
    assert_eq!(
        value("!!map {a: 1}"),
        NodeValue::Map(vec![(
            "a".into(),
            Some(Position {
                line: 1,
                column: 11
            }),
            Node {
                value: NodeValue::Int(1),
                position: Some(Position {
                    line: 1,
                    column: 14
                })
            }
        )])
    );
    assert!(matches!(value("!!seq [1]"), NodeValue::Seq(_)));

    let e = error("a: 1\nk: !!int 1.5\n");
    assert_eq!(e.message, "`1.5` is not a valid !!int");
    assert_eq!(
        e.position,
        Some(Position {
            line: 2,
            column: 10
        })
    );
    assert!(error("k: !!bool yes").message.contains("!!bool"));
    assert!(error("k: !!float abc").message.contains("!!float"));
    assert_eq!(
        error("k: !!seq x").message,
        "tag `!!seq` cannot be used on a scalar"
    );
    assert_eq!(
        error("k: !!str [x]").message,
        "tag `!!str` cannot be used on a list"
    );
    let e = error("a: 1\nk: !secret x\n");
    assert!(e.message.starts_with("unsupported tag `!secret`"), "{e:?}");
    assert_eq!(
        e.position,
        Some(Position {
            line: 2,
            column: 12
        })
    );
    assert!(error("k: !!binary aGk=")
        .message
        .starts_with("unsupported tag `!!binary`"));
    assert!(error("k: !foo {a: 1}")
        .message
        .starts_with("unsupported tag `!foo`"));
}

#[test]
fn keys_are_text() {
    let d = doc("1: a\n2.5: b\ntrue: c\n~: d\n0x10: e\n\"q\": f\n");
    let NodeValue::Map(entries) = &d.value else {
        panic!("{d:?}")
    };
    let keys: Vec<&str> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, ["1", "2.5", "true", "null", "16", "q"]);
    let e = error("a: 1\n[x, y]: v\n");
    assert_eq!(e.message, "a mapping key must be a plain scalar");
    assert_eq!(e.position, Some(Position { line: 2, column: 1 }));
}

#[test]
fn aliases_copy_their_anchor_and_stand_where_they_are() {
    let d = doc("a: &x {b: [1, two]}\nc: *x\nd: &s text\ne: *s\n");
    assert_eq!(d.get("c").unwrap().to_json(), d.get("a").unwrap().to_json());
    assert_eq!(d.get("e").unwrap().value, NodeValue::Str("text".into()));
    // Errors in a copy point at the alias.
    let at_alias = Some(Position { line: 2, column: 4 });
    assert_eq!(d.locate(&FieldPath::parse("c.b[1]")), at_alias);
    assert_eq!(d.locate_key(&FieldPath::parse("c"), "b"), at_alias);
    assert_eq!(
        d.locate(&FieldPath::parse("a.b[1]")),
        Some(Position {
            line: 1,
            column: 15
        })
    );

    let e = error("a: &x [1, *x]\n");
    assert!(e.message.starts_with("recursive alias"), "{e:?}");
    assert_eq!(
        e.position,
        Some(Position {
            line: 1,
            column: 11
        })
    );
    let e = error("a: 1\nb: *nope\n");
    assert_eq!(e.message, "alias references unknown anchor");
    assert_eq!(e.position.map(|p| p.line), Some(2));
    // Anchors do not reach into the next document.
    assert!(parse_documents("a: &x 1\n---\nb: *x\n").is_err());
}

#[test]
fn alias_expansion_is_limited() {
    // "Billion laughs": nine levels of ten aliases each would be 10^9 values.
    let mut text = String::from("l0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    let e = error(&text);
    assert!(
        e.message
            .starts_with("aliases expand to more than 250000 values"),
        "{e:?}"
    );
    // Up to level 4 that is 123,000 values; the second copy of level 4 in level 5 (line 6)
    // goes past 250,000.
    assert_eq!(
        e.position,
        Some(Position {
            line: 6,
            column: 15
        })
    );

    // The same with few, long strings: the text is limited too.
    let mut text = format!("s0: &s0 \"{}\"\n", "x".repeat(1 << 20));
    for i in 1..4 {
        let refs = vec![format!("*s{}", i - 1); 10].join(", ");
        text.push_str(&format!("s{i}: &s{i} [{refs}]\n"));
    }
    let e = error(&text);
    assert!(
        e.message
            .starts_with("aliases expand to more than 64 MiB of text"),
        "{e:?}"
    );

    // Below the limits aliases are fine.
    let d = doc("a: &a [1, 2, 3]\nb: [*a, *a, *a]\n");
    assert_eq!(
        d.get("b").unwrap().to_json().to_string(),
        "[[1,2,3],[1,2,3],[1,2,3]]"
    );
}

#[test]
fn nesting_is_limited() {
    let ok = format!(
        "a: {}{}\n",
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    assert!(parse_documents(&ok).is_ok());
    let deep = format!("a: {}{}\n", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    let e = error(&deep);
    assert_eq!(e.message, "lists and mappings nested more than 64 deep");
    assert_eq!(
        e.position,
        Some(Position {
            line: 1,
            column: 67
        })
    );
    // An alias counts with the depth of what it copies.
    let via_alias = format!(
        "a: &x {}{}\nb: {}*x{}\n",
        "[".repeat(40),
        "]".repeat(40),
        "[".repeat(30),
        "]".repeat(30)
    );
    assert!(error(&via_alias).message.contains("nested more than 64"));
}

#[test]
fn merge_keys_bring_in_entries_that_are_not_written() {
    let text = "\
base: &base {retries: 3, timeout: 30s, x: 0}
more: &more {retries: 9, extra: 1}
job:
  <<: [*base, *more]
  timeout: 1m
  <<: {x: 5, y: 6}
";
    let d = doc(text);
    let job = d.get("job").unwrap();
    assert_eq!(
        job.to_json().to_string(),
        r#"{"extra":1,"retries":3,"timeout":"1m","x":0,"y":6}"#
    );
    // Written keys first, then merged ones in order.
    let NodeValue::Map(entries) = &job.value else {
        panic!()
    };
    let keys: Vec<&str> = entries.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(keys, ["timeout", "retries", "x", "extra", "y"]);
    // Merged through an alias: located at the alias; written inline: where it is written.
    assert_eq!(
        job.locate(&FieldPath::parse("retries")),
        Some(Position { line: 4, column: 8 })
    );
    assert_eq!(
        job.locate(&FieldPath::parse("y")),
        Some(Position {
            line: 6,
            column: 17
        })
    );
    // A merged key is not a repeat of a written one.
    assert!(d.duplicate_keys().is_empty());

    assert_eq!(
        doc("m:\n  <<: ~\n  a: 1\n")
            .get("m")
            .unwrap()
            .to_json()
            .to_string(),
        r#"{"a":1}"#
    );
    assert_eq!(
        doc("m:\n  !!merge <<: {a: 1}\n")
            .get("m")
            .unwrap()
            .to_json()
            .to_string(),
        r#"{"a":1}"#
    );
    // A quoted "<<" is an ordinary key.
    assert_eq!(
        doc("m: {\"<<\": {a: 1}}\n")
            .get("m")
            .unwrap()
            .to_json()
            .to_string(),
        r#"{"<<":{"a":1}}"#
    );
    let e = error("m:\n  <<: 5\n");
    assert_eq!(
        e.message,
        "YAML merge value must be mapping or sequence of mappings"
    );
    assert_eq!(e.position, Some(Position { line: 2, column: 7 }));
}

#[test]
fn documents_that_are_null_are_skipped() {
    let docs = parse_documents("~\n---\na: 1\n---\nnull\n---\n!!null x\n---\n\"\"\n").unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].value, NodeValue::Str(String::new()));
}

#[test]
fn syntax_errors_are_the_parser_s() {
    let e = error("a: 1\nb: [1, 2\nc: 3\n");
    assert!(!e.message.contains(" at line "), "{e:?}");
    let e = error("a:\n  b: 1\n   c: 2\n");
    assert_eq!(e.message, "mapping values are not allowed in this context");
    assert_eq!(e.position, Some(Position { line: 3, column: 5 }));
}
