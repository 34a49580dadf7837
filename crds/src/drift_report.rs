//! `DriftReport`: what drifted on one target (a stack of a DriftScan, or a node), kept small.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Time;

/// Most items a report holds; the rest are counted in `status.truncatedItems`.
pub const MAX_ITEMS: usize = 200;
/// Most earlier results a report keeps.
pub const MAX_HISTORY: usize = 20;

/// The drift of one target. Written by scan runners (stacks) and node agents (nodes).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "DriftReport holds what drifted on one target (a stack of a DriftScan, or a node): a summary, bounded items and history.",
    version = "v1alpha1",
    kind = "DriftReport",
    namespaced,
    shortname = "dr",
    category = "driftless",
    status = "DriftReportStatus",
    printcolumn = r#"{"name":"TARGET","type":"string","jsonPath":".spec.target.name"}"#,
    printcolumn = r#"{"name":"STATUS","type":"string","jsonPath":".status.summary.status"}"#,
    printcolumn = r#"{"name":"ADDED","type":"integer","jsonPath":".status.summary.added"}"#,
    printcolumn = r#"{"name":"CHANGED","type":"integer","jsonPath":".status.summary.changed"}"#,
    printcolumn = r#"{"name":"REMOVED","type":"integer","jsonPath":".status.summary.removed"}"#,
    printcolumn = r#"{"name":"CHECKED","type":"date","jsonPath":".status.summary.checkedAt"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"KIND","type":"string","jsonPath":".spec.target.kind","priority":1}"#,
    printcolumn = r#"{"name":"COMMIT","type":"string","jsonPath":".status.summary.commit","priority":1}"#,
    printcolumn = r#"{"name":"TRIGGER","type":"string","jsonPath":".status.summary.trigger","priority":1}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftReportSpec {
    /// What this report is about.
    pub target: Target,
    /// Nodes: the revision of each ApplyPolicy this node may run, written by the operator's
    /// rollout (field manager `driftless-rollout`). The agent applies exactly that revision; a
    /// policy without an entry does not run on the node yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "assignments_schema")]
    pub revisions: Vec<RevisionAssignment>,
}

fn assignments_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = Vec::<RevisionAssignment>::json_schema(gen);
    schema.insert("maxItems".into(), MAX_POLICIES.into());
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["policy"]),
    );
    schema
}

/// The revision of one ApplyPolicy a node may run (its *desired* revision; the node's result
/// in `status.policies[].revision` is the *current* one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevisionAssignment {
    /// The ApplyPolicy.
    pub policy: String,
    /// The ControllerRevision (in the operator's namespace) holding the spec to apply.
    pub revision: String,
}

/// What a report is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Target {
    /// `Stack` (of a DriftScan) or `Node`.
    pub kind: TargetKind,
    /// Human name: `SCAN/STACK` for stacks, the node name for nodes.
    pub name: String,
    /// The DriftScan, for stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<String>,
    /// The stack path, for stacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
    /// The node, for nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// Kinds of drift targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TargetKind {
    /// A stack of a DriftScan.
    Stack,
    /// A node's host configuration and facts.
    Node,
}

/// Overall result of a check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DriftStatus {
    /// Live state matches the code.
    InSync,
    /// Live state differs.
    Drifted,
    /// The check failed; see `status.error`.
    Error,
}

/// How one item drifted, from the point of view of making live state match the code.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum ChangeType {
    /// Missing from live state; would be created (`+`).
    Added,
    /// Differs; would be changed in place, or replaced (`~`).
    Changed,
    /// Present in live state only; would be removed (`-`).
    Removed,
}

