//! Thresholds from FactsPolicy `spec.thresholds`: a metric, label matchers, a comparison, a
//! value and a `for` duration. Evaluation is pure (families and the time in, transitions out),
//! so it is tested without a host or a clock.
//!
//! A threshold's condition holds when **any** series of the metric whose labels fully match
//! every matcher compares true. It is *pending* while the condition has held for less than
//! `for`, *firing* (breached) once it has held for `for`, and inactive otherwise. Entering firing
//! is a [`Transition::Breached`]; leaving it is a [`Transition::Cleared`]. A metric that is
//! absent does not hold.

use std::collections::BTreeMap;
use std::sync::Mutex;

use driftless_crds::facts_policy::{Comparison, Severity, Threshold};
use serde::Serialize;

use crate::metrics::{self, Family, Kind, MetricsSource};

/// A threshold that cannot be compiled.
#[derive(Debug, thiserror::Error)]
#[error("threshold {threshold}: label {label}: bad regular expression {pattern:?}: {reason}")]
pub struct ThresholdError {
    /// Threshold name.
    pub threshold: String,
    /// Label name.
    pub label: String,
    /// The pattern.
    pub pattern: String,
    /// Why.
    pub reason: String,
}

/// A compiled threshold.
#[derive(Clone, Debug)]
pub struct Rule {
    /// FactsPolicy name.
    pub policy: String,
    /// The threshold as written.
    pub threshold: Threshold,
    matchers: Vec<(String, regex::Regex)>,
}

impl Rule {
    /// Compiles a threshold's label matchers (each fully anchored, as in PromQL `=~`).
    pub fn compile(policy: &str, threshold: &Threshold) -> Result<Self, ThresholdError> {
        let matchers = threshold
            .labels
            .iter()
            .map(|(label, pattern)| {
                regex::Regex::new(&format!("^(?:{pattern})$"))
                    .map(|r| (label.clone(), r))
                    .map_err(|e| ThresholdError {
                        threshold: threshold.name.clone(),
                        label: label.clone(),
                        pattern: pattern.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            policy: policy.to_owned(),
            threshold: threshold.clone(),
            matchers,
        })
    }

    /// Whether the condition holds on these families, and the first value that made it hold.
    pub fn holds(&self, families: &[Family]) -> Option<f64> {
        families
            .iter()
            .filter(|f| self.threshold.metric.starts_with(f.name.as_str()))
            .flat_map(|f| {
                f.samples
                    .iter()
                    .filter(|s| self.threshold.metric[f.name.len()..] == *s.suffix)
            })
            .filter(|s| {
                self.matchers.iter().all(|(label, re)| {
                    let value = s
                        .labels
                        .iter()
                        .find(|(l, _)| *l == label.as_str())
                        .map(|(_, v)| v.as_str())
                        .unwrap_or("");
                    re.is_match(value)
                })
            })
            .map(|s| s.value)
            .find(|v| compare(self.threshold.comparison, *v, self.threshold.value))
    }
}

/// `left <comparison> right`.
pub fn compare(comparison: Comparison, left: f64, right: f64) -> bool {
    match comparison {
        Comparison::GreaterThan => left > right,
        Comparison::GreaterOrEqual => left >= right,
        Comparison::LessThan => left < right,
        Comparison::LessOrEqual => left <= right,
        Comparison::Equal => left == right,
        Comparison::NotEqual => left != right,
    }
}

/// The lowercase name of a severity, as in the `severity` label.
pub fn severity_label(severity: Severity) -> &'static str {
    match severity {
        Severity::Info => "info",
        Severity::Warning => "warning",
        Severity::Critical => "critical",
    }
}

/// Where a threshold is.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum State {
    /// The condition does not hold.
    Inactive,
    /// The condition holds since `since` (Unix seconds), not yet for `for`.
    Pending {
        /// When it started to hold.
        since: f64,
    },
    /// Breached: the condition has held for `for` since `since`.
    Firing {
        /// When it started to hold.
        since: f64,
    },
}

/// A change worth reporting.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "transition", rename_all = "camelCase")]
pub enum Transition {
    /// The threshold is now breached.
    Breached {
        /// Policy.
        policy: String,
        /// Threshold name.
        threshold: String,
        /// Severity label.
        severity: &'static str,
        /// The value that breached it.
        value: f64,
    },
    /// The threshold is no longer breached.
    Cleared {
        /// Policy.
        policy: String,
        /// Threshold name.
        threshold: String,
        /// Severity label.
        severity: &'static str,
    },
}

/// A threshold that is breached now, for the node's report.
#[derive(Clone, Debug, PartialEq)]
pub struct Breach {
    /// FactsPolicy name.
    pub policy: String,
    /// The threshold as written.
    pub threshold: Threshold,
    /// The latest value that made the condition hold.
    pub value: f64,
    /// When the condition started to hold (Unix seconds).
    pub since: f64,
}

