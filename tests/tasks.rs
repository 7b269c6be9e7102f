//! Running each task kind for real: SQL on the test server (batches, `$1` params, timeouts that
//! cancel the backend, transactions left open, named connections and their passwords), programs
//! and shell scripts (environment, exit status, bounded output, SIGTERM then SIGKILL), and the
//! builtins (`sleep`, `log`, `notify`, and `http` against a small server of the test's own).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pgsched::duration::SpecDuration;
use pgsched::executor::connections::Databases;
use pgsched::executor::tasks::{
    run_sql_on, run_task, Outcome, TaskContext, TaskOutcome, KILL_GRACE, OUTPUT_LIMIT,
};
use pgsched::spec::{Builtin, ConnectionSpec, HttpMethod, LogLevel, Task};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const NO_ENV: &BTreeMap<String, String> = &BTreeMap::new();

/// A fresh database and the pools a task runs with.
struct Setup {
    db: common::TestDb,
    databases: Databases,
}

async fn setup() -> Setup {
    setup_with_pool_size(4).await
}

async fn setup_with_pool_size(max_size: usize) -> Setup {
    let db = common::fresh_db().await;
    let databases = Databases::new(&db.url, max_size).unwrap();
    Setup { db, databases }
}

/// A context with no timeout, a fresh cancellation token and `params`.
fn context<'a>(databases: &'a Databases, params: &'a Value) -> TaskContext<'a> {
    TaskContext {
        job: "nightly-test",
        run_id: 4711,
        attempt: 2,
        params,
        timeout: None,
        cancel: CancellationToken::new(),
        databases,
        database: None,
    }
}

fn empty() -> Value {
    json!({})
}

/// Polls `condition` until it holds, failing the test after `limit`.
fn assert_status(outcome: &TaskOutcome, status: Outcome) {
    assert_eq!(outcome.status, status, "unexpected outcome: {outcome:#?}");
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A `postgres://` URL (what a Connection spec holds) for a key=value connection string of the
/// harness, with the socket directory percent-encoded as the host.
fn url_for(conninfo: &str, user: Option<&str>) -> String {
    let config: tokio_postgres::Config = conninfo.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Unix(path) => path.to_string_lossy().into_owned(),
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
    };
    let encoded: String = host
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "postgres://{}@{encoded}:{}/{}",
        user.unwrap_or(config.get_user().unwrap()),
        config.get_ports()[0],
        config.get_dbname().unwrap()
    )
}

// ---------------------------------------------------------------------------------------------
// SQL

#[tokio::test]
async fn sql_batch_runs_every_statement_and_sums_rows() {
    let s = setup().await;
    let params = empty();
    let outcome = run_task(
        &Task::Sql(
            "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 3); \
             UPDATE t SET x = x + 10 WHERE x < 3;",
        ),
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.rows_affected, Some(5));
    assert_eq!(outcome.output, "statements: 3, rows: 5");
    assert_eq!(outcome.error, None);
    let client = s.db.connect().await;
    assert_eq!(
        count(&client, "SELECT sum(x)::int8 FROM t").await,
        11 + 12 + 3
    );
}

