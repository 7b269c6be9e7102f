//! The reconciler: turns one look at the spec directory into one applied plan. It reads the
//! files that may have changed (only those: a [`DirCache`] keeps the rest parsed), publishes
//! what the status files need ([`DirView`]), logs spec errors once per change of them, and,
//! while this replica leads, applies the directory (or the objects of a few changed files) in
//! one transaction. A failed apply is retried with back-off; it is this module's error policy,
//! apart from the loop that decides when to look ([`super::reconcile_loop`]).

use super::Shared;
use crate::backoff::Backoff;
use crate::plan::DesiredObject;
use crate::reconcile::{self, Outcome};
use crate::spec::cache::{DirCache, Scope};
use crate::spec::{self, SpecError};
use crate::status::{DirView, FileObject, LastReconcile};
use crate::store::session::{Session, SessionOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why the reconciler looks at the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    Start,
    FilesChanged,
    Resync,
    BecameLeader,
    Retry,
}

/// See the module documentation.
pub(super) struct Reconciler {
    shared: Arc<Shared>,
    /// `None` only while a look reads the directory on a blocking thread.
    cache: Option<DirCache>,
    /// The objects of every file, shared with the status writer.
    view_objects: Arc<HashMap<PathBuf, Vec<FileObject>>>,
    /// The spec errors logged last, so that an unchanged broken directory is logged once.
    logged_errors: Vec<String>,
    session: Session,
    /// When to try a failed apply again.
    retry_at: Option<tokio::time::Instant>,
    retry_backoff: Backoff,
}

impl Reconciler {
    pub(super) fn new(shared: Arc<Shared>) -> Reconciler {
        let session = Session::new(
            &shared.config.executor.database_url,
            SessionOptions::default(),
        );
        Reconciler {
            shared,
            cache: Some(DirCache::new()),
            view_objects: Arc::default(),
            logged_errors: Vec::new(),
            session,
            retry_at: None,
            retry_backoff: Backoff::new(Duration::from_millis(500), Duration::from_secs(10)),
        }
    }

    /// When a failed apply is to be tried again, if one failed.
    pub(super) fn retry_at(&self) -> Option<tokio::time::Instant> {
        self.retry_at
    }

    /// The spec files read last: what a file event is judged against.
    pub(super) fn known_files(&self) -> std::collections::BTreeSet<PathBuf> {
        self.cache
            .as_ref()
            .map(|c| c.files().into_iter().collect())
            .unwrap_or_default()
    }

    /// One look at the directory for `cause`, reading `scope`; applies it when this replica
    /// leads and something is to apply.
    pub(super) async fn look(&mut self, cause: Cause, scope: &Scope, is_leader: bool) {
        let started = Instant::now();
        if cause == Cause::Retry {
            self.retry_at = None;
        }
        let refreshed = self.read(scope).await;
        let read = started.elapsed();
        let cache = self.cache.as_ref().expect("put back after reading");
        // Same content (a touch, an editor's swap file) ends here. A resync, a new leadership
        // or a retry applies anyway: drift, a failed apply.
        let dirty = !cache.dirty().is_empty();
        let must_apply = is_leader && (cause != Cause::FilesChanged || dirty);
        if !(refreshed.changed || must_apply || cause == Cause::Start) {
            return;
        }
        let valid = self.publish(&refreshed.files);
        let parse = started.elapsed().checked_sub(read).unwrap();
        let last = if !valid {
            self.shared.metrics.reconciled("invalid", started.elapsed());
            LastReconcile::Invalid
        } else if must_apply || (is_leader && cause == Cause::Start) {
            self.apply_now(cause, scope, started).await
        } else {
            LastReconcile::Pending
        };
        tracing::debug!(
            ?cause,
            scope = match scope { Scope::Everything => "everything".to_string(), Scope::Files(f) => format!("{} files", f.len()) },
            read = ?read,
            parse = ?parse,
            apply = ?started.elapsed().checked_sub(read).unwrap().checked_sub(parse).unwrap(),
            "looked at the spec directory"
        );
        let shared = &self.shared;
        *shared.last.lock().expect("last lock") = last;
        shared.health.reconciled.store(true, Ordering::Relaxed);
        shared.status_wake.notify_one();
        super::status_loop::release_free_memory();
    }

