//! The order steps run in: what each step waits for (its `needs` in a graph, the step before
//! it in a line), running steps as soon as what they wait for has finished, and the reason
//! recorded for each step that never ran.

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::step::{Phase, StepEnd, StepRunner, Stop};
use crate::spec::{ChainSpec, Step};
use crate::store::chains::StepRow;
use crate::store::states::StepStatus;

/// For each of a chain's steps, the steps it waits for: its `needs` in a graph, the step
/// before it in a line.
pub(super) fn needs(chain: &ChainSpec) -> Vec<Vec<usize>> {
    let steps = &chain.steps;
    if !chain.is_graph() {
        return line(steps.len());
    }
    let names = chain.step_names();
    steps
        .iter()
        .map(|s| {
            s.needs
                .iter()
                .flatten()
                // Validation guarantees every name is a step's.
                .filter_map(|n| names.iter().position(|x| x == n))
                .collect()
        })
        .collect()
}

/// What `count` steps that run one after another wait for: each the one before it.
pub(super) fn line(count: usize) -> Vec<Vec<usize>> {
    (0..count)
        .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
        .collect()
}

/// Runs steps as soon as what they need has finished, in parallel. After a step stops the
/// chain, no further step starts and the running ones finish. Returns the first step that
/// stopped the chain.
pub(super) async fn run_graph(
    runner: &StepRunner<'_, '_>,
    steps: &[Step],
    rows: &mut [StepRow],
    needs: &[Vec<usize>],
    phase: &Phase<'_>,
) -> Option<Stop> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Waiting,
        Running,
        Done(StepEnd),
    }
    let mut state = vec![State::Waiting; steps.len()];
    let mut stop: Option<Stop> = None;
    let mut running = FuturesUnordered::new();
    loop {
        if stop.is_none() {
            for i in 0..steps.len() {
                let ready = state[i] == State::Waiting
                    && needs[i]
                        .iter()
                        .all(|&j| matches!(state[j], State::Done(end) if end.lets_chain_go_on()));
                if ready {
                    state[i] = State::Running;
                    let row = rows[i].clone();
                    let step = &steps[i];
                    running.push(async move {
                        let (row, end) = runner.run_step(step, row, phase, None).await;
                        (i, row, end)
                    });
                }
            }
        }
        let Some((i, row, end)) = running.next().await else {
            break;
        };
        rows[i] = row;
        state[i] = State::Done(end);
        if !end.lets_chain_go_on() && stop.is_none() {
            stop = Some(Stop { step: i, end });
        }
    }
    stop
}

/// Records the steps that did not run as skipped, saying why. `graph_needs` is what each
/// step waited for when the steps ran as a graph (`None` for a line), so a step's reason can
/// name the step it waited for.
pub(super) fn skip_rest(
    rows: &mut [StepRow],
    stop: Option<&Stop>,
    graph_needs: Option<&[Vec<usize>]>,
) {
    let Some(stop) = stop else { return };
    let stopper = rows[stop.step].name.clone();
    let general = match stop.end {
        StepEnd::ChainTimedOut => "not run: the chain's time was up".to_string(),
        StepEnd::Cancelled => "not run: the run was cancelled".to_string(),
        _ if graph_needs.is_some() => {
            format!("not run: the chain stopped after step `{stopper}` failed")
        }
        _ => format!("not run: step `{stopper}` failed"),
    };
    let needs = graph_needs.unwrap_or_default();
    for i in 0..rows.len() {
        if rows[i].status != StepStatus::Pending {
            continue;
        }
        // In a graph, name the step it waited for that did not finish, if any.
        let reason = needs
            .get(i)
            .into_iter()
            .flatten()
            .find_map(|&j| match rows[j].status {
                StepStatus::Failed if !rows[j].ignored => Some(format!(
                    "not run: it needs `{}`, which failed",
                    rows[j].name
                )),
                StepStatus::Skipped | StepStatus::Pending => Some(format!(
                    "not run: it needs `{}`, which did not run",
                    rows[j].name
                )),
                StepStatus::Cancelled => Some(format!(
                    "not run: it needs `{}`, which was cancelled",
                    rows[j].name
                )),
                _ => None,
            })
            .unwrap_or_else(|| general.clone());
        rows[i].status = StepStatus::Skipped;
        rows[i].error = Some(reason);
    }
}