#[tokio::test]
async fn sql_with_dollar_one_gets_the_params_as_jsonb() {
    let s = setup().await;
    let client = s.db.connect().await;
    client
        .batch_execute("CREATE TABLE greeted (user_id int, name text)")
        .await
        .unwrap();
    let params = json!({"user_id": 42, "name": "Ada"});
    let outcome = run_task(
        &Task::Sql(
            "INSERT INTO greeted SELECT ($1->>'user_id')::int, $1->>'name' \
             FROM generate_series(1, 2)",
        ),
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.rows_affected, Some(2));
    assert_eq!(outcome.output, "rows: 2");
    let row = client
        .query_one(
            "SELECT user_id, name, count(*) FROM greeted GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_eq!(row.get::<_, String>(1), "Ada");
    assert_eq!(row.get::<_, i64>(2), 2);
}

#[tokio::test]
async fn sql_error_is_reported_with_the_server_message() {
    let s = setup().await;
    let params = empty();
    let outcome = run_task(
        &Task::Sql("SELECT * FROM no_such_table"),
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Failed);
    let error = outcome.error.unwrap();
    assert!(
        error.contains("relation \"no_such_table\" does not exist"),
        "{error}"
    );
}

/// Backends of this database (other than the asking one) still running `pg_sleep`.
async fn sleeping_backends(client: &tokio_postgres::Client) -> i64 {
    count(
        client,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE '%pg_sleep%'",
    )
    .await
}

#[tokio::test]
async fn sql_timeout_cancels_the_backend() {
    let s = setup().await;
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(500)),
        ..context(&s.databases, &params)
    };
    let started = Instant::now();
    let outcome = run_task(&Task::Sql("SELECT pg_sleep(30)"), &ctx).await;
    assert_status(&outcome, Outcome::TimedOut);
    assert_eq!(outcome.error.as_deref(), Some("timed out after 500ms"));
    // Sooner than the server-side statement_timeout (set 2 s past the deadline as a backstop)
    // could have ended it: the cancel request did.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The run waits for the server to end the statement, so at most the backend's own
    // bookkeeping can lag behind; a backend left running would stay for 30 s.
    let client = s.db.connect().await;
    common::eventually(
        "the pg_sleep backend to stop",
        Duration::from_secs(3),
        || {
            let client = &client;
            async move { sleeping_backends(client).await == 0 }
        },
    )
    .await;
}

#[tokio::test]
async fn sql_batch_timeout_applies_to_the_whole_batch() {
    let s = setup().await;
    let client = s.db.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(300)),
        ..context(&s.databases, &params)
    };
    let outcome = run_task(
        &Task::Sql("INSERT INTO t VALUES (1); SELECT pg_sleep(30); INSERT INTO t VALUES (2)"),
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::TimedOut);
    // One implicit transaction: the first insert is rolled back with the rest.
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 0);
    assert_eq!(sleeping_backends(&client).await, 0);
}

#[tokio::test]
async fn sql_cancellation_cancels_the_backend() {
    let s = setup().await;
    let params = empty();
    let ctx = context(&s.databases, &params);
    let cancel = ctx.cancel.clone();
    let client = s.db.connect().await;
    let run = run_task(&Task::Sql("SELECT pg_sleep(30)"), &ctx);
    let canceller = async {
        common::eventually("pg_sleep to start", Duration::from_secs(10), || async {
            sleeping_backends(&client).await == 1
        })
        .await;
        cancel.cancel();
    };
    let (outcome, ()) = tokio::join!(run, canceller);
    assert_status(&outcome, Outcome::Cancelled);
    assert_eq!(outcome.error.as_deref(), Some("cancelled"));
    common::eventually(
        "the pg_sleep backend to stop",
        Duration::from_secs(3),
        || async { sleeping_backends(&client).await == 0 },
    )
    .await;
}

#[tokio::test]
async fn sql_already_cancelled_does_not_run() {
    let s = setup().await;
    let client = s.db.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let params = empty();
    let ctx = context(&s.databases, &params);
    ctx.cancel.cancel();
    let outcome = run_task(&Task::Sql("INSERT INTO t VALUES (1)"), &ctx).await;
    assert_status(&outcome, Outcome::Cancelled);
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 0);
}

#[tokio::test]
async fn sql_leaving_a_transaction_open_fails_and_is_rolled_back() {
    // One connection, so the second task gets the connection the first one left.
    let s = setup_with_pool_size(1).await;
    let client = s.db.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let params = empty();
    let ctx = context(&s.databases, &params);
    let outcome = run_task(&Task::Sql("BEGIN; INSERT INTO t VALUES (1)"), &ctx).await;
    assert_status(&outcome, Outcome::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap()
            .contains("transaction open"),
        "{outcome:?}"
    );
    let outcome = run_task(&Task::Sql("INSERT INTO t VALUES (2)"), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    // Committed on its own, not swallowed by the first task's transaction.
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 1);
    assert_eq!(count(&client, "SELECT max(x)::int8 FROM t").await, 2);

    // A failed statement inside an explicit block leaves the connection usable too.
    let outcome = run_task(&Task::Sql("BEGIN; SELECT 1/0"), &ctx).await;
    assert_status(&outcome, Outcome::Failed);
    assert!(outcome.error.unwrap().contains("division by zero"));
    let outcome = run_task(&Task::Sql("INSERT INTO t VALUES (3)"), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 2);
}

