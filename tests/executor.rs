//! The executor on a real PostgreSQL: ticks to runs exactly once across replicas, on-demand
//! triggers, tasks, timeouts, retries, concurrency, missed runs, lost runs after a SIGKILL,
//! a server restart under a running executor, and graceful shutdown.

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

mod common;

use common::{apply_specs, job, trigger, wait_for, Executor, Sidecar, Specs};

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

async fn run_row(client: &Client, id: i64) -> (String, i32, Option<String>, Option<String>) {
    let r = client
        .query_one(
            "SELECT status, attempt, error, output FROM pgsched.runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3))
}

async fn wait_finished(
    client: &Client,
    id: i64,
    within: Duration,
) -> (String, i32, Option<String>, Option<String>) {
    wait_for(
        client,
        &format!("SELECT count(*) FROM pgsched.runs WHERE id = {id} AND status NOT IN ('pending', 'running')"),
        |n| n == 1,
        within,
    )
    .await;
    run_row(client, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_executors_run_every_tick_of_a_per_second_job_exactly_once() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "tick.yaml",
        &job(
            "tick",
            "  schedule: \"* * * * * *\"\n  builtin: {name: log, message: tick}\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let a = Executor::start(&db.url, "a/1", |_| {});
    let b = Executor::start(&db.url, "b/2", |_| {});
    tokio::time::sleep(Duration::from_secs(20)).await;
    a.stop().await;
    b.stop().await;

    let rows = client
        .query(
            "SELECT scheduled_at, status, worker FROM pgsched.runs WHERE job = 'tick' ORDER BY scheduled_at",
            &[],
        )
        .await
        .unwrap();
    assert!(rows.len() >= 18, "only {} ticks in 20 s", rows.len());
    let ticks: Vec<chrono::DateTime<chrono::Utc>> = rows.iter().map(|r| r.get(0)).collect();
    for pair in ticks.windows(2) {
        assert_eq!(
            (pair[1] - pair[0]).num_milliseconds(),
            1000,
            "a tick is missing or doubled: {pair:?}"
        );
    }
    for r in &rows {
        assert_eq!(r.get::<_, String>(1), "succeeded");
    }
    let workers: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.get::<_, String>(2)).collect();
    assert!(!workers.is_empty());
}

#[tokio::test]
async fn a_trigger_in_a_rolled_back_transaction_never_runs() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "echo.yaml",
        &job("echo", "  params: {greeting: hello}\n  shell: 'echo \"$PGSCHED_JOB $PGSCHED_ATTEMPT $PGSCHED_PARAMS\"'\n"),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});

    let tx = client.transaction().await.unwrap();
    let rolled_back: i64 = tx
        .query_one("SELECT pgsched.trigger('echo', '{\"n\": 1}')", &[])
        .await
        .unwrap()
        .get(0);
    tx.rollback().await.unwrap();
    let id = trigger(&client, "echo", "{\"n\": 2}").await;
    let (status, attempt, _, output) = wait_finished(&client, id, Duration::from_secs(10)).await;
    assert_eq!((status.as_str(), attempt), ("succeeded", 1));
    let output = output.unwrap();
    assert!(output.contains("echo 1"), "{output}");
    assert!(
        output.contains("\"greeting\":\"hello\"") && output.contains("\"n\":2"),
        "{output}"
    );
    let ghost: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs WHERE id = $1",
            &[&rolled_back],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ghost, 0);
    exec.stop().await;
}

