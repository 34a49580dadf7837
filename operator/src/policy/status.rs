//! The status of a policy, computed from the Nodes and the nodes' DriftReports. Pure: no I/O,
//! the time is an argument.
//!
//! A node counts for a policy when the policy's `spec.nodeSelector` matches the Node's labels
//! (no selector: every node). For each such node, the result for the policy in the node's
//! report (`status.policies`) counts only when it is about the policy's current
//! `metadata.generation`; a node without one is *pending*. `Failed` and `Refused` results both
//! count as failed.
//!
//! Conditions (kstatus):
//! - `Ready` is `True` when no node is pending or failed (drifted nodes keep a policy ready:
//!   Enforce corrects drift, Audit reports it), or when no node matches the selector;
//! - `Reconciling` is `True` while nodes are pending;
//! - `Stalled` is `True` while nodes failed, or when the selector is invalid.
//!
//! `Reconciling` and `Stalled` are left out while they would be `False`. A condition keeps its
//! `lastTransitionTime` while its `status` stays the same.

use std::collections::{BTreeMap, HashMap};

use driftless_crds::drift_report::{DriftReport, PolicyKind, PolicyResult, PolicyState};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::core::{Selector, SelectorExt as _};
use kube::ResourceExt as _;
use serde_json::{json, Map, Value};

/// The label naming the node of a node's DriftReport.
pub const NODE_LABEL: &str = "driftless.dev/node";
/// Condition type: the policy is in force on every node it targets.
pub const READY: &str = "Ready";
/// Condition type (kstatus): nodes have not reported the current generation yet.
pub const RECONCILING: &str = "Reconciling";
/// Condition type (kstatus): nodes failed, or the policy cannot be placed.
pub const STALLED: &str = "Stalled";
/// The condition types this module writes, in the order it writes them.
pub const CONDITION_TYPES: [&str; 3] = [READY, RECONCILING, STALLED];
/// The condition types the rollout writes (ApplyPolicy).
pub const ROLLOUT_CONDITION_TYPES: [&str; 2] = ["Progressing", "Degraded"];
/// Most node names a condition message lists.
pub const MAX_NAMED_NODES: usize = 5;
/// Longest part of a node's failure message a condition message quotes, in bytes.
pub const MAX_NODE_MESSAGE: usize = 200;

/// One Node as the status needs it: its name and labels.
#[derive(Clone, Copy, Debug)]
pub struct NodeRef<'a> {
    /// Node name.
    pub name: &'a str,
    /// Node labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// What the status computation needs of a policy.
