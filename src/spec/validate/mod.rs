//! Semantic checks: everything the types alone cannot say (exactly one task, `runAt` xor
//! `schedule`, valid cron and zones, references between objects, unique names...). Every
//! problem is collected, not only the first, each located through the document's span tree.
//!
//! The checks of each kind are in their own file (`job`, `chain`, `task`, `timeout`,
//! `connection`), as methods of one `Checker` that collects the errors of an object; what
//! they share (locating an error, durations, names, `database:` references) is here.

mod chain;
mod connection;
mod job;
mod task;
mod timeout;

pub use timeout::MAX_BATCH_SIZE;

use super::document::{check_name, Object};
use super::error::{did_you_mean, SpecError};
use super::model::{Kind, ObjectSpec};
use super::yaml::{FieldPath, Node};
use crate::duration::SpecDuration;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An object with the document it came from, for locating errors.
pub struct Located<'a> {
    /// The object to check.
    pub object: &'a Object,
    /// The YAML document it was read from; errors are located through it.
    pub doc: &'a Node,
    /// The file name used in messages (the spec directory joined with the relative path).
    pub shown: &'a Path,
}

/// Checks each object on its own and all of them together.
pub fn validate_all(items: &[Located<'_>]) -> Vec<SpecError> {
    let connections = connection_names(items.iter().map(|i| i.object));
    let mut errors = validate_each(items, &connections);
    errors.extend(validate_together(items));
    errors
}

/// The names of the Connections among these objects: what `database:` may refer to.
pub fn connection_names<'a>(objects: impl Iterator<Item = &'a Object>) -> Vec<&'a str> {
    objects
        .filter(|o| o.kind == Kind::Connection)
        .map(super::document::Object::name)
        .collect()
}

/// The checks of each object on its own, given the Connections it may refer to. Their result
/// depends on nothing else, so the sidecar keeps it for files that did not change.
pub fn validate_each(items: &[Located<'_>], connections: &[&str]) -> Vec<SpecError> {
    // Objects are checked independently of each other, so large directories are checked on
    // every core; the order of the errors does not depend on the split.
    let per_chunk = super::load::parallel_chunks(items, |chunk| {
        let mut errors = Vec::new();
        for item in chunk {
            let mut check = Checker {
                item,
                errors: &mut errors,
                connections,
            };
            check.object();
        }
        errors
    });
    per_chunk.into_iter().flatten().collect()
}

/// The checks across objects: unique names.
pub fn validate_together(items: &[Located<'_>]) -> Vec<SpecError> {
    let mut errors = Vec::new();
    unique_names(items, &mut errors);
    errors
}

/// Names are unique per kind. Jobs and chains share one namespace on top of that, because
/// `pgsched.trigger(name)` and `pgsched runs NAME` take a bare name.
/// The namespace a name must be unique in.
pub fn name_namespace(kind: Kind) -> &'static str {
    match kind {
        Kind::Job | Kind::Chain => "job-or-chain",
        other => other.as_str(),
    }
}

fn unique_names(items: &[Located<'_>], errors: &mut Vec<SpecError>) {
    let mut seen: HashMap<(&str, &str), &Located<'_>> = HashMap::new();
    for item in items {
        let namespace = name_namespace(item.object.kind);
        let name = item.object.name();
        match seen.get(&(namespace, name)) {
            Some(first) => {
                let path = FieldPath::parse("metadata.name");
                errors.push(
                    SpecError::new(
                        item.shown,
                        format!(
                            "duplicate name `{name}`: {} `{name}` is already defined",
                            first.object.kind
                        ),
                    )
                    .at(item.doc.locate(&path))
                    .field(path)
                    .hint(format!(
                        "first defined in {}:{}; names are unique per kind, and jobs and chains share theirs",
                        first.shown.display(),
                        first.object.source.line
                    )),
                );
            }
            None => {
                seen.insert((namespace, name), item);
            }
        }
    }
}

/// Collects the errors of one object; the checks of each kind are its methods, in the files
/// of this module.
struct Checker<'a, 'b> {
    item: &'a Located<'a>,
    errors: &'b mut Vec<SpecError>,
    connections: &'b [&'a str],
}

impl Checker<'_, '_> {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) -> &mut SpecError {
        self.error_at(FieldPath::parse(path), message)
    }

    /// As [`Self::error`], for paths with user-written keys (which may hold `.` or `[`).
    pub(super) fn error_at(
        &mut self,
        path: FieldPath,
        message: impl Into<String>,
    ) -> &mut SpecError {
        let error = SpecError::new(self.item.shown, message)
            .at(self.item.doc.locate(&path))
            .field(path);
        self.errors.push(error);
        self.errors.last_mut().expect("just pushed")
    }

    pub(super) fn error_hint(
        &mut self,
        path: &str,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let e = self.error(path, message);
        e.hint = hint;
    }

    fn object(&mut self) {
        let object = self.item.object;
        for key in object.metadata.labels.keys() {
            if key.trim().is_empty() {
                self.error("metadata.labels", "label keys must not be empty");
            }
        }
        match &object.spec {
            ObjectSpec::Job(job) => self.job(job),
            ObjectSpec::Chain(chain) => self.chain(chain),
            ObjectSpec::Timeout(timeout) => self.timeout(timeout),
            ObjectSpec::Connection(connection) => self.connection(connection),
        }
    }

    pub(super) fn name(&mut self, path: &str, name: &str) {
        if let Some((message, hint)) = check_name(name) {
            self.error_hint(path, message, Some(hint));
        }
    }

    pub(super) fn positive(&mut self, path: &str, value: Option<SpecDuration>) {
        if value.is_some_and(|d| d.0 == Duration::ZERO) {
            self.error(path, "must be longer than 0s");
        }
    }

    pub(super) fn database_ref(&mut self, path: &str, name: &str) {
        if !self.connections.contains(&name) {
            let hint = did_you_mean(name, self.connections.iter().copied()).or_else(|| {
                Some("define it with `kind: Connection`, or remove `database` to use the scheduler's database".into())
            });
            self.error_hint(path, format!("no Connection named `{name}`"), hint);
        }
    }
}

/// For callers that keep the shown file name of each object.
pub fn shown_path(dir: &Path, relative: &Path) -> PathBuf {
    if dir == Path::new(".") {
        relative.to_path_buf()
    } else {
        dir.join(relative)
    }
}
