//! The spec kinds as serde types: what a user may write under `spec:`.
//!
//! These types are the stored form too: `apply` keeps each object's spec as the JSON of these
//! structs. Optional fields stay `None` when the user leaves them out (defaults are resolved by
//! accessor methods), so a spec that spells out a default and one that omits it differ only
//! where the user wrote something different. Doc comments become the JSON Schema descriptions
//! that editors show, so they are written for users.

use crate::duration::SpecDuration;
use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The four kinds of object a spec file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// A single task on a schedule or on demand (`JobSpec`).
    Job,
    /// Steps run as one instance (`ChainSpec`).
    Chain,
    /// Rows that expire after a time limit (`TimeoutSpec`).
    Timeout,
    /// Another database SQL tasks may use (`ConnectionSpec`).
    Connection,
}

impl Kind {
    /// Every kind, in the order documents and CLI listings present them.
    pub const ALL: [Kind; 4] = [Kind::Job, Kind::Chain, Kind::Timeout, Kind::Connection];

    /// The name as written in `kind:` (`Job`, `Chain`, ...) and stored in `pgsched.jobs`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Job => "Job",
            Kind::Chain => "Chain",
            Kind::Timeout => "Timeout",
            Kind::Connection => "Connection",
        }
    }

    /// The lower-case form used in plan headers and CLI output: `job/nightly-vacuum`.
    pub fn slug(self) -> &'static str {
        match self {
            Kind::Job => "job",
            Kind::Chain => "chain",
            Kind::Timeout => "timeout",
            Kind::Connection => "connection",
        }
    }

    /// The kind spelled exactly as `as_str` writes it (case-sensitive); `None` for any other
    /// text.
    pub fn parse(text: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `metadata:` of every object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Unique per kind: lower-case letters, digits and `-`, starting and ending with a letter
    /// or digit, at most 63 characters.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Free-form labels, e.g. `team: payments`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

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

/// The level of a `log` built-in's line: `debug`, `info` (default), `warn` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Detail; in pgsched's log only when its log level includes debug.
    Debug,
    /// Normal messages (the default).
    Info,
    /// Something worth a look.
    Warn,
    /// Something went wrong.
    Error,
}

/// The method of an `http` built-in's request: `GET` (default), `POST`, `PUT`, `PATCH`,
/// `DELETE` or `HEAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET` (the default).
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `HEAD`.
    Head,
}

/// A task built into pgsched, chosen by `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "name", rename_all = "lowercase", deny_unknown_fields)]
pub enum Builtin {
    /// Wait, e.g. between two steps of a chain.
    Sleep {
        /// How long to wait (`500ms`, `30s`, `1h30m`).
        duration: SpecDuration,
    },
    /// Write a line to pgsched's log and to the run's output.
    Log {
        /// The line to write.
        message: String,
        /// `debug`, `info` (default), `warn` or `error`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<LogLevel>,
    },
    /// `pg_notify(channel, payload)` on the job's database.
    Notify {
        /// The channel to notify.
        channel: String,
        /// The payload (default: empty).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<String>,
    },
    /// An HTTP request; a status outside `expectStatus` (default 2xx) fails the run.
    Http {
        /// The URL to request (`http` or `https`).
        url: String,
        /// The method; default `GET`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<HttpMethod>,
        /// Request headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        /// The request body.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        /// The statuses that count as success; default any 2xx.
        #[serde(
            default,
            rename = "expectStatus",
            skip_serializing_if = "Option::is_none"
        )]
        expect_status: Option<Vec<u16>>,
    },
}

impl Builtin {
    /// The `name:` tag of this built-in (`sleep`, `log`, `notify` or `http`).
    pub fn name(&self) -> &'static str {
        match self {
            Builtin::Sleep { .. } => "sleep",
            Builtin::Log { .. } => "log",
            Builtin::Notify { .. } => "notify",
            Builtin::Http { .. } => "http",
        }
    }
}

