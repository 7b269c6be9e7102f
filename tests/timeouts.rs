//! The Timeout deadline loop on a real PostgreSQL: seed 000 (a booking held 10 s expires on
//! time, never early, and never while someone is paying for it), batches and runs, delete,
//! the wake-up trigger that apply installs and removes, plan notes, a dropped table that does
//! not stop the others, a lost notification covered by the poll, and reconnecting.
//!
//! Every wait is on a condition with a deadline; the only sleeps are the scenario's own pace
//! (inserting every 0.5 s, a customer paying for 11.5 s).

// A scenario reads best as one story from set-up to the last check, so tests here may be
// longer than the 80 lines asked of the code.
#![allow(clippy::too_many_lines)]

mod common;

use common::Specs;

use pgsched::reconcile::{apply, plan, Outcome, PlanReport};
use pgsched::timeout::{run_timeouts, TimeoutConfig};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

fn timeout(name: &str, body: &str) -> String {
    format!("apiVersion: pgsched/v1\nkind: Timeout\nmetadata:\n  name: {name}\nspec:\n{body}")
}

async fn apply_ok(client: &mut Client, specs: &Specs) -> PlanReport {
    match apply(client, specs.path(), true).await.unwrap() {
        Outcome::Applied(r) => r,
        other => panic!("expected an apply, got {other:?}"),
    }
}

/// The deadline loop, running until stopped.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<Result<(), pgsched::timeout::TimeoutError>>,
}

fn start(db: &common::TestDb, poll: Duration) -> Running {
    trace::install();
    let mut config = TimeoutConfig::new(db.url.clone());
    config.poll = poll;
    config.worker = "test-worker".into();
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_timeouts(config, stop.clone()));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the loop stops on shutdown")
            .unwrap()
            .unwrap();
    }
}

/// Polls `sql` (one boolean; NULL counts as false) until it is true, or panics after `within`.
async fn wait_until(client: &Client, sql: &str, within: Duration) {
    common::eventually(sql, within, || async {
        let done: Option<bool> = client.query_one(sql, &[]).await.unwrap().get(0);
        done == Some(true)
    })
    .await;
}

/// What the deadline loops of this test process decide, at trace level, kept in memory (and
/// appended to `$PGSCHED_TEST_TRACE` when set), so that a test that finds a row expired late
/// can show what its loop did meanwhile instead of only that it was late.
mod trace {
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    static LINES: OnceLock<Mutex<Vec<u8>>> = OnceLock::new();

    struct Sink;

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            LINES
                .get_or_init(Default::default)
                .lock()
                .unwrap()
                .extend_from_slice(buf);
            if let Ok(path) = std::env::var("PGSCHED_TEST_TRACE") {
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?;
                file.write_all(buf)?;
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    pub fn install() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("pgsched::timeout=trace")
            .with_writer(|| Sink)
            .with_ansi(false)
            .try_init();
    }

