//! Building the status files' entries: which objects each spec file reports on, and the Ready
//! condition of each, judged from the file, the object's row and what the last reconcile did.

use super::{
    first_line, rfc3339, status_path_of, Condition, DirView, LastReconcile, LastRunEntry,
    StatusEntry, Totals, Transitions,
};
use crate::store::report::ObjectStatus;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// At most this many errors are quoted in a condition's message; the log has them all.
const ERRORS_IN_MESSAGE: usize = 5;

fn joined(errors: &[String]) -> String {
    let mut shown: Vec<&str> = errors
        .iter()
        .take(ERRORS_IN_MESSAGE)
        .map(String::as_str)
        .collect();
    let more;
    if errors.len() > ERRORS_IN_MESSAGE {
        more = format!("and {} more", errors.len() - ERRORS_IN_MESSAGE);
        shown.push(&more);
    }
    shown.join("; ")
}

fn list_files(files: &[&PathBuf]) -> String {
    let mut names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    names.sort();
    if names.len() > 3 {
        let n = names.len() - 3;
        names.truncate(3);
        names.push(format!("{n} more"));
    }
    names.join(", ")
}

/// The status files' entries, by spec file (relative path), for every spec file of the view.
/// `transitions` is read for unchanged conditions' times and updated with the new ones.
pub fn build(
    view: &DirView,
    tables: &[ObjectStatus],
    last: &LastReconcile,
    transitions: &mut Transitions,
    now: DateTime<Utc>,
) -> BTreeMap<PathBuf, Vec<StatusEntry>> {
    let mut builder = Builder::new(view, tables, last, transitions, now);
    let mut out = BTreeMap::new();
    for file in &view.files {
        out.insert(file.clone(), builder.file_entries(file));
    }
    out
}

/// A Ready condition's `status`, `reason` and `message`.
type Readiness = (&'static str, &'static str, String);

/// One object a status file reports on.
struct Reported<'a> {
    kind: String,
    name: String,
    /// The hash of the spec as the file has it; `None` for a row the file no longer parses
    /// into, and for a `File` entry.
    desired_hash: Option<&'a str>,
}

/// What one [`build`] judges every file's objects against, and the transitions it updates.
struct Builder<'a> {
    view: &'a DirView,
    rows: HashMap<(&'a str, &'a str), &'a ObjectStatus>,
    /// Rows by the file that declared them: a file that no longer parses still lists them.
    rows_by_file: HashMap<&'a str, Vec<&'a ObjectStatus>>,
    /// The files with errors, which hold back every other file.
    broken: Vec<&'a PathBuf>,
    last: &'a LastReconcile,
    transitions: &'a mut Transitions,
    now: DateTime<Utc>,
}

