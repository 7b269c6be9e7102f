//! The one error of parsing a file: the parser's own syntax errors and the ones the tree
//! builder raises (bad tags, limits, recursive aliases) share this type, so the loader
//! reports both the same way.

use super::location::Position;
use serde_saphyr::granit_parser::ScanError;

/// A YAML syntax error with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    /// What is wrong, without the position.
    pub message: String,
    /// Where the parser stopped; `None` when it gave no location.
    pub position: Option<Position>,
}

impl SyntaxError {
    pub(super) fn new(message: impl Into<String>, position: Option<Position>) -> Self {
        SyntaxError {
            message: message.into(),
            position,
        }
    }

    pub(super) fn scan(error: ScanError) -> Self {
        let message = match error.kind() {
            serde_saphyr::granit_parser::ErrorKind::UnknownAnchor => {
                "alias references unknown anchor".to_string()
            }
            _ => error.info().clone(),
        };
        SyntaxError::new(message, Position::of(error.marker()))
    }
}
