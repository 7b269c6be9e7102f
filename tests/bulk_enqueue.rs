//! Enqueueing many runs at once on a real PostgreSQL: `pgsched.trigger_many` in both its forms
//! (one INSERT, one NOTIFY, ids in the order given, the caller's transaction, the errors of
//! `pgsched.trigger`), its runs executed, and `pgsched trigger --params-file` (batches in one
//! transaction, a bad line enqueues nothing, `-` for standard input, flags that conflict).

mod common;

use common::{apply_specs, job, wait_for, Executor, Specs};

use futures_util::future::poll_fn;
use pgsched::store::report::trigger_many;
use serde_json::json;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{AsyncMessage, Client};

/// A fresh database with the on-demand job `send` applied.
async fn with_send_job() -> (common::TestDb, Client) {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    apply_specs(
        &mut client,
        &Specs::with(&[("send.yaml", &job("send", "  sql: SELECT $1\n"))]),
    )
    .await;
    (db, client)
}

/// A connection LISTENing on `pgsched_runs`, as an executor's would.
struct RunsListener {
    heard: tokio::sync::mpsc::UnboundedReceiver<String>,
    _client: Client,
}

impl RunsListener {
    async fn start(url: &str) -> RunsListener {
        let (client, mut connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let (tx, heard) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(message) = poll_fn(|cx| connection.poll_message(cx)).await {
                if let Ok(AsyncMessage::Notification(n)) = message {
                    if n.channel() == "pgsched_runs" {
                        let _ = tx.send(n.payload().to_string());
                    }
                }
            }
        });
        client.batch_execute("LISTEN pgsched_runs").await.unwrap();
        RunsListener {
            heard,
            _client: client,
        }
    }

    /// The payloads heard on `pgsched_runs` from transactions committed before now: a sentinel
    /// is sent from `client` in a transaction of its own, and notifications arrive in the order
    /// their transactions committed, so all that came before it is here once it is.
    async fn heard_until_now(&mut self, client: &Client) -> Vec<String> {
        client
            .execute("SELECT pg_notify('pgsched_runs', 'sentinel')", &[])
            .await
            .unwrap();
        let mut heard = Vec::new();
        loop {
            let payload = tokio::time::timeout(Duration::from_secs(10), self.heard.recv())
                .await
                .expect("the sentinel notification arrives")
                .expect("the listening connection is open");
            if payload == "sentinel" {
                return heard;
            }
            heard.push(payload);
        }
    }
}

/// Counts the INSERT statements on `pgsched.runs` (a statement-level trigger), to prove a batch
/// is one statement and not one per run.
async fn count_insert_statements(client: &Client) {
    client
        .batch_execute(
            "CREATE TABLE insert_statements (at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION count_insert_statement() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN INSERT INTO insert_statements DEFAULT VALUES; RETURN NULL; END $$;
             CREATE TRIGGER count_insert_statements AFTER INSERT ON pgsched.runs
                 FOR EACH STATEMENT EXECUTE FUNCTION count_insert_statement();",
        )
        .await
        .unwrap();
}

async fn count(client: &Client, query: &str) -> i64 {
    client.query_one(query, &[]).await.unwrap().get(0)
}

/// The runs of `send` as (id, trigger, status, params), by id.
async fn send_runs(client: &Client) -> Vec<(i64, String, String, serde_json::Value)> {
    client
        .query(
            "SELECT id, trigger, status, params FROM pgsched.runs WHERE job = 'send' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

#[tokio::test]
async fn trigger_many_enqueues_every_run_in_order_with_one_insert_and_one_notification() {
    let (db, mut client) = with_send_job().await;
    count_insert_statements(&client).await;
    let mut listener = RunsListener::start(&db.url).await;
    let params: Vec<serde_json::Value> = (1..=250).map(|n| json!({"n": n, "to": "x"})).collect();

    let tx = client.transaction().await.unwrap();
    let ids = trigger_many(&tx, "send", &params, None).await.unwrap();
    tx.commit().await.unwrap();

    assert_eq!(ids.len(), 250);
    let runs = send_runs(&client).await;
    assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), ids);
    for ((_, trigger, status, got), given) in runs.iter().zip(&params) {
        assert_eq!((trigger.as_str(), status.as_str()), ("manual", "pending"));
        assert_eq!(got, given);
    }
    assert_eq!(
        count(&client, "SELECT count(*) FROM insert_statements").await,
        1
    );
    assert_eq!(
        listener.heard_until_now(&client).await,
        vec![ids[0].to_string()],
        "one notification, its payload the first run's id"
    );
}