    /// The lines of the loop working on database `db`.
    pub fn of(db: &str) -> String {
        let lines = LINES.get_or_init(Default::default).lock().unwrap();
        String::from_utf8_lossy(&lines)
            .lines()
            .filter(|l| l.contains(&format!("db=\"{db}\"")) || l.contains(&format!("db={db}")))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Watches this process for stalls: a thread that wakes every 10 ms records every wake-up that
/// came more than 250 ms late (the process, or the whole machine, was not running). A late
/// expiry during a stall is the machine's, not the loop's; the failure message says which.
struct StallWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl StallWatch {
    fn start() -> StallWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut stalls = Vec::new();
            let mut last = std::time::Instant::now();
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(10));
                let gap = last.elapsed();
                if gap > Duration::from_millis(250) {
                    stalls.push(format!(
                        "{:?} stall ending at {}",
                        gap,
                        chrono::Utc::now().format("%H:%M:%S%.3f")
                    ));
                }
                last = std::time::Instant::now();
            }
            stalls
        });
        StallWatch {
            stop,
            thread: Some(thread),
        }
    }

    fn stalls(mut self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

async fn scalar<T: for<'a> tokio_postgres::types::FromSql<'a>>(client: &Client, sql: &str) -> T {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// The booking table of seed 000, with an enum status (knex's `enu`) and a column stamped by a
/// trigger when a row expires, so expiry times are read from the database itself.
const BOOKING: &str = "
    CREATE TYPE booking_status AS ENUM
        ('pending for payment', 'paid', 'confirm', 'cancel', 'expired', 'completed');
    CREATE TABLE booking (
        id          serial PRIMARY KEY,
        customer    text NOT NULL,
        status      booking_status NOT NULL DEFAULT 'pending for payment',
        created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
        expired_at  timestamptz
    );
    CREATE INDEX booking_pending ON booking (created_at) WHERE status = 'pending for payment';
    CREATE FUNCTION stamp_expiry() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.status = 'expired' AND OLD.status <> 'expired' THEN
            NEW.expired_at := clock_timestamp();
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER stamp_expiry BEFORE UPDATE ON booking FOR EACH ROW EXECUTE FUNCTION stamp_expiry();";

/// The booking hold of seed 000, held `after` (`10s`).
fn hold(after: &str) -> String {
    format!("  table: public.booking\n  column: created_at\n  after: {after}\n  where: \"status = 'pending for payment'\"\n  set: {{status: expired}}\n  batchSize: 1000\n")
}

/// Inserts the booking of `customer {i}` now; its id.
async fn insert_booking(client: &Client, i: usize) -> i32 {
    client
        .query_one(
            "INSERT INTO booking (customer) VALUES ($1) RETURNING id",
            &[&format!("customer {i}")],
        )
        .await
        .unwrap()
        .get(0)
}

/// Seed 000: bookings held 10 s, one every 0.5 s for 20 s. Every one expires, none before its
/// deadline, all within a second of it; the one a customer is paying for (locked across its
/// deadline, then marked paid) ends paid, and the others expire on time meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_bookings_expire_on_time_and_a_paying_customer_keeps_theirs() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client.batch_execute(BOOKING).await.unwrap();
    let specs = Specs::new();
    specs.write("hold.yaml", &timeout("booking-payment-hold", &hold("10s")));
    apply_ok(&mut client, &specs).await;
    let stall_watch = StallWatch::start();
    let running = start(&db, Duration::from_secs(5));

    let mut pay: Option<JoinHandle<()>> = None;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    for i in 0..40 {
        ticks.tick().await;
        let id = insert_booking(&client, i).await;
        if i == 5 {
            // The customer of booking 5 pays at the last moment: the payment transaction holds
            // the row from now until 1.5 s past its deadline, then marks it paid.
            pay = Some(tokio::spawn(pay_late(db.connect().await, id)));
        }
    }
    pay.take().unwrap().await.unwrap();

    // The last booking was created ~20 s in; it is due 10 s later.
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM booking WHERE status = 'pending for payment')",
        Duration::from_secs(20),
    )
    .await;
    running.stop().await;

    let paid: Vec<(String, Option<f64>)> = client
        .query(
            "SELECT status::text, extract(epoch FROM expired_at)::float8 FROM booking WHERE customer = 'customer 5'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(paid, vec![("paid".to_string(), None)]);

    // Lateness of every other booking: expired_at - (created_at + 10 s), in ms.
    let rows = client
        .query(
            "SELECT customer, status::text,
                    (extract(epoch FROM expired_at - (created_at + interval '10 seconds')) * 1000)::float8
               FROM booking WHERE customer <> 'customer 5' ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 39);
    let stalls = stall_watch.stalls();
    let mut lateness = Vec::new();
    let mut late = Vec::new();
    for row in &rows {
        let customer: String = row.get(0);
        assert_eq!(row.get::<_, String>(1), "expired", "{customer}");
        let ms: f64 = row.get(2);
        assert!(ms >= 0.0, "{customer} expired {ms} ms before its deadline");
        if ms >= 1000.0 {
            late.push(format!("{customer} expired {ms:.1} ms late"));
        }
        lateness.push(ms);
    }
    assert!(
        late.is_empty(),
        "{}\nstalls of this process (a thread waking every 10 ms): {stalls:?}\nthe loop's decisions:\n{}",
        late.join("\n"),
        trace::of(&db.name)
    );
    lateness.sort_by(f64::total_cmp);
    println!(
        "seed 000: lateness p50 {:.1} ms, max {:.1} ms",
        lateness[lateness.len() / 2],
        lateness[lateness.len() - 1]
    );

    // Each firing is a run with its row count; together they account for every expiry.
    let (runs, rows_affected, bad): (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*), sum(rows_affected)::int8,
                        count(*) FILTER (WHERE kind <> 'Timeout' OR trigger <> 'timeout'
                                            OR status <> 'succeeded' OR rows_affected < 1
                                            OR worker <> 'test-worker'
                                            OR finished_at < started_at)
                   FROM pgsched.runs WHERE job = 'booking-payment-hold'",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(rows_affected, 39);
    assert!((1..=39).contains(&runs), "{runs} runs");
    assert_eq!(bad, 0);
    // Nothing is pending any more: no next deadline.
    let next: Option<f64> = scalar(
        &client,
        "SELECT extract(epoch FROM next_deadline)::float8 FROM pgsched.timeouts",
    )
    .await;
    assert_eq!(next, None);
}

