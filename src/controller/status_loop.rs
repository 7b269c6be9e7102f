//! The status writer and its execute-only sibling: the loops that keep status files and the
//! backlog gauge current from the tables, each on a [`Session`] of its own.

use super::Shared;
use crate::status::StatusWriter;
use crate::store::report;
use crate::store::session::{Session, SessionOptions};
use crate::store::StoreError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Refreshes the status files after every reconcile and every `status_interval`, and the
/// backlog gauge with them.
pub(super) async fn status_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let config = &shared.config;
    let mut writer = StatusWriter::new(&config.dir, config.status_dir.as_deref());
    let mut session = Session::new(&config.executor.database_url, SessionOptions::default());
    // Rounds woken by finished runs keep this much time between them: at least a second, and
    // ten times what the last round took, so a busy executor costs status files at most a
    // tenth of the time, however many objects there are.
    let mut last_round = Duration::ZERO;
    let mut last_end = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = shared.status_wake.notified() => {}
            _ = shared.runs_finished.notified() => {
                let gap = (last_round * 10).max(Duration::from_secs(1));
                let wait = gap.saturating_sub(last_end.elapsed());
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            _ = tokio::time::sleep(config.status_interval) => {}
        }
        let round_started = Instant::now();
        let view = shared.view.lock().expect("view lock").clone();
        let Some(view) = view else { continue };
        let c = match session.client().await {
            Ok(c) => c,
            Err(e) => {
                shared.health.connected.store(false, Ordering::Relaxed);
                tracing::debug!(error = %e, "status files: no database connection");
                continue;
            }
        };
        let c = &*c;
        let read = async {
            let tables = report::status_of_everything(c).await?;
            let pending = report::pending_runs(c).await?;
            Ok::<_, StoreError>((tables, pending))
        };
        let (tables, pending) = match read.await {
            Ok(read) => read,
            Err(e) => {
                shared.health.connected.store(false, Ordering::Relaxed);
                tracing::warn!(error = %e, "cannot read the tables for the status files");
                session.disconnect();
                continue;
            }
        };
        shared.health.connected.store(true, Ordering::Relaxed);
        shared.metrics.pending_runs.set(pending);
        let last = shared.last.lock().expect("last lock").clone();
        let started = Instant::now();
        let report = tokio::task::block_in_place(|| {
            writer.update(&view, &tables, &last, chrono::Utc::now())
        });
        if report.written > 0 || report.removed > 0 {
            tracing::debug!(
                written = report.written,
                removed = report.removed,
                took = ?started.elapsed(),
                "status files updated"
            );
        }
        release_free_memory();
        last_round = round_started.elapsed();
        last_end = Instant::now();
    }
}

/// Hands memory freed after a look or a round of status files back to the system. glibc keeps
/// freed heap in its arenas (one per thread that allocated), so the peak of parsing a
/// directory on every core would otherwise stay resident for good.
pub(super) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// For an execute-only replica: keeps `connected` and the backlog gauge current.
pub(super) async fn backlog_loop(shared: Arc<Shared>, stop: CancellationToken) {
    let mut session = Session::new(
        &shared.config.executor.database_url,
        SessionOptions::default(),
    );
    loop {
        let pending = match session.client().await {
            Ok(c) => report::pending_runs(c).await,
            Err(e) => Err(e),
        };
        let ok = match pending {
            Ok(n) => {
                shared.metrics.pending_runs.set(n);
                true
            }
            Err(_) => {
                session.disconnect();
                false
            }
        };
        shared.health.connected.store(ok, Ordering::Relaxed);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(shared.config.status_interval) => {}
        }
    }
}
