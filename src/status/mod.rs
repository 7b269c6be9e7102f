//! Status files: for each spec file `jobs/cleanup.yaml`, `jobs/cleanup.status.yaml` beside it
//! (or under `--status-dir`) saying, for each object of the file, whether it is reconciled,
//! when it runs next, how its last run went and its totals, built from the tables.
//!
//! Building is pure ([`build`]): the last look at the directory, the tables, and what the last
//! reconcile did go in; entries come out. [`StatusWriter`] writes them atomically (temporary
//! file, then rename), only when the content changes, and removes the status files of spec
//! files that are gone.

use crate::spec::Kind;
use crate::store::report::ObjectStatus;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

mod entries;
#[cfg(test)]
mod tests;

pub use entries::build;

/// The first line of every status file; also how we recognise our own files before removing one.
pub const HEADER: &str = "# Written by pgsched. Do not edit.\n";

/// One object of one spec file, as the directory had it at the last look.
#[derive(Debug, Clone, PartialEq)]
pub struct FileObject {
    /// The object's kind (`kind:` of its document).
    pub kind: Kind,
    /// The object's name, unique per kind.
    pub name: String,
    /// The hash of the spec as the file has it, to compare with the row's.
    pub spec_hash: String,
}

/// The last look at the spec directory: its files, their objects and their errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DirView {
    /// Every spec file, relative to the spec directory.
    pub files: Vec<PathBuf>,
    /// The objects each file declares (those that parsed); shared, as it is large and most
    /// looks change one entry of it.
    pub objects: std::sync::Arc<HashMap<PathBuf, Vec<FileObject>>>,
    /// Errors by file, each already written as `file:line:col: path: message`.
    pub errors: HashMap<PathBuf, Vec<String>>,
}

/// What the last reconcile did with the directory, for objects whose row does not match their
/// file yet.
#[derive(Debug, Clone, PartialEq)]
pub enum LastReconcile {
    /// None has run yet, or this replica does not lead and the leader has not caught up.
    Pending,
    /// The directory was applied (or nothing needed applying).
    Applied,
    /// Spec errors held everything back (the files are in [`DirView::errors`]).
    Invalid,
    /// Checks against the database failed: messages by file.
    ChecksFailed(HashMap<PathBuf, Vec<String>>),
    /// Refused because it would delete every managed object.
    Refused,
    /// The database failed us.
    Failed(String),
}

/// A Kubernetes-style condition of an entry; pgsched writes one, `Ready`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's `type`: always `Ready`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `"True"` or `"False"`, quoted as Kubernetes writes them.
    pub status: String,
    /// The generation the row holds, present only while it matches the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One CamelCase word: `Reconciled`, `InvalidSpec`, `Blocked`, `Pending`, …
    pub reason: String,
    /// What is wrong and what to do, for a person; empty when reconciled.
    pub message: String,
    /// When `status` or `reason` last changed (RFC 3339, kept across restarts).
    pub last_transition_time: String,
}

/// The latest run of an object that has left `pending`, in a status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastRunEntry {
    /// The run's id: `pgsched runs NAME` shows it in full.
    pub id: i64,
    /// `running`, `succeeded`, `failed`, `skipped`, `missed`, `cancelled` or `lost`.
    pub status: String,
    /// 1 for the first attempt, 2 for the first retry, …
    pub attempt: i32,
    /// When the run started (RFC 3339); absent for a run that never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When the run finished (RFC 3339); absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From start to finish, in milliseconds; absent unless it started and finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<i64>,
    /// The replica that ran it, as `host/pid`; absent when none took it (skipped, missed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Why it did not succeed: the error's first line, at most 300 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How an object's runs still in the history ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Runs that succeeded.
    pub succeeded: i64,
    /// Runs that failed or were lost (their worker died).
    pub failed: i64,
    /// Runs skipped (`concurrencyPolicy: Forbid`) or missed (never started in time).
    pub skipped: i64,
}

