//! A YAML document as a tree that remembers where each value stood in the file.
//!
//! serde-saphyr deserialises straight into types and stops at the first mismatch, with a
//! location but no field path. We parse each document into this span-aware tree first: it is
//! converted to JSON for typed deserialisation (which gives the field path), and the path is
//! then looked up here to give the line and column of the value at fault. Semantic checks that
//! run after deserialisation use the same lookup, so every error can point at its line.
//!
//! The tree is built straight from the event stream of serde-saphyr's parser (granit-parser),
//! without going through serde: deserialising into a `Spanned` wrapper on every node took
//! nearly three times as long as the parse itself. Scalars are resolved here as serde-saphyr
//! resolves them into an untyped value with the options we used to give it (YAML 1.2 core
//! schema, strict booleans, repeated keys kept, merge keys expanded, non-finite floats
//! rejected; see `resolve_plain`), and aliases are copied, within limits ([`MAX_NODES`]).

use serde_saphyr::granit_parser::{
    Event, Marker, Options as ParserOptions, Parser, ScalarStyle, ScanError, Span, Tag,
};
use std::borrow::Cow;
use std::fmt;

/// A 1-based line and column in a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position {
    /// The line, counted from 1.
    pub line: usize,
    /// The column, counted from 1.
    pub column: usize,
}

impl Position {
    /// granit-parser counts lines from 1 and columns from 0.
    fn of(marker: &Marker) -> Option<Position> {
        let line = marker.line();
        (line > 0).then_some(Position {
            line,
            column: marker.col() + 1,
        })
    }
}

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    /// A mapping key, shown as `.key`.
    Key(String),
    /// A 0-based sequence index, shown as `[i]`.
    Index(usize),
}

/// A field path such as `spec.steps[1].name`, as shown in error messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(pub Vec<PathSegment>);

impl FieldPath {
    /// The empty path: the document itself.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }
    /// This path extended by the mapping key `key`.
    pub fn key(&self, key: impl Into<String>) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Key(key.into()));
        next
    }
    /// This path extended by the 0-based sequence index `index`.
    pub fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(PathSegment::Index(index));
        next
    }
    /// Reads the form `Display` writes (`spec.steps[1].name`); an index that is not a number
    /// is dropped rather than reported.
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
    /// What is wrong, without the position.
    pub message: String,
    /// Where the parser stopped; `None` when it gave no location.
    pub position: Option<Position>,
}

impl SyntaxError {
    fn new(message: impl Into<String>, position: Option<Position>) -> Self {
        SyntaxError {
            message: message.into(),
            position,
        }
    }

    fn scan(error: ScanError) -> Self {
        let message = match error.kind() {
            serde_saphyr::granit_parser::ErrorKind::UnknownAnchor => {
                "alias references unknown anchor".to_string()
            }
            _ => error.info().to_string(),
        };
        SyntaxError::new(message, Position::of(error.marker()))
    }
}

/// Collections nested deeper than this are rejected (as serde-saphyr's default budget does):
/// the tree is walked recursively.
pub const MAX_DEPTH: usize = 64;
/// At most this many values (scalars and collections) per file, each alias counting as a copy
/// of what it refers to: an "alias bomb" of a few lines must not expand into gigabytes.
pub const MAX_NODES: usize = 250_000;
/// At most this much scalar text per file, aliases counting as copies (as for [`MAX_NODES`]).
pub const MAX_SCALAR_BYTES: usize = 64 * 1024 * 1024;

/// Parses every document of a file (`---` separated; empty documents are skipped).
pub fn parse_documents(text: &str) -> Result<Vec<Node>, SyntaxError> {
    let mut options = ParserOptions::default();
    options.set_emit_comments(false);
    let mut builder = Builder::default();
    for item in Parser::new_from_str_with_options(text, options) {
        let (event, span) = item.map_err(SyntaxError::scan)?;
        builder.event(event, &span)?;
    }
    Ok(builder.documents)
}

type Entry = (String, Option<Position>, Node);

/// Builds the trees of a file's documents from parser events.
#[derive(Default)]
struct Builder {
    documents: Vec<Node>,
    /// Collections still open, innermost last.
    stack: Vec<Frame>,
    /// Anchored nodes of the current document by anchor id; `None` while the anchored
    /// collection is still open (an alias to it then would be recursive).
    anchors: Vec<Option<Anchored>>,
    /// Values and scalar bytes so far, alias copies included (see [`MAX_NODES`]).
    nodes: usize,
    scalar_bytes: usize,
}

struct Frame {
    position: Option<Position>,
    anchor: usize,
    kind: FrameKind,
}