/// Locks booking `id` now, holds it until 1.5 s past its deadline while checking that later
/// bookings expire meanwhile, then marks it paid.
async fn pay_late(mut client: Client, id: i32) {
    let tx = client.transaction().await.unwrap();
    let held: f64 = tx
        .query_one(
            "SELECT extract(epoch FROM created_at + interval '10 seconds' - clock_timestamp())::float8
               FROM booking WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    // The scenario's pace: the customer is still paying 1.5 s after the hold ran out.
    tokio::time::sleep(Duration::from_secs_f64(held + 1.5)).await;
    // Meanwhile the next bookings (created 0.5 s and 1 s after this one) expired on time:
    // the lock on this one held up nothing.
    let later_expired: i64 = tx
        .query_one(
            "SELECT count(*) FROM booking WHERE id IN ($1 + 1, $1 + 2) AND status = 'expired'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        later_expired, 2,
        "bookings after the locked one expired meanwhile"
    );
    let status: String = tx
        .query_one("SELECT status::text FROM booking WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending for payment", "never expired while locked");
    let started = Instant::now();
    tx.execute("UPDATE booking SET status = 'paid' WHERE id = $1", &[&id])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "paying is never blocked by the expiry"
    );
}

/// Batches of batchSize, each recorded as a run with its row count; `delete: true` deletes;
/// rows not yet due stay.
#[tokio::test]
async fn due_rows_are_deleted_in_batches_each_recorded_as_a_run() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE sessions (id int PRIMARY KEY, last_seen timestamp NOT NULL);
             INSERT INTO sessions SELECT i, localtimestamp - interval '2 hours' FROM generate_series(1, 5) i;
             INSERT INTO sessions SELECT i, localtimestamp FROM generate_series(6, 8) i;",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "purge.yaml",
        &timeout(
            "purge-sessions",
            "  table: sessions\n  column: last_seen\n  after: 1h\n  delete: true\n  batchSize: 2\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(5));
    wait_until(
        &client,
        "SELECT coalesce(sum(rows_affected), 0) = 5 FROM pgsched.runs WHERE job = 'purge-sessions'",
        Duration::from_secs(10),
    )
    .await;
    running.stop().await;
    let left: Vec<i32> = client
        .query("SELECT id FROM sessions ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec![6, 7, 8]);
    let batches: Vec<i64> = client
        .query(
            "SELECT rows_affected FROM pgsched.runs WHERE job = 'purge-sessions' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(batches, vec![2, 2, 1]);
    // The next deadline is the first remaining row's, an hour from now.
    wait_until(
        &client,
        "SELECT next_deadline BETWEEN now() + interval '59 minutes' AND now() + interval '61 minutes'
           FROM pgsched.timeouts WHERE name = 'purge-sessions'",
        Duration::from_secs(5),
    )
    .await;
}

/// `set` values of several types are bound and cast to each column's type; odd identifiers
/// are quoted; a `timestamp` column works like a `timestamptz` one.
#[tokio::test]
async fn set_values_are_cast_to_their_columns_and_identifiers_quoted() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            r#"CREATE SCHEMA "Shop";
               CREATE TYPE "Shop"."Cart State" AS ENUM ('open', 'released');
               CREATE TABLE "Shop"."Cart" (
                   id int PRIMARY KEY, "updatedAt" timestamptz NOT NULL,
                   state "Shop"."Cart State" NOT NULL DEFAULT 'open',
                   retries int DEFAULT 3, active boolean DEFAULT true, held_by text DEFAULT 'x',
                   score numeric(4, 2), "it's" text);
               INSERT INTO "Shop"."Cart" (id, "updatedAt") VALUES (1, now() - interval '2 hours'), (2, now());"#,
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "cart.yaml",
        &timeout(
            "release-cart",
            "  table: Shop.Cart\n  column: updatedAt\n  after: 1h30m\n  where: \"state = 'open'\"\n  set: {state: released, retries: 0, active: false, held_by: null, score: 1.5, \"it's\": \"'); DROP TABLE x; --\"}\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(5));
    wait_until(
        &client,
        r#"SELECT state = 'released' FROM "Shop"."Cart" WHERE id = 1"#,
        Duration::from_secs(10),
    )
    .await;
    running.stop().await;
    let row = client
        .query_one(
            r#"SELECT retries, active, held_by, score::text, "it's" FROM "Shop"."Cart" WHERE id = 1"#,
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 0);
    assert!(!row.get::<_, bool>(1));
    assert_eq!(row.get::<_, Option<String>>(2), None);
    assert_eq!(row.get::<_, String>(3), "1.50");
    assert_eq!(row.get::<_, String>(4), "'); DROP TABLE x; --");
    let open: String = scalar(
        &client,
        r#"SELECT state::text FROM "Shop"."Cart" WHERE id = 2"#,
    )
    .await;
    assert_eq!(open, "open");
}

async fn triggers_on(client: &Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT tgname::text FROM pg_trigger WHERE tgrelid = $1::text::regclass AND NOT tgisinternal
               AND tgfoid = 'pgsched.timeout_notify()'::regprocedure ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Plan says it will install the trigger and suggests the missing index; apply installs the
/// trigger; moving the Timeout to another table moves it; pruning the Timeout removes it.
#[tokio::test]
async fn apply_installs_the_trigger_and_prune_removes_it() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE booking (id int, status text, created_at timestamptz);
             CREATE TABLE booking2 (id int, status text, created_at timestamptz);
             CREATE INDEX ON booking2 (created_at);
             CREATE TABLE other (id int);",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    let body = "  table: booking\n  column: created_at\n  after: 15m\n  where: \"status = 'pending'\"\n  set: {status: expired}\n";
    specs.write("hold.yaml", &timeout("hold", body));
    let report = match plan(&mut client, specs.path()).await.unwrap() {
        Outcome::Planned(r) => r,
        other => panic!("{other:?}"),
    };
    let notes = report.checks.notes.join("\n");
    assert!(
        notes.contains(
            "suggested: CREATE INDEX CONCURRENTLY ON \"public\".\"booking\" (\"created_at\") WHERE (status = 'pending');"
        ),
        "{notes}"
    );
    assert!(
        notes.contains("apply installs trigger pgsched_timeout_hold on public.booking"),
        "{notes}"
    );

    apply_ok(&mut client, &specs).await;
    assert_eq!(
        triggers_on(&client, "booking").await,
        ["pgsched_timeout_hold"]
    );

    // With the index there, plan has nothing to warn about.
    specs.write(
        "hold.yaml",
        &timeout("hold", &body.replace("booking", "booking2")),
    );
    let report = match plan(&mut client, specs.path()).await.unwrap() {
        Outcome::Planned(r) => r,
        other => panic!("{other:?}"),
    };
    assert!(
        !report
            .checks
            .notes
            .iter()
            .any(|n| n.contains("CREATE INDEX")),
        "{:?}",
        report.checks.notes
    );
    apply_ok(&mut client, &specs).await;
    assert!(triggers_on(&client, "booking").await.is_empty());
    assert_eq!(
        triggers_on(&client, "booking2").await,
        ["pgsched_timeout_hold"]
    );

    // Another Timeout on the same table gets its own trigger; pruning one removes only its own.
    specs.write(
        "purge.yaml",
        &timeout(
            "purge",
            "  table: booking2\n  column: created_at\n  after: 30d\n  delete: true\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    assert_eq!(
        triggers_on(&client, "booking2").await,
        ["pgsched_timeout_hold", "pgsched_timeout_purge"]
    );
    specs.remove("hold.yaml");
    apply_ok(&mut client, &specs).await;
    assert_eq!(
        triggers_on(&client, "booking2").await,
        ["pgsched_timeout_purge"]
    );
    specs.remove("purge.yaml");
    apply_ok(&mut client, &specs).await;
    assert!(triggers_on(&client, "booking2").await.is_empty());
}

/// The trigger wakes the loop: with a one-minute poll, a row due in half a second (earlier
/// than anything the loop knew) still expires on time. After the listen connection and the
/// work connection are killed, the loop reconnects, resubscribes and stays on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wake_the_loop_and_it_reconnects_after_losing_them() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE hold (id int PRIMARY KEY, created_at timestamptz NOT NULL, state text NOT NULL DEFAULT 'held',
                                expired_at timestamptz);
             CREATE INDEX ON hold (created_at) WHERE state = 'held';
             CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.expired_at := clock_timestamp(); RETURN NEW; END $$;
             CREATE TRIGGER stamp BEFORE UPDATE ON hold FOR EACH ROW EXECUTE FUNCTION stamp();
             INSERT INTO hold (id, created_at) VALUES (0, now() + interval '1 hour');",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "hold.yaml",
        &timeout(
            "hold",
            "  table: hold\n  column: created_at\n  after: 2s\n  where: \"state = 'held'\"\n  set: {state: expired}\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(60));
    // The loop is up, and knows the far deadline of row 0.
    wait_until(
        &client,
        "SELECT next_deadline > now() + interval '59 minutes' FROM pgsched.timeouts",
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        &client,
        "SELECT count(*) = 2 FROM pg_stat_activity
          WHERE application_name LIKE 'pgsched timeouts%' AND datname = current_database()",
        Duration::from_secs(10),
    )
    .await;

    let late = |id: i32| {
        let client = &client;
        async move {
            wait_until(
                client,
                &format!("SELECT state = 'expired' FROM hold WHERE id = {id}"),
                Duration::from_secs(10),
            )
            .await;
            let ms: f64 = scalar(
                client,
                &format!(
                    "SELECT (extract(epoch FROM expired_at - created_at - interval '2 seconds') * 1000)::float8
                       FROM hold WHERE id = {id}"
                ),
            )
            .await;
            ms
        }
    };
    client
        .execute(
            "INSERT INTO hold (id, created_at) VALUES (1, now() - interval '1500 milliseconds')",
            &[],
        )
        .await
        .unwrap();
    let ms = late(1).await;
    assert!((0.0..1000.0).contains(&ms), "row 1 expired {ms} ms late");

    // Kill both of the loop's connections.
    let killed: i64 = scalar(
        &client,
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                                WHERE application_name LIKE 'pgsched timeouts%'
                                  AND datname = current_database()) k",
    )
    .await;
    assert_eq!(killed, 2);
    wait_until(
        &client,
        "SELECT count(*) = 1 FROM pg_stat_activity
          WHERE application_name = 'pgsched timeouts (listen)' AND datname = current_database()",
        Duration::from_secs(10),
    )
    .await;
    // Resubscribed: a new row is noticed through the trigger, not the one-minute poll.
    client
        .execute(
            "INSERT INTO hold (id, created_at) VALUES (2, now() - interval '1500 milliseconds')",
            &[],
        )
        .await
        .unwrap();
    let ms = late(2).await;
    assert!((0.0..1000.0).contains(&ms), "row 2 expired {ms} ms late");
    running.stop().await;
}

/// A notification that never comes (the trigger was dropped by hand) delays expiry by at most
/// the poll interval.
#[tokio::test]
async fn a_lost_notification_is_covered_by_the_poll() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE hold (id int PRIMARY KEY, created_at timestamptz NOT NULL);
             INSERT INTO hold VALUES (0, now() + interval '1 hour');",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "hold.yaml",
        &timeout(
            "hold",
            "  table: hold\n  column: created_at\n  after: 1s\n  delete: true\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    client
        .batch_execute("DROP TRIGGER pgsched_timeout_hold ON hold")
        .await
        .unwrap();
    let poll = Duration::from_secs(1);
    let running = start(&db, poll);
    // The loop has computed its deadline (row 0's, an hour away) before the new row comes.
    wait_until(
        &client,
        "SELECT next_deadline IS NOT NULL FROM pgsched.timeouts",
        Duration::from_secs(10),
    )
    .await;
    // Timed from before the INSERT is sent: the row's clock (its now()) starts after that,
    // while the INSERT's answer may come back late on a busy machine.
    let inserted = Instant::now();
    client
        .execute("INSERT INTO hold VALUES (1, now())", &[])
        .await
        .unwrap();
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM hold WHERE id = 1)",
        Duration::from_secs(10),
    )
    .await;
    // Due 1 s after the insert; found by the poll within 1 s of that (plus this test's polling).
    let took = inserted.elapsed();
    assert!(
        took >= Duration::from_secs(1),
        "deleted before its deadline"
    );
    assert!(
        took < Duration::from_secs(1) + poll + Duration::from_millis(500),
        "took {took:?}"
    );
    running.stop().await;
}