impl<'a> Builder<'a> {
    fn new(
        view: &'a DirView,
        tables: &'a [ObjectStatus],
        last: &'a LastReconcile,
        transitions: &'a mut Transitions,
        now: DateTime<Utc>,
    ) -> Builder<'a> {
        let rows = tables
            .iter()
            .map(|r| ((r.kind.as_str(), r.name.as_str()), r))
            .collect();
        let mut rows_by_file: HashMap<&str, Vec<&ObjectStatus>> = HashMap::new();
        for r in tables.iter().filter(|r| r.managed) {
            if let Some(file) = &r.source_file {
                rows_by_file.entry(file.as_str()).or_default().push(r);
            }
        }
        Builder {
            view,
            rows,
            rows_by_file,
            broken: view.errors.keys().collect(),
            last,
            transitions,
            now,
        }
    }

    /// The entries of one spec file's status file.
    fn file_entries(&mut self, file: &Path) -> Vec<StatusEntry> {
        let status_file = status_path_of(file);
        let view = self.view;
        let errors = view.errors.get(file).map(Vec::as_slice);
        let objects = self.objects_of(file, errors.is_some());
        let mut entries = Vec::with_capacity(objects.len());
        for object in objects {
            let key = (object.kind.as_str(), object.name.as_str());
            let row = self.rows.get(&key).copied();
            let in_sync = match (row, object.desired_hash) {
                (Some(r), Some(h)) => r.managed && r.spec_hash.as_deref() == Some(h),
                _ => false,
            };
            let (status, reason, message) = self.readiness(file, errors, &object, row, in_sync);
            let since = self.transition_time(&status_file, &object, status, reason);
            let condition = Condition {
                kind: "Ready".into(),
                status: status.into(),
                observed_generation: row.filter(|_| in_sync).map(|r| r.generation),
                reason: reason.into(),
                message,
                last_transition_time: since,
            };
            entries.push(entry(object.kind, object.name, row, condition));
        }
        entries
    }

    /// The objects to report: the file's, then rows the file declared before and no longer
    /// parses into (their last good state keeps running).
    fn objects_of(&self, file: &Path, has_errors: bool) -> Vec<Reported<'a>> {
        let key = file.to_string_lossy().replace('\\', "/");
        let view = self.view;
        let mut objects: Vec<Reported<'a>> = view
            .objects
            .get(file)
            .map(|objs| {
                objs.iter()
                    .map(|o| Reported {
                        kind: o.kind.as_str().to_string(),
                        name: o.name.clone(),
                        desired_hash: Some(o.spec_hash.as_str()),
                    })
                    .collect()
            })
            .unwrap_or_default();
        if has_errors {
            for r in self.rows_by_file.get(key.as_str()).into_iter().flatten() {
                if !objects.iter().any(|o| o.kind == r.kind && o.name == r.name) {
                    objects.push(Reported {
                        kind: r.kind.clone(),
                        name: r.name.clone(),
                        desired_hash: None,
                    });
                }
            }
        }
        if objects.is_empty() && has_errors {
            // Nothing parsed and nothing known: one entry for the file itself.
            objects.push(Reported {
                kind: "File".into(),
                name: key,
                desired_hash: None,
            });
        }
        objects
    }

    /// Whether the object is ready, and if not, why: the file's errors come first, then a row
    /// the file does not own, then what the last reconcile did.
    fn readiness(
        &self,
        file: &Path,
        errors: Option<&[String]>,
        object: &Reported,
        row: Option<&ObjectStatus>,
        in_sync: bool,
    ) -> Readiness {
        let Reported { kind, name, .. } = object;
        if let Some(errors) = errors {
            (
                "False",
                "InvalidSpec",
                format!(
                    "the file has errors; its last applied state keeps running: {}",
                    joined(errors)
                ),
            )
        } else if in_sync {
            match row {
                Some(r) if r.suspended => (
                    "True",
                    "Suspended",
                    "reconciled; suspend: true, so no new runs are scheduled".to_string(),
                ),
                _ => ("True", "Reconciled", String::new()),
            }
        } else if row.is_some_and(|r| !r.managed) {
            (
                "False",
                "NameTaken",
                format!("a {kind} named {name} was created by hand in the database; pgsched does not change rows it did not create: rename one of them"),
            )
        } else {
            self.not_applied(file)
        }
    }

    /// Why an object whose file is fine is not applied yet: what the last reconcile did.
    fn not_applied(&self, file: &Path) -> Readiness {
        match self.last {
            LastReconcile::Invalid => (
                "False",
                "Blocked",
                format!(
                    "not applied: other spec files have errors ({}); nothing is applied until they are fixed",
                    list_files(&self.broken)
                ),
            ),
            LastReconcile::ChecksFailed(by_file) => match by_file.get(file) {
                Some(messages) => ("False", "CheckFailed", joined(messages)),
                None => (
                    "False",
                    "Blocked",
                    format!(
                        "not applied: the checks against the database failed for {}",
                        list_files(&by_file.keys().collect::<Vec<_>>())
                    ),
                ),
            },
            LastReconcile::Refused => (
                "False",
                "Refused",
                "not applied: the reconcile would delete every managed object; run with --allow-empty if that is meant".to_string(),
            ),
            LastReconcile::Failed(e) => ("False", "ApplyFailed", e.clone()),
            LastReconcile::Pending | LastReconcile::Applied => (
                "False",
                "Pending",
                "waiting to be applied".to_string(),
            ),
        }
    }

    /// When the condition last changed: kept while its status and reason stay, now otherwise.
    fn transition_time(
        &mut self,
        status_file: &Path,
        object: &Reported,
        status: &str,
        reason: &str,
    ) -> String {
        let key = (
            status_file.to_path_buf(),
            object.kind.clone(),
            object.name.clone(),
        );
        let since = match self.transitions.get(&key) {
            Some((s, r, t)) if s == status && r == reason => t.clone(),
            _ => rfc3339(self.now),
        };
        self.transitions
            .insert(key, (status.into(), reason.into(), since.clone()));
        since
    }
}

fn entry(kind: String, name: String, row: Option<&ObjectStatus>, ready: Condition) -> StatusEntry {
    let runs = kind != "Connection" && kind != "File";
    StatusEntry {
        generation: row.map(|r| r.generation),
        conditions: vec![ready],
        next_schedule_time: row.and_then(|r| r.next_run_at).map(rfc3339),
        last_schedule_time: row.and_then(|r| r.last_scheduled_at).map(rfc3339),
        last_successful_time: row.and_then(|r| r.last_successful_at).map(rfc3339),
        active: row.filter(|_| runs).map(|r| r.active),
        last_run: row.and_then(|r| r.last_run.as_ref()).map(|l| LastRunEntry {
            id: l.id,
            status: l.status.clone(),
            attempt: l.attempt,
            started_at: l.started_at.map(rfc3339),
            finished_at: l.finished_at.map(rfc3339),
            duration_ms: l.duration_ms,
            worker: l.worker.clone(),
            error: l.error.as_ref().map(|e| first_line(e, 300)),
        }),
        totals: row.filter(|_| runs).map(|r| Totals {
            succeeded: r.succeeded,
            failed: r.failed,
            skipped: r.skipped,
        }),
        kind,
        name,
    }
}
