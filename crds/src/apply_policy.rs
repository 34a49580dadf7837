//! `ApplyPolicy`: the desired state of hosts, as an ordered list of idempotent tasks.

pub mod tasks;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    duration, unique_named_list, Condition, Duration, IntOrString, LabelSelector, S3Target,
    SecretVar, Values,
};
use crate::one_of;
pub use tasks::*;

/// Desired host state: tasks applied to every node the selector matches (or to the host, in
/// standalone mode).
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "ApplyPolicy declares the desired state of hosts: ordered, idempotent tasks applied to the nodes its selector matches, rolled out revision by revision.",
    version = "v1alpha1",
    kind = "ApplyPolicy",
    shortname = "ap",
    category = "driftless",
    status = "ApplyPolicyStatus",
    printcolumn = r#"{"name":"MODE","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"TARGETED","type":"integer","jsonPath":".status.targeted"}"#,
    printcolumn = r#"{"name":"UPDATED","type":"integer","jsonPath":".status.updated"}"#,
    printcolumn = r#"{"name":"STEP","type":"string","jsonPath":".status.rollout.step"}"#,
    printcolumn = r#"{"name":"IN-SYNC","type":"integer","jsonPath":".status.inSync"}"#,
    printcolumn = r#"{"name":"DRIFTED","type":"integer","jsonPath":".status.drifted"}"#,
    printcolumn = r#"{"name":"FAILED","type":"integer","jsonPath":".status.failed"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyPolicySpec {
    /// Nodes this policy applies to. Empty selects every node. Ignored on standalone hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// `Enforce` changes hosts to match; `Audit` only checks and reports drift.
    #[serde(default)]
    pub mode: ApplyMode,
    /// How often the policy is re-checked (and re-applied in `Enforce` mode) when nothing changed.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Variables available to templates and `when` conditions as `vars.NAME`.
    #[serde(default, skip_serializing_if = "is_empty_values")]
    pub vars: Values,
    /// Secrets available as `${secret:NAME}` in task fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "secret_vars_schema")]
    pub secrets: Vec<SecretVar>,
    /// The tasks, applied in order. Task names are unique within the policy.
    #[schemars(schema_with = "tasks_schema")]
    pub tasks: Vec<Task>,
    /// Tasks run once at the end of an apply, only when a changed task named them in `notify`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "handlers_schema")]
    pub handlers: Vec<Task>,
    /// Known drift to leave out of reports and alone when enforcing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ignore: Vec<IgnoreRule>,
    /// How a new revision of this policy reaches the nodes.
    #[serde(default)]
    pub rollout: Rollout,
    /// How many old revisions (ControllerRevisions) are kept for rollback; the ones nodes still
    /// run are always kept.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub revision_history_limit: u32,
    /// Where a record of every change is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditConfig>,
    /// WebAssembly plugins whose filters templates may use (`{{ x | NAME }}`), each filter by
    /// the name its manifest declares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub template_filters: Vec<crate::plugin::PluginUse>,
}

fn default_history_limit() -> u32 {
    10
}

fn default_interval() -> Duration {
    duration("15m")
}

fn is_empty_values(values: &Values) -> bool {
    values.0.is_empty()
}

fn secret_vars_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<SecretVar>(gen, 256)
}

/// Most tasks a policy may hold. Bounded so the API server can cost its CEL rules; split larger
/// configurations into several policies.
pub const MAX_TASKS: u32 = 2000;

/// Task lists are `x-kubernetes-list-type: map` keyed by name: the API server itself refuses
/// duplicate names (a CEL uniqueness rule over 2,000 items would exceed its cost budget), and
/// server-side apply merges tasks by name.
fn tasks_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    named_map_list::<Task>(gen, MAX_TASKS)
}

fn handlers_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    named_map_list::<Task>(gen, 256)
}

fn named_map_list<T: JsonSchema>(
    gen: &mut schemars::SchemaGenerator,
    max: u32,
) -> schemars::Schema {
    let mut schema = Vec::<T>::json_schema(gen);
    schema.insert("maxItems".into(), max.into());
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["name"]),
    );
    schema
}

/// Whether a policy changes hosts or only reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApplyMode {
    /// Apply changes so hosts match the policy.
    #[default]
    Enforce,
    /// Never change anything; report what differs (a dry run on every interval).
    Audit,
}

