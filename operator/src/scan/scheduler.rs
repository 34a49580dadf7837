//! The DriftScan scheduler: a pure function from what is observed (DriftScans with their
//! status, scan Jobs, DriftReports, the time, the global capacity) to what to do (Jobs to
//! create or delete, statuses to write, Events to record).
//!
//! Guarantees:
//! - Everything the scheduler knows is re-derived from its inputs on every call, so a restart
//!   or a leader change resumes a run where it was: a unit covered by a Job of its run is
//!   running whatever the status says, a unit with a DriftReport of its run is done, and the
//!   attempts of a unit are at least the number of Jobs of its run that covered it.
//! - Job names are a function of (scan, run, stacks, attempt), so deciding twice on the same
//!   state asks for the same Jobs (the second create is an `AlreadyExists`), never for more.
//! - A Job that is not finished (pending, or with a pod that never started) holds its stacks
//!   and a capacity slot until it finishes or disappears; it is never re-created.
//!
//! Assumptions: Jobs are listed with the labels `driftless.dev/scan` and `driftless.dev/run`
//! and the annotation `driftless.dev/stacks`; the caller adds the Jobs it created but does not
//! see yet (its "expectations") to `Observed::jobs`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use driftless_crds::drift_report::DriftStatus;
use driftless_crds::drift_scan::{
    DriftScanSpec, DriftScanStatus, RunPhase, RunStatus, RunSummary, TriggerKind, UnitPhase,
    UnitStatus,
};
use driftless_crds::time::{of_time, time};

use super::queue::{self, QueuedUnit, ScanKey};
use super::triggers::{self, RunRequest};

/// How long a Job that succeeded may wait for its DriftReports to show up before its stacks
/// without a report count as a failed attempt (the report watch can lag the Job watch).
pub const REPORT_GRACE_SECONDS: i64 = 30;

/// Most units a run holds (the bound of `status.lastRun.units`).
pub const MAX_UNITS: usize = 1000;

/// Condition type set while the last trigger could not start a run (reason `RunFailed`, the
/// message says why: a refused DriftScan, an unreadable repository); removed when a run starts.
pub const STALLED: &str = "Stalled";

fn set_stalled(
    status: &mut DriftScanStatus,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    if let Some(c) = status.conditions.iter_mut().find(|c| c.type_ == STALLED) {
        if c.message == message && c.status == "True" {
            return;
        }
    }
    status.conditions.retain(|c| c.type_ != STALLED);
    status.conditions.push(driftless_crds::common::Condition {
        type_: STALLED.into(),
        status: "True".into(),
        reason: "RunFailed".into(),
        message: message.to_owned(),
        observed_generation: generation,
        last_transition_time: time(now),
    });
}

/// One DriftScan as observed.
#[derive(Clone, Debug)]
pub struct ScanState {
    /// Namespace and name.
    pub key: ScanKey,
    /// Spec.
    pub spec: DriftScanSpec,
    /// Status.
    pub status: DriftScanStatus,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Value of the `driftless.dev/trigger` annotation.
    pub annotation: Option<String>,
}

/// How a Job is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobPhase {
    /// Not finished: pending, or its pod runs.
    Active,
    /// Finished with success (at the time, when known).
    Succeeded(Option<DateTime<Utc>>),
    /// Finished with failure (deadline exceeded, pod failed).
    Failed,
}

/// One scan Job as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobState {
    /// The DriftScan it belongs to.
    pub scan: ScanKey,
    /// Job name.
    pub name: String,
    /// Run id.
    pub run: String,
    /// The stacks it plans.
    pub stacks: Vec<String>,
    /// Phase.
    pub phase: JobPhase,
}

/// The latest DriftReport of one stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportState {
    /// The DriftScan.
    pub scan: ScanKey,
    /// The stack.
    pub stack: String,
    /// `status.summary.run`.
    pub run: Option<String>,
    /// `status.summary.status`.
    pub status: DriftStatus,
}

