//! The rollout planner: which revision of an ApplyPolicy each node may run. Pure: a function
//! of the newest revision, the targeted nodes (their readiness, assignment and health on the
//! revision they were assigned), what the stored status remembers, the manual controls and
//! the time. The controller ([`super::controller`]) feeds it and writes what it decides.
//!
//! Guarantees of [`plan`] (property-tested in `rollout/tests.rs`):
//! - Canaries first: with `Canary`, no node beyond `canary.nodes` is assigned the new
//!   revision before every canary passed its health gate and soaked; canaries are the nodes
//!   matching `canary.nodeSelector` first, then the others, each by name.
//! - Outside the canary step a node is assigned the new revision only while fewer than
//!   `maxUnavailable` nodes are *unavailable* (assigned it and not yet through its gate).
//! - A failed gate never advances: no node is assigned the failed revision until it is retried
//!   (`driftless.dev/rollout-retry`) or superseded by a newer revision.
//! - Rollback (`autoRollback`, or `driftless.dev/rollout-undo`) assigns the previous revision
//!   (`status.currentRevision`) to exactly the nodes assigned the failed one; with no previous
//!   revision their assignment is removed.
//! - While every node is healthy the number of nodes on the new revision never decreases.
//! - NotReady and cordoned nodes are never assigned a new revision, never block, and are
//!   counted as skipped; they catch up when back.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use driftless_crds::apply_policy::{Rollout, RolloutStrategy};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Annotation whose new value retries a failed revision.
pub const RETRY_ANNOTATION: &str = "driftless.dev/rollout-retry";
/// Annotation whose new value rolls the newest revision back on the nodes that took it.
pub const UNDO_ANNOTATION: &str = "driftless.dev/rollout-undo";

/// The rollout settings, resolved against the number of targeted nodes.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// `AllAtOnce` or `Canary`.
    pub strategy: RolloutStrategy,
    /// Most nodes unavailable at once (at least 1).
    pub max_unavailable: usize,
    /// Canary nodes (0 for `AllAtOnce`).
    pub canary: usize,
    /// How long a node must stay healthy before it counts as through its gate (`Canary`
    /// only; zero for `AllAtOnce`).
    pub soak: Duration,
    /// Roll back on a failed gate.
    pub auto_rollback: bool,
    /// Assign nothing new.
    pub paused: bool,
}

/// A count or a percentage of `total`, rounded up, at least 1 and at most `total` (at least 1
/// when `total` is 0). An invalid value (the CRD's CEL rule refuses those) counts as 1.
pub fn scaled(value: &IntOrString, total: usize) -> usize {
    let n = match value {
        IntOrString::Int(n) => usize::try_from(*n).unwrap_or(1),
        IntOrString::String(s) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<usize>().ok())
            .map_or(1, |p| (total * p.min(100)).div_ceil(100)),
    };
    n.clamp(1, total.max(1))
}

impl Settings {
    /// The settings of `spec.rollout` for `targeted` nodes.
    pub fn new(rollout: &Rollout, targeted: usize) -> Self {
        let canary = rollout.canary.as_ref();
        let is_canary = rollout.strategy == RolloutStrategy::Canary && canary.is_some();
        Self {
            strategy: if is_canary {
                RolloutStrategy::Canary
            } else {
                RolloutStrategy::AllAtOnce
            },
            max_unavailable: scaled(&rollout.max_unavailable, targeted),
            canary: canary
                .filter(|_| is_canary)
                .map_or(0, |c| scaled(&c.nodes, targeted)),
            soak: canary
                .filter(|_| is_canary)
                .and_then(|c| Duration::from_std(c.soak.get()).ok())
                .unwrap_or_else(Duration::zero),
            auto_rollback: rollout.auto_rollback,
            paused: rollout.paused,
        }
    }
}

