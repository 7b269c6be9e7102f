//! The executor: turns due ticks into runs, claims due runs, runs their tasks, settles them
//! (retries with back-off), beats for them, and recovers runs whose worker died.
//!
//! It wakes on NOTIFY (a dedicated, unpooled LISTEN connection: pools drop notifications), on
//! a timer to the next due tick or run, and on a poll as the fallback, so a lost notification
//! delays a run by at most the poll interval. After a connection loss or a server restart it
//! reconnects with back-off, resubscribes and looks at everything again. Each tick becomes one
//! run however many replicas run (compare-and-set on the job plus a unique (job, tick)), and a
//! run is claimed by one of them (`FOR UPDATE SKIP LOCKED`: runs of free jobs in batches into
//! a local queue, the others decided under a lock per job, or the claim lock for `exclusive`,
//! so concurrency policies see a consistent picture of what runs).
//!
//! This file is the executor's public face (its config, its errors, [`run_executor`]) and
//! the wiring of its loops, each in a module of its own: the claim loop (`claim_loop`, with one
//! claim in `claim`, due ticks turned into runs in `materialize` and one run executed in
//! `execute`), the completion loop (`completion`), the heartbeat and lost-run recovery loop
//! (`heartbeat`) and the LISTEN connection (`listen`). What they share sits below them: the
//! runs in flight (`in_flight`), the clock, the observer and the pool's errors (`pool`).

pub mod chain;
mod claim;
mod claim_loop;
mod clock;
mod completion;
pub mod connections;
mod execute;
mod heartbeat;
mod in_flight;
mod listen;
mod local_queue;
mod materialize;
mod observer;
pub mod policy;
mod pool;
pub mod tasks;
pub mod ticks;

pub use clock::{Clock, SystemClock};
pub use execute::merged_params;
pub use observer::{Observer, RunObserver};

use crate::store::listener::Listener;
use crate::store::runs::{self, CHANNEL_CANCEL, CHANNEL_JOBS, CHANNEL_RUNS};
use crate::store::StoreError;
use claim_loop::ClaimLoop;
use completion::{complete_loop, Finished};
use connections::Databases;
use in_flight::InFlight;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// The executor's settings; [`ExecutorConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// tokio-postgres connection string or URL of the scheduler's database.
    pub database_url: String,
    /// This process's name in `pgsched.runs.worker` and `pgsched.workers`: `host/pid`.
    pub worker: String,
    /// Fallback poll: the longest a lost notification can delay a run.
    pub poll: Duration,
    /// Heartbeat interval; a run whose worker missed three beats is lost.
    pub heartbeat: Duration,
    /// Runs executing at once in this process.
    pub concurrency: usize,
    /// The most runs claimed ahead of the free slots, into the local queue (adapted to how fast
    /// runs finish: none for slow jobs); 0 claims only into free slots.
    pub prefetch: usize,
    /// On shutdown: how long running runs may take to finish before they are cancelled.
    pub grace: Duration,
    /// Told about runs started and finished here.
    pub observer: Observer,
}

impl ExecutorConfig {
    /// The defaults for `database_url`: worker `host/pid`, a 5 s poll, 2 s heartbeats, 32 runs at
    /// once, at most 1,000 claimed ahead, 30 s of shutdown grace and no observer.
    pub fn new(database_url: impl Into<String>) -> Self {
        ExecutorConfig {
            database_url: database_url.into(),
            worker: default_worker_name(),
            poll: Duration::from_secs(5),
            heartbeat: Duration::from_secs(2),
            concurrency: 32,
            prefetch: 1000,
            grace: Duration::from_secs(30),
            observer: Observer::default(),
        }
    }
}

/// `hostname/pid`, like pg_timetable's client name.
pub fn default_worker_name() -> String {
    format!("{}/{}", heartbeat::hostname(), std::process::id())
}

/// Why the executor could not start or stopped other than by shutdown. Losing the database
/// is none of these: the executor reconnects and carries on.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The database said no in a way retrying cannot fix.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `--database-url` cannot be read.
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] crate::store::tls::TargetError),
    /// The pools for tasks' databases could not be set up.
    #[error(transparent)]
    Connections(#[from] connections::ConnectionError),
    /// The executor's own connection pool could not be built.
    #[error("cannot build the executor's connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// Runs the executor until `shutdown` is cancelled, then stops claiming, lets running runs
/// finish within the grace period, cancels the rest (they go back to pending for another
/// worker) and returns.
pub async fn run_executor(
    config: ExecutorConfig,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Result<(), ExecutorError> {
    let pool = bookkeeping_pool(&config.database_url)?;
    let databases = Arc::new(Databases::new(
        &config.database_url,
        config.concurrency.max(2),
    )?);
    let wake = Arc::new(Notify::new());
    let in_flight = Arc::new(InFlight::default());
    let (done_tx, done_rx) = mpsc::unbounded_channel::<Finished>();
    let stop_listening = CancellationToken::new();

    let (listen_config, listen_tls) =
        crate::store::scheduler_target(&config.database_url).map_err(ExecutorError::InvalidUrl)?;
    let listener = tokio::spawn(listen::listen(
        Listener::spawn(
            &listen_config,
            listen_tls,
            &[CHANNEL_RUNS, CHANNEL_JOBS, CHANNEL_CANCEL],
            "pgsched executor (listen)",
            &stop_listening,
        ),
        wake.clone(),
        in_flight.clone(),
    ));
    let completer = tokio::spawn(complete_loop(
        pool.clone(),
        config.worker.clone(),
        config.observer.clone(),
        done_rx,
    ));
    let beat_stop = CancellationToken::new();
    let beater = tokio::spawn(heartbeat::heartbeat_loop(
        pool.clone(),
        config.worker.clone(),
        config.heartbeat,
        in_flight.clone(),
        beat_stop.clone(),
    ));

    let env = Arc::new(execute::RunEnv {
        pool: pool.clone(),
        databases,
        in_flight,
        clock,
        worker: config.worker.clone(),
    });
    let mut claims = ClaimLoop {
        env,
        done: done_tx,
        observer: config.observer.clone(),
        poll: config.poll,
        slots: Arc::new(Semaphore::new(config.concurrency)),
        tasks: tokio::task::JoinSet::new(),
        queue: local_queue::LocalQueue::new(config.prefetch, config.concurrency),
        to_release: Vec::new(),
        more_due: false,
    };
    claims.run(&wake, &shutdown).await;
    // Dropping the claim loop drops the last sender of finished attempts: the completion
    // loop records what is left and ends.
    claims.drain(config.grace).await;
    let _ = completer.await;
    beat_stop.cancel();
    let _ = beater.await;
    stop_listening.cancel();
    let _ = listener.await;
    if let Ok(client) = pool.get().await {
        let _ = runs::unregister(&**client, &config.worker).await;
    }
    Ok(())
}

fn bookkeeping_pool(url: &str) -> Result<deadpool_postgres::Pool, ExecutorError> {
    let (pg, tls) = crate::store::scheduler_target(url).map_err(ExecutorError::InvalidUrl)?;
    let manager = deadpool_postgres::Manager::from_config(
        pg,
        tls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    deadpool_postgres::Pool::builder(manager)
        .max_size(4)
        .build()
        .map_err(ExecutorError::from)
}
