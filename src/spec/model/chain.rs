//! `kind: Chain`: steps run as one instance, in order or as a graph, with `onFailure` steps
//! when it fails.

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