/// One object's entry in a status file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEntry {
    /// `Job`, `Chain`, `Timeout`, `Connection`, or `File` for a file that never parsed.
    pub kind: String,
    /// The object's name (the file's path for a `File` entry).
    pub name: String,
    /// The row's generation: 1 when created, plus one each time its file changed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Whether the row holds what the file says (`Ready`), and if not, why.
    pub conditions: Vec<Condition>,
    /// The next tick (a Timeout's next deadline), RFC 3339; absent: none planned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<String>,
    /// The tick of the latest scheduled run (on-demand runs have none), RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<String>,
    /// When the latest successful run finished, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<String>,
    /// Runs running now, on any replica; absent for Connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<i64>,
    /// The latest run that has left `pending`; absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<LastRunEntry>,
    /// Run counts over the kept history; absent for Connections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<Totals>,
}

/// When each object's Ready condition last changed, keyed by (status file, kind, name), so an
/// unchanged condition keeps its time and the file its content.
pub type Transitions = HashMap<(PathBuf, String, String), (String, String, String)>;

/// `2026-11-22T10:00:00Z`, as Kubernetes writes times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `jobs/cleanup.yaml` → `jobs/cleanup.status.yaml`.
pub fn status_path_of(spec: &Path) -> PathBuf {
    let stem = spec
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    spec.with_file_name(format!("{stem}.status.yaml"))
}

/// The first line of `text`, at most `max` characters: errors in one-line places.
pub fn first_line(text: &str, max: usize) -> String {
    text.lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(max)
        .collect()
}

/// A status file's text: the header, then the entries as a YAML list.
pub fn render(entries: &[StatusEntry]) -> String {
    let body = if entries.is_empty() {
        "[]\n".to_string()
    } else {
        serde_saphyr::to_string(&entries).expect("status entries serialise")
    };
    format!("{HEADER}{body}")
}

/// Reads a status file we wrote, for the times of its conditions; `None` when it is missing,
/// not ours, or not readable.
pub fn parse(text: &str) -> Option<Vec<StatusEntry>> {
    if !text.starts_with(HEADER) {
        return None;
    }
    serde_saphyr::from_str(text).ok()
}

/// What a round of writing did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Status files written because their content changed.
    pub written: usize,
    /// Status files left alone because their content was the same.
    pub unchanged: usize,
    /// Status files removed with their spec file.
    pub removed: usize,
    /// The first failure, in one line, with what to do.
    pub error: Option<String>,
}

/// Writes status files under a root: the spec directory itself or `--status-dir`.
#[derive(Debug)]
pub struct StatusWriter {
    root: PathBuf,
    /// True when `root` is the spec directory (so failures point to `--status-dir`).
    beside_specs: bool,
    /// Status files (relative) written in this process, so those of removed spec files can go.
    written: HashSet<PathBuf>,
    /// What each status file was last written with: most rounds change nothing, and with
    /// thousands of files, rendering and reading each back to compare would be the main cost.
    last_entries: HashMap<PathBuf, Vec<StatusEntry>>,
    transitions: Transitions,
    seeded: bool,
    /// The last failure reported, so a read-only directory is one log line, not one per round.
    reported: Option<String>,
}

impl StatusWriter {
    /// Writes beside the spec files in `spec_dir`, or under `status_dir` when given.
    pub fn new(spec_dir: &Path, status_dir: Option<&Path>) -> StatusWriter {
        StatusWriter {
            root: status_dir.unwrap_or(spec_dir).to_path_buf(),
            beside_specs: status_dir.is_none(),
            written: HashSet::new(),
            last_entries: HashMap::new(),
            transitions: Transitions::new(),
            seeded: false,
            reported: None,
        }
    }

