//! The spec kinds as serde types: what a user may write under `spec:`.
//!
//! These types are the stored form too: `apply` keeps each object's spec as the JSON of these
//! structs. Optional fields stay `None` when the user leaves them out (defaults are resolved by
//! accessor methods), so a spec that spells out a default and one that omits it differ only
//! where the user wrote something different. Doc comments become the JSON Schema descriptions
//! that editors show, so they are written for users.
//!
//! Each kind has its own file (`job`, `chain`, `timeout`, `connection`); `runnable` holds the
//! fields jobs and chains share and `task` the task fields of jobs and chain steps. Here are
//! the envelope's types and the specs of all kinds together.

mod chain;
mod connection;
mod job;
mod runnable;
mod task;
mod timeout;

pub use chain::{ChainSpec, Step};
pub use connection::ConnectionSpec;
pub use job::JobSpec;
pub use runnable::{Backoff, ConcurrencyPolicy, History, MissedRuns, Retries, Scheduling};
pub use task::{Builtin, HasTask, HttpMethod, LogLevel, Task};
pub use timeout::TimeoutSpec;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
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
