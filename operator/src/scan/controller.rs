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
//! - Only the holder of the Lease `driftless-operator` in the operator's namespace acts.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use driftless_crds::drift_report::{DriftReport, DriftStatus};
use driftless_crds::drift_scan::{DriftScan, DriftScanStatus};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, ObjectReference, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Mutex, Notify};

use super::metrics::ScanMetrics;
use super::queue::ScanKey;
use super::scheduler::{
    self, Decisions, JobPhase, JobPlan, JobState, Observed, ReportState, ScanState,
};
use super::triggers::TRIGGER_ANNOTATION;
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
/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "driftless-operator";
/// How long a Job created but not yet seen still counts as running.
const EXPECTATION_TTL: Duration = Duration::from_secs(60);
/// Longest sleep between two decisions.
const SAFETY_NET: Duration = Duration::from_secs(30);

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The operator's namespace (its Lease).
    pub namespace: String,
    /// Image of the init container that provides the runner binary.
    pub runner_image: String,
    /// Most scan Jobs running at once over all DriftScans.
    pub max_concurrent_jobs: u32,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// Take part in leader election (off: act always, for a single replica or tests).
    pub leader_election: bool,
}

/// Builds the Job of `plan` for `scan`, per the runner contract.
pub fn build_job(scan: &DriftScan, plan: &JobPlan, runner_image: &str) -> Job {
    let t = &scan.spec.job_template;
    let image = t
        .image
        .replace("{{ version }}", &t.default_version)
        .replace("{{version}}", &t.default_version);
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
                    service_account_name: t.service_account_name.clone(),
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
            .map(|t| t.0);
        JobPhase::Succeeded(at)
    } else if condition("Failed").is_some() {
        JobPhase::Failed
    } else if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
        JobPhase::Succeeded(status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0))
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

/// The stacks of a DriftScan: `spec.source.git.stacks`, plus the directories matching
/// `discover` when the repository is a `file://` URL (read from its work tree). `discover`
/// on other URLs is not resolved by the operator yet.
pub fn resolve_stacks(scan: &ScanState) -> Result<Vec<String>, String> {
    let git = &scan.spec.source.git;
    let mut stacks = git.stacks.clone();
    if !git.discover.is_empty() {
        let Some(root) = git.url.strip_prefix("file://") else {
            if stacks.is_empty() {
                return Err(format!(
                    "spec.source.git.discover: stack discovery needs a file:// URL for now, not {:?}; list the stacks in spec.source.git.stacks",
                    git.url
                ));
            }
            return Ok(stacks);
        };
        let mut found = discover(std::path::Path::new(root), &git.discover, scan.spec.engine)?;
        found.retain(|s| !stacks.contains(s));
        stacks.extend(found);
    }
    Ok(stacks)
}

