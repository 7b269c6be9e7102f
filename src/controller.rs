//! `pgsched run`, the sidecar: wires the watcher, the leadership, the reconciler, the status
//! writer, the executor, the Timeout loop and the HTTP endpoints together, and stops them in
//! order on shutdown.
//!
//! - **Watching**: notify (inotify on Linux) through notify-debouncer-full, on the spec
//!   directory (recursively, symlinks followed) and on the parents of every symlink on the way
//!   to it, so a git-sync symlink swap or a ConfigMap `..data` swap is seen like an edit. A
//!   burst of events (a `git checkout`) is waited out before the directory is read, so a
//!   half-written checkout is never applied. A periodic resync is the safety net for lost
//!   events and repairs drift.
//! - **Nothing changed, nothing done**: every look reads the files and hashes them; an
//!   unchanged hash ends the look before any parsing or SQL.
//! - **One writer**: a replica applies only while it holds the leadership lock (see
//!   [`crate::store::leader`]); every replica executes and writes status files.

use crate::backoff::{pause, Backoff};
use crate::executor::{self, Clock, ExecutorConfig, SystemClock};
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::plan::DesiredObject;
use crate::reconcile::{self, Outcome};
use crate::spec::cache::{DirCache, Scope};
use crate::spec::{self, SpecError};
use crate::status::{DirView, FileObject, LastReconcile, StatusWriter};
use crate::store::{self, leader, migrations::migrate, report, StoreError};
use crate::timeout::{self, TimeoutConfig};
use notify::RecursiveMode;
use notify_debouncer_full::{new_debouncer, DebounceEventResult, DebouncedEvent};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// How the sidecar runs; `pgsched run`'s flags.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// The spec directory.
    pub dir: PathBuf,
    /// Where status files go instead of beside the specs (for a read-only spec mount).
    pub status_dir: Option<PathBuf>,
    /// The executor's settings, with the database URL.
    pub executor: ExecutorConfig,
    /// A full reconcile this often even without events: lost events, drift.
    pub resync: Duration,
    /// Quiet time after the last file event before the directory is read.
    pub debounce: Duration,
    /// Status files are refreshed this often (and after every reconcile).
    pub status_interval: Duration,
    /// How often a replica that does not lead tries to take the leadership.
    pub leader_retry: Duration,
    /// Allow a reconcile that deletes every managed object.
    pub allow_empty: bool,
    /// False: execute only (no watching, no reconciling, no status files).
    pub reconcile: bool,
}

