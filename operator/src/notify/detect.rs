//! What a NotificationPolicy's next step is, from the DriftReports observed now and the state its
//! status recorded: pure functions, no I/O.
//!
//! Transitions are level-based: a report's current status is compared with the status the
//! policy's `status.targets` last accounted for, and an ApplyPolicy's rollout step with
//! `status.rollouts`, so a restarted operator finds exactly the transitions it had not yet
//! recorded, and none twice.

use chrono::{DateTime, Utc};
use driftless_crds::backoff::Backoff;
use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::{
    NotificationPolicySpec, NotificationPolicyStatus, PendingGroup, ReceiverStatus, RolloutEvent,
    RolloutState, RolloutTransition, TargetState, Transition, MAX_GROUP_EVENTS, MAX_TARGETS,
};
use driftless_crds::time::{of_time, time};

/// Longest group wait accepted.
pub const MAX_GROUP_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);
/// First retry delay after a failed delivery.
pub const RETRY_BASE: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest retry delay.
pub const RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(60);
/// Longest error text kept in a transition.
pub const MAX_ERROR_CHARS: usize = 256;

/// A selected DriftReport as observed now (reports without a summary are not observed).
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The report's name.
    pub report: String,
    /// Stack or node.
    pub kind: TargetKind,
    /// The target's human name.
    pub target: String,
    /// `status.summary.status`.
    pub status: DriftStatus,
    /// `status.summary.checkedAt`.
    pub checked_at: DateTime<Utc>,
    /// Summary counts.
    pub added: u32,
    /// Summary counts.
    pub changed: u32,
    /// Summary counts.
    pub removed: u32,
    /// Commit or revision.
    pub revision: Option<String>,
    /// `status.error`.
    pub error: Option<String>,
}

/// A selected ApplyPolicy's rollout as observed now (policies without `status.rollout` are not
/// observed).
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedRollout {
    /// The ApplyPolicy's name.
    pub policy: String,
    /// `status.rollout.step`.
    pub step: String,
    /// `status.rollout.failedRevision`.
    pub failed_revision: Option<String>,
    /// `status.rollout.failedNode`.
    pub failed_node: Option<String>,
    /// `status.rollout.message`.
    pub message: Option<String>,
}

/// The next step of one policy.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to write or send; look again at `wake` (a group's send time or retry time).
    Idle {
        /// When something becomes due without any change.
        wake: Option<DateTime<Utc>>,
    },
    /// Persist this status (baseline updated, group opened or extended) before anything else.
    Write(Box<NotificationPolicyStatus>),
    /// The pending group is due: deliver it to the receivers that do not have it yet.
    Send,
}

/// Decides the next step from the selected reports and (with `spec.rolloutEvents`) the
/// selected ApplyPolicies' rollouts. `uid` and `generation` are the policy's.
pub fn plan(
    spec: &NotificationPolicySpec,
    stored: Option<&NotificationPolicyStatus>,
    uid: &str,
    generation: Option<i64>,
    observed: &[Observed],
    rollouts: &[ObservedRollout],
    now: DateTime<Utc>,
) -> Step {
    let (observed, baseline) = report_baseline(observed);
    // Rollouts are tracked only when the policy asks for them.
    let (rollouts, rollout_baseline) = if spec.rollout_events.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        rollout_baseline(rollouts)
    };
    let Some(stored) = stored else {
        // First sight: what exists now is the baseline; only later changes are news.
        return Step::Write(Box::new(NotificationPolicyStatus {
            observed_generation: generation,
            targets: baseline,
            rollouts: rollout_baseline,
            ..NotificationPolicyStatus::default()
        }));
    };
    if let Some(pending) = &stored.pending {
        if sealed(pending, now) {
            // Delivery has begun: the group is frozen; later transitions stay unaccounted for
            // (not in the baseline) and open the next group.
            return if due(pending, now) {
                Step::Send
            } else {
                Step::Idle {
                    wake: pending.next_attempt_at.as_ref().map(of_time),
                }
            };
        }
    }
    let news = transitions(spec, &stored.targets, &observed);
    let rollout_news = rollout_transitions(spec, &stored.rollouts, &rollouts, now);
    let mut next = stored.clone();
    next.targets = baseline;
    next.rollouts = rollout_baseline;
    next.observed_generation = generation;
    if !news.is_empty() || !rollout_news.is_empty() {
        let group = next.pending.get_or_insert_with(|| {
            let sequence = stored.sequence + 1;
            let wait = chrono::Duration::from_std(spec.group_wait.get().min(MAX_GROUP_WAIT))
                .unwrap_or_default();
            PendingGroup {
                id: format!("{uid}-{sequence}"),
                sequence,
                opened_at: time(now),
                send_at: time(now + wait),
                events: Vec::new(),
                rollouts: Vec::new(),
                omitted: 0,
                delivered: Vec::new(),
                attempts: 0,
                next_attempt_at: None,
            }
        });
        merge(group, news);
        merge_rollouts(group, rollout_news);
        if group.events.is_empty() && group.rollouts.is_empty() && group.omitted == 0 {
            // A target went back to where it was within the group wait: nothing to say.
            next.pending = None;
        }
    }
    if next != *stored {
        return Step::Write(Box::new(next));
    }
    match &stored.pending {
        Some(pending) if due(pending, now) => Step::Send,
        Some(pending) => Step::Idle {
            wake: Some(of_time(&pending.send_at)),
        },
        None => Step::Idle { wake: None },
    }
}

