//! The executor: turns due ticks into runs, claims due runs, runs their tasks, settles them
//! (retries with back-off), beats for them, and recovers runs whose worker died.
//!
//! It wakes on NOTIFY (a dedicated, unpooled LISTEN connection: pools drop notifications), on
//! a timer to the next due tick or run, and on a poll as the fallback, so a lost notification
//! delays a run by at most the poll interval. After a connection loss or a server restart it
//! reconnects with back-off, resubscribes and looks at everything again. Each tick becomes one
//! run however many replicas run (compare-and-set on the job plus a unique (job, tick)), and a
//! run is claimed by one of them (`FOR UPDATE SKIP LOCKED` under a short claim lock, so
//! concurrency policies see a consistent picture of what runs).

pub mod chain;
pub mod connections;
pub mod policy;
pub mod tasks;
pub mod ticks;

use crate::backoff::Backoff;
use crate::spec::{HasTask, Runnable};
use crate::store::listener::{Heard, Listener};
use crate::store::runs::{
    self, ClaimedRun, Completion, Finish, CHANNEL_CANCEL, CHANNEL_JOBS, CHANNEL_RUNS,
};
use crate::store::states::RunStatus;
use crate::store::{Context, StoreError};
use chrono::{DateTime, Utc};
use connections::Databases;
use policy::{AttemptResult, Candidate, Decision, Running, Settlement};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tasks::{TaskContext, TaskOutcome};
use ticks::{plan_ticks, TickOutcome, TickState, Timing};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// The time, injected so tests of missed runs need not wait for hours.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Told about every run this process starts and finishes: the sidecar's /metrics.
pub trait RunObserver: Send + Sync + 'static {
    /// A run started `lateness` after it was due.
    fn started(&self, job: &str, lateness: Duration);
    /// An attempt ended: `outcome` is the run's status (`succeeded`, `failed`, `cancelled`,
    /// `pending` for an attempt that will be retried) after `took`.
    fn finished(&self, job: &str, outcome: &str, took: Duration);
}

/// An optional [`RunObserver`], so the config stays `Debug` and `Clone`.
#[derive(Clone, Default)]
pub struct Observer(pub Option<Arc<dyn RunObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(Some)"
        } else {
            "Observer(None)"
        })
    }
}

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
    /// On shutdown: how long running runs may take to finish before they are cancelled.
    pub grace: Duration,
    /// Told about runs started and finished here.
    pub observer: Observer,
}

impl ExecutorConfig {
    /// The defaults for `database_url`: worker `host/pid`, a 5 s poll, 2 s heartbeats, 32 runs at
    /// once, 30 s of shutdown grace and no observer.
    pub fn new(database_url: impl Into<String>) -> Self {
        ExecutorConfig {
            database_url: database_url.into(),
            worker: default_worker_name(),
            poll: Duration::from_secs(5),
            heartbeat: Duration::from_secs(2),
            concurrency: 32,
            grace: Duration::from_secs(30),
            observer: Observer::default(),
        }
    }
}