one_of! {
    /// One step of a policy: a name, optional conditions, and exactly one task type.
    pub struct Task (TaskFields) {
        /// Name, unique within the policy; used by `notify`, `--only`, `--skip` and reports.
        #[schemars(length(min = 1, max = 253))]
        pub name: String,
        /// A condition over `facts` and `vars` (Jinja expression syntax); the task is skipped
        /// when it is false. Example: `facts.os.family == "debian"`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub when: Option<String>,
        /// Handlers to run once at the end of the apply when this task changed something.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pub notify: Vec<String>,
        /// Keep going when this task fails; later tasks still run.
        #[serde(default)]
        pub ignore_errors: bool,
        /// Stop the task and report it failed after this long.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub timeout: Option<Duration>,
    }
    /// The task type: exactly one.
    pub action: TaskAction ("task type") {
        /// Manage a file's content, mode and owner.
        "file" file => File(FileTask),
        /// Manage a directory.
        "directory" directory => Directory(DirectoryTask),
        /// Manage a symbolic link.
        "symlink" symlink => Symlink(SymlinkTask),
        /// Ensure a line in a file.
        "lineInFile" line_in_file => LineInFile(LineInFileTask),
        /// Ensure a marker-delimited block in a file.
        "blockInFile" block_in_file => BlockInFile(BlockInFileTask),
        /// Install, pin or remove a package.
        "package" package => Package(PackageTask),
        /// Manage a systemd unit.
        "service" service => Service(ServiceTask),
        /// Set a kernel parameter.
        "sysctl" sysctl => Sysctl(SysctlTask),
        /// Manage a local user.
        "user" user => User(UserTask),
        /// Manage a local group.
        "group" group => Group(GroupTask),
        /// Load a kernel module.
        "kernelModule" kernel_module => KernelModule(KernelModuleTask),
        /// Manage a mount.
        "mount" mount => Mount(MountTask),
        /// Manage a cron job.
        "cron" cron => Cron(CronTask),
        /// Run a command, guarded by `creates` or `unless`.
        "command" command => Command(CommandTask),
        /// A task type from a WebAssembly plugin.
        "plugin" plugin => Plugin(crate::plugin::PluginUse),
    }
}

/// A piece of known drift to leave out of reports and alone when enforcing. Every field that is
/// set must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.task) || has(self.resource) || has(self.path)").message("set at least one of task, resource and path"))]
pub struct IgnoreRule {
    /// Task name, or a glob over task names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Resource as reports name it, such as `file:/etc/motd` or `sysctl:vm.swappiness`; a glob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// A glob over the changed path or key (file path, sysctl key, attribute name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Why this drift is accepted; shown in reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// How a new revision reaches the nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.strategy != 'Canary' || has(self.canary)").message("canary must be set when strategy is Canary"))]
pub struct Rollout {
    /// `AllAtOnce` lets every node take the new revision (within `maxUnavailable`); `Canary`
    /// first rolls it to `canary.nodes` and waits for them to stay healthy.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// How many nodes may be applying a new revision (or failed on it) at once: a count such
    /// as `2`, or a percentage of targeted nodes such as `25%`.
    #[serde(default = "default_max_unavailable")]
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : self.matches('^(100|[1-9][0-9]?)%$')").message("must be a positive count or a percentage between 1% and 100%"))]
    pub max_unavailable: IntOrString,
    /// Canary settings, required for `strategy: Canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// When a node fails the health gate of a new revision, assign the previous revision
    /// again to every node that took the new one.
    #[serde(default)]
    pub auto_rollback: bool,
    /// Assign no node a new revision while `true` (nodes keep what they run).
    #[serde(default)]
    pub paused: bool,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            max_unavailable: default_max_unavailable(),
            canary: None,
            auto_rollback: false,
            paused: false,
        }
    }
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

/// Rollout strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RolloutStrategy {
    /// Every node may take the new revision, `maxUnavailable` at a time.
    #[default]
    AllAtOnce,
    /// Canary nodes first; the rest after the canary soaked healthy.
    Canary,
}

/// The canary step of a rollout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Canary {
    /// How many nodes go first: a count or a percentage of targeted nodes.
    #[x_kube(validation = Rule::new("type(self) == int ? self > 0 : self.matches('^(100|[1-9][0-9]?)%$')").message("must be a positive count or a percentage between 1% and 100%"))]
    pub nodes: IntOrString,
    /// Targeted nodes whose labels match are picked as canaries before the others (each group
    /// by name); when fewer match than `nodes`, the rest are picked by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// How long canary nodes must stay healthy before the rollout continues.
    #[serde(default = "default_soak")]
    pub soak: Duration,
    /// What "healthy" means beyond "the apply succeeded".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
}