/// Thresholds and their states.
#[derive(Debug, Default)]
pub struct Evaluator {
    rules: Vec<(Rule, State)>,
    /// The latest value that made each rule's condition hold (same order as `rules`).
    values: Vec<Option<f64>>,
}

impl Evaluator {
    /// Compiles a policy's thresholds.
    pub fn new(policy: &str, thresholds: &[Threshold]) -> Result<Self, ThresholdError> {
        let rules: Vec<(Rule, State)> = thresholds
            .iter()
            .map(|t| Rule::compile(policy, t).map(|r| (r, State::Inactive)))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            values: vec![None; rules.len()],
            rules,
        })
    }

    /// Evaluates every threshold at `now` (Unix seconds) and returns the transitions.
    pub fn evaluate(&mut self, families: &[Family], now: f64) -> Vec<Transition> {
        let mut transitions = Vec::new();
        self.values.resize(self.rules.len(), None);
        for ((rule, state), last) in self.rules.iter_mut().zip(self.values.iter_mut()) {
            let t = &rule.threshold;
            let severity = severity_label(t.severity);
            let hold = rule.holds(families);
            *last = hold;
            let next = match (hold, *state) {
                (None, _) => State::Inactive,
                (Some(_), State::Inactive) => State::Pending { since: now },
                (Some(_), State::Pending { since } | State::Firing { since }) => {
                    State::Pending { since }
                }
            };
            let next = match next {
                State::Pending { since } if now - since >= t.for_.get().as_secs_f64() => {
                    State::Firing { since }
                }
                other => other,
            };
            let was_firing = matches!(state, State::Firing { .. });
            let is_firing = matches!(next, State::Firing { .. });
            if is_firing && !was_firing {
                transitions.push(Transition::Breached {
                    policy: rule.policy.clone(),
                    threshold: t.name.clone(),
                    severity,
                    value: hold.unwrap_or(f64::NAN),
                });
            } else if was_firing && !is_firing {
                transitions.push(Transition::Cleared {
                    policy: rule.policy.clone(),
                    threshold: t.name.clone(),
                    severity,
                });
            }
            *state = next;
        }
        transitions
    }

    /// Every threshold with its state: `(policy, threshold, severity, state)`.
    pub fn states(&self) -> Vec<(String, String, &'static str, State)> {
        self.rules
            .iter()
            .map(|(r, s)| {
                (
                    r.policy.clone(),
                    r.threshold.name.clone(),
                    severity_label(r.threshold.severity),
                    *s,
                )
            })
            .collect()
    }

    /// The breached thresholds with the value that breached them, in policy order.
    pub fn breaches(&self) -> Vec<Breach> {
        self.rules
            .iter()
            .zip(&self.values)
            .filter_map(|((rule, state), value)| match state {
                State::Firing { since } => Some(Breach {
                    policy: rule.policy.clone(),
                    threshold: rule.threshold.clone(),
                    value: value.unwrap_or(f64::NAN),
                    since: *since,
                }),
                _ => None,
            })
            .collect()
    }

    /// The breached thresholds of severity `min` or higher, as `POLICY/THRESHOLD (SEVERITY)`
    /// in policy order.
    pub fn breached_at_least(&self, min: Severity) -> Vec<String> {
        self.rules
            .iter()
            .filter(|(r, s)| matches!(s, State::Firing { .. }) && r.threshold.severity >= min)
            .map(|(r, _)| {
                format!(
                    "{}/{} ({})",
                    r.policy,
                    r.threshold.name,
                    severity_label(r.threshold.severity)
                )
            })
            .collect()
    }

    /// The breached thresholds: name → severity.
    pub fn breached(&self) -> BTreeMap<String, &'static str> {
        self.rules
            .iter()
            .filter(|(_, s)| matches!(s, State::Firing { .. }))
            .map(|(r, _)| {
                (
                    r.threshold.name.clone(),
                    severity_label(r.threshold.severity),
                )
            })
            .collect()
    }
}

/// The evaluator shared with `/metrics`, exported as `driftless_threshold_breached`.
#[derive(Default)]
pub struct Shared(pub Mutex<Evaluator>);

