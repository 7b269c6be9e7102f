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
//!
//! - `location`: line and column ([`Position`]) and field paths ([`FieldPath`]);
//! - `node`: the tree ([`Node`]) and the lookups that locate a path in it;
//! - `builder`: the tree built from parser events, with merge keys, aliases and limits;
//! - `scalar`: tags and the core-schema resolution of scalars;
//! - `error`: [`SyntaxError`], the parser's errors and ours alike.

mod builder;
mod error;
mod location;
mod node;
mod scalar;
#[cfg(test)]
mod tests;

pub use builder::{parse_documents, MAX_DEPTH, MAX_NODES, MAX_SCALAR_BYTES};
pub use error::SyntaxError;
pub use location::{FieldPath, PathSegment, Position};
pub use node::{Node, NodeValue};
