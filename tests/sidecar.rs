//! `pgsched run` as a user runs it: the binary as a child process, a spec directory it watches,
//! a real PostgreSQL, its HTTP endpoints and its status files.

mod common;

use common::{free_port, fresh_db, job, wait_until, Sidecar, Specs, TestDb};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A blocking view of the test database (the sidecar runs outside this process; these tests
/// need no async of their own).
struct Db {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
    db: TestDb,
}

impl Db {
    fn new() -> Db {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let db = rt.block_on(fresh_db());
        let client = rt.block_on(db.connect());
        Db { rt, client, db }
    }
    fn url(&self) -> &str {
        &self.db.url
    }
    /// The `schedule` column of a job, or None when there is no such row.
    fn schedule_of(&self, name: &str) -> Option<Option<String>> {
        self.rt
            .block_on(self.client.query_opt(
                "SELECT schedule FROM pgsched.jobs WHERE name = $1",
                &[&name],
            ))
            .ok()
            .flatten()
            .map(|r| r.get(0))
    }
    fn has_job(&self, name: &str) -> bool {
        self.schedule_of(name).is_some()
    }
    fn leader(&self) -> Option<String> {
        self.rt
            .block_on(self.client.query_opt(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                  WHERE l.locktype = 'advisory' AND l.granted AND l.objid = 4 AND l.objsubid = 2
                    AND a.datname = current_database()",
                &[],
            ))
            .unwrap()
            .map(|r| r.get(0))
    }
}

/// How long `check` took to hold, printed for the reader; panics after 10 s.
fn time_until(what: &str, mut check: impl FnMut() -> bool, log: impl Fn() -> String) -> Duration {
    let start = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), &mut check),
        "{what}: not within 10 s; log:\n{}",
        log()
    );
    let took = start.elapsed();
    eprintln!("{what}: {took:?}");
    took
}

#[test]
fn edits_new_files_and_removed_files_reach_the_tables() {
    let db = Db::new();
    let specs = Specs::with(&[
        (
            "a.yaml",
            &job("a", "  schedule: \"0 3 * * *\"\n  sql: SELECT 1\n"),
        ),
        ("keep.yaml", &job("keep", "  sql: SELECT 1\n")),
    ]);
    let mut sidecar = Sidecar::start(specs.path(), db.url(), &[]);
    sidecar.wait_ready();
    assert_eq!(db.schedule_of("a"), Some(Some("0 3 * * *".into())));

    // An editor's atomic save: write a temporary file, rename it over the old one.
    std::fs::write(
        specs.path().join(".a.yaml.swp"),
        job("a", "  schedule: \"0 4 * * *\"\n  sql: SELECT 1\n"),
    )
    .unwrap();
    std::fs::rename(
        specs.path().join(".a.yaml.swp"),
        specs.path().join("a.yaml"),
    )
    .unwrap();
    time_until(
        "an edit reached the table",
        || db.schedule_of("a") == Some(Some("0 4 * * *".into())),
        || sidecar.log(),
    );

    specs.write("sub/b.yaml", &job("b", "  sql: SELECT 2\n"));
    time_until(
        "a new file reached the table",
        || db.has_job("b"),
        || sidecar.log(),
    );

    specs.remove("a.yaml");
    time_until(
        "a removed file reached the table",
        || !db.has_job("a"),
        || sidecar.log(),
    );
    assert!(db.has_job("keep") && db.has_job("b"));
    // Its status file goes with it.
    assert!(wait_until(Duration::from_secs(5), || !specs
        .path()
        .join("a.status.yaml")
        .exists()));
    assert!(specs.path().join("sub/b.status.yaml").exists());

    // The same content again (a touch) changes nothing: no new reconcile is counted.
    let before = sidecar.metric("pgsched_reconcile_duration_seconds_count");
    let text = std::fs::read_to_string(specs.path().join("keep.yaml")).unwrap();
    specs.write("keep.yaml", &text);
    std::thread::sleep(Duration::from_millis(500)); // nothing to wait for: proving a non-event
    assert_eq!(
        sidecar.metric("pgsched_reconcile_duration_seconds_count"),
        before
    );
}

