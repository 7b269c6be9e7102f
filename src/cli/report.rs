//! What `pgsched plan`, `apply` and `validate` print: the plan (a diff, or JSON), the notes of
//! the checks, spec errors with their count, and the exit status each outcome promises.

use crate::Output;
use pgsched::reconcile::{self, Outcome};
use pgsched::{plan, spec};
use std::io::IsTerminal;
use std::process::ExitCode;

fn style() -> plan::Style {
    let colour = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    if colour {
        plan::Style::COLOR
    } else {
        plan::Style::PLAIN
    }
}

/// Prints a plan or apply outcome; returns the exit status the command promises.
pub fn report_outcome(outcome: Outcome, output: Output, applying: bool) -> ExitCode {
    match outcome {
        Outcome::Invalid(errors) => {
            print_spec_errors(&errors);
            eprintln!("Nothing was changed: fix the errors above first.");
            ExitCode::from(1)
        }
        Outcome::Planned(report) | Outcome::RefusedWipeOut(report) | Outcome::Applied(report)
            if report.has_errors() =>
        {
            print_report(&report, output);
            print_spec_errors(&report.checks.errors);
            eprintln!("Nothing was changed: the checks against the database failed.");
            ExitCode::from(1)
        }
        Outcome::RefusedWipeOut(report) => {
            print_report(&report, output);
            eprintln!(
                "Refused: this would delete every object pgsched manages ({}). If the spec directory \
                 is meant to be empty, run again with --allow-empty.",
                report.plan.managed_before
            );
            ExitCode::from(1)
        }
        Outcome::Planned(report) => {
            print_report(&report, output);
            if report.plan.deletes_everything() {
                eprintln!("Warning: this plan deletes every object pgsched manages; apply will refuse it without --allow-empty.");
            }
            if report.plan.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            }
        }
        Outcome::Applied(report) => {
            print_report(&report, output);
            if output == Output::Text && applying && !report.plan.is_empty() {
                let s = report.plan.summary();
                println!(
                    "Apply complete: {} added, {} changed, {} deleted.",
                    s.add, s.change, s.delete
                );
            }
            ExitCode::SUCCESS
        }
    }
}

fn print_report(report: &reconcile::PlanReport, output: Output) {
    match output {
        Output::Text => {
            print!("{}", plan::render_text(&report.plan, style()));
            if !report.checks.unchecked.is_empty() {
                println!("\nNot checked against the database:");
                for note in &report.checks.unchecked {
                    println!("  {note}");
                }
            }
            for note in &report.checks.notes {
                println!("\nNote: {note}");
            }
        }
        Output::Json => {
            let mut notes = std::collections::BTreeMap::new();
            notes.insert(
                "unchecked".to_string(),
                serde_json::json!(report.checks.unchecked),
            );
            notes.insert("notes".to_string(), serde_json::json!(report.checks.notes));
            notes.insert(
                "errors".to_string(),
                serde_json::json!(report
                    .checks
                    .errors
                    .iter()
                    .map(std::string::ToString::to_string)
                    .collect::<Vec<_>>()),
            );
            notes.insert(
                "deletesEverything".to_string(),
                serde_json::json!(report.plan.deletes_everything()),
            );
            println!(
                "{}",
                serde_json::to_string_pretty(&plan::render_json(&report.plan, &notes))
                    .expect("JSON serialises")
            );
        }
    }
}

/// Every spec error, then how many in how many files.
pub fn print_spec_errors(errors: &[spec::SpecError]) {
    for e in errors {
        eprintln!("{e}");
    }
    let files = errors
        .iter()
        .map(|e| &e.file)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    if !errors.is_empty() {
        eprintln!(
            "{} in {}",
            counted(errors.len(), "error"),
            counted(files, "file")
        );
    }
}

/// `1 file`, `2 files`.
pub fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