impl SidecarConfig {
    pub fn new(dir: impl Into<PathBuf>, database_url: impl Into<String>) -> SidecarConfig {
        SidecarConfig {
            dir: dir.into(),
            status_dir: None,
            executor: ExecutorConfig::new(database_url),
            resync: Duration::from_secs(60),
            debounce: Duration::from_millis(100),
            status_interval: Duration::from_secs(5),
            leader_retry: Duration::from_secs(1),
            allow_empty: false,
            reconcile: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("cannot watch the spec directory {dir}: {source}")]
    Watch {
        dir: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error(transparent)]
    Executor(#[from] executor::ExecutorError),
    #[error("the HTTP endpoints failed: {0}")]
    Http(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the loops share.
struct Shared {
    config: SidecarConfig,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    /// The last look at the directory; `None` before the first.
    view: Mutex<Option<Arc<DirView>>>,
    last: Mutex<LastReconcile>,
    /// Wakes the status writer after a reconcile.
    status_wake: Notify,
    /// Wakes the status writer (not more often than its rounds allow) when a run of this
    /// process finished, so a status file shows it without waiting for `status_interval`.
    runs_finished: Arc<Notify>,
}

/// The executor's observer in the sidecar: metrics, and a nudge for the status files.
struct SidecarObserver {
    metrics: Arc<Metrics>,
    runs_finished: Arc<Notify>,
}

impl executor::RunObserver for SidecarObserver {
    fn started(&self, job: &str, lateness: Duration) {
        self.metrics.started(job, lateness);
    }
    fn finished(&self, job: &str, outcome: &str, took: Duration) {
        self.metrics.finished(job, outcome, took);
        self.runs_finished.notify_one();
    }
}

/// Runs the sidecar until `shutdown` is cancelled. `listener`, when given, serves /healthz,
/// /readyz and /metrics from the start (so a probe gets an answer while the database is still
/// coming up).
pub async fn run_sidecar(
    mut config: SidecarConfig,
    listener: Option<tokio::net::TcpListener>,
    shutdown: CancellationToken,
) -> Result<(), SidecarError> {
    // Absolute but not canonical: symlinks stay in the path, so a swap of one is followed.
    config.dir = std::path::absolute(&config.dir).unwrap_or(config.dir.clone());
    let timeout_metrics = Arc::new(timeout::TimeoutMetrics::default());
    let metrics = Arc::new(Metrics::new(timeout_metrics.clone()));
    let runs_finished = Arc::new(Notify::new());
    config.executor.observer = executor::Observer(Some(Arc::new(SidecarObserver {
        metrics: metrics.clone(),
        runs_finished: runs_finished.clone(),
    })));
    let health = Arc::new(Health::default());
    if !config.reconcile {
        health.reconciled.store(true, Ordering::Relaxed);
    }
    let http_stop = CancellationToken::new();
    let http_task = listener.map(|listener| {
        tokio::spawn(http::serve(
            listener,
            health.clone(),
            metrics.clone(),
            http_stop.clone(),
        ))
    });

    let url = config.executor.database_url.clone();
    let Some(()) = migrate_when_reachable(&url, &health, &shutdown).await else {
        http_stop.cancel();
        return Ok(());
    };

    let shared = Arc::new(Shared {
        config: config.clone(),
        health: health.clone(),
        metrics: metrics.clone(),
        view: Mutex::new(None),
        last: Mutex::new(LastReconcile::Pending),
        status_wake: Notify::new(),
        runs_finished,
    });

    let loops_stop = CancellationToken::new();
    let mut background = tokio::task::JoinSet::new();
    if config.reconcile {
        let (leader_tx, leader_rx) = watch::channel(false);
        background.spawn(lead(shared.clone(), leader_tx, loops_stop.clone()));
        let (changes_tx, changes_rx) = mpsc::unbounded_channel::<Change>();
        let watcher = Watcher::start(&config, changes_tx)?;
        background.spawn(reconcile_loop(
            shared.clone(),
            watcher,
            changes_rx,
            leader_rx,
            loops_stop.clone(),
        ));
        background.spawn(status_loop(shared.clone(), loops_stop.clone()));
    } else {
        background.spawn(backlog_loop(shared.clone(), loops_stop.clone()));
    }

    let mut timeouts = TimeoutConfig::new(url.clone());
    timeouts.poll = config.executor.poll;
    timeouts.metrics = timeout_metrics;
    let timeout_loop = tokio::spawn(timeout::run_timeouts(timeouts, shutdown.clone()));
    tracing::info!(worker = %config.executor.worker, dir = %config.dir.display(), "executing due runs and expiring timeouts");
    let executed = executor::run_executor(
        config.executor.clone(),
        Arc::new(SystemClock) as Arc<dyn Clock>,
        shutdown.clone(),
    )
    .await;
    // The executor returns after shutdown (and its grace); stop the rest.
    shutdown.cancel();
    loops_stop.cancel();
    // The loops stop between steps; one stuck on a database that does not answer is not
    // waited for long.
    let stopped = tokio::time::timeout(Duration::from_secs(5), async {
        while background.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!("a reconcile or status round did not finish within 5 s; stopping it");
        background.abort_all();
        while background.join_next().await.is_some() {}
    }
    match timeout_loop.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "the timeout loop stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the timeout loop panicked"),
        Ok(Ok(())) => {}
    }
    http_stop.cancel();
    if let Some(task) = http_task {
        match task.await {
            Ok(Err(e)) => return Err(SidecarError::Http(e)),
            Err(e) => tracing::warn!(error = %e, "the HTTP server panicked"),
            Ok(Ok(())) => {}
        }
    }
    executed?;
    Ok(())
}

/// Connects and migrates, retrying with back-off while the database is not there yet (a pod's
/// containers start in any order). `None` when shut down first.
async fn migrate_when_reachable(
    url: &str,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = async {
            let mut client = store::connect(url).await?;
            health.connected.store(true, Ordering::Relaxed);
            migrate(&mut client).await
        };
        match attempt.await {
            Ok(_) => {
                health.migrated.store(true, Ordering::Relaxed);
                return Some(());
            }
            Err(e) => {
                health.connected.store(false, Ordering::Relaxed);
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "cannot prepare the database yet");
                if !pause(wait, shutdown).await {
                    return None;
                }
            }
        }
    }
}

/// Holds the leadership lock while it can; tells the reconciler through `leading`.
async fn lead(shared: Arc<Shared>, leading: watch::Sender<bool>, stop: CancellationToken) {
    let config = &shared.config;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut held = false;
    let mut first = true;
    loop {
        let step = async {
            if client.is_none() {
                client = Some(
                    leader::connect_leader(&config.executor.database_url, &config.executor.worker)
                        .await?,
                );
            }
            let c = client.as_ref().expect("just connected");
            if held {
                leader::still_leading(c).await
            } else {
                leader::try_lead(c).await
            }
        };
        // A database that stops answering must not leave us believing we lead.
        let step = tokio::time::timeout(Duration::from_secs(5), step);
        let now_held = match step.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the leadership check got no answer within 5 s".into(),
            ))
        }) {
            Ok(h) => h,
            Err(e) => {
                if held {
                    tracing::warn!(error = %e, "lost the leadership connection");
                } else {
                    tracing::debug!(error = %e, "cannot try the leadership");
                }
                client = None;
                false
            }
        };
        if first {
            // The reconciler waits for this first answer, so a lone replica's first look
            // applies rather than only looking.
            first = false;
            held = now_held;
            if held {
                tracing::info!(worker = %config.executor.worker, "took the reconcile leadership");
            }
            shared.metrics.leader.set(held as i64);
            leading.send_replace(held);
        } else if now_held != held {
            held = now_held;
            if held {
                tracing::info!(worker = %config.executor.worker, "took the reconcile leadership");
            } else {
                tracing::warn!("gave up the reconcile leadership");
            }
            shared.metrics.leader.set(held as i64);
            let _ = leading.send(held);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.leader_retry) => {}
        }
    }
    // Dropping the connection releases the lock at once for the next replica.
    drop(client);
    shared.metrics.leader.set(0);
}