#[tokio::test]
async fn sql_session_settings_do_not_leak_into_the_next_task() {
    let s = setup_with_pool_size(1).await;
    let params = empty();
    let ctx = context(&s.databases, &params);
    let outcome = run_task(&Task::Sql("SET work_mem = '64MB'"), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    let timed = TaskContext {
        timeout: Some(Duration::from_secs(60)),
        ..context(&s.databases, &params)
    };
    assert_status(
        &run_task(&Task::Sql("SELECT 1"), &timed).await,
        Outcome::Succeeded,
    );
    let check = "DO $$ BEGIN \
        IF current_setting('work_mem') <> '4MB' THEN RAISE EXCEPTION 'work_mem leaked: %', current_setting('work_mem'); END IF; \
        IF current_setting('statement_timeout') <> '0' THEN RAISE EXCEPTION 'statement_timeout leaked: %', current_setting('statement_timeout'); END IF; \
        END $$";
    let outcome = run_task(&Task::Sql(check), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
}

#[tokio::test]
async fn run_sql_on_works_inside_the_callers_transaction() {
    let s = setup().await;
    let mut client = s.db.connect().await;
    client
        .batch_execute("CREATE TABLE t (x int)")
        .await
        .unwrap();
    let params = json!({"x": 5});
    let ctx = TaskContext {
        timeout: Some(Duration::from_secs(30)),
        ..context(&s.databases, &params)
    };
    let tls = s.databases.default_tls();
    let tx = client.transaction().await.unwrap();
    let outcome = run_sql_on(&tx, &tls, "INSERT INTO t VALUES (($1->>'x')::int)", &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.rows_affected, Some(1));
    let outcome = run_sql_on(
        &tx,
        &tls,
        "INSERT INTO t VALUES (6); INSERT INTO t VALUES (7)",
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    // The step's statement_timeout does not outlive the step.
    let timeout: String = tx
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeout, "0");
    assert_eq!(count(tx.client(), "SELECT count(*) FROM t").await, 3);
    tx.rollback().await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM t").await, 0);
}

#[tokio::test]
async fn run_sql_on_times_out_and_cancels() {
    let s = setup().await;
    let client = s.db.connect().await;
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(300)),
        ..context(&s.databases, &params)
    };
    let started = Instant::now();
    let outcome = run_sql_on(
        &client,
        &s.databases.default_tls(),
        "SELECT pg_sleep(30)",
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::TimedOut);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let observer = s.db.connect().await;
    common::eventually(
        "the pg_sleep backend to stop",
        Duration::from_secs(3),
        || async { sleeping_backends(&observer).await == 0 },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Named connections

#[tokio::test]
async fn sql_runs_on_a_named_connection() {
    let s = setup().await;
    let other = common::fresh_db().await;
    let other_client = other.connect().await;
    other_client
        .batch_execute("CREATE TABLE only_there (x int)")
        .await
        .unwrap();
    s.databases.set_connections(vec![(
        "reporting".to_string(),
        ConnectionSpec {
            url: url_for(&other.url, None),
            password_from_env: None,
            password_from_file: None,
        },
    )]);
    let params = empty();
    let ctx = TaskContext {
        database: Some("reporting"),
        ..context(&s.databases, &params)
    };
    let outcome = run_task(&Task::Sql("INSERT INTO only_there VALUES (1)"), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(
        count(&other_client, "SELECT count(*) FROM only_there").await,
        1
    );

    // A changed spec replaces the pool: the same name now leads to another database.
    let third = common::fresh_db().await;
    let third_client = third.connect().await;
    third_client
        .batch_execute("CREATE TABLE only_there (x int)")
        .await
        .unwrap();
    s.databases.set_connections(vec![(
        "reporting".to_string(),
        ConnectionSpec {
            url: url_for(&third.url, None),
            password_from_env: None,
            password_from_file: None,
        },
    )]);
    let outcome = run_task(&Task::Sql("INSERT INTO only_there VALUES (2)"), &ctx).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(
        count(&third_client, "SELECT count(*) FROM only_there").await,
        1
    );
    assert_eq!(
        count(&other_client, "SELECT count(*) FROM only_there").await,
        1
    );

    // A removed Connection is unknown.
    s.databases.set_connections(vec![]);
    let outcome = run_task(&Task::Sql("SELECT 1"), &ctx).await;
    assert_status(&outcome, Outcome::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap()
            .contains("no Connection named `reporting`"),
        "{outcome:?}"
    );
}

/// Makes the shared server ask `user` for a password (scram) over its socket, leaving every
/// other user on trust.
async fn require_password(user: &str, password: &str) {
    let admin = common::connect(&common::server().connection_string("postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD '{password}'; GRANT ALL ON DATABASE postgres TO {user}"
        ))
        .await
        .unwrap();
    let hba_file: String = admin.query_one("SHOW hba_file", &[]).await.unwrap().get(0);
    let hba = std::fs::read_to_string(&hba_file).unwrap();
    std::fs::write(&hba_file, format!("local all {user} scram-sha-256\n{hba}")).unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

#[tokio::test]
async fn connection_passwords_come_from_env_or_file_and_never_show_in_errors() {
    const USER: &str = "pgsched_pw_test";
    const PASSWORD: &str = "correct-horse-7q2x";
    const WRONG: &str = "wrong-battery-9k4z";
    require_password(USER, PASSWORD).await;
    let s = setup().await;
    let secrets = tempfile::tempdir().unwrap();
    let good_file = secrets.path().join("good");
    std::fs::write(&good_file, format!("{PASSWORD}\n")).unwrap();
    let wrong_file = secrets.path().join("wrong");
    std::fs::write(&wrong_file, format!("{WRONG}\n")).unwrap();
    // Names no other test uses; this process's environment is shared by its tests.
    std::env::set_var("PGSCHED_TEST_GOOD_PW", PASSWORD);
    std::env::set_var("PGSCHED_TEST_WRONG_PW", WRONG);
    let url = url_for(&common::server().connection_string("postgres"), Some(USER));
    let spec = |env: Option<&str>, file: Option<&Path>| ConnectionSpec {
        url: url.clone(),
        password_from_env: env.map(str::to_string),
        password_from_file: file.map(|p| p.to_string_lossy().into_owned()),
    };
    s.databases.set_connections(vec![
        ("from-env".into(), spec(Some("PGSCHED_TEST_GOOD_PW"), None)),
        ("from-file".into(), spec(None, Some(&good_file))),
        (
            "wrong-env".into(),
            spec(Some("PGSCHED_TEST_WRONG_PW"), None),
        ),
        ("wrong-file".into(), spec(None, Some(&wrong_file))),
        (
            "unset-env".into(),
            spec(Some("PGSCHED_TEST_UNSET_PW"), None),
        ),
        (
            "missing-file".into(),
            spec(None, Some(&secrets.path().join("absent"))),
        ),
        (
            "unreachable".into(),
            ConnectionSpec {
                url: format!("postgres://{USER}@127.0.0.1:1/postgres"),
                password_from_env: Some("PGSCHED_TEST_WRONG_PW".into()),
                password_from_file: None,
            },
        ),
    ]);
    let params = empty();
    let run_on = |database: &'static str| {
        let ctx = TaskContext {
            database: Some(database),
            ..context(&s.databases, &params)
        };
        async move { run_task(&Task::Sql("SELECT current_user"), &ctx).await }
    };

    for good in ["from-env", "from-file"] {
        assert_status(&run_on(good).await, Outcome::Succeeded);
    }
    for (name, expected) in [
        ("wrong-env", "password authentication failed"),
        ("wrong-file", "password authentication failed"),
        ("unset-env", "PGSCHED_TEST_UNSET_PW"),
        ("missing-file", "cannot read passwordFromFile"),
        ("unreachable", "cannot connect to connection `unreachable`"),
    ] {
        let outcome = run_on(name).await;
        assert_status(&outcome, Outcome::Failed);
        let error = outcome.error.unwrap();
        assert!(error.contains(expected), "{name}: {error}");
        for secret in [PASSWORD, WRONG] {
            assert!(
                !error.contains(secret),
                "{name} leaks the password: {error}"
            );
        }
    }
    let debug = format!("{:?}", s.databases);
    assert!(
        !debug.contains(PASSWORD) && !debug.contains(WRONG),
        "{debug}"
    );

    // A rotated secret is read again after the server rejects the old one.
    std::fs::write(&wrong_file, PASSWORD).unwrap();
    assert_status(&run_on("wrong-file").await, Outcome::Succeeded);
}

// ---------------------------------------------------------------------------------------------
// Programs

#[tokio::test]
async fn command_gets_env_params_and_working_dir() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let argv: Vec<String> = [
        "/bin/sh",
        "-c",
        "echo \"$PGSCHED_PARAMS|$PGSCHED_JOB|$PGSCHED_RUN_ID|$PGSCHED_ATTEMPT|$GREETING\"; pwd",
    ]
    .map(String::from)
    .to_vec();
    let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
    let params = json!({"user_id": 42});
    let outcome = run_task(
        &Task::Command {
            argv: &argv,
            env: &env,
            working_dir: Some(dir.path().to_str().unwrap()),
        },
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    let canonical = dir.path().canonicalize().unwrap();
    assert_eq!(
        outcome.output,
        format!(
            "{{\"user_id\":42}}|nightly-test|4711|2|hello\n{}\n",
            canonical.display()
        )
    );
}

#[tokio::test]
async fn command_runs_without_a_shell() {
    let s = setup().await;
    let argv: Vec<String> = ["echo", "$HOME", "a;b", "*"].map(String::from).to_vec();
    let params = empty();
    let outcome = run_task(
        &Task::Command {
            argv: &argv,
            env: NO_ENV,
            working_dir: None,
        },
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "$HOME a;b *\n");
}

#[tokio::test]
async fn command_not_found_or_bad_working_dir_fails_clearly() {
    let s = setup().await;
    let params = empty();
    let ctx = context(&s.databases, &params);
    let argv = vec!["pgsched-no-such-program".to_string()];
    let outcome = run_task(
        &Task::Command {
            argv: &argv,
            env: NO_ENV,
            working_dir: None,
        },
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("program `pgsched-no-such-program` not found in PATH")
    );

    let argv = vec!["true".to_string()];
    let outcome = run_task(
        &Task::Command {
            argv: &argv,
            env: NO_ENV,
            working_dir: Some("/nonexistent/pgsched"),
        },
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap()
            .contains("/nonexistent/pgsched"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn shell_exit_status_decides_and_quotes_the_last_stderr_line() {
    let s = setup().await;
    let params = empty();
    let outcome = run_task(
        &Task::Shell {
            script: "echo to-stdout; echo first >&2; echo 'disk full' >&2; exit 3",
            env: NO_ENV,
            working_dir: None,
        },
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("exited with status 3: disk full")
    );
    for line in ["to-stdout", "first", "disk full"] {
        assert!(outcome.output.contains(line), "{:?}", outcome.output);
    }
}

#[tokio::test]
async fn shell_output_keeps_only_the_last_64_kib() {
    let s = setup().await;
    let params = empty();
    let outcome = run_task(
        &Task::Shell {
            script: "yes | head -c 10000000; echo; echo the-end",
            env: NO_ENV,
            working_dir: None,
        },
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    let (marker, tail) = outcome.output.split_once('\n').unwrap();
    assert!(marker.contains("earlier bytes not kept"), "{marker}");
    assert_eq!(tail.len(), OUTPUT_LIMIT);
    assert!(tail.ends_with("y\ny\n\nthe-end\n"));
}

#[tokio::test]
async fn shell_timeout_sends_sigterm_to_the_group() {
    let s = setup().await;
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(300)),
        ..context(&s.databases, &params)
    };
    let started = Instant::now();
    let outcome = run_task(
        &Task::Shell {
            script: "trap 'echo got-term; exit 0' TERM; echo started; sleep 30 & wait",
            env: NO_ENV,
            working_dir: None,
        },
        &ctx,
    )
    .await;
    assert_status(&outcome, Outcome::TimedOut);
    assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
    assert_eq!(outcome.output, "started\ngot-term\n");
    assert!(started.elapsed() < KILL_GRACE);
}

/// Whether `pid` still runs (a zombie does not count).
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit(") ").next().unwrap_or("").chars().next();
            state != Some('Z')
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn shell_ignoring_sigterm_is_killed_after_the_grace() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(200)),
        ..context(&s.databases, &params)
    };
    // An ignored signal stays ignored in children, so the background sleep ignores it too.
    let script = format!(
        "trap '' TERM; sleep 60 & echo $! > '{}'; wait",
        pid_file.display()
    );
    let started = Instant::now();
    let outcome = run_task(
        &Task::Shell {
            script: &script,
            env: NO_ENV,
            working_dir: None,
        },
        &ctx,
    )
    .await;
    let elapsed = started.elapsed();
    assert_status(&outcome, Outcome::TimedOut);
    assert!(elapsed >= KILL_GRACE, "killed after only {elapsed:?}");
    assert!(
        elapsed < KILL_GRACE + Duration::from_secs(10),
        "{elapsed:?}"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::eventually(
        "the background child to be killed",
        Duration::from_secs(5),
        || async { !process_alive(pid) },
    )
    .await;
}

#[tokio::test]
async fn children_outliving_an_interrupted_program_are_killed_after_the_grace() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let params = empty();
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(200)),
        ..context(&s.databases, &params)
    };
    // The main process ends on SIGTERM; its child ignores it.
    let script = format!(
        "trap 'exit 0' TERM; (trap '' TERM; exec sleep 60) & echo $! > '{}'; wait",
        pid_file.display()
    );
    let started = Instant::now();
    let outcome = run_task(
        &Task::Shell {
            script: &script,
            env: NO_ENV,
            working_dir: None,
        },
        &ctx,
    )
    .await;
    let elapsed = started.elapsed();
    assert_status(&outcome, Outcome::TimedOut);
    assert!(elapsed >= KILL_GRACE, "killed after only {elapsed:?}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    common::eventually("the child to be killed", Duration::from_secs(5), || async {
        !process_alive(pid)
    })
    .await;
}

