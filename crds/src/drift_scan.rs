//! `DriftScan`: scheduled drift detection of infrastructure code (Terraform, OpenTofu,
//! Terragrunt stacks in Git).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{duration, Condition, Duration, S3Target, SecretRef, Time};
use crate::one_of;

/// Scheduled drift detection of the stacks in a Git repository.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "DriftScan schedules drift detection of the Terraform, OpenTofu or Terragrunt stacks in a Git repository; each run writes one DriftReport per stack.",
    version = "v1alpha1",
    kind = "DriftScan",
    namespaced,
    shortname = "ds",
    category = "driftless",
    status = "DriftScanStatus",
    printcolumn = r#"{"name":"SCHEDULE","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"LAST RUN","type":"date","jsonPath":".status.lastRun.startedAt"}"#,
    printcolumn = r#"{"name":"STATUS","type":"string","jsonPath":".status.lastRun.phase"}"#,
    printcolumn = r#"{"name":"DRIFTED","type":"integer","jsonPath":".status.lastRun.drifted"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DriftScanSpec {
    /// Where the infrastructure code is.
    pub source: ScanSource,
    /// The tool that plans the stacks.
    #[serde(default)]
    pub engine: Engine,
    /// Cron schedule (five fields, or `@hourly`, `@daily`, ...). No schedule: only manual and
    /// webhook triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule (`Europe/Paris`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Skip scheduled runs; manual and webhook triggers still work.
    #[serde(default)]
    pub suspend: bool,
    /// A new trigger while a run is active cancels that run and starts a new one, instead of
    /// being refused with `409 Conflict`.
    #[serde(default)]
    pub cancel_inflight_on_new_trigger: bool,
    /// Most scan Jobs of this DriftScan running at once.
    #[serde(default = "default_max_parallel")]
    #[schemars(range(min = 1, max = 100))]
    pub max_parallel: u32,
    /// Times a failed stack is retried within a run.
    #[serde(default = "default_retries")]
    #[schemars(range(max = 10))]
    pub retries: u32,
    /// A run still going after this long is failed; its remaining stacks are reported as errors.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Plan options.
    #[serde(default)]
    pub plan: PlanOptions,
    /// How scan Jobs are built.
    #[serde(default)]
    pub job_template: JobTemplate,
    /// Where full plans (JSON and text) are kept; reports link to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<Artifacts>,
    /// Authentication of webhook triggers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookAuth>,
    /// Earlier runs kept in `status.history`.
    #[serde(default = "default_history")]
    #[schemars(range(max = 50))]
    pub history_limit: u32,
}

fn default_max_parallel() -> u32 {
    4
}
fn default_retries() -> u32 {
    1
}
fn default_timeout() -> Duration {
    duration("1h")
}
fn default_history() -> u32 {
    10
}

/// Where the code is.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScanSource {
    /// A Git repository.
    pub git: GitSource,
}

/// A Git repository and the stacks in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("size(self.stacks) > 0 || size(self.discover) > 0").message("set stacks or discover (or both)"))]
pub struct GitSource {
    /// Clone URL: `https://`, `ssh://`, `git@host:path`, or `file://`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Branch, tag or commit to scan.
    #[serde(default = "default_ref", rename = "ref")]
    pub git_ref: String,
    /// How to authenticate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<GitCredentials>,
    /// Stack directories, relative to the repository root.
    #[serde(default)]
    #[schemars(length(max = 1000))]
    pub stacks: Vec<String>,
    /// Globs (`live/**`) for stack discovery: every matching directory holding `*.tf` files
    /// (or a `terragrunt.hcl`, for Terragrunt) is a stack.
    #[serde(default)]
    #[schemars(length(max = 100))]
    pub discover: Vec<String>,
}

fn default_ref() -> String {
    "HEAD".into()
}

one_of! {
    /// Credentials for the Git repository, from a Secret in the DriftScan's namespace.
    pub struct GitCredentials (GitCredentialsFields) {
    }
    /// The kind of credentials: exactly one.
    pub kind: GitCredentialsKind ("credential kind") {
        /// HTTPS token: Secret keys `token` and optionally `username` (default `git`).
        "https" https => Https(SecretRef),
        /// SSH key: Secret keys `ssh-privatekey` and `known_hosts`.
        "ssh" ssh => Ssh(SecretRef),
        /// GitHub App: Secret key `private-key` (PEM); installation tokens are minted per run.
        "githubApp" github_app => GithubApp(GithubApp),
    }
}

/// A GitHub App installation used to read the repository.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GithubApp {
    /// The Secret holding `private-key`.
    pub secret_ref: SecretRef,
    /// The App's id.
    pub app_id: i64,
    /// The installation id for the repository's owner.
    pub installation_id: i64,
    /// GitHub API URL (GitHub Enterprise Server); `https://api.github.com` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
}

/// Infrastructure-as-code tools.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Engine {
    /// HashiCorp Terraform.
    #[default]
    Terraform,
    /// OpenTofu.
    Tofu,
    /// Terragrunt (wrapping Terraform or OpenTofu).
    Terragrunt,
}

/// Plan options.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanOptions {
    /// Plan with `-refresh-only`: only changes of real infrastructure count as drift, not code
    /// changes that were never applied.
    #[serde(default)]
    pub refresh_only: bool,
    /// Take the state lock while planning. Off by default so a scan never blocks a real apply.
    #[serde(default)]
    pub lock: bool,
    /// Refuse stacks that use `data "external"` (which runs arbitrary programs during plan).
    #[serde(default)]
    pub block_external_data: bool,
    /// `-var-file` arguments, relative to each stack.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub var_files: Vec<String>,
}

