//! pgsched as a job queue on a real PostgreSQL: SQL tasks whose writes commit with their run
//! (and roll back with a failure or a takeover), SQL that cannot run in a transaction, replicas
//! draining a backlog together with every run's effect exactly once even when one of them is
//! SIGKILLed, and a clean stop giving back the runs it claimed but did not start.

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

mod common;

use common::{apply_specs, job, trigger, wait_for, Executor, Sidecar, Specs};

use std::time::Duration;
use tokio_postgres::Client;

/// A job that records its run's `n` param as one row of `effects`.
fn effect_job(name: &str, extra: &str) -> String {
    job(
        name,
        &format!(
            "  concurrencyPolicy: Allow\n  history: {{keepSucceeded: 1000000}}\n  sql: INSERT INTO effects (n) VALUES (($1->>'n')::int)\n{extra}"
        ),
    )
}

async fn effects_table(client: &Client) {
    client
        .batch_execute(
            "CREATE TABLE effects (n int NOT NULL, at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
}

async fn run_of(client: &Client, id: i64) -> (String, Option<String>, Option<String>) {
    let r = client
        .query_one(
            "SELECT status, effects, error FROM pgsched.runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2))
}

async fn finished(client: &Client, id: i64) -> (String, Option<String>, Option<String>) {
    wait_for(
        client,
        &format!("SELECT count(*) FROM pgsched.runs WHERE id = {id} AND status NOT IN ('pending', 'running')"),
        |n| n == 1,
        Duration::from_secs(20),
    )
    .await;
    run_of(client, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_writes_commit_with_their_run_and_roll_back_with_a_failure() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    effects_table(&client).await;
    let specs = Specs::with(&[
        ("effect.yaml", &effect_job("effect", "")),
        (
            "half.yaml",
            &job(
                "half",
                "  sql: INSERT INTO effects (n) VALUES (-1); SELECT 1/0\n",
            ),
        ),
        ("vacuum.yaml", &job("vacuum", "  sql: VACUUM effects\n")),
        (
            "own.yaml",
            &job(
                "own",
                "  sql: BEGIN; INSERT INTO effects (n) VALUES (-2); COMMIT\n",
            ),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});

    let ok = trigger(&client, "effect", r#"{"n": 1}"#).await;
    let (status, effects, error) = finished(&client, ok).await;
    assert_eq!(
        (status.as_str(), effects.as_deref(), error),
        ("succeeded", Some("with-run"), None)
    );

    // The INSERT before the error is rolled back with the attempt.
    let bad = trigger(&client, "half", "{}").await;
    let (status, effects, error) = finished(&client, bad).await;
    assert_eq!(
        (status.as_str(), effects.as_deref()),
        ("failed", Some("with-run"))
    );
    assert!(error.unwrap().contains("division by zero"));

    // VACUUM refuses a transaction block: it runs as before, committed on its own.
    let vacuum = trigger(&client, "vacuum", "{}").await;
    let (status, effects, error) = finished(&client, vacuum).await;
    assert_eq!(
        (status.as_str(), effects.as_deref(), error),
        ("succeeded", Some("separate"), None)
    );

    // SQL with its own BEGIN/COMMIT keeps it, and says its writes were committed apart.
    let own = trigger(&client, "own", "{}").await;
    let (status, effects, _) = finished(&client, own).await;
    assert_eq!(
        (status.as_str(), effects.as_deref()),
        ("succeeded", Some("separate"))
    );

    let mut rows: Vec<i32> = client
        .query("SELECT n FROM effects ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    rows.sort_unstable();
    assert_eq!(rows, vec![-2, 1]);
    exec.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_taken_over_meanwhile_rolls_its_writes_back() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    effects_table(&client).await;
    // The SQL writes, then waits for a lock this test holds: the moment to take the run over.
    let specs = Specs::with(&[(
        "slow.yaml",
        &job(
            "slow",
            "  concurrencyPolicy: Allow\n  sql: INSERT INTO effects (n) VALUES (7); SELECT pg_advisory_xact_lock(4242)\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let holder = db.connect().await;
    holder
        .execute("SELECT pg_advisory_lock(4242)", &[])
        .await
        .unwrap();
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let id = trigger(&client, "slow", "{}").await;
    wait_for(
        &client,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        |n| n == 1,
        Duration::from_secs(20),
    )
    .await;
    // Another replica recovers the run (as it would after missed heartbeats) and runs it.
    client
        .execute(
            "UPDATE pgsched.runs SET worker = 'other/1' WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    holder
        .execute("SELECT pg_advisory_unlock(4242)", &[])
        .await
        .unwrap();
    // The executor finds the run no longer its own: nothing it wrote is committed.
    wait_for(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_advisory_xact_lock(4242)%' AND state = 'active' AND pid <> pg_backend_pid()",
        |n| n == 0,
        Duration::from_secs(20),
    )
    .await;
    exec.stop().await;
    let written: i64 = client
        .query_one("SELECT count(*) FROM effects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(written, 0, "the writes of a run taken over are rolled back");
    let (status, ..) = run_of(&client, id).await;
    assert_eq!(status, "running", "the row is the other worker's to settle");
}

/// Waits until no run is pending or running, or panics with the replicas' logs.
async fn drained(client: &Client, replicas: &[Sidecar], within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pgsched.runs WHERE status IN ('pending', 'running')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if left == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            let logs: Vec<String> = replicas.iter().map(Sidecar::log).collect();
            panic!(
                "{left} runs left after {within:?}; logs:\n{}",
                logs.join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every run's effect once: as many rows as runs, no `n` twice, every run succeeded.
async fn exactly_once(client: &Client, runs: i64) {
    let r = client
        .query_one("SELECT count(*), count(DISTINCT n) FROM effects", &[])
        .await
        .unwrap();
    let (rows, distinct): (i64, i64) = (r.get(0), r.get(1));
    let statuses: Vec<(String, Option<String>, i64)> = client
        .query(
            "SELECT status, effects, count(*) FROM pgsched.runs GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        (rows, distinct),
        (runs, runs),
        "one effect per run; runs by status and effects: {statuses:?}"
    );
    assert_eq!(
        statuses,
        vec![("succeeded".to_string(), Some("with-run".to_string()), runs)]
    );
}

fn replica(dir: &std::path::Path, url: &str) -> Sidecar {
    Sidecar::start_plain(
        dir,
        url,
        // Beats a second apart: under a drain that keeps both cores busy, a beat can come a
        // few hundred milliseconds late, and runs must not be taken for lost meanwhile.
        &["--no-reconcile", "--heartbeat", "1s", "--poll", "1s"],
        "warn",
    )
}

async fn enqueue(client: &Client, job: &str, runs: i32) {
    client
        .execute(
            "SELECT pgsched.trigger($1, jsonb_build_object('n', g)) FROM generate_series(1, $2) g",
            &[&job, &runs],
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_drain_a_backlog_with_every_effect_once() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    effects_table(&client).await;
    let specs = Specs::with(&[("effect.yaml", &effect_job("effect", ""))]);
    apply_specs(&mut client, &specs).await;
    let runs = 50_000;
    enqueue(&client, "effect", runs).await;
    let replicas = vec![
        replica(specs.path(), &db.url),
        replica(specs.path(), &db.url),
    ];
    drained(&client, &replicas, Duration::from_secs(180)).await;
    exactly_once(&client, i64::from(runs)).await;
    let workers: i64 = client
        .query_one("SELECT count(DISTINCT worker) FROM pgsched.runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(workers, 2, "both replicas took part");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_drain_a_backlog_exactly_once_though_one_is_killed() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    effects_table(&client).await;
    let specs = Specs::with(&[(
        "effect.yaml",
        &effect_job(
            "effect",
            "  retries: {limit: 3, backoff: {initial: 10ms}}\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let runs = 50_000;
    enqueue(&client, "effect", runs).await;
    let mut replicas: Vec<Sidecar> = (0..3).map(|_| replica(specs.path(), &db.url)).collect();
    // Mid-drain, with runs claimed, queued and in flight on every replica.
    wait_for(
        &client,
        "SELECT count(*) FROM effects",
        |n| n >= 10_000,
        Duration::from_secs(120),
    )
    .await;
    let mut killed = replicas.remove(0);
    let worker_suffix = format!("/{}", killed.child.id());
    killed.signal(libc::SIGKILL);
    killed.wait_exit(Duration::from_secs(10));
    // What it held: claimed (queued or running); effects are recorded with their runs, so none
    // of its completions can be waiting unflushed.
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs WHERE status = 'running' AND worker LIKE '%' || $1",
            &[&worker_suffix],
        )
        .await
        .unwrap()
        .get(0);
    drained(&client, &replicas, Duration::from_secs(180)).await;
    exactly_once(&client, i64::from(runs)).await;
    let retried: i64 = client
        .query_one("SELECT count(*) FROM pgsched.runs WHERE attempt > 1", &[])
        .await
        .unwrap()
        .get(0);
    println!("runs held by the killed replica: about {held}; retried: {retried}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_gives_back_the_runs_it_claimed_but_did_not_start() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::with(&[(
        "noop.yaml",
        &job(
            "noop",
            "  concurrencyPolicy: Allow\n  builtin: {name: log, message: noop, level: debug}\n",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    client
        .execute(
            "INSERT INTO pgsched.runs (job, trigger) SELECT 'noop', 'manual' FROM generate_series(1, 100000)",
            &[],
        )
        .await
        .unwrap();
    // A long heartbeat: anything left `running` after the stop would stay so for a while.
    let exec = Executor::start(&db.url, "w/1", |c| c.heartbeat = Duration::from_secs(60));
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE status = 'succeeded'",
        |n| n >= 5_000,
        Duration::from_secs(60),
    )
    .await;
    exec.stop().await;
    let held: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs WHERE status = 'running'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        held, 0,
        "nothing waits for a heartbeat timeout after a clean stop"
    );
    let pending: i64 = client
        .query_one(
            "SELECT count(*) FROM pgsched.runs WHERE status = 'pending' AND worker IS NULL AND started_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(pending > 0, "the backlog's rest is pending again");
}

/// The largest number of `spans` of `job` open at one instant.
async fn most_at_once(client: &Client, job: &str) -> i64 {
    client
        .query_one(
            "SELECT coalesce(max(n), 0) FROM (
                 SELECT (SELECT count(*) FROM spans o WHERE o.job = s.job AND o.t0 <= s.t0 AND o.t1 > s.t0) AS n
                   FROM spans s WHERE s.job = $1) x",
            &[&job],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusive_and_max_instances_hold_across_replicas_claiming_side_by_side() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE spans (job text NOT NULL, t0 timestamptz NOT NULL, t1 timestamptz NOT NULL)")
        .await
        .unwrap();
    // Each run records when it ran: from its transaction's start to just before its record.
    let span = |name: &str, seconds: f64, extra: &str| {
        job(
            name,
            &format!(
                "  concurrencyPolicy: Allow\n{extra}  sql: SELECT pg_sleep({seconds}); INSERT INTO spans VALUES ('{name}', now(), clock_timestamp())\n"
            ),
        )
    };
    // The exclusive runs last long enough (3 x 0.4 s) to be seen running by a poll.
    let specs = Specs::with(&[
        ("free.yaml", &span("free", 0.05, "")),
        ("alone.yaml", &span("alone", 0.4, "  exclusive: true\n")),
        ("two.yaml", &span("two", 0.05, "  maxInstances: 2\n")),
    ]);
    apply_specs(&mut client, &specs).await;
    let replicas: Vec<Executor> = (0..2)
        .map(|i| Executor::start(&db.url, &format!("w/{i}"), |c| c.concurrency = 4))
        .collect();
    // An exclusive run first; once it runs, everything else arrives and must wait for it.
    client
        .batch_execute("SELECT pgsched.trigger('alone') FROM generate_series(1, 3)")
        .await
        .unwrap();
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'alone' AND status = 'running'",
        |n| n >= 1,
        Duration::from_secs(20),
    )
    .await;
    client
        .batch_execute(
            "SELECT pgsched.trigger(CASE WHEN g % 10 = 0 THEN 'alone' WHEN g % 2 = 0 THEN 'two' ELSE 'free' END)
               FROM generate_series(1, 57) g",
        )
        .await
        .unwrap();
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE status NOT IN ('pending', 'running')",
        |n| n == 60,
        Duration::from_secs(60),
    )
    .await;
    for r in replicas {
        r.stop().await;
    }
    let statuses: Vec<(String, i64)> = client
        .query("SELECT status, count(*) FROM pgsched.runs GROUP BY 1", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(statuses, vec![("succeeded".to_string(), 60)]);
    let overlapping_alone: i64 = client
        .query_one(
            "SELECT count(*) FROM spans a JOIN spans o ON o.ctid <> a.ctid
                 AND o.t0 < a.t1 AND a.t0 < o.t1
              WHERE a.job = 'alone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(overlapping_alone, 0, "an exclusive run ran beside another");
    assert!(
        most_at_once(&client, "two").await <= 2,
        "maxInstances: 2 held"
    );
    assert!(
        most_at_once(&client, "free").await > 1,
        "free runs ran side by side (the test would prove nothing otherwise)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_job_is_gone_is_cancelled_not_started() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    pgsched::store::migrations::migrate(&mut client)
        .await
        .unwrap();
    // A run left behind by a job deleted by hand (a prune deletes the job, not its history).
    let id: i64 = client
        .query_one(
            "INSERT INTO pgsched.runs (job, trigger) VALUES ('gone', 'manual') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let (status, effects, error) = finished(&client, id).await;
    exec.stop().await;
    assert_eq!(
        (status.as_str(), effects, error.as_deref()),
        ("cancelled", None, Some("the job no longer exists"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_class_column_says_what_the_policy_code_says() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let bodies = [
        ("allow", "  concurrencyPolicy: Allow\n"),
        (
            "allow-max",
            "  concurrencyPolicy: Allow\n  maxInstances: 2\n",
        ),
        (
            "allow-deadline",
            "  concurrencyPolicy: Allow\n  startingDeadline: 10s\n",
        ),
        ("default", ""),
        ("forbid", "  concurrencyPolicy: Forbid\n"),
        ("replace", "  concurrencyPolicy: Replace\n"),
        ("alone", "  concurrencyPolicy: Allow\n  exclusive: true\n"),
        ("alone-forbid", "  exclusive: true\n"),
        (
            "not-alone",
            "  concurrencyPolicy: Allow\n  exclusive: false\n",
        ),
    ];
    let files: Vec<(String, String)> = bodies
        .iter()
        .map(|(name, body)| {
            (
                format!("{name}.yaml"),
                job(
                    name,
                    &format!("{body}  builtin: {{name: log, message: hi}}\n"),
                ),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    let specs = Specs::with(&refs);
    apply_specs(&mut client, &specs).await;
    let rows = client
        .query(
            "SELECT name, kind, spec, claim_class FROM pgsched.jobs ORDER BY name",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), bodies.len());
    for row in rows {
        let (name, kind, spec, column): (String, String, serde_json::Value, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        let parsed = pgsched::spec::Runnable::from_row(&kind, spec).unwrap();
        let class = pgsched::executor::policy::claim_class(&parsed.scheduling());
        assert_eq!(column, class.as_str(), "{name}");
    }
}