/// A Timeout whose table is dropped records the error and holds up no other Timeout; when the
/// table is back, it works again (found on the poll) and the error is cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_table_records_an_error_and_does_not_stop_the_others() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, created_at timestamptz NOT NULL);
             CREATE TABLE b (id int PRIMARY KEY, created_at timestamptz NOT NULL);",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    for name in ["a", "b"] {
        specs.write(
            &format!("{name}.yaml"),
            &timeout(
                &format!("purge-{name}"),
                &format!("  table: {name}\n  column: created_at\n  after: 1s\n  delete: true\n"),
            ),
        );
    }
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(1));
    client
        .batch_execute(
            "INSERT INTO a VALUES (1, now()); INSERT INTO b VALUES (1, now()); DROP TABLE a;",
        )
        .await
        .unwrap();
    wait_until(
        &client,
        "SELECT last_error LIKE '%a%does not exist%' AND last_error_at IS NOT NULL
           FROM pgsched.timeouts WHERE name = 'purge-a'",
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM b)",
        Duration::from_secs(10),
    )
    .await;
    // b goes on working while a is broken.
    client
        .execute("INSERT INTO b VALUES (2, now())", &[])
        .await
        .unwrap();
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM b)",
        Duration::from_secs(10),
    )
    .await;
    let b_error: Option<String> = scalar(
        &client,
        "SELECT last_error FROM pgsched.timeouts WHERE name = 'purge-b'",
    )
    .await;
    assert_eq!(b_error, None);

    // The table is back (without the trigger, which went with it): the poll finds it.
    client
        .batch_execute(
            "CREATE TABLE a (id int PRIMARY KEY, created_at timestamptz NOT NULL);
             INSERT INTO a VALUES (2, now());",
        )
        .await
        .unwrap();
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM a)",
        Duration::from_secs(10),
    )
    .await;
    wait_until(
        &client,
        "SELECT last_error IS NULL AND last_error_at IS NULL FROM pgsched.timeouts WHERE name = 'purge-a'",
        Duration::from_secs(10),
    )
    .await;
    let runs: i64 = scalar(
        &client,
        "SELECT sum(rows_affected)::int8 FROM pgsched.runs WHERE job IN ('purge-a', 'purge-b')",
    )
    .await;
    assert_eq!(runs, 3);
    running.stop().await;
}

