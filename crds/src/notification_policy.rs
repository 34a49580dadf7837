//! `NotificationPolicy`: who hears about DriftReport status transitions in one namespace (and,
//! when asked, about ApplyPolicy rollouts that stopped or rolled back), and the delivery state
//! that makes notifications survive an operator restart.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{duration, Duration, LabelSelector, SecretRef, Time};
use crate::drift_report::{DriftStatus, TargetKind};

/// Most receivers a policy names.
pub const MAX_RECEIVERS: usize = 16;
/// Most transitions one pending group keeps; beyond, they are counted in `omitted`.
pub const MAX_GROUP_EVENTS: usize = 1000;
/// Most targets `status.targets` tracks; reports beyond are not notified about.
pub const MAX_TARGETS: usize = 5000;

/// Notifications about the DriftReports of its namespace and, when asked, ApplyPolicy rollouts.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "NotificationPolicy sends DriftReport status transitions of its namespace (InSync, Drifted, Error), and optionally ApplyPolicy rollouts that became Degraded or RolledBack, to receivers: Slack, Microsoft Teams, PagerDuty, a signed JSON webhook, e-mail over SMTP or Kubernetes Events.",
    version = "v1alpha1",
    kind = "NotificationPolicy",
    namespaced,
    shortname = "np",
    category = "driftless",
    status = "NotificationPolicyStatus",
    printcolumn = r#"{"name":"RECEIVERS","type":"string","jsonPath":".spec.receivers[*].name"}"#,
    printcolumn = r#"{"name":"SENT","type":"integer","jsonPath":".status.sequence"}"#,
    printcolumn = r#"{"name":"PENDING","type":"integer","jsonPath":".status.pending.sequence"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationPolicySpec {
    /// Which DriftReports of this namespace are watched, by their labels. Unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_selector: Option<LabelSelector>,
    /// The transitions that are sent: to `Drifted`, back to `InSync` (from `Drifted` or
    /// `Error`), to `Error`. Default: all three.
    #[serde(default = "default_events")]
    #[schemars(length(min = 1, max = 3))]
    pub events: Vec<DriftStatus>,
    /// ApplyPolicy rollout steps that are sent: `Degraded` (a node failed the health gate and
    /// the rollout stopped) and `RolledBack` (the nodes that took the failing revision were
    /// given the previous one). Empty (the default): none. ApplyPolicies are cluster-scoped, so
    /// this reports on every ApplyPolicy that `policySelector` selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 2))]
    pub rollout_events: Vec<RolloutEvent>,
    /// Which ApplyPolicies' rollouts are watched (with `rolloutEvents`), by their labels.
    /// Unset: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_selector: Option<LabelSelector>,
    /// Where the notifications go (1 to 16 receivers, unique names).
    #[schemars(schema_with = "receivers_schema")]
    pub receivers: Vec<Receiver>,
    /// How long transitions are gathered into one message after the first one is seen. Also
    /// the rate limit: a receiver gets at most one message per group wait. At most `1h`.
    #[serde(default = "default_group_wait")]
    pub group_wait: Duration,
    /// Most targets a message lists by name; the rest are counted (`and 150 more`).
    #[serde(default = "default_max_listed")]
    #[schemars(range(min = 1, max = 500))]
    pub max_listed: u32,
    /// Base URL of the Driftless dashboard (`https://driftless.example.com`); messages link to
    /// `<base>/namespaces/<namespace>/driftreports/<name>`. Unset: no links.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), regex(pattern = r"^https?://"))]
    pub dashboard_url: Option<String>,
}

/// Receiver names are unique through `x-kubernetes-list-type: map` (checked natively by the
/// API server, and server-side apply merges receivers by name).
fn receivers_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = Vec::<Receiver>::json_schema(gen);
    schema.insert("minItems".into(), 1.into());
    schema.insert("maxItems".into(), MAX_RECEIVERS.into());
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    schema
}

fn default_events() -> Vec<DriftStatus> {
    vec![
        DriftStatus::Drifted,
        DriftStatus::InSync,
        DriftStatus::Error,
    ]
}

fn default_group_wait() -> Duration {
    duration("30s")
}

fn default_max_listed() -> u32 {
    50
}

/// A rollout step of an ApplyPolicy that can be notified (`status.rollout.step`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RolloutEvent {
    /// A node failed the health gate; the rollout stopped.
    Degraded,
    /// A failed revision was taken back (`autoRollback` or the undo annotation).
    RolledBack,
}

impl RolloutEvent {
    /// The event a `status.rollout.step` is, if any.
    pub fn of_step(step: &str) -> Option<Self> {
        match step {
            "Degraded" => Some(Self::Degraded),
            "RolledBack" => Some(Self::RolledBack),
            _ => None,
        }
    }