/// The file watcher: notify through the full debouncer, sending one `()` per relevant batch.
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
    known: &std::collections::BTreeSet<PathBuf>,
) -> Option<Scope> {
    let mut files = std::collections::BTreeSet::new();
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
            let ours = name.ends_with(".status.yaml")
                || name.ends_with(".status.yml")
                || (name.starts_with('.') && name.ends_with(".tmp") && name.contains(".status."));
            let git = p.components().any(|c| c.as_os_str() == ".git");
            let in_status_dir = status_dir.is_some_and(|d| p.starts_with(d));
            !(ours || git || in_status_dir)
        })
}

/// Why the reconciler looks at the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Start,
    FilesChanged,
    Resync,
    BecameLeader,
    Retry,
}

/// Looks at the directory on every cause and, while leading, applies it.
async fn reconcile_loop(
    shared: Arc<Shared>,
    mut watcher: Watcher,
    mut changes: mpsc::UnboundedReceiver<Change>,
    mut leading: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let config = &shared.config;
    let mut client: Option<tokio_postgres::Client> = None;
    let mut cache = Some(DirCache::new());
    let mut view_objects: Arc<HashMap<PathBuf, Vec<FileObject>>> = Arc::default();
    let mut logged_errors: Vec<String> = Vec::new();
    let mut resync = tokio::time::interval(config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset(); // the start is the first look
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut retry_backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    let mut cause = Cause::Start;
    let mut scope = Scope::Everything;
    // The first look waits for the first leadership attempt (bounded: the database may be
    // unreachable for the leadership connection and reachable later).
    tokio::select! {
        _ = stop.cancelled() => return,
        _ = leading.changed() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    loop {
        let is_leader = *leading.borrow_and_update();
        let started = Instant::now();
        match watcher.rewatch_if_moved() {
            Ok(true) => scope = Scope::Everything,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the spec directory; relying on --resync")
            }
        }
        let dir = config.dir.clone();
        let refresh_scope = scope.clone();
        let mut taken = cache
            .take()
            .expect("the cache is put back after every look");
        let (taken, refreshed) = tokio::task::spawn_blocking(move || {
            let refreshed = taken.refresh(&dir, &refresh_scope);
            (taken, refreshed)
        })
        .await
        .expect("reading the spec directory panicked");
        cache = Some(taken);
        let spec_cache = cache.as_mut().expect("just put back");
        let read_took = started.elapsed();
        // Same content (a touch, an editor's swap file) ends here. A resync, a new leadership
        // or a retry applies anyway: drift, a failed apply.
        let dirty = !spec_cache.dirty().is_empty();
        let must_apply = is_leader && (cause != Cause::FilesChanged || dirty);
        if refreshed.changed || must_apply || cause == Cause::Start {
            for file in &refreshed.files {
                let objects: Vec<FileObject> = spec_cache
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
                let shared_objects = Arc::make_mut(&mut view_objects);
                if objects.is_empty() {
                    shared_objects.remove(file);
                } else {
                    shared_objects.insert(file.clone(), objects);
                }
            }
            let spec_errors = spec_cache.errors(&config.dir);
            let view = dir_view(&config.dir, spec_cache.files(), &view_objects, &spec_errors);
            shared.metrics.spec_files.set(view.files.len() as i64);
            shared.metrics.spec_errors.set(spec_errors.len() as i64);
            let errors: Vec<String> = spec_errors.iter().map(|e| e.to_string()).collect();
            if errors != logged_errors {
                for e in &errors {
                    tracing::warn!("{e}");
                }
                if !errors.is_empty() {
                    tracing::warn!(
                        errors = errors.len(),
                        files = view.errors.len(),
                        "the spec directory has errors: nothing is applied until they are fixed; the last applied state keeps running"
                    );
                } else if !logged_errors.is_empty() {
                    tracing::info!("the spec directory has no errors any more");
                }
                logged_errors = errors;
            }
            *shared.view.lock().expect("view lock") = Some(Arc::new(view));
            let load_took = started.elapsed() - read_took;
            let last = if !spec_errors.is_empty() {
                shared.metrics.reconciled("invalid", started.elapsed());
                LastReconcile::Invalid
            } else if must_apply || (is_leader && cause == Cause::Start) {
                // A few changed files: compare and write only their objects. Anything else
                // (start, resync, leadership, retry, a directory swap): everything.
                let partial = match (&scope, cause) {
                    (Scope::Files(_), Cause::FilesChanged) => Some(reconcile::Partial {
                        names: spec_cache
                            .dirty()
                            .keys
                            .iter()
                            .map(|(_, n)| n.clone())
                            .collect(),
                    }),
                    _ => None,
                };
                let objects = match &partial {
                    Some(_) => spec_cache.objects_in(&spec_cache.dirty().files),
                    None => spec_cache.objects(),
                };
                let last = apply(&shared, &mut client, &objects, partial.as_ref(), started).await;
                match &last {
                    LastReconcile::Applied => {
                        spec_cache.clear_dirty();
                        retry_at = None;
                        retry_backoff.reset();
                    }
                    LastReconcile::Failed(_) => {
                        retry_at = Some(tokio::time::Instant::now() + retry_backoff.next_wait());
                    }
                    _ => {}
                }
                last
            } else {
                LastReconcile::Pending
            };
            tracing::debug!(
                ?cause,
                scope = match &scope { Scope::Everything => "everything".to_string(), Scope::Files(f) => format!("{} files", f.len()) },
                read = ?read_took,
                parse = ?load_took,
                apply = ?(started.elapsed() - read_took - load_took),
                "looked at the spec directory"
            );
            *shared.last.lock().expect("last lock") = last;
            shared.health.reconciled.store(true, Ordering::Relaxed);
            shared.status_wake.notify_one();
            release_free_memory();
        }

        // Wait for the next cause.
        let retry_when = retry_at;
        let retry = async move {
            match retry_when {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(retry);
        let entry_points = watcher.entry_points();
        let known: std::collections::BTreeSet<PathBuf> = cache
            .as_ref()
            .map(|c| c.files().into_iter().collect())
            .unwrap_or_default();
        let to_scope = |change: Change| match change {
            Change::Everything => Some(Scope::Everything),
            Change::Paths(paths) => scope_of(&paths, &config.dir, &entry_points, &known),
        };
        let mut next: Option<Scope> = None;
        cause = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(change) = changes.recv() => {
                    next = merge(next, to_scope(change));
                    if next.is_some() { break Cause::FilesChanged }
                }
                _ = resync.tick() => break Cause::Resync,
                Ok(()) = leading.changed() => {
                    if *leading.borrow() { break Cause::BecameLeader }
                }
                _ = &mut retry => { retry_at = None; break Cause::Retry }
            };
        };
        if cause == Cause::FilesChanged {
            // Wait out the burst (a checkout writes many files), up to a few seconds.
            let quiet = debounce_timing(config.debounce).1 * 2;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    Some(change) = changes.recv() => {
                        next = merge(next, to_scope(change));
                        if tokio::time::Instant::now() >= deadline { break }
                    }
                    _ = tokio::time::sleep(quiet) => break,
                }
            }
        }
        scope = match cause {
            Cause::FilesChanged => next.unwrap_or(Scope::Everything),
            _ => Scope::Everything,
        };
    }
}