#[tokio::test]
async fn sql_jobs_bind_params_and_a_timed_out_query_leaves_no_backend() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE outbox (user_id bigint, note text)")
        .await
        .unwrap();
    let specs = Specs::with(&[
        (
            "insert.yaml",
            &job("insert", "  sql: INSERT INTO outbox SELECT ($1->>'user_id')::bigint, $1->>'note'\n  params: {note: hi}\n"),
        ),
        ("slow.yaml", &job("slow", "  sql: SELECT pg_sleep(30)\n  timeout: 1s\n")),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let id = trigger(&client, "insert", "{\"user_id\": 42}").await;
    let (status, _, error, _) = wait_finished(&client, id, Duration::from_secs(10)).await;
    assert_eq!(status, "succeeded", "{error:?}");
    let row = client
        .query_one("SELECT user_id, note FROM outbox", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, String>(1)),
        (42, "hi".to_string())
    );
    let rows: Option<i64> = client
        .query_one(
            "SELECT rows_affected FROM pgsched.runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, Some(1));

    let started = Instant::now();
    let id = trigger(&client, "slow", "{}").await;
    let (status, _, error, _) = wait_finished(&client, id, Duration::from_secs(15)).await;
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("timed out"));
    assert!(started.elapsed() < Duration::from_secs(10));
    wait_for(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()",
        |n| n == 0,
        Duration::from_secs(5),
    )
    .await;
    exec.stop().await;
}

#[tokio::test]
async fn failed_runs_are_retried_with_backoff_then_fail() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[
        (
            "flaky.yaml",
            &job("flaky", "  shell: 'test \"$PGSCHED_ATTEMPT\" -ge 3'\n  retries: {limit: 3, backoff: {initial: 100ms, max: 300ms}}\n"),
        ),
        ("broken.yaml", &job("broken", "  command: [/bin/false]\n  retries: {limit: 1, backoff: {initial: 100ms}}\n")),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let flaky = trigger(&client, "flaky", "{}").await;
    let broken = trigger(&client, "broken", "{}").await;
    let (status, attempt, _, _) = wait_finished(&client, flaky, Duration::from_secs(15)).await;
    assert_eq!((status.as_str(), attempt), ("succeeded", 3));
    let (status, attempt, error, _) = wait_finished(&client, broken, Duration::from_secs(15)).await;
    assert_eq!((status.as_str(), attempt), ("failed", 2));
    assert!(
        error.unwrap().contains("exit"),
        "the error says how it failed"
    );
    exec.stop().await;
}

#[tokio::test]
async fn forbid_skips_overlapping_ticks_and_allow_bounds_instances() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[
        ("slow.yaml", &job("slow", "  schedule: \"* * * * * *\"\n  builtin: {name: sleep, duration: 2500ms}\n")),
        (
            "pool.yaml",
            &job("pool", "  concurrencyPolicy: Allow\n  maxInstances: 2\n  builtin: {name: sleep, duration: 300ms}\n"),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    for _ in 0..6 {
        trigger(&client, "pool", "{}").await;
    }
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'slow' AND status = 'skipped'",
        |n| n >= 2,
        Duration::from_secs(15),
    )
    .await;
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'pool' AND status = 'succeeded'",
        |n| n == 6,
        Duration::from_secs(15),
    )
    .await;
    // Never more than two `pool` runs overlapped.
    let overlap: i64 = client
        .query_one(
            "SELECT max(c) FROM (SELECT (SELECT count(*) FROM pgsched.runs b
                                  WHERE b.job = 'pool' AND b.started_at <= a.started_at AND b.finished_at > a.started_at) c
                                 FROM pgsched.runs a WHERE a.job = 'pool') x",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(overlap <= 2, "{overlap} pool runs overlapped");
    let slow_overlap: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs a JOIN pgsched.runs b ON a.id < b.id
              WHERE a.job = 'slow' AND b.job = 'slow' AND a.status = 'succeeded' AND b.status = 'succeeded'
                AND b.started_at < a.finished_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(slow_overlap, 0, "Forbid let two instances overlap");
    exec.stop().await;
}