#[tokio::test]
async fn shell_background_children_do_not_hold_the_run() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let params = empty();
    // The background sleep keeps stdout and stderr open after the script ends.
    let script = format!("sleep 60 & echo $! > '{}'; echo done", pid_file.display());
    let started = Instant::now();
    let outcome = run_task(
        &Task::Shell {
            script: &script,
            env: NO_ENV,
            working_dir: None,
        },
        &context(&s.databases, &params),
    )
    .await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "done\n");
    assert!(started.elapsed() < Duration::from_secs(5));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Not the run's business any more; the test cleans up after itself.
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

#[tokio::test]
async fn shell_cancellation_stops_it() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let params = empty();
    let ctx = context(&s.databases, &params);
    let cancel = ctx.cancel.clone();
    let script = format!("touch '{}'; sleep 30", ready.display());
    let task = Task::Shell {
        script: &script,
        env: NO_ENV,
        working_dir: None,
    };
    let canceller = async {
        common::eventually("the script to start", Duration::from_secs(10), || async {
            ready.exists()
        })
        .await;
        cancel.cancel();
    };
    let started = Instant::now();
    let (outcome, ()) = tokio::join!(run_task(&task, &ctx), canceller);
    assert_status(&outcome, Outcome::Cancelled);
    assert!(started.elapsed() < KILL_GRACE);
}

