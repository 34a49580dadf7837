//! Prometheus metrics of DriftScan.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `driftless_scan_queue_depth` | gauge | |
//! | `driftless_scan_jobs_active` | gauge | |
//! | `driftless_scan_wait_seconds` | histogram | |
//! | `driftless_scan_duration_seconds` | histogram | |
//! | `driftless_drift_items` | gauge | `namespace`, `scan`, `stack` |
//! | `driftless_drift_state` | gauge (1 for the current state) | `namespace`, `scan`, `stack`, `state` |
//! | `driftless_scan_oldest_running_unit_seconds` | gauge | |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a stack.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StackLabels {
    /// Namespace of the DriftScan.
    pub namespace: String,
    /// DriftScan.
    pub scan: String,
    /// Stack path.
    pub stack: String,
}

/// Labels of a stack's drift state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Namespace of the DriftScan.
    pub namespace: String,
    /// DriftScan.
    pub scan: String,
    /// Stack path.
    pub stack: String,
    /// `InSync`, `Drifted` or `Error`.
    pub state: String,
}

/// The DriftScan metrics.
#[derive(Clone, Debug)]
pub struct ScanMetrics {
    /// Units waiting for a Job.
    pub queue_depth: Gauge,
    /// Scan Jobs not finished.
    pub jobs_active: Gauge,
    /// Time from a run's start to its Job's creation, per unit.
    pub wait_seconds: Histogram,
    /// Duration of finished runs.
    pub duration_seconds: Histogram,
    /// Drift items of each stack's latest report.
    pub drift_items: Family<StackLabels, Gauge>,
    /// 1 for each stack's current drift state.
    pub drift_state: Family<StateLabels, Gauge>,
    /// Age of the oldest running unit (0 when none).
    pub oldest_running_seconds: Gauge,
}

impl ScanMetrics {
    /// Creates the metrics and registers them in `registry` (names are prefixed `driftless_`
    /// by the caller's registry prefix, or not at all for a root registry).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            queue_depth: Gauge::default(),
            jobs_active: Gauge::default(),
            wait_seconds: Histogram::new(exponential_buckets(0.1, 2.0, 16)),
            duration_seconds: Histogram::new(exponential_buckets(1.0, 2.0, 16)),
            drift_items: Family::default(),
            drift_state: Family::default(),
            oldest_running_seconds: Gauge::default(),
        };
        registry.register(
            "scan_queue_depth",
            "DriftScan units waiting for a Job (also those whose run's images are being resolved)",
            m.queue_depth.clone(),
        );
        registry.register(
            "scan_jobs_active",
            "DriftScan Jobs not finished",
            m.jobs_active.clone(),
        );
        registry.register(
            "scan_wait_seconds",
            "Time units waited between their run's start and their Job",
            m.wait_seconds.clone(),
        );
        registry.register(
            "scan_duration_seconds",
            "Duration of finished DriftScan runs",
            m.duration_seconds.clone(),
        );
        registry.register(
            "drift_items",
            "Drift items in each stack's latest DriftReport",
            m.drift_items.clone(),
        );
        registry.register(
            "drift_state",
            "1 for the current drift state of each stack",
            m.drift_state.clone(),
        );
        registry.register(
            "scan_oldest_running_unit_seconds",
            "Age of the oldest running DriftScan unit",
            m.oldest_running_seconds.clone(),
        );
        m
    }

    /// Sets the drift gauges of one stack; the other states of the stack are set to 0.
    pub fn set_stack(&self, namespace: &str, scan: &str, stack: &str, state: &str, items: i64) {
        let labels = StackLabels {
            namespace: namespace.into(),
            scan: scan.into(),
            stack: stack.into(),
        };
        self.drift_items.get_or_create(&labels).set(items);
        for s in ["InSync", "Drifted", "Error"] {
            self.drift_state
                .get_or_create(&StateLabels {
                    namespace: namespace.into(),
                    scan: scan.into(),
                    stack: stack.into(),
                    state: s.into(),
                })
                .set(i64::from(s == state));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let mut registry = Registry::with_prefix("driftless");
        let m = ScanMetrics::register(&mut registry);
        m.queue_depth.set(7);
        m.set_stack("ns", "infra", "live/a", "Drifted", 3);
        m.wait_seconds.observe(0.3);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("driftless_scan_queue_depth 7"), "{out}");
        assert!(
            out.contains(r#"driftless_drift_items{namespace="ns",scan="infra",stack="live/a"} 3"#),
            "{out}"
        );
        assert!(out.contains(r#"driftless_drift_state{namespace="ns",scan="infra",stack="live/a",state="Drifted"} 1"#), "{out}");
        assert!(out.contains(r#"driftless_drift_state{namespace="ns",scan="infra",stack="live/a",state="InSync"} 0"#), "{out}");
        assert!(out.contains("driftless_scan_wait_seconds_count 1"), "{out}");
        assert!(
            out.contains("driftless_scan_oldest_running_unit_seconds 0"),
            "{out}"
        );
    }
}