#[tokio::test]
async fn replace_cancels_the_running_instance() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "r.yaml",
        &job("r", "  concurrencyPolicy: Replace\n  shell: 'sleep 30'\n"),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let first = trigger(&client, "r", "{}").await;
    wait_for(
        &client,
        &format!("SELECT count(*) FROM pgsched.runs WHERE id = {first} AND status = 'running'"),
        |n| n == 1,
        Duration::from_secs(10),
    )
    .await;
    let second = trigger(&client, "r", "{}").await;
    let (status, _, error, _) = wait_finished(&client, first, Duration::from_secs(15)).await;
    assert_eq!(status, "cancelled");
    assert!(error.unwrap().contains("Replace"));
    let (status, ..) = run_row(&client, second).await;
    assert_eq!(status, "running");
    exec.stop().await;
}

#[tokio::test]
async fn missed_ticks_follow_the_missed_runs_policy() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[
        ("all.yaml", &job("all", "  schedule: \"@hourly\"\n  missedRuns: RunAll\n  builtin: {name: log, message: x}\n")),
        ("once.yaml", &job("once", "  schedule: \"@hourly\"\n  builtin: {name: log, message: x}\n")),
        ("skip.yaml", &job("skip", "  schedule: \"@hourly\"\n  missedRuns: Skip\n  builtin: {name: log, message: x}\n")),
        (
            "deadline.yaml",
            &job("deadline", "  schedule: \"* * * * *\"\n  missedRuns: RunAll\n  startingDeadline: 2m\n  builtin: {name: log, message: x}\n"),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    // The expected counts depend on how late each tick is when the executor first sees it,
    // counted from minute boundaries: go back in time well inside a minute. Too close to its
    // end, and the boundary may pass before the first claim, making the tick a minute back
    // more than startingDeadline late; too close to its start, and this minute's tick is on
    // time rather than caught up, so Forbid skips it while the catch-up run runs.
    while !(5..40).contains(&chrono::Timelike::second(&chrono::Utc::now())) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // As if the scheduler had been down for three hours: each job's next tick is long past.
    client
        .batch_execute(
            "UPDATE pgsched.jobs SET tick_state = 'scheduled',
                    next_run_at = date_trunc('hour', now()) - interval '2 hours' WHERE name <> 'deadline';
             UPDATE pgsched.jobs SET tick_state = 'scheduled',
                    next_run_at = date_trunc('minute', now()) - interval '3 minutes' WHERE name = 'deadline';",
        )
        .await
        .unwrap();
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let count = |job: &str, status: &str| {
        format!("SELECT count(*) FROM pgsched.runs WHERE job = '{job}' AND status = '{status}'")
    };
    wait_for(
        &client,
        &count("all", "succeeded"),
        |n| n == 3,
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        &client,
        &count("once", "succeeded"),
        |n| n == 1,
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        &client,
        &count("once", "missed"),
        |n| n == 2,
        Duration::from_secs(10),
    )
    .await;
    wait_for(
        &client,
        &count("skip", "missed"),
        |n| n == 3,
        Duration::from_secs(10),
    )
    .await;
    // Ticks 3, 2, 1 and 0 minutes back (plus the seconds into this minute): the two more than
    // 2 minutes late are never started; the others run, one after the other.
    let deadline_runs = async {
        let rows = client
            .query(
                "SELECT due_at::text, status, coalesce(error, ''), coalesce(started_at::text, ''), now()::text
                   FROM pgsched.runs WHERE job = 'deadline' ORDER BY due_at",
                &[],
            )
            .await
            .unwrap();
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} {} {} (now {})",
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, String>(2),
                    r.get::<_, String>(3),
                    r.get::<_, String>(4)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    if tokio::time::timeout(
        Duration::from_secs(10),
        wait_for(
            &client,
            &count("deadline", "succeeded"),
            |n| n >= 2,
            Duration::from_secs(20),
        ),
    )
    .await
    .is_err()
    {
        panic!("deadline runs:\n{}", deadline_runs.await);
    }
    wait_for(
        &client,
        &count("deadline", "missed"),
        |n| n == 2,
        Duration::from_secs(10),
    )
    .await;
    let catchup: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs WHERE job = 'all' AND trigger = 'catchup'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(catchup, 3);
    // And each job's next tick is in the future again.
    let future: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.jobs WHERE next_run_at > now()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(future, 4);
    exec.stop().await;
}

#[tokio::test]
async fn a_run_at_job_runs_once_and_an_after_job_waits_for_the_finish() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let at = (chrono::Utc::now() + chrono::TimeDelta::seconds(1)).to_rfc3339();
    let specs = Specs::with(&[
        (
            "once.yaml",
            &job(
                "once",
                &format!("  runAt: \"{at}\"\n  builtin: {{name: log, message: once}}\n"),
            ),
        ),
        (
            "after.yaml",
            &job(
                "after",
                "  schedule: \"@after 500ms\"\n  builtin: {name: sleep, duration: 300ms}\n",
            ),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'after' AND status = 'succeeded'",
        |n| n >= 3,
        Duration::from_secs(15),
    )
    .await;
    let once = wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'once' AND status = 'succeeded'",
        |n| n >= 1,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(once, 1);
    let state: String = client
        .query_one(
            "SELECT tick_state FROM pgsched.jobs WHERE name = 'once'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(state, "done");
    // @after: each run starts at least 500 ms after the previous one finished.
    let gaps: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM started_at - lag(finished_at) OVER (ORDER BY id))::float8
               FROM pgsched.runs WHERE job = 'after' AND status = 'succeeded' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .filter_map(|r| r.get::<_, Option<f64>>(0))
        .collect();
    assert!(!gaps.is_empty());
    assert!(gaps.iter().all(|g| *g >= 0.49), "{gaps:?}");
    exec.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_short_runs_finish_and_retries_long_ones() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[
        (
            "short.yaml",
            &job("short", "  builtin: {name: sleep, duration: 1s}\n"),
        ),
        ("long.yaml", &job("long", "  shell: 'sleep 30'\n")),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |c| c.grace = Duration::from_secs(3));
    let short = trigger(&client, "short", "{}").await;
    let long = trigger(&client, "long", "{}").await;
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE status = 'running'",
        |n| n == 2,
        Duration::from_secs(10),
    )
    .await;
    let stopping = Instant::now();
    exec.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(15));
    let (status, ..) = run_row(&client, short).await;
    assert_eq!(status, "succeeded");
    let (status, attempt, error, _) = run_row(&client, long).await;
    assert_eq!((status.as_str(), attempt), ("pending", 1), "{error:?}");
    assert!(error.unwrap().contains("interrupted"));
    let workers: i64 = client
        .query_one("SELECT count(*) FROM pgsched.workers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 0, "a clean stop unregisters the worker");
}

/// A `pgsched run` that executes but does not reconcile, on its own free port, killed when
/// dropped (so a failing test leaves no process behind holding the run or the port).
fn spawn_pgsched(url: &str, dir: &Path) -> Sidecar {
    Sidecar::start_plain(
        dir,
        url,
        &["--no-reconcile", "--heartbeat", "300ms", "--poll", "500ms"],
        "warn",
    )
}

#[tokio::test]
async fn a_run_whose_executor_was_killed_is_recovered_and_retried_by_another() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "work.yaml",
        &job(
            "work",
            "  shell: 'if [ \"$PGSCHED_ATTEMPT\" = 1 ]; then sleep 60; fi; echo done on attempt $PGSCHED_ATTEMPT'\n  retries: {limit: 1, backoff: {initial: 100ms}}\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let mut first = spawn_pgsched(&db.url, specs.path());
    let id = trigger(&client, "work", "{}").await;
    wait_for(
        &client,
        &format!("SELECT count(*) FROM pgsched.runs WHERE id = {id} AND status = 'running'"),
        |n| n == 1,
        Duration::from_secs(15),
    )
    .await;
    first.signal(libc::SIGKILL); // no chance to clean up
    first.wait_exit(Duration::from_secs(10));
    let mut second = spawn_pgsched(&db.url, specs.path());
    let (status, attempt, _, output) = wait_finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(
        (status.as_str(), attempt),
        ("succeeded", 2),
        "{}",
        second.log()
    );
    assert!(output.unwrap().contains("done on attempt 2"));
    second.signal(libc::SIGTERM);
    assert_eq!(
        second.wait_exit(Duration::from_secs(30)),
        Some(0),
        "a clean stop on SIGTERM exits 0; log:\n{}",
        second.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_survives_a_server_restart_without_losing_runs() {
    let mut server = common::TestServer::start();
    let db = server.fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "echo.yaml",
        &job("echo", "  builtin: {name: log, message: hi}\n"),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let before = trigger(&client, "echo", "{}").await;
    wait_finished(&client, before, Duration::from_secs(10)).await;
    // A run enqueued for just after the restart, then the server goes down and comes back.
    let later: i64 = client
        .query_one(
            "SELECT pgsched.trigger('echo', '{}', now() + interval '3 seconds')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    drop(client);
    tokio::task::block_in_place(|| server.restart().unwrap());
    let client = db.connect().await;
    let after = trigger(&client, "echo", "{}").await;
    let (status, ..) = wait_finished(&client, after, Duration::from_secs(30)).await;
    assert_eq!(status, "succeeded");
    let (status, ..) = wait_finished(&client, later, Duration::from_secs(30)).await;
    assert_eq!(status, "succeeded");
    exec.stop().await;
}

#[tokio::test]
async fn runs_and_status_commands_show_the_history() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "echo.yaml",
        &job(
            "echo",
            "  schedule: \"0 3 * * *\"\n  builtin: {name: log, message: hi}\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["trigger", "echo", "--params", "{\"x\": 1}"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let id: i64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    wait_finished(&client, id, Duration::from_secs(10)).await;
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["runs", "echo"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("succeeded") && text.contains("manual"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["status", "--output", "json"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status[0]["name"], "echo");
    assert_eq!(status[0]["succeeded"], 1);
    assert_eq!(status[0]["lastRun"]["status"], "succeeded");
    assert!(status[0]["nextRunAt"].is_string());
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["trigger", "nope"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no job or chain named nope"));
    exec.stop().await;
}

/// Holds every `finished` call until the test has looked at the tables: whatever the observer
/// does then (the sidecar refreshes status files) sees what the tables say at that moment.
struct HoldingObserver {
    told: std::sync::Mutex<std::sync::mpsc::Sender<String>>,
    looked: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl pgsched::executor::RunObserver for HoldingObserver {
    fn started(&self, _job: &str, _lateness: Duration) {}
    fn finished(&self, job: &str, _outcome: &str, _took: Duration) {
        self.told.lock().unwrap().send(job.to_string()).unwrap();
        let _ = self
            .looked
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(10));
    }
}

/// The observer hears of a finished run once the run is recorded finished, not before: the
/// sidecar's status round that it wakes must find the run in the tables (it found it
/// `running` when the observer was told first and the completion written after).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn observers_hear_of_a_finished_run_once_it_is_recorded() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    apply_specs(
        &mut client,
        &Specs::with(&[("a.yaml", &job("noted", "  sql: SELECT 1\n"))]),
    )
    .await;
    let (told_tx, told_rx) = std::sync::mpsc::channel();
    let (looked_tx, looked_rx) = std::sync::mpsc::channel();
    let observer = std::sync::Arc::new(HoldingObserver {
        told: std::sync::Mutex::new(told_tx),
        looked: std::sync::Mutex::new(looked_rx),
    });
    let exec = Executor::start(&db.url, "observed", |c| {
        c.observer = pgsched::executor::Observer(Some(observer));
    });
    let id = trigger(&client, "noted", "{}").await;
    let job = tokio::task::spawn_blocking(move || told_rx.recv_timeout(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the observer hears of the run");
    assert_eq!(job, "noted");
    let (status, ..) = run_row(&client, id).await;
    looked_tx.send(()).unwrap();
    assert_eq!(
        status, "succeeded",
        "the run is recorded before the observer hears"
    );
    exec.stop().await;
}