/// The task of a job or a chain step, once validated: exactly one of the four.
#[derive(Debug, Clone, PartialEq)]
pub enum Task<'a> {
    /// The `sql` text, run on the job's (or step's) database.
    Sql(&'a str),
    /// A program run without a shell.
    Command {
        /// The program followed by its arguments.
        argv: &'a [String],
        /// Variables added to the child's environment.
        env: &'a BTreeMap<String, String>,
        /// Where the child starts; `None` keeps pgsched's own working directory.
        working_dir: Option<&'a str>,
    },
    /// A script run by `/bin/sh -c`.
    Shell {
        /// The script text.
        script: &'a str,
        /// Variables added to the child's environment.
        env: &'a BTreeMap<String, String>,
        /// Where the shell starts; `None` keeps pgsched's own working directory.
        working_dir: Option<&'a str>,
    },
    /// A task built into pgsched.
    Builtin(&'a Builtin),
}

/// The task fields, shared by jobs and chain steps. (Written out in each struct rather than
/// flattened, because serde cannot reject unknown fields through `flatten`.)
pub trait HasTask {
    /// The `sql` field, if set.
    fn sql(&self) -> Option<&str>;
    /// The `command` field (program and arguments), if set.
    fn command(&self) -> Option<&[String]>;
    /// The `shell` field, if set.
    fn shell(&self) -> Option<&str>;
    /// The `builtin` field, if set.
    fn builtin(&self) -> Option<&Builtin>;
    /// The `env` field (empty when absent); only `command` and `shell` tasks use it.
    fn env(&self) -> &BTreeMap<String, String>;
    /// The `workingDir` field, if set; only `command` and `shell` tasks use it.
    fn working_dir(&self) -> Option<&str>;

    /// The names of the task fields that are set, in the order the user reads them.
    fn task_fields_set(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.sql().is_some() {
            set.push("sql");
        }
        if self.command().is_some() {
            set.push("command");
        }
        if self.shell().is_some() {
            set.push("shell");
        }
        if self.builtin().is_some() {
            set.push("builtin");
        }
        set
    }

    /// The task, when exactly one task field is set (validation guarantees it for loaded specs).
    fn task(&self) -> Option<Task<'_>> {
        if self.task_fields_set().len() != 1 {
            return None;
        }
        if let Some(sql) = self.sql() {
            return Some(Task::Sql(sql));
        }
        if let Some(argv) = self.command() {
            return Some(Task::Command {
                argv,
                env: self.env(),
                working_dir: self.working_dir(),
            });
        }
        if let Some(script) = self.shell() {
            return Some(Task::Shell {
                script,
                env: self.env(),
                working_dir: self.working_dir(),
            });
        }
        self.builtin().map(Task::Builtin)
    }
}

macro_rules! impl_has_task {
    ($ty:ty) => {
        impl HasTask for $ty {
            fn sql(&self) -> Option<&str> {
                self.sql.as_deref()
            }
            fn command(&self) -> Option<&[String]> {
                self.command.as_deref()
            }
            fn shell(&self) -> Option<&str> {
                self.shell.as_deref()
            }
            fn builtin(&self) -> Option<&Builtin> {
                self.builtin.as_ref()
            }
            fn env(&self) -> &BTreeMap<String, String> {
                &self.env
            }
            fn working_dir(&self) -> Option<&str> {
                self.working_dir.as_deref()
            }
        }
    };
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
            /// run finished). Absent: on-demand only.
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

runnable_spec! {
    /// A task on a schedule, or on demand.
    pub struct JobSpec {
        /// SQL to run. With `$1` (the run's parameters as jsonb) it must be a single statement;
        /// without, several statements run as one batch.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub sql: Option<String>,
        /// A program and its arguments, run without a shell.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub command: Option<Vec<String>>,
        /// A script run by `/bin/sh -c`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub shell: Option<String>,
        /// A built-in task: `sleep`, `log`, `notify` or `http`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub builtin: Option<Builtin>,
        /// Environment of a `command` or `shell` task.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        pub env: BTreeMap<String, String>,
        /// Working directory of a `command` or `shell` task.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub working_dir: Option<String>,
        /// Name of a `Connection` to run SQL on another database.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub database: Option<String>,
    } then {}
}
impl_has_task!(JobSpec);

/// One step of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Step {
    /// Unique within the chain (steps and `onFailure` together); defaults to `step-<n>`
    /// (`on-failure-<n>` for `onFailure` steps), 1-based, in records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SQL to run; the run's parameters are `$1` (jsonb). With `transaction: true`, every SQL
    /// step runs in one transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sql: Option<String>,
    /// A program and its arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A script run by `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// A built-in task: `sleep`, `log`, `notify` or `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builtin: Option<Builtin>,
    /// Environment of a `command` or `shell` step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory of a `command` or `shell` step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Name of a `Connection` for this step's SQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// A step that takes longer is stopped and counts as failed (the chain's `timeout` still
    /// bounds the whole run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<SpecDuration>,
    /// A failure is recorded and the chain goes on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_error: Option<bool>,
    /// Retries of this step inside the run, with back-off, before it counts as failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// Names of steps that must finish first. Once any step of a chain has `needs`, the chain
    /// is a graph: each step waits only for its `needs` (a step without them starts at once),
    /// and steps whose needs are met run in parallel. Not with `transaction: true`, not on
    /// `onFailure` steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
}
impl_has_task!(Step);

impl Step {
    /// Whether the step has a non-empty `needs`.
    pub fn has_needs(&self) -> bool {
        self.needs.as_ref().is_some_and(|n| !n.is_empty())
    }
}

