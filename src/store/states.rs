//! The statuses the tables record, as types: a run's (`pgsched.runs.status`), a chain step's
//! (`pgsched.run_steps.status`), what made a run (`pgsched.runs.trigger`) and where a job's
//! ticking stands (`pgsched.jobs.tick_state`). They convert to and from the database's text (and JSON, for
//! the batched statements that pass rows as `jsonb_to_recordset`), so that a misspelt status
//! does not compile, and the CHECK constraints of the migrations list the same words.

use serde::{Deserialize, Serialize};
use std::fmt;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

macro_rules! text_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }

        impl $name {
            /// Every status, in the order the table's CHECK constraint lists them.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word the table stores.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // pad, not write_str: tables align statuses with `{:<10}`.
                f.pad(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownStatus;
            fn from_str(s: &str) -> Result<$name, UnknownStatus> {
                match s {
                    $($text => Ok($name::$variant),)*
                    other => Err(UnknownStatus(other.to_string())),
                }
            }
        }

        impl ToSql for $name {
            fn to_sql(
                &self,
                ty: &Type,
                out: &mut bytes::BytesMut,
            ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
                self.as_str().to_sql(ty, out)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as ToSql>::accepts(ty)
            }
            tokio_postgres::types::to_sql_checked!();
        }

        impl<'a> FromSql<'a> for $name {
            fn from_sql(
                ty: &Type,
                raw: &'a [u8],
            ) -> Result<$name, Box<dyn std::error::Error + Sync + Send>> {
                Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
            }
            fn accepts(ty: &Type) -> bool {
                <&str as FromSql>::accepts(ty)
            }
        }
    };
}

/// A status word the tables should never hold (a database written by a newer pgsched).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown status {0:?}")]
pub struct UnknownStatus(pub String);

text_enum! {
    /// What became of a run (`pgsched.runs.status`).
    pub enum RunStatus {
        /// Waiting to be claimed, at or after its due time (also a retry waiting).
        Pending = "pending",
        /// Claimed by a worker, which beats for it.
        Running = "running",
        /// Its task (or every step of its chain) succeeded.
        Succeeded = "succeeded",
        /// Failed after its retries.
        Failed = "failed",
        /// Not started: a concurrency policy (`Forbid`) said no.
        Skipped = "skipped",
        /// A tick too late to start (`startingDeadline`, `missedRuns: Skip`).
        Missed = "missed",
        /// Cancelled: replaced (`concurrencyPolicy: Replace`) or by request.
        Cancelled = "cancelled",
        /// Its worker stopped beating and no retries were left.
        Lost = "lost",
    }
}

impl RunStatus {
    /// Whether the run is over (nothing will change it any more).
    pub const fn is_finished(self) -> bool {
        !matches!(self, RunStatus::Pending | RunStatus::Running)
    }
}

text_enum! {
    /// What became of one step of a chain run (`pgsched.run_steps.status`).
    pub enum StepStatus {
        /// Not started yet.
        Pending = "pending",
        /// Running now.
        Running = "running",
        /// Succeeded.
        Succeeded = "succeeded",
        /// Failed after its own retries (ignored when `ignoreError` said so).
        Failed = "failed",
        /// Not run: a step it needs did not succeed, or the chain stopped before it.
        Skipped = "skipped",
        /// Cancelled with its run.
        Cancelled = "cancelled",
        /// Succeeded inside the chain's transaction, which was then rolled back.
        RolledBack = "rolled_back",
    }
}

text_enum! {
    /// What made a run (`pgsched.runs.trigger`).
    pub enum RunTrigger {
        /// A tick of the job's schedule, on time.
        Schedule = "schedule",
        /// A tick missed while no replica ran, run late (`missedRuns: RunOnce` or `RunAll`).
        Catchup = "catchup",
        /// `pgsched trigger`, `pgsched.trigger(...)` or `pgsched.trigger_many(...)`.
        Manual = "manual",
        /// A Timeout's expiry batch.
        Timeout = "timeout",
    }
}

text_enum! {
    /// Where a job's ticking stands (`pgsched.jobs.tick_state`, with `next_run_at`).
    pub enum TickPhase {
        /// Just created or rescheduled: the next tick is computed afresh from now.
        New = "new",
        /// The next tick is `next_run_at`.
        Scheduled = "scheduled",
        /// `@after`: the next tick is computed when the current run finishes.
        AfterFinish = "after-finish",
        /// No tick will come again: `runAt` done, or a schedule that never fires again.
        Done = "done",
    }
}

text_enum! {
    /// How a job's runs are claimed (`pgsched.jobs.claim_class`, generated from the spec;
    /// [`crate::executor::policy::claim_class`] says the same from a parsed spec).
    pub enum ClaimClass {
        /// Allow, no maxInstances, no startingDeadline, not exclusive: claimed in batches.
        Free = "free",
        /// Forbid, Replace, maxInstances or startingDeadline: decided against the job's runs.
        Policy = "policy",
        /// Waits for everything else and holds everything else.
        Exclusive = "exclusive",
    }
}

text_enum! {
    /// How a SQL task's writes were committed (`pgsched.runs.effects`).
    pub enum Effects {
        /// In the transaction that recorded the run succeeded: exactly once.
        WithRun = "with-run",
        /// On their own, before the run was recorded: at least once.
        Separate = "separate",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_and_json() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in StepStatus::ALL {
            assert_eq!(s.as_str().parse::<StepStatus>(), Ok(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in RunTrigger::ALL {
            assert_eq!(s.as_str().parse::<RunTrigger>(), Ok(*s));
        }
        for s in TickPhase::ALL {
            assert_eq!(s.as_str().parse::<TickPhase>(), Ok(*s));
        }
        assert_eq!(
            "done".parse::<RunStatus>(),
            Err(UnknownStatus("done".into()))
        );
        assert!(RunStatus::Lost.is_finished() && !RunStatus::Running.is_finished());
    }

    /// The migrations' CHECK constraints allow exactly these words.
    #[test]
    fn the_check_constraints_list_the_same_statuses() {
        let init = include_str!("migrations/0001_init.sql");
        let chains = include_str!("migrations/0004_chains.sql");
        let listed = |sql: &str, after: &str| -> Vec<String> {
            let start = sql.find(after).expect("the constraint") + after.len();
            let list = &sql[start..start + sql[start..].find(')').unwrap()];
            list.split(',')
                .map(|w| w.trim().trim_matches('\'').to_string())
                .collect()
        };
        let executor = include_str!("migrations/0003_executor.sql");
        let runs = listed(init, "CHECK (status IN (");
        let steps = listed(chains, "CHECK (status IN (");
        let triggers = listed(init, "CHECK (trigger IN (");
        let phases = listed(executor, "CHECK (tick_state IN (");
        let effects = listed(
            include_str!("migrations/0005_queue.sql"),
            "CHECK (effects IN (",
        );
        assert_eq!(
            effects,
            Effects::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>()
        );
        let words = |all: &[&str]| {
            all.iter()
                .map(std::string::ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            runs,
            words(
                &RunStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            steps,
            words(
                &StepStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            triggers,
            words(
                &RunTrigger::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            )
        );
        assert_eq!(
            phases,
            words(
                &TickPhase::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
            )
        );
    }
}
