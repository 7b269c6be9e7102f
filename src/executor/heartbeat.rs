//! The heartbeat loop: beats for this worker's runs, acts on cancellation requests the beat
//! returns, recovers the runs of workers that stopped beating, and prunes run history.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::in_flight::{CancelReason, InFlight};
use super::pool::pool_error;
use crate::store::runs;
use crate::store::StoreError;

/// This machine's name, as `pgsched.workers` records it (and the default worker name starts
/// with).
pub(super) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Beats for this worker's runs, acts on cancellation requests, recovers lost runs and prunes
/// history, every heartbeat interval.
pub(super) async fn heartbeat_loop(
    pool: deadpool_postgres::Pool,
    worker: String,
    heartbeat: Duration,
    in_flight: Arc<InFlight>,
    stop: CancellationToken,
) {
    let host = hostname();
    let pid = std::process::id() as i32;
    let stale_ms = (heartbeat * 3).as_millis() as i64;
    let mut beats: u64 = 0;
    loop {
        let result = async {
            let client = pool.get().await.map_err(pool_error)?;
            for id in runs::heartbeat(&**client, &worker, &host, pid).await? {
                in_flight.cancel(id, CancelReason::Replaced);
            }
            let (retried, lost) = runs::recover_lost(&**client, stale_ms).await?;
            if retried + lost > 0 {
                tracing::warn!(retried, lost, "recovered runs whose worker stopped beating");
            }
            // History is pruned about once a minute, in small batches.
            if beats % (60 / heartbeat.as_secs().clamp(1, 60)).max(1) == 0 {
                runs::prune_history(&**client, 1000).await?;
            }
            Ok::<_, StoreError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        beats += 1;
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(heartbeat) => {}
        }
    }
}