/// How scan Jobs are built.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobTemplate {
    /// The IaC image; `{{ version }}` is replaced by the version the stack asks for
    /// (`.terraform-version`, `required_version`, `.terragrunt-version`) or `defaultVersion`.
    #[serde(default = "default_image")]
    pub image: String,
    /// Version used when a stack does not pin one.
    #[serde(default = "default_version")]
    pub default_version: String,
    /// Image pull policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<String>,
    /// Resources of the scan container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Service account of scan pods (for cloud credentials via workload identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra environment of the scan container (cloud credentials, `TF_VAR_*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// A PersistentVolumeClaim mounted as the provider plugin cache (`TF_PLUGIN_CACHE_DIR`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_cache_claim: Option<String>,
    /// Node selector of scan pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of scan pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// `activeDeadlineSeconds` of each Job.
    #[serde(default = "default_deadline")]
    #[schemars(range(min = 60))]
    pub active_deadline_seconds: i64,
    /// `ttlSecondsAfterFinished` of each Job.
    #[serde(default = "default_ttl")]
    pub ttl_seconds_after_finished: i32,
}

impl Default for JobTemplate {
    fn default() -> Self {
        Self {
            image: default_image(),
            default_version: default_version(),
            image_pull_policy: None,
            resources: None,
            service_account_name: None,
            env: Vec::new(),
            provider_cache_claim: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            active_deadline_seconds: default_deadline(),
            ttl_seconds_after_finished: default_ttl(),
        }
    }
}

fn default_image() -> String {
    "hashicorp/terraform:{{ version }}".into()
}
fn default_version() -> String {
    "1.9.8".into()
}
fn default_deadline() -> i64 {
    3600
}
fn default_ttl() -> i32 {
    3600
}

/// Where full plans are stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.volumeClaim)").message("exactly one of s3 and volumeClaim must be set"))]
pub struct Artifacts {
    /// An S3 bucket; credentials come from `accessKeyId`/`secretAccessKey` Secret keys named
    /// in `credentialsSecret`, or the pod's ambient credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// A Secret with keys `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` for `s3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// A PersistentVolumeClaim mounted into scan pods; plans go below `<scan>/<stack>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_claim: Option<String>,
}

/// How webhook triggers authenticate: the Secret's `token` key is either sent as
/// `Authorization: Bearer TOKEN`, or used as the HMAC-SHA256 key of `X-Hub-Signature-256`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookAuth {
    /// The Secret holding `token`.
    pub secret_ref: SecretRef,
}

/// What started a run. Higher priority runs are dequeued first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum TriggerKind {
    /// The cron schedule.
    Schedule,
    /// The `driftless.dev/trigger` annotation.
    Manual,
    /// The webhook API.
    Webhook,
}

/// Phase of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunPhase {
    /// Units are queued or running.
    Running,
    /// Every unit finished.
    Succeeded,
    /// Some units errored, or the run timed out.
    Failed,
    /// Cancelled by a newer trigger.
    Cancelled,
}

/// One run: a scan of the repository at one commit, one unit per stack.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunStatus {
    /// Run id, unique per DriftScan.
    pub id: String,
    /// What started it.
    pub trigger: TriggerKind,
    /// Who or what asked (webhook `actor`, annotation value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The commit scanned, once resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Phase.
    pub phase: RunPhase,
    /// When it started.
    pub started_at: Time,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Stacks in the run.
    #[serde(default)]
    pub total: u32,
    /// Stacks waiting for a Job.
    #[serde(default)]
    pub queued: u32,
    /// Stacks being planned.
    #[serde(default)]
    pub running: u32,
    /// Stacks finished (in sync, drifted or errored).
    #[serde(default)]
    pub completed: u32,
    /// Finished stacks with drift.
    #[serde(default)]
    pub drifted: u32,
    /// Finished stacks whose plan failed.
    #[serde(default)]
    pub errored: u32,
    /// Per-stack state of the run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub units: Vec<UnitStatus>,
}

/// State of one stack within a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UnitPhase {
    /// Waiting for a Job.
    Queued,
    /// A Job is planning it.
    Running,
    /// Planned; no drift.
    InSync,
    /// Planned; drift found.
    Drifted,
    /// The plan failed after all retries.
    Error,
}

/// One stack within a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnitStatus {
    /// Stack path.
    pub stack: String,
    /// State.
    pub phase: UnitPhase,
    /// Attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// The Job planning it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Summary of a finished run, kept in the history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// Run id.
    pub id: String,
    /// What started it.
    pub trigger: TriggerKind,
    /// Commit scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Final phase.
    pub phase: RunPhase,
    /// Start time.
    pub started_at: Time,
    /// End time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Stacks in the run.
    pub total: u32,
    /// Stacks with drift.
    pub drifted: u32,
    /// Stacks whose plan failed.
    pub errored: u32,
}

/// Observed state of a DriftScan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftScanStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The active or most recent run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<RunStatus>,
    /// Earlier runs, newest first, at most `spec.historyLimit`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub history: Vec<RunSummary>,
    /// The `driftless.dev/trigger` annotation value already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trigger: Option<String>,
    /// When the schedule next fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled_at: Option<Time>,
    /// `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
