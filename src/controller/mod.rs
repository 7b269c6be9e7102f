//! `pgsched run`, the sidecar: wires its parts together and stops them in order on shutdown.
//! Each part is a module of its own:
//!
//! - [`watch`]: file events on the spec directory become "the spec set changed", with which
//!   files; bursts are waited out.
//! - [`reconciler`]: one look at the directory becomes one applied plan (while leading), and
//!   what the status files need. Nothing changed, nothing done: every look hashes the files,
//!   and an unchanged hash ends it before any parsing or SQL.
//! - [`leader`]: one writer. A replica applies only while it holds the leadership lock; every
//!   replica executes and writes status files.
//! - [`status_loop`]: the status files (or, on an execute-only replica, the backlog gauge).
//!
//! This module holds the loop that decides when the reconciler looks (a change, the periodic
//! resync that repairs drift and covers lost events, a new leadership, a retry), and
//! [`run_sidecar`], which starts the executor, the Timeout loop and the HTTP endpoints beside
//! them.

mod leader;
mod reconciler;
mod status_loop;
mod watch;

use crate::backoff::{pause, Backoff};
use crate::executor::{self, Clock, ExecutorConfig, SystemClock};
use crate::http::{self, Health};
use crate::metrics::Metrics;
use crate::spec::cache::Scope;
use crate::status::{DirView, LastReconcile};
use crate::store::session::{Session, SessionOptions};
use crate::store::StoreError;
use crate::timeout::{self, TimeoutConfig};
use reconciler::{Cause, Reconciler};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use watch::SpecChanges;

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
    /// The defaults of `pgsched run`: resync every 60 s, 100 ms debounce, status every 5 s,
    /// leadership retried every second, reconciling on, wipe-outs refused.
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

/// Why the sidecar stopped other than by shutdown; a database that is down is waited for,
/// not an error.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    /// The spec directory could not be watched for changes.
    #[error("cannot watch the spec directory {dir}: {source}")]
    Watch {
        /// The spec directory (absolute).
        dir: PathBuf,
        /// The file-watching error.
        #[source]
        source: notify::Error,
    },
    /// The executor stopped with an error retrying cannot fix.
    #[error(transparent)]
    Executor(#[from] executor::ExecutorError),
    /// The server for /healthz, /readyz and /metrics failed.
    #[error("the HTTP endpoints failed: {0}")]
    Http(std::io::Error),
    /// A database error retrying cannot fix.
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
    let http = HttpServer::start(listener, &health, &metrics);

    let url = config.executor.database_url.clone();
    let Some(()) = migrate_when_reachable(&url, &health, &shutdown).await else {
        http.token.cancel();
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
    let background = spawn_loops(&shared, &loops_stop)?;
    let timeouts = timeout_config(&config, timeout_metrics);
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
    stop_loops(background).await;
    match timeout_loop.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "the timeout loop stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the timeout loop panicked"),
        Ok(Ok(())) => {}
    }
    http.stop().await?;
    executed?;
    Ok(())
}

/// The server for /healthz, /readyz and /metrics, when there is a listener to serve on.
struct HttpServer {
    /// Stops the server; cancelled last, so probes are answered until the end.
    token: CancellationToken,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl HttpServer {
    fn start(
        listener: Option<tokio::net::TcpListener>,
        health: &Arc<Health>,
        metrics: &Arc<Metrics>,
    ) -> HttpServer {
        let token = CancellationToken::new();
        let task = listener.map(|listener| {
            tokio::spawn(http::serve(
                listener,
                health.clone(),
                metrics.clone(),
                token.clone(),
            ))
        });
        HttpServer { token, task }
    }

    /// Stops the server and waits for it: its failure is the sidecar's, a panic only a warning.
    async fn stop(self) -> Result<(), SidecarError> {
        self.token.cancel();
        if let Some(task) = self.task {
            match task.await {
                Ok(Err(e)) => return Err(SidecarError::Http(e)),
                Err(e) => tracing::warn!(error = %e, "the HTTP server panicked"),
                Ok(Ok(())) => {}
            }
        }
        Ok(())
    }
}

/// The loops beside the executor: leadership, reconciling and status files, or, on an
/// execute-only replica, the backlog gauge alone.
fn spawn_loops(
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> Result<tokio::task::JoinSet<()>, SidecarError> {
    let mut background = tokio::task::JoinSet::new();
    if shared.config.reconcile {
        let (leader_tx, leader_rx) = tokio::sync::watch::channel(false);
        background.spawn(leader::lead(shared.clone(), leader_tx, stop.clone()));
        let changes = SpecChanges::start(&shared.config)?;
        background.spawn(reconcile_loop(
            shared.clone(),
            changes,
            leader_rx,
            stop.clone(),
        ));
        background.spawn(status_loop::status_loop(shared.clone(), stop.clone()));
    } else {
        background.spawn(status_loop::backlog_loop(shared.clone(), stop.clone()));
    }
    Ok(background)
}

/// The Timeout loop's settings: the executor's database, poll interval and worker name.
fn timeout_config(config: &SidecarConfig, metrics: Arc<timeout::TimeoutMetrics>) -> TimeoutConfig {
    let mut timeouts = TimeoutConfig::new(config.executor.database_url.clone());
    timeouts.poll = config.executor.poll;
    timeouts.worker = config.executor.worker.clone();
    timeouts.metrics = metrics;
    timeouts
}

/// Waits for the loops once they are told to stop.
async fn stop_loops(mut background: tokio::task::JoinSet<()>) {
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
}

/// Connects and migrates, retrying with back-off while the database is not there yet (a pod's
/// containers start in any order). `None` when shut down first.
async fn migrate_when_reachable(
    url: &str,
    health: &Health,
    shutdown: &CancellationToken,
) -> Option<()> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let options = SessionOptions {
        migrate: true,
        ..SessionOptions::default()
    };
    let mut session = Session::new(url, options);
    loop {
        match session.client().await {
            Ok(_) => {
                health.connected.store(true, Ordering::Relaxed);
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

/// Decides when the reconciler looks at the directory: at the start (after the first
/// leadership attempt), on a change of the files, on every resync, on becoming the leader, and
/// when a failed apply is due again.
async fn reconcile_loop(
    shared: Arc<Shared>,
    mut changes: SpecChanges,
    mut leading: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    let mut reconciler = Reconciler::new(shared.clone());
    let mut resync = tokio::time::interval(shared.config.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset(); // the start is the first look
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
        if changes.rewatch() {
            scope = Scope::Everything;
        }
        reconciler.look(cause, &scope, is_leader).await;

        // Wait for the next cause.
        let retry_when = reconciler.retry_at();
        let retry = async move {
            match retry_when {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(retry);
        let known = reconciler.known_files();
        let mut first: Option<Scope> = None;
        cause = loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                Some(change) = changes.next(&known) => {
                    first = change;
                    if first.is_some() { break Cause::FilesChanged }
                }
                _ = resync.tick() => break Cause::Resync,
                Ok(()) = leading.changed() => {
                    if *leading.borrow() { break Cause::BecameLeader }
                }
                _ = &mut retry => break Cause::Retry,
            };
        };
        scope = match cause {
            Cause::FilesChanged => tokio::select! {
                _ = stop.cancelled() => return,
                scope = changes.settle(first, &known) => scope,
            },
            _ => Scope::Everything,
        };
    }
}