// ---------------------------------------------------------------------------------------------
// Builtins

#[tokio::test]
async fn builtin_sleep_ends_times_out_or_is_cancelled() {
    let s = setup().await;
    let params = empty();
    let short = Builtin::Sleep {
        duration: SpecDuration(Duration::from_millis(50)),
    };
    let outcome = run_task(&Task::Builtin(&short), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "slept 50ms");

    let long = Builtin::Sleep {
        duration: SpecDuration(Duration::from_secs(60)),
    };
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(100)),
        ..context(&s.databases, &params)
    };
    let outcome = run_task(&Task::Builtin(&long), &ctx).await;
    assert_status(&outcome, Outcome::TimedOut);
    assert_eq!(outcome.error.as_deref(), Some("timed out after 100ms"));

    let ctx = context(&s.databases, &params);
    let cancel = ctx.cancel.clone();
    let task = Task::Builtin(&long);
    let (outcome, ()) = tokio::join!(run_task(&task, &ctx), async { cancel.cancel() });
    assert_status(&outcome, Outcome::Cancelled);
}

#[tokio::test]
async fn builtin_log_outputs_its_message() {
    let s = setup().await;
    let params = empty();
    let log = Builtin::Log {
        message: "nightly run done".to_string(),
        level: Some(LogLevel::Warn),
    };
    let outcome = run_task(&Task::Builtin(&log), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "nightly run done");
}