/// Everything the scheduler looks at.
#[derive(Clone, Debug)]
pub struct Observed {
    /// Every DriftScan.
    pub scans: Vec<ScanState>,
    /// Every scan Job (plus those created but not yet seen).
    pub jobs: Vec<JobState>,
    /// Every stack DriftReport.
    pub reports: Vec<ReportState>,
    /// Now.
    pub now: DateTime<Utc>,
    /// Most scan Jobs running at once, over all DriftScans.
    pub max_concurrent_jobs: u32,
}

/// A Job to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobPlan {
    /// The DriftScan.
    pub scan: ScanKey,
    /// Job name.
    pub name: String,
    /// Run id.
    pub run: String,
    /// Commit of the run, when known.
    pub commit: Option<String>,
    /// Stacks, in order.
    pub stacks: Vec<String>,
    /// Image of the Job's IaC container (every stack of a Job asks for the same one).
    pub image: String,
}

/// An Event to record on a DriftScan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventPlan {
    /// The DriftScan.
    pub scan: ScanKey,
    /// `RunStarted`, `RunSucceeded`, `RunFailed`, `RunCancelled`, `RunTimedOut`.
    pub reason: &'static str,
    /// Human text.
    pub message: String,
    /// A Warning (not Normal) Event.
    pub warning: bool,
}

/// What to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decisions {
    /// Jobs to create, before the statuses are written.
    pub create: Vec<JobPlan>,
    /// Jobs to delete (of cancelled or timed-out runs): (scan, Job name).
    pub delete: Vec<(ScanKey, String)>,
    /// New statuses, only of DriftScans whose status changes.
    pub statuses: Vec<(ScanKey, DriftScanStatus)>,
    /// Events.
    pub events: Vec<EventPlan>,
    /// Units still queued after this decision, including those waiting for their run's images.
    pub queue_depth: usize,
    /// Jobs not finished, including those created now.
    pub jobs_active: usize,
    /// Stacks per Job chosen for this decision.
    pub batch_size: usize,
    /// When to decide again at the latest (schedule, timeout, report grace).
    pub wake_at: Option<DateTime<Utc>>,
}

/// Why a run could not be started.
#[derive(Clone, Debug, PartialEq)]
pub enum StartError {
    /// A run is active and the DriftScan does not cancel it: its progress.
    Busy(Box<RunStatus>),
    /// The stacks could not be resolved.
    Stacks(String),
}

/// A run id unique within the DriftScan: the UTC start time, with a suffix when that id was
/// already used.
pub fn run_id(status: &DriftScanStatus, now: DateTime<Utc>) -> String {
    let base = now.format("%Y%m%d-%H%M%S").to_string();
    let used: BTreeSet<&str> = status
        .last_run
        .iter()
        .map(|r| r.id.as_str())
        .chain(status.history.iter().map(|r| r.id.as_str()))
        .collect();
    if !used.contains(base.as_str()) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|id| !used.contains(id.as_str()))
        .unwrap_or(base)
}

