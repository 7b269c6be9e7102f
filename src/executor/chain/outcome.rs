//! What a chain's run records as its own outcome: which step failed and why ([`Failure`], also
//! what the `onFailure` steps are told), the run's status and error message, the rows the SQL
//! steps affected, and the one-line summary of its steps that is the run's output.

use super::step::{StepEnd, Stop};
use crate::executor::tasks::{Outcome, TaskOutcome};
use crate::store::chains::StepRow;
use crate::store::states::StepStatus;

/// What failed, for the run's error and the onFailure steps' parameters.
pub(super) struct Failure {
    /// The step that stopped the chain; `None` when the COMMIT failed.
    pub(super) step: Option<String>,
    pub(super) error: String,
    pub(super) end: StepEnd,
}

/// The chain's failure, if any: the step that stopped it, or else a failed COMMIT.
pub(super) fn failure_of(
    stop: Option<&Stop>,
    commit_error: Option<String>,
    rows: &[StepRow],
) -> Option<Failure> {
    match (stop, commit_error) {
        (Some(s), _) => Some(Failure {
            step: Some(rows[s.step].name.clone()),
            error: rows[s.step]
                .error
                .clone()
                .unwrap_or_else(|| "failed".into()),
            end: s.end,
        }),
        (None, Some(e)) => Some(Failure {
            step: None,
            error: e,
            end: StepEnd::Failed { ignored: false },
        }),
        (None, None) => None,
    }
}

/// The run's outcome from every step's record (the onFailure steps' too), how the chain
/// failed and how its onFailure steps failed. `budget` names the chain's time in messages.
pub(super) fn chain_outcome(
    rows: &[StepRow],
    failure: Option<Failure>,
    handler_failure: Option<String>,
    budget: &str,
) -> TaskOutcome {
    let rows_affected = rows
        .iter()
        .filter(|r| !r.on_failure && r.status == StepStatus::Succeeded)
        .filter_map(|r| r.rows_affected)
        .reduce(i64::saturating_add);
    let output = summary(rows);
    let Some(Failure {
        step: failed_step,
        error,
        end,
    }) = failure
    else {
        return TaskOutcome {
            status: Outcome::Succeeded,
            error: None,
            output,
            rows_affected,
        };
    };
    let mut message = match (end, &failed_step) {
        (StepEnd::ChainTimedOut, Some(step)) => {
            format!("timed out: {budget} passed during step `{step}`")
        }
        (StepEnd::Cancelled, Some(step)) => format!("cancelled during step `{step}`"),
        (_, Some(step)) => format!("step `{step}` failed: {error}"),
        (_, None) => error,
    };
    if let Some(more) = handler_failure {
        message.push_str("; ");
        message.push_str(&more);
    }
    TaskOutcome {
        status: match end {
            StepEnd::ChainTimedOut => Outcome::TimedOut,
            StepEnd::Cancelled => Outcome::Cancelled,
            _ => Outcome::Failed,
        },
        error: Some(message),
        output,
        rows_affected,
    }
}

/// `3 steps: 2 succeeded, 1 failed (ignored)`, and the onFailure steps likewise.
fn summary(rows: &[StepRow]) -> String {
    fn counts(rows: &[&StepRow]) -> String {
        let count = |f: &dyn Fn(&StepRow) -> bool| rows.iter().filter(|r| f(r)).count();
        let parts = [
            (count(&|r| r.status == StepStatus::Succeeded), "succeeded"),
            (
                count(&|r| r.status == StepStatus::Failed && !r.ignored),
                "failed",
            ),
            (
                count(&|r| r.status == StepStatus::Failed && r.ignored),
                "failed (ignored)",
            ),
            (
                count(&|r| r.status == StepStatus::RolledBack),
                "rolled back",
            ),
            (count(&|r| r.status == StepStatus::Cancelled), "cancelled"),
            (count(&|r| r.status == StepStatus::Skipped), "skipped"),
            (
                count(&|r| matches!(r.status, StepStatus::Pending | StepStatus::Running)),
                "unfinished",
            ),
        ];
        parts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
    let main: Vec<&StepRow> = rows.iter().filter(|r| !r.on_failure).collect();
    let handlers: Vec<&StepRow> = rows.iter().filter(|r| r.on_failure).collect();
    let mut text = format!(
        "{} step{}: {}",
        main.len(),
        if main.len() == 1 { "" } else { "s" },
        counts(&main)
    );
    if !handlers.is_empty() {
        text.push_str(&format!("; onFailure: {}", counts(&handlers)));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: StepStatus, ignored: bool, on_failure: bool) -> StepRow {
        StepRow {
            status,
            ignored,
            ..StepRow::pending(1, "x", on_failure)
        }
    }

    #[test]
    fn the_summary_counts_steps_by_outcome() {
        let rows = [
            row(StepStatus::Succeeded, false, false),
            row(StepStatus::Failed, true, false),
            row(StepStatus::Succeeded, false, false),
        ];
        assert_eq!(summary(&rows), "3 steps: 2 succeeded, 1 failed (ignored)");
        let rows = [
            row(StepStatus::RolledBack, false, false),
            row(StepStatus::Failed, false, false),
            row(StepStatus::Skipped, false, false),
            row(StepStatus::Succeeded, false, true),
        ];
        assert_eq!(
            summary(&rows),
            "3 steps: 1 failed, 1 rolled back, 1 skipped; onFailure: 1 succeeded"
        );
        assert_eq!(
            summary(&[row(StepStatus::Succeeded, false, false)]),
            "1 step: 1 succeeded"
        );
    }
}
