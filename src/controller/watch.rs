//! Watching the spec directory: notify (inotify on Linux) through notify-debouncer-full, on the
//! directory (recursively, symlinks followed) and on the parents of every symlink on the way to
//! it, so that a git-sync symlink swap or a ConfigMap `..data` swap is seen like an edit.
//!
//! It owns turning file events into "the spec set changed" with a [`Scope`]: which files to read
//! again, or everything. Reads, our own status files and Git's bookkeeping are not changes. A
//! burst of events (a `git checkout`) is waited out ([`SpecChanges::settle`]) so that a
//! half-written checkout is never read.

use super::{SidecarConfig, SidecarError};
use crate::spec::{self, cache::Scope};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, DebouncedEvent};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;

/// The changes of the spec directory, as the reconciler wants them.
pub(super) struct SpecChanges {
    watcher: Watcher,
    events: mpsc::UnboundedReceiver<Change>,
    debounce: Duration,
}

impl SpecChanges {
    /// Starts watching `config.dir`.
    pub(super) fn start(config: &SidecarConfig) -> Result<SpecChanges, SidecarError> {
        let (tx, events) = mpsc::unbounded_channel();
        Ok(SpecChanges {
            watcher: Watcher::start(config, tx)?,
            events,
            debounce: config.debounce,
        })
    }

    /// Before a look: sets the watches again when the directory moved (a symlink swap), which
    /// makes the look one of everything. A failure is logged: the resync still looks.
    pub(super) fn rewatch(&mut self) -> bool {
        match self.watcher.rewatch_if_moved() {
            Ok(moved) => moved,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the spec directory; relying on --resync");
                false
            }
        }
    }

    /// The next change that matters, given the spec files read last (`known`); `None` for
    /// events that change nothing. Cancel-safe: nothing is lost when another cause comes first.
    pub(super) async fn next(&mut self, known: &BTreeSet<PathBuf>) -> Option<Option<Scope>> {
        let change = self.events.recv().await?;
        Some(self.scope(change, known))
    }

    /// Waits out a burst that began with `first` (a checkout writes many files), up to a few
    /// seconds, and returns everything it touched.
    pub(super) async fn settle(
        &mut self,
        first: Option<Scope>,
        known: &BTreeSet<PathBuf>,
    ) -> Scope {
        let quiet = debounce_timing(self.debounce).1 * 2;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut scope = first;
        loop {
            tokio::select! {
                Some(change) = self.events.recv() => {
                    let more = self.scope(change, known);
                    scope = merge(scope, more);
                    if tokio::time::Instant::now() >= deadline { break }
                }
                _ = tokio::time::sleep(quiet) => break,
            }
        }
        scope.unwrap_or(Scope::Everything)
    }

    fn scope(&self, change: Change, known: &BTreeSet<PathBuf>) -> Option<Scope> {
        match change {
            Change::Everything => Some(Scope::Everything),
            Change::Paths(paths) => scope_of(
                &paths,
                &self.watcher.dir,
                &self.watcher.entry_points(),
                known,
            ),
        }
    }
}

/// The file watcher: notify through the full debouncer, sending one [`Change`] per relevant
/// batch of events.
struct Watcher {
    debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
    dir: PathBuf,
    /// Where the directory resolved to when the recursive watch was set up.
    resolved: Option<PathBuf>,
    /// Parent directories watched for symlink swaps.
    parents: Vec<PathBuf>,
}

impl Watcher {
    fn start(
        config: &SidecarConfig,
        changes: mpsc::UnboundedSender<Change>,
    ) -> Result<Watcher, SidecarError> {
        let dir = config.dir.clone();
        let status_dir = config
            .status_dir
            .as_ref()
            .map(|d| std::path::absolute(d).unwrap_or(d.clone()));
        // Half the debounce here; the reconcile loop then waits for a quiet spell of two of
        // the debouncer's ticks, which chains the batches of a long burst (each path is
        // reported once quiet, so a large checkout arrives in batches one tick apart).
        let (wait, tick) = debounce_timing(config.debounce);
        let debouncer = new_debouncer(wait, Some(tick), move |result: DebounceEventResult| {
            let change = match &result {
                Ok(events) => {
                    let relevant: Vec<&DebouncedEvent> = events
                        .iter()
                        .filter(|e| is_relevant(e, status_dir.as_deref()))
                        .collect();
                    if relevant.is_empty() {
                        None
                    } else if relevant.iter().any(|e| e.need_rescan() || e.paths.is_empty()) {
                        Some(Change::Everything)
                    } else {
                        Some(Change::Paths(
                            relevant.iter().flat_map(|e| e.paths.iter().cloned()).collect(),
                        ))
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!(error = %e, "file watching reported an error; looking at the whole directory again");
                    }
                    Some(Change::Everything)
                }
            };
            if let Some(change) = change {
                let _ = changes.send(change);
            }
        })
        .map_err(|source| SidecarError::Watch {
            dir: dir.clone(),
            source,
        })?;
        let mut watcher = Watcher {
            debouncer,
            dir,
            resolved: None,
            parents: Vec::new(),
        };
        watcher.rewatch_if_moved()?;
        Ok(watcher)
    }