    /// Builds and writes every status file; logs a failure once until it changes.
    pub fn update(
        &mut self,
        view: &DirView,
        tables: &[ObjectStatus],
        last: &LastReconcile,
        now: DateTime<Utc>,
    ) -> WriteReport {
        if !self.seeded {
            self.seed(view);
        }
        let files = build(view, tables, last, &mut self.transitions, now);
        let report = self.write(&files);
        match (&report.error, &self.reported) {
            (Some(e), Some(before)) if e == before => {}
            (Some(e), _) => {
                tracing::warn!("{e}");
                self.reported = Some(e.clone());
            }
            (None, Some(_)) => {
                tracing::info!(root = %self.root.display(), "status files are being written again");
                self.reported = None;
            }
            (None, None) => {}
        }
        report
    }

    /// Takes the condition times from the status files already there (from before a restart),
    /// so a restart does not reset every lastTransitionTime.
    fn seed(&mut self, view: &DirView) {
        self.seeded = true;
        for file in &view.files {
            let status_file = status_path_of(file);
            let Ok(text) = std::fs::read_to_string(self.root.join(&status_file)) else {
                continue;
            };
            for e in parse(&text).unwrap_or_default() {
                if let Some(c) = e.conditions.iter().find(|c| c.kind == "Ready") {
                    self.transitions.insert(
                        (status_file.clone(), e.kind.clone(), e.name.clone()),
                        (
                            c.status.clone(),
                            c.reason.clone(),
                            c.last_transition_time.clone(),
                        ),
                    );
                }
            }
            self.written.insert(status_file);
        }
    }

    fn write(&mut self, files: &BTreeMap<PathBuf, Vec<StatusEntry>>) -> WriteReport {
        let mut report = WriteReport::default();
        let mut current = HashSet::new();
        for (spec, entries) in files {
            let relative = status_path_of(spec);
            current.insert(relative.clone());
            if self.last_entries.get(&relative) == Some(entries) {
                report.unchanged += 1;
                continue;
            }
            let text = render(entries);
            match write_if_changed(&self.root.join(&relative), &text) {
                Ok(true) => {
                    report.written += 1;
                    self.last_entries.insert(relative.clone(), entries.clone());
                }
                Ok(false) => {
                    report.unchanged += 1;
                    self.last_entries.insert(relative.clone(), entries.clone());
                }
                Err(e) => {
                    if report.error.is_none() {
                        report.error = Some(self.explain(&relative, &e));
                    }
                    continue;
                }
            }
            self.written.insert(relative);
        }
        let gone: Vec<PathBuf> = self.written.difference(&current).cloned().collect();
        for relative in gone {
            let path = self.root.join(&relative);
            // Only a file we wrote: its first line is our header.
            let ours = std::fs::read_to_string(&path).is_ok_and(|t| t.starts_with(HEADER));
            if ours && std::fs::remove_file(&path).is_ok() {
                report.removed += 1;
            }
            self.transitions.retain(|(f, _, _), _| *f != relative);
            self.last_entries.remove(&relative);
            self.written.remove(&relative);
        }
        // Drop transitions of objects no longer listed anywhere.
        self.transitions
            .retain(|(f, _, _), _| current.contains(f.as_path()));
        report
    }

    fn explain(&self, relative: &Path, e: &std::io::Error) -> String {
        let path = self.root.join(relative);
        let read_only = matches!(
            e.raw_os_error(),
            Some(libc::EROFS | libc::EACCES | libc::EPERM)
        );
        if self.beside_specs && read_only {
            format!(
                "cannot write status files beside the specs ({}: {e}); the spec directory is read-only: give --status-dir DIR (an emptyDir in Kubernetes) to write them there",
                path.display()
            )
        } else {
            format!("cannot write the status file {}: {e}", path.display())
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, unless the file already
/// holds exactly that. True when it wrote.
pub fn write_if_changed(path: &Path, text: &str) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(false);
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Hidden, so the spec loader and editors' globs skip it even if we die before the rename.
    let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, text)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(true)
}