/// A suspended Timeout expires nothing, while another one beside it works; resuming it
/// (apply) expires what is due.
#[tokio::test]
async fn a_suspended_timeout_expires_nothing_until_resumed() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE t (id int PRIMARY KEY, created_at timestamptz NOT NULL);
             CREATE TABLE witness (id int PRIMARY KEY, created_at timestamptz NOT NULL);
             INSERT INTO t VALUES (1, now() - interval '1 hour');",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    let body = "  table: t\n  column: created_at\n  after: 1m\n  delete: true\n";
    specs.write("t.yaml", &timeout("t", &format!("{body}  suspend: true\n")));
    specs.write(
        "witness.yaml",
        &timeout("witness", &body.replace("table: t", "table: witness")),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(60));
    client
        .batch_execute(
            "INSERT INTO t VALUES (2, now() - interval '1 hour');
             INSERT INTO witness VALUES (1, now() - interval '1 hour');",
        )
        .await
        .unwrap();
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM witness)",
        Duration::from_secs(10),
    )
    .await;
    let count: i64 = scalar(&client, "SELECT count(*) FROM t").await;
    assert_eq!(count, 2);
    specs.write("t.yaml", &timeout("t", body));
    apply_ok(&mut client, &specs).await;
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM t)",
        Duration::from_secs(10),
    )
    .await;
    running.stop().await;
}

