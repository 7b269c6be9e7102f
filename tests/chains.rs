//! Chains on a real PostgreSQL, run by an executor in this process: transactions with
//! savepoints, stopping at the first failure, steps of every kind with parameters, the chain's
//! timeout, onFailure steps, graphs with parallel steps, schedules, and `pgsched runs`.
//!
//! Every wait polls a condition against a deadline; the only sleeps are the steps' own work.

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

mod common;

use common::{apply_specs, trigger, wait_for, Executor, Specs};

use chrono::{DateTime, Utc};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

fn chain(name: &str, body: &str) -> String {
    format!("apiVersion: pgsched/v1\nkind: Chain\nmetadata:\n  name: {name}\nspec:\n{body}")
}

#[derive(Debug)]
struct Run {
    status: String,
    attempt: i32,
    error: Option<String>,
    output: Option<String>,
    kind: String,
}

/// Waits for run `id` to finish and returns it.
async fn finished(client: &Client, id: i64, within: Duration) -> Run {
    wait_for(
        client,
        &format!("SELECT count(*) FROM pgsched.runs WHERE id = {id} AND status NOT IN ('pending', 'running')"),
        |n| n == 1,
        within,
    )
    .await;
    let r = client
        .query_one(
            "SELECT status, attempt, error, output, kind FROM pgsched.runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    Run {
        status: r.get(0),
        attempt: r.get(1),
        error: r.get(2),
        output: r.get(3),
        kind: r.get(4),
    }
}

#[derive(Debug)]
struct StepInfo {
    position: i32,
    name: String,
    status: String,
    attempt: i32,
    ignored: bool,
    on_failure: bool,
    started: Option<DateTime<Utc>>,
    finished: Option<DateTime<Utc>>,
    error: Option<String>,
    output: Option<String>,
}

/// The recorded steps of a run's last attempt, in order.
async fn steps(client: &Client, id: i64) -> Vec<StepInfo> {
    client
        .query(
            "SELECT position, name, status, attempt, ignored, on_failure, started_at, finished_at,
                    error, output
               FROM pgsched.run_steps
              WHERE run_id = $1
                AND run_attempt = (SELECT max(run_attempt) FROM pgsched.run_steps WHERE run_id = $1)
              ORDER BY position",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| StepInfo {
            position: r.get(0),
            name: r.get(1),
            status: r.get(2),
            attempt: r.get(3),
            ignored: r.get(4),
            on_failure: r.get(5),
            started: r.get(6),
            finished: r.get(7),
            error: r.get(8),
            output: r.get(9),
        })
        .collect()
}

fn statuses(steps: &[StepInfo]) -> Vec<(&str, &str)> {
    steps
        .iter()
        .map(|s| (s.name.as_str(), s.status.as_str()))
        .collect()
}

fn step<'a>(steps: &'a [StepInfo], name: &str) -> &'a StepInfo {
    steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name} in {steps:#?}"))
}

