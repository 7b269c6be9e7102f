//! One YAML document → one typed [`Object`]: the envelope (`apiVersion`, `kind`, `metadata`,
//! `spec`) checked by hand, the spec deserialised into its kind's type with the field path of
//! any error, and the path turned into a line and column through the span tree.

use super::error::{did_you_mean, SpecError};
use super::model::{ChainSpec, ConnectionSpec, JobSpec, Kind, Metadata, ObjectSpec, TimeoutSpec};
use super::yaml::{FieldPath, Node, NodeValue, PathSegment, Position};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The only `apiVersion` a document may declare.
pub const API_VERSION: &str = "pgsched/v1";
const ENVELOPE_FIELDS: [&str; 4] = ["apiVersion", "kind", "metadata", "spec"];

/// Where an object was defined.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source {
    /// Relative to the spec directory, with `/` separators: `jobs/cleanup.yaml`.
    pub file: PathBuf,
    /// Line of the document's first key.
    pub line: usize,
}

/// A validated object from a spec file.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// The document's `kind`; always the kind of `spec`.
    pub kind: Kind,
    /// The document's `metadata` (name and labels).
    pub metadata: Metadata,
    /// The typed `spec`.
    pub spec: ObjectSpec,
    /// The file and line the document starts at.
    pub source: Source,
    /// The document it came from, so later checks (against the database) can point at lines.
    pub doc: Arc<Node>,
}

impl Object {
    /// Where the value at `path` (e.g. `spec.steps[1].sql`) stands in the file.
    pub fn locate(&self, path: &str) -> Option<Position> {
        self.doc.locate(&FieldPath::parse(path))
    }

    /// `metadata.name`, unique per kind.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }
    /// `job/nightly-vacuum`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.kind.slug(), self.metadata.name)
    }
}

/// Turns one parsed document into an object. `shown` is the file name used in messages.
/// Problems in the envelope, the metadata and the spec are all reported together.
pub fn object_from_document(
    doc: &Node,
    shown: &Path,
    relative: &Path,
) -> Result<Object, Vec<SpecError>> {
    let NodeValue::Map(entries) = &doc.value else {
        return Err(vec![SpecError::new(
            shown,
            "a document must be a mapping with apiVersion, kind, metadata and spec",
        )
        .at(doc.position)]);
    };
    let mut envelope = Envelope {
        doc,
        shown,
        errors: Vec::new(),
    };
    envelope.duplicate_keys();
    envelope.unknown_fields(entries);
    envelope.api_version();
    let kind = envelope.kind();
    let metadata = envelope.metadata();
    let spec = envelope.spec(kind);
    let errors = envelope.errors_once();
    match (kind, metadata, spec) {
        (Some(kind), Some(metadata), Some(spec)) if errors.is_empty() => Ok(Object {
            kind,
            metadata,
            spec,
            source: Source {
                file: relative.to_path_buf(),
                line: doc.position.map_or(1, |p| p.line),
            },
            doc: Arc::new(doc.clone()),
        }),
        _ => Err(errors),
    }
}

/// One document's envelope being read, with the errors found so far: each step reads one
/// part and adds its errors, so that all of them are reported together.
struct Envelope<'a> {
    doc: &'a Node,
    shown: &'a Path,
    errors: Vec<SpecError>,
}

fn field(name: &str) -> FieldPath {
    FieldPath::root().key(name)
}

impl<'a> Envelope<'a> {
    fn err(&self, message: String) -> SpecError {
        SpecError::new(self.shown, message)
    }

    fn duplicate_keys(&mut self) {
        for (path, position, first) in self.doc.duplicate_keys() {
            let Some(PathSegment::Key(key)) = path.0.last().cloned() else {
                continue;
            };
            let mut e = self
                .err(format!("duplicate key `{key}`"))
                .at(position)
                .field(path);
            if let Some(first) = first {
                e = e.hint(format!(
                    "`{key}` is already set on line {}; a key may appear once in a mapping",
                    first.line
                ));
            }
            self.errors.push(e);
        }
    }

    fn unknown_fields(&mut self, entries: &[(String, Option<Position>, Node)]) {
        for (key, position, _) in entries {
            if !ENVELOPE_FIELDS.contains(&key.as_str()) {
                let mut e = self
                    .err(format!("unknown field `{key}`"))
                    .at(*position)
                    .field(FieldPath::root().key(key.clone()));
                e.hint = did_you_mean(key, ENVELOPE_FIELDS)
                    .or_else(|| Some("expected apiVersion, kind, metadata and spec".into()));
                self.errors.push(e);
            }
        }
    }

