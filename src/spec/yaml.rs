//! A YAML document as a tree that remembers where each value stood in the file.
//!
//! serde-saphyr deserialises straight into types and stops at the first mismatch, with a
//! location but no field path. We parse each document into this span-aware tree first: it is
//! converted to JSON for typed deserialisation (which gives the field path), and the path is
//! then looked up here to give the line and column of the value at fault. Semantic checks that
//! run after deserialisation use the same lookup, so every error can point at its line.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::fmt;

/// A 1-based line and column in a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(location: serde_saphyr::Location) -> Option<Position> {
        let (line, column) = (location.line() as usize, location.column() as usize);
        (line > 0).then_some(Position { line, column })
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

/// A field path such as `spec.steps[1].name`, as shown in error messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.into()));
        next
    }
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }
    pub fn parse(dotted: &str) -> Self {
        let mut path = FieldPath::root();
        for part in dotted.split('.').filter(|p| !p.is_empty()) {
            match part.split_once('[') {
                Some((key, rest)) => {
                    if !key.is_empty() {
                        path = path.key(key);
                    }
                    for index in rest.split('[') {
                        if let Ok(i) = index.trim_end_matches(']').parse() {
                            path = path.index(i);
                        }
                    }
                }
                None => path = path.key(part),
            }
        }
        path
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for segment in &self.0 {
            match segment {
                PathSegment::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                PathSegment::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// A YAML value with the position of the value (for mappings, of their first key).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub position: Option<Position>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in file order, each key with its own position.
    Map(Vec<(String, Option<Position>, Node)>),
}

impl Node {
    /// The mapping entry `key`, if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _, _)| k == key).map(|e| &e.2),
            _ => None,
        }
    }

    /// The node at `path`, if it exists.
    pub fn at(&self, path: &FieldPath) -> Option<&Node> {
        let mut node = self;
        for segment in &path.0 {
            node = match (segment, &node.value) {
                (PathSegment::Key(k), NodeValue::Map(_)) => node.get(k)?,
                (PathSegment::Index(i), NodeValue::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        Some(node)
    }

    /// A scalar as the user wrote it (near enough): `30`, `true`, `text`; `None` for
    /// collections and null.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            NodeValue::Bool(b) => Some(b.to_string()),
            NodeValue::Int(i) => Some(i.to_string()),
            NodeValue::UInt(u) => Some(u.to_string()),
            NodeValue::Float(f) => Some(f.to_string()),
            NodeValue::Str(s) => Some(s.clone()),
            NodeValue::Null | NodeValue::Seq(_) | NodeValue::Map(_) => None,
        }
    }

    /// Where the key `key` of this mapping stands.
    pub fn key_position(&self, key: &str) -> Option<Position> {
        match &self.value {
            NodeValue::Map(entries) => entries.iter().find(|(k, _, _)| k == key)?.1,
            _ => None,
        }
    }

    /// The position of the value at `path`, or of the deepest ancestor that exists: an error
    /// about a missing field points at the mapping that lacks it.
    ///
    /// A value that starts on a later line than its key (a block mapping, a block list, a
    /// `|` scalar) is located at its key: `env:` is where the user reads "env is wrong".
    pub fn locate(&self, path: &FieldPath) -> Option<Position> {
        let mut node = self;
        let mut best = self.position;
        for segment in &path.0 {
            let next = match (segment, &node.value) {
                (PathSegment::Key(k), NodeValue::Map(entries)) => entries
                    .iter()
                    .find(|(key, _, _)| key == k)
                    .map(|(_, key_position, value)| (value, *key_position)),
                (PathSegment::Index(i), NodeValue::Seq(items)) => items.get(*i).map(|n| (n, None)),
                _ => None,
            };
            match next {
                Some((n, key_position)) => {
                    node = n;
                    best = match (key_position, n.position) {
                        (Some(key), Some(value)) if value.line > key.line => Some(key),
                        (key, value) => value.or(key).or(best),
                    };
                }
                None => break,
            }
        }
        best
    }

    /// Keys written twice in one mapping, anywhere in the tree: the path of each repeat, where
    /// it stands and where the first one stands. (Parsing keeps repeats so that they can be
    /// reported with their path, instead of failing the whole file or keeping one silently.)
    pub fn duplicate_keys(&self) -> Vec<(FieldPath, Option<Position>, Option<Position>)> {
        let mut found = Vec::new();
        self.collect_duplicates(&FieldPath::root(), &mut found);
        found
    }

    fn collect_duplicates(
        &self,
        path: &FieldPath,
        found: &mut Vec<(FieldPath, Option<Position>, Option<Position>)>,
    ) {
        match &self.value {
            NodeValue::Map(entries) => {
                for (i, (key, position, value)) in entries.iter().enumerate() {
                    if let Some((_, first, _)) = entries[..i].iter().find(|(k, _, _)| k == key) {
                        found.push((path.key(key.clone()), *position, *first));
                    }
                    value.collect_duplicates(&path.key(key.clone()), found);
                }
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.collect_duplicates(&path.index(i), found);
                }
            }
            _ => {}
        }
    }

    /// The position of the key `key` inside the mapping at `parent`: where an unknown field
    /// is written.
    pub fn locate_key(&self, parent: &FieldPath, key: &str) -> Option<Position> {
        let mut node = self;
        for segment in &parent.0 {
            node = match (segment, &node.value) {
                (PathSegment::Key(k), NodeValue::Map(_)) => node.get(k)?,
                (PathSegment::Index(i), NodeValue::Seq(items)) => items.get(*i)?,
                _ => return None,
            };
        }
        node.key_position(key)
    }

    /// Plain JSON, for typed deserialisation and for storing specs as jsonb.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::UInt(u) => Value::from(*u),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub message: String,
    pub position: Option<Position>,
}