/// `hostname/pid`, like pg_timetable's client name.
pub fn default_worker_name() -> String {
    format!("{}/{}", hostname(), std::process::id())
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
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
    InvalidUrl(String),
    /// The pools for tasks' databases could not be set up.
    #[error(transparent)]
    Connections(#[from] connections::ConnectionError),
    /// The executor's own connection pool could not be built.
    #[error("cannot build the executor's connection pool: {0}")]
    Pool(#[from] deadpool_postgres::BuildError),
}

/// Why a running run's cancellation token fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CancelReason {
    Replaced,
    Shutdown,
}

/// Runs in flight in this process: their cancellation tokens, so a Replace or a shutdown can
/// reach them.
#[derive(Default)]
struct InFlight {
    runs: Mutex<HashMap<i64, (CancellationToken, Option<CancelReason>)>>,
}

impl InFlight {
    fn cancel(&self, id: i64, reason: CancelReason) {
        if let Some((token, why)) = self.runs.lock().expect("in-flight lock").get_mut(&id) {
            why.get_or_insert(reason);
            token.cancel();
        }
    }
    fn cancel_all(&self, reason: CancelReason) {
        for (token, why) in self.runs.lock().expect("in-flight lock").values_mut() {
            why.get_or_insert(reason);
            token.cancel();
        }
    }
    fn len(&self) -> usize {
        self.runs.lock().expect("in-flight lock").len()
    }
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
    let listener = tokio::spawn(listen(
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
    let beater = tokio::spawn(heartbeat_loop(
        pool.clone(),
        config.clone(),
        in_flight.clone(),
        beat_stop.clone(),
    ));

    let slots = Arc::new(Semaphore::new(config.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    // A failed step (the database went away) is retried sooner at first.
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    // After a claim that left runs waiting (maxInstances, exclusive), wait for an event rather
    // than spinning on runs that are due but cannot start yet.
    let mut waiting_for_event = false;
    let mut connections_read: Option<std::time::Instant> = None;
    loop {
        let refresh_connections = connections_read.is_none_or(|t| t.elapsed() >= config.poll);
        let step = async {
            let now = clock.now();
            // Connections change only on apply: read them once per poll interval, not per claim.
            if refresh_connections {
                connections_refresh(&pool, &databases).await?;
            }
            materialize(&pool, clock.as_ref(), config.poll).await?;
            let free = slots.available_permits();
            let mut left_waiting = false;
            if free > 0 {
                let (claimed, waiting) = claim(&pool, &config.worker, now, free).await?;
                left_waiting = waiting;
                for run in claimed {
                    let permit = slots.clone().acquire_owned().await.expect("semaphore open");
                    // Not a child of `shutdown`: running runs get the grace period first.
                    let token = CancellationToken::new();
                    in_flight
                        .runs
                        .lock()
                        .expect("in-flight lock")
                        .insert(run.id, (token.clone(), None));
                    let databases = databases.clone();
                    let pool = pool.clone();
                    let done = done_tx.clone();
                    let in_flight = in_flight.clone();
                    let clock = clock.clone();
                    let observer = config.observer.0.clone();
                    tasks.spawn(async move {
                        let job = run.job.clone();
                        let began = std::time::Instant::now();
                        if let Some(o) = &observer {
                            let late = (clock.now() - run.due_at).to_std().unwrap_or_default();
                            o.started(&job, late);
                        }
                        let completion =
                            execute(run, &pool, &databases, token, &in_flight, clock.as_ref())
                                .await;
                        in_flight
                            .runs
                            .lock()
                            .expect("in-flight lock")
                            .remove(&completion.id);
                        // Observers hear of it once it is recorded (see `complete_loop`).
                        let _ = done.send(Finished {
                            completion,
                            job,
                            took: began.elapsed(),
                        });
                        drop(permit);
                    });
                }
            }
            let next = runs::next_wake(&**pool.get().await.map_err(pool_error)?).await?;
            Ok::<_, StoreError>((next, left_waiting))
        };
        let sleep_for = match step.await {
            Ok((next, left_waiting)) => {
                if refresh_connections {
                    connections_read = Some(std::time::Instant::now());
                }
                backoff.reset();
                waiting_for_event = left_waiting;
                let now = clock.now();
                match next {
                    Some(at) if !waiting_for_event => (at - now)
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .min(config.poll),
                    _ => config.poll,
                }
            }
            Err(e) => {
                let wait = backoff.next_wait();
                tracing::warn!(error = %e, retry_in = ?wait, "executor step failed");
                if is_read_only(&e) {
                    // A failover left us on a standby: drop every pooled connection.
                    pool.retain(|_, _| false);
                }
                wait
            }
        };
        // Reap finished tasks so the JoinSet does not grow.
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep_for) => {}
            // Every slot busy, or runs waiting on a slot: the next thing worth doing is when a
            // run of ours finishes (others' finishes arrive as notifications).
            Some(_) = tasks.join_next(),
                if (waiting_for_event || slots.available_permits() == 0) && !tasks.is_empty() => {}
        }
    }

    // Shutdown: no more claims. Let running runs finish within the grace period.
    tracing::info!(running = in_flight.len(), grace = ?config.grace, "stopping: waiting for running runs");
    let graceful = tokio::time::timeout(config.grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if graceful.is_err() {
        tracing::warn!(
            running = in_flight.len(),
            "grace period over: cancelling running runs; they will be retried"
        );
        in_flight.cancel_all(CancelReason::Shutdown);
        while tasks.join_next().await.is_some() {}
    }
    drop(done_tx);
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

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(source) => StoreError::Db {
            context: "connecting to PostgreSQL".into(),
            source,
        },
        other => StoreError::Unavailable(other.to_string()),
    }
}

fn is_read_only(e: &StoreError) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION)
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

/// Keeps the named Connections' pools in step with `pgsched.connections`.
async fn connections_refresh(
    pool: &deadpool_postgres::Pool,
    databases: &Databases,
) -> Result<(), StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let specs = crate::store::objects::connection_specs(&**client, None).await?;
    databases.set_connections(specs);
    Ok(())
}

/// Turns every due tick of every scheduled job into runs (or missed records).
async fn materialize(
    pool: &deadpool_postgres::Pool,
    clock: &dyn Clock,
    poll: Duration,
) -> Result<(), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let now = clock.now();
    // A tick found within this much of its time counts as on time; older ones were missed.
    let tolerance = poll + Duration::from_secs(1);
    for job in runs::due_jobs(&**client, now).await? {
        let Some(spec) = Runnable::from_row(&job.kind, job.spec.clone()) else {
            continue;
        };
        let Some(timing) = timing_of(&spec) else {
            continue;
        };
        let state = match (job.tick_state.as_str(), job.next_run_at) {
            ("scheduled", Some(at)) => TickState::Scheduled(at),
            ("after-finish", _) => TickState::AfterFinish,
            ("done", _) => TickState::Done,
            _ => TickState::New,
        };
        let plan = plan_ticks(&timing, state, now, tolerance);
        let ticks: Vec<runs::TickRow> = plan
            .ticks
            .iter()
            .map(|t| runs::TickRow {
                at: t.at,
                status: match t.outcome {
                    TickOutcome::Run => RunStatus::Pending,
                    TickOutcome::Missed => RunStatus::Missed,
                },
                trigger: if t.catch_up { "catchup" } else { "schedule" },
                error: t.reason.clone(),
            })
            .collect();
        let new = match plan.next {
            TickState::New => ("new", None),
            TickState::Scheduled(at) => ("scheduled", Some(at)),
            TickState::AfterFinish => ("after-finish", None),
            TickState::Done => ("done", None),
        };
        runs::advance_job(
            &mut client,
            &job.name,
            &job.kind,
            (&job.tick_state, job.next_run_at),
            new,
            &ticks,
        )
        .await?;
    }
    Ok(())
}

