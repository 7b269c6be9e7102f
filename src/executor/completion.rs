//! The completion loop: finished attempts reach `pgsched.runs` in batches, and the observer
//! hears of each once it is recorded.

use std::time::Duration;

use tokio::sync::mpsc;

use super::observer::Observer;
use super::pool::{is_read_only, pool_error};
use crate::backoff::Backoff;
use crate::store::runs::{self, Completion};

/// An attempt that ended, on its way to the table.
pub(super) struct Finished {
    pub(super) completion: Completion,
    pub(super) job: String,
    pub(super) took: Duration,
    /// Recorded already, in the transaction of a SQL task's writes: only observers are told.
    pub(super) recorded: bool,
}

/// Writes finished attempts in batches: whatever finished while the previous batch was being
/// written goes into the next statement. The observer hears of each attempt only once its
/// batch is committed, so that what it does next (the sidecar refreshes the status files) sees
/// the run finished in the tables.
pub(super) async fn complete_loop(
    pool: deadpool_postgres::Pool,
    worker: String,
    observer: Observer,
    mut rx: mpsc::UnboundedReceiver<Finished>,
) {
    let mut batch = Vec::new();
    let mut told = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(Finished {
            completion,
            job,
            took,
            recorded,
        }) = next.take()
        {
            told.push((job, completion.status, took));
            if !recorded {
                batch.push(completion);
            }
            if told.len() < 1000 {
                next = rx.try_recv().ok();
            }
        }
        // Even when every run of the batch is recorded already: the batch's one wake-up.
        write_batch(&pool, &worker, &batch).await;
        if let Some(o) = &observer.0 {
            for (job, status, took) in told.drain(..) {
                o.finished(&job, status.as_str(), took);
            }
        }
        batch.clear();
        told.clear();
    }
}

/// Records `batch`, retrying with back-off until it is recorded.
async fn write_batch(pool: &deadpool_postgres::Pool, worker: &str, batch: &[Completion]) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    loop {
        let result = async {
            let mut client = pool.get().await.map_err(pool_error)?;
            runs::complete(&mut client, worker, batch).await
        }
        .await;
        match result {
            Ok(()) => break,
            Err(e) => {
                // Keep the outcomes and try again: losing them would leave the runs to be
                // recovered as lost and run twice.
                tracing::warn!(error = %e, runs = batch.len(), "could not record finished runs; retrying");
                tokio::time::sleep(backoff.next_wait()).await;
                if is_read_only(&e) {
                    pool.retain(|_, _| false);
                }
            }
        }
    }
}