/// Parses every document of a file (`---` separated; empty documents are skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    // Strict booleans: only true/false are booleans, so `suspend: yes` or a country code `no`
    // is never silently read as a boolean (the "Norway problem").
    // Repeated keys are passed through to the tree and reported by the document loader with
    // their field path (see `Node::duplicate_keys`).
    let options = serde_saphyr::options! {
        strict_booleans: true,
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    let docs: Vec<Spanned<NodeValueDe>> =
        serde_saphyr::from_str_multiple_with_options(text, options).map_err(|e| {
            let position = e.location().and_then(Position::of);
            SyntaxError {
                message: clean_syntax_message(&e.to_string()),
                position,
            }
        })?;
    Ok(docs.into_iter().map(into_node).collect())
}

/// serde-saphyr appends "at line X column Y" to some messages; we print the position ourselves.
fn clean_syntax_message(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    match first.rfind(" at line ") {
        Some(i) => first[..i].to_string(),
        None => first.to_string(),
    }
}

fn into_node(spanned: Spanned<NodeValueDe>) -> Node {
    Node {
        position: Position::of(spanned.referenced),
        value: spanned.value.0,
    }
}

/// Deserialisation target for one YAML value; children are wrapped in `Spanned` so each
/// remembers its own position.
struct NodeValueDe(NodeValue);

impl<'de> Deserialize<'de> for NodeValueDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor).map(NodeValueDe)
    }
}

/// Mapping keys: plain scalars only; a number or boolean key is kept as its text.
struct KeyDe(String);

impl<'de> Deserialize<'de> for KeyDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(NodeVisitor)? {
            NodeValue::Str(s) => Ok(KeyDe(s)),
            NodeValue::Int(i) => Ok(KeyDe(i.to_string())),
            NodeValue::UInt(u) => Ok(KeyDe(u.to_string())),
            NodeValue::Bool(b) => Ok(KeyDe(b.to_string())),
            NodeValue::Float(f) => Ok(KeyDe(f.to_string())),
            NodeValue::Null => Ok(KeyDe("null".into())),
            _ => Err(de::Error::custom("a mapping key must be a plain scalar")),
        }
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = NodeValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<NodeValue, E> {
        Ok(NodeValue::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<NodeValue, E> {
        Ok(NodeValue::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<NodeValue, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => NodeValue::Int(i),
            Err(_) => NodeValue::UInt(v),
        })
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<NodeValue, E> {
        i64::try_from(v)
            .map(NodeValue::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<NodeValue, E> {
        u64::try_from(v)
            .map(|u| self.visit_u64::<E>(u).unwrap_or(NodeValue::UInt(u)))
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<NodeValue, E> {
        Ok(NodeValue::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<NodeValue, E> {
        Ok(NodeValue::Str(v))
    }
    fn visit_unit<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_none<E>(self) -> Result<NodeValue, E> {
        Ok(NodeValue::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<NodeValue, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<NodeValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<NodeValueDe>>()? {
            items.push(into_node(item));
        }
        Ok(NodeValue::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<NodeValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<KeyDe>>()? {
            let value = map.next_value::<Spanned<NodeValueDe>>()?;
            entries.push((key.value.0, Position::of(key.referenced), into_node(value)));
        }
        Ok(NodeValue::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
