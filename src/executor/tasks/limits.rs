//! The run's deadline and cancellation as every task runner sees them ([`Limits`]), fixed when
//! the task starts, and the outcome of a task they stopped.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::context::{Outcome, TaskContext, TaskOutcome};
use crate::duration::format_duration;

/// The run's deadline and cancellation, fixed when the task starts.
pub(super) struct Limits {
    pub(super) deadline: Option<Instant>,
    timeout: Option<Duration>,
    cancel: CancellationToken,
}

/// Why a task was stopped before it ended.
#[derive(Debug, Clone, Copy)]
pub(super) enum Interrupt {
    TimedOut,
    Cancelled,
}

impl Limits {
    pub(super) fn start(ctx: &TaskContext<'_>) -> Limits {
        Limits {
            deadline: ctx.timeout.map(|t| Instant::now() + t),
            timeout: ctx.timeout,
            cancel: ctx.cancel.clone(),
        }
    }

    /// Completes when the deadline passes or the run is cancelled.
    pub(super) async fn interrupted(&self) -> Interrupt {
        let deadline = async {
            match self.deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = self.cancel.cancelled() => Interrupt::Cancelled,
            _ = deadline => Interrupt::TimedOut,
        }
    }

    pub(super) fn already_interrupted(&self) -> Option<Interrupt> {
        if self.cancel.is_cancelled() {
            Some(Interrupt::Cancelled)
        } else if self.past_deadline() {
            Some(Interrupt::TimedOut)
        } else {
            None
        }
    }

    pub(super) fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    pub(super) fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Runs `work` unless the run is interrupted first (in which case `work` is dropped: only
    /// for work that is safe to abandon).
    pub(super) async fn bounded<T>(&self, work: impl Future<Output = T>) -> Result<T, Interrupt> {
        tokio::select! {
            biased;
            interrupt = self.interrupted() => Err(interrupt),
            value = work => Ok(value),
        }
    }

    pub(super) fn outcome(&self, interrupt: Interrupt, output: String) -> TaskOutcome {
        let (status, error) = match interrupt {
            Interrupt::TimedOut => (Outcome::TimedOut, self.timed_out_message()),
            Interrupt::Cancelled => (Outcome::Cancelled, "cancelled".to_string()),
        };
        TaskOutcome {
            status,
            error: Some(error),
            output,
            rows_affected: None,
        }
    }

    fn timed_out_message(&self) -> String {
        match self.timeout {
            Some(t) => format!("timed out after {}", format_duration(t)),
            None => "timed out".to_string(),
        }
    }
}
