//! Who is told about the runs this process starts and finishes ([`RunObserver`]; the sidecar's
//! /metrics), and the optional holder of one that the executor's config carries.

use std::sync::Arc;
use std::time::Duration;

/// Told about every run this process starts and finishes: the sidecar's /metrics.
pub trait RunObserver: Send + Sync + 'static {
    /// A run started `lateness` after it was due.
    fn started(&self, job: &str, lateness: Duration);
    /// An attempt ended: `outcome` is the run's status (`succeeded`, `failed`, `cancelled`,
    /// `pending` for an attempt that will be retried) after `took`.
    fn finished(&self, job: &str, outcome: &str, took: Duration);
}

/// An optional [`RunObserver`], so the config stays `Debug` and `Clone`.
#[derive(Clone, Default)]
pub struct Observer(pub Option<Arc<dyn RunObserver>>);

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Observer(Some)"
        } else {
            "Observer(None)"
        })
    }
}
