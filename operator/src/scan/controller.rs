//! The DriftScan controller: watches DriftScans, scan Jobs and DriftReports, and on every
//! change runs the pure [`scheduler::decide`](super::scheduler::decide) over all of them, then
//! acts: creates Jobs, deletes Jobs of cancelled runs, writes statuses, records Events.
//!
//! The queue and the capacity are global, so there is one reconciler for all DriftScans
//! rather than one reconcile per object: a change anywhere wakes the loop (within
//! milliseconds: it is event-driven, with a timer only for schedules, timeouts and a 30 s
//! safety net).
//!
//! Guarantees:
//! - Jobs are created before the status that records them, so a crash in between leaves Jobs
//!   the next decision adopts (see the scheduler) rather than a status naming missing Jobs.
//! - Statuses are written by server-side apply (field manager [`FIELD_MANAGER`]) carrying the
//!   `resourceVersion` they were computed from: a write based on a stale cache is refused
//!   with 409 and decided again once the watch caught up, so it never undoes a webhook's run.
//! - Jobs created but not yet seen in the watch cache are remembered ("expectations") and
//!   count as running, so a lagging cache never creates a Job twice.
//! - It acts only while this replica leads (see [`crate::leader`]); the watches run on every
//!   replica, so a new leader decides from warm caches.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use driftless_crds::drift_report::{DriftReport, DriftStatus};
use driftless_crds::drift_scan::{DriftScan, DriftScanStatus, RunPhase, RunStatus, TriggerKind};
use driftless_crds::time::of_time;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvVar, ObjectReference,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Mutex, Notify};

use super::metrics::ScanMetrics;
use super::queue::ScanKey;
use super::scheduler::{
    self, Decisions, JobPhase, JobPlan, JobState, Observed, ReportState, Resolution, RunPlan,
    RunSource, ScanState,
};
use super::tenancy::{SourceRules, Tenancy};
use super::triggers::{self, TRIGGER_ANNOTATION};
use crate::leader::IsLeader;
use crate::repo::{self, RepoCache, Resolved};
use crate::Error;

/// Field manager of every write of the DriftScan controller.
pub const FIELD_MANAGER: &str = "driftless-scan";
/// Label naming a scan Job's DriftScan.
pub const SCAN_LABEL: &str = "driftless.dev/scan";
/// Label naming a scan Job's run.
pub const RUN_LABEL: &str = "driftless.dev/run";
/// Annotation listing a scan Job's stacks (JSON list of strings).
pub const STACKS_ANNOTATION: &str = "driftless.dev/stacks";
/// Where the init container copies the runner binary.
pub const BIN_DIR: &str = "/driftless/bin";
/// The provider plugin cache mount.
pub const PLUGIN_CACHE_DIR: &str = "/driftless/plugin-cache";
/// Where the Secrets a DriftScan names are mounted, one directory per Secret (the runner's
/// `--secrets-dir`): the runner itself reads no Secret through the API.
pub const SECRETS_DIR: &str = "/driftless/secrets";
/// The writable scratch directory of scan pods (an emptyDir; `HOME` and `TMPDIR`): the root
/// filesystem is read-only.
pub const SCRATCH_DIR: &str = "/tmp";
/// User and group scan pods run as (non-root; the IaC images need no particular user).
pub const RUNNER_UID: i64 = 65532;
/// How long a Job created but not yet seen still counts as running.
const EXPECTATION_TTL: Duration = Duration::from_secs(60);
/// Longest sleep between two decisions.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's namespace.
    pub namespace: String,
    /// Image of the init container that provides the runner binary, and the default
    /// ServiceAccount of scan Jobs.
    pub job_defaults: JobDefaults,
    /// Most scan Jobs running at once over all DriftScans.
    pub max_concurrent_jobs: u32,
    /// This replica's identity (the Lease holder name, and the Events' reporting instance).
    pub identity: String,
    /// Where the operator keeps its clones of the DriftScans' repositories.
    pub repo_cache_dir: PathBuf,
    /// Longest a fetch of a DriftScan's repository may take.
    pub git_timeout: Duration,
    /// Which DriftScans the operator acts on, and what they may make it do.
    pub tenancy: Tenancy,
}

/// What every scan Job gets from the operator's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JobDefaults {
    /// Image of the init container that provides the runner binary.
    pub runner_image: String,
    /// ServiceAccount of Jobs whose `jobTemplate.serviceAccountName` is unset.
    pub service_account: Option<String>,
    /// The source rules the runner checks again (passed as its flags).
    pub source_rules: SourceRules,
}

