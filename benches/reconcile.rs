//! `make bench`: how long `plan` and a no-op `apply` take over 10,000 generated specs, on a
//! private PostgreSQL this benchmark starts itself. Prints its figures; asserts nothing.
//!
//! Goals (issue 3): plan under 1 s, no-op apply under 0.5 s on a 2-core machine.

#[path = "../tests/common/mod.rs"]
mod common;

use pgsched::reconcile::{apply, plan, Outcome};
use std::path::Path;
use std::time::{Duration, Instant};

const SPECS: usize = 10_000;
const PER_FILE: usize = 10;
/// Rounds per measurement (1 in a smoke run under `cargo test`).
fn repeat() -> usize {
    if common::full_bench() {
        7
    } else {
        1
    }
}

fn generate(dir: &Path) {
    for file in 0..SPECS / PER_FILE {
        let mut text = String::new();
        for i in 0..PER_FILE {
            let n = file * PER_FILE + i;
            let task = match n % 4 {
                0 => format!("  sql: SELECT count(*) FROM bench_events WHERE kind = {n}"),
                1 => format!("  sql: UPDATE bench_events SET kind = kind WHERE id = ($1->>'id')::bigint AND kind = {n}"),
                2 => "  command: [/bin/true]".to_string(),
                _ => format!("  builtin: {{name: log, message: \"job {n}\"}}"),
            };
            text.push_str(&format!(
                "apiVersion: pgsched/v1\nkind: Job\nmetadata:\n  name: job-{n}\n  labels: {{team: t{}}}\nspec:\n  schedule: \"{} {} * * *\"\n  timeZone: Europe/Zurich\n  retries: {{limit: 3, backoff: {{initial: 10s, max: 5m}}}}\n{task}\n---\n",
                n % 7,
                n % 60,
                n % 24
            ));
        }
        std::fs::write(dir.join(format!("specs-{file:04}.yaml")), text).unwrap();
    }
}

fn stats(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<32} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms   (n={})",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let db = common::fresh_db().await;
        let mut client = db.connect().await;
        client
            .batch_execute("CREATE TABLE bench_events (id bigserial PRIMARY KEY, kind int)")
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path());
        println!(
            "reconcile benchmark: {SPECS} job specs in {} files",
            SPECS / PER_FILE
        );

        let mut load = Vec::new();
        for _ in 0..repeat() {
            let t = Instant::now();
            let loaded = pgsched::spec::load_dir(dir.path());
            load.push(t.elapsed());
            assert!(loaded.is_valid());
        }
        stats("load + validate (offline)", &mut load);

        let t = Instant::now();
        let first = plan(&mut client, dir.path()).await.unwrap();
        let first_plan = t.elapsed();
        match &first {
            Outcome::Planned(r) => {
                assert_eq!(r.plan.summary().add, SPECS, "{:?}", r.checks.errors.first());
            }
            other => panic!("{other:?}"),
        }
        stats("plan, empty database (10k adds)", &mut [first_plan]);

        let t = Instant::now();
        let outcome = apply(&mut client, dir.path(), false).await.unwrap();
        assert!(matches!(outcome, Outcome::Applied(_)));
        stats("first apply (10k inserts)", &mut [t.elapsed()]);

        let mut plans = Vec::new();
        let mut applies = Vec::new();
        for _ in 0..repeat() {
            let t = Instant::now();
            match plan(&mut client, dir.path()).await.unwrap() {
                Outcome::Planned(r) => assert!(r.plan.is_empty()),
                other => panic!("{other:?}"),
            }
            plans.push(t.elapsed());
            let t = Instant::now();
            match apply(&mut client, dir.path(), false).await.unwrap() {
                Outcome::Applied(r) => assert!(r.plan.is_empty()),
                other => panic!("{other:?}"),
            }
            applies.push(t.elapsed());
        }
        stats("plan, no changes (goal < 1 s)", &mut plans);
        stats("apply, no changes (goal < 0.5 s)", &mut applies);

        // One changed file among 1,000: the common case in CI.
        let path = dir.path().join("specs-0000.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("limit: 3", "limit: 4");
        std::fs::write(&path, text).unwrap();
        let t = Instant::now();
        match plan(&mut client, dir.path()).await.unwrap() {
            Outcome::Planned(r) => assert_eq!(r.plan.summary().change, PER_FILE),
            other => panic!("{other:?}"),
        }
        stats("plan, 10 changed of 10k", &mut [t.elapsed()]);
    });
}