runnable_spec! {
    /// Steps run in order as one instance (or, with `needs`, as a graph).
    pub struct ChainSpec {} then {
        /// Every SQL step on one connection, in one transaction, committed at the end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub transaction: Option<bool>,
        /// The steps, run in order (or as a graph when a step has `needs`).
        pub steps: Vec<Step>,
        /// Steps run in order when the chain fails (after its transaction is rolled back), with
        /// the run's parameters plus `failedStep`, `error`, `attempt` and `willRetry`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub on_failure: Option<Vec<Step>>,
    }
}

impl ChainSpec {
    /// Whether the steps form a graph (some step has `needs`) rather than a line.
    pub fn is_graph(&self) -> bool {
        self.steps.iter().any(Step::has_needs)
    }

    /// The `onFailure` steps (none when absent).
    pub fn on_failure_steps(&self) -> &[Step] {
        self.on_failure.as_deref().unwrap_or(&[])
    }

    /// The name each step is recorded under: its `name`, or `step-<n>` (1-based).
    pub fn step_names(&self) -> Vec<String> {
        self.steps
            .iter()
            .enumerate()
            .map(|(i, s)| s.name.clone().unwrap_or_else(|| format!("step-{}", i + 1)))
            .collect()
    }

    /// The name each `onFailure` step is recorded under: its `name`, or `on-failure-<n>`.
    pub fn on_failure_names(&self) -> Vec<String> {
        self.on_failure_steps()
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.name
                    .clone()
                    .unwrap_or_else(|| format!("on-failure-{}", i + 1))
            })
            .collect()
    }
}

/// Rows of an application table that change state when a time limit passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TimeoutSpec {
    /// The table, as `schema.table` or `table` (schema `public`).
    pub table: String,
    /// A `timestamptz` or `timestamp` column the limit counts from.
    pub column: String,
    /// The time limit: a row expires when `column + after <= now()`.
    pub after: SpecDuration,
    /// A condition that must still hold when the row expires (re-checked atomically).
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub where_: Option<String>,
    /// Columns to set on expiry, e.g. `{status: expired}`; values are bound as parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, Value>>,
    /// Delete expired rows instead of updating them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete: Option<bool>,
    /// Rows changed per statement. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// No expiry while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,
    /// How many of the loop's run records (one per batch that expired rows) are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<History>,
}

/// Another database that SQL tasks may run on. Secrets are only ever referenced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// `postgres://user@host:5432/db?sslmode=require`, without a password.
    pub url: String,
    /// Name of an environment variable of the pgsched process that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_env: Option<String>,
    /// Path of a file (e.g. a mounted secret) that holds the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_from_file: Option<String>,
}

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

/// The spec of one object, by kind.
// Specs are few and long-lived; boxing the larger variants would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ObjectSpec {
    /// The spec of a `Job`.
    Job(JobSpec),
    /// The spec of a `Chain`.
    Chain(ChainSpec),
    /// The spec of a `Timeout`.
    Timeout(TimeoutSpec),
    /// The spec of a `Connection`.
    Connection(ConnectionSpec),
}

impl ObjectSpec {
    /// The kind this spec belongs to.
    pub fn kind(&self) -> Kind {
        match self {
            ObjectSpec::Job(_) => Kind::Job,
            ObjectSpec::Chain(_) => Kind::Chain,
            ObjectSpec::Timeout(_) => Kind::Timeout,
            ObjectSpec::Connection(_) => Kind::Connection,
        }
    }

    /// The scheduling fields of a job or chain; `None` for kinds that are never scheduled.
    pub fn scheduling(&self) -> Option<Scheduling<'_>> {
        match self {
            ObjectSpec::Job(j) => Some(j.scheduling()),
            ObjectSpec::Chain(c) => Some(c.scheduling()),
            _ => None,
        }
    }
}

/// What the executor runs: a job or a chain, read back from `pgsched.jobs`.
// Held one per run in flight; boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Runnable {
    /// A job: one task.
    Job(JobSpec),
    /// A chain: its steps.
    Chain(ChainSpec),
}

impl Runnable {
    /// Parses a `pgsched.jobs` row's kind and spec.
    pub fn from_row(kind: &str, spec: serde_json::Value) -> Option<Runnable> {
        match kind {
            "Job" => serde_json::from_value(spec).ok().map(Runnable::Job),
            "Chain" => serde_json::from_value(spec).ok().map(Runnable::Chain),
            _ => None,
        }
    }

    /// The scheduling fields of the job or chain.
    pub fn scheduling(&self) -> Scheduling<'_> {
        match self {
            Runnable::Job(j) => j.scheduling(),
            Runnable::Chain(c) => c.scheduling(),
        }
    }
}