/// The Secrets a DriftScan's runner reads (Git credentials, S3 credentials), in order.
pub fn runner_secrets(scan: &DriftScan) -> Vec<String> {
    use driftless_crds::drift_scan::GitCredentialsKind;
    let mut names = Vec::new();
    if let Some(creds) = &scan.spec.source.git.credentials {
        names.push(match &creds.kind {
            GitCredentialsKind::Https(s) | GitCredentialsKind::Ssh(s) => s.name.clone(),
            GitCredentialsKind::GithubApp(app) => app.secret_ref.name.clone(),
        });
    }
    if let Some(s) = scan
        .spec
        .artifacts
        .as_ref()
        .and_then(|a| a.credentials_secret.as_ref())
    {
        names.push(s.name.clone());
    }
    names.dedup();
    names
}

/// The container securityContext of scan pods: no privilege escalation, no capabilities, a
/// read-only root filesystem.
fn locked_down() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        ..Default::default()
    }
}

/// Builds the Job of `plan` for `scan`, per the runner contract: the plan's image (the
/// version its stacks ask for at the run's commit) and `--commit` pinning that commit.
pub fn build_job(scan: &DriftScan, plan: &JobPlan, defaults: &JobDefaults) -> Job {
    let runner_image = defaults.runner_image.as_str();
    let t = &scan.spec.job_template;
    let image = if plan.image.is_empty() {
        scheduler::default_image(&scan.spec)
    } else {
        plan.image.clone()
    };
    let mut command: Vec<String> = vec![
        format!("{BIN_DIR}/driftless-operator"),
        "scan-runner".into(),
        "--namespace".into(),
        plan.scan.namespace.clone(),
        "--scan".into(),
        plan.scan.name.clone(),
        "--run-id".into(),
        plan.run.clone(),
    ];
    for stack in &plan.stacks {
        command.push("--stack".into());
        command.push(stack.clone());
    }
    if let Some(commit) = &plan.commit {
        command.push("--commit".into());
        command.push(commit.clone());
    }
    let rules = &defaults.source_rules;
    if rules.allow_insecure_credentials {
        command.push("--allow-insecure-credentials".into());
    }
    for host in &rules.git_hosts {
        command.extend(["--allowed-git-host".into(), host.clone()]);
    }
    for url in &rules.github_api_urls {
        command.extend(["--allowed-github-api-url".into(), url.clone()]);
    }
    let mut env = t.env.clone();
    let mut mounts = vec![VolumeMount {
        name: "driftless-bin".into(),
        mount_path: BIN_DIR.into(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "driftless-bin".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let secrets = runner_secrets(scan);
    if !secrets.is_empty() {
        command.extend(["--secrets-dir".into(), SECRETS_DIR.into()]);
    }
    for (i, name) in secrets.iter().enumerate() {
        mounts.push(VolumeMount {
            name: format!("secret-{i}"),
            mount_path: format!("{SECRETS_DIR}/{name}"),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: format!("secret-{i}"),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                // A missing Secret fails the run with the runner's message naming it, rather
                // than a pod stuck in ContainerCreating.
                optional: Some(true),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(claim) = &t.provider_cache_claim {
        env.push(EnvVar {
            name: "TF_PLUGIN_CACHE_DIR".into(),
            value: Some(PLUGIN_CACHE_DIR.into()),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "plugin-cache".into(),
            mount_path: PLUGIN_CACHE_DIR.into(),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "plugin-cache".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    // The root filesystem is read-only: the clone, `.terraform`, HOME and temporary files go
    // to an emptyDir.
    for name in ["HOME", "TMPDIR"] {
        env.push(EnvVar {
            name: name.into(),
            value: Some(SCRATCH_DIR.into()),
            ..Default::default()
        });
    }
    mounts.push(VolumeMount {
        name: "scratch".into(),
        mount_path: SCRATCH_DIR.into(),
        ..Default::default()
    });
    volumes.push(Volume {
        name: "scratch".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    });
    let labels = BTreeMap::from([
        (SCAN_LABEL.to_owned(), plan.scan.name.clone()),
        (RUN_LABEL.to_owned(), plan.run.clone()),
    ]);
    let stacks = serde_json::to_string(&plan.stacks).unwrap_or_else(|_| "[]".into());
    Job {
        metadata: ObjectMeta {
            name: Some(plan.name.clone()),
            namespace: Some(plan.scan.namespace.clone()),
            labels: Some(labels.clone()),
            annotations: Some(BTreeMap::from([(STACKS_ANNOTATION.to_owned(), stacks)])),
            owner_references: owner_reference(scan).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(t.active_deadline_seconds),
            ttl_seconds_after_finished: Some(t.ttl_seconds_after_finished),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUNNER_UID),
                        run_as_group: Some(RUNNER_UID),
                        fs_group: Some(RUNNER_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    // The runner reads its DriftScan and writes DriftReports through the API.
                    automount_service_account_token: Some(true),
                    service_account_name: t
                        .service_account_name
                        .clone()
                        .or_else(|| defaults.service_account.clone()),
                    node_selector: (!t.node_selector.is_empty()).then(|| t.node_selector.clone()),
                    tolerations: (!t.tolerations.is_empty()).then(|| t.tolerations.clone()),
                    init_containers: Some(vec![Container {
                        name: "driftless-runner".into(),
                        image: Some(runner_image.to_owned()),
                        command: Some(vec![
                            "cp".into(),
                            "/usr/local/bin/driftless-operator".into(),
                            format!("{BIN_DIR}/"),
                        ]),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "driftless-bin".into(),
                            mount_path: BIN_DIR.into(),
                            ..Default::default()
                        }]),
                        security_context: Some(locked_down()),
                        ..Default::default()
                    }]),
                    containers: vec![Container {
                        name: "scan".into(),
                        image: Some(image),
                        image_pull_policy: t.image_pull_policy.clone(),
                        command: Some(command),
                        env: (!env.is_empty()).then_some(env),
                        resources: t.resources.clone(),
                        volume_mounts: Some(mounts),
                        security_context: Some(locked_down()),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

fn owner_reference(scan: &DriftScan) -> Option<OwnerReference> {
    let mut owner = scan.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}

/// The observed state of a Job, or `None` for a Job that is not a scan Job.
pub fn job_state(job: &Job) -> Option<JobState> {
    let labels = job.metadata.labels.as_ref()?;
    let scan = labels.get(SCAN_LABEL)?;
    let run = labels.get(RUN_LABEL)?;
    let stacks: Vec<String> = job
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(STACKS_ANNOTATION))
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let status = job.status.as_ref();
    let condition = |type_: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == type_ && c.status == "True"))
    };
    let phase = if let Some(c) = condition("Complete") {
        let at = status
            .and_then(|s| s.completion_time.as_ref())
            .or(c.last_transition_time.as_ref())
            .map(of_time);
        JobPhase::Succeeded(at)
    } else if condition("Failed").is_some() {
        JobPhase::Failed
    } else if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobPhase::Succeeded(status.and_then(|s| s.completion_time.as_ref()).map(of_time))
    } else {
        JobPhase::Active
    };
    Some(JobState {
        scan: ScanKey::new(job.namespace().unwrap_or_default(), scan.clone()),
        name: job.name_any(),
        run: run.clone(),
        stacks,
        phase,
    })
}

/// The observed state of a stack DriftReport, or `None` for node reports.
pub fn report_state(report: &DriftReport) -> Option<ReportState> {
    let target = &report.spec.target;
    let summary = report.status.as_ref()?.summary.as_ref()?;
    Some(ReportState {
        scan: ScanKey::new(report.namespace().unwrap_or_default(), target.scan.clone()?),
        stack: target.stack.clone()?,
        run: summary.run.clone(),
        status: summary.status,
    })
}

/// The observed state of a DriftScan.
pub fn scan_state(scan: &DriftScan) -> ScanState {
    ScanState {
        key: ScanKey::new(scan.namespace().unwrap_or_default(), scan.name_any()),
        spec: scan.spec.clone(),
        status: scan.status.clone().unwrap_or_default(),
        generation: scan.metadata.generation,
        annotation: scan.annotations().get(TRIGGER_ANNOTATION).cloned(),
    }
}

/// A resolution of a DriftScan's repository: in flight (`None`) or done.
type Slot = Option<Result<Arc<Resolved>, String>>;

/// What the controller knows of the DriftScans' repositories, filled by background fetches.
#[derive(Default)]
struct Resolutions {
    /// For a due trigger: the trigger's identity, and the resolution at the ref's head.
    triggers: HashMap<ScanKey, (String, Slot)>,
    /// For a run: its scan, commit and the DriftScan generation → the resolution at the commit.
    runs: HashMap<(ScanKey, String, Option<i64>), Slot>,
}

/// The identity of the trigger due on a DriftScan (a new one asks for a new fetch).
fn trigger_token(scan: &ScanState) -> String {
    format!(
        "{:?}|{:?}|{:?}",
        scan.annotation,
        scan.status.next_scheduled_at.as_ref().map(of_time),
        scan.generation
    )
}

/// What [`scheduler::decide_with`] sees of the repositories in one decision.
#[derive(Default)]
pub struct Prepared {
    /// Resolutions for new runs (a scan missing here is `Pending`).
    pub resolutions: HashMap<ScanKey, Resolution>,
    /// Images of each (scan, commit) known; runs of a commit missing here wait.
    pub images: HashMap<(ScanKey, String), BTreeMap<String, String>>,
}

impl RunSource for Prepared {
    fn resolve(&self, scan: &ScanState) -> Resolution {
        self.resolutions
            .get(&scan.key)
            .cloned()
            .unwrap_or(Resolution::Pending)
    }

    fn images(&self, scan: &ScanState, run: &RunStatus) -> Option<BTreeMap<String, String>> {
        match &run.commit {
            None => Some(BTreeMap::new()),
            Some(commit) => self
                .images
                .get(&(scan.key.clone(), commit.clone()))
                .cloned(),
        }
    }
}

/// The resolution of a new run from a repository resolution.
pub fn resolution_of(result: &Result<Arc<Resolved>, String>) -> Resolution {
    match result {
        Ok(r) => Resolution::Ready(RunPlan {
            stacks: r.stacks.clone(),
            commit: Some(r.commit.clone()),
        }),
        Err(e) => Resolution::Failed(e.clone()),
    }
}

/// The controller's shared state.
pub struct ScanController {
    client: Client,
    settings: Settings,
    scans: Store<DriftScan>,
    jobs: Store<Job>,
    reports: Store<DriftReport>,
    /// Wakes the decision loop (watch events, webhook triggers).
    pub wake: Arc<Notify>,
    /// Metrics.
    pub metrics: ScanMetrics,
    is_leader: IsLeader,
    expectations: Mutex<HashMap<String, (JobState, Instant)>>,
    recorder: Recorder,
    repo: Arc<RepoCache>,
    resolutions: Arc<std::sync::Mutex<Resolutions>>,
}

impl ScanController {
    /// Starts the watches (as background tasks) and returns the controller; call
    /// [`ScanController::run`] to decide and act.
    /// The loop acts only while `is_leader` says so.
    pub fn start(
        client: Client,
        settings: Settings,
        metrics: ScanMetrics,
        is_leader: IsLeader,
    ) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let (scans, scans_writer) = reflector::store();
        let (jobs, jobs_writer) = reflector::store();
        let (reports, reports_writer) = reflector::store();
        let scan_api: Api<DriftScan> = Api::all(client.clone());
        let job_api: Api<Job> = Api::all(client.clone());
        let report_api: Api<DriftReport> = Api::all(client.clone());
        // DriftScans of other namespaces never enter the cache: nothing (scheduler, webhook
        // API, token refresh) can act on them.
        let tenancy = settings.tenancy.clone();
        let mut ignored = std::collections::HashSet::new();
        spawn_watch(
            reflector::reflector(
                scans_writer,
                watcher(scan_api, watcher::Config::default())
                    .modify(|scan: &mut DriftScan| scan.managed_fields_mut().clear())
                    .filter(move |event| {
                        futures::future::ready(keep_scan_event(&tenancy, &mut ignored, event))
                    }),
            )
            .default_backoff()
            .boxed(),
            wake.clone(),
        );
        spawn_watch(
            reflector::reflector(
                jobs_writer,
                watcher(job_api, watcher::Config::default().labels(SCAN_LABEL))
                    .modify(|job: &mut Job| job.managed_fields_mut().clear()),
            )
            .default_backoff()
            .boxed(),
            wake.clone(),
        );
        spawn_watch(
            reflector::reflector(
                reports_writer,
                // Scan reports only (node reports are the policy controller's). The cache
                // keeps what the scheduler and the metrics read: summaries and item counts,
                // not the items or managedFields (10,000 reports in < 100 MB).
                watcher(report_api, watcher::Config::default().labels(SCAN_LABEL)).modify(
                    |report: &mut DriftReport| {
                        report.managed_fields_mut().clear();
                        report.annotations_mut().clear();
                        if let Some(status) = report.status.as_mut() {
                            status.truncated_items = status
                                .truncated_items
                                .saturating_add(status.items.len() as u32);
                            status.items = Vec::new();
                            status.history = Vec::new();
                            status.plan_text = None;
                        }
                    },
                ),
            )
            .default_backoff()
            .boxed(),
            wake.clone(),
        );
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "driftless-operator".into(),
                instance: Some(settings.identity.clone()),
            },
        );
        let settings_repo_dir = settings.repo_cache_dir.clone();
        Arc::new(Self {
            client,
            is_leader,
            settings,
            scans,
            jobs,
            reports,
            wake,
            metrics,
            expectations: Mutex::new(HashMap::new()),
            recorder,
            repo: Arc::new(RepoCache::new(settings_repo_dir)),
            resolutions: Arc::new(std::sync::Mutex::new(Resolutions::default())),
        })
    }

    /// This replica holds the Lease (or leader election is off).
    pub fn is_leader(&self) -> bool {
        (self.is_leader)()
    }

    /// The DriftScan store (for the webhook's GETs).
    pub fn scans(&self) -> &Store<DriftScan> {
        &self.scans
    }

    /// The DriftReport store.
    pub fn reports(&self) -> &Store<DriftReport> {
        &self.reports
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The repository cache.
    pub fn repo(&self) -> &Arc<RepoCache> {
        &self.repo
    }

    /// Fetches `scan`'s repository now and resolves it at `commit` (else at its ref), bounded
    /// by `--git-timeout` (for the webhook). The images of the run it starts are remembered.
    pub async fn resolve_now(
        &self,
        scan: &DriftScan,
        commit: Option<String>,
    ) -> Result<Arc<Resolved>, String> {
        let key = ScanKey::new(scan.namespace().unwrap_or_default(), scan.name_any());
        self.settings
            .tenancy
            .check(&key.namespace, &scan.spec)
            .map_err(|refused| format!("refused: {refused}"))?;
        let result = repo::resolve_at(
            self.repo.clone(),
            &self.client,
            &key.namespace,
            &scan.spec,
            commit,
            self.settings.git_timeout,
        )
        .await
        .map(Arc::new);
        if let Ok(r) = &result {
            let mut res = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
            res.runs.insert(
                (key, r.commit.clone(), scan.metadata.generation),
                Some(result.clone()),
            );
        }
        result
    }

    /// Looks up what is known of the repositories for this decision, and starts background
    /// fetches for what is missing (each wakes the loop when done): the head of the ref for a
    /// due trigger, the images of an active run's commit.
    fn prepare(&self, observed: &Observed) -> Prepared {
        let mut prepared = Prepared::default();
        let mut wanted_triggers = Vec::new();
        let mut wanted_runs = Vec::new();
        for scan in &observed.scans {
            let active = scan
                .status
                .last_run
                .as_ref()
                .filter(|r| r.phase == RunPhase::Running);
            let due = triggers::due(
                &scan.spec,
                &scan.status,
                scan.annotation.as_deref(),
                observed.now,
            );
            if let Some(request) = &due.request {
                let may_start = active.is_none()
                    || (request.kind == TriggerKind::Manual
                        && scan.spec.cancel_inflight_on_new_trigger);
                if may_start {
                    wanted_triggers.push((scan, trigger_token(scan)));
                }
            }
            if let Some(commit) = active.and_then(|r| r.commit.clone()) {
                wanted_runs.push((scan, commit));
            }
        }
        // (scan, the run's commit or None for a trigger, generation, the trigger's token)
        type Fetch = (ScanKey, Option<String>, Option<i64>, Option<String>);
        let mut to_fetch: Vec<Fetch> = Vec::new();
        {
            let mut guard = self.resolutions.lock().unwrap_or_else(|e| e.into_inner());
            let res = &mut *guard;
            let keep: std::collections::HashSet<&ScanKey> =
                wanted_triggers.iter().map(|(s, _)| &s.key).collect();
            res.triggers.retain(|k, _| keep.contains(k));
            for (scan, token) in &wanted_triggers {
                match res.triggers.get(&scan.key) {
                    Some((t, slot)) if t == token => {
                        if let Some(result) = slot {
                            prepared
                                .resolutions
                                .insert(scan.key.clone(), resolution_of(result));
                            if let Ok(r) = result {
                                prepared
                                    .images
                                    .insert((scan.key.clone(), r.commit.clone()), r.images.clone());
                                res.runs.insert(
                                    (scan.key.clone(), r.commit.clone(), scan.generation),
                                    Some(Ok(r.clone())),
                                );
                            }
                        }
                    }
                    _ => {
                        res.triggers.insert(scan.key.clone(), (token.clone(), None));
                        to_fetch.push((
                            scan.key.clone(),
                            None,
                            scan.generation,
                            Some(token.clone()),
                        ));
                    }
                }
            }
            for (scan, commit) in &wanted_runs {
                let key = (scan.key.clone(), commit.clone(), scan.generation);
                match res.runs.get(&key) {
                    Some(Some(Ok(r))) => {
                        prepared
                            .images
                            .insert((scan.key.clone(), commit.clone()), r.images.clone());
                    }
                    Some(Some(Err(_))) => {
                        // Reported once; the run goes on with the default image.
                        prepared
                            .images
                            .insert((scan.key.clone(), commit.clone()), BTreeMap::new());
                    }
                    Some(None) => {}
                    None => {
                        res.runs.insert(key, None);
                        to_fetch.push((
                            scan.key.clone(),
                            Some(commit.clone()),
                            scan.generation,
                            None,
                        ));
                    }
                }
            }
            // Forget runs no longer active (and not just resolved for a trigger).
            let live: std::collections::HashSet<(ScanKey, String)> = wanted_runs
                .iter()
                .map(|(s, c)| (s.key.clone(), c.clone()))
                .chain(prepared.images.keys().cloned())
                .collect();
            res.runs
                .retain(|(k, c, _), slot| slot.is_none() || live.contains(&(k.clone(), c.clone())));
        }
        for (key, commit, generation, token) in to_fetch {
            let Some(scan) = self.scans.state().into_iter().find(|s| {
                s.namespace().as_deref() == Some(key.namespace.as_str()) && s.name_any() == key.name
            }) else {
                continue;
            };
            let cache = self.repo.clone();
            let client = self.client.clone();
            let resolutions = self.resolutions.clone();
            let wake = self.wake.clone();
            let timeout = self.settings.git_timeout;
            let recorder = self.recorder.clone();
            // Decided before any Secret is read or any byte sent.
            let allowed = self.settings.tenancy.check(&key.namespace, &scan.spec);
            tokio::spawn(async move {
                let started = Instant::now();
                let result = match allowed {
                    Ok(()) => repo::resolve_at(
                        cache,
                        &client,
                        &key.namespace,
                        &scan.spec,
                        commit.clone(),
                        timeout,
                    )
                    .await
                    .map(Arc::new),
                    Err(refused) => Err(format!("refused: {refused}")),
                };
                match &result {
                    Ok(r) => {
                        tracing::info!(scan = %key, commit = %r.commit, stacks = r.stacks.len(), ms = started.elapsed().as_millis() as u64, "repository resolved")
                    }
                    Err(e) => tracing::warn!(scan = %key, error = %e, "repository not resolved"),
                }
                if let (Some(commit), Err(e)) = (&commit, &result) {
                    // A trigger's failure becomes the RunFailed Event of the decision; a run's
                    // is reported here, and its Jobs use the default image.
                    let ev = Event {
                        type_: EventType::Warning,
                        reason: "ImagesUnresolved".into(),
                        note: Some(format!(
                            "cannot read commit {commit} to pick the stacks' images ({e}); using spec.jobTemplate.defaultVersion"
                        )),
                        action: "Scan".into(),
                        secondary: None,
                    };
                    let _ = recorder.publish(&ev, &scan.object_ref(&())).await;
                }
                {
                    let mut res = resolutions.lock().unwrap_or_else(|e| e.into_inner());
                    match (token, commit) {
                        (Some(token), _) => {
                            if let Some(entry) = res.triggers.get_mut(&key) {
                                if entry.0 == token {
                                    entry.1 = Some(result);
                                }
                            }
                        }
                        (None, Some(commit)) => {
                            res.runs.insert((key, commit, generation), Some(result));
                        }
                        (None, None) => {}
                    }
                }
                wake.notify_one();
            });
        }
        prepared
    }

    /// Decides and acts forever: on every wake-up, at the next schedule or timeout, and at
    /// least every 30 s.
    pub async fn run(self: Arc<Self>) {
        let _ = self.scans.wait_until_ready().await;
        let _ = self.jobs.wait_until_ready().await;
        let _ = self.reports.wait_until_ready().await;
        tracing::info!("DriftScan controller watching");
        let mut sleep = Duration::ZERO;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            // Gather the burst of events that woke us (a Job create echoes several).
            tokio::time::sleep(Duration::from_millis(5)).await;
            sleep = SAFETY_NET;
            if !self.is_leader() {
                continue;
            }
            match self.reconcile_once().await {
                Ok(decisions) => {
                    if let Some(at) = decisions.wake_at {
                        let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                        sleep = sleep.min(until + Duration::from_millis(10));
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "DriftScan reconcile failed; retrying");
                    sleep = Duration::from_secs(1);
                }
            }
        }
    }

    /// Observes, decides and acts once.
    pub async fn reconcile_once(&self) -> Result<Decisions, Error> {
        let scans = self.scans.state();
        let observed = self.observe(&scans).await;
        let prepared = self.prepare(&observed);
        let decisions = scheduler::decide_with(&observed, &prepared);
        let by_key: HashMap<ScanKey, &Arc<DriftScan>> = scans
            .iter()
            .map(|s| {
                (
                    ScanKey::new(s.namespace().unwrap_or_default(), s.name_any()),
                    s,
                )
            })
            .collect();
        let created = act(
            &self.client,
            &decisions,
            &|key| by_key.get(key).map(|s| s.as_ref()),
            &self.settings.job_defaults,
        )
        .await?;
        {
            let mut expected = self.expectations.lock().await;
            for plan in created {
                expected.insert(
                    plan.name.clone(),
                    (
                        JobState {
                            scan: plan.scan.clone(),
                            name: plan.name.clone(),
                            run: plan.run.clone(),
                            stacks: plan.stacks.clone(),
                            phase: JobPhase::Active,
                        },
                        Instant::now(),
                    ),
                );
            }
        }
        for event in &decisions.events {
            if let Some(scan) = by_key.get(&event.scan) {
                let reference: ObjectReference = scan.object_ref(&());
                let ev = Event {
                    type_: if event.warning {
                        EventType::Warning
                    } else {
                        EventType::Normal
                    },
                    reason: event.reason.into(),
                    note: Some(event.message.clone()),
                    action: "Scan".into(),
                    secondary: None,
                };
                if let Err(err) = self.recorder.publish(&ev, &reference).await {
                    tracing::warn!(error = %err, scan = %event.scan, "cannot record an Event");
                }
            }
            tracing::info!(scan = %event.scan, reason = event.reason, message = %event.message, "run event");
        }
        self.record_metrics(&observed, &decisions);
        Ok(decisions)
    }

    async fn observe(&self, scans: &[Arc<DriftScan>]) -> Observed {
        let mut jobs: Vec<JobState> = self
            .jobs
            .state()
            .iter()
            .filter_map(|j| job_state(j))
            .collect();
        {
            let mut expected = self.expectations.lock().await;
            expected.retain(|name, (_, at)| {
                at.elapsed() < EXPECTATION_TTL && !jobs.iter().any(|j| &j.name == name)
            });
            jobs.extend(expected.values().map(|(j, _)| j.clone()));
        }
        Observed {
            scans: scans.iter().map(|s| scan_state(s)).collect(),
            jobs,
            reports: self
                .reports
                .state()
                .iter()
                .filter_map(|r| report_state(r))
                .collect(),
            now: Utc::now(),
            max_concurrent_jobs: self.settings.max_concurrent_jobs,
        }
    }

    fn record_metrics(&self, observed: &Observed, decisions: &Decisions) {
        let m = &self.metrics;
        m.queue_depth.set(decisions.queue_depth as i64);
        m.jobs_active.set(decisions.jobs_active as i64);
        let now = observed.now;
        for plan in &decisions.create {
            if let Some((_, status)) = decisions.statuses.iter().find(|(k, _)| k == &plan.scan) {
                if let Some(run) = &status.last_run {
                    let wait = (now - of_time(&run.started_at)).num_milliseconds() as f64 / 1000.0;
                    for _ in &plan.stacks {
                        m.wait_seconds.observe(wait.max(0.0));
                    }
                }
            }
        }
        for scan in &observed.scans {
            m.known_scan(&scan.key.namespace, &scan.key.name);
        }
        for event in &decisions.events {
            m.run_event(&event.scan.namespace, &event.scan.name, event.reason);
            if matches!(event.reason, "RunSucceeded" | "RunFailed" | "RunTimedOut") {
                if let Some(run) = decisions
                    .statuses
                    .iter()
                    .find(|(k, _)| k == &event.scan)
                    .and_then(|(_, s)| s.last_run.as_ref())
                {
                    let d = (now - of_time(&run.started_at)).num_milliseconds() as f64 / 1000.0;
                    m.duration_seconds.observe(d.max(0.0));
                }
            }
        }
        let oldest = observed
            .scans
            .iter()
            .filter_map(|s| s.status.last_run.as_ref())
            .filter(|r| r.running > 0)
            .map(|r| (now - of_time(&r.started_at)).num_seconds())
            .max()
            .unwrap_or(0);
        m.oldest_running_seconds.set(oldest);
        for report in self.reports.state() {
            let (Some(state), Some(status)) = (report_state(&report), report.status.as_ref())
            else {
                continue;
            };
            let items = status.items.len() as i64 + i64::from(status.truncated_items);
            let name = match state.status {
                DriftStatus::InSync => "InSync",
                DriftStatus::Drifted => "Drifted",
                DriftStatus::Error => "Error",
            };
            m.set_stack(
                &state.scan.namespace,
                &state.scan.name,
                &state.stack,
                name,
                items,
            );
        }
    }
}

/// Whether a DriftScan watch event may reach the cache: those of namespaces the operator does
/// not act on are dropped, with one log line per DriftScan.
fn keep_scan_event(
    tenancy: &Tenancy,
    ignored: &mut std::collections::HashSet<ScanKey>,
    event: &Result<watcher::Event<DriftScan>, watcher::Error>,
) -> bool {
    let scan = match event {
        Ok(watcher::Event::Apply(s) | watcher::Event::InitApply(s) | watcher::Event::Delete(s)) => {
            s
        }
        _ => return true,
    };
    let namespace = scan.namespace().unwrap_or_default();
    if tenancy.watches(&namespace) {
        return true;
    }
    if ignored.insert(ScanKey::new(namespace.clone(), scan.name_any())) {
        tracing::warn!(namespace = %namespace, scan = %scan.name_any(), "DriftScan ignored: its namespace is not one of --scan-namespace");
    }
    false
}

fn spawn_watch<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    mut stream: futures::stream::BoxStream<'static, Result<T, E>>,
    wake: Arc<Notify>,
) {
    tokio::spawn(async move {
        while let Some(item) = stream.next().await {
            match item {
                Ok(_) => wake.notify_one(),
                Err(err) => tracing::warn!(error = %err, "watch error"),
            }
        }
    });
}

/// Carries out `decisions`: creates the Jobs (an existing one is fine), deletes Jobs of
/// cancelled runs (a missing one is fine), then writes the statuses by server-side apply with
/// the `resourceVersion` they were computed from (a conflict is skipped: the next decision
/// sees the newer object). Returns the Jobs created.
pub async fn act<'a>(
    client: &Client,
    decisions: &'a Decisions,
    scan_of: &(dyn Fn(&ScanKey) -> Option<&'a DriftScan> + Sync),
    defaults: &JobDefaults,
) -> Result<Vec<&'a JobPlan>, Error> {
    let mut created = Vec::new();
    for plan in &decisions.create {
        let Some(scan) = scan_of(&plan.scan) else {
            continue;
        };
        let api: Api<Job> = Api::namespaced(client.clone(), &plan.scan.namespace);
        match api
            .create(
                &PostParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &build_job(scan, plan, defaults),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(scan = %plan.scan, job = %plan.name, stacks = plan.stacks.len(), image = %plan.image, commit = ?plan.commit, "scan Job created");
                created.push(plan);
            }
            Err(kube::Error::Api(e)) if e.code == 409 => created.push(plan),
            Err(e) => return Err(e.into()),
        }
    }
    for (key, name) in &decisions.delete {
        let api: Api<Job> = Api::namespaced(client.clone(), &key.namespace);
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => tracing::info!(scan = %key, job = %name, "scan Job of a finished run deleted"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (key, status) in &decisions.statuses {
        let resource_version = scan_of(key).and_then(|s| s.metadata.resource_version.clone());
        match apply_status(client, key, status, resource_version).await {
            Ok(()) => {}
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 || e.code == 404 => {
                tracing::debug!(scan = %key, "status changed meanwhile; deciding again");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Writes a DriftScan's status by server-side apply, conditional on `resource_version`.
pub async fn apply_status(
    client: &Client,
    key: &ScanKey,
    status: &DriftScanStatus,
    resource_version: Option<String>,
) -> Result<(), Error> {
    let api: Api<DriftScan> = Api::namespaced(client.clone(), &key.namespace);
    let mut metadata = serde_json::json!({ "name": key.name });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    let patch = serde_json::json!({
        "apiVersion": DriftScan::api_version(&()),
        "kind": DriftScan::kind(&()),
        "metadata": metadata,
        "status": status,
    });
    api.patch_status(
        &key.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Lists the scan Jobs of a DriftScan's run (for the webhook and tests).
pub async fn run_jobs(client: &Client, key: &ScanKey, run: &str) -> Result<Vec<Job>, Error> {
    let api: Api<Job> = Api::namespaced(client.clone(), &key.namespace);
    let selector = format!("{SCAN_LABEL}={},{RUN_LABEL}={run}", key.name);
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

#[cfg(test)]
mod tests;
