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
//! | `driftless_scan_runs_total` | counter | `namespace`, `scan`, `result` |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
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

/// Labels of a DriftScan's runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    /// Namespace of the DriftScan.
    pub namespace: String,
    /// DriftScan.
    pub scan: String,
    /// One of [`RUN_RESULTS`].
    pub result: String,
}

/// The `result` label values of `driftless_scan_runs_total`, with the Event reason each counts.
pub const RUN_RESULTS: [(&str, &str); 4] = [
    ("succeeded", "RunSucceeded"),
    ("failed", "RunFailed"),
    ("timed_out", "RunTimedOut"),
    ("cancelled", "RunCancelled"),
];

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
    /// Runs that ended, or could not start, by result.
    pub runs: Family<RunLabels, Counter>,
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
            runs: Family::default(),
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
        registry.register(
            "scan_runs",
            "DriftScan runs that ended or could not start, by result (succeeded, failed, timed_out, cancelled)",
            m.runs.clone(),
        );
        m
    }

    /// Creates the run counters of a DriftScan at 0, so that its first failure is an increase.
    pub fn known_scan(&self, namespace: &str, scan: &str) {
        for (result, _) in RUN_RESULTS {
            // Creating the series is the point; the returned read guard is not needed.
            drop(
                self.runs
                    .get_or_create(&run_labels(namespace, scan, result)),
            );
        }
    }

    /// Counts a run Event (`RunSucceeded`, `RunFailed`, `RunTimedOut`, `RunCancelled`); other
    /// reasons are not run results.
    pub fn run_event(&self, namespace: &str, scan: &str, reason: &str) {
        if let Some((result, _)) = RUN_RESULTS.iter().find(|(_, r)| *r == reason) {
            self.runs
                .get_or_create(&run_labels(namespace, scan, result))
                .inc();
        }
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

fn run_labels(namespace: &str, scan: &str, result: &str) -> RunLabels {
    RunLabels {
        namespace: namespace.into(),
        scan: scan.into(),
        result: result.into(),
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

    #[test]
    fn run_results_start_at_zero_and_count_run_events() {
        let mut registry = Registry::with_prefix("driftless");
        let m = ScanMetrics::register(&mut registry);
        m.known_scan("ns", "infra");
        m.run_event("ns", "infra", "RunFailed");
        m.run_event("ns", "infra", "RunTimedOut");
        m.run_event("ns", "infra", "RunStarted");
        m.run_event("ns", "infra", "ScheduleSkipped");
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for (result, value) in [
            ("succeeded", 0),
            ("failed", 1),
            ("timed_out", 1),
            ("cancelled", 0),
        ] {
            let line = format!(
                r#"driftless_scan_runs_total{{namespace="ns",scan="infra",result="{result}"}} {value}"#
            );
            assert!(out.contains(&line), "{line}\n{out}");
        }
        assert_eq!(
            out.matches("driftless_scan_runs_total{").count(),
            4,
            "{out}"
        );
    }
}
