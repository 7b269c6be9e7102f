//! Where a value stands: its line and column in the file ([`Position`]) and its field path
//! from the document root ([`FieldPath`]), which error messages show and which callers parse
//! back to find the value again.

use serde_saphyr::granit_parser::Marker;
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
    pub(super) fn of(marker: &Marker) -> Option<Position> {
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
