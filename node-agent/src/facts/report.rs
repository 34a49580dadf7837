//! The node's DriftReport (`node-<node>`) as the standalone agent keeps it: every threshold
//! that is breached now is one item, and each change of the breached set (a breach, a clearing)
//! moves the previous summary into the report's bounded history. The agent serves it at
//! `/report`; `driftless facts --format report` prints one evaluation of it.
//!
//! An item is `threshold:<name>` in domain `threshold`, from `<policy>/<name>`, change
//! `changed`, with one attribute for the metric (its selector as the path, the value that
//! breached it as `before`, the condition that would clear it as `after`) and one for the
//! severity.

use driftless_crds::drift_report::{
    AttributeChange, ChangeType, DriftItem, DriftReport, DriftReportSpec, DriftReportStatus,
    DriftStatus, Summary, Target, TargetKind, MAX_HISTORY, MAX_ITEMS,
};
use driftless_crds::facts_policy::{Comparison, Threshold};

use super::thresholds::{severity_label, Breach};

/// The report's object name: `node-<node>`, lower-case.
pub fn report_name(node: &str) -> String {
    driftless_crds::drift_report::node_report_name(node)
}

/// The comparison that holds when `comparison` does not (what clears the threshold).
fn negated(comparison: Comparison) -> &'static str {
    match comparison {
        Comparison::GreaterThan => "<=",
        Comparison::GreaterOrEqual => "<",
        Comparison::LessThan => ">=",
        Comparison::LessOrEqual => ">",
        Comparison::Equal => "!=",
        Comparison::NotEqual => "==",
    }
}

/// `metric{label=~"pattern",...}`, the series a threshold looks at.
fn selector(threshold: &Threshold) -> String {
    if threshold.labels.is_empty() {
        return threshold.metric.clone();
    }
    let matchers: Vec<String> = threshold
        .labels
        .iter()
        .map(|(label, pattern)| format!("{label}=~{pattern:?}"))
        .collect();
    format!("{}{{{}}}", threshold.metric, matchers.join(","))
}

/// The report item of one breached threshold.
pub fn threshold_item(breach: &Breach) -> DriftItem {
    let t = &breach.threshold;
    DriftItem {
        address: format!("threshold:{}", t.name),
        domain: "threshold".into(),
        source: Some(format!("{}/{}", breach.policy, t.name)),
        change: ChangeType::Changed,
        replace: false,
        attributes: vec![
            AttributeChange {
                path: selector(t),
                before: Some(breach.value.to_string()),
                after: Some(format!("{} {}", negated(t.comparison), t.value)),
            },
            AttributeChange {
                path: "severity".into(),
                before: Some(severity_label(t.severity).into()),
                after: None,
            },
        ],
        diff: None,
        corrected: false,
    }
}

/// `at` as a Kubernetes time.
fn time(at: chrono::DateTime<chrono::Utc>) -> Option<driftless_crds::common::Time> {
    serde_json::from_value(serde_json::Value::String(
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    ))
    .ok()
}

/// The node's report, updated after every threshold evaluation.
#[derive(Clone, Debug)]
pub struct NodeReport {
    node: String,
    status: DriftReportStatus,
    /// `policy/threshold` of the breaches in `status.items`.
    breached: Vec<String>,
}

