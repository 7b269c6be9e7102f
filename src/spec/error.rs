//! Located spec errors: the file, the line and column, the field path, what is wrong and a hint.

use super::yaml::{FieldPath, Position};
use std::fmt;
use std::path::PathBuf;

/// One problem in one spec file. Every problem found in a run is reported, not only the first.
#[derive(Debug, Clone, PartialEq)]
pub struct SpecError {
    /// The file as the user named it (the spec directory joined with the relative path).
    pub file: PathBuf,
    /// Line and column of the value at fault; `None` when no single place is to blame.
    pub position: Option<Position>,
    /// `spec.retries.limit`; `None` for errors about the whole file (unreadable, bad YAML).
    pub path: Option<FieldPath>,
    /// What is wrong, as one clause; `Display` adds file, position, path and hint around it.
    pub message: String,
    /// "did you mean `limit`?" or how to fix it.
    pub hint: Option<String>,
}

impl SpecError {
    /// An error about `file` as a whole; add a place with `at` and `field`.
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        SpecError {
            file: file.into(),
            position: None,
            path: None,
            message: message.into(),
            hint: None,
        }
    }
    /// Sets (or, with `None`, clears) the line and column.
    pub fn at(mut self, position: Option<Position>) -> Self {
        self.position = position;
        self
    }
    /// Sets the field path shown before the message.
    pub fn field(mut self, path: FieldPath) -> Self {
        self.path = Some(path);
        self
    }
    /// Sets the hint shown in parentheses after the message.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// The 1-based line, if the error has a position.
    pub fn line(&self) -> Option<usize> {
        self.position.map(|p| p.line)
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(p) = self.position {
            write!(f, ":{}:{}", p.line, p.column)?;
        }
        f.write_str(": ")?;
        if let Some(path) = self.path.as_ref().filter(|p| !p.0.is_empty()) {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " ({hint})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecError {}

/// The closest candidate to `input`, when it is close enough to be a likely typo.
pub fn closest<'a>(input: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| {
            (
                c,
                strsim::normalized_damerau_levenshtein(&lower, &c.to_ascii_lowercase()),
            )
        })
        .filter(|(_, score)| *score >= 0.6)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(c, _)| c)
}

/// "did you mean `x`?" when a close candidate exists.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    closest(input, candidates).map(|c| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            closest("schedul", ["schedule", "suspend"]),
            Some("schedule")
        );
        assert_eq!(closest("retires", ["retries", "timeout"]), Some("retries"));
        assert_eq!(
            closest("RunONCE", ["Skip", "RunOnce", "RunAll"]),
            Some("RunOnce")
        );
        assert_eq!(closest("zzz", ["schedule", "suspend"]), None);
    }

    #[test]
    fn display_has_file_line_path_and_hint() {
        let e = SpecError::new("jobs/a.yaml", "unknown field `retris`")
            .at(Some(Position { line: 7, column: 3 }))
            .field(FieldPath::parse("spec.retris"))
            .hint("did you mean `retries`?");
        assert_eq!(
            e.to_string(),
            "jobs/a.yaml:7:3: spec.retris: unknown field `retris` (did you mean `retries`?)"
        );
    }
}
