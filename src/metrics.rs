//! The sidecar's Prometheus metrics: runs by job and outcome, run duration, start lateness,
//! reconciles, leadership, the backlog, and the Timeout loop's counters. Served in the
//! OpenMetrics text format by [`crate::http`].

use crate::executor::RunObserver;
use crate::timeout::TimeoutMetrics;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    job: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabel {
    job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the sidecar exports, cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    run_duration: HistogramFamily<JobLabel>,
    start_lateness: Histogram,
    reconciles: Family<ResultLabel, Counter>,
    reconcile_errors: Counter,
    reconcile_duration: Histogram,
    /// `pgsched_leader`: 1 while this process holds the reconcile leadership, else 0.
    pub leader: Gauge,
    /// `pgsched_ready`: 1 when `/readyz` would answer ready, else 0.
    pub ready: Gauge,
    /// `pgsched_pending_runs`: runs due and waiting for a worker, database-wide.
    pub pending_runs: Gauge,
    /// `pgsched_spec_errors`: errors in the spec directory at the last look.
    pub spec_errors: Gauge,
    /// `pgsched_spec_files`: spec files in the directory at the last look.
    pub spec_files: Gauge,
}

fn duration_histogram() -> Histogram {
    // 1 ms to about 9 hours: SQL one-liners and nightly batch jobs alike.
    Histogram::new(exponential_buckets(0.001, 4.0, 13))
}

impl Metrics {
    /// The metrics, with the Timeout loop's counters read at every scrape.
    pub fn new(timeouts: Arc<TimeoutMetrics>) -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::default(),
            runs: Family::default(),
            run_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            // 100 µs to about 100 s: on time, a poll interval late, or after downtime.
            start_lateness: Histogram::new(exponential_buckets(0.0001, 4.0, 11)),
            reconciles: Family::default(),
            reconcile_errors: Counter::default(),
            reconcile_duration: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            leader: Gauge::default(),
            ready: Gauge::default(),
            pending_runs: Gauge::default(),
            spec_errors: Gauge::default(),
            spec_files: Gauge::default(),
        };
        metrics.register(timeouts);
        metrics
    }

    /// Registers every metric under its name and help; the text lists them in this order.
    fn register(&mut self, timeouts: Arc<TimeoutMetrics>) {
        let registry = &mut self.registry;
        registry.register(
            "pgsched_runs",
            "Run attempts finished by this process, by job and outcome (pending: will be retried)",
            self.runs.clone(),
        );
        registry.register(
            "pgsched_run_duration_seconds",
            "How long run attempts took, by job",
            self.run_duration.clone(),
        );
        registry.register(
            "pgsched_run_start_lateness_seconds",
            "From when a run was due to when this process started it",
            self.start_lateness.clone(),
        );
        registry.register(
            "pgsched_reconciles",
            "Reconciles by result: applied, unchanged, invalid (spec errors), check_failed, refused (would delete everything), error",
            self.reconciles.clone(),
        );
        registry.register(
            "pgsched_reconcile_errors",
            "Reconciles that did not apply: spec errors, failed checks, refusals and database errors",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "pgsched_reconcile_duration_seconds",
            "How long a reconcile took: load, plan, checks and apply",
            self.reconcile_duration.clone(),
        );
        registry.register(
            "pgsched_leader",
            "1 while this process holds the reconcile leadership",
            self.leader.clone(),
        );
        registry.register(
            "pgsched_ready",
            "1 when connected, migrated and reconciled at least once (what /readyz answers)",
            self.ready.clone(),
        );
        registry.register(
            "pgsched_pending_runs",
            "Runs due and waiting for a worker, in the whole database",
            self.pending_runs.clone(),
        );
        registry.register(
            "pgsched_spec_errors",
            "Errors in the spec directory at the last look (non-zero: nothing is being applied)",
            self.spec_errors.clone(),
        );
        registry.register(
            "pgsched_spec_files",
            "Spec files in the directory at the last look",
            self.spec_files.clone(),
        );
        registry.register_collector(Box::new(TimeoutCounters(timeouts)));
    }

    /// Counts one reconcile; `result` is one of the documented results.
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
        if result != "applied" && result != "unchanged" {
            self.reconcile_errors.inc();
        }
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl RunObserver for Metrics {
    fn started(&self, _job: &str, lateness: Duration) {
        self.start_lateness.observe(lateness.as_secs_f64());
    }
    fn finished(&self, job: &str, outcome: &str, took: Duration) {
        self.runs
            .get_or_create(&RunLabels {
                job: job.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        self.run_duration
            .get_or_create(&JobLabel {
                job: job.to_string(),
            })
            .observe(took.as_secs_f64());
    }
}

/// The Timeout loop keeps plain atomics (its benchmark reads them too); they are turned into
/// counters at scrape time.
#[derive(Debug)]
struct TimeoutCounters(Arc<TimeoutMetrics>);

impl prometheus_client::collector::Collector for TimeoutCounters {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let m = &self.0;
        for (name, help, value) in [
            (
                "pgsched_timeout_rows_expired",
                "Rows the Timeout loop expired (updated or deleted)",
                &m.rows_expired,
            ),
            (
                "pgsched_timeout_batches",
                "Expiry statements the Timeout loop ran",
                &m.batches,
            ),
            (
                "pgsched_timeout_failures",
                "Timeout expiries that failed (recorded as the Timeout's last_error)",
                &m.failures,
            ),
        ] {
            let counter = ConstCounter::new(value.load(Ordering::Relaxed));
            let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            counter.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_reconciles_show_in_the_text() {
        let m = Metrics::new(Arc::default());
        m.started("nightly", Duration::from_millis(3));
        m.finished("nightly", "succeeded", Duration::from_millis(812));
        m.reconciled("applied", Duration::from_millis(40));
        m.reconciled("invalid", Duration::from_millis(5));
        m.leader.set(1);
        let text = m.encode();
        assert!(
            text.contains(r#"pgsched_runs_total{job="nightly",outcome="succeeded"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pgsched_reconciles_total{result="invalid"} 1"#),
            "{text}"
        );
        assert!(text.contains("pgsched_reconcile_errors_total 1"), "{text}");
        assert!(text.contains("pgsched_leader 1"), "{text}");
        assert!(
            text.contains("pgsched_timeout_rows_expired_total 0"),
            "{text}"
        );
        assert!(
            text.contains(r#"pgsched_run_duration_seconds_count{job="nightly"} 1"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