#[tokio::test]
async fn builtin_notify_sends_pg_notify_on_the_tasks_database() {
    use futures_util::future::poll_fn;
    use tokio_postgres::AsyncMessage;

    let s = setup().await;
    let (listener, mut connection) = tokio_postgres::connect(&s.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(AsyncMessage::Notification(n)) = message {
                let _ = tx.send((n.channel().to_string(), n.payload().to_string()));
            }
        }
    });
    listener.batch_execute("LISTEN orders").await.unwrap();
    let params = empty();
    let notify = Builtin::Notify {
        channel: "orders".to_string(),
        payload: Some("{\"id\": 7}".to_string()),
    };
    let outcome = run_task(&Task::Builtin(&notify), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    let received = tokio::time::timeout(Duration::from_secs(10), notifications.recv())
        .await
        .expect("no notification arrived")
        .unwrap();
    assert_eq!(received, ("orders".to_string(), "{\"id\": 7}".to_string()));
}

/// A one-response-per-connection HTTP server on 127.0.0.1. Each request (head and body) is
/// sent on the returned channel; `response` is written back, or nothing at all when `None`.
async fn http_server(
    response: Option<Vec<u8>>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            let response = response.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while request.len() < head_end + length {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
                match response {
                    Some(response) => {
                        let _ = socket.write_all(&response).await;
                        let _ = socket.shutdown().await;
                    }
                    // Hold the connection open, never answering, until the test ends.
                    None => std::future::pending::<()>().await,
                }
            });
        }
    });
    (url, rx)
}