    /// The string at the top-level key `name`, with its position; the error when it is
    /// missing or not a string.
    fn required_str(&self, name: &str) -> Result<(&'a str, Option<Position>), SpecError> {
        match self.doc.get(name) {
            None => Err(self
                .err(format!("missing required field `{name}`"))
                .at(self.doc.position)
                .field(field(name))),
            Some(Node {
                value: NodeValue::Str(s),
                position,
            }) => Ok((s.as_str(), *position)),
            Some(other) => Err(self
                .err(format!("`{name}` must be a string"))
                .at(other.position)
                .field(field(name))),
        }
    }

    fn api_version(&mut self) {
        match self.required_str("apiVersion") {
            Ok((api_version, _)) if api_version == API_VERSION => {}
            Ok((api_version, position)) => {
                let e = self
                    .err(format!("unsupported apiVersion `{api_version}`"))
                    .at(position)
                    .field(field("apiVersion"))
                    .hint(format!("write `apiVersion: {API_VERSION}`"));
                self.errors.push(e);
            }
            Err(e) => self
                .errors
                .push(e.hint(format!("write `apiVersion: {API_VERSION}`"))),
        }
    }

    fn kind(&mut self) -> Option<Kind> {
        match self.required_str("kind") {
            Ok((text, position)) => match Kind::parse(text) {
                Some(kind) => Some(kind),
                None => {
                    let names = Kind::ALL.map(Kind::as_str);
                    let mut e = self
                        .err(format!("unknown kind `{text}`"))
                        .at(position)
                        .field(field("kind"));
                    e.hint = did_you_mean(text, names)
                        .or_else(|| Some("expected Job, Chain, Timeout or Connection".into()));
                    self.errors.push(e);
                    None
                }
            },
            Err(e) => {
                self.errors
                    .push(e.hint("one of Job, Chain, Timeout or Connection"));
                None
            }
        }
    }

    fn metadata(&mut self) -> Option<Metadata> {
        let doc = self.doc;
        match doc.get("metadata") {
            None => {
                let e = self
                    .err("missing required field `metadata`".into())
                    .at(doc.position)
                    .field(field("metadata"))
                    .hint("add `metadata: {name: my-object}`");
                self.errors.push(e);
                None
            }
            Some(node) => match typed::<Metadata>(doc, node, field("metadata"), self.shown) {
                Ok(metadata) => {
                    if let Some((message, hint)) = check_name(&metadata.name) {
                        let path = FieldPath::parse("metadata.name");
                        let e = self
                            .err(message)
                            .at(doc.locate(&path))
                            .field(path)
                            .hint(hint);
                        self.errors.push(e);
                    }
                    Some(metadata)
                }
                Err(e) => {
                    self.errors.push(e);
                    None
                }
            },
        }
    }

    /// The `spec`, typed by `kind` (not read when the kind is unknown).
    fn spec(&mut self, kind: Option<Kind>) -> Option<ObjectSpec> {
        let (doc, shown) = (self.doc, self.shown);
        match (doc.get("spec"), kind) {
            (None, _) => {
                let e = self
                    .err("missing required field `spec`".into())
                    .at(doc.position)
                    .field(field("spec"));
                self.errors.push(e);
                None
            }
            (Some(_), None) => None,
            (Some(node), Some(kind)) => {
                let path = field("spec");
                let parsed = match kind {
                    Kind::Job => typed::<JobSpec>(doc, node, path, shown).map(ObjectSpec::Job),
                    Kind::Chain => {
                        typed::<ChainSpec>(doc, node, path, shown).map(ObjectSpec::Chain)
                    }
                    Kind::Timeout => {
                        typed::<TimeoutSpec>(doc, node, path, shown).map(ObjectSpec::Timeout)
                    }
                    Kind::Connection => {
                        typed::<ConnectionSpec>(doc, node, path, shown).map(ObjectSpec::Connection)
                    }
                };
                parsed.map_err(|e| self.errors.push(e)).ok()
            }
        }
    }

    /// The errors, each problem once.
    fn errors_once(mut self) -> Vec<SpecError> {
        // `specs:` is reported as an unknown field with "did you mean `spec`?"; "missing required
        // field `spec`" on top of it would report one typo twice.
        let suggested: Vec<String> = self
            .errors
            .iter()
            .filter_map(|e| quoted_after(e.hint.as_deref()?, "did you mean `"))
            .collect();
        self.errors.retain(|e| {
            quoted_after(&e.message, "missing required field `")
                .is_none_or(|missing| !suggested.contains(&missing))
        });
        self.errors
    }
}

