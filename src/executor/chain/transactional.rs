//! A chain with `transaction: true`: its steps run one after another, the SQL ones in one
//! [`Transaction`], committed when every step went on and rolled back when one stopped the
//! chain (or the COMMIT failed), and the SQL steps' records then say `rolled back`.

use super::step::{Phase, StepRunner, Stop};
use super::transaction::Transaction;
use crate::spec::{ChainSpec, Step};
use crate::store::chains::StepRow;
use crate::store::states::StepStatus;

/// Runs the chain's steps in its transaction and ends the transaction. Returns the step that
/// stopped the chain, or, when none did, why the transaction could not be committed.
pub(super) async fn run_in_transaction(
    runner: &StepRunner<'_, '_>,
    chain: &ChainSpec,
    rows: &mut [StepRow],
    phase: &Phase<'_>,
) -> (Option<Stop>, Option<String>) {
    let database = chain
        .steps
        .iter()
        .find(|s| s.sql.is_some())
        .and_then(|s| s.database.as_deref());
    let mut tx = Transaction::new(runner.ctx.databases, database);
    let stop = run_line(runner, &chain.steps, rows, phase, &mut tx).await;
    let mut commit_error = None;
    let rolled_back = match &stop {
        None => match tx.commit().await {
            Ok(()) => false,
            Err(e) => {
                commit_error = Some(format!("the transaction could not be committed: {e}"));
                true
            }
        },
        Some(_) => {
            tx.rollback().await;
            true
        }
    };
    if rolled_back && tx.began {
        for (row, step) in rows.iter_mut().zip(&chain.steps) {
            if step.sql.is_some() && row.status == StepStatus::Succeeded {
                row.status = StepStatus::RolledBack;
            }
        }
    }
    (stop, commit_error)
}

/// Runs steps one after another, SQL steps in `tx`. Returns the step that stopped them.
async fn run_line(
    runner: &StepRunner<'_, '_>,
    steps: &[Step],
    rows: &mut [StepRow],
    phase: &Phase<'_>,
    tx: &mut Transaction<'_>,
) -> Option<Stop> {
    for (i, step) in steps.iter().enumerate() {
        let (row, end) = runner
            .run_step(step, rows[i].clone(), phase, Some(&mut *tx))
            .await;
        rows[i] = row;
        if !end.lets_chain_go_on() {
            return Some(Stop { step: i, end });
        }
    }
    None
}