/// Name of the Job of `stacks` of `run`, attempt `attempt` of its first stack: at most 63
/// characters, the same for the same inputs.
pub fn job_name(scan: &str, run: &str, stacks: &[String], attempt: u32) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [run.as_bytes(), &attempt.to_le_bytes()]
        .into_iter()
        .chain(stacks.iter().map(|s| s.as_bytes()))
    {
        for b in part.iter().chain([&0u8]) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    let suffix = format!("-{run}-{:08x}", hash as u32);
    let room = 63usize.saturating_sub(suffix.len());
    let mut prefix: String = scan.chars().take(room).collect();
    while prefix.ends_with('-') {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

fn is_active(run: &RunStatus) -> bool {
    run.phase == RunPhase::Running
}

/// Starts a run on `status` (the lock: refused with the active run's progress unless
/// `spec.cancelInflightOnNewTrigger`, which cancels it). `stacks` are the DriftScan's stacks;
/// a request naming stacks keeps only those. Returns the cancelled run's id, if any.
pub fn start_run(
    spec: &DriftScanSpec,
    status: &mut DriftScanStatus,
    request: &RunRequest,
    stacks: Vec<String>,
    now: DateTime<Utc>,
) -> Result<Option<String>, StartError> {
    let mut cancelled = None;
    if let Some(run) = status.last_run.as_mut().filter(|r| is_active(r)) {
        if !spec.cancel_inflight_on_new_trigger {
            return Err(StartError::Busy(Box::new(run.clone())));
        }
        run.phase = RunPhase::Cancelled;
        run.finished_at = Some(time(now));
        cancelled = Some(run.id.clone());
    }
    let mut stacks = match &request.stacks {
        Some(only) => stacks.into_iter().filter(|s| only.contains(s)).collect(),
        None => stacks,
    };
    let mut seen = BTreeSet::new();
    stacks.retain(|s| seen.insert(s.clone()));
    stacks.truncate(MAX_UNITS);
    if stacks.is_empty() {
        return Err(StartError::Stacks("no stack to scan".into()));
    }
    archive(spec, status);
    let id = run_id(status, now);
    let mut run = RunStatus {
        id,
        trigger: request.kind,
        actor: request.actor.clone(),
        commit: request.commit.clone(),
        phase: RunPhase::Running,
        started_at: time(now),
        finished_at: None,
        total: 0,
        queued: 0,
        running: 0,
        completed: 0,
        drifted: 0,
        errored: 0,
        units: stacks
            .into_iter()
            .map(|stack| UnitStatus {
                stack,
                phase: UnitPhase::Queued,
                attempts: 0,
                job: None,
            })
            .collect(),
    };
    count(&mut run);
    status.last_run = Some(run);
    Ok(cancelled)
}

/// Moves a finished `lastRun` into the history (newest first, at most `historyLimit`).
fn archive(spec: &DriftScanSpec, status: &mut DriftScanStatus) {
    let Some(run) = status.last_run.as_ref().filter(|r| !is_active(r)) else {
        return;
    };
    if !status.history.iter().any(|h| h.id == run.id) {
        status.history.insert(
            0,
            RunSummary {
                id: run.id.clone(),
                trigger: run.trigger,
                commit: run.commit.clone(),
                phase: run.phase,
                started_at: run.started_at.clone(),
                finished_at: run.finished_at.clone(),
                total: run.total,
                drifted: run.drifted,
                errored: run.errored,
            },
        );
    }
    status.history.truncate(spec.history_limit as usize);
}

/// Recomputes a run's counters from its units.
pub fn count(run: &mut RunStatus) {
    let n = |p: UnitPhase| run.units.iter().filter(|u| u.phase == p).count() as u32;
    run.total = run.units.len() as u32;
    run.queued = n(UnitPhase::Queued);
    run.running = n(UnitPhase::Running);
    run.drifted = n(UnitPhase::Drifted);
    run.errored = n(UnitPhase::Error);
    run.completed = n(UnitPhase::InSync) + run.drifted + run.errored;
}

fn terminal(phase: UnitPhase) -> bool {
    matches!(
        phase,
        UnitPhase::InSync | UnitPhase::Drifted | UnitPhase::Error
    )
}

/// Re-derives every unit of an active run from the Jobs and DriftReports. Returns the
/// earliest time a Job's report grace ends, if any unit waits on one.
fn derive_units(
    spec: &DriftScanSpec,
    run: &mut RunStatus,
    jobs: &[&JobState],
    reports: &BTreeMap<&str, &ReportState>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let max_attempts = spec.retries + 1;
    let mut wake = None;
    for unit in &mut run.units {
        if terminal(unit.phase) {
            continue;
        }
        let covering: Vec<&&JobState> = jobs
            .iter()
            .filter(|j| j.stacks.iter().any(|s| s == &unit.stack))
            .collect();
        unit.attempts = unit.attempts.max(covering.len() as u32);
        if let Some(job) = covering.iter().find(|j| j.phase == JobPhase::Active) {
            unit.phase = UnitPhase::Running;
            unit.job = Some(job.name.clone());
            continue;
        }
        let report = reports
            .get(unit.stack.as_str())
            .filter(|r| r.run.as_deref() == Some(run.id.as_str()));
        let retry_or_fail = |unit: &mut UnitStatus| {
            unit.phase = if unit.attempts < max_attempts {
                UnitPhase::Queued
            } else {
                UnitPhase::Error
            };
            unit.job = None;
        };
        match report.map(|r| r.status) {
            Some(DriftStatus::InSync) => unit.phase = UnitPhase::InSync,
            Some(DriftStatus::Drifted) => unit.phase = UnitPhase::Drifted,
            Some(DriftStatus::Error) => retry_or_fail(unit),
            None => {
                let grace_end = covering
                    .iter()
                    .filter_map(|j| match j.phase {
                        JobPhase::Succeeded(Some(at)) => {
                            Some(at + chrono::Duration::seconds(REPORT_GRACE_SECONDS))
                        }
                        _ => None,
                    })
                    .max()
                    .filter(|end| *end > now);
                if let Some(end) = grace_end {
                    unit.phase = UnitPhase::Running;
                    wake = Some(wake.map_or(end, |w: DateTime<Utc>| w.min(end)));
                } else if unit.attempts > 0 {
                    // Its Jobs failed, succeeded without a report, or disappeared.
                    retry_or_fail(unit);
                } else {
                    unit.phase = UnitPhase::Queued;
                    unit.job = None;
                }
            }
        }
    }
    wake
}

fn finish(
    key: &ScanKey,
    run: &mut RunStatus,
    phase: RunPhase,
    now: DateTime<Utc>,
    events: &mut Vec<EventPlan>,
) {
    run.phase = phase;
    run.finished_at = Some(time(now));
    count(run);
    let (reason, warning) = match phase {
        RunPhase::Succeeded => ("RunSucceeded", false),
        RunPhase::Failed => ("RunFailed", true),
        RunPhase::Cancelled => ("RunCancelled", false),
        RunPhase::Running => ("RunStarted", false),
    };
    events.push(EventPlan {
        scan: key.clone(),
        reason,
        message: format!(
            "run {} {}: {} stacks, {} drifted, {} errored",
            run.id,
            match phase {
                RunPhase::Succeeded => "succeeded",
                RunPhase::Failed => "failed",
                RunPhase::Cancelled => "was cancelled",
                RunPhase::Running => "is running",
            },
            run.total,
            run.drifted,
            run.errored
        ),
        warning,
    });
}

/// The stacks of a DriftScan, for starting a run: resolved by the caller (explicit `stacks`,
/// plus `discover` globs against the repository).
pub type StackResolver<'a> = &'a dyn Fn(&ScanState) -> Result<Vec<String>, String>;

/// What a new run of a DriftScan scans, as resolved from its repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPlan {
    /// The stacks.
    pub stacks: Vec<String>,
    /// The commit every Job of the run plans (`None`: the runner resolves `ref` itself).
    pub commit: Option<String>,
}

/// The outcome of resolving a DriftScan's repository for a new run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Resolved: start the run.
    Ready(RunPlan),
    /// Still fetching: leave the trigger pending (it is decided again once resolved).
    Pending,
    /// Cannot be resolved: the run does not start (a Warning Event says why).
    Failed(String),
}