/// Directories under `root` matching one of `globs` and holding `*.tf` files (or a
/// `terragrunt.hcl` for Terragrunt), relative to `root`, sorted.
pub fn discover(
    root: &std::path::Path,
    globs: &[String],
    engine: driftless_crds::drift_scan::Engine,
) -> Result<Vec<String>, String> {
    let mut builder = globset::GlobSetBuilder::new();
    for g in globs {
        let glob =
            globset::Glob::new(g).map_err(|e| format!("spec.source.git.discover: {g:?}: {e}"))?;
        builder.add(glob);
    }
    let set = builder
        .build()
        .map_err(|e| format!("spec.source.git.discover: {e}"))?;
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut is_stack = false;
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') {
                    dirs.push(path);
                }
            } else if match engine {
                driftless_crds::drift_scan::Engine::Terragrunt => name == "terragrunt.hcl",
                _ => name.ends_with(".tf"),
            } {
                is_stack = true;
            }
        }
        if let (true, Ok(rel)) = (is_stack, dir.strip_prefix(root)) {
            let rel = rel.to_string_lossy().into_owned();
            if !rel.is_empty() && set.is_match(&rel) {
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
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
    leader: AtomicBool,
    expectations: Mutex<HashMap<String, (JobState, Instant)>>,
    recorder: Recorder,
}

impl ScanController {
    /// Starts the watches (as background tasks) and returns the controller; call
    /// [`ScanController::run`] to decide and act.
    pub fn start(client: Client, settings: Settings, metrics: ScanMetrics) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let (scans, scans_writer) = reflector::store();
        let (jobs, jobs_writer) = reflector::store();
        let (reports, reports_writer) = reflector::store();
        let scan_api: Api<DriftScan> = Api::all(client.clone());
        let job_api: Api<Job> = Api::all(client.clone());
        let report_api: Api<DriftReport> = Api::all(client.clone());
        spawn_watch(
            reflector::reflector(
                scans_writer,
                watcher(scan_api, watcher::Config::default())
                    .modify(|scan: &mut DriftScan| scan.managed_fields_mut().clear()),
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
                // The cache keeps what the scheduler and the metrics read: summaries and
                // item counts, not the items or managedFields (10,000 reports in < 100 MB).
                watcher(report_api, watcher::Config::default()).modify(
                    |report: &mut DriftReport| {
                        report.managed_fields_mut().clear();
                        report.annotations_mut().clear();
                        if let Some(status) = report.status.as_mut() {
                            status.truncated_items = status
                                .truncated_items
                                .saturating_add(status.items.len() as u32);
                            status.items = Vec::new();
                            status.history = Vec::new();
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
        Arc::new(Self {
            client,
            leader: AtomicBool::new(!settings.leader_election),
            settings,
            scans,
            jobs,
            reports,
            wake,
            metrics,
            expectations: Mutex::new(HashMap::new()),
            recorder,
        })
    }

    /// This replica holds the Lease (or leader election is off).
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
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

    /// Decides and acts forever: on every wake-up, at the next schedule or timeout, and at
    /// least every 30 s.
    pub async fn run(self: Arc<Self>) {
        if self.settings.leader_election {
            tokio::spawn(self.clone().elect());
        }
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
        let decisions = scheduler::decide(&observed, &resolve_stacks);
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
            &self.settings.runner_image,
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
                    let wait = (now - run.started_at.0).num_milliseconds() as f64 / 1000.0;
                    for _ in &plan.stacks {
                        m.wait_seconds.observe(wait.max(0.0));
                    }
                }
            }
        }
        for event in &decisions.events {
            if matches!(event.reason, "RunSucceeded" | "RunFailed" | "RunTimedOut") {
                if let Some(run) = decisions
                    .statuses
                    .iter()
                    .find(|(k, _)| k == &event.scan)
                    .and_then(|(_, s)| s.last_run.as_ref())
                {
                    let d = (now - run.started_at.0).num_milliseconds() as f64 / 1000.0;
                    m.duration_seconds.observe(d.max(0.0));
                }
            }
        }
        let oldest = observed
            .scans
            .iter()
            .filter_map(|s| s.status.last_run.as_ref())
            .filter(|r| r.running > 0)
            .map(|r| (now - r.started_at.0).num_seconds())
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

    /// Holds or waits for the Lease, renewing every 5 s (15 s lease).
    async fn elect(self: Arc<Self>) {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        loop {
            let leading = match try_acquire(&api, &self.settings.identity, 15).await {
                Ok(leading) => leading,
                Err(err) => {
                    tracing::warn!(error = %err, "leader election failed");
                    false
                }
            };
            if leading != self.is_leader() {
                tracing::info!(leading, identity = %self.settings.identity, "leadership changed");
                self.leader.store(leading, Ordering::Relaxed);
                self.wake.notify_one();
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    }
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

/// Takes or renews the Lease `driftless-operator` for `identity`. Returns whether this
/// identity holds it.
pub async fn try_acquire(api: &Api<Lease>, identity: &str, seconds: i32) -> Result<bool, Error> {
    let now = Utc::now();
    let fresh = |transitions: i32| Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(identity.into()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(MicroTime(now)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
        }),
    };
    let Some(mut lease) = api.get_opt(LEASE_NAME).await? else {
        return match api.create(&PostParams::default(), &fresh(0)).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        t.0 + chrono::Duration::seconds(i64::from(spec.lease_duration_seconds.unwrap_or(seconds)))
            < now
    });
    if holder != Some(identity) && !expired {
        return Ok(false);
    }
    let mut new = if holder == Some(identity) {
        let mut s = spec.clone();
        s.renew_time = Some(MicroTime(now));
        s
    } else {
        fresh(spec.lease_transitions.unwrap_or(0) + 1)
            .spec
            .unwrap_or_default()
    };
    new.lease_duration_seconds = Some(seconds);
    lease.spec = Some(new);
    // replace carries the resourceVersion: two candidates cannot both win.
    match api
        .replace(LEASE_NAME, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Carries out `decisions`: creates the Jobs (an existing one is fine), deletes Jobs of
/// cancelled runs (a missing one is fine), then writes the statuses by server-side apply with
/// the `resourceVersion` they were computed from (a conflict is skipped: the next decision
/// sees the newer object). Returns the Jobs created.
pub async fn act<'a>(
    client: &Client,
    decisions: &'a Decisions,
    scan_of: &(dyn Fn(&ScanKey) -> Option<&'a DriftScan> + Sync),
    runner_image: &str,
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
                &build_job(scan, plan, runner_image),
            )
            .await
        {
            Ok(_) => {
                tracing::info!(scan = %plan.scan, job = %plan.name, stacks = plan.stacks.len(), "scan Job created");
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