/// A row held locked across its deadline and then released unchanged (the payment failed and
/// rolled back) expires soon after: the loop kept trying it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_row_released_unchanged_expires_soon_after() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE hold (id int PRIMARY KEY, created_at timestamptz NOT NULL,
                                state text NOT NULL DEFAULT 'held', expired_at timestamptz);
             CREATE FUNCTION stamp() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN NEW.expired_at := clock_timestamp(); RETURN NEW; END $$;
             CREATE TRIGGER stamp BEFORE UPDATE ON hold FOR EACH ROW EXECUTE FUNCTION stamp();
             INSERT INTO hold (id, created_at) VALUES (1, now());",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "hold.yaml",
        &timeout(
            "hold",
            "  table: hold\n  column: created_at\n  after: 1s\n  where: \"state = 'held'\"\n  set: {state: expired}\n",
        ),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(60));
    let mut payer = db.connect().await;
    let tx = payer.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM hold WHERE id = 1 FOR UPDATE", &[])
        .await
        .unwrap();
    // The scenario's pace: held until 1.5 s past the deadline.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state: String = scalar(&client, "SELECT state FROM hold WHERE id = 1").await;
    assert_eq!(state, "held", "never changed while locked");
    tx.rollback().await.unwrap();
    let released = Instant::now();
    wait_until(
        &client,
        "SELECT state = 'expired' FROM hold WHERE id = 1",
        Duration::from_secs(10),
    )
    .await;
    // Retried every 100 ms at first, backing off to 1 s while it stays held.
    assert!(
        released.elapsed() < Duration::from_millis(1500),
        "expired {:?} after release",
        released.elapsed()
    );
    running.stop().await;
}

