//! `kind: Job`: one task, on a schedule or on demand.

// `runnable_spec!` and `impl_has_task!` expand here, so the types their fields and impls name
// are imported here too.
use super::runnable::runnable_spec;
use super::task::impl_has_task;
use super::{Builtin, ConcurrencyPolicy, HasTask, History, MissedRuns, Retries};
use crate::duration::SpecDuration;
use chrono::{DateTime, FixedOffset};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

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