/// The pattern every object and step name must match, as users read it in messages.
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Checks an object or step name; returns the message and a hint with a valid form.
pub fn check_name(name: &str) -> Option<(String, String)> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        return None;
    }
    let suggestion = suggest_name(name);
    let rule = format!("names match {NAME_PATTERN} and have at most 63 characters");
    let hint = if suggestion.is_empty() || suggestion == name {
        rule
    } else {
        format!("{rule}, e.g. `{suggestion}`")
    };
    let message = if name.len() > 63 {
        format!(
            "invalid name `{name}`: {} characters, more than 63",
            name.len()
        )
    } else {
        format!("invalid name `{name}`")
    };
    Some((message, hint))
}

/// A best-effort valid form of an invalid name, for the hint.
fn suggest_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let trimmed: String = out.trim_matches('-').chars().take(63).collect();
    trimmed.trim_end_matches('-').to_string()
}

/// Deserialises `node` (found at `base` inside `doc`) into `T`, turning serde's error into a
/// located [`SpecError`] with a field path and, for misspelt names, a suggestion.
fn typed<T: DeserializeOwned>(
    doc: &Node,
    node: &Node,
    base: FieldPath,
    shown: &Path,
) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(node.to_json()).map_err(|e| {
        let mut path = base;
        for segment in e.path() {
            match segment {
                serde_path_to_error::Segment::Seq { index } => path = path.index(*index),
                serde_path_to_error::Segment::Map { key } => path = path.key(key.clone()),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => {}
            }
        }
        let message = friendlier(&e.inner().to_string());
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // serde_path_to_error already ends the path with the unknown key.
            let parent = match path.0.last() {
                Some(PathSegment::Key(k)) if *k == field => {
                    FieldPath(path.0[..path.0.len() - 1].to_vec())
                }
                _ => path.clone(),
            };
            let expected = expected_names(&message);
            let position = doc
                .locate_key(&parent, &field)
                .or_else(|| doc.locate(&parent));
            let mut error = SpecError::new(shown, format!("unknown field `{field}`"))
                .at(position)
                .field(parent.key(field.clone()));
            error.hint = did_you_mean(&field, expected.iter().map(String::as_str))
                .or_else(|| expected_hint(&expected));
            return error;
        }
        // Internally tagged enums (`builtin`) are buffered before they are deserialised, so
        // serde loses the path inside them: find the value the message quotes.
        let path = refine_path(doc, path, &message);
        if let Some(variant) = quoted_after(&message, "unknown variant `") {
            let expected = expected_names(&message);
            let mut error = SpecError::new(shown, format!("unknown value `{variant}`"))
                .at(doc.locate(&path))
                .field(path);
            error.hint = did_you_mean(&variant, expected.iter().map(String::as_str))
                .or_else(|| expected_hint(&expected));
            return error;
        }
        if let Some(missing) = quoted_after(&message, "missing field `") {
            return SpecError::new(shown, format!("missing required field `{missing}`"))
                .at(doc.locate(&path))
                .field(path.key(missing));
        }
        let (message, hint) = explain(doc.at(&path), &path, message);
        let mut error = SpecError::new(shown, message)
            .at(doc.locate(&path))
            .field(path);
        error.hint = hint;
        error
    })
}

/// Fields that hold a duration (`30s`), for a better message when a bare number is written.
const DURATION_FIELDS: [&str; 7] = [
    "timeout",
    "startingDeadline",
    "keepFor",
    "initial",
    "max",
    "after",
    "duration",
];

/// What chrono says about a timestamp it cannot read; on its own it does not say which value.
const TIMESTAMP_ERRORS: [&str; 7] = [
    "input is out of range",
    "no possible date and time matching input",
    "input is not enough for unique date and time",
    "input contains invalid characters",
    "premature end of input",
    "trailing input",
    "bad or unsupported format string",
];

