//! What jobs and chains share: the `runnable_spec!` macro that declares their common fields
//! (in the serialized order the stored specs keep), the types of those fields, and
//! [`Scheduling`], the borrowed view of them that validation and the scheduler read.

use super::{ChainSpec, JobSpec};
use crate::duration::SpecDuration;
use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What to do when a running instance still runs at the next tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    /// Run side by side (bounded by `maxInstances`).
    Allow,
    /// Record the new tick as skipped.
    #[default]
    Forbid,
    /// Cancel the running instance and start the new one.
    Replace,
}

/// What to do with ticks missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum MissedRuns {
    /// Forget them; wait for the next tick.
    Skip,
    /// One catch-up run for all of them.
    #[default]
    RunOnce,
    /// Each missed tick, oldest first, at most 100.
    RunAll,
}

/// Exponential back-off between retries (with jitter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backoff {
    /// Delay before the first retry. Default `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<SpecDuration>,
    /// Longest delay between two attempts. Default `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<SpecDuration>,
    /// Each delay is the previous one times this factor (at least 1). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
}

/// Retrying failed runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Retries {
    /// How many times a failed run is retried. Default 0.
    #[serde(default)]
    pub limit: u32,
    /// The wait before each retry: from `initial`, multiplied by `factor` up to `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

/// Retention of run records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct History {
    /// Succeeded runs kept. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_succeeded: Option<u32>,
    /// Failed runs kept. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_failed: Option<u32>,
    /// Runs older than this are pruned whatever the counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_for: Option<SpecDuration>,
}

/// Declares a spec that runs on a schedule or on demand (a Job or a Chain), with the fields both
/// share, documented once: `schedule` to `suspend` first, then `$before` (a Job's task), then
/// `params` to `history`, then `$after` (a Chain's steps). The order is the serialized order,
/// which the stored specs keep.
macro_rules! runnable_spec {
    (
        $(#[$meta:meta])*
        pub struct $name:ident { $($before:tt)* } then { $($after:tt)* }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        pub struct $name {
            /// `min hour dom mon dow` (Vixie cron), 6 fields with leading seconds, `@daily` and
            /// the other macros, `@every 5m` (fixed rate) or `@after 5m` (after the previous
            /// run finished). Day-of-month also takes `L` (the last day), `$` (pg_cron's `L`),
            /// `15W` (the weekday nearest the 15th, within the month) and `LW` (the last
            /// weekday); day-of-week `5L` or `FRIL` (the last Friday) and `1#2` or `MON#2` (the
            /// second Monday; 1 to 5). Quartz's `L-3` is not supported. Absent: on-demand only.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub schedule: Option<String>,
            /// Run once at this RFC 3339 time, then complete. Exclusive with `schedule`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub run_at: Option<DateTime<FixedOffset>>,
            /// IANA time zone the cron fields are read in. Default `UTC`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub time_zone: Option<String>,
            /// No new instances while true; running ones finish.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub suspend: Option<bool>,
            $($before)*
            /// Default parameters; a trigger's parameters are overlaid on these.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub params: Option<Map<String, Value>>,
            /// A run that takes longer (for a chain: the whole chain) is cancelled and counts
            /// as failed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub timeout: Option<SpecDuration>,
            /// Retries of a failed run (of a chain: of the whole chain), with back-off.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub retries: Option<Retries>,
            /// `Allow`, `Forbid` (default) or `Replace`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub concurrency_policy: Option<ConcurrencyPolicy>,
            /// With `concurrencyPolicy: Allow`: how many may run at once.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub max_instances: Option<u32>,
            /// While this runs, no other instance of any job starts.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub exclusive: Option<bool>,
            /// `Skip`, `RunOnce` (default) or `RunAll`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub missed_runs: Option<MissedRuns>,
            /// A tick older than this is never started late; it is recorded as missed.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub starting_deadline: Option<SpecDuration>,
            /// How many finished runs to keep in `pgsched.runs`.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub history: Option<History>,
            $($after)*
        }
    };
}

pub(super) use runnable_spec;

/// The scheduling fields jobs and chains share, borrowed, so both are validated and
/// scheduled by the same code.
#[derive(Debug, Clone, Copy)]
pub struct Scheduling<'a> {
    /// The `schedule` expression; `None` means on demand only (or `runAt`).
    pub schedule: Option<&'a str>,
    /// The one-off `runAt` time, exclusive with `schedule`.
    pub run_at: Option<&'a DateTime<FixedOffset>>,
    /// The IANA zone cron fields are read in; `None` means UTC.
    pub time_zone: Option<&'a str>,
    /// `suspend`, `false` when absent: no new instances while true.
    pub suspend: bool,
    /// Default run parameters, which a trigger's parameters overlay.
    pub params: Option<&'a Map<String, Value>>,
    /// Limit on one run (a chain: the whole chain); `None` means no limit.
    pub timeout: Option<SpecDuration>,
    /// Retries of a failed run; `None` means no retry.
    pub retries: Option<&'a Retries>,
    /// `concurrencyPolicy`, `Forbid` when absent.
    pub concurrency_policy: ConcurrencyPolicy,
    /// With `Allow`, how many instances may run at once; `None` means no bound.
    pub max_instances: Option<u32>,
    /// `exclusive`, `false` when absent: while it runs, no other job's instance starts.
    pub exclusive: bool,
    /// `missedRuns`, `RunOnce` when absent.
    pub missed_runs: MissedRuns,
    /// A tick later than this is recorded as missed; `None` means never too late.
    pub starting_deadline: Option<SpecDuration>,
    /// Run-record retention; `None` means the defaults (100 succeeded, 100 failed).
    pub history: Option<&'a History>,
}

macro_rules! impl_scheduling {
    ($ty:ty) => {
        impl $ty {
            /// The scheduling fields, borrowed, with the boolean and policy defaults resolved.
            pub fn scheduling(&self) -> Scheduling<'_> {
                Scheduling {
                    schedule: self.schedule.as_deref(),
                    run_at: self.run_at.as_ref(),
                    time_zone: self.time_zone.as_deref(),
                    suspend: self.suspend.unwrap_or(false),
                    params: self.params.as_ref(),
                    timeout: self.timeout,
                    retries: self.retries.as_ref(),
                    concurrency_policy: self.concurrency_policy.unwrap_or_default(),
                    max_instances: self.max_instances,
                    exclusive: self.exclusive.unwrap_or(false),
                    missed_runs: self.missed_runs.unwrap_or_default(),
                    starting_deadline: self.starting_deadline,
                    history: self.history.as_ref(),
                }
            }
        }
    };
}
impl_scheduling!(JobSpec);
impl_scheduling!(ChainSpec);