/// The timing fields of a job spec, parsed (validation guarantees they parse).
fn timing_of(spec: &Runnable) -> Option<Timing> {
    let s = spec.scheduling();
    Some(Timing {
        schedule: match s.schedule {
            Some(text) => Some(crate::schedule::parse_schedule(text).ok()?),
            None => None,
        },
        run_at: s.run_at.map(|t| t.with_timezone(&Utc)),
        tz: s
            .time_zone
            .map(crate::schedule::parse_time_zone)
            .transpose()
            .ok()?
            .unwrap_or(chrono_tz::UTC),
        missed_runs: s.missed_runs,
        starting_deadline: s.starting_deadline.map(|d| d.0),
        suspended: s.suspend,
    })
}

/// Claims up to `free` due runs: decides each candidate (start, wait, skip, miss, cancel) under
/// the claim lock and records the decisions. Returns the runs to execute and whether any due
/// run was left waiting.
async fn claim(
    pool: &deadpool_postgres::Pool,
    worker: &str,
    now: DateTime<Utc>,
    free: usize,
) -> Result<(Vec<ClaimedRun>, bool), StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.context("starting a claim")?;
    // Look past the free slots: runs that must wait should not hide runs that could start.
    let view = runs::read_claim_view(&tx, now, (free * 4).max(16) as i64).await?;
    if view.candidates.is_empty() {
        tx.commit().await.context("ending a claim")?;
        return Ok((Vec::new(), false));
    }
    let candidates: Vec<Candidate> = view
        .candidates
        .iter()
        .map(|p| Candidate {
            id: p.id,
            job: p.job.clone(),
            due_at: p.due_at,
            catch_up: p.trigger == "catchup",
            spec: p
                .spec
                .clone()
                .zip(p.kind.as_deref())
                .and_then(|(s, kind)| Runnable::from_row(kind, s)),
        })
        .collect();
    let running: Vec<Running> = view
        .running
        .iter()
        .map(|(id, job, exclusive)| Running {
            id: *id,
            job: job.clone(),
            exclusive: *exclusive,
        })
        .collect();
    let decisions = policy::decide(&candidates, &running, now);
    let mut starts = Vec::new();
    let mut claimed = Vec::new();
    let mut finishes = Vec::new();
    let mut cancel = Vec::new();
    let mut waiting = false;
    for ((pending, candidate), decision) in view.candidates.iter().zip(candidates).zip(decisions) {
        match decision {
            Decision::Start | Decision::StartReplacing(_) if claimed.len() >= free => {
                waiting = true
            }
            Decision::Start | Decision::StartReplacing(_) => {
                if let Decision::StartReplacing(ids) = &decision {
                    cancel.extend(ids.iter().copied());
                }
                starts.push(pending.id);
                claimed.push(ClaimedRun {
                    id: pending.id,
                    job: pending.job.clone(),
                    attempt: pending.attempt,
                    due_at: pending.due_at,
                    params: pending.params.clone(),
                    spec: candidate.spec.expect("a started run has a spec"),
                });
            }
            Decision::Wait => waiting = true,
            Decision::Skip(error) => finishes.push(Finish {
                id: pending.id,
                status: RunStatus::Skipped,
                error,
            }),
            Decision::Miss(error) => finishes.push(Finish {
                id: pending.id,
                status: RunStatus::Missed,
                error,
            }),
            Decision::Cancel(error) => finishes.push(Finish {
                id: pending.id,
                status: RunStatus::Cancelled,
                error,
            }),
        }
    }
    runs::write_claim(&tx, worker, &starts, &finishes, &cancel).await?;
    tx.commit().await.context("committing a claim")?;
    Ok((claimed, waiting))
}