fn http_response(status: &str, body: &[u8]) -> Vec<u8> {
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(body);
    response
}

fn http_builtin(
    url: &str,
    method: Option<HttpMethod>,
    body: Option<&str>,
    expect: Option<Vec<u16>>,
) -> Builtin {
    Builtin::Http {
        url: url.to_string(),
        method,
        headers: BTreeMap::from([("X-Token".to_string(), "abc123".to_string())]),
        body: body.map(str::to_string),
        expect_status: expect,
    }
}

#[tokio::test]
async fn builtin_http_get_succeeds_on_2xx() {
    let s = setup().await;
    let (url, mut requests) = http_server(Some(http_response("200 OK", b"all good"))).await;
    let params = empty();
    let http = http_builtin(&url, None, None, None);
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "HTTP/1.1 200 OK\nall good");
    let request = requests.recv().await.unwrap();
    assert!(request.starts_with("GET /hook HTTP/1.1\r\n"), "{request}");
    assert!(
        request.to_lowercase().contains("x-token: abc123"),
        "{request}"
    );
}

#[tokio::test]
async fn builtin_http_post_sends_the_body() {
    let s = setup().await;
    let (url, mut requests) = http_server(Some(http_response("201 Created", b""))).await;
    let params = empty();
    let http = http_builtin(&url, Some(HttpMethod::Post), Some("{\"ping\":1}"), None);
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    assert_eq!(outcome.output, "HTTP/1.1 201 Created");
    let request = requests.recv().await.unwrap();
    assert!(request.starts_with("POST /hook HTTP/1.1\r\n"), "{request}");
    assert!(request.ends_with("\r\n\r\n{\"ping\":1}"), "{request}");
}

