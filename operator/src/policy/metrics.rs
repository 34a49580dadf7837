//! Prometheus metrics of the policy status controller.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `driftless_policy_status_writes_total` | counter | `kind` |
//! | `driftless_policy_status_write_errors_total` | counter | `kind` |
//! | `driftless_policies` | gauge | `kind`, `ready` (`True`, `False`) |
//! | `driftless_rollout_assignment_writes_total` | counter | |
//! | `driftless_rollout_gate_failures_total` | counter | `policy` |
//! | `driftless_rollout_nodes_updated` | gauge | `policy` |

use driftless_crds::drift_report::PolicyKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a policy kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `ApplyPolicy`, `FactsPolicy` or `LogPipeline`.
    pub kind: String,
}

/// Labels of the policies gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadyLabels {
    /// `ApplyPolicy`, `FactsPolicy` or `LogPipeline`.
    pub kind: String,
    /// Status of the `Ready` condition: `True` or `False`.
    pub ready: String,
}

/// Labels of a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The ApplyPolicy.
    pub policy: String,
}

/// The policy status metrics.
#[derive(Clone, Debug, Default)]
pub struct PolicyMetrics {
    /// Status writes (server-side apply to `/status`) that succeeded.
    pub status_writes: Family<KindLabels, Counter>,
    /// Status writes that failed (a conflict with a newer object included).
    pub status_write_errors: Family<KindLabels, Counter>,
    /// Policies by kind and the status of their computed `Ready` condition.
    pub policies: Family<ReadyLabels, Gauge>,
    /// Writes of node assignments (one per node whose assigned revisions changed).
    pub assignment_writes: Counter,
    /// Health gates that failed (a rollout turning Degraded or RolledBack).
    pub gate_failures: Family<PolicyLabels, Counter>,
    /// Targeted nodes assigned the newest revision.
    pub nodes_updated: Family<PolicyLabels, Gauge>,
}

impl PolicyMetrics {
    /// Creates the metrics and registers them in `registry` (names are prefixed `driftless_` by
    /// the caller's registry prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "policy_status_writes",
            "Status writes of ApplyPolicies, FactsPolicies and LogPipelines",
            m.status_writes.clone(),
        );
        registry.register(
            "policy_status_write_errors",
            "Failed status writes of ApplyPolicies, FactsPolicies and LogPipelines",
            m.status_write_errors.clone(),
        );
        registry.register(
            "policies",
            "Policies by kind and Ready condition",
            m.policies.clone(),
        );
        registry.register(
            "rollout_assignment_writes",
            "Writes of node revision assignments",
            m.assignment_writes.clone(),
        );
        registry.register(
            "rollout_gate_failures",
            "ApplyPolicy rollouts stopped by a failed health gate",
            m.gate_failures.clone(),
        );
        registry.register(
            "rollout_nodes_updated",
            "Targeted nodes assigned the newest revision of an ApplyPolicy",
            m.nodes_updated.clone(),
        );
        m
    }

    /// Counts a successful status write.
    pub fn written(&self, kind: PolicyKind) {
        self.status_writes.get_or_create(&kind_labels(kind)).inc();
    }

    /// Counts a failed status write.
    pub fn write_failed(&self, kind: PolicyKind) {
        self.status_write_errors
            .get_or_create(&kind_labels(kind))
            .inc();
    }

    /// Sets how many policies of `kind` are ready and not ready.
    pub fn set_ready(&self, kind: PolicyKind, ready: i64, not_ready: i64) {
        for (label, value) in [("True", ready), ("False", not_ready)] {
            self.policies
                .get_or_create(&ReadyLabels {
                    kind: kind.as_str().into(),
                    ready: label.into(),
                })
                .set(value);
        }
    }
}

fn kind_labels(kind: PolicyKind) -> KindLabels {
    KindLabels {
        kind: kind.as_str().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let mut registry = Registry::with_prefix("driftless");
        let m = PolicyMetrics::register(&mut registry);
        m.written(PolicyKind::ApplyPolicy);
        m.write_failed(PolicyKind::LogPipeline);
        m.set_ready(PolicyKind::FactsPolicy, 3, 1);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(
            out.contains(r#"driftless_policy_status_writes_total{kind="ApplyPolicy"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"driftless_policy_status_write_errors_total{kind="LogPipeline"} 1"#),
            "{out}"
        );
        assert!(
            out.contains(r#"driftless_policies{kind="FactsPolicy",ready="True"} 3"#),
            "{out}"
        );
        assert!(
            out.contains(r#"driftless_policies{kind="FactsPolicy",ready="False"} 1"#),
            "{out}"
        );
    }
}