/// One attribute that differs. Secret values are `<redacted>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttributeChange {
    /// Attribute path (`tags.env`, `mode`, `content`).
    pub path: String,
    /// Live value, rendered as text (JSON for structures); absent when it does not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Desired value; absent when it would be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// One drifted thing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftItem {
    /// Resource address (`aws_s3_bucket.logs`, `module.vpc.aws_subnet.a[0]`) or, for nodes,
    /// `TYPE:KEY` (`file:/etc/motd`, `sysctl:vm.swappiness`).
    pub address: String,
    /// Resource type or task type (`aws_s3_bucket`, `file`), for grouping.
    pub domain: String,
    /// The ApplyPolicy and task that declare it (nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How it drifted.
    pub change: ChangeType,
    /// The item would be destroyed and re-created, not updated in place.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    /// The attributes that differ (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
    /// Unified diff of the content (node items of file-like tasks: `file`, `lineInFile`,
    /// `blockInFile`, `cron`, a persisted `sysctl`, `mount`'s fstab), secret values shown as
    /// `<redacted>`. In a node's DriftReport it is cut to at most 4096 bytes per item and
    /// 65536 bytes per report; a cut diff ends with a `[diff cut: ...]` line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Nodes: an ApplyPolicy in Enforce mode found this drift and corrected it in its last run
    /// (the host matches again; the item shows what was repaired).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrected: bool,
}

/// Summary of the latest check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Overall result.
    pub status: DriftStatus,
    /// Items that would be added.
    #[serde(default)]
    pub added: u32,
    /// Items that would be changed or replaced.
    #[serde(default)]
    pub changed: u32,
    /// Items that would be removed.
    #[serde(default)]
    pub removed: u32,
    /// When the check ran.
    pub checked_at: Time,
    /// Policy revision (nodes) checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Git commit (stacks) checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// What triggered the check (`Schedule`, `Manual`, `Webhook`, `Interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The run (DriftScan) that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// Where the full plan is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// `s3://bucket/key` or `pvc://claim/path` of the plan JSON.
    pub plan_json: String,
    /// Location of the human-readable plan text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_text: Option<String>,
}

/// Observed drift of the target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftReportStatus {
    /// Latest result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// What drifted, at most 200 items.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 200))]
    pub items: Vec<DriftItem>,
    /// Items left out because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub truncated_items: u32,
    /// Why the check failed (status `Error`), secrets redacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the full plan is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// Stacks: the plan as `terraform show` prints it, secrets `<redacted>`, cut to at most
    /// 16,000 bytes; a cut text ends with a `[plan text cut: ...]` line (the whole text is in
    /// the artifact, when one is stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub plan_text: Option<String>,
    /// Earlier summaries, newest first, at most 20.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 20))]
    pub history: Vec<Summary>,
    /// Nodes: the result of every policy that selects the node, by kind and name (at most 256).
    /// The operator counts these into each policy's status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub policies: Vec<PolicyResult>,
}

/// Most policy results a node's report holds.
pub const MAX_POLICIES: usize = 256;

/// The kinds of policies a node agent runs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum PolicyKind {
    /// An ApplyPolicy.
    ApplyPolicy,
    /// A FactsPolicy.
    FactsPolicy,
    /// A LogPipeline.
    LogPipeline,
}

impl PolicyKind {
    /// Every kind, in a fixed order.
    pub const ALL: [PolicyKind; 3] = [
        PolicyKind::ApplyPolicy,
        PolicyKind::FactsPolicy,
        PolicyKind::LogPipeline,
    ];

    /// The kind's name (`ApplyPolicy`).
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::ApplyPolicy => "ApplyPolicy",
            PolicyKind::FactsPolicy => "FactsPolicy",
            PolicyKind::LogPipeline => "LogPipeline",
        }
    }
}

/// Where one policy stands on one node.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum PolicyState {
    /// Enforced or checked, and nothing differs (ApplyPolicy); running with no threshold
    /// breached (FactsPolicy); every source and sink running (LogPipeline).
    InSync,
    /// Something differs (ApplyPolicy in Audit, or what Enforce corrected in its last run), or a
    /// threshold is breached (FactsPolicy).
    Drifted,
    /// The last run failed (a task, a collector, a sink that cannot start).
    Failed,
    /// The node refused this generation (it fails a check on the node, or a secret it needs
    /// cannot be read); the previous good generation, if any, keeps running.
    Refused,
}