/// Runs one claimed run's task and settles the attempt.
async fn execute(
    run: ClaimedRun,
    pool: &deadpool_postgres::Pool,
    databases: &Databases,
    token: CancellationToken,
    in_flight: &InFlight,
    clock: &dyn Clock,
) -> Completion {
    let scheduling = run.spec.scheduling();
    let params = merged_params(scheduling.params, &run.params);
    let timeout = scheduling.timeout.map(|d| d.0);
    let outcome = match &run.spec {
        Runnable::Job(job) => match job.task() {
            Some(task) => {
                let ctx = TaskContext {
                    job: &run.job,
                    run_id: run.id,
                    attempt: run.attempt,
                    params: &params,
                    timeout,
                    cancel: token,
                    databases,
                    database: job.database.as_deref(),
                };
                tasks::run_task(&task, &ctx).await
            }
            None => TaskOutcome {
                status: tasks::Outcome::Failed,
                error: Some("the job has no task".into()),
                output: String::new(),
                rows_affected: None,
            },
        },
        Runnable::Chain(chain) => {
            let ctx = TaskContext {
                job: &run.job,
                run_id: run.id,
                attempt: run.attempt,
                params: &params,
                timeout,
                cancel: token,
                databases,
                database: None,
            };
            chain::run_chain(chain, &ctx, pool).await
        }
    };
    let reason = in_flight
        .runs
        .lock()
        .expect("in-flight lock")
        .get(&run.id)
        .and_then(|(_, why)| *why);
    let result = match outcome.status {
        tasks::Outcome::Succeeded => AttemptResult::Succeeded,
        tasks::Outcome::Failed => AttemptResult::Failed,
        tasks::Outcome::TimedOut => AttemptResult::TimedOut,
        tasks::Outcome::Cancelled => match reason {
            Some(CancelReason::Replaced) => AttemptResult::Replaced,
            _ => AttemptResult::Interrupted,
        },
    };
    let now = clock.now();
    let settlement = policy::settle(result, run.attempt, scheduling.retries, now, rand::random());
    let (status, attempt, due_at) = match settlement {
        Settlement::Finished(status) => (status, run.attempt, None),
        Settlement::Retry { attempt, due_at } => (RunStatus::Pending, attempt, Some(due_at)),
    };
    let error = match result {
        AttemptResult::Replaced => {
            Some("cancelled: replaced by a newer instance (concurrencyPolicy: Replace)".into())
        }
        AttemptResult::Interrupted => {
            Some("interrupted: the worker shut down; the run will be retried".into())
        }
        _ => outcome.error,
    };
    let after_next = match status {
        RunStatus::Pending => None,
        _ => timing_of(&run.spec)
            .and_then(|t| ticks::after_finish(&t, now))
            .map(|at| (run.job.clone(), at)),
    };
    if status == RunStatus::Failed {
        tracing::warn!(job = %run.job, run = run.id, attempt = run.attempt, error = ?error, "run failed");
    }
    Completion {
        id: run.id,
        status,
        attempt,
        due_at,
        error,
        output: outcome.output,
        rows_affected: outcome.rows_affected,
        after_next,
    }
}

