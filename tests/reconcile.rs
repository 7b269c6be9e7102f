//! Reconciling files to tables on a real PostgreSQL: first apply, no-op plans, changes,
//! prune, bad input, the wipe-out guard, drift, ownership, concurrency and plan-time checks.

mod common;

use common::{job, Specs};

use pgsched::plan::Action;
use pgsched::reconcile::{apply, plan, Outcome, PlanReport};
use std::path::{Path, PathBuf};
use std::process::Command;
use tokio_postgres::Client;

const DEMO_SCHEMA: &str = include_str!("../examples/demo-schema.sql");

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/specs")
}

fn planned(outcome: Outcome) -> PlanReport {
    match outcome {
        Outcome::Planned(r) => r,
        other => panic!("expected a plan, got {other:?}"),
    }
}

fn applied(outcome: Outcome) -> PlanReport {
    match outcome {
        Outcome::Applied(r) => r,
        other => panic!("expected an apply, got {other:?}"),
    }
}

async fn job_names(client: &Client) -> Vec<String> {
    client
        .query("SELECT name FROM pgsched.jobs ORDER BY name", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn first_apply_of_the_examples_then_a_no_op_plan() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client.batch_execute(DEMO_SCHEMA).await.unwrap();

    let first = planned(plan(&mut client, &examples_dir()).await.unwrap());
    assert!(first.checks.errors.is_empty(), "{:?}", first.checks.errors);
    assert_eq!(first.plan.summary().add, 5);
    // A plan changes nothing.
    assert!(job_names(&client).await.is_empty());

    let report = applied(apply(&mut client, &examples_dir(), false).await.unwrap());
    assert_eq!(report.plan.summary().add, 5);
    assert_eq!(
        job_names(&client).await,
        vec![
            "nightly-rates",
            "nightly-vacuum",
            "send-welcome-email",
            "zurich-morning-report"
        ]
    );
    let row = client
        .query_one(
            "SELECT schedule, time_zone, suspended, task, generation, managed, source_file
               FROM pgsched.jobs WHERE name = 'zurich-morning-report'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some("30 7 * * 1-5")
    );
    assert_eq!(row.get::<_, String>(1), "Europe/Zurich");
    assert!(!row.get::<_, bool>(2));
    assert_eq!(row.get::<_, String>(3), "builtin:log");
    assert_eq!(row.get::<_, i64>(4), 1);
    assert!(row.get::<_, bool>(5));
    assert_eq!(row.get::<_, String>(6), "zurich-report.yaml");
    let steps: Vec<(String, String, bool)> = client
        .query(
            "SELECT name, task, ignore_error FROM pgsched.chain_steps WHERE chain = 'nightly-rates' ORDER BY position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        steps,
        vec![
            ("fetch".into(), "shell".into(), false),
            ("load".into(), "sql".into(), false),
            ("refresh".into(), "sql".into(), true)
        ]
    );
    let timeout = client
        .query_one(
            "SELECT target_table, target_column, after = interval '15 minutes', action, batch_size
               FROM pgsched.timeouts WHERE name = 'booking-payment-hold'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(timeout.get::<_, String>(0), "public.booking");
    assert_eq!(timeout.get::<_, String>(1), "created_at");
    assert!(timeout.get::<_, bool>(2));
    assert_eq!(timeout.get::<_, String>(3), "update");
    assert_eq!(timeout.get::<_, i32>(4), 1000);

    let again = planned(plan(&mut client, &examples_dir()).await.unwrap());
    assert!(again.plan.is_empty(), "{:?}", again.plan.changes);
}

#[tokio::test]
async fn a_changed_field_shows_in_the_diff_and_is_applied() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write(
        "a.yaml",
        &job("report", "  schedule: \"0 2 * * *\"\n  sql: SELECT 1\n"),
    );
    applied(apply(&mut client, specs.path(), false).await.unwrap());

    specs.write(
        "a.yaml",
        &job("report", "  schedule: \"0 3 * * *\"\n  sql: SELECT 1\n"),
    );
    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    assert_eq!(report.plan.changes.len(), 1);
    let change = &report.plan.changes[0];
    assert_eq!(change.action, Action::Update);
    assert!(!change.drift);
    let text = pgsched::plan::render_text(&report.plan, pgsched::plan::Style::PLAIN);
    assert!(text.contains("~ job/report"), "{text}");
    assert!(text.contains("-   schedule: 0 2 * * *"), "{text}");
    assert!(text.contains("+   schedule: 0 3 * * *"), "{text}");
    assert!(
        text.contains("Plan: 0 to add, 1 to change, 0 to delete."),
        "{text}"
    );

    applied(apply(&mut client, specs.path(), false).await.unwrap());
    let row = client
        .query_one(
            "SELECT schedule, generation FROM pgsched.jobs WHERE name = 'report'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0 3 * * *");
    assert_eq!(row.get::<_, i64>(1), 2);
    assert!(planned(plan(&mut client, specs.path()).await.unwrap())
        .plan
        .is_empty());
}

#[tokio::test]
async fn a_removed_file_is_pruned_and_its_history_kept() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("keep.yaml", &job("keep", "  sql: SELECT 1\n"));
    specs.write("gone.yaml", &job("gone", "  sql: SELECT 1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    let done: i64 = client
        .query_one(
            "INSERT INTO pgsched.runs (job, status, started_at, finished_at) VALUES ('gone', 'succeeded', now(), now()) RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let pending: i64 = client
        .query_one(
            "SELECT pgsched.trigger('gone', '{}'::jsonb, now() + interval '1 hour')",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    specs.remove("gone.yaml");
    let report = applied(apply(&mut client, specs.path(), false).await.unwrap());
    assert_eq!(report.plan.summary().delete, 1);
    assert_eq!(job_names(&client).await, vec!["keep"]);
    let status = |id: i64| {
        let client = &client;
        async move {
            client
                .query_one("SELECT status FROM pgsched.runs WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, String>(0)
        }
    };
    assert_eq!(status(done).await, "succeeded", "history is kept");
    assert_eq!(
        status(pending).await,
        "cancelled",
        "a pending run of a pruned job never starts"
    );
}

#[tokio::test]
async fn a_bad_file_holds_everything() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("a", "  sql: SELECT 1\n"));
    specs.write("b.yaml", &job("b", "  sql: SELECT 1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());

    // b.yaml becomes unreadable YAML, and a.yaml changes: neither is applied, b is not pruned.
    specs.write(
        "b.yaml",
        "apiVersion: pgsched/v1\nkind: Job\nmetadata: {name: b\n",
    );
    specs.write("a.yaml", &job("a", "  sql: SELECT 2\n"));
    specs.write(
        "c.yaml",
        &job("c", "  sql: SELECT 3\n  retries: {limit: -1}\n"),
    );
    match apply(&mut client, specs.path(), false).await.unwrap() {
        Outcome::Invalid(errors) => {
            assert!(
                errors.iter().any(|e| e.file.ends_with("b.yaml")),
                "{errors:?}"
            );
            let c = errors
                .iter()
                .find(|e| e.file.ends_with("c.yaml"))
                .expect("c.yaml error");
            assert_eq!(c.line(), Some(7));
            assert_eq!(c.path.as_ref().unwrap().to_string(), "spec.retries.limit");
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    assert_eq!(job_names(&client).await, vec!["a", "b"]);
    let sql: serde_json::Value = client
        .query_one("SELECT spec FROM pgsched.jobs WHERE name = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sql["sql"], "SELECT 1");
}

#[tokio::test]
async fn an_empty_directory_is_refused_unless_allowed() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("a", "  sql: SELECT 1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    specs.remove("a.yaml");
    match apply(&mut client, specs.path(), false).await.unwrap() {
        Outcome::RefusedWipeOut(report) => assert_eq!(report.plan.summary().delete, 1),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(job_names(&client).await, vec!["a"]);
    applied(apply(&mut client, specs.path(), true).await.unwrap());
    assert!(job_names(&client).await.is_empty());
}

#[tokio::test]
async fn a_missing_directory_is_an_error_not_an_empty_set() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("a", "  sql: SELECT 1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    let missing = specs.path().join("not-mounted");
    assert!(matches!(
        apply(&mut client, &missing, true).await.unwrap(),
        Outcome::Invalid(_)
    ));
    assert_eq!(job_names(&client).await, vec!["a"]);
}

#[tokio::test]
async fn a_hand_edit_is_drift_and_is_repaired() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write(
        "a.yaml",
        &job("a", "  schedule: \"0 2 * * *\"\n  sql: SELECT 1\n"),
    );
    specs.write(
        "chain.yaml",
        "apiVersion: pgsched/v1\nkind: Chain\nmetadata: {name: c}\nspec:\n  steps:\n    - {name: one, sql: SELECT 1}\n",
    );
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    client
        .batch_execute(
            "UPDATE pgsched.jobs SET spec = jsonb_set(spec, '{schedule}', '\"* * * * *\"') WHERE name = 'a';
             UPDATE pgsched.chain_steps SET spec = '{\"name\": \"one\", \"sql\": \"DROP TABLE x\"}' WHERE chain = 'c';",
        )
        .await
        .unwrap();

    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    assert_eq!(report.plan.changes.len(), 2, "{:?}", report.plan.changes);
    assert!(report
        .plan
        .changes
        .iter()
        .all(|c| c.drift && c.action == Action::Update));
    let text = pgsched::plan::render_text(&report.plan, pgsched::plan::Style::PLAIN);
    assert!(text.contains("drift"), "{text}");
    assert!(text.contains("DROP TABLE x"), "{text}");

    applied(apply(&mut client, specs.path(), false).await.unwrap());
    let row = client
        .query_one(
            "SELECT schedule, generation FROM pgsched.jobs WHERE name = 'a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "0 2 * * *");
    assert_eq!(
        row.get::<_, i64>(1),
        1,
        "repairing drift does not bump the generation"
    );
    let step: serde_json::Value = client
        .query_one(
            "SELECT spec FROM pgsched.chain_steps WHERE chain = 'c'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(step["sql"], "SELECT 1");
    assert!(planned(plan(&mut client, specs.path()).await.unwrap())
        .plan
        .is_empty());
}

#[tokio::test]
async fn rows_created_by_hand_are_never_touched() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("a", "  sql: SELECT 1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    client
        .batch_execute(
            "INSERT INTO pgsched.jobs (name, kind, spec) VALUES ('by-hand', 'Job', '{\"sql\": \"SELECT 42\"}')",
        )
        .await
        .unwrap();
    // Not pruned, not changed.
    assert!(planned(plan(&mut client, specs.path()).await.unwrap())
        .plan
        .is_empty());
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    assert_eq!(job_names(&client).await, vec!["a", "by-hand"]);
    // A file that claims the name is a conflict, not a takeover.
    specs.write("b.yaml", &job("by-hand", "  sql: SELECT 1\n"));
    let report = planned(apply(&mut client, specs.path(), false).await.unwrap());
    assert_eq!(report.plan.conflicts.len(), 1);
    let spec: serde_json::Value = client
        .query_one("SELECT spec FROM pgsched.jobs WHERE name = 'by-hand'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(spec["sql"], "SELECT 42");
}

#[tokio::test]
async fn two_applies_at_once_leave_a_consistent_state() {
    let db = common::fresh_db().await;
    let specs = Specs::new();
    for i in 0..50 {
        specs.write(
            &format!("j{i}.yaml"),
            &job(&format!("job-{i}"), "  sql: SELECT 1\n"),
        );
    }
    let mut a = db.connect().await;
    let mut b = db.connect().await;
    let dir = specs.path().to_path_buf();
    let (ra, rb) = tokio::join!(apply(&mut a, &dir, false), apply(&mut b, &dir, false));
    let (ra, rb) = (applied(ra.unwrap()), applied(rb.unwrap()));
    // One of them created everything; the other found nothing left to do.
    let mut adds = [ra.plan.summary().add, rb.plan.summary().add];
    adds.sort();
    assert_eq!(adds, [0, 50]);
    let count: i64 = a
        .query_one(
            "SELECT count(*) FROM pgsched.jobs WHERE generation = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 50);
    let migrations: i64 = a
        .query_one("SELECT count(*) FROM pgsched.schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    // Every migration once; versions may leave gaps, so count them rather than take the last.
    assert_eq!(
        migrations,
        i64::try_from(pgsched::store::migrations::MIGRATIONS.len()).unwrap()
    );
}

#[tokio::test]
async fn a_misspelt_table_fails_the_plan_with_file_and_line() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE booking (id int, status text, created_at timestamptz, note text)",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "jobs/cleanup.yaml",
        &job(
            "cleanup",
            "  schedule: \"@hourly\"\n  sql: DELETE FROM bookng WHERE status = 'x'\n",
        ),
    );
    specs.write(
        "hold.yaml",
        "apiVersion: pgsched/v1\nkind: Timeout\nmetadata: {name: hold}\nspec:\n  table: booking\n  column: note\n  after: 15m\n  where: \"statuss = 'pending'\"\n  set: {status: expired, colour: red}\n",
    );
    specs.write(
        "ok.yaml",
        &job(
            "ok",
            "  sql: SELECT count(*) FROM booking WHERE status = $1->>'status'\n",
        ),
    );
    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    let errors: Vec<String> = report
        .checks
        .errors
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    let find = |needle: &str| {
        errors
            .iter()
            .find(|e| e.contains(needle))
            .unwrap_or_else(|| panic!("no error with {needle:?} in {errors:#?}"))
            .clone()
    };
    let sql = find("bookng");
    assert!(
        sql.starts_with(&format!(
            "{}:7:",
            specs.path().join("jobs/cleanup.yaml").display()
        )),
        "{sql}"
    );
    assert!(sql.contains("spec.sql"), "{sql}");
    let column = find("column `note` is text");
    assert!(column.contains("hold.yaml:6:"), "{column}");
    let set = find("column `colour` does not exist");
    assert!(set.contains("spec.set.colour"), "{set}");
    let condition = find("statuss");
    assert!(condition.contains("hold.yaml:8:"), "{condition}");
    assert_eq!(errors.len(), 4, "{errors:#?}");
    // Nothing is applied while the checks fail.
    planned(apply(&mut client, specs.path(), false).await.unwrap());
    assert!(job_names(&client).await.is_empty());
}

#[tokio::test]
async fn a_missing_timeout_table_suggests_the_close_name() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE booking (created_at timestamptz)")
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "hold.yaml",
        "apiVersion: pgsched/v1\nkind: Timeout\nmetadata: {name: hold}\nspec:\n  table: public.bookings\n  column: created_at\n  after: 15m\n  delete: true\n",
    );
    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    let e = &report.checks.errors[0];
    assert_eq!(e.line(), Some(5));
    assert!(e.message.contains("public.bookings does not exist"), "{e}");
    assert_eq!(e.hint.as_deref(), Some("did you mean `booking`?"));
}

#[tokio::test]
async fn trigger_enqueues_a_run_and_rejects_unknown_jobs() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("send", "  sql: SELECT $1\n"));
    applied(apply(&mut client, specs.path(), false).await.unwrap());
    let id: i64 = client
        .query_one(
            "SELECT pgsched.trigger('send', '{\"user_id\": 42}'::jsonb)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let row = client
        .query_one(
            "SELECT job, status, trigger, params->>'user_id' FROM pgsched.runs WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "send");
    assert_eq!(row.get::<_, String>(1), "pending");
    assert_eq!(row.get::<_, String>(2), "manual");
    assert_eq!(row.get::<_, String>(3), "42");
    let err = client
        .query_one("SELECT pgsched.trigger('nope')", &[])
        .await
        .unwrap_err();
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("no job or chain named nope"));
}

fn pgsched(args: &[&str], dir: &Path, url: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_cli_exit_codes_follow_the_contract() {
    let db = common::fresh_db().await;
    let specs = Specs::new();
    specs.write("a.yaml", &job("a", "  sql: SELECT 1\n"));

    let (code, out, _) = pgsched(&["plan"], specs.path(), &db.url);
    assert_eq!(code, 2, "changes pending: {out}");
    assert!(out.contains("+ job/a"), "{out}");
    assert!(
        out.contains("Plan: 1 to add, 0 to change, 0 to delete."),
        "{out}"
    );

    let (code, out, _) = pgsched(&["plan", "--output", "json"], specs.path(), &db.url);
    assert_eq!(code, 2);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["summary"]["add"], 1);

    let (code, out, err) = pgsched(&["apply"], specs.path(), &db.url);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("Apply complete: 1 added, 0 changed, 0 deleted."),
        "{out}"
    );

    let (code, out, _) = pgsched(&["plan"], specs.path(), &db.url);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("No changes"), "{out}");

    specs.write(
        "a.yaml",
        &job("a", "  sql: SELECT 1\n  retries: {limit: x}\n"),
    );
    let (code, _, err) = pgsched(&["plan"], specs.path(), &db.url);
    assert_eq!(code, 1);
    assert!(
        err.contains("a.yaml:7:") && err.contains("spec.retries.limit"),
        "{err}"
    );

    specs.remove("a.yaml");
    let (code, _, err) = pgsched(&["apply"], specs.path(), &db.url);
    assert_eq!(code, 1);
    assert!(err.contains("--allow-empty"), "{err}");
    let (code, _, _) = pgsched(&["apply", "--allow-empty"], specs.path(), &db.url);
    assert_eq!(code, 0);
}

#[tokio::test]
async fn chain_sql_is_checked_in_the_order_it_runs_and_on_failure_sql_too() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute("CREATE TABLE failures (error text)")
        .await
        .unwrap();
    let specs = Specs::new();
    // `report` is written first but needs `fill`, which needs `create`: the table it reads
    // does not exist at plan time, and that is no error.
    specs.write(
        "graph.yaml",
        "apiVersion: pgsched/v1\nkind: Chain\nmetadata: {name: graph}\nspec:\n  steps:\n    - {name: report, sql: SELECT count(*) FROM staged, needs: [fill]}\n    - {name: fill, sql: INSERT INTO staged VALUES (1), needs: [create]}\n    - {name: create, sql: CREATE TABLE IF NOT EXISTS staged (x int)}\n  onFailure:\n    - sql: INSERT INTO failurs (error) VALUES ($1->>'error')\n",
    );
    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    let errors: Vec<String> = report
        .checks
        .errors
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    // Not in a transaction, `create` may have run and stayed when the handler runs, so the
    // handler is listed as not checked rather than failed.
    assert!(errors.is_empty(), "{errors:#?}");
    let unchecked = report.checks.unchecked.join("\n");
    for path in [
        "spec.steps[0].sql",
        "spec.steps[1].sql",
        "spec.onFailure[0].sql",
    ] {
        assert!(
            unchecked.contains(&format!(
                "chain/graph {path}: may depend on what step `create` creates"
            )),
            "{path} not listed in:\n{unchecked}"
        );
    }

    // In one transaction the steps are rolled back before onFailure runs, so the handler is
    // checked against the database as it is, and its misspelt table fails the plan.
    specs.write(
        "graph.yaml",
        "apiVersion: pgsched/v1\nkind: Chain\nmetadata: {name: graph}\nspec:\n  transaction: true\n  steps:\n    - {name: create, sql: CREATE TEMP TABLE staged (x int)}\n    - {name: fill, sql: INSERT INTO staged VALUES (1)}\n  onFailure:\n    - sql: INSERT INTO failurs (error) VALUES ($1->>'error')\n",
    );
    let report = planned(plan(&mut client, specs.path()).await.unwrap());
    let errors: Vec<String> = report
        .checks
        .errors
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0].contains("graph.yaml:10:") && errors[0].contains("spec.onFailure[0].sql"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("failurs"), "{}", errors[0]);
}