impl NodeReport {
    /// A report with no evaluation yet (no summary).
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            status: DriftReportStatus::default(),
            breached: Vec::new(),
        }
    }

    /// Records an evaluation at `at` that found `breaches`. When the breached set changed, the
    /// previous summary goes to the history (newest first, at most [`MAX_HISTORY`]).
    pub fn record(&mut self, at: chrono::DateTime<chrono::Utc>, breaches: &[Breach]) {
        let Some(checked_at) = time(at) else { return };
        let keys: Vec<String> = breaches
            .iter()
            .map(|b| format!("{}/{}", b.policy, b.threshold.name))
            .collect();
        if keys != self.breached {
            if let Some(previous) = self.status.summary.take() {
                self.status.history.insert(0, previous);
                self.status.history.truncate(MAX_HISTORY);
            }
        }
        let mut items: Vec<DriftItem> = breaches.iter().map(threshold_item).collect();
        let total = items.len();
        items.truncate(MAX_ITEMS);
        self.status.truncated_items = u32::try_from(total - items.len()).unwrap_or(u32::MAX);
        self.status.summary = Some(Summary {
            status: if total == 0 {
                DriftStatus::InSync
            } else {
                DriftStatus::Drifted
            },
            added: 0,
            changed: u32::try_from(total).unwrap_or(u32::MAX),
            removed: 0,
            checked_at,
            revision: None,
            commit: None,
            trigger: Some("Interval".into()),
            run: None,
        });
        self.status.items = items;
        self.breached = keys;
    }

    /// The DriftReport object.
    pub fn object(&self) -> DriftReport {
        let mut report = DriftReport::new(
            &report_name(&self.node),
            DriftReportSpec {
                target: Target {
                    kind: TargetKind::Node,
                    name: self.node.clone(),
                    scan: None,
                    stack: None,
                    node: Some(self.node.clone()),
                },
                revisions: Vec::new(),
            },
        );
        report.status = Some(self.status.clone());
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breach(name: &str, value: f64) -> Breach {
        Breach {
            policy: "node-health".into(),
            threshold: serde_json::from_value(serde_json::json!({
                "name": name,
                "metric": "node_filesystem_avail_bytes",
                "labels": {"mountpoint": "/"},
                "comparison": "LessThan",
                "value": 1073741824.0,
                "severity": "Critical",
            }))
            .unwrap(),
            value,
            since: 0.0,
        }
    }

    fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn breaches_are_items_and_clearing_moves_them_to_history() {
        let mut report = NodeReport::new("Worker-1");
        assert!(report.object().status.unwrap().summary.is_none());
        report.record(at(0), &[]);
        report.record(at(60), &[breach("root-low", 524288000.0)]);
        let object = serde_json::to_value(report.object()).unwrap();
        assert_eq!(object["kind"], "DriftReport");
        assert_eq!(object["metadata"]["name"], "node-worker-1");
        assert_eq!(object["spec"]["target"]["kind"], "Node");
        let status = &object["status"];
        assert_eq!(status["summary"]["status"], "Drifted");
        assert_eq!(status["summary"]["changed"], 1);
        assert_eq!(status["items"][0]["address"], "threshold:root-low");
        assert_eq!(status["items"][0]["source"], "node-health/root-low");
        assert_eq!(
            status["items"][0]["attributes"][0],
            serde_json::json!({
                "path": "node_filesystem_avail_bytes{mountpoint=~\"/\"}",
                "before": "524288000",
                "after": ">= 1073741824",
            })
        );
        assert_eq!(status["items"][0]["attributes"][1]["before"], "critical");
        assert_eq!(status["history"][0]["status"], "InSync");

        // Still breached: no new history entry, only the check time moves.
        report.record(at(120), &[breach("root-low", 1000.0)]);
        let status = report.object().status.unwrap();
        assert_eq!(status.history.len(), 1);
        assert_eq!(
            status.items[0].attributes[0].before.as_deref(),
            Some("1000")
        );

        // Cleared: in sync again, and the breach is in the history.
        report.record(at(180), &[]);
        let object = serde_json::to_value(report.object()).unwrap();
        assert_eq!(object["status"]["summary"]["status"], "InSync");
        assert!(object["status"].get("items").is_none());
        assert_eq!(object["status"]["history"][0]["status"], "Drifted");
        assert_eq!(
            object["status"]["history"][0]["checkedAt"],
            "2023-11-14T22:15:20Z"
        );
        assert_eq!(object["status"]["history"][1]["status"], "InSync");
    }

    #[test]
    fn history_is_bounded() {
        let mut report = NodeReport::new("n");
        for i in 0..100 {
            let breaches = if i % 2 == 0 {
                vec![breach("root-low", 1.0)]
            } else {
                Vec::new()
            };
            report.record(at(i), &breaches);
        }
        assert_eq!(report.object().status.unwrap().history.len(), MAX_HISTORY);
    }
}