#[test]
fn a_symlink_swap_of_the_whole_directory_is_picked_up() {
    // git-sync: `root/specs` is a symlink to a worktree, swapped atomically by a rename.
    let db = Db::new();
    let root = tempfile::tempdir().unwrap();
    let rev1 = root.path().join("rev1");
    let rev2 = root.path().join("rev2");
    std::fs::create_dir_all(&rev1).unwrap();
    std::fs::create_dir_all(&rev2).unwrap();
    std::fs::write(rev1.join("a.yaml"), job("a", "  sql: SELECT 1\n")).unwrap();
    std::fs::write(rev2.join("a.yaml"), job("a", "  sql: SELECT 1\n")).unwrap();
    std::fs::write(rev2.join("c.yaml"), job("c", "  sql: SELECT 3\n")).unwrap();
    let link = root.path().join("specs");
    std::os::unix::fs::symlink(&rev1, &link).unwrap();
    let status = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start(
        &link,
        db.url(),
        &["--status-dir", status.path().to_str().unwrap()],
    );
    sidecar.wait_ready();
    assert!(db.has_job("a") && !db.has_job("c"));

    let tmp = root.path().join("specs.tmp");
    std::os::unix::fs::symlink(&rev2, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    time_until(
        "a git-sync swap reached the table",
        || db.has_job("c"),
        || sidecar.log(),
    );

    // And the next swap too: the watch follows the new target.
    std::fs::write(rev1.join("d.yaml"), job("d", "  sql: SELECT 4\n")).unwrap();
    std::os::unix::fs::symlink(&rev1, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    time_until(
        "a second swap reached the table",
        || db.has_job("d") && !db.has_job("c"),
        || sidecar.log(),
    );
    // Edits inside the new target are seen as well.
    std::fs::write(rev1.join("e.yaml"), job("e", "  sql: SELECT 5\n")).unwrap();
    time_until("an edit after a swap", || db.has_job("e"), || sidecar.log());
    // Status files went to --status-dir, not into the worktree.
    assert!(wait_until(Duration::from_secs(5), || status
        .path()
        .join("e.status.yaml")
        .exists()));
    assert!(!rev1.join("a.status.yaml").exists());
}

#[test]
fn a_configmap_data_swap_is_picked_up() {
    // A ConfigMap volume: `a.yaml -> ..data/a.yaml`, `..data -> ..2026_v1`; an update writes
    // `..2026_v2`, points `..data_tmp` at it and renames it over `..data`.
    let db = Db::new();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_v1")).unwrap();
    std::fs::write(
        d.join("..2026_v1/a.yaml"),
        job("a", "  schedule: \"0 1 * * *\"\n  sql: SELECT 1\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_v1", d.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/a.yaml", d.join("a.yaml")).unwrap();
    let status = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start(
        d,
        db.url(),
        &["--status-dir", status.path().to_str().unwrap()],
    );
    sidecar.wait_ready();
    assert_eq!(db.schedule_of("a"), Some(Some("0 1 * * *".into())));

    std::fs::create_dir(d.join("..2026_v2")).unwrap();
    std::fs::write(
        d.join("..2026_v2/a.yaml"),
        job("a", "  schedule: \"0 2 * * *\"\n  sql: SELECT 1\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_v2", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    std::fs::remove_dir_all(d.join("..2026_v1")).unwrap();
    time_until(
        "a ConfigMap swap reached the table",
        || db.schedule_of("a") == Some(Some("0 2 * * *".into())),
        || sidecar.log(),
    );
}

#[test]
fn a_broken_edit_keeps_the_last_good_state_and_says_ready_false() {
    let db = Db::new();
    let specs = Specs::with(&[
        (
            "a.yaml",
            &job("a", "  schedule: \"@every 1s\"\n  sql: SELECT 1\n"),
        ),
        ("b.yaml", &job("b", "  sql: SELECT 1\n")),
    ]);
    let mut sidecar = Sidecar::start(specs.path(), db.url(), &[]);
    sidecar.wait_ready();
    let status = specs.path().join("a.status.yaml");
    assert!(wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&status).is_ok_and(|t| t.contains("reason: Reconciled"))
    }));

    // A typo in the schedule, and a new job in another file: neither is applied.
    specs.write(
        "a.yaml",
        &job("a", "  schedule: \"@every 1 s\"\n  sql: SELECT 1\n"),
    );
    specs.write("c.yaml", &job("c", "  sql: SELECT 1\n"));
    time_until(
        "the status file says Ready=False",
        || {
            std::fs::read_to_string(&status)
                .is_ok_and(|t| t.contains("status: \"False\"") && t.contains("reason: InvalidSpec"))
        },
        || sidecar.log(),
    );
    let text = std::fs::read_to_string(&status).unwrap();
    assert!(
        text.contains("a.yaml:"),
        "the message names the file and line:\n{text}"
    );
    assert!(text.contains("name: a"), "{text}");
    let c_status = specs.path().join("c.status.yaml");
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&c_status).is_ok_and(|t| t.contains("reason: Blocked"))
    }));
    // The last good state keeps running.
    assert_eq!(db.schedule_of("a"), Some(Some("@every 1s".into())));
    assert!(!db.has_job("c"));
    assert!(sidecar.metric("pgsched_spec_errors").unwrap_or(0.0) >= 1.0);
    let runs_now = || -> i64 {
        db.rt
            .block_on(db.client.query_one(
                "SELECT count(*) FROM pgsched.runs WHERE job = 'a' AND status = 'succeeded'",
                &[],
            ))
            .unwrap()
            .get(0)
    };
    let before = runs_now();
    assert!(
        wait_until(Duration::from_secs(10), || runs_now() > before),
        "job a stopped running while its file was broken"
    );

    // Fixed: everything is applied, and the file is Ready again.
    specs.write(
        "a.yaml",
        &job("a", "  schedule: \"@every 2s\"\n  sql: SELECT 1\n"),
    );
    time_until(
        "the fix was applied",
        || db.schedule_of("a") == Some(Some("@every 2s".into())) && db.has_job("c"),
        || sidecar.log(),
    );
    assert!(wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&status).is_ok_and(|t| t.contains("reason: Reconciled"))
    }));
}