impl MetricsSource for Shared {
    fn encode(&self, out: &mut String) {
        let Ok(evaluator) = self.0.lock() else { return };
        let states = evaluator.states();
        if states.is_empty() {
            return;
        }
        let mut family = Family::new(
            "driftless_threshold_breached",
            "Whether a FactsPolicy threshold is breached (1) or not (0).",
            Kind::Gauge,
        );
        for (policy, threshold, severity, state) in states {
            family.push(
                vec![
                    ("policy", policy),
                    ("threshold", threshold),
                    ("severity", severity.to_owned()),
                ],
                f64::from(u8::from(matches!(state, State::Firing { .. }))),
            );
        }
        metrics::encode_families(&[family], out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threshold(comparison: Comparison, value: f64, for_: &str) -> Threshold {
        serde_json::from_value(serde_json::json!({
            "name": "root-low",
            "metric": "node_filesystem_avail_bytes",
            "labels": {"mountpoint": "/", "fstype": "ext.|xfs"},
            "comparison": comparison,
            "value": value,
            "for": for_,
            "severity": "Critical",
        }))
        .unwrap()
    }

    fn families(avail: f64) -> Vec<Family> {
        let mut f = Family::new("node_filesystem_avail_bytes", "h", Kind::Gauge);
        f.push(
            vec![("mountpoint", "/".into()), ("fstype", "ext4".into())],
            avail,
        );
        f.push(
            vec![("mountpoint", "/boot".into()), ("fstype", "ext4".into())],
            1.0,
        );
        vec![f]
    }

    #[test]
    fn breaches_of_a_severity_or_higher() {
        let mut warning = threshold(Comparison::LessThan, 100.0, "0s");
        warning.name = "root-warn".into();
        warning.severity = Severity::Warning;
        let critical = threshold(Comparison::LessThan, 10.0, "0s");
        let mut e = Evaluator::new("disk", &[warning, critical]).unwrap();
        e.evaluate(&families(50.0), 0.0);
        assert_eq!(
            e.breached_at_least(Severity::Info),
            ["disk/root-warn (warning)"]
        );
        assert_eq!(
            e.breached_at_least(Severity::Warning),
            ["disk/root-warn (warning)"]
        );
        assert!(e.breached_at_least(Severity::Critical).is_empty());
        e.evaluate(&families(5.0), 1.0);
        assert_eq!(
            e.breached_at_least(Severity::Critical),
            ["disk/root-low (critical)"]
        );
        assert_eq!(e.breached_at_least(Severity::Info).len(), 2);
    }

    #[test]
    fn pending_then_firing_then_cleared() {
        let mut e = Evaluator::new("p", &[threshold(Comparison::LessThan, 100.0, "5m")]).unwrap();
        assert!(e.evaluate(&families(50.0), 0.0).is_empty());
        assert_eq!(e.states()[0].3, State::Pending { since: 0.0 });
        assert!(e.evaluate(&families(50.0), 299.0).is_empty());
        let t = e.evaluate(&families(40.0), 300.0);
        assert_eq!(
            t,
            [Transition::Breached {
                policy: "p".into(),
                threshold: "root-low".into(),
                severity: "critical",
                value: 40.0
            }]
        );
        assert!(e.evaluate(&families(40.0), 400.0).is_empty());
        assert_eq!(e.breached().len(), 1);
        let t = e.evaluate(&families(500.0), 460.0);
        assert!(matches!(&t[..], [Transition::Cleared { .. }]));
        assert_eq!(e.states()[0].3, State::Inactive);
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires() {
        let mut e = Evaluator::new("p", &[threshold(Comparison::LessThan, 100.0, "1m")]).unwrap();
        e.evaluate(&families(50.0), 0.0);
        e.evaluate(&families(500.0), 30.0);
        assert!(e.evaluate(&families(50.0), 61.0).is_empty());
        assert_eq!(e.states()[0].3, State::Pending { since: 61.0 });
    }

    #[test]
    fn zero_for_fires_at_once_and_labels_must_fully_match() {
        let mut e = Evaluator::new("p", &[threshold(Comparison::LessOrEqual, 1.0, "0s")]).unwrap();
        // `/boot` has 1.0 but does not match mountpoint `/` (anchored), so nothing fires.
        assert!(e.evaluate(&families(2.0), 0.0).is_empty());
        assert_eq!(e.evaluate(&families(1.0), 1.0).len(), 1);
    }

    #[test]
    fn absent_metric_does_not_hold_and_gauge_is_exported() {
        let mut e = Evaluator::new("p", &[threshold(Comparison::NotEqual, 0.0, "0s")]).unwrap();
        assert!(e.evaluate(&[], 0.0).is_empty());
        e.evaluate(&families(5.0), 1.0);
        let shared = Shared(Mutex::new(e));
        let mut out = String::new();
        shared.encode(&mut out);
        assert!(out.contains(
            "driftless_threshold_breached{policy=\"p\",threshold=\"root-low\",severity=\"critical\"} 1\n"
        ));
    }

    #[test]
    fn comparisons() {
        assert!(compare(Comparison::GreaterThan, 2.0, 1.0));
        assert!(!compare(Comparison::GreaterThan, 1.0, 1.0));
        assert!(compare(Comparison::GreaterOrEqual, 1.0, 1.0));
        assert!(compare(Comparison::Equal, 1.0, 1.0));
        assert!(!compare(Comparison::LessThan, f64::NAN, 1.0));
        let bad: Threshold = serde_json::from_value(serde_json::json!({
            "name": "x", "metric": "m", "labels": {"a": "("}, "comparison": "Equal", "value": 1.0
        }))
        .unwrap();
        assert!(Evaluator::new("p", &[bad]).is_err());
    }
}