/// The observed reports sorted by name and bounded, and the baseline they make.
fn report_baseline(observed: &[Observed]) -> (Vec<&Observed>, Vec<TargetState>) {
    let mut observed: Vec<&Observed> = observed.iter().collect();
    observed.sort_by(|a, b| a.report.cmp(&b.report));
    observed.truncate(MAX_TARGETS);
    let baseline = observed
        .iter()
        .map(|o| TargetState {
            report: o.report.clone(),
            status: o.status,
        })
        .collect();
    (observed, baseline)
}

/// The observed rollouts sorted by policy name and bounded, and the baseline they make.
fn rollout_baseline(observed: &[ObservedRollout]) -> (Vec<&ObservedRollout>, Vec<RolloutState>) {
    let mut observed: Vec<&ObservedRollout> = observed.iter().collect();
    observed.sort_by(|a, b| a.policy.cmp(&b.policy));
    observed.truncate(MAX_TARGETS);
    let baseline = observed
        .iter()
        .map(|o| RolloutState {
            policy: o.policy.clone(),
            step: o.step.clone(),
            failed_revision: o.failed_revision.clone(),
        })
        .collect();
    (observed, baseline)
}

/// Whether gathering is over for `group` (its send time passed, or an attempt was made).
fn sealed(group: &PendingGroup, now: DateTime<Utc>) -> bool {
    group.attempts > 0 || !group.delivered.is_empty() || of_time(&group.send_at) <= now
}

/// Whether `group` should be (re)sent now.
fn due(group: &PendingGroup, now: DateTime<Utc>) -> bool {
    of_time(&group.send_at) <= now
        && group
            .next_attempt_at
            .as_ref()
            .is_none_or(|at| of_time(at) <= now)
}

/// The transitions of `observed` against `baseline` that `spec` notifies about.
pub fn transitions(
    spec: &NotificationPolicySpec,
    baseline: &[TargetState],
    observed: &[&Observed],
) -> Vec<Transition> {
    let mut out = Vec::new();
    for o in observed {
        let from = baseline
            .iter()
            .find(|t| t.report == o.report)
            .map(|t| t.status);
        let news = match from {
            Some(from) => from != o.status,
            // A new report is news only when it is not in sync.
            None => o.status != DriftStatus::InSync,
        };
        if news && spec.events.contains(&o.status) {
            out.push(transition(o, from));
        }
    }
    out
}

/// The rollout transitions of `observed` against `baseline` that `spec` notifies about: a
/// policy whose step or failed revision changed (or that is new) and whose step is one of
/// `spec.rolloutEvents`. A second revision failing while the step stays `Degraded` is news.
pub fn rollout_transitions(
    spec: &NotificationPolicySpec,
    baseline: &[RolloutState],
    observed: &[&ObservedRollout],
    now: DateTime<Utc>,
) -> Vec<RolloutTransition> {
    let mut out = Vec::new();
    for o in observed {
        let Some(to) = RolloutEvent::of_step(&o.step) else {
            continue;
        };
        if !spec.rollout_events.contains(&to) {
            continue;
        }
        let from = baseline.iter().find(|r| r.policy == o.policy);
        let news = from.is_none_or(|f| f.step != o.step || f.failed_revision != o.failed_revision);
        if news {
            out.push(RolloutTransition {
                policy: o.policy.clone(),
                from: from.map(|f| f.step.clone()),
                to,
                revision: o.failed_revision.clone(),
                node: o.failed_node.clone().filter(|n| !n.is_empty()),
                message: o
                    .message
                    .as_ref()
                    .map(|m| m.chars().take(MAX_ERROR_CHARS).collect()),
                seen_at: time(now),
            });
        }
    }
    out
}