#[derive(Clone, Copy, Debug)]
pub struct PolicyInput<'a> {
    /// The kind.
    pub kind: PolicyKind,
    /// The name (the kinds are cluster-scoped).
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec.nodeSelector`.
    pub node_selector: Option<&'a LabelSelector>,
    /// LogPipeline: number of sources in the spec (0 for other kinds).
    pub sources: usize,
    /// LogPipeline: number of sinks in the spec (0 for other kinds).
    pub sinks: usize,
    /// The conditions of the status now stored (their transition times are kept).
    pub previous: &'a [Condition],
}

/// Node results by node, then by policy (kind and name).
#[derive(Debug, Default)]
pub struct ReportIndex<'a> {
    nodes: HashMap<&'a str, HashMap<(PolicyKind, &'a str), &'a PolicyResult>>,
}

impl<'a> ReportIndex<'a> {
    /// Indexes node reports. A report counts when it carries the [`NODE_LABEL`] label and is
    /// named as the agent names it, `node-<that label, lower-case>` (so a report cannot speak
    /// for another node under a different name). When a report lists a policy twice, the
    /// result with the highest generation counts.
    pub fn new(reports: impl IntoIterator<Item = &'a DriftReport>) -> Self {
        let mut nodes: HashMap<&'a str, HashMap<(PolicyKind, &'a str), &'a PolicyResult>> =
            HashMap::new();
        for report in reports {
            let Some(node) = report_node(report) else {
                continue;
            };
            let Some(status) = report.status.as_ref() else {
                continue;
            };
            let results = nodes.entry(node).or_default();
            for result in &status.policies {
                let key = (result.kind, result.name.as_str());
                match results.get(&key) {
                    Some(seen) if seen.generation >= result.generation => {}
                    _ => {
                        results.insert(key, result);
                    }
                }
            }
        }
        Self { nodes }
    }

    /// Number of nodes with a report.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// No node has a report.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The result of a policy on a node.
    pub fn result(&self, node: &str, kind: PolicyKind, name: &str) -> Option<&'a PolicyResult> {
        self.nodes.get(node)?.get(&(kind, name)).copied()
    }
}

/// The node a node's DriftReport speaks for: its [`NODE_LABEL`] label, when the report is named
/// `node-<label, lower-case>`.
pub fn report_node(report: &DriftReport) -> Option<&str> {
    let node = report.labels().get(NODE_LABEL)?;
    let name = report.metadata.name.as_deref()?.strip_prefix("node-")?;
    (!node.is_empty() && name.len() == node.len() && name == node.to_ascii_lowercase())
        .then_some(node.as_str())
}

/// Computed status of one policy. Which fields a kind's status has: see [`PolicyStatus::to_json`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyStatus {
    /// The kind it is the status of.
    pub kind: Option<PolicyKind>,
    /// `metadata.generation` of the policy.
    pub observed_generation: i64,
    /// Nodes the selector matches.
    pub targeted: i32,
    /// Targeted nodes whose result for this generation is `InSync`.
    pub in_sync: i32,
    /// Targeted nodes whose result for this generation is `Drifted`.
    pub drifted: i32,
    /// Targeted nodes whose result for this generation is `Failed` or `Refused`.
    pub failed: i32,
    /// Targeted nodes without a result for this generation.
    pub pending: i32,
    /// FactsPolicy: thresholds breached, summed over the drifted nodes (a `Drifted` result
    /// counts at least 1).
    pub breached: i32,
    /// LogPipeline: sources in the spec.
    pub sources: i32,
    /// LogPipeline: sinks in the spec.
    pub sinks: i32,
    /// `Ready`, and `Reconciling` / `Stalled` when `True`.
    pub conditions: Vec<Condition>,
}

impl PolicyStatus {
    /// `Ready` is `True`.
    pub fn ready(&self) -> bool {
        self.conditions
            .iter()
            .any(|c| c.type_ == READY && c.status == "True")
    }

    /// The status fields this controller owns for the policy's kind, as the `status` of a
    /// server-side apply patch:
    /// - every kind: `observedGeneration`, `targeted`, `conditions`;
    /// - ApplyPolicy: `inSync`, `drifted`, `failed` (`currentRevision`, `updatedRevision` and
    ///   `updated` belong to the rollout and are never written here);
    /// - FactsPolicy: `reporting` (nodes whose result for this generation is `InSync` or
    ///   `Drifted`) and `breached`;
    /// - LogPipeline: `sources`, `sinks`.
    pub fn to_json(&self) -> Value {
        let mut status = Map::new();
        status.insert("observedGeneration".into(), self.observed_generation.into());
        status.insert("targeted".into(), self.targeted.into());
        match self.kind {
            Some(PolicyKind::ApplyPolicy) => {
                status.insert("inSync".into(), self.in_sync.into());
                status.insert("drifted".into(), self.drifted.into());
                status.insert("failed".into(), self.failed.into());
            }
            Some(PolicyKind::FactsPolicy) => {
                status.insert(
                    "reporting".into(),
                    self.in_sync.saturating_add(self.drifted).into(),
                );
                status.insert("breached".into(), self.breached.into());
            }
            Some(PolicyKind::LogPipeline) => {
                status.insert("sources".into(), self.sources.into());
                status.insert("sinks".into(), self.sinks.into());
            }
            None => {}
        }
        status.insert(
            "conditions".into(),
            serde_json::to_value(&self.conditions).unwrap_or(Value::Null),
        );
        Value::Object(status)
    }
}

/// The fields of a `status` (as JSON) that this controller owns for `kind`, conditions other
/// than [`CONDITION_TYPES`] and every `lastTransitionTime` left out: two statuses with the same
/// view need no write.
pub fn owned_view(kind: PolicyKind, status: &Value) -> Value {
    let keys: &[&str] = match kind {
        PolicyKind::ApplyPolicy => &[
            "inSync",
            "drifted",
            "failed",
            "currentRevision",
            "updatedRevision",
            "updated",
            "rollout",
        ],
        PolicyKind::FactsPolicy => &["reporting", "breached"],
        PolicyKind::LogPipeline => &["sources", "sinks"],
    };
    let mut view = Map::new();
    for key in ["observedGeneration", "targeted"].iter().chain(keys) {
        // A stored status always has `updated` (0 by default); a computed one has it only when
        // the policy has a revision.
        let missing = if *key == "updated" {
            json!(0)
        } else {
            Value::Null
        };
        view.insert((*key).into(), status.get(*key).cloned().unwrap_or(missing));
    }
    let conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter(|c| {
                    c.get("type").and_then(Value::as_str).is_some_and(|t| {
                        CONDITION_TYPES.contains(&t) || ROLLOUT_CONDITION_TYPES.contains(&t)
                    })
                })
                .map(|c| {
                    let mut c = c.clone();
                    if let Some(c) = c.as_object_mut() {
                        c.remove("lastTransitionTime");
                    }
                    c
                })
                .collect()
        })
        .unwrap_or_default();
    view.insert("conditions".into(), json!(conditions));
    Value::Object(view)
}

/// Compiles a label selector exactly as the node agents do (`kube`'s conversion), so a policy
/// counts as targeting the nodes that run it: a selector is invalid when an operator is not
/// `In`, `NotIn`, `Exists` or `DoesNotExist`, or `In` / `NotIn` has no `values` (agents refuse
/// such a policy on every node). `None` selects every node.
pub fn compile_selector(selector: Option<&LabelSelector>) -> Result<Selector, String> {
    match selector {
        None => Ok(Selector::default()),
        Some(selector) => Selector::try_from(selector.clone()).map_err(|e| e.0),
    }
}

/// `s` cut to at most `max` bytes on a character boundary, `...` marking the cut.
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn names(list: &[String], total: usize) -> String {
    let mut out = list.join(", ");
    if total > list.len() {
        out.push_str(&format!(" and {} more", total - list.len()));
    }
    out
}

/// A condition before its times are known.
struct Want {
    type_: &'static str,
    status: bool,
    reason: &'static str,
    message: String,
}

fn condition(type_: &'static str, status: bool, reason: &'static str, message: String) -> Want {
    Want {
        type_,
        status,
        reason,
        message,
    }
}

/// Computes the status of `policy` over `nodes` (every Node of the cluster) and the nodes'
/// results in `reports`. Reports of nodes that are not in `nodes` do not count.
pub fn compute(
    policy: &PolicyInput<'_>,
    nodes: &[NodeRef<'_>],
    reports: &ReportIndex<'_>,
    now: &Time,
) -> PolicyStatus {
    let mut status = PolicyStatus {
        kind: Some(policy.kind),
        observed_generation: policy.generation,
        sources: count(policy.sources),
        sinks: count(policy.sinks),
        ..Default::default()
    };
    let wanted = match compile_selector(policy.node_selector) {
        Ok(selector) => selector,
        Err(err) => {
            let message = format!("spec.nodeSelector is invalid: {err}");
            status.conditions = conditions(
                policy,
                now,
                vec![
                    condition(READY, false, "InvalidSelector", message.clone()),
                    condition(STALLED, true, "InvalidSelector", message),
                ],
            );
            return status;
        }
    };
    let mut targeted: Vec<&NodeRef<'_>> =
        nodes.iter().filter(|n| wanted.matches(n.labels)).collect();
    targeted.sort_by(|a, b| a.name.cmp(b.name));
    let (mut in_sync, mut drifted, mut breached) = (0usize, 0usize, 0u64);
    let mut pending: Vec<&str> = Vec::new();
    let mut failed: Vec<(&str, &PolicyResult)> = Vec::new();
    for node in &targeted {
        match reports
            .result(node.name, policy.kind, policy.name)
            .filter(|r| r.generation == policy.generation)
        {
            None => pending.push(node.name),
            Some(r) => match r.state {
                PolicyState::InSync => in_sync += 1,
                PolicyState::Drifted => {
                    drifted += 1;
                    breached += u64::from(r.drifted.max(1));
                }
                PolicyState::Failed | PolicyState::Refused => failed.push((node.name, r)),
            },
        }
    }
    status.targeted = count(targeted.len());
    status.in_sync = count(in_sync);
    status.drifted = count(drifted);
    status.failed = count(failed.len());
    status.pending = count(pending.len());
    status.breached = i32::try_from(breached).unwrap_or(i32::MAX);

    let drift_word = match policy.kind {
        PolicyKind::FactsPolicy => "with thresholds breached",
        _ => "drifted",
    };
    let mut wanted_conditions = Vec::new();
    let waiting = (!pending.is_empty()).then(|| {
        let named: Vec<String> = pending
            .iter()
            .take(MAX_NAMED_NODES)
            .map(|n| (*n).to_owned())
            .collect();
        format!(
            "{} of {} nodes have not reported generation {}: {}",
            pending.len(),
            targeted.len(),
            policy.generation,
            names(&named, pending.len())
        )
    });
    let failing = (!failed.is_empty()).then(|| {
        let named: Vec<String> = failed
            .iter()
            .take(MAX_NAMED_NODES)
            .map(|(node, r)| {
                let message = match (&r.message, r.state) {
                    (Some(m), _) if !m.trim().is_empty() => cut(m.trim(), MAX_NODE_MESSAGE),
                    (_, PolicyState::Refused) => "refused".into(),
                    _ => "failed".into(),
                };
                format!("{node}: {message}")
            })
            .collect();
        format!(
            "{} node(s) failed: {}",
            failed.len(),
            names(&named, failed.len())
        )
    });
    if targeted.is_empty() {
        wanted_conditions.push(condition(
            READY,
            true,
            "NoMatchingNodes",
            "no node matches spec.nodeSelector".into(),
        ));
    } else if let Some(message) = &failing {
        wanted_conditions.push(condition(READY, false, "NodesFailed", message.clone()));
    } else if let Some(message) = &waiting {
        wanted_conditions.push(condition(READY, false, "NodesPending", message.clone()));
    } else {
        wanted_conditions.push(condition(
            READY,
            true,
            "AllNodesReported",
            format!(
                "{in_sync} of {} nodes in sync, {drifted} {drift_word}",
                targeted.len()
            ),
        ));
    }
    if let Some(message) = waiting {
        wanted_conditions.push(condition(RECONCILING, true, "NodesPending", message));
    }
    if let Some(message) = failing {
        wanted_conditions.push(condition(STALLED, true, "NodesFailed", message));
    }
    status.conditions = conditions(policy, now, wanted_conditions);
    status
}

/// Builds the conditions, keeping the previous `lastTransitionTime` of a type whose status did
/// not change.
fn conditions(policy: &PolicyInput<'_>, now: &Time, wanted: Vec<Want>) -> Vec<Condition> {
    wanted
        .into_iter()
        .map(|want| {
            let status = if want.status { "True" } else { "False" }.to_owned();
            let last_transition_time = policy
                .previous
                .iter()
                .find(|c| c.type_ == want.type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                last_transition_time,
                message: want.message,
                observed_generation: Some(policy.generation),
                reason: want.reason.into(),
                status,
                type_: want.type_.into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