#[tokio::test]
async fn builtin_http_status_outside_expect_status_fails() {
    let s = setup().await;
    let params = empty();
    let (url, _requests) =
        http_server(Some(http_response("500 Internal Server Error", b"oops"))).await;
    let http = http_builtin(&url, None, None, None);
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("HTTP/1.1 500 Internal Server Error (expected 2xx)")
    );
    assert!(outcome.output.ends_with("\noops"));

    // With expectStatus, only the listed codes succeed, redirects included (not followed).
    let (url, _requests) = http_server(Some(http_response("302 Found", b""))).await;
    let http = http_builtin(&url, None, None, Some(vec![302]));
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    let (url, _requests) = http_server(Some(http_response("200 OK", b""))).await;
    let http = http_builtin(&url, None, None, Some(vec![204]));
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Failed);
    assert_eq!(
        outcome.error.as_deref(),
        Some("HTTP/1.1 200 OK (expected 204)")
    );
}

#[tokio::test]
async fn builtin_http_keeps_the_first_64_kib_of_the_body() {
    let s = setup().await;
    let body: Vec<u8> = (0..200 * 1024).map(|i| b'a' + (i % 26) as u8).collect();
    let (url, _requests) = http_server(Some(http_response("200 OK", &body))).await;
    let params = empty();
    let http = http_builtin(&url, None, None, None);
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Succeeded);
    let kept = outcome
        .output
        .strip_prefix("HTTP/1.1 200 OK\n")
        .unwrap()
        .strip_suffix(&format!("\n[body cut at {OUTPUT_LIMIT} bytes]"))
        .unwrap();
    assert_eq!(kept.as_bytes(), &body[..OUTPUT_LIMIT]);
}

#[tokio::test]
async fn builtin_http_times_out_and_fails_on_refused_connections() {
    let s = setup().await;
    let params = empty();
    let (url, _requests) = http_server(None).await;
    let http = http_builtin(&url, None, None, None);
    let ctx = TaskContext {
        timeout: Some(Duration::from_millis(300)),
        ..context(&s.databases, &params)
    };
    let started = Instant::now();
    let outcome = run_task(&Task::Builtin(&http), &ctx).await;
    assert_status(&outcome, Outcome::TimedOut);
    assert_eq!(outcome.error.as_deref(), Some("timed out after 300ms"));
    assert!(started.elapsed() < Duration::from_secs(5));

    // A port nobody listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http = http_builtin(&format!("http://127.0.0.1:{port}/"), None, None, None);
    let outcome = run_task(&Task::Builtin(&http), &context(&s.databases, &params)).await;
    assert_status(&outcome, Outcome::Failed);
    assert!(
        outcome
            .error
            .as_deref()
            .unwrap()
            .starts_with("HTTP request failed"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn run_task_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let s = setup().await;
    let params = empty();
    let ctx = context(&s.databases, &params);
    let task = Task::Sql("SELECT 1");
    let future = run_task(&task, &ctx);
    assert_send(&future);
    assert_status(&future.await, Outcome::Succeeded);
}