/// How a node fares on the revision it was assigned.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    /// No result for that revision yet.
    Pending,
    /// Every run of it succeeded and passed its checks since this time.
    Healthy {
        /// Since when.
        since: DateTime<Utc>,
    },
    /// The run failed, was refused or a health check failed.
    Failed {
        /// Why (the node's message).
        reason: String,
    },
}

/// One targeted node.
#[derive(Clone, Debug)]
pub struct NodeState<'a> {
    /// Node name.
    pub name: &'a str,
    /// The Node's `Ready` condition is `True` (or the Node has none).
    pub ready: bool,
    /// `spec.unschedulable`.
    pub cordoned: bool,
    /// The revision assigned to it (its report's `spec.revisions`).
    pub assigned: Option<&'a str>,
    /// How it fares on `assigned`.
    pub health: Health,
    /// Its labels match `canary.nodeSelector`: picked as a canary before the others.
    pub canary_first: bool,
}

/// What the stored status remembers of the rollout.
#[derive(Clone, Debug, Default)]
pub struct Memory<'a> {
    /// `status.currentRevision`: the revision every node ran last.
    pub current: Option<&'a str>,
    /// The revision that failed its gate, the node and why.
    pub failed: Option<Failure>,
    /// The retry annotation value already acted on.
    pub retried: Option<&'a str>,
    /// The undo annotation value already acted on.
    pub undone: Option<&'a str>,
}

/// A failed gate.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// The revision.
    pub revision: String,
    /// The node (empty for a manual undo).
    pub node: String,
    /// Why.
    pub reason: String,
}

/// The manual controls (annotation values on the ApplyPolicy).
#[derive(Clone, Copy, Debug, Default)]
pub struct Controls<'a> {
    /// `driftless.dev/rollout-retry`.
    pub retry: Option<&'a str>,
    /// `driftless.dev/rollout-undo`.
    pub undo: Option<&'a str>,
}

/// Everything the planner reads.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// The newest revision (ControllerRevision name).
    pub updated: &'a str,
    /// Resolved settings.
    pub settings: Settings,
    /// The targeted nodes.
    pub nodes: &'a [NodeState<'a>],
    /// What the status remembers.
    pub memory: Memory<'a>,
    /// Manual controls.
    pub controls: Controls<'a>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The rollout steps, as `status.rollout.step` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Canary nodes are taking the new revision.
    Canary,
    /// Canary nodes are healthy; waiting out the soak.
    Soaking,
    /// Batches of at most `maxUnavailable` nodes.
    Progressing,
    /// Every ready node runs the new revision and passed its gate.
    Complete,
    /// `spec.rollout.paused`.
    Paused,
    /// A node failed the gate; nothing advances.
    Degraded,
    /// A node failed the gate (or undo was asked for); the nodes that took the revision were
    /// assigned the previous one.
    RolledBack,
}

impl Step {
    /// The name in `status.rollout.step`.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Canary => "Canary",
            Step::Soaking => "Soaking",
            Step::Progressing => "Progressing",
            Step::Complete => "Complete",
            Step::Paused => "Paused",
            Step::Degraded => "Degraded",
            Step::RolledBack => "RolledBack",
        }
    }
}

/// What the planner decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Assignments to change: node → new revision (`None`: remove the assignment).
    pub changes: BTreeMap<String, Option<String>>,
    /// The step.
    pub step: Step,
    /// What the step waits for, or why it stopped.
    pub message: String,
    /// `status.currentRevision` to store.
    pub current: Option<String>,
    /// The failed gate to remember.
    pub failed: Option<Failure>,
    /// Retry annotation value acted on.
    pub retried: Option<String>,
    /// Undo annotation value acted on.
    pub undone: Option<String>,
    /// Targeted nodes assigned the newest revision after the changes.
    pub updated: usize,
    /// NotReady or cordoned nodes not on the newest revision.
    pub skipped: usize,
    /// Plan again after this long at the latest (a soak ending).
    pub requeue: Option<Duration>,
}

