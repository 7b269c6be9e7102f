//! `make bench`: the executor's timing on a private PostgreSQL. Prints p50 / p99 / max of
//! (a) start lateness of a per-second cron job over 60 s (goal p99 ≤ 10 ms),
//! (b) trigger-to-start latency (goal p99 ≤ 5 ms),
//! (c) the throughput of draining 100,000 queued runs of a no-op task with one and two
//! replicas at the default settings (median of 3 runs).
//! (d) the rate of enqueueing 100,000 runs through `pgsched.trigger_many`, as
//!     `pgsched trigger --params-file` does (batches of 10,000 in one transaction), the median
//!     of 3 repetitions.
//! Asserts nothing. `PGSCHED_BENCH_QUICK=1` shortens (a) to 10 s.

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

#[path = "../tests/common/mod.rs"]
mod common;

use pgsched::executor::ExecutorConfig;
use pgsched::reconcile::{apply, Outcome};
use std::time::{Duration, Instant};

fn percentiles(label: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "{label:<44} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms   (n={})",
        at(0.5),
        at(0.99),
        ms[ms.len() - 1],
        ms.len()
    );
}

/// An executor with pgsched's default settings but for the concurrency.
fn start(url: &str, concurrency: usize) -> common::Executor {
    common::Executor::start(url, &pgsched::executor::default_worker_name(), |c| {
        let defaults = ExecutorConfig::new(url);
        c.poll = defaults.poll;
        c.heartbeat = defaults.heartbeat;
        c.concurrency = concurrency;
    })
}

async fn apply_spec(client: &mut tokio_postgres::Client, yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bench.yaml"), yaml).unwrap();
    assert!(matches!(
        apply(client, dir.path(), true).await.unwrap(),
        Outcome::Applied(_)
    ));
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let quick = std::env::var_os("PGSCHED_BENCH_QUICK").is_some() || !common::full_bench();
        println!("executor benchmark");

        // (a) start lateness of a per-second cron job.
        let db = common::fresh_db().await;
        let mut client = db.connect().await;
        apply_spec(
            &mut client,
            "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: tick}\nspec:\n  schedule: \"* * * * * *\"\n  builtin: {name: log, message: tick}\n",
        )
        .await;
        let exec = start(&db.url, 8);
        tokio::time::sleep(Duration::from_secs(if quick { 10 } else { 60 })).await;
        exec.stop().await;
        let lateness: Vec<f64> = client
            .query(
                "SELECT extract(epoch FROM started_at - scheduled_at)::float8 * 1000 FROM pgsched.runs
                  WHERE job = 'tick' AND started_at IS NOT NULL ORDER BY id OFFSET 1",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        percentiles("(a) per-second cron: start lateness", lateness);

        // (b) trigger-to-start: from the trigger's commit to the run's start.
        let db = common::fresh_db().await;
        let mut client = db.connect().await;
        apply_spec(
            &mut client,
            "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: ping}\nspec:\n  concurrencyPolicy: Allow\n  builtin: {name: log, message: ping}\n",
        )
        .await;
        let exec = start(&db.url, 8);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut latency = Vec::new();
        for _ in 0..200 {
            let committed = chrono::Utc::now();
            let id: i64 = client
                .query_one("SELECT pgsched.trigger('ping', '{}')", &[])
                .await
                .unwrap()
                .get(0);
            let started = loop {
                let row = client
                    .query_one("SELECT started_at FROM pgsched.runs WHERE id = $1", &[&id])
                    .await
                    .unwrap();
                if let Some(t) = row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0) {
                    break t;
                }
                tokio::time::sleep(Duration::from_micros(200)).await;
            };
            latency.push((started - committed).num_microseconds().unwrap() as f64 / 1000.0);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        exec.stop().await;
        percentiles("(b) trigger to start", latency);

        // (c) drains of queued runs: no-op runs with one and two replicas, and one-row INSERTs.
        let runs: i32 = if common::full_bench() { 100_000 } else { 2_000 };
        let repeats = if common::full_bench() { 3 } else { 1 };
        let noop = "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: noop}\nspec:\n  concurrencyPolicy: Allow\n  builtin: {name: log, message: noop, level: debug}\n";
        for replicas in [1, 2] {
            let rates = drains(repeats, ("", noop), "noop", runs, replicas).await;
            report_drain(&format!("(c) drain {runs} no-op runs, {replicas} replica(s)"), &rates);
        }
        let insert = "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: insert}\nspec:\n  concurrencyPolicy: Allow\n  sql: INSERT INTO effects (at) VALUES (now())\n";
        let table = "CREATE TABLE effects (id bigserial PRIMARY KEY, at timestamptz NOT NULL)";
        let rates = drains(repeats, (table, insert), "insert", runs, 1).await;
        report_drain(&format!("(c) drain {runs} one-row INSERT runs (with-run)"), &rates);

        enqueue_through_trigger_many().await;
    });
}