enum FrameKind {
    Seq(Vec<Node>),
    Map {
        entries: Vec<Entry>,
        key: Option<PendingKey>,
        /// Entries brought in by merge keys (`<<`), in order; added when the mapping ends.
        merges: Vec<Entry>,
    },
}

enum PendingKey {
    Key(String, Option<Position>),
    Merge,
}

/// An anchored node, with what copying it costs.
struct Anchored {
    node: Node,
    nodes: usize,
    scalar_bytes: usize,
    /// Nesting depth in collections (0 for a scalar).
    depth: usize,
    /// A plain `<<`: an alias to it is a merge key too.
    merge_key: bool,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, span: &Span) -> Result<(), SyntaxError> {
        let position = Position::of(&span.start);
        match event {
            Event::Scalar(value, style, anchor, tag) => {
                self.count(1, value.len(), position, false)?;
                let merge_key = value == "<<"
                    && match tag.as_deref() {
                        None => style == ScalarStyle::Plain,
                        Some(tag) => classify(tag) == TagKind::Merge,
                    };
                let value = if merge_key {
                    NodeValue::Str(value.into_owned())
                } else {
                    resolve_scalar(value, style, tag.as_deref(), position)?
                };
                self.complete(Node { value, position }, anchor, merge_key)
            }
            Event::SequenceStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), TagKind::Seq, position)?;
                self.open(position, anchor, FrameKind::Seq(Vec::new()))
            }
            Event::MappingStart(_, anchor, tag) => {
                check_collection_tag(tag.as_deref(), TagKind::Map, position)?;
                let kind = FrameKind::Map {
                    entries: Vec::new(),
                    key: None,
                    merges: Vec::new(),
                };
                self.open(position, anchor, kind)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(frame) = self.stack.pop() else {
                    return Err(SyntaxError::new(
                        "list or mapping end with no start",
                        position,
                    ));
                };
                let value = match frame.kind {
                    FrameKind::Seq(items) => NodeValue::Seq(items),
                    FrameKind::Map {
                        mut entries,
                        merges,
                        ..
                    } => {
                        // Keys written in the mapping win over merged ones, and an earlier
                        // merge over a later one.
                        for entry in merges {
                            if !entries.iter().any(|(k, _, _)| *k == entry.0) {
                                entries.push(entry);
                            }
                        }
                        NodeValue::Map(entries)
                    }
                };
                let node = Node {
                    value,
                    position: frame.position,
                };
                self.complete(node, frame.anchor, false)
            }
            Event::Alias(id) => self.alias(id, position),
            Event::DocumentStart(..) => {
                self.anchors.clear();
                Ok(())
            }
            // Stream and document ends need nothing; comments and anchor names are not asked for.
            _ => Ok(()),
        }
    }

    fn count(
        &mut self,
        nodes: usize,
        scalar_bytes: usize,
        position: Option<Position>,
        alias: bool,
    ) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(nodes);
        self.scalar_bytes = self.scalar_bytes.saturating_add(scalar_bytes);
        let too_much = if self.nodes > MAX_NODES {
            format!("more than {MAX_NODES} values in one file")
        } else if self.scalar_bytes > MAX_SCALAR_BYTES {
            format!(
                "more than {} MiB of text in one file",
                MAX_SCALAR_BYTES >> 20
            )
        } else {
            return Ok(());
        };
        let message = if alias {
            format!("aliases expand to {too_much} (each alias is a copy of what it refers to)")
        } else {
            too_much
        };
        Err(SyntaxError::new(message, position))
    }

    fn open(
        &mut self,
        position: Option<Position>,
        anchor: usize,
        kind: FrameKind,
    ) -> Result<(), SyntaxError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(too_deep(position));
        }
        self.count(1, 0, position, false)?;
        if anchor != 0 {
            // Registered as open: an alias to it from inside would be recursive.
            self.anchor_slot(anchor);
        }
        self.stack.push(Frame {
            position,
            anchor,
            kind,
        });
        Ok(())
    }

    fn anchor_slot(&mut self, anchor: usize) -> &mut Option<Anchored> {
        if self.anchors.len() <= anchor {
            self.anchors.resize_with(anchor + 1, || None);
        }
        &mut self.anchors[anchor]
    }

    fn alias(&mut self, id: usize, position: Option<Position>) -> Result<(), SyntaxError> {
        // The parser rejects aliases to anchors not defined before them; one whose node is
        // still open refers to a collection that contains it.
        let Some(Some(anchored)) = self.anchors.get(id) else {
            return Err(SyntaxError::new(
                "recursive alias: it refers to a collection that contains it",
                position,
            ));
        };
        if self.stack.len() + anchored.depth > MAX_DEPTH {
            return Err(too_deep(position));
        }
        let (nodes, bytes) = (anchored.nodes, anchored.scalar_bytes);
        self.count(nodes, bytes, position, true)?;
        let anchored = self.anchors[id].as_ref().expect("checked above");
        let merge_key = anchored.merge_key;
        let mut node = anchored.node.clone();
        // A copy stands where the alias is: errors in it point at the alias (as serde-saphyr
        // reported them).
        node.relocate(position);
        self.complete(node, 0, merge_key)
    }

    /// Hands a finished node to the collection it belongs to (or makes it a document).
    fn complete(&mut self, node: Node, anchor: usize, merge_key: bool) -> Result<(), SyntaxError> {
        if anchor != 0 {
            let (nodes, scalar_bytes, depth) = node.stats();
            *self.anchor_slot(anchor) = Some(Anchored {
                node: node.clone(),
                nodes,
                scalar_bytes,
                depth,
                merge_key,
            });
        }
        let Some(frame) = self.stack.last_mut() else {
            // A document that is only `null`, `~` or nothing at all is skipped.
            if !matches!(node.value, NodeValue::Null) {
                self.documents.push(node);
            }
            return Ok(());
        };
        match &mut frame.kind {
            FrameKind::Seq(items) => items.push(node),
            FrameKind::Map {
                entries,
                key,
                merges,
            } => match key.take() {
                None if merge_key => *key = Some(PendingKey::Merge),
                None => {
                    let position = node.position;
                    *key = Some(PendingKey::Key(key_text(node)?, position));
                }
                Some(PendingKey::Key(key, position)) => entries.push((key, position, node)),
                Some(PendingKey::Merge) => merge_entries(node, merges)?,
            },
        }
        Ok(())
    }
}

