//! The tables of `pgsched status` and `pgsched runs`: fixed-width columns, UTC times, errors
//! cut to their first line.

use chrono::{DateTime, Utc};
use pgsched::status::first_line;
use pgsched::store::report::{ObjectStatus, RunRecord, StepRecord};
use std::collections::BTreeSet;

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// `pgsched status`: one line per object.
pub fn print_status(objects: &[ObjectStatus]) {
    println!(
        "{:<9} {:<28} {:<18} {:<20} {:<10} {:>6} {:>9} {:>6} {:>7}",
        "KIND",
        "NAME",
        "SCHEDULE",
        "NEXT RUN (UTC)",
        "LAST",
        "ACTIVE",
        "SUCCEEDED",
        "FAILED",
        "SKIPPED"
    );
    for o in objects {
        let schedule = match (&o.schedule, o.suspended) {
            (_, true) => "suspended".to_string(),
            (Some(s), _) => s.clone(),
            (None, _) => "on demand".to_string(),
        };
        println!(
            "{:<9} {:<28} {:<18} {:<20} {:<10} {:>6} {:>9} {:>6} {:>7}",
            o.kind,
            o.name,
            schedule,
            time(o.next_run_at),
            o.last_run.as_ref().map_or("-", |r| r.status.as_str()),
            o.active,
            o.succeeded,
            o.failed,
            o.skipped
        );
    }
}

/// `pgsched runs`: one line per run, newest first, with a chain run's steps under it.
pub fn print_runs(runs: &[RunRecord]) {
    println!(
        "{:>8} {:<10} {:>7} {:<9} {:<20} {:<20} {:>9} {:<18} ERROR",
        "ID", "STATUS", "ATTEMPT", "TRIGGER", "DUE (UTC)", "STARTED (UTC)", "MS", "WORKER"
    );
    for r in runs {
        print_run(r);
        print_steps(r);
    }
}

fn print_run(r: &RunRecord) {
    let error = r
        .error
        .as_deref()
        .map(|e| first_line(e, 80))
        .unwrap_or_default();
    println!(
        "{:>8} {:<10} {:>7} {:<9} {:<20} {:<20} {:>9} {:<18} {}",
        r.id,
        r.status,
        r.attempt,
        r.trigger,
        time(Some(r.due_at)),
        time(r.started_at),
        r.duration_ms.map_or_else(|| "-".into(), |d| d.to_string()),
        r.worker.as_deref().unwrap_or("-"),
        error
    );
}

/// A chain run: its steps, one line each, under the run (per attempt of the run when it ran
/// more than once). START is when the step started, from the attempt's start.
fn print_steps(r: &RunRecord) {
    if r.steps.is_empty() {
        return;
    }
    let attempts: BTreeSet<i32> = r.steps.iter().map(|s| s.run_attempt).collect();
    for run_attempt in attempts {
        let steps: Vec<_> = r
            .steps
            .iter()
            .filter(|s| s.run_attempt == run_attempt)
            .collect();
        let origin = steps.iter().filter_map(|s| s.started_at).min();
        if r.attempt > 1 || run_attempt > 1 {
            println!("{:>8} attempt {run_attempt}:", "");
        }
        println!(
            "{:>8} {:>3} {:<24} {:<18} {:>7} {:>9} {:>9} OUTPUT / ERROR",
            "", "#", "STEP", "STATUS", "ATTEMPT", "START", "MS"
        );
        for s in steps {
            print_step(s, origin);
        }
    }
}

fn print_step(s: &StepRecord, origin: Option<DateTime<Utc>>) {
    let status = match (s.status.as_str(), s.ignored) {
        ("failed", true) => "failed (ignored)".to_string(),
        ("rolled_back", _) => "rolled back".to_string(),
        (other, _) => other.to_string(),
    };
    let name = if s.on_failure {
        format!("{} (onFailure)", s.name)
    } else {
        s.name.clone()
    };
    let start = match (s.started_at, origin) {
        (Some(at), Some(origin)) => {
            format!("+{:.3}s", (at - origin).num_milliseconds() as f64 / 1000.0)
        }
        _ => "-".into(),
    };
    let detail = s
        .error
        .as_deref()
        .or(s.output.as_deref())
        .map(|t| first_line(t, 80))
        .unwrap_or_default();
    let line = format!(
        "{:>8} {:>3} {:<24} {:<18} {:>7} {:>9} {:>9} {}",
        "",
        s.position,
        name,
        status,
        s.attempt,
        start,
        s.duration_ms.map_or_else(|| "-".into(), |d| d.to_string()),
        detail
    );
    println!("{}", line.trim_end());
}