    /// Reads what `scope` says may have changed, on a blocking thread.
    async fn read(&mut self, scope: &Scope) -> spec::cache::Refreshed {
        let dir = self.shared.config.dir.clone();
        let scope = scope.clone();
        let mut cache = self
            .cache
            .take()
            .expect("the cache is put back after every look");
        let (cache, refreshed) = tokio::task::spawn_blocking(move || {
            let refreshed = cache.refresh(&dir, &scope);
            (cache, refreshed)
        })
        .await
        .expect("reading the spec directory panicked");
        self.cache = Some(cache);
        refreshed
    }

    /// Publishes the look for the status files and the metrics, and logs the spec errors when
    /// they changed. False when the directory has errors (nothing is applied then).
    fn publish(&mut self, changed_files: &std::collections::BTreeSet<PathBuf>) -> bool {
        let cache = self.cache.as_ref().expect("put back after reading");
        let config = &self.shared.config;
        for file in changed_files {
            let objects: Vec<FileObject> = cache
                .objects_in(&std::iter::once(file.clone()).collect())
                .into_iter()
                .map(|o| {
                    let desired = DesiredObject::from_object(o);
                    FileObject {
                        kind: o.kind,
                        name: desired.name,
                        spec_hash: desired.spec_hash,
                    }
                })
                .collect();
            // Copied only while the status writer still holds the previous view.
            let shared_objects = Arc::make_mut(&mut self.view_objects);
            if objects.is_empty() {
                shared_objects.remove(file);
            } else {
                shared_objects.insert(file.clone(), objects);
            }
        }
        let spec_errors = cache.errors(&config.dir);
        let view = dir_view(&config.dir, cache.files(), &self.view_objects, &spec_errors);
        let metrics = &self.shared.metrics;
        metrics.spec_files.set(view.files.len() as i64);
        metrics.spec_errors.set(spec_errors.len() as i64);
        let errors: Vec<String> = spec_errors
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        if errors != self.logged_errors {
            for e in &errors {
                tracing::warn!("{e}");
            }
            if !errors.is_empty() {
                tracing::warn!(
                    errors = errors.len(),
                    files = view.errors.len(),
                    "the spec directory has errors: nothing is applied until they are fixed; the last applied state keeps running"
                );
            } else if !self.logged_errors.is_empty() {
                tracing::info!("the spec directory has no errors any more");
            }
            self.logged_errors = errors;
        }
        *self.shared.view.lock().expect("view lock") = Some(Arc::new(view));
        spec_errors.is_empty()
    }

    /// Applies the valid directory: a few changed files' objects after an edit, everything
    /// otherwise (start, resync, leadership, retry, a directory swap). Schedules a retry of a
    /// failed apply.
    async fn apply_now(&mut self, cause: Cause, scope: &Scope, started: Instant) -> LastReconcile {
        let cache = self.cache.as_ref().expect("put back after reading");
        let partial = match (scope, cause) {
            (Scope::Files(_), Cause::FilesChanged) => Some(reconcile::Partial {
                names: cache.dirty().keys.iter().map(|(_, n)| n.clone()).collect(),
            }),
            _ => None,
        };
        let objects = match &partial {
            Some(_) => cache.objects_in(&cache.dirty().files),
            None => cache.objects(),
        };
        let last = apply(
            &self.shared,
            &mut self.session,
            &objects,
            partial.as_ref(),
            started,
        )
        .await;
        match &last {
            LastReconcile::Applied => {
                self.cache.as_mut().expect("put back").clear_dirty();
                self.retry_at = None;
                self.retry_backoff.reset();
            }
            LastReconcile::Failed(_) => {
                self.retry_at = Some(tokio::time::Instant::now() + self.retry_backoff.next_wait());
            }
            _ => {}
        }
        last
    }
}