fn too_deep(position: Option<Position>) -> SyntaxError {
    SyntaxError::new(
        format!("lists and mappings nested more than {MAX_DEPTH} deep"),
        position,
    )
}

/// A mapping key as text: keys are plain scalars; a number, boolean or null key is kept as
/// its text (`1.0` becomes `1`, `~` becomes `null`).
fn key_text(node: Node) -> Result<String, SyntaxError> {
    Ok(match node.value {
        NodeValue::Str(s) => s,
        NodeValue::Int(i) => i.to_string(),
        NodeValue::UInt(u) => u.to_string(),
        NodeValue::Bool(b) => b.to_string(),
        NodeValue::Float(f) => f.to_string(),
        NodeValue::Null => "null".to_string(),
        NodeValue::Seq(_) | NodeValue::Map(_) => {
            return Err(SyntaxError::new(
                "a mapping key must be a plain scalar",
                node.position,
            ))
        }
    })
}

/// The entries a merge key (`<<`) brings in: those of a mapping, of each mapping of a list,
/// or none for null.
fn merge_entries(node: Node, out: &mut Vec<Entry>) -> Result<(), SyntaxError> {
    match node.value {
        NodeValue::Null => Ok(()),
        NodeValue::Map(entries) => {
            out.extend(entries);
            Ok(())
        }
        NodeValue::Seq(items) => items
            .into_iter()
            .try_for_each(|item| merge_entries(item, out)),
        _ => Err(SyntaxError::new(
            "YAML merge value must be mapping or sequence of mappings",
            node.position,
        )),
    }
}

impl Node {
    /// Values in this tree, bytes of scalar text, and nesting depth in collections.
    fn stats(&self) -> (usize, usize, usize) {
        match &self.value {
            NodeValue::Str(s) => (1, s.len(), 0),
            NodeValue::Seq(items) => items.iter().fold((1, 0, 1), |(n, b, d), item| {
                let (n2, b2, d2) = item.stats();
                (n + n2, b + b2, d.max(d2 + 1))
            }),
            NodeValue::Map(entries) => entries.iter().fold((1, 0, 1), |(n, b, d), (k, _, v)| {
                let (n2, b2, d2) = v.stats();
                (n + n2 + 1, b + b2 + k.len(), d.max(d2 + 1))
            }),
            _ => (1, 0, 0),
        }
    }

    /// Moves this tree, keys included, to `position`.
    fn relocate(&mut self, position: Option<Position>) {
        self.position = position;
        match &mut self.value {
            NodeValue::Seq(items) => items.iter_mut().for_each(|n| n.relocate(position)),
            NodeValue::Map(entries) => {
                for (_, key_position, value) in entries {
                    *key_position = position;
                    value.relocate(position);
                }
            }
            _ => {}
        }
    }
}

/// What a tag asks for. Only the YAML core tags and the non-specific `!` are understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagKind {
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

fn classify(tag: &Tag) -> TagKind {
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

fn check_collection_tag(
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
fn resolve_scalar(
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
}