    /// (Re)sets the watches when the directory now resolves elsewhere (a symlink swap), or
    /// when it appeared after a start without it. Cheap when nothing moved.
    fn rewatch_if_moved(&mut self) -> Result<bool, SidecarError> {
        let resolved = std::fs::canonicalize(&self.dir).ok();
        if resolved == self.resolved && (resolved.is_some() || !self.parents.is_empty()) {
            return Ok(false);
        }
        if self.resolved.is_some() {
            let _ = self.debouncer.unwatch(&self.dir);
            tracing::info!(dir = %self.dir.display(), now = ?resolved, "the spec directory moved (symlink swap); watching its new target");
        }
        if resolved.is_some() {
            self.debouncer
                .watch(&self.dir, RecursiveMode::Recursive)
                .map_err(|source| SidecarError::Watch {
                    dir: self.dir.clone(),
                    source,
                })?;
        }
        self.resolved = resolved;
        // Every directory holding a symlink on the way to the spec directory, and its parent:
        // a swap there changes what the directory is without an event inside it.
        let mut parents = Vec::new();
        if let Some(parent) = self.dir.parent() {
            parents.push(parent.to_path_buf());
        }
        for ancestor in self.dir.ancestors().skip(1) {
            if std::fs::symlink_metadata(ancestor).is_ok_and(|m| m.file_type().is_symlink()) {
                if let Some(parent) = ancestor.parent() {
                    parents.push(parent.to_path_buf());
                }
            }
        }
        parents.sort();
        parents.dedup();
        for p in parents.iter().filter(|p| !self.parents.contains(p)) {
            if let Err(e) = self.debouncer.watch(p, RecursiveMode::NonRecursive) {
                tracing::debug!(dir = %p.display(), error = %e, "cannot watch a parent directory");
            }
        }
        self.parents = parents;
        Ok(true)
    }

    /// The paths outside the directory whose change matters: the directory itself and every
    /// symlink on the way to it (what the parent watches are for).
    fn entry_points(&self) -> Vec<PathBuf> {
        self.dir
            .ancestors()
            .filter(|a| {
                *a == self.dir
                    || std::fs::symlink_metadata(a).is_ok_and(|m| m.file_type().is_symlink())
            })
            .map(Path::to_path_buf)
            .collect()
    }
}

/// The debouncer's timeout and tick for a `--debounce`: an edit is applied about
/// `debounce` after the last write (the timeout, a tick of rounding, two ticks of quiet).
fn debounce_timing(debounce: Duration) -> (Duration, Duration) {
    let wait = (debounce / 2).max(Duration::from_millis(10));
    let tick = (debounce / 8).max(Duration::from_millis(5));
    (wait, tick)
}

/// What the watcher saw.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// These paths changed.
    Paths(Vec<PathBuf>),
    /// Events were lost or the watcher failed: look at everything.
    Everything,
}

/// Turns changed paths into what to read again: a few spec files, or everything when a
/// directory, a symlink or a hidden directory (a ConfigMap's `..data`) is involved. Paths
/// outside the directory matter only when they are the directory or a symlink on its way.
fn scope_of(
    paths: &[PathBuf],
    dir: &Path,
    entry_points: &[PathBuf],
    known: &BTreeSet<PathBuf>,
) -> Option<Scope> {
    let mut files = BTreeSet::new();
    for p in paths {
        let Ok(relative) = p.strip_prefix(dir) else {
            if entry_points.iter().any(|e| e == p) {
                return Some(Scope::Everything);
            }
            continue;
        };
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let Some((name, parents)) = parts.split_last() else {
            return Some(Scope::Everything); // the directory itself
        };
        if parents.iter().any(|c| c.starts_with('.')) {
            return Some(Scope::Everything);
        }
        if p.is_dir()
            || known
                .iter()
                .any(|k| k.starts_with(relative) && k != relative)
        {
            return Some(Scope::Everything);
        }
        if spec::is_spec_file_name(name) {
            files.insert(relative.to_path_buf());
        }
    }
    (!files.is_empty()).then_some(Scope::Files(files))
}

