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
    let rows: HashMap<(&str, &str), &ObjectStatus> = tables
        .iter()
        .map(|r| ((r.kind.as_str(), r.name.as_str()), r))
        .collect();
    // Rows by the file that declared them: a file that no longer parses still lists them.
    let mut rows_by_file: HashMap<&str, Vec<&ObjectStatus>> = HashMap::new();
    for r in tables.iter().filter(|r| r.managed) {
        if let Some(file) = &r.source_file {
            rows_by_file.entry(file.as_str()).or_default().push(r);
        }
    }
    let broken: Vec<&PathBuf> = view.errors.keys().collect();
    let mut out = BTreeMap::new();
    for file in &view.files {
        let key = file.to_string_lossy().replace('\\', "/");
        let status_file = status_path_of(file);
        let errors = view.errors.get(file);
        // The objects to report: the file's, then rows the file declared before and no longer
        // parses into (their last good state keeps running).
        let mut objects: Vec<(String, String, Option<&str>)> = view
            .objects
            .get(file)
            .map(|objs| {
                objs.iter()
                    .map(|o| {
                        (
                            o.kind.as_str().to_string(),
                            o.name.clone(),
                            Some(o.spec_hash.as_str()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if errors.is_some() {
            for r in rows_by_file.get(key.as_str()).into_iter().flatten() {
                if !objects.iter().any(|(k, n, _)| *k == r.kind && *n == r.name) {
                    objects.push((r.kind.clone(), r.name.clone(), None));
                }
            }
        }
        if objects.is_empty() && errors.is_some() {
            // Nothing parsed and nothing known: one entry for the file itself.
            objects.push(("File".into(), key.clone(), None));
        }
        let mut entries = Vec::with_capacity(objects.len());
        for (kind, name, desired_hash) in objects {
            let row = rows.get(&(kind.as_str(), name.as_str())).copied();
            let in_sync = match (row, desired_hash) {
                (Some(r), Some(h)) => r.managed && r.spec_hash.as_deref() == Some(h),
                _ => false,
            };
            let (status, reason, message) = if let Some(errors) = errors {
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
            } else if let Some(r) = row.filter(|r| !r.managed) {
                let _ = r;
                (
                    "False",
                    "NameTaken",
                    format!("a {kind} named {name} was created by hand in the database; pgsched does not change rows it did not create: rename one of them"),
                )
            } else {
                match last {
                    LastReconcile::Invalid => (
                        "False",
                        "Blocked",
                        format!(
                            "not applied: other spec files have errors ({}); nothing is applied until they are fixed",
                            list_files(&broken)
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
            };
            let key = (status_file.clone(), kind.clone(), name.clone());
            let since = match transitions.get(&key) {
                Some((s, r, t)) if s == status && r == reason => t.clone(),
                _ => rfc3339(now),
            };
            transitions.insert(key, (status.into(), reason.into(), since.clone()));
            let condition = Condition {
                kind: "Ready".into(),
                status: status.into(),
                observed_generation: row.filter(|_| in_sync).map(|r| r.generation),
                reason: reason.into(),
                message,
                last_transition_time: since,
            };
            entries.push(entry(kind, name, row, condition));
        }
        out.insert(file.clone(), entries);
    }
    out
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
            Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::report::LastRun;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn row(kind: &str, name: &str, hash: &str, file: &str) -> ObjectStatus {
        ObjectStatus {
            kind: kind.into(),
            name: name.into(),
            schedule: Some("0 2 * * *".into()),
            suspended: false,
            generation: 3,
            source_file: Some(file.into()),
            spec_hash: Some(hash.into()),
            managed: true,
            next_run_at: Some(t("2026-11-23T02:00:00Z")),
            active: 0,
            succeeded: 212,
            failed: 3,
            skipped: 0,
            last_run: Some(LastRun {
                id: 8812,
                status: "succeeded".into(),
                attempt: 1,
                started_at: Some(t("2026-11-22T02:00:00Z")),
                finished_at: Some(t("2026-11-22T02:00:01Z")),
                duration_ms: Some(812),
                worker: Some("db-1/4711".into()),
                error: None,
            }),
            last_successful_at: Some(t("2026-11-22T02:00:01Z")),
            last_scheduled_at: Some(t("2026-11-22T02:00:00Z")),
        }
    }

    fn view(file: &str, objects: &[(Kind, &str, &str)]) -> DirView {
        let mut v = DirView {
            files: vec![PathBuf::from(file)],
            ..Default::default()
        };
        std::sync::Arc::make_mut(&mut v.objects).insert(
            file.into(),
            objects
                .iter()
                .map(|(k, n, h)| FileObject {
                    kind: *k,
                    name: n.to_string(),
                    spec_hash: h.to_string(),
                })
                .collect(),
        );
        v
    }

    const NOW: &str = "2026-11-22T10:00:00Z";

    #[test]
    fn a_reconciled_job_carries_its_runs() {
        let v = view("jobs/cleanup.yaml", &[(Kind::Job, "nightly-vacuum", "h1")]);
        let rows = [row("Job", "nightly-vacuum", "h1", "jobs/cleanup.yaml")];
        let mut tr = Transitions::new();
        let files = build(&v, &rows, &LastReconcile::Applied, &mut tr, t(NOW));
        let entries = &files[Path::new("jobs/cleanup.yaml")];
        assert_eq!(entries.len(), 1);
        let e = &entries[0];
        assert_eq!(e.conditions[0].status, "True");
        assert_eq!(e.conditions[0].reason, "Reconciled");
        assert_eq!(e.conditions[0].observed_generation, Some(3));
        assert_eq!(
            e.next_schedule_time.as_deref(),
            Some("2026-11-23T02:00:00Z")
        );
        assert_eq!(e.totals.as_ref().unwrap().succeeded, 212);
        assert_eq!(e.last_run.as_ref().unwrap().duration_ms, Some(812));
        let text = render(entries);
        assert!(text.starts_with(HEADER));
        assert!(
            text.contains("status: \"True\"") || text.contains("status: 'True'"),
            "{text}"
        );
        assert!(
            text.contains("lastTransitionTime: 2026-11-22T10:00:00Z")
                || text.contains("lastTransitionTime: \"2026-11-22T10:00:00Z\""),
            "{text}"
        );
        // What we write, we read back the same (for the transition times after a restart).
        assert_eq!(parse(&text).unwrap(), *entries);
    }

    #[test]
    fn an_unchanged_condition_keeps_its_time_and_a_change_moves_it() {
        let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
        let rows = [row("Job", "a", "h1", "a.yaml")];
        let mut tr = Transitions::new();
        build(&v, &rows, &LastReconcile::Applied, &mut tr, t(NOW));
        let later = build(
            &v,
            &rows,
            &LastReconcile::Applied,
            &mut tr,
            t("2026-11-22T11:00:00Z"),
        );
        assert_eq!(
            later[Path::new("a.yaml")][0].conditions[0].last_transition_time,
            NOW
        );
        let edited = view("a.yaml", &[(Kind::Job, "a", "h2")]);
        let pending = build(
            &edited,
            &rows,
            &LastReconcile::Pending,
            &mut tr,
            t("2026-11-22T12:00:00Z"),
        );
        let c = &pending[Path::new("a.yaml")][0].conditions[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Pending"));
        assert_eq!(c.last_transition_time, "2026-11-22T12:00:00Z");
        assert_eq!(c.observed_generation, None);
    }

    #[test]
    fn a_broken_file_lists_its_last_good_objects_as_not_ready() {
        let mut v = view("a.yaml", &[]);
        std::sync::Arc::make_mut(&mut v.objects).clear();
        v.errors.insert(
            "a.yaml".into(),
            vec!["a.yaml:4:3: spec.schedule: not a cron expression".into()],
        );
        let rows = [row("Job", "a", "h1", "a.yaml")];
        let files = build(
            &v,
            &rows,
            &LastReconcile::Invalid,
            &mut Transitions::new(),
            t(NOW),
        );
        let e = &files[Path::new("a.yaml")][0];
        assert_eq!(e.name, "a");
        assert_eq!(e.conditions[0].reason, "InvalidSpec");
        assert!(
            e.conditions[0].message.contains("a.yaml:4:3"),
            "{}",
            e.conditions[0].message
        );
        // Its last applied state still runs: the runs are still reported.
        assert!(e.last_run.is_some());
    }

    #[test]
    fn a_file_that_never_parsed_gets_one_entry() {
        let mut v = view("new.yaml", &[]);
        v.errors
            .insert("new.yaml".into(), vec!["new.yaml:1:1: invalid YAML".into()]);
        let files = build(
            &v,
            &[],
            &LastReconcile::Invalid,
            &mut Transitions::new(),
            t(NOW),
        );
        let e = &files[Path::new("new.yaml")][0];
        assert_eq!((e.kind.as_str(), e.name.as_str()), ("File", "new.yaml"));
        assert_eq!(e.conditions[0].status, "False");
    }

    #[test]
    fn a_good_file_is_blocked_by_a_broken_one() {
        let mut v = view("good.yaml", &[(Kind::Job, "new-job", "h9")]);
        v.files.push("bad.yaml".into());
        v.errors
            .insert("bad.yaml".into(), vec!["bad.yaml:2:1: oops".into()]);
        let files = build(
            &v,
            &[],
            &LastReconcile::Invalid,
            &mut Transitions::new(),
            t(NOW),
        );
        let c = &files[Path::new("good.yaml")][0].conditions[0];
        assert_eq!(c.reason, "Blocked");
        assert!(c.message.contains("bad.yaml"));
    }

    #[test]
    fn check_failures_name_the_object_file() {
        let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
        let mut by_file = HashMap::new();
        by_file.insert(
            PathBuf::from("a.yaml"),
            vec!["a.yaml:7:5: spec.sql: relation \"nope\" does not exist".to_string()],
        );
        let files = build(
            &v,
            &[],
            &LastReconcile::ChecksFailed(by_file),
            &mut Transitions::new(),
            t(NOW),
        );
        let c = &files[Path::new("a.yaml")][0].conditions[0];
        assert_eq!(c.reason, "CheckFailed");
        assert!(c.message.contains("nope"));
    }

    #[test]
    fn a_hand_made_row_with_the_same_name_is_reported() {
        let v = view("a.yaml", &[(Kind::Job, "a", "h1")]);
        let mut r = row("Job", "a", "other", "");
        r.managed = false;
        let files = build(
            &v,
            &[r],
            &LastReconcile::Applied,
            &mut Transitions::new(),
            t(NOW),
        );
        assert_eq!(
            files[Path::new("a.yaml")][0].conditions[0].reason,
            "NameTaken"
        );
    }

    #[test]
    fn status_paths() {
        assert_eq!(
            status_path_of(Path::new("jobs/cleanup.yaml")),
            PathBuf::from("jobs/cleanup.status.yaml")
        );
        assert_eq!(
            status_path_of(Path::new("a.yml")),
            PathBuf::from("a.status.yaml")
        );
    }

    #[test]
    fn writing_only_when_the_content_changes_and_removing_what_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = StatusWriter::new(dir.path(), None);
        let v = view("sub/a.yaml", &[(Kind::Job, "a", "h1")]);
        let rows = [row("Job", "a", "h1", "sub/a.yaml")];
        let r = w.update(&v, &rows, &LastReconcile::Applied, t(NOW));
        assert_eq!((r.written, r.unchanged), (1, 0));
        let path = dir.path().join("sub/a.status.yaml");
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        let r = w.update(
            &v,
            &rows,
            &LastReconcile::Applied,
            t("2026-11-22T11:00:00Z"),
        );
        assert_eq!((r.written, r.unchanged), (0, 1));
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            before
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let empty = DirView::default();
        let r = w.update(&empty, &[], &LastReconcile::Applied, t(NOW));
        assert_eq!(r.removed, 1);
        assert!(!path.exists());
    }

    #[test]
    fn a_read_only_spec_directory_points_to_status_dir() {
        let dir = tempfile::tempdir().unwrap();
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        std::fs::write(ro.join("a.yaml"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        if std::fs::write(ro.join("probe"), "").is_ok() {
            // Root ignores permissions: nothing to test here.
            let _ = std::fs::remove_file(ro.join("probe"));
            return;
        }
        let mut w = StatusWriter::new(&ro, None);
        let r = w.update(
            &view("a.yaml", &[(Kind::Job, "a", "h1")]),
            &[],
            &LastReconcile::Pending,
            t(NOW),
        );
        let e = r.error.unwrap();
        assert!(e.contains("--status-dir"), "{e}");
        let mut w = StatusWriter::new(&ro, Some(&dir.path().join("status")));
        let r = w.update(
            &view("a.yaml", &[(Kind::Job, "a", "h1")]),
            &[],
            &LastReconcile::Pending,
            t(NOW),
        );
        assert_eq!((r.written, r.error), (1, None));
    }
}