fn default_soak() -> Duration {
    duration("5m")
}

/// Extra health checks run on a canary node after it applied the new revision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    /// A command that must exit 0 (run on the node, below `--root`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// A URL that must answer 2xx from the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_get: Option<String>,
    /// Time allowed for each check.
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// A threshold of the node's FactsPolicy of this severity or higher that is breached
    /// (`Info`, `Warning` or `Critical`) fails the check. Unset: thresholds are not part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_severity: Option<crate::facts_policy::Severity>,
}

fn default_check_timeout() -> Duration {
    duration("30s")
}

/// Where audit records (one per change) go. Delivery failures never block an apply; records
/// wait on disk and are sent later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditConfig {
    /// The sinks; every record goes to each.
    #[schemars(schema_with = "audit_sinks_schema")]
    pub sinks: Vec<AuditSink>,
}

fn audit_sinks_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<AuditSink>(gen, 16)
}

one_of! {
    /// One destination for audit records.
    pub struct AuditSink (AuditSinkFields) {
        /// Name of the sink, unique in the list.
        #[schemars(length(min = 1, max = 63))]
        pub name: String,
    }
    /// The kind of sink: exactly one.
    pub kind: AuditSinkKind ("audit sink kind") {
        /// JSON lines in a local directory, rotated by size.
        "directory" directory => Directory(AuditDirectory),
        /// JSON POSTs to an HTTP endpoint.
        "http" http => Http(AuditHttp),
        /// JSON-lines objects in an S3 bucket.
        "s3" s3 => S3(S3Target),
    }
}

/// Audit records as JSON lines in a directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditDirectory {
    /// Directory for the files (on the host running the agent, not below `--root`).
    pub path: String,
    /// Start a new file past this size.
    #[serde(default = "default_audit_bytes")]
    pub max_bytes: u64,
    /// Keep this many rotated files.
    #[serde(default = "default_audit_files")]
    pub max_files: u32,
}

fn default_audit_bytes() -> u64 {
    10 << 20
}
fn default_audit_files() -> u32 {
    5
}

/// Audit records POSTed as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditHttp {
    /// Endpoint URL.
    pub url: String,
    /// Extra headers; values may use `${secret:NAME}`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub headers: crate::common::Headers,
}

/// Observed state of an ApplyPolicy across the nodes it targets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplyPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The revision every node ran before the current rollout (ControllerRevision name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    /// The revision being rolled out (ControllerRevision name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_revision: Option<String>,
    /// Nodes the selector matches.
    #[serde(default)]
    pub targeted: i32,
    /// Nodes allowed to run `updatedRevision`.
    #[serde(default)]
    pub updated: i32,
    /// Where the rollout of `updatedRevision` stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// Nodes whose last check found no drift.
    #[serde(default)]
    pub in_sync: i32,
    /// Nodes whose last check found drift (Audit mode, or ignored by rollout gating).
    #[serde(default)]
    pub drifted: i32,
    /// Nodes whose last apply failed.
    #[serde(default)]
    pub failed: i32,
    /// `Ready`, `Progressing`, `Degraded` (and kstatus's `Reconciling`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Where a rollout stands (`status.rollout`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `Canary`, `Soaking`, `Progressing`, `Complete`, `Paused`, `Degraded` or `RolledBack`.
    pub step: String,
    /// What the step waits for, or why the rollout stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The revision that failed its health gate (the rollout does not advance it again until
    /// it is retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_revision: Option<String>,
    /// The node where it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_node: Option<String>,
    /// Value of the `driftless.dev/rollout-retry` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<String>,
    /// Value of the `driftless.dev/rollout-undo` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undone: Option<String>,
    /// Nodes skipped because they are NotReady or cordoned (they catch up when back).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: i32,
    /// Targeted nodes per assigned revision, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revisions: Vec<RevisionCount>,
}

/// How many targeted nodes are assigned one revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevisionCount {
    /// The ControllerRevision.
    pub name: String,
    /// Its `revision` number.
    pub revision: i64,
    /// Targeted nodes assigned it.
    pub nodes: i32,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}