/// Drains `runs` queued runs of `job` with `replicas` executors at pgsched's default settings,
/// `repeats` times on fresh databases set up with `setup` SQL and a spec; the rates in runs/s.
async fn drains(
    repeats: usize,
    (setup, spec): (&str, &str),
    job: &str,
    runs: i32,
    replicas: usize,
) -> Vec<f64> {
    let mut rates = Vec::new();
    for _ in 0..repeats {
        let db = common::fresh_db().await;
        let mut client = db.connect().await;
        client.batch_execute(setup).await.unwrap();
        apply_spec(&mut client, spec).await;
        client
            .execute(
                "INSERT INTO pgsched.runs (job, trigger, due_at) SELECT $2, 'manual', now() FROM generate_series(1, $1)",
                &[&runs, &job],
            )
            .await
            .unwrap();
        client
            .execute("VACUUM ANALYZE pgsched.runs", &[])
            .await
            .unwrap();
        let started = Instant::now();
        let executors: Vec<_> = (0..replicas)
            .map(|i| {
                common::Executor::start(&db.url, &format!("bench/{i}"), |c| {
                    let defaults = ExecutorConfig::new(&db.url);
                    c.poll = defaults.poll;
                    c.heartbeat = defaults.heartbeat;
                })
            })
            .collect();
        // Through the partial indexes: a count of the whole table would load the server.
        loop {
            let busy: bool = client
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM pgsched.runs WHERE status = 'pending')
                         OR EXISTS (SELECT 1 FROM pgsched.runs WHERE status = 'running')",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            if !busy {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rates.push(f64::from(runs) / started.elapsed().as_secs_f64());
        if std::env::var_os("PGSCHED_BENCH_VERBOSE").is_some() {
            println!("    one drain: {:.0} runs/s", rates[rates.len() - 1]);
        }
        for e in executors {
            e.stop().await;
        }
    }
    rates
}

/// Prints the median of drain rates, with the runs' spread.
fn report_drain(label: &str, rates: &[f64]) {
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    println!(
        "{label:<44} median {:>8.0} runs/s   min {:>8.0}   max {:>8.0}   (n={})",
        sorted[sorted.len() / 2],
        sorted[0],
        sorted[sorted.len() - 1],
        sorted.len()
    );
}

/// (d) 100,000 runs enqueued through `pgsched.trigger_many` with no executor running: the
/// median of 3 repetitions, on an emptied runs table each time (2,000 runs once in a smoke run).
async fn enqueue_through_trigger_many() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    apply_spec(
        &mut client,
        "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: send}\nspec:\n  concurrencyPolicy: Allow\n  builtin: {name: log, message: send, level: debug}\n",
    )
    .await;
    let (runs, repetitions) = if common::full_bench() {
        (100_000, 3)
    } else {
        (2_000, 1)
    };
    // Parameter sets the size of a typical e-mail or webhook job's.
    let params: Vec<serde_json::Value> = (0..runs)
        .map(|n| serde_json::json!({"user_id": n, "template": "welcome", "locale": "de-CH"}))
        .collect();
    let mut seconds = Vec::new();
    for _ in 0..repetitions {
        client
            .batch_execute("TRUNCATE pgsched.runs, pgsched.run_steps")
            .await
            .unwrap();
        let started = Instant::now();
        let ids = pgsched::store::report::trigger_in_batches(
            &mut client,
            "send",
            &params,
            None,
            pgsched::store::report::TRIGGER_BATCH,
        )
        .await
        .unwrap();
        seconds.push(started.elapsed().as_secs_f64());
        assert_eq!(ids.len(), runs);
    }
    seconds.sort_by(f64::total_cmp);
    let median = seconds[seconds.len() / 2];
    println!(
        "(d) enqueue {runs} runs through trigger_many  {median:>8.2} s   {:>8.0} runs/s   (median of {repetitions})",
        runs as f64 / median
    );
}