/// The repository-dependent inputs of [`decide_with`]. Implementations only look things up
/// (the controller fetches in the background and wakes the scheduler when done).
pub trait RunSource {
    /// The stacks and commit of a new run of `scan`.
    fn resolve(&self, scan: &ScanState) -> Resolution;
    /// The image of each stack of `run` at its commit; `None` while unknown (its queued units
    /// wait). A stack missing from the map gets the template's `defaultVersion` image.
    fn images(&self, scan: &ScanState, run: &RunStatus) -> Option<BTreeMap<String, String>>;
}

struct Stacks<'a>(StackResolver<'a>);

impl RunSource for Stacks<'_> {
    fn resolve(&self, scan: &ScanState) -> Resolution {
        match (self.0)(scan) {
            Ok(stacks) => Resolution::Ready(RunPlan {
                stacks,
                commit: None,
            }),
            Err(e) => Resolution::Failed(e),
        }
    }

    fn images(&self, _: &ScanState, _: &RunStatus) -> Option<BTreeMap<String, String>> {
        Some(BTreeMap::new())
    }
}

/// The image of the job template at its `defaultVersion`.
pub fn default_image(spec: &DriftScanSpec) -> String {
    let t = &spec.job_template;
    crate::runner::engine::render_image(&t.image, &t.default_version)
}