/// Rewrites a type error about `node` into what a YAML author needs to read, with a hint.
fn explain(node: Option<&Node>, path: &FieldPath, message: String) -> (String, Option<String>) {
    let Some(node) = node else {
        return (message, None);
    };
    let field = match path.0.last() {
        Some(PathSegment::Key(k)) => k.as_str(),
        _ => "",
    };
    let number = matches!(
        node.value,
        NodeValue::Int(_) | NodeValue::UInt(_) | NodeValue::Float(_)
    );
    if message.starts_with("invalid type:") && message.contains("expected a string") {
        let text = node.scalar_text().unwrap_or_default();
        if number && DURATION_FIELDS.contains(&field) {
            return (
                format!("`{text}` is not a duration: a number needs a unit (ms, s, m, h, d)"),
                Some(format!("e.g. `{text}s` or `{text}m`")),
            );
        }
        if number || matches!(node.value, NodeValue::Bool(_)) {
            return (
                message,
                Some(format!("write it in quotes to mean the text: \"{text}\"")),
            );
        }
    }
    if message.starts_with("invalid type: string") && message.contains("expected a boolean") {
        return (
            message,
            Some("write true or false; `yes`, `no`, `on`, `off` and quoted \"true\" are text, not booleans".into()),
        );
    }
    if field == "command" && matches!(node.value, NodeValue::Str(_)) {
        return (
            message,
            Some("`command` is a list of the program and its arguments, e.g. [pg_dump, app]; to run a command line with /bin/sh, use `shell`".into()),
        );
    }
    if let (NodeValue::Str(text), true) =
        (&node.value, TIMESTAMP_ERRORS.contains(&message.as_str()))
    {
        return (
            format!("`{text}` is not an RFC 3339 time: {message}"),
            Some("write the date, the time and the offset, e.g. 2030-06-01T09:00:00Z or 2030-06-01T11:00:00+02:00".into()),
        );
    }
    (message, None)
}

/// When an error's path ends at a mapping, the value at fault is inside it: take the one
/// descendant whose text the message quotes (`` `POTS` ``, `"abc"`).
fn refine_path(doc: &Node, path: FieldPath, message: &str) -> FieldPath {
    let Some(
        node @ Node {
            value: NodeValue::Map(_),
            ..
        },
    ) = doc.at(&path)
    else {
        return path;
    };
    if message.starts_with("invalid type: map") {
        return path;
    }
    let mut quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    quoted.extend(message.split('"').skip(1).step_by(2));
    for text in quoted {
        let mut found = Vec::new();
        find_scalars(node, &path, text, &mut found);
        if let [only] = found.as_slice() {
            return only.clone();
        }
    }
    path
}

fn find_scalars(node: &Node, path: &FieldPath, text: &str, found: &mut Vec<FieldPath>) {
    match &node.value {
        NodeValue::Map(entries) => {
            for (key, _, value) in entries {
                find_scalars(value, &path.key(key.clone()), text, found);
            }
        }
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                find_scalars(item, &path.index(i), text, found);
            }
        }
        _ => {
            if node.scalar_text().as_deref() == Some(text) {
                found.push(path.clone());
            }
        }
    }
}

/// serde names Rust types (`expected u32`, `expected struct JobSpec`); users write YAML.
fn friendlier(message: &str) -> String {
    let mut out = message
        .replace(
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        )
        .replace("expected u16", "expected a whole number from 0 to 65535")
        .replace("expected f64", "expected a number")
        .replace("expected a map", "expected a mapping (key: value)")
        .replace("expected a sequence", "expected a list")
        .replace(
            "expected internally tagged enum Builtin",
            "expected a mapping with `name` (sleep, log, notify or http)",
        );
    while let Some(at) = out.find("expected struct ") {
        let start = at + "expected struct ".len();
        let end = out[start..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(out.len(), |e| start + e);
        out.replace_range(at..end, "expected a mapping (key: value)");
    }
    out
}

/// The text between `prefix` and the next backtick.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let end = message[start..].find('`')?;
    Some(message[start..start + end].to_string())
}

/// The names serde lists after "expected one of" / "expected".
fn expected_names(message: &str) -> Vec<String> {
    let Some(at) = message.find("expected") else {
        return Vec::new();
    };
    message[at..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn expected_hint(expected: &[String]) -> Option<String> {
    (!expected.is_empty()).then(|| format!("expected one of: {}", expected.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("nightly-vacuum").is_none());
        assert!(check_name("a").is_none());
        assert!(check_name(&"a".repeat(63)).is_none());
        assert!(check_name(&"a".repeat(64)).is_some());
        assert!(check_name("-a").is_some());
        assert!(check_name("").is_some());
        let (_, hint) = check_name("Nightly_Vacuum").unwrap();
        assert!(hint.contains("`nightly-vacuum`"), "{hint}");
        assert_eq!(suggest_name("--a--b--"), "a-b");
    }
}