/// Merges two looks' worth of scope.
fn merge(a: Option<Scope>, b: Option<Scope>) -> Option<Scope> {
    match (a, b) {
        (Some(Scope::Everything), _) | (_, Some(Scope::Everything)) => Some(Scope::Everything),
        (Some(Scope::Files(mut x)), Some(Scope::Files(y))) => {
            x.extend(y);
            Some(Scope::Files(x))
        }
        (x, None) | (None, x) => x,
    }
}

/// Whether an event may change what the spec directory holds. Reads (opens) are not, nor our
/// own status files, nor Git's bookkeeping.
fn is_relevant(event: &DebouncedEvent, status_dir: Option<&Path>) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    match event.kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => {}
        EventKind::Access(_) => return false,
        _ => {}
    }
    event.paths.is_empty()
        || event.paths.iter().any(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default();
            let ours = spec::is_status_file_name(&name);
            let git = p.components().any(|c| c.as_os_str() == ".git");
            let in_status_dir = status_dir.is_some_and(|d| p.starts_with(d));
            !(ours || git || in_status_dir)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{AccessKind, AccessMode, CreateKind, EventKind};

    fn event(kind: EventKind, path: &str) -> DebouncedEvent {
        DebouncedEvent::new(
            notify::Event::new(kind).add_path(PathBuf::from(path)),
            std::time::Instant::now(),
        )
    }

    #[test]
    fn changed_paths_become_a_few_files_or_everything() {
        let dir = Path::new("/nonexistent/specs");
        let entry = vec![dir.to_path_buf(), PathBuf::from("/nonexistent/link")];
        let known: std::collections::BTreeSet<PathBuf> =
            [PathBuf::from("a.yaml"), PathBuf::from("jobs/b.yaml")].into();
        let scope = |paths: &[&str]| {
            let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
            scope_of(&paths, dir, &entry, &known)
        };
        let files = |names: &[&str]| Some(Scope::Files(names.iter().map(PathBuf::from).collect()));
        assert_eq!(scope(&["/nonexistent/specs/a.yaml"]), files(&["a.yaml"]));
        assert_eq!(
            scope(&[
                "/nonexistent/specs/.a.yaml.swp",
                "/nonexistent/specs/a.yaml",
                "/nonexistent/specs/new/c.yml"
            ]),
            files(&["a.yaml", "new/c.yml"])
        );
        // Editors' and our own temporary files alone change nothing.
        assert_eq!(
            scope(&["/nonexistent/specs/.a.yaml.swp", "/nonexistent/specs/4913"]),
            None
        );
        // A known directory moved or removed, a ConfigMap's hidden data directory, the
        // directory itself, or a symlink on its way: everything.
        assert_eq!(scope(&["/nonexistent/specs/jobs"]), Some(Scope::Everything));
        assert_eq!(
            scope(&["/nonexistent/specs/..2026_v2/a.yaml"]),
            Some(Scope::Everything)
        );
        assert_eq!(scope(&["/nonexistent/specs"]), Some(Scope::Everything));
        assert_eq!(scope(&["/nonexistent/link"]), Some(Scope::Everything));
        // Anything else beside the directory is none of our business.
        assert_eq!(scope(&["/nonexistent/other.txt"]), None);
        assert_eq!(
            merge(files(&["a.yaml"]), files(&["b.yaml"])),
            files(&["a.yaml", "b.yaml"])
        );
        assert_eq!(
            merge(files(&["a.yaml"]), Some(Scope::Everything)),
            Some(Scope::Everything)
        );
    }

    #[test]
    fn reads_status_files_and_git_are_not_changes() {
        let create = EventKind::Create(CreateKind::File);
        assert!(is_relevant(&event(create, "/s/a.yaml"), None));
        assert!(is_relevant(&event(create, "/s/..data"), None));
        assert!(!is_relevant(
            &event(
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                "/s/a.yaml"
            ),
            None
        ));
        assert!(is_relevant(
            &event(
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                "/s/a.yaml"
            ),
            None
        ));
        assert!(!is_relevant(&event(create, "/s/a.status.yaml"), None));
        assert!(!is_relevant(
            &event(create, "/s/.a.status.yaml.12.tmp"),
            None
        ));
        assert!(!is_relevant(&event(create, "/s/.git/index"), None));
        assert!(!is_relevant(
            &event(create, "/st/a.status.yaml"),
            Some(Path::new("/st"))
        ));
        assert!(!is_relevant(
            &event(create, "/st/x"),
            Some(Path::new("/st"))
        ));
    }
}