/// A Timeout's run records follow its own `history`, apart from a job of the same name.
#[tokio::test]
async fn timeout_runs_are_pruned_by_the_timeouts_own_history() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client
        .batch_execute(
            "CREATE TABLE sessions (id int PRIMARY KEY, last_seen timestamp NOT NULL);
             INSERT INTO sessions SELECT i, localtimestamp - interval '2 hours' FROM generate_series(1, 6) i;",
        )
        .await
        .unwrap();
    let specs = Specs::new();
    specs.write(
        "purge.yaml",
        &timeout(
            "purge",
            "  table: sessions\n  column: last_seen\n  after: 1h\n  delete: true\n  batchSize: 1\n  history: {keepSucceeded: 2}\n",
        ),
    );
    // A job may share the Timeout's name; its own limit is stricter.
    specs.write(
        "purge-job.yaml",
        &common::job("purge", "  sql: SELECT 1\n  history: {keepSucceeded: 1}\n"),
    );
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(5));
    wait_until(
        &client,
        "SELECT count(*) = 6 FROM pgsched.runs WHERE job = 'purge' AND kind = 'Timeout'",
        Duration::from_secs(10),
    )
    .await;
    running.stop().await;
    client
        .batch_execute(
            "INSERT INTO pgsched.runs (job, kind, trigger, status, started_at, finished_at)
             SELECT 'purge', 'Job', 'manual', 'succeeded', now(), now() FROM generate_series(1, 3)",
        )
        .await
        .unwrap();
    // Status (and so status files) count each object's own runs, not its namesake's.
    let status = pgsched::store::report::status(&client, Some("purge"))
        .await
        .unwrap();
    let totals: Vec<(String, i64)> = status
        .iter()
        .map(|s| (s.kind.clone(), s.succeeded))
        .collect();
    assert_eq!(totals, [("Job".to_string(), 3), ("Timeout".to_string(), 6)]);
    // `pgsched runs purge` shows both, each with its kind.
    let runs = pgsched::store::report::runs_of(&client, "purge", 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = runs.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "Job").count(),
        3,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "Timeout").count(),
        6,
        "{kinds:?}"
    );
    let pruned = pgsched::store::runs::prune_history(&client, 1000)
        .await
        .unwrap();
    assert_eq!(pruned, 4 + 2);
    let kept = |kind: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT count(*) FROM pgsched.runs WHERE job = 'purge' AND kind = $1",
                    &[&kind],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(kept("Timeout").await, 2);
    assert_eq!(kept("Job").await, 1);
}

