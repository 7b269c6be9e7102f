//! The span-aware tree of one document and the lookups on it: a field path to its node, to
//! the line and column to report, to the key where an unknown field is written; the keys
//! written twice; and the plain JSON that typed deserialisation reads.

use super::location::{FieldPath, PathSegment, Position};

/// A YAML value with the position of the value (for mappings, of their first key).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// The value, with its children.
    pub value: NodeValue,
    /// Where the value starts; `None` when the parser gave no location.
    pub position: Option<Position>,
}

/// The value of a [`Node`], with scalars already resolved to their YAML 1.2 core type.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// `null` (in any core spelling), `~` or nothing.
    Null,
    /// `true` or `false` (strict: no `yes`/`no`).
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A positive integer too large for `i64`.
    UInt(u64),
    /// A finite float.
    Float(f64),
    /// A string, quoted or plain.
    Str(String),
    /// A sequence, in file order.
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
        self.collect_duplicates(&mut FieldPath::root(), &mut found);
        found
    }

    /// Walks the tree with one path that grows and shrinks as it goes: paths are cloned only
    /// for the repeats found (this runs on every document loaded).
    fn collect_duplicates(
        &self,
        path: &mut FieldPath,
        found: &mut Vec<(FieldPath, Option<Position>, Option<Position>)>,
    ) {
        match &self.value {
            NodeValue::Map(entries) => {
                for (i, (key, position, value)) in entries.iter().enumerate() {
                    let first = entries[..i].iter().find(|(k, _, _)| k == key);
                    let nested = matches!(value.value, NodeValue::Map(_) | NodeValue::Seq(_));
                    if first.is_none() && !nested {
                        continue;
                    }
                    path.0.push(PathSegment::Key(key.clone()));
                    if let Some((_, first, _)) = first {
                        found.push((path.clone(), *position, *first));
                    }
                    value.collect_duplicates(path, found);
                    path.0.pop();
                }
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    if matches!(item.value, NodeValue::Map(_) | NodeValue::Seq(_)) {
                        path.0.push(PathSegment::Index(i));
                        item.collect_duplicates(path, found);
                        path.0.pop();
                    }
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
            NodeValue::Float(f) => {
                serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
            }
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
