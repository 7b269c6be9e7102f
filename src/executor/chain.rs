//! Chains: steps run in order as one run (issue 5; being written).

use super::tasks::{Outcome, TaskContext, TaskOutcome};
use crate::spec::ChainSpec;

/// Runs a chain's steps and records each step's outcome.
pub async fn run_chain(
    _chain: &ChainSpec,
    _ctx: &TaskContext<'_>,
    _pool: &deadpool_postgres::Pool,
) -> TaskOutcome {
    TaskOutcome {
        status: Outcome::Failed,
        error: Some("chains are not executed yet".into()),
        output: String::new(),
        rows_affected: None,
    }
}