    /// The step name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Degraded => "Degraded",
            Self::RolledBack => "RolledBack",
        }
    }
}

/// One place notifications go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Receiver {
    /// Name, unique in the policy; `status.receivers` and the delivery state use it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// What kind of receiver.
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// The Secret in this namespace holding the receiver's URL and keys (see
    /// docs/notifications.md for the keys of each type). Required for every type except
    /// `event`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// Kinds of receivers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReceiverType {
    /// A Slack-compatible incoming webhook (Secret key `url`).
    Slack,
    /// A Microsoft Teams Workflows webhook taking an Adaptive Card (Secret key `url`).
    Teams,
    /// PagerDuty Events API v2 (Secret keys `routingKey`, optional `url`).
    Pagerduty,
    /// A generic JSON webhook signed with HMAC-SHA256 (Secret keys `url`, `hmacKey`).
    Webhook,
    /// E-mail over SMTP, always encrypted: STARTTLS (required) or implicit TLS (Secret keys
    /// `host`, `from`, `to`; optional `port`, `tls`, `username`, `password`, `ca.crt`).
    Email,
    /// A Kubernetes Event on this NotificationPolicy (no Secret).
    Event,
}

/// Delivery state, kept here so that a restarted operator neither sends twice nor loses a
/// notification.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationPolicyStatus {
    /// The generation of the spec the state was last computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The status of every selected DriftReport as notifications last accounted for it (the
    /// baseline transitions are detected against).
    #[serde(default)]
    #[schemars(length(max = 5000))]
    pub targets: Vec<TargetState>,
    /// The rollout of every selected ApplyPolicy as notifications last accounted for it (with
    /// `spec.rolloutEvents`; the baseline rollout transitions are detected against).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5000))]
    pub rollouts: Vec<RolloutState>,
    /// Number of the last group delivered to every receiver (0: none yet).
    #[serde(default)]
    pub sequence: u64,
    /// The group being gathered or delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingGroup>,
    /// Last outcome per receiver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub receivers: Vec<ReceiverStatus>,
}

/// A report's status as last accounted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetState {
    /// The DriftReport's name.
    pub report: String,
    /// Its `status.summary.status`.
    pub status: DriftStatus,
}

/// An ApplyPolicy's rollout as last accounted for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// The ApplyPolicy's name.
    pub policy: String,
    /// Its `status.rollout.step`.
    pub step: String,
    /// Its `status.rollout.failedRevision`: a new failing revision is a new event even when the
    /// step stays `Degraded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
}

/// Transitions gathered into one message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingGroup {
    /// Delivery id, the same in every attempt: `<policy uid>-<sequence>`.
    pub id: String,
    /// The group's number (`status.sequence` + 1).
    pub sequence: u64,
    /// When the first transition was seen.
    pub opened_at: Time,
    /// When gathering ends and delivery starts (`openedAt` + `groupWait`).
    pub send_at: Time,
    /// The transitions, in the order seen.
    #[schemars(length(max = 1000))]
    pub events: Vec<Transition>,
    /// ApplyPolicy rollouts that became `Degraded` or `RolledBack`, in the order seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub rollouts: Vec<RolloutTransition>,
    /// Transitions beyond the bound, counted only.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub omitted: u32,
    /// Receivers that have the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub delivered: Vec<String>,
    /// Delivery attempts that failed for at least one receiver.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When the failed receivers are tried again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One DriftReport status transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// The DriftReport's name.
    pub report: String,
    /// What the report is about (`Stack` or `Node`).
    pub kind: TargetKind,
    /// The target's human name (`SCAN/STACK` or the node).
    pub target: String,
    /// The status before; absent for a report seen for the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DriftStatus>,
    /// The status now.
    pub to: DriftStatus,
    /// When the check that found it ran.
    pub checked_at: Time,
    /// Items that would be added.
    #[serde(default)]
    pub added: u32,
    /// Items that would be changed.
    #[serde(default)]
    pub changed: u32,
    /// Items that would be removed.
    #[serde(default)]
    pub removed: u32,
    /// The Git commit (stacks) or policy revision (nodes) checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Why the check failed (status `Error`), as the report says it (secrets already
    /// redacted there), cut to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An ApplyPolicy rollout that became `Degraded` or `RolledBack`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTransition {
    /// The ApplyPolicy's name.
    pub policy: String,
    /// The step before; absent for a policy seen for the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The step now.
    pub to: RolloutEvent,
    /// The revision that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The node where it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `status.rollout.message`, cut to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the operator saw it.
    pub seen_at: Time,
}

/// The last outcome of one receiver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReceiverStatus {
    /// The receiver.
    pub name: String,
    /// Id of the last group it accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<String>,
    /// When it accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivered_at: Option<Time>,
    /// Why the last attempt failed (no URL or key in it); cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