/// The result of one policy on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResult {
    /// The policy's kind.
    pub kind: PolicyKind,
    /// The policy's name.
    pub name: String,
    /// The `metadata.generation` of the policy this result is about.
    pub generation: i64,
    /// Where the policy stands.
    pub state: PolicyState,
    /// Items out of sync (ApplyPolicy) or thresholds breached (FactsPolicy).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drifted: u32,
    /// Items changed by the last Enforce run.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub changed: u32,
    /// Tasks, collectors or pipeline parts that failed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub failed: u32,
    /// Why it failed or was refused, secrets redacted (at most 1024 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the result was produced.
    pub checked_at: Time,
    /// ApplyPolicy: the ControllerRevision the node ran (its current revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// ApplyPolicy: since when every run of `revision` on the node succeeded and passed the
    /// rollout's health checks (absent while it does not). The rollout's soak counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_since: Option<Time>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The name of a node's report: `node-<node>`, lower-case (the agent writes it; the operator
/// writes its `spec.revisions`).
pub fn node_report_name(node: &str) -> String {
    format!("node-{}", node.to_ascii_lowercase())
}

/// Longest Kubernetes object name [`report_name`] produces (a DNS label, so it also fits in a
/// label value).
pub const MAX_REPORT_NAME: usize = 63;

/// Name of the DriftReport of `stack` in DriftScan `scan`: `<scan>-<stack-slug>`, lower-case,
/// every run of characters other than `[a-z0-9]` turned into one `-`, trimmed of `-`. A name
/// longer than 63 characters is cut and ends in `-` and 8 hex digits of a hash of the full
/// name, so two long stacks with a common prefix still get different reports.
///
/// The root stack (`.` or an empty path) is named `root`.
pub fn report_name(scan: &str, stack: &str) -> String {
    let mut slug = String::with_capacity(scan.len() + stack.len() + 1);
    let mut dash = true;
    for c in scan.chars().chain(['-']).chain(stack.chars()) {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
            dash = false;
        } else if !dash {
            slug.push('-');
            dash = true;
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    let stack_empty = !stack.chars().any(|c| c.is_ascii_alphanumeric());
    if stack_empty {
        slug.push_str("-root");
    }
    let slug = slug.trim_start_matches('-').to_owned();
    if slug.len() <= MAX_REPORT_NAME {
        return slug;
    }
    // FNV-1a over the unmodified inputs: stable across releases and platforms.
    let mut hash: u32 = 0x811c_9dc5;
    for b in scan.bytes().chain([0]).chain(stack.bytes()) {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let mut cut = slug[..MAX_REPORT_NAME - 9].to_owned();
    while cut.ends_with('-') {
        cut.pop();
    }
    format!("{cut}-{hash:08x}")
}

#[cfg(test)]
mod report_name_tests {
    use super::*;

    #[test]
    fn slugs_paths() {
        assert_eq!(report_name("infra", "live/prod/vpc"), "infra-live-prod-vpc");
        assert_eq!(
            report_name("Infra", "Live/Prod_VPC/"),
            "infra-live-prod-vpc"
        );
        assert_eq!(report_name("infra", "./a//b..c"), "infra-a-b-c");
        assert_eq!(report_name("infra", "."), "infra-root");
        assert_eq!(report_name("infra", ""), "infra-root");
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let long_a = format!("live/{}/a", "x".repeat(80));
        let long_b = format!("live/{}/b", "x".repeat(80));
        let a = report_name("infra", &long_a);
        let b = report_name("infra", &long_b);
        assert_eq!(a.len(), MAX_REPORT_NAME);
        assert!(a.len() <= MAX_REPORT_NAME && b.len() <= MAX_REPORT_NAME);
        assert_ne!(a, b);
        assert!(a.starts_with("infra-live-xxxx"), "{a}");
        // Stable: the same inputs give the same name.
        assert_eq!(a, report_name("infra", &long_a));
        let valid = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        assert!(valid(&a) && valid(&b), "{a} {b}");
    }
}