/// A run's parameters: the job's defaults overlaid with the trigger's.
pub fn merged_params(
    defaults: Option<&serde_json::Map<String, serde_json::Value>>,
    given: &serde_json::Value,
) -> serde_json::Value {
    let mut merged = defaults.cloned().unwrap_or_default();
    if let Some(given) = given.as_object() {
        for (k, v) in given {
            merged.insert(k.clone(), v.clone());
        }
    }
    serde_json::Value::Object(merged)
}

/// An attempt that ended, on its way to the table.
struct Finished {
    completion: Completion,
    job: String,
    took: Duration,
}

/// Writes finished attempts in batches: whatever finished while the previous batch was being
/// written goes into the next statement. The observer hears of each attempt only once its
/// batch is committed, so that what it does next (the sidecar refreshes the status files) sees
/// the run finished in the tables.
async fn complete_loop(
    pool: deadpool_postgres::Pool,
    worker: String,
    observer: Observer,
    mut rx: mpsc::UnboundedReceiver<Finished>,
) {
    let mut batch = Vec::new();
    let mut told = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Finished {
            completion,
            job,
            took,
        }) = next.take()
        {
            told.push((job, completion.status, took));
            batch.push(completion);
            if batch.len() < 1000 {
                next = rx.try_recv().ok();
            }
        }
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        loop {
            let result = async {
                let mut client = pool.get().await.map_err(pool_error)?;
                runs::complete(&mut client, &worker, &batch).await
            }
            .await;
            match result {
                Ok(()) => break,
                Err(e) => {
                    // Keep the outcomes and try again: losing them would leave the runs to be
                    // recovered as lost and run twice.
                    tracing::warn!(error = %e, runs = batch.len(), "could not record finished runs; retrying");
                    tokio::time::sleep(backoff.next_wait()).await;
                    if is_read_only(&e) {
                        pool.retain(|_, _| false);
                    }
                }
            }
        }
        if let Some(o) = &observer.0 {
            for (job, status, took) in told.drain(..) {
                o.finished(&job, status.as_str(), took);
            }
        }
        batch.clear();
        told.clear();
    }
}

/// Beats for this worker's runs, acts on cancellation requests, recovers lost runs and prunes
/// history, every heartbeat interval.
async fn heartbeat_loop(
    pool: deadpool_postgres::Pool,
    config: ExecutorConfig,
    in_flight: Arc<InFlight>,
    stop: CancellationToken,
) {
    let host = hostname();
    let pid = std::process::id() as i32;
    let stale_ms = (config.heartbeat * 3).as_millis() as i64;
    let mut beats: u64 = 0;
    loop {
        let result = async {
            let client = pool.get().await.map_err(pool_error)?;
            for id in runs::heartbeat(&**client, &config.worker, &host, pid).await? {
                in_flight.cancel(id, CancelReason::Replaced);
            }
            let (retried, lost) = runs::recover_lost(&**client, stale_ms).await?;
            if retried + lost > 0 {
                tracing::warn!(retried, lost, "recovered runs whose worker stopped beating");
            }
            // History is pruned about once a minute, in small batches.
            if beats % (60 / config.heartbeat.as_secs().clamp(1, 60)).max(1) == 0 {
                runs::prune_history(&**client, 1000).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        beats += 1;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.heartbeat) => {}
        }
    }
}

/// What the LISTEN connection hears: new runs and changed jobs wake the executor, and so does
/// every (re)subscription, since notifications sent while it was away are lost; cancellation
/// requests reach the runs in flight here.
async fn listen(mut listener: Listener, wake: Arc<Notify>, in_flight: Arc<InFlight>) {
    while let Some(heard) = listener.recv().await {
        match heard {
            Heard::Notification(n) if n.channel() == CHANNEL_CANCEL => {
                if let Ok(id) = n.payload().parse() {
                    in_flight.cancel(id, CancelReason::Replaced);
                }
            }
            Heard::Notification(_) | Heard::Subscribed => wake.notify_one(),
        }
    }
}