/// Adds rollout `news` to an open group: a policy already in it keeps its first `from` and
/// takes the new state.
fn merge_rollouts(group: &mut PendingGroup, news: Vec<RolloutTransition>) {
    for mut t in news {
        if let Some(i) = group.rollouts.iter().position(|e| e.policy == t.policy) {
            t.from = group.rollouts.remove(i).from;
        }
        if group.rollouts.len() < MAX_GROUP_EVENTS {
            group.rollouts.push(t);
        } else {
            group.omitted = group.omitted.saturating_add(1);
        }
    }
}

fn transition(o: &Observed, from: Option<DriftStatus>) -> Transition {
    Transition {
        report: o.report.clone(),
        kind: o.kind,
        target: o.target.clone(),
        from,
        to: o.status,
        checked_at: time(o.checked_at),
        added: o.added,
        changed: o.changed,
        removed: o.removed,
        revision: o.revision.clone(),
        error: o
            .error
            .as_ref()
            .filter(|_| o.status == DriftStatus::Error)
            .map(|e| e.chars().take(MAX_ERROR_CHARS).collect()),
    }
}

/// Adds `news` to an open group: a target already in it keeps its first `from` and takes the
/// new state; one that is back where it started leaves the group.
fn merge(group: &mut PendingGroup, news: Vec<Transition>) {
    for mut t in news {
        if let Some(i) = group.events.iter().position(|e| e.report == t.report) {
            let first = group.events.remove(i);
            t.from = first.from;
            if t.from == Some(t.to) {
                continue;
            }
        }
        if group.events.len() < MAX_GROUP_EVENTS {
            group.events.push(t);
        } else {
            group.omitted = group.omitted.saturating_add(1);
        }
    }
}

/// The delay before retry number `attempt` (1-based): 2 s, 4 s, 8 s, ... at most 60 s — the
/// shared [`Backoff`]'s ceiling, without jitter, since the next attempt's time is kept in the
/// policy's status.
pub fn retry_delay(attempt: u32) -> std::time::Duration {
    Backoff {
        base: RETRY_BASE,
        max: RETRY_MAX,
    }
    .ceiling(attempt.saturating_sub(1))
}

/// The outcome of one delivery attempt to one receiver.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// The receiver.
    pub receiver: String,
    /// `Err(reason)` when it failed; the reason holds no URL or key.
    pub result: Result<(), String>,
}

/// The status after a delivery attempt of the pending group: receivers that accepted it are
/// recorded; when every receiver of `receivers` has it, the group is done; otherwise the next
/// attempt is scheduled with backoff.
pub fn record(
    stored: &NotificationPolicyStatus,
    receivers: &[String],
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> NotificationPolicyStatus {
    let mut next = stored.clone();
    let Some(mut group) = next.pending.take() else {
        return next;
    };
    let mut failed = false;
    for outcome in outcomes {
        let i = match next
            .receivers
            .iter()
            .position(|r| r.name == outcome.receiver)
        {
            Some(i) => i,
            None => {
                next.receivers.push(ReceiverStatus {
                    name: outcome.receiver.clone(),
                    ..ReceiverStatus::default()
                });
                next.receivers.len() - 1
            }
        };
        let entry = &mut next.receivers[i];
        match &outcome.result {
            Ok(()) => {
                entry.last_delivery = Some(group.id.clone());
                entry.last_delivered_at = Some(time(now));
                entry.last_error = None;
                if !group.delivered.contains(&outcome.receiver) {
                    group.delivered.push(outcome.receiver.clone());
                }
            }
            Err(reason) => {
                entry.last_error = Some(reason.clone());
                failed = true;
            }
        }
    }
    next.receivers.retain(|r| receivers.contains(&r.name));
    let complete = receivers.iter().all(|r| group.delivered.contains(r));
    if complete && !failed {
        next.sequence = group.sequence;
    } else {
        group.attempts = group.attempts.saturating_add(1);
        let delay = chrono::Duration::from_std(retry_delay(group.attempts)).unwrap_or_default();
        group.next_attempt_at = Some(time(now + delay));
        next.pending = Some(group);
    }
    next
}

#[cfg(test)]
mod tests;