/// [`decide_with`] for stacks resolved without the repository: no pinned commit, every Job
/// on the template's `defaultVersion` image.
pub fn decide(observed: &Observed, resolve: StackResolver<'_>) -> Decisions {
    decide_with(observed, &Stacks(resolve))
}

/// Decides everything for every DriftScan. See the module documentation.
pub fn decide_with(observed: &Observed, source: &dyn RunSource) -> Decisions {
    let now = observed.now;
    let mut out = Decisions::default();
    let mut jobs_by_scan: BTreeMap<&ScanKey, Vec<&JobState>> = BTreeMap::new();
    for job in &observed.jobs {
        jobs_by_scan.entry(&job.scan).or_default().push(job);
    }
    let mut reports_by_scan: BTreeMap<&ScanKey, BTreeMap<&str, &ReportState>> = BTreeMap::new();
    for report in &observed.reports {
        reports_by_scan
            .entry(&report.scan)
            .or_default()
            .insert(report.stack.as_str(), report);
    }
    let no_jobs = Vec::new();
    let no_reports = BTreeMap::new();

    let mut statuses: Vec<(usize, DriftScanStatus)> = Vec::new();
    let mut queue: Vec<QueuedUnit> = Vec::new();
    let mut active_jobs_total = 0usize;
    let mut waiting_for_images = 0usize;
    let mut scan_free: BTreeMap<ScanKey, usize> = BTreeMap::new();
    let mut wake: Option<DateTime<Utc>> = None;
    let mut wake_at = |t: DateTime<Utc>| wake = Some(wake.map_or(t, |w: DateTime<Utc>| w.min(t)));

    for (index, scan) in observed.scans.iter().enumerate() {
        let key = &scan.key;
        let jobs = jobs_by_scan.get(key).unwrap_or(&no_jobs);
        let reports = reports_by_scan.get(key).unwrap_or(&no_reports);
        let mut status = scan.status.clone();
        status.observed_generation = scan.generation;

        // 1. Progress of the active run.
        if let Some(run) = status.last_run.as_mut().filter(|r| is_active(r)) {
            let run_jobs: Vec<&JobState> =
                jobs.iter().copied().filter(|j| j.run == run.id).collect();
            if let Some(t) = derive_units(&scan.spec, run, &run_jobs, reports, now) {
                wake_at(t);
            }
            count(run);
            let deadline = of_time(&run.started_at)
                + chrono::Duration::from_std(scan.spec.timeout.get())
                    .unwrap_or(chrono::Duration::MAX);
            if run.completed == run.total {
                let phase = if run.errored == 0 {
                    RunPhase::Succeeded
                } else {
                    RunPhase::Failed
                };
                finish(key, run, phase, now, &mut out.events);
            } else if now >= deadline {
                for unit in &mut run.units {
                    if !terminal(unit.phase) {
                        unit.phase = UnitPhase::Error;
                    }
                }
                finish(key, run, RunPhase::Failed, now, &mut out.events);
                if let Some(event) = out.events.last_mut() {
                    event.reason = "RunTimedOut";
                    event.message = format!("{} (timed out)", event.message);
                }
            }
        }

        // 2. Triggers.
        let due = triggers::due(&scan.spec, &status, scan.annotation.as_deref(), now);
        status.next_scheduled_at = due.next_scheduled_at.map(time);
        if let Some(t) = due.next_scheduled_at {
            wake_at(t);
        }
        let busy = status.last_run.as_ref().is_some_and(is_active);
        // Jobs of a run the status does not know: the run was started and its Jobs created,
        // but its status was never written (crash). A new run adopts that id, so the Jobs
        // count for it instead of being deleted and done again.
        let known: BTreeSet<&str> = status
            .last_run
            .iter()
            .map(|r| r.id.as_str())
            .chain(status.history.iter().map(|h| h.id.as_str()))
            .collect();
        let orphan = jobs
            .iter()
            .filter(|j| !known.contains(j.run.as_str()))
            .map(|j| j.run.clone())
            .max();
        if let Some(request) = due.request {
            let may_start = !busy
                || (request.kind == TriggerKind::Manual
                    && scan.spec.cancel_inflight_on_new_trigger);
            let resolution = if may_start {
                source.resolve(scan)
            } else {
                Resolution::Pending
            };
            if may_start && resolution == Resolution::Pending {
                // The repository is still being fetched: the trigger stays due (a fired
                // schedule keeps its past time, an annotation stays unrecorded).
                if request.kind == TriggerKind::Schedule {
                    status.next_scheduled_at = scan.status.next_scheduled_at.clone();
                }
            } else if may_start {
                let started = match resolution {
                    Resolution::Ready(plan) => {
                        let request = RunRequest {
                            commit: plan.commit.or(request.commit.clone()),
                            ..request.clone()
                        };
                        start_run(&scan.spec, &mut status, &request, plan.stacks, now).map_err(
                            |e| match e {
                                StartError::Stacks(m) => m,
                                StartError::Busy(_) => "a run is active".into(),
                            },
                        )
                    }
                    Resolution::Failed(m) => Err(m),
                    Resolution::Pending => Err("the repository is not resolved yet".into()),
                };
                match started {
                    Ok(cancelled) => {
                        status.conditions.retain(|c| c.type_ != STALLED);
                        if let (Some(id), Some(run)) = (orphan, status.last_run.as_mut()) {
                            run.id = id;
                            let run_jobs: Vec<&JobState> =
                                jobs.iter().copied().filter(|j| j.run == run.id).collect();
                            if let Some(t) = derive_units(&scan.spec, run, &run_jobs, reports, now)
                            {
                                wake_at(t);
                            }
                            count(run);
                        }
                        if let Some(id) = cancelled {
                            out.events.push(EventPlan {
                                scan: key.clone(),
                                reason: "RunCancelled",
                                message: format!("run {id} was cancelled by a new trigger"),
                                warning: false,
                            });
                        }
                        if let Some(run) = &status.last_run {
                            out.events.push(EventPlan {
                                scan: key.clone(),
                                reason: "RunStarted",
                                message: format!(
                                    "run {} started by {:?}: {} stacks",
                                    run.id, run.trigger, run.total
                                ),
                                warning: false,
                            });
                        }
                    }
                    Err(message) => {
                        let message = format!("cannot start a run: {message}");
                        set_stalled(&mut status, &message, scan.generation, now);
                        out.events.push(EventPlan {
                            scan: key.clone(),
                            reason: "RunFailed",
                            message,
                            warning: true,
                        });
                    }
                }
                if let Some(value) = due.annotation {
                    status.last_trigger = Some(value);
                }
            } else if request.kind == TriggerKind::Schedule {
                out.events.push(EventPlan {
                    scan: key.clone(),
                    reason: "ScheduleSkipped",
                    message: "the schedule fired while a run was active".into(),
                    warning: false,
                });
            }
            // A manual trigger during a run waits: lastTrigger is unchanged, so it starts the
            // run after this one.
        }

        if let Some(run) = status.last_run.as_ref().filter(|r| is_active(r)) {
            let deadline = of_time(&run.started_at)
                + chrono::Duration::from_std(scan.spec.timeout.get())
                    .unwrap_or(chrono::Duration::MAX);
            wake_at(deadline);
        }

        // 3. Jobs not finished hold capacity; those of other runs are cancelled.
        let current = status
            .last_run
            .as_ref()
            .filter(|r| is_active(r))
            .map(|r| r.id.clone());
        let mut active_here = 0usize;
        for job in jobs.iter().filter(|j| j.phase == JobPhase::Active) {
            active_here += 1;
            if current.as_deref() != Some(job.run.as_str()) {
                out.delete.push((key.clone(), job.name.clone()));
            }
        }
        active_jobs_total += active_here;
        scan_free.insert(
            key.clone(),
            (scan.spec.max_parallel as usize).saturating_sub(active_here),
        );
        if let Some(run) = status.last_run.as_ref().filter(|r| is_active(r)) {
            // Units wait while the images of the run's commit are not known yet; they still
            // count in the queue depth.
            if let Some(images) = source.images(scan, run) {
                let fallback = default_image(&scan.spec);
                for (i, unit) in run.units.iter().enumerate() {
                    if unit.phase == UnitPhase::Queued {
                        queue.push(QueuedUnit {
                            scan: key.clone(),
                            run: run.id.clone(),
                            stack: unit.stack.clone(),
                            trigger: run.trigger,
                            since: of_time(&run.started_at),
                            index: i,
                            image: images
                                .get(&unit.stack)
                                .cloned()
                                .unwrap_or_else(|| fallback.clone()),
                        });
                    }
                }
            } else {
                waiting_for_images += run
                    .units
                    .iter()
                    .filter(|u| u.phase == UnitPhase::Queued)
                    .count();
            }
        }
        statuses.push((index, status));
    }

    // 4. The global queue.
    queue::sort(&mut queue);
    let capacity = observed.max_concurrent_jobs as usize;
    let batch = queue::batch_size(queue.len(), capacity);
    let global_free = capacity.saturating_sub(active_jobs_total);
    let batches = queue::plan_batches(&queue, global_free, &scan_free, batch);
    let mut started = 0usize;
    for b in batches {
        let Some((_, status)) = statuses
            .iter_mut()
            .find(|(i, _)| observed.scans[*i].key == b.scan)
        else {
            continue;
        };
        let Some(run) = status.last_run.as_mut() else {
            continue;
        };
        let first_attempt = run
            .units
            .iter()
            .find(|u| Some(&u.stack) == b.stacks.first())
            .map_or(1, |u| u.attempts + 1);
        let name = job_name(&b.scan.name, &run.id, &b.stacks, first_attempt);
        for unit in run.units.iter_mut().filter(|u| b.stacks.contains(&u.stack)) {
            unit.phase = UnitPhase::Running;
            unit.attempts += 1;
            unit.job = Some(name.clone());
        }
        count(run);
        started += b.stacks.len();
        out.create.push(JobPlan {
            scan: b.scan,
            name,
            run: run.id.clone(),
            commit: run.commit.clone(),
            stacks: b.stacks,
            image: b.image,
        });
    }
    out.queue_depth = queue.len() - started + waiting_for_images;
    out.jobs_active = active_jobs_total + out.create.len();
    out.batch_size = batch;
    out.wake_at = wake;
    for (index, status) in statuses {
        let scan = &observed.scans[index];
        if status != scan.status {
            out.statuses.push((scan.key.clone(), status));
        }
    }
    out
}

#[cfg(test)]
mod tests;