/// Decides the assignments of one policy. Cost: O(n log n) in the targeted nodes.
pub fn plan(input: &Input<'_>) -> Plan {
    let u = input.updated;
    let s = &input.settings;
    let now = input.now;
    let gate_soak = if s.strategy == RolloutStrategy::Canary {
        s.soak
    } else {
        Duration::zero()
    };
    let mut nodes: Vec<&NodeState<'_>> = input.nodes.iter().collect();
    nodes.sort_by_key(|n| n.name);
    let on_u = |n: &NodeState<'_>| n.assigned == Some(u);
    let eligible = |n: &NodeState<'_>| n.ready && !n.cordoned;
    // When a node on `u` passes (or will pass) its gate.
    let gate_time = |n: &NodeState<'_>| match n.health {
        Health::Healthy { since } => Some(since + gate_soak),
        _ => None,
    };
    let passed = |n: &NodeState<'_>| on_u(n) && gate_time(n).is_some_and(|t| t <= now);

    let mut out = Plan {
        changes: BTreeMap::new(),
        step: Step::Progressing,
        message: String::new(),
        current: input.memory.current.map(str::to_owned),
        failed: input.memory.failed.clone().filter(|f| f.revision == u),
        retried: input.memory.retried.map(str::to_owned),
        undone: input.memory.undone.map(str::to_owned),
        updated: nodes.iter().filter(|n| on_u(n)).count(),
        skipped: nodes.iter().filter(|n| !eligible(n) && !on_u(n)).count(),
        requeue: None,
    };
    // The revision nodes go back to: the last one every node ran, unless that is `u`.
    let previous = input.memory.current.filter(|c| *c != u);

    // Manual controls: a value not acted on yet.
    let mut undo = false;
    if let Some(token) = input.controls.retry {
        if input.memory.retried != Some(token) {
            out.retried = Some(token.to_owned());
            out.failed = None;
        }
    }
    if let Some(token) = input.controls.undo {
        if input.memory.undone != Some(token) {
            out.undone = Some(token.to_owned());
            undo = true;
            if out.failed.is_none() {
                out.failed = Some(Failure {
                    revision: u.to_owned(),
                    node: String::new(),
                    reason: format!("rolled back by the {UNDO_ANNOTATION} annotation"),
                });
            }
        }
    }

    // A failed gate: the first node (by name) on `u` that failed, or that went NotReady
    // before it passed its gate.
    if out.failed.is_none() {
        out.failed = nodes.iter().filter(|n| on_u(n)).find_map(|n| {
            let reason = match &n.health {
                Health::Failed { reason } => reason.clone(),
                _ if !n.ready && !passed(n) => {
                    "the Node became NotReady before it passed the health gate".to_owned()
                }
                _ => return None,
            };
            Some(Failure {
                revision: u.to_owned(),
                node: n.name.to_owned(),
                reason,
            })
        });
    }
    if let Some(failure) = out.failed.clone() {
        let back = s.auto_rollback || undo;
        if back {
            for n in nodes.iter().filter(|n| on_u(n)) {
                out.changes
                    .insert(n.name.to_owned(), previous.map(str::to_owned));
            }
            out.updated = 0;
            out.step = Step::RolledBack;
            out.message = match previous {
                Some(p) => format!(
                    "revision {u} failed on node {}: {}; the nodes that took it were assigned {p} again",
                    failure.node, failure.reason
                ),
                None => format!(
                    "revision {u} failed on node {}: {}; there is no previous revision, so the nodes that took it run none",
                    failure.node, failure.reason
                ),
            };
        } else {
            out.step = Step::Degraded;
            out.message = format!(
                "revision {u} failed the health gate on node {}: {}; retry with `kubectl annotate applypolicy NAME {RETRY_ANNOTATION}=<new value> --overwrite` or roll back with {UNDO_ANNOTATION}",
                failure.node, failure.reason
            );
        }
        if failure.node.is_empty() {
            out.message = format!("revision {u} rolled back by the {UNDO_ANNOTATION} annotation");
        }
        return out;
    }
    if s.paused {
        out.step = Step::Paused;
        out.message = "spec.rollout.paused is true: no node is assigned a new revision".into();
        return out;
    }

    let assign = |out: &mut Plan, n: &NodeState<'_>| {
        out.changes.insert(n.name.to_owned(), Some(u.to_owned()));
        out.updated += 1;
    };
    let candidates: Vec<&NodeState<'_>> = nodes
        .iter()
        .copied()
        .filter(|n| eligible(n) && !on_u(n))
        .collect();

    if s.strategy == RolloutStrategy::Canary && !nodes.is_empty() {
        let on = nodes.iter().filter(|n| on_u(n)).count();
        let canaries: Vec<&NodeState<'_>> = nodes
            .iter()
            .copied()
            .filter(|n| on_u(n) && eligible(n))
            .collect();
        // Batches start only after the canary soaked, so more nodes than canaries on `u`
        // means the canary step is over.
        let canary_over = on > s.canary || (canaries.is_empty() && candidates.is_empty());
        if !canary_over {
            let missing = s.canary.saturating_sub(canaries.len());
            if missing > 0 && !candidates.is_empty() {
                // Nodes matching `canary.nodeSelector` first, each group by name.
                let mut picks = candidates.clone();
                picks.sort_by_key(|n| !n.canary_first);
                for n in picks.iter().take(missing) {
                    assign(&mut out, n);
                }
                out.step = Step::Canary;
                out.message = format!(
                    "canary: {} of {} node(s) assigned {u}; waiting for their health gate",
                    canaries.len() + missing.min(candidates.len()),
                    s.canary
                );
                return out;
            }
            let waiting: Vec<&&NodeState<'_>> = canaries.iter().filter(|n| !passed(n)).collect();
            if canaries.is_empty() || !waiting.is_empty() {
                let healthy = waiting.iter().all(|n| gate_time(n).is_some());
                if healthy && !canaries.is_empty() {
                    let until = waiting.iter().filter_map(|n| gate_time(n)).max();
                    out.step = Step::Soaking;
                    out.requeue = until.map(|t| t - now);
                    out.message = format!(
                        "canary healthy; soaking until {}",
                        until.map_or_else(String::new, |t| t.to_rfc3339())
                    );
                } else {
                    out.step = Step::Canary;
                    out.message = format!(
                        "canary: waiting for {} node(s) to pass the health gate on {u}",
                        waiting.len().max(1)
                    );
                }
                return out;
            }
        }
    }

    // Batches: keep at most `maxUnavailable` nodes between assignment and passed gate.
    let unavailable = nodes
        .iter()
        .filter(|n| on_u(n) && eligible(n) && !passed(n))
        .count();
    let budget = s.max_unavailable.saturating_sub(unavailable);
    for n in candidates.iter().take(budget) {
        assign(&mut out, n);
    }
    let pending: Vec<DateTime<Utc>> = nodes
        .iter()
        .filter(|n| on_u(n) && eligible(n) && !passed(n))
        .filter_map(|n| gate_time(n))
        .collect();
    out.requeue = pending.iter().min().map(|t| *t - now);
    if candidates.is_empty() && unavailable == 0 {
        out.step = Step::Complete;
        out.current = Some(u.to_owned());
        out.message = if out.skipped > 0 {
            format!(
                "every ready node runs {u}; {} NotReady or cordoned node(s) catch up when back",
                out.skipped
            )
        } else {
            format!("every node runs {u}")
        };
    } else {
        out.step = Step::Progressing;
        out.message = format!(
            "{} of {} node(s) assigned {u}; {} waiting for their health gate",
            out.updated,
            nodes.len(),
            unavailable + budget.min(candidates.len())
        );
    }
    out
}

#[cfg(test)]
mod tests;