/// Applies a valid directory; keeps the connection for the next time.
async fn apply(
    shared: &Shared,
    client: &mut Option<tokio_postgres::Client>,
    objects: &[&spec::Object],
    partial: Option<&reconcile::Partial>,
    started: Instant,
) -> LastReconcile {
    let config = &shared.config;
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        match store::connect(&config.executor.database_url).await {
            Ok(c) => *client = Some(c),
            Err(e) => {
                shared.health.connected.store(false, Ordering::Relaxed);
                shared.metrics.reconciled("error", started.elapsed());
                tracing::warn!(error = %e, "cannot reconcile: no database connection");
                return LastReconcile::Failed(e.to_string());
            }
        }
    }
    let c = client.as_mut().expect("connected above");
    let outcome =
        reconcile::apply_in_scope(c, &config.dir, objects, partial, config.allow_empty).await;
    let took = started.elapsed();
    match outcome {
        Err(e) => {
            shared.metrics.reconciled("error", took);
            tracing::warn!(error = %e, "the reconcile failed; retrying");
            *client = None;
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

/// Refreshes the status files after every reconcile and every `status_interval`, and the
/// backlog gauge with them.
async fn status_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let config = &shared.config;
    let mut writer = StatusWriter::new(&config.dir, config.status_dir.as_deref());
    let mut client: Option<tokio_postgres::Client> = None;
    // Rounds woken by finished runs keep this much time between them: at least a second, and
    // ten times what the last round took, so a busy executor costs status files at most a
    // tenth of the time, however many objects there are.
    let mut last_round = Duration::ZERO;
    let mut last_end = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.status_wake.notified() => {}
            _ = shared.runs_finished.notified() => {
                let gap = (last_round * 10).max(Duration::from_secs(1));
                let wait = gap.saturating_sub(last_end.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            _ = tokio::time::sleep(config.status_interval) => {}
        }
        let round_started = Instant::now();
        let view = shared.view.lock().expect("view lock").clone();
        let Some(view) = view else { continue };
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            match store::connect(&config.executor.database_url).await {
                Ok(c) => client = Some(c),
                Err(e) => {
                    shared.health.connected.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "status files: no database connection");
                    continue;
                }
            }
        }
        let c = client.as_ref().expect("connected above");
        let read = async {
            let tables = report::status_of_everything(c).await?;
            let pending = report::pending_runs(c).await?;
            Ok::<_, StoreError>((tables, pending))
        };
        let (tables, pending) = match read.await {
            Ok(read) => read,
            Err(e) => {
                shared.health.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot read the tables for the status files");
                client = None;
                continue;
            }
        };
        shared.health.connected.store(true, Ordering::Relaxed);
        shared.metrics.pending_runs.set(pending);
        let last = shared.last.lock().expect("last lock").clone();
        let started = Instant::now();
        let report = tokio::task::block_in_place(|| {
            writer.update(&view, &tables, &last, chrono::Utc::now())
        });
        if report.written > 0 || report.removed > 0 {
            tracing::debug!(
                written = report.written,
                removed = report.removed,
                took = ?started.elapsed(),
                "status files updated"
            );
        }
        release_free_memory();
        last_round = round_started.elapsed();
        last_end = Instant::now();
    }
}

/// Hands memory freed after a look or a round of status files back to the system. glibc keeps
/// freed heap in its arenas (one per thread that allocated), so the peak of parsing a
/// directory on every core would otherwise stay resident for good.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// For an execute-only replica: keeps `connected` and the backlog gauge current.
async fn backlog_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        if client.as_ref().is_none_or(|c| c.is_closed()) {
            client = store::connect(&shared.config.executor.database_url)
                .await
                .ok();
        }
        let ok = match &client {
            Some(c) => match report::pending_runs(c).await {
                Ok(n) => {
                    shared.metrics.pending_runs.set(n);
                    true
                }
                Err(_) => false,
            },
            None => false,
        };
        shared.health.connected.store(ok, Ordering::Relaxed);
        if !ok {
            client = None;
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(shared.config.status_interval) => {}
        }
    }
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
