//! `cargo bench --bench load`: how long `spec::load_dir` takes over 10,000 generated job specs
//! (1,000 files of 10 documents), the offline part of every `plan` and `apply`. Prints the
//! median, minimum and maximum over several runs; asserts nothing about time.
//!
//! Goal: well under 300 ms on a 2-core machine, so a no-op `apply` stays under 0.5 s.
//!
//! Besides the wall time it prints the CPU time the process spent (all threads): on a shared
//! machine the wall time varies with what else runs, the CPU time much less.

use std::path::Path;
use std::time::{Duration, Instant};

const FILES: usize = 1_000;
const PER_FILE: usize = 10;
/// Rounds per measurement (1 in a smoke run under `cargo test`).
fn repeat() -> usize {
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is a smoke run.
    if std::env::args().any(|a| a == "--bench") {
        15
    } else {
        1
    }
}

fn generate(dir: &Path) {
    for file in 0..FILES {
        let mut text = String::new();
        for i in 0..PER_FILE {
            let n = file * PER_FILE + i;
            text.push_str(&format!(
                "apiVersion: pgsched/v1\nkind: Job\nmetadata:\n  name: job-{n}\n  labels: {{team: t{}}}\nspec:\n  schedule: \"{} {} * * *\"\n  timeZone: Europe/Zurich\n  retries: {{limit: 3, backoff: {{initial: 10s, max: 5m}}}}\n  sql: SELECT {n}\n---\n",
                n % 7,
                n % 60,
                n % 24
            ));
        }
        std::fs::write(dir.join(format!("s{file:04}.yaml")), text).unwrap();
    }
}

/// CPU time used by this process so far, all threads, user and system.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn stats(label: &str, samples: &mut [Duration]) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{label:<28} median {:>8.1} ms   min {:>8.1} ms   max {:>8.1} ms   (n={})",
        ms(samples[samples.len() / 2]),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    generate(dir.path());
    println!(
        "load benchmark: {} job specs in {FILES} files, {} threads available",
        FILES * PER_FILE,
        std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
    );

    // Files, read once: parsing alone, without the file system.
    let texts: Vec<(std::path::PathBuf, String)> = (0..FILES)
        .map(|f| {
            let name = format!("s{f:04}.yaml");
            let text = std::fs::read_to_string(dir.path().join(&name)).unwrap();
            (name.into(), text)
        })
        .collect();

    let mut parse = Vec::new();
    for _ in 0..repeat() {
        let t = Instant::now();
        for (_, text) in &texts {
            let docs = pgsched::spec::yaml::parse_documents(text).unwrap();
            assert_eq!(docs.len(), PER_FILE);
        }
        parse.push(t.elapsed());
    }
    stats("parse_documents (1 thread)", &mut parse);

    let mut load = Vec::new();
    let mut cpu = Vec::new();
    for _ in 0..repeat() {
        let (t, c) = (Instant::now(), cpu_time());
        let loaded = pgsched::spec::load_dir(dir.path());
        load.push(t.elapsed());
        cpu.push(cpu_time().checked_sub(c).unwrap());
        assert!(loaded.is_valid(), "{:?}", loaded.errors.first());
        assert_eq!(loaded.objects.len(), FILES * PER_FILE);
    }
    stats("load_dir", &mut load);
    stats("load_dir CPU (all threads)", &mut cpu);
}