#[test]
fn one_of_two_replicas_leads_and_a_killed_leader_hands_over() {
    let db = Db::new();
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    let s1 = tempfile::tempdir().unwrap();
    let s2 = tempfile::tempdir().unwrap();
    let mut first = Sidecar::start(
        specs.path(),
        db.url(),
        &["--status-dir", s1.path().to_str().unwrap()],
    );
    let mut second = Sidecar::start(
        specs.path(),
        db.url(),
        &["--status-dir", s2.path().to_str().unwrap()],
    );
    first.wait_ready();
    second.wait_ready();
    let leaders = || {
        (
            first.metric("pgsched_leader").unwrap_or(0.0),
            second.metric("pgsched_leader").unwrap_or(0.0),
        )
    };
    assert!(wait_until(Duration::from_secs(10), || {
        let (a, b) = leaders();
        a + b == 1.0
    }));
    // Stays so: exactly one, for a while.
    for _ in 0..10 {
        let (a, b) = leaders();
        assert_eq!(a + b, 1.0, "leaders: {a} {b}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (a, _) = leaders();
    let (mut leader, follower) = if a == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    let name = db.leader().expect("pg_locks shows the leadership lock");
    assert!(name.starts_with("pgsched leader "), "{name}");
    assert!(name.ends_with(&format!("/{}", leader.child.id())), "{name}");
    // `pgsched status` says who reconciles.
    let status = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .args(["--database-url", db.url(), "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains(&format!("reconciling: {name}")),
        "{text}{}",
        String::from_utf8_lossy(&status.stderr)
    );

    leader.signal(libc::SIGKILL);
    leader.wait_exit(Duration::from_secs(5));
    let took = time_until(
        "the other replica took over",
        || follower.metric("pgsched_leader") == Some(1.0),
        || follower.log(),
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
    // And it reconciles: an edit reaches the tables through the new leader.
    specs.write("b.yaml", &job("b", "  sql: SELECT 1\n"));
    time_until(
        "the new leader applied an edit",
        || db.has_job("b"),
        || follower.log(),
    );
}

#[test]
fn status_files_carry_the_last_run_the_next_time_and_totals() {
    let db = Db::new();
    let specs = Specs::with(&[(
        "jobs/tick.yaml",
        &format!(
            "{}---\n{}",
            job("tick", "  schedule: \"@every 1s\"\n  sql: SELECT 1\n"),
            job(
                "nightly",
                "  schedule: \"0 2 * * *\"\n  timeZone: Europe/Zurich\n  sql: SELECT 1\n"
            )
        ),
    )]);
    let mut sidecar = Sidecar::start(specs.path(), db.url(), &[]);
    sidecar.wait_ready();
    let path = specs.path().join("jobs/tick.status.yaml");
    time_until(
        "a run shows in the status file",
        || {
            // At least one: `@every 1s` may have run again by the time the file is written.
            let entries = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| pgsched::status::parse(&t))
                .unwrap_or_default();
            entries.iter().any(|e| {
                e.name == "tick"
                    && e.last_run.as_ref().is_some_and(|r| r.status == "succeeded")
                    && e.totals.as_ref().is_some_and(|t| t.succeeded >= 1)
            })
        },
        || sidecar.log(),
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# Written by pgsched. Do not edit.\n"),
        "{text}"
    );
    let entries = pgsched::status::parse(&text).expect("the status file parses");
    assert_eq!(entries.len(), 2, "{text}");
    let tick = entries.iter().find(|e| e.name == "tick").unwrap();
    assert_eq!(tick.kind, "Job");
    assert_eq!(tick.generation, Some(1));
    assert_eq!(tick.conditions[0].status, "True");
    assert_eq!(tick.conditions[0].observed_generation, Some(1));
    assert!(tick.next_schedule_time.is_some() && tick.last_schedule_time.is_some());
    let run = tick.last_run.as_ref().unwrap();
    assert!(run.duration_ms.is_some() && run.worker.is_some());
    assert!(tick.totals.as_ref().unwrap().succeeded >= 1);
    let nightly = entries.iter().find(|e| e.name == "nightly").unwrap();
    // 02:00 in Zurich is 01:00 UTC in winter.
    assert!(
        nightly
            .next_schedule_time
            .as_deref()
            .unwrap()
            .ends_with("T01:00:00Z"),
        "{text}"
    );
    assert!(nightly.last_run.is_none());
}

#[test]
fn readyz_waits_for_the_database_and_metrics_parse_as_prometheus_text() {
    let db = Db::new();
    let specs = Specs::with(&[(
        "a.yaml",
        &job("a", "  schedule: \"@every 1s\"\n  sql: SELECT 1\n"),
    )]);
    // No database there: alive, not ready, and saying why.
    let nowhere = format!(
        "host=127.0.0.1 port={} user=postgres dbname=x connect_timeout=1",
        free_port()
    );
    let waiting = Sidecar::start(specs.path(), &nowhere, &[]);
    assert!(wait_until(Duration::from_secs(10), || waiting
        .get("/healthz")
        .is_some()));
    assert_eq!(waiting.get("/healthz").unwrap().0, 200);
    let (code, body) = waiting.get("/readyz").unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("not connected"), "{body}");
    drop(waiting);

    let mut sidecar = Sidecar::start(specs.path(), db.url(), &[]);
    sidecar.wait_ready();
    time_until(
        "a run is counted in /metrics",
        || {
            sidecar.get("/metrics").is_some_and(|(_, b)| {
                b.contains(r#"pgsched_runs_total{job="a",outcome="succeeded"}"#)
            })
        },
        || sidecar.log(),
    );
    let (code, body) = sidecar.get("/metrics").unwrap();
    assert_eq!(code, 200);
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("/metrics parses");
    let names: std::collections::BTreeSet<&str> =
        scrape.samples.iter().map(|s| s.metric.as_str()).collect();
    for expected in [
        "pgsched_runs_total",
        "pgsched_run_duration_seconds_count",
        "pgsched_run_start_lateness_seconds_count",
        "pgsched_reconciles_total",
        "pgsched_reconcile_errors_total",
        "pgsched_reconcile_duration_seconds_count",
        "pgsched_leader",
        "pgsched_pending_runs",
        "pgsched_ready",
        "pgsched_timeout_rows_expired_total",
    ] {
        assert!(names.contains(expected), "{expected} missing from:\n{body}");
    }
    assert!(scrape.samples.iter().any(|s| s.metric == "pgsched_leader"
        && matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)));
}

#[test]
fn sigterm_stops_cleanly_and_releases_the_leadership() {
    let db = Db::new();
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    let mut sidecar = Sidecar::start(specs.path(), db.url(), &["--log-format", "json"]);
    sidecar.wait_ready();
    assert!(wait_until(Duration::from_secs(10), || db
        .leader()
        .is_some()));
    sidecar.signal(libc::SIGTERM);
    assert_eq!(
        sidecar.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        sidecar.log()
    );
    assert!(wait_until(Duration::from_secs(5), || db.leader().is_none()));
    // Every log line is one JSON object, for log collectors.
    let log = sidecar.log();
    assert!(log.lines().count() > 2, "{log}");
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
    assert!(log.contains("stopped cleanly"), "{log}");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_git_checkout_of_many_files_is_one_reconcile() {
    let db = Db::new();
    let repo = tempfile::tempdir().unwrap();
    let write_all = |hour: u32, names: std::ops::Range<u32>| {
        for i in names {
            std::fs::write(
                repo.path().join(format!("job-{i}.yaml")),
                job(
                    &format!("job-{i}"),
                    &format!("  schedule: \"0 {hour} * * *\"\n  sql: SELECT {i}\n"),
                ),
            )
            .unwrap();
        }
    };
    git(repo.path(), &["init", "-q", "-b", "main"]);
    write_all(1, 0..40);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "one"]);
    for i in 35..40 {
        std::fs::remove_file(repo.path().join(format!("job-{i}.yaml"))).unwrap();
    }
    write_all(2, 0..35);
    write_all(2, 40..50);
    git(repo.path(), &["add", "-A"]);
    git(repo.path(), &["commit", "-q", "-m", "two"]);
    git(repo.path(), &["checkout", "-q", "HEAD~1"]);

    // A debounce long enough that one checkout is one burst even on a loaded machine.
    let mut sidecar = Sidecar::start(repo.path(), db.url(), &["--debounce", "400ms"]);
    sidecar.wait_ready();
    assert_eq!(db.schedule_of("job-0"), Some(Some("0 1 * * *".into())));
    let reconciles = || {
        sidecar
            .metric("pgsched_reconcile_duration_seconds_count")
            .unwrap_or(0.0)
    };
    let before = reconciles();
    git(repo.path(), &["checkout", "-q", "main"]);
    time_until(
        "a checkout of 50 files reached the tables",
        || {
            db.schedule_of("job-0") == Some(Some("0 2 * * *".into()))
                && db.has_job("job-49")
                && !db.has_job("job-39")
        },
        || sidecar.log(),
    );
    std::thread::sleep(Duration::from_millis(1000)); // proving a non-event: no second reconcile
    assert_eq!(reconciles() - before, 1.0, "{}", sidecar.log());
    // Git's own files never made a status file or a spec.
    assert!(!repo.path().join(".git/index.status.yaml").exists());
}

#[test]
fn a_read_only_spec_directory_is_reported_once_pointing_to_status_dir() {
    use std::os::unix::fs::PermissionsExt;
    let db = Db::new();
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    // Read-only for the sidecar: as root (who may write anywhere), run it as `postgres`, the
    // user the test server runs as, on a directory owned by root.
    std::fs::set_permissions(specs.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let user = (unsafe { libc::geteuid() } == 0).then(|| {
        // SAFETY: getpwnam with a NUL-terminated name; the result is read before any other call.
        let pw = unsafe { libc::getpwnam(c"postgres".as_ptr()) };
        assert!(!pw.is_null(), "as root, the tests need the postgres user");
        unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
    });
    let args = ["--status-interval", "100ms"];
    let mut sidecar = Sidecar::start_as(specs.path(), db.url(), &args, "info", user);
    sidecar.wait_ready();
    assert!(db.has_job("a"), "the specs are applied all the same");
    let said = |log: &str| {
        log.lines()
            .filter(|l| l.contains("give --status-dir"))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(10), || said(&sidecar.log()) >= 1),
        "{}",
        sidecar.log()
    );
    std::thread::sleep(Duration::from_millis(1000)); // ten more rounds: proving a non-event
    let log = sidecar.log();
    assert_eq!(said(&log), 1, "one line, not one per round:\n{log}");
    assert!(log.contains("read-only"), "{log}");
    assert!(!specs.path().join("a.status.yaml").exists());
    std::fs::set_permissions(specs.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn resync_repairs_a_hand_edit_and_a_database_restart_is_ridden_out() {
    let mut server = common::TestServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(server.fresh_db());
    let specs = Specs::with(&[(
        "a.yaml",
        &job("a", "  schedule: \"0 3 * * *\"\n  sql: SELECT 1\n"),
    )]);
    let mut sidecar = Sidecar::start(specs.path(), &db.url, &["--resync", "1s"]);
    sidecar.wait_ready();
    let schedule = |rt: &tokio::runtime::Runtime| -> Option<String> {
        rt.block_on(async {
            let c = db.connect().await;
            c.query_one("SELECT schedule FROM pgsched.jobs WHERE name = 'a'", &[])
                .await
                .unwrap()
                .get(0)
        })
    };
    // Drift: someone edits the managed row by hand; the next resync puts it back.
    rt.block_on(async {
        db.connect()
            .await
            .batch_execute(
                "UPDATE pgsched.jobs SET spec = jsonb_set(spec, '{schedule}', '\"0 5 * * *\"') WHERE name = 'a'",
            )
            .await
            .unwrap();
    });
    assert_eq!(schedule(&rt).as_deref(), Some("0 5 * * *"));
    time_until(
        "a resync repaired the hand edit",
        || schedule(&rt).as_deref() == Some("0 3 * * *"),
        || sidecar.log(),
    );

    // The database goes away: not ready, saying why; back: ready, and edits apply again.
    server.stop().unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || sidecar
            .get("/readyz")
            .is_some_and(|(code, _)| code == 503)),
        "{}",
        sidecar.log()
    );
    assert_eq!(sidecar.get("/healthz").unwrap().0, 200);
    server.restart().unwrap();
    sidecar.wait_ready();
    specs.write(
        "a.yaml",
        &job("a", "  schedule: \"0 4 * * *\"\n  sql: SELECT 1\n"),
    );
    time_until(
        "an edit after the restart",
        || schedule(&rt).as_deref() == Some("0 4 * * *"),
        || sidecar.log(),
    );
}

#[test]
fn sigterm_also_stops_the_embedded_postgresql() {
    use std::os::unix::fs::PermissionsExt;
    // The embedded default lives in .pgsched/ of the working directory; as root its server runs
    // as postgres, which must be able to reach it.
    let scratch = common::ScratchDir::new();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    let port = free_port();
    let log = work.join("pgsched.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgsched"))
        .current_dir(&work)
        .arg("--dir")
        .arg(specs.path())
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let ready = || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                write!(s, "GET /readyz HTTP/1.0\r\n\r\n").ok()?;
                let mut text = String::new();
                s.read_to_string(&mut text).ok()?;
                Some(text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    };
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(wait_until(Duration::from_secs(60), ready), "{}", read_log());
    let pid_file = work.join(".pgsched/data/postmaster.pid");
    assert!(pid_file.exists());
    let postmaster: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "did not stop: {}", read_log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", read_log());
    assert!(
        !pid_file.exists(),
        "the embedded server is still up: {}",
        read_log()
    );
    // Gone, or a zombie waiting for whoever adopted it to reap it.
    let state = std::fs::read_to_string(format!("/proc/{postmaster}/stat")).unwrap_or_default();
    let running = state
        .rsplit_once(')')
        .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'));
    assert!(!running, "postmaster {postmaster} still runs: {state}");
}

#[test]
fn a_finished_run_reaches_its_status_file_without_waiting_for_the_interval() {
    let db = Db::new();
    let specs = Specs::with(&[("a.yaml", &job("a", "  sql: SELECT 1\n"))]);
    // Status rounds on their own only every hour: what shows the run is the nudge.
    let mut sidecar = Sidecar::start(specs.path(), db.url(), &["--status-interval", "1h"]);
    sidecar.wait_ready();
    let path = specs.path().join("a.status.yaml");
    assert!(wait_until(Duration::from_secs(10), || path.exists()));
    let id: i64 = db
        .rt
        .block_on(
            db.client
                .query_one("SELECT pgsched.trigger('a', '{}'::jsonb)", &[]),
        )
        .unwrap()
        .get(0);
    time_until(
        "a triggered run showed in the status file",
        || {
            std::fs::read_to_string(&path)
                .is_ok_and(|t| t.contains(&format!("id: {id}")) && t.contains("succeeded: 1"))
        },
        || sidecar.log(),
    );
}
