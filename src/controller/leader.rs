//! Reconcile leadership in the sidecar: the loop that holds the lock of
//! [`crate::store::leader`] while it can, on a session of its own whose keepalives notice a
//! dead server within seconds, and tells the reconciler whether this replica leads.

use super::Shared;
use crate::store::leader;
use crate::store::session::{Keepalive, Session, SessionOptions};
use crate::store::StoreError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Holds the leadership lock while it can; tells the reconciler through `leading`.
pub(super) async fn lead(
    shared: Arc<Shared>,
    leading: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let config = &shared.config;
    let mut session = Session::new(
        &config.executor.database_url,
        SessionOptions {
            application_name: Some(leader::application_name(&config.executor.worker)),
            keepalive: Keepalive::Seconds,
            connect_timeout: Some(Duration::from_secs(5)),
            ..SessionOptions::default()
        },
    );
    let mut held = false;
    let mut first = true;
    loop {
        let step = async {
            let c = session.client().await?;
            if held {
                leader::still_leading(c).await
            } else {
                leader::try_lead(c).await
            }
        };
        // A database that stops answering must not leave us believing we lead.
        let step = tokio::time::timeout(Duration::from_secs(5), step);
        let now_held = match step.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the leadership check got no answer within 5 s".into(),
            ))
        }) {
            Ok(h) => h,
            Err(e) => {
                if held {
                    tracing::warn!(error = %e, "lost the leadership connection");
                } else {
                    tracing::debug!(error = %e, "cannot try the leadership");
                }
                session.disconnect();
                false
            }
        };
        if first {
            // The reconciler waits for this first answer, so a lone replica's first look
            // applies rather than only looking.
            first = false;
            held = now_held;
            if held {
                tracing::info!(worker = %config.executor.worker, "took the reconcile leadership");
            }
            shared.metrics.leader.set(i64::from(held));
            leading.send_replace(held);
        } else if now_held != held {
            held = now_held;
            if held {
                tracing::info!(worker = %config.executor.worker, "took the reconcile leadership");
            } else {
                tracing::warn!("gave up the reconcile leadership");
            }
            shared.metrics.leader.set(i64::from(held));
            let _ = leading.send(held);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(config.leader_retry) => {}
        }
    }
    // Dropping the connection releases the lock at once for the next replica.
    drop(session);
    shared.metrics.leader.set(0);
}