async fn values(client: &Client, table: &str) -> Vec<i32> {
    client
        .query(&format!("SELECT v FROM {table} ORDER BY v"), &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_transactional_chain_whose_second_step_fails_leaves_nothing_of_its_first() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("fetched");
    let specs = Specs::with(&[(
        "load.yaml",
        &chain(
            "load",
            &format!(
                "  transaction: true
  steps:
    - name: first
      sql: INSERT INTO t VALUES (1), (2)
    - name: fetch
      command: [touch, {marker}]
    - name: second
      sql: INSERT INTO t VALUES (1 / 0)
    - name: third
      sql: INSERT INTO t VALUES (3)
",
                marker = marker.display()
            ),
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "load", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "failed");
    assert_eq!(run.kind, "Chain");
    let error = run.error.unwrap();
    assert!(
        error.contains("step `second` failed") && error.contains("division by zero"),
        "{error}"
    );
    assert_eq!(
        run.output.as_deref(),
        Some("4 steps: 1 succeeded, 1 failed, 1 rolled back, 1 skipped")
    );
    // Nothing of the first step stays; the command step's effect is outside the transaction.
    assert_eq!(values(&client, "t").await, Vec::<i32>::new());
    assert!(marker.exists());
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("first", "rolled_back"),
            ("fetch", "succeeded"),
            ("second", "failed"),
            ("third", "skipped")
        ]
    );
    assert_eq!(step(&recorded, "first").output.as_deref(), Some("rows: 2"));
    assert!(step(&recorded, "second")
        .error
        .as_deref()
        .unwrap()
        .contains("division by zero"));
    assert_eq!(
        step(&recorded, "third").error.as_deref(),
        Some("not run: step `second` failed")
    );
    assert!(step(&recorded, "third").started.is_none());
    // The transaction's connection is not left idle in a transaction.
    wait_for(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
        |n| n == 0,
        Duration::from_secs(5),
    )
    .await;

    // `pgsched runs` shows the steps under the run, text and JSON.
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["runs", "load"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let run_line = lines
        .iter()
        .position(|l| l.contains("step `second` failed"))
        .unwrap_or_else(|| panic!("{text}"));
    let first = lines.iter().position(|l| l.contains(" first ")).unwrap();
    let third = lines.iter().position(|l| l.contains(" third ")).unwrap();
    assert!(run_line < first && first < third, "{text}");
    assert!(lines[first].contains("rolled back"), "{text}");
    assert!(
        lines[third].contains("skipped") && lines[third].contains("not run"),
        "{text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["runs", "load", "--output", "json"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let json_steps = json[0]["steps"].as_array().unwrap();
    assert_eq!(json_steps.len(), 4);
    assert_eq!(json_steps[2]["name"], "second");
    assert_eq!(json_steps[2]["status"], "failed");
    assert_eq!(json_steps[0]["runAttempt"], 1);
    exec.stop().await;
}

#[tokio::test]
async fn an_ignored_failure_inside_a_transaction_keeps_the_steps_before_and_after_it() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int); CREATE SEQUENCE tries;")
        .await
        .unwrap();
    // `flaky` fails on its first attempt (after inserting 20) and succeeds on its second: the
    // retry rolls back to the savepoint first, so 20 is there once. Sequences are not rolled
    // back, which is what makes the second attempt differ.
    let specs = Specs::with(&[(
        "keep.yaml",
        &chain(
            "keep",
            "  transaction: true
  steps:
    - name: before
      sql: INSERT INTO t VALUES (1)
    - name: broken
      sql: INSERT INTO t VALUES (2); SELECT 1 / 0
      ignoreError: true
    - name: flaky
      sql: INSERT INTO t VALUES (20); SELECT 1 / (nextval('tries') - 1)
      retries: {limit: 2, backoff: {initial: 100ms}}
    - name: after
      sql: INSERT INTO t VALUES (3)
",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "keep", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    assert_eq!(
        run.output.as_deref(),
        Some("4 steps: 3 succeeded, 1 failed (ignored)")
    );
    assert_eq!(values(&client, "t").await, [1, 3, 20]);
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("before", "succeeded"),
            ("broken", "failed"),
            ("flaky", "succeeded"),
            ("after", "succeeded")
        ]
    );
    let broken = step(&recorded, "broken");
    assert!(broken.ignored);
    assert!(broken
        .error
        .as_deref()
        .unwrap()
        .contains("division by zero"));
    assert_eq!(step(&recorded, "flaky").attempt, 2);
    assert_eq!(step(&recorded, "before").attempt, 1);
    exec.stop().await;
}

#[tokio::test]
async fn a_chain_without_a_transaction_stops_at_the_first_failure() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let marker = scratch.path().join("never");
    let specs = Specs::with(&[(
        "line.yaml",
        &chain(
            "line",
            &format!(
                "  steps:
    - sql: INSERT INTO t VALUES (1)
    - name: tolerated
      shell: exit 3
      ignoreError: true
    - sql: INSERT INTO t VALUES (2)
    - name: boom
      shell: echo 'no such file' >&2; exit 2
    - sql: INSERT INTO t VALUES (3)
    - name: later
      command: [touch, {marker}]
",
                marker = marker.display()
            ),
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "line", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "failed");
    let error = run.error.unwrap();
    assert!(error.starts_with("step `boom` failed: "), "{error}");
    assert!(error.contains("no such file"), "{error}");
    // Each SQL step committed on its own; nothing after the failure ran.
    assert_eq!(values(&client, "t").await, [1, 2]);
    assert!(!marker.exists());
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("step-1", "succeeded"),
            ("tolerated", "failed"),
            ("step-3", "succeeded"),
            ("boom", "failed"),
            ("step-5", "skipped"),
            ("later", "skipped")
        ]
    );
    assert!(step(&recorded, "tolerated").ignored);
    assert!(!step(&recorded, "boom").ignored);
    for name in ["step-5", "later"] {
        let s = step(&recorded, name);
        assert_eq!(s.error.as_deref(), Some("not run: step `boom` failed"));
        assert!(s.started.is_none() && s.finished.is_none());
    }
    assert_eq!(
        run.output.as_deref(),
        Some("6 steps: 2 succeeded, 1 failed, 1 failed (ignored), 2 skipped")
    );
    exec.stop().await;
}

#[tokio::test]
async fn a_command_step_runs_between_sql_steps_and_every_step_gets_the_parameters() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int, note text)")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let seen = scratch.path().join("params.json");
    let specs = Specs::with(&[(
        "params.yaml",
        &chain(
            "params",
            &format!(
                "  transaction: true
  params: {{note: hello, n: 1}}
  steps:
    - name: load
      sql: INSERT INTO t SELECT ($1->>'n')::int, $1->>'note'
    - name: export
      command: [sh, -c, 'printf %s \"$PGSCHED_PARAMS\" > \"$0\"; echo exported', {seen}]
    - name: mark
      sql: INSERT INTO t SELECT ($1->>'n')::int + 1, 'after ' || ($1->>'note')
",
                seen = seen.display()
            ),
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "params", "{\"n\": 7}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let rows: Vec<(i32, String)> = client
        .query("SELECT v, note FROM t ORDER BY v", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [(7, "hello".to_string()), (8, "after hello".to_string())]
    );
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(params, serde_json::json!({"note": "hello", "n": 7}));
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("load", "succeeded"),
            ("export", "succeeded"),
            ("mark", "succeeded")
        ]
    );
    assert_eq!(
        step(&recorded, "export").output.as_deref(),
        Some("exported\n")
    );
    // In order: the command ran after the first SQL step and before the second.
    let (load, export, mark) = (
        step(&recorded, "load"),
        step(&recorded, "export"),
        step(&recorded, "mark"),
    );
    assert!(load.finished.unwrap() <= export.started.unwrap());
    assert!(export.finished.unwrap() <= mark.started.unwrap());
    exec.stop().await;
}

#[tokio::test]
async fn the_chains_timeout_cancels_a_long_step_and_fails_the_chain() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let specs = Specs::with(&[
        (
            "slow-sql.yaml",
            &chain(
                "slow-sql",
                "  transaction: true
  timeout: 2s
  steps:
    - sql: INSERT INTO t VALUES (1)
    - name: long
      sql: SELECT pg_sleep(60)
      timeout: 1h
    - sql: INSERT INTO t VALUES (2)
",
            ),
        ),
        (
            "slow-shell.yaml",
            &chain(
                "slow-shell",
                "  timeout: 1s
  steps:
    - name: long
      shell: sleep 60
    - sql: INSERT INTO t VALUES (3)
",
            ),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let started = Instant::now();
    let sql_run = trigger(&client, "slow-sql", "{}").await;
    let shell_run = trigger(&client, "slow-shell", "{}").await;
    for (id, name) in [(sql_run, "slow-sql"), (shell_run, "slow-shell")] {
        let run = finished(&client, id, Duration::from_secs(30)).await;
        assert_eq!(run.status, "failed", "{name}");
        let error = run.error.unwrap();
        assert!(
            error.starts_with("timed out: the chain's timeout") && error.contains("step `long`"),
            "{name}: {error}"
        );
        let recorded = steps(&client, id).await;
        let long = step(&recorded, "long");
        assert_eq!(long.status, "failed");
        assert!(
            long.error
                .as_deref()
                .unwrap()
                .contains("the chain's timeout"),
            "{long:?}"
        );
        assert_eq!(recorded.last().unwrap().status, "skipped", "{recorded:#?}");
    }
    assert!(started.elapsed() < Duration::from_secs(20));
    // Nothing of the transactional chain stays, the later step of the other did not run, and
    // the cancelled statement is gone.
    assert_eq!(values(&client, "t").await, Vec::<i32>::new());
    wait_for(
        &client,
        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND pid <> pg_backend_pid()",
        |n| n == 0,
        Duration::from_secs(5),
    )
    .await;
    exec.stop().await;
}

#[tokio::test]
async fn on_failure_steps_run_after_the_rollback_with_the_failed_step_and_its_error() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int); CREATE TABLE failures (step text, error text, attempt int, will_retry boolean)")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let seen = scratch.path().join("alert.json");
    // The first step locks `t` inside the transaction: the onFailure step that writes to `t`
    // could only finish after the rollback released it.
    let specs = Specs::with(&[(
        "guarded.yaml",
        &chain(
            "guarded",
            &format!(
                "  transaction: true
  timeout: 20s
  params: {{team: payments}}
  steps:
    - name: lock
      sql: INSERT INTO t VALUES (1); LOCK TABLE t IN ACCESS EXCLUSIVE MODE
    - name: compute
      sql: SELECT 1 / 0
    - name: never
      sql: INSERT INTO t VALUES (2)
  onFailure:
    - name: record
      sql: INSERT INTO failures SELECT $1->>'failedStep', $1->>'error', ($1->>'attempt')::int, ($1->>'willRetry')::boolean
    - name: cleanup
      sql: INSERT INTO t VALUES (99)
    - command: [sh, -c, 'printf %s \"$PGSCHED_PARAMS\" > \"$0\"', {seen}]
",
                seen = seen.display()
            ),
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "guarded", "{}").await;
    let run = finished(&client, id, Duration::from_secs(30)).await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error
            .as_deref()
            .unwrap()
            .starts_with("step `compute` failed: division by zero"),
        "{:?}",
        run.error
    );
    assert_eq!(
        run.output.as_deref(),
        Some("3 steps: 1 failed, 1 rolled back, 1 skipped; onFailure: 3 succeeded")
    );
    let failures = client
        .query_one("SELECT step, error, attempt, will_retry FROM failures", &[])
        .await
        .unwrap();
    assert_eq!(failures.get::<_, String>(0), "compute");
    assert!(failures.get::<_, String>(1).contains("division by zero"));
    assert_eq!(failures.get::<_, i32>(2), 1);
    assert!(!failures.get::<_, bool>(3));
    assert_eq!(values(&client, "t").await, [99]);
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&seen).unwrap()).unwrap();
    assert_eq!(params["team"], "payments");
    assert_eq!(params["failedStep"], "compute");
    assert!(params["error"]
        .as_str()
        .unwrap()
        .contains("division by zero"));

    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("lock", "rolled_back"),
            ("compute", "failed"),
            ("never", "skipped"),
            ("record", "succeeded"),
            ("cleanup", "succeeded"),
            ("on-failure-3", "succeeded")
        ]
    );
    let positions: Vec<(i32, bool)> = recorded
        .iter()
        .map(|s| (s.position, s.on_failure))
        .collect();
    assert_eq!(
        positions,
        [
            (1, false),
            (2, false),
            (3, false),
            (4, true),
            (5, true),
            (6, true)
        ]
    );
    // The handlers ran after the chain's steps ended.
    assert!(
        step(&recorded, "record").started.unwrap() >= step(&recorded, "compute").finished.unwrap()
    );
    exec.stop().await;
}

#[tokio::test]
async fn a_diamond_graph_runs_b_and_c_at_the_same_time_and_d_after_both() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let slow_done = scratch.path().join("slow-done");
    let specs = Specs::with(&[
        (
            "diamond.yaml",
            &chain(
                "diamond",
                "  steps:
    - name: d
      needs: [b, c]
      sql: INSERT INTO t VALUES (4)
    - name: a
      sql: INSERT INTO t VALUES (1)
    - name: b
      needs: [a]
      shell: sleep 1
    - name: c
      needs: [a]
      builtin: {name: sleep, duration: 1s}
  onFailure:
    - builtin: {name: log, message: not needed}
",
            ),
        ),
        (
            "split.yaml",
            &chain(
                "split",
                &format!(
                    "  steps:
    - name: slow
      shell: sleep 1; touch {done}
    - name: a
      sql: INSERT INTO t VALUES (10)
    - name: b
      needs: [a]
      sql: SELECT 1 / 0
    - name: d
      needs: [b]
      sql: INSERT INTO t VALUES (11)
    - name: e
      needs: [d]
      sql: INSERT INTO t VALUES (12)
",
                    done = slow_done.display()
                ),
            ),
        ),
    ]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));

    let id = trigger(&client, "diamond", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    assert_eq!(run.output.as_deref(), Some("4 steps: 4 succeeded"));
    assert_eq!(values(&client, "t").await, [1, 4]);
    let recorded = steps(&client, id).await;
    // No onFailure step is recorded when the chain succeeds.
    assert_eq!(recorded.len(), 4);
    let at = |name: &str| {
        let s = step(&recorded, name);
        (s.started.unwrap(), s.finished.unwrap())
    };
    let (a, b, c, d) = (at("a"), at("b"), at("c"), at("d"));
    assert!(
        a.1 <= b.0 && a.1 <= c.0,
        "b and c wait for a: {recorded:#?}"
    );
    assert!(
        b.0 < c.1 && c.0 < b.1,
        "b and c ran at the same time: {recorded:#?}"
    );
    assert!(
        d.0 >= b.1 && d.0 >= c.1,
        "d waits for b and c: {recorded:#?}"
    );

    // A failure in a graph: what needs it is skipped, an independent running step finishes.
    let id = trigger(&client, "split", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!(run.status, "failed");
    assert!(
        run.error.as_deref().unwrap().starts_with("step `b` failed"),
        "{:?}",
        run.error
    );
    assert!(slow_done.exists());
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("slow", "succeeded"),
            ("a", "succeeded"),
            ("b", "failed"),
            ("d", "skipped"),
            ("e", "skipped")
        ]
    );
    assert!(step(&recorded, "b").finished.unwrap() < step(&recorded, "slow").finished.unwrap());
    assert_eq!(
        step(&recorded, "d").error.as_deref(),
        Some("not run: it needs `b`, which failed")
    );
    assert_eq!(
        step(&recorded, "e").error.as_deref(),
        Some("not run: it needs `d`, which did not run")
    );
    assert_eq!(values(&client, "t").await, [1, 4, 10]);
    exec.stop().await;
}

