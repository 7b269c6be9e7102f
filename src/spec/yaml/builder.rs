//! The tree built from the parser's event stream: collections are kept open on a stack until
//! their end event, merge keys (`<<`) are expanded when their mapping ends, and aliases are
//! copied where they stand. The limits on depth, values and text that keep a small file from
//! expanding without bound are counted here, as events arrive.

use super::error::SyntaxError;
use super::location::Position;
use super::node::{Node, NodeValue};
use super::scalar::{check_collection_tag, classify, resolve_scalar, TagKind};
use serde_saphyr::granit_parser::{Event, Options as ParserOptions, Parser, ScalarStyle, Span};

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
