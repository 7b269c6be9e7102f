//! The sidecar's HTTP endpoints: `/healthz` (the process answers), `/readyz` (connected,
//! migrated and reconciled at least once) and `/metrics` (Prometheus / OpenMetrics text).

use crate::metrics::Metrics;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What `/readyz` looks at, set by the controller as things happen.
#[derive(Debug, Default)]
pub struct Health {
    /// The last database round trip succeeded.
    pub connected: AtomicBool,
    /// The pgsched schema is at this binary's version.
    pub migrated: AtomicBool,
    /// A reconcile pass has completed (or this replica does not reconcile).
    pub reconciled: AtomicBool,
}

impl Health {
    /// Ready, or why not.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.connected.load(Ordering::Relaxed) {
            Err("not connected to the database")
        } else if !self.migrated.load(Ordering::Relaxed) {
            Err("the pgsched schema is not migrated yet")
        } else if !self.reconciled.load(Ordering::Relaxed) {
            Err("the spec directory has not been reconciled yet")
        } else {
            Ok(())
        }
    }
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves the endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(Shared { health, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let ready = s.health.readiness();
    s.metrics.ready.set(i64::from(ready.is_ok()));
    match ready {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn metrics_text(State(s): State<Shared>) -> impl IntoResponse {
    s.metrics.ready.set(i64::from(s.health.readiness().is_ok()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}