/// 400 holds of 1 s, one every 25 ms, and every seventh row locked by a payer from just after
/// its insert until up to 0.9 s past its deadline, who then pays or gives up (rolls back). Rows
/// nobody held expire within a second of their deadline, as in seed 000; a row given up expires
/// within 1.5 s of its release (held rows are retried at most a second apart); a paid one stays
/// paid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_holds_and_payers_at_random_expire_on_time() {
    let db = common::fresh_db().await;
    let mut client = db.connect().await;
    client.batch_execute(BOOKING).await.unwrap();
    let specs = Specs::new();
    specs.write("hold.yaml", &timeout("booking-payment-hold", &hold("1s")));
    apply_ok(&mut client, &specs).await;
    let running = start(&db, Duration::from_secs(5));
    let mut payers = Vec::new();
    let mut ticks = tokio::time::interval(Duration::from_millis(25));
    for i in 0..400 {
        ticks.tick().await;
        let id = insert_booking(&client, i).await;
        if i % 7 == 3 {
            let payer = db.connect().await;
            let pay = i % 2 == 0;
            let hold_past = Duration::from_millis((i as u64 * 37) % 900);
            payers.push(tokio::spawn(async move {
                let mut payer = payer;
                let tx = payer.transaction().await.unwrap();
                let left: f64 = tx
                    .query_one(
                        "SELECT extract(epoch FROM created_at + interval '1 second' - clock_timestamp())::float8
                           FROM booking WHERE id = $1 FOR UPDATE",
                        &[&id],
                    )
                    .await
                    .unwrap()
                    .get(0);
                tokio::time::sleep(Duration::from_secs_f64(left.max(0.0)) + hold_past).await;
                if pay {
                    tx.execute("UPDATE booking SET status = 'paid' WHERE id = $1", &[&id])
                        .await
                        .unwrap();
                    tx.commit().await.unwrap();
                } else {
                    tx.rollback().await.unwrap();
                }
                (id, pay, chrono::Utc::now())
            }));
        }
    }
    let mut released = std::collections::HashMap::new();
    for p in payers {
        let (id, pay, at) = p.await.unwrap();
        released.insert(id, (pay, at));
    }
    wait_until(
        &client,
        "SELECT NOT EXISTS (SELECT 1 FROM booking WHERE status = 'pending for payment')",
        Duration::from_secs(20),
    )
    .await;
    running.stop().await;
    let rows = client
        .query(
            "SELECT id, status::text, created_at + interval '1 second', expired_at FROM booking ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let mut worst = 0.0f64;
    let mut late = Vec::new();
    for row in &rows {
        let id: i32 = row.get(0);
        let status: String = row.get(1);
        let due: chrono::DateTime<chrono::Utc> = row.get(2);
        let expired: Option<chrono::DateTime<chrono::Utc>> = row.get(3);
        match released.get(&id) {
            Some((true, _)) => assert_eq!(status, "paid"),
            other => {
                let from = match other {
                    Some((false, at)) => (*at).max(due),
                    _ => due,
                };
                let expired = expired.unwrap_or_else(|| panic!("{id} never expired"));
                let ms = (expired - from).num_microseconds().unwrap() as f64 / 1000.0;
                assert!(expired >= due, "{id} expired early");
                if other.is_none() {
                    worst = worst.max(ms);
                }
                let bound = if other.is_none() { 1000.0 } else { 1500.0 };
                if ms >= bound {
                    late.push(format!(
                        "booking {id} expired {ms:.1} ms late (held: {})",
                        other.is_some()
                    ));
                }
            }
        }
    }
    println!("lateness of rows nobody held: max {worst:.1} ms");
    assert!(
        late.is_empty(),
        "{}\nthe loop's decisions:\n{}",
        late.join("\n"),
        trace::of(&db.name)
    );
}