#[tokio::test]
async fn the_json_array_form_gives_ids_in_the_order_given_and_takes_at() {
    let (_db, client) = with_send_job().await;
    let ids: Vec<i64> = client
        .query_one(
            "SELECT pgsched.trigger_many('send', '[{\"n\": 3}, {\"n\": 1}, {\"n\": 2}]'::jsonb,
                                         now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let rows = client
        .query(
            "SELECT r.params->>'n', r.due_at > now() + interval '59 minutes', r.kind
               FROM unnest($1::bigint[]) WITH ORDINALITY AS given(id, ord)
               JOIN pgsched.runs r USING (id) ORDER BY given.ord",
            &[&ids],
        )
        .await
        .unwrap();
    let got: Vec<(String, bool, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let want = |n: &str| (n.to_string(), true, "Job".to_string());
    assert_eq!(got, vec![want("3"), want("1"), want("2")]);
    // The ids grow in the order given too: they are taken from the sequence in that order.
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn a_rolled_back_trigger_many_enqueues_nothing_and_wakes_no_one() {
    let (db, mut client) = with_send_job().await;
    let mut listener = RunsListener::start(&db.url).await;
    let tx = client.transaction().await.unwrap();
    let params = vec![json!({}); 100];
    let ids = trigger_many(&tx, "send", &params, None).await.unwrap();
    assert_eq!(ids.len(), 100);
    tx.rollback().await.unwrap();
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
    assert_eq!(
        listener.heard_until_now(&client).await,
        Vec::<String>::new()
    );
}

/// The SQLSTATE, message and hint of `query`'s error.
async fn error_of(client: &Client, query: &str) -> (SqlState, String, Option<String>) {
    let err = client.query_one(query, &[]).await.unwrap_err();
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{query}: {err}"));
    (
        db.code().clone(),
        db.message().to_string(),
        db.hint().map(str::to_string),
    )
}

#[tokio::test]
async fn errors_are_those_of_pgsched_trigger_and_name_the_bad_element() {
    let (_db, client) = with_send_job().await;
    let (code, message, hint) = error_of(&client, "SELECT pgsched.trigger('nope')").await;
    assert_eq!(code, SqlState::NO_DATA_FOUND);
    for form in ["'[{}]'::jsonb", "ARRAY['{}']::jsonb[]", "'[]'::jsonb"] {
        let query = format!("SELECT pgsched.trigger_many('nope', {form})");
        let (many_code, many_message, many_hint) = error_of(&client, &query).await;
        assert_eq!(
            (&many_code, &many_message, &many_hint),
            (&code, &message, &hint),
            "{query}"
        );
    }
    let cases = [
        (
            "ARRAY['{}', '\"x\"', '{}']::jsonb[]",
            "element 2 (counted from 1) must be a JSON object, got string",
        ),
        (
            "'[{}, {}, 3]'::jsonb",
            "element 3 (counted from 1) must be a JSON object, got number",
        ),
        (
            "ARRAY[NULL]::jsonb[]",
            "element 1 (counted from 1) must be a JSON object, got null",
        ),
        (
            "ARRAY[ARRAY['{}'::jsonb]]",
            "element 1 (counted from 1) must be a JSON object, got array",
        ),
        (
            "'{\"n\": 1}'::jsonb",
            "params must be a JSON array of objects, got object",
        ),
        (
            "NULL::jsonb",
            "params must be a JSON array of objects, got NULL",
        ),
        (
            "NULL::jsonb[]",
            "params must be a JSON array of objects, got NULL",
        ),
    ];
    for (form, want) in cases {
        let query = format!("SELECT pgsched.trigger_many('send', {form})");
        let (code, message, _) = error_of(&client, &query).await;
        assert_eq!(
            code,
            SqlState::INVALID_PARAMETER_VALUE,
            "{query}: {message}"
        );
        assert!(message.contains(want), "{query}: {message}");
    }
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
    // From Rust, the same SQLSTATE through StoreError::code.
    let err = trigger_many(&client, "nope", &[json!({})], None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::NO_DATA_FOUND));
}

#[tokio::test]
async fn an_empty_array_enqueues_nothing_and_sends_no_notification() {
    let (db, client) = with_send_job().await;
    let mut listener = RunsListener::start(&db.url).await;
    for form in ["'[]'::jsonb", "'{}'::jsonb[]"] {
        let ids: Vec<i64> = client
            .query_one(&format!("SELECT pgsched.trigger_many('send', {form})"), &[])
            .await
            .unwrap()
            .get(0);
        assert!(ids.is_empty(), "{form}: {ids:?}");
    }
    // What the README suggests for a query that may find no rows.
    let ids: Vec<i64> = client
        .query_one(
            "SELECT pgsched.trigger_many('send', coalesce(array_agg(jsonb_build_object('n', n)), '{}'))
               FROM generate_series(1, 0) AS n",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(ids.is_empty(), "{ids:?}");
    assert!(trigger_many(&client, "send", &[], None)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
    assert_eq!(
        listener.heard_until_now(&client).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn runs_enqueued_by_trigger_many_are_executed_with_their_params() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE seen (n int NOT NULL)")
        .await
        .unwrap();
    let spec = job(
        "record",
        "  concurrencyPolicy: Allow\n  sql: INSERT INTO seen (n) SELECT ($1->>'n')::int\n",
    );
    apply_specs(&mut client, &Specs::with(&[("record.yaml", &spec)])).await;
    let exec = Executor::start(&db.url, "w/1", |_| {});
    let params: Vec<serde_json::Value> = (1..=20).map(|n| json!({"n": n})).collect();
    let ids = trigger_many(&client, "record", &params, None)
        .await
        .unwrap();
    wait_for(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE job = 'record' AND status = 'succeeded'",
        |n| n == 20,
        Duration::from_secs(30),
    )
    .await;
    exec.stop().await;
    let seen: Vec<i32> = client
        .query("SELECT n FROM seen ORDER BY n", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(seen, (1..=20).collect::<Vec<_>>());
    assert_eq!(ids.len(), 20);
}

// ---- `pgsched trigger --params-file` ----

/// `pgsched ARGS` on `url` with `stdin` piped in: (exit code, stdout, stderr).
fn pgsched(args: &[&str], url: &str, stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(args)
        .env("DATABASE_URL", url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    // Written from a thread: a large input must not fill the pipe while we wait on stdout.
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    // pgsched may exit before it reads stdin (a usage error): a broken pipe is fine then.
    let _ = writer.join().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The first and last id of `pgsched trigger --params-file`'s line.
fn first_and_last(stdout: &str) -> (i64, i64) {
    let number_after = |label: &str| -> i64 {
        let rest =
            &stdout[stdout.find(label).unwrap_or_else(|| panic!("{stdout}")) + label.len()..];
        rest.split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    (number_after("first id "), number_after("last id "))
}

/// `n` parameter sets `{"n": 1}`…, one per line, with blank lines among them.
fn jsonl(n: usize) -> String {
    (1..=n)
        .map(|i| format!("{{\"n\": {i}}}\n{}", if i % 7 == 0 { "\n  \n" } else { "" }))
        .collect()
}

#[tokio::test]
async fn a_params_file_enqueues_one_run_per_line_in_batches_at_the_time_given() {
    let (db, client) = with_send_job().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("runs.jsonl");
    std::fs::write(&file, jsonl(25)).unwrap();
    let file = file.to_str().unwrap();
    let at = "2031-01-02T03:04:05Z";
    let args = [
        "trigger",
        "send",
        "--params-file",
        file,
        "--batch-size",
        "10",
        "--at",
        at,
    ];
    let (code, stdout, stderr) = pgsched(&args, &db.url, "");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("25 runs of send enqueued for 2031-01-02T03:04:05+00:00: first id "),
        "{stdout}"
    );
    assert!(stdout.contains(" runs/s)"), "{stdout}");
    let runs = send_runs(&client).await;
    let ns: Vec<i64> = runs.iter().map(|r| r.3["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, (1..=25).collect::<Vec<_>>());
    assert_eq!(first_and_last(&stdout), (runs[0].0, runs[24].0));
    let due = count(
        &client,
        "SELECT count(*) FROM pgsched.runs WHERE due_at = '2031-01-02T03:04:05Z' AND trigger = 'manual'",
    )
    .await;
    assert_eq!(due, 25);
}

#[tokio::test]
async fn a_bad_line_in_the_params_file_is_named_and_enqueues_nothing() {
    let (db, client) = with_send_job().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.jsonl");
    std::fs::write(
        &path,
        "{\"n\": 1}\n{\"n\": 2}\n\n{\"n\": 3,,}\n[4]\n{\"n\": 5}\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let (code, stdout, stderr) = pgsched(&["trigger", "send", "--params-file", file], &db.url, "");
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains(&format!("{file}:4:")), "{stderr}");
    assert!(stderr.contains("not JSON"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:5: a parameter set must be a JSON object, got an array"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("2 bad lines in {file}: nothing was enqueued")),
        "{stderr}"
    );
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
    // A good file for a job that does not exist: the database's error, nothing enqueued.
    std::fs::write(&path, jsonl(3)).unwrap();
    let (code, _, stderr) = pgsched(&["trigger", "nope", "--params-file", file], &db.url, "");
    assert_eq!(code, 1);
    assert!(stderr.contains("no job or chain named nope"), "{stderr}");
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
}

#[tokio::test]
async fn a_batch_that_fails_rolls_back_the_batches_before_it() {
    let (db, client) = with_send_job().await;
    // The server refuses the 15th run: the second batch of ten fails after the first went in.
    client
        .batch_execute(
            "CREATE FUNCTION refuse_15() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.params->>'n' = '15' THEN RAISE EXCEPTION 'run 15 refused'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_15 BEFORE INSERT ON pgsched.runs
                 FOR EACH ROW EXECUTE FUNCTION refuse_15();",
        )
        .await
        .unwrap();
    let args = [
        "trigger",
        "send",
        "--params-file",
        "-",
        "--batch-size",
        "10",
    ];
    let (code, _, stderr) = pgsched(&args, &db.url, &jsonl(25));
    assert_eq!(code, 1);
    assert!(stderr.contains("run 15 refused"), "{stderr}");
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
}

#[tokio::test]
async fn a_dash_reads_the_params_from_standard_input() {
    let (db, client) = with_send_job().await;
    let args = ["trigger", "send", "--params-file", "-"];
    let (code, stdout, stderr) = pgsched(&args, &db.url, &jsonl(12));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("12 runs of send enqueued: first id "),
        "{stdout}"
    );
    assert_eq!(send_runs(&client).await.len(), 12);

    let (code, _, stderr) = pgsched(&args, &db.url, "{}\nnot json\n");
    assert_eq!(code, 1);
    assert!(
        stderr.contains("<stdin>:2:2: not JSON: expected ident"),
        "{stderr}"
    );
    assert_eq!(send_runs(&client).await.len(), 12);

    let (code, stdout, stderr) = pgsched(&args, &db.url, "\n\n");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("0 runs of send enqueued: <stdin> holds no parameter sets"),
        "{stdout}"
    );
}

#[tokio::test]
async fn params_and_params_file_conflict() {
    let (db, client) = with_send_job().await;
    let conflicting = ["trigger", "send", "--params", "{}", "--params-file", "-"];
    let (code, _, stderr) = pgsched(&conflicting, &db.url, "{}\n");
    assert_eq!(code, 2, "a usage error: {stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let without_file = ["trigger", "send", "--batch-size", "10"];
    let (code, _, stderr) = pgsched(&without_file, &db.url, "");
    assert_eq!(code, 2, "--batch-size needs --params-file: {stderr}");
    let zero = ["trigger", "send", "--params-file", "-", "--batch-size", "0"];
    let (code, _, stderr) = pgsched(&zero, &db.url, "{}\n");
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(count(&client, "SELECT count(*) FROM pgsched.runs").await, 0);
}