#[tokio::test]
async fn scheduled_chains_create_runs_of_kind_chain() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let specs = Specs::with(&[(
        "tick.yaml",
        &chain(
            "tick",
            "  schedule: \"* * * * * *\"
  steps:
    - sql: INSERT INTO t VALUES (1)
    - builtin: {name: log, message: ticked}
",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'tick' AND kind = 'Chain' AND trigger = 'schedule' AND status = 'succeeded'",
        |n| n >= 2,
        Duration::from_secs(20),
    )
    .await;
    exec.stop().await;
    let kinds: Vec<String> = client
        .query(
            "SELECT DISTINCT kind FROM pgsched.runs WHERE job = 'tick'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(kinds, ["Chain"]);
    let id: i64 = client
        .query_one(
            "SELECT min(id) FROM pgsched.runs WHERE job = 'tick' AND status = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let recorded = steps(&client, id).await;
    assert_eq!(
        statuses(&recorded),
        [("step-1", "succeeded"), ("step-2", "succeeded")]
    );
    assert_eq!(step(&recorded, "step-2").output.as_deref(), Some("ticked"));
}

#[tokio::test]
async fn a_retried_chain_keeps_the_steps_of_each_attempt() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE SEQUENCE tries; CREATE TABLE alerts (will_retry boolean)")
        .await
        .unwrap();
    let specs = Specs::with(&[(
        "again.yaml",
        &chain(
            "again",
            "  retries: {limit: 1, backoff: {initial: 100ms}}
  steps:
    - name: flaky
      sql: SELECT 1 / (nextval('tries') - 1)
  onFailure:
    - sql: INSERT INTO alerts SELECT ($1->>'willRetry')::boolean
",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));
    let id = trigger(&client, "again", "{}").await;
    let run = finished(&client, id, Duration::from_secs(20)).await;
    assert_eq!((run.status.as_str(), run.attempt), ("succeeded", 2));
    let attempts: Vec<(i32, String, String)> = client
        .query(
            "SELECT run_attempt, name, status FROM pgsched.run_steps WHERE run_id = $1 ORDER BY run_attempt, position",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let expected = [
        (1, "flaky", "failed"),
        (1, "on-failure-1", "succeeded"),
        (2, "flaky", "succeeded"),
    ];
    assert_eq!(
        attempts,
        expected.map(|(a, n, s)| (a, n.to_string(), s.to_string()))
    );
    // The failure handler of the first attempt was told the chain would be retried.
    let told: Vec<bool> = client
        .query("SELECT will_retry FROM alerts", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(told, [true]);

    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["runs", "again"])
        .env("DATABASE_URL", &db.url)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("attempt 1:") && text.contains("attempt 2:"),
        "{text}"
    );
    exec.stop().await;
}

#[tokio::test]
async fn a_replaced_chain_stops_its_running_step_runs_no_more_and_no_on_failure() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE t (v int)")
        .await
        .unwrap();
    let specs = Specs::with(&[(
        "r.yaml",
        &chain(
            "r",
            "  concurrencyPolicy: Replace
  transaction: true
  steps:
    - sql: INSERT INTO t VALUES (1)
    - name: wait
      sql: SELECT pg_sleep(60)
    - sql: INSERT INTO t VALUES (2)
  onFailure:
    - sql: INSERT INTO t VALUES (99)
",
        ),
    )]);
    apply_specs(&mut client, &specs).await;
    let exec = Executor::start(&db.url, "chains/1", |c| c.grace = Duration::from_secs(2));
    let first = trigger(&client, "r", "{}").await;
    wait_for(
        &client,
        &format!("SELECT count(*) FROM pgsched.run_steps WHERE run_id = {first} AND name = 'wait' AND status = 'running'"),
        |n| n == 1,
        Duration::from_secs(10),
    )
    .await;
    let second = trigger(&client, "r", "{}").await;
    let run = finished(&client, first, Duration::from_secs(15)).await;
    assert_eq!(run.status, "cancelled");
    let recorded = steps(&client, first).await;
    assert_eq!(
        statuses(&recorded),
        [
            ("step-1", "rolled_back"),
            ("wait", "cancelled"),
            ("step-3", "skipped")
        ]
    );
    assert_eq!(
        step(&recorded, "step-3").error.as_deref(),
        Some("not run: the run was cancelled")
    );
    assert_eq!(values(&client, "t").await, Vec::<i32>::new());
    wait_for(
        &client,
        &format!("SELECT count(*) FROM pgsched.run_steps WHERE run_id = {second} AND name = 'wait' AND status = 'running'"),
        |n| n == 1,
        Duration::from_secs(10),
    )
    .await;
    exec.stop().await;
}