/// Applies a valid directory on the session, which is kept for the next time.
async fn apply(
    shared: &Shared,
    session: &mut Session,
    objects: &[&spec::Object],
    partial: Option<&reconcile::Partial>,
    started: Instant,
) -> LastReconcile {
    let config = &shared.config;
    let c = match session.client().await {
        Ok(c) => c,
        Err(e) => {
            shared.health.connected.store(false, Ordering::Relaxed);
            shared.metrics.reconciled("error", started.elapsed());
            tracing::warn!(error = %e, "cannot reconcile: no database connection");
            return LastReconcile::Failed(e.to_string());
        }
    };
    let outcome =
        reconcile::apply_in_scope(c, &config.dir, objects, partial, config.allow_empty).await;
    let took = started.elapsed();
    match outcome {
        Err(e) => {
            shared.metrics.reconciled("error", took);
            tracing::warn!(error = %e, "the reconcile failed; retrying");
            session.disconnect();
            LastReconcile::Failed(e.to_string())
        }
        Ok(Outcome::Invalid(_)) => {
            shared.metrics.reconciled("invalid", took);
            LastReconcile::Invalid
        }
        Ok(Outcome::Applied(report)) => {
            shared.health.connected.store(true, Ordering::Relaxed);
            if report.plan.is_empty() {
                shared.metrics.reconciled("unchanged", took);
                tracing::debug!(took = ?took, "reconciled: nothing to change");
            } else {
                shared.metrics.reconciled("applied", took);
                let s = report.plan.summary();
                for change in &report.plan.changes {
                    tracing::info!(object = %change.key(), action = ?change.action, "applied");
                }
                tracing::info!(added = s.add, changed = s.change, deleted = s.delete, took = ?took, "reconciled");
            }
            LastReconcile::Applied
        }
        Ok(Outcome::RefusedWipeOut(report)) => {
            shared.metrics.reconciled("refused", took);
            tracing::error!(
                managed = report.plan.managed_before,
                "refused: this reconcile would delete every object pgsched manages (an empty or wrongly mounted directory?); nothing was changed. Run with --allow-empty if that is meant"
            );
            LastReconcile::Refused
        }
        Ok(Outcome::Planned(report)) => {
            shared.metrics.reconciled("check_failed", took);
            let mut by_file: HashMap<PathBuf, Vec<String>> = HashMap::new();
            for e in &report.checks.errors {
                tracing::warn!("{e}");
                let file = relative_to(&config.dir, &e.file);
                by_file.entry(file).or_default().push(e.to_string());
            }
            for conflict in &report.plan.conflicts {
                let message = format!(
                    "{}/{} is already in the database, created by hand; pgsched does not take over rows it did not create: rename one of them",
                    conflict.kind.slug(),
                    conflict.name
                );
                tracing::warn!("{}: {message}", conflict.source_file);
                by_file
                    .entry(PathBuf::from(&conflict.source_file))
                    .or_default()
                    .push(message);
            }
            tracing::warn!("nothing was applied: the checks against the database failed");
            LastReconcile::ChecksFailed(by_file)
        }
    }
}

fn relative_to(dir: &Path, file: &Path) -> PathBuf {
    file.strip_prefix(dir).unwrap_or(file).to_path_buf()
}

/// What the status files need from a look at the directory.
fn dir_view(
    dir: &Path,
    files: Vec<PathBuf>,
    objects: &Arc<HashMap<PathBuf, Vec<FileObject>>>,
    errors: &[SpecError],
) -> DirView {
    let mut view = DirView {
        objects: objects.clone(),
        ..Default::default()
    };
    for e in errors {
        let file = relative_to(dir, &e.file);
        if files.contains(&file) {
            view.errors.entry(file).or_default().push(e.to_string());
        } else {
            // The directory itself could not be read: every file is affected.
            for f in &files {
                view.errors
                    .entry(f.clone())
                    .or_default()
                    .push(e.to_string());
            }
        }
    }
    view.files = files;
    view
}
