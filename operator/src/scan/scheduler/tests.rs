//! Tests of the pure scheduler: unit tests of each rule, KEDA's pitfalls, and seeded property
//! tests that run many random runs with crashes and restarts at every step.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use driftless_crds::drift_report::DriftStatus;
use driftless_crds::drift_scan::{
    DriftScanSpec, DriftScanStatus, RunPhase, TriggerKind, UnitPhase,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::scan::queue::{ScanKey, MAX_BATCH};
use crate::scan::triggers::RunRequest;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap()
}

fn spec(stacks: usize, max_parallel: u32, retries: u32) -> DriftScanSpec {
    let stacks: Vec<String> = (0..stacks).map(|i| format!("live/s{i:03}")).collect();
    serde_json::from_value(serde_json::json!({
        "source": {"git": {"url": "file:///repo", "stacks": stacks}},
        "maxParallel": max_parallel,
        "retries": retries,
    }))
    .unwrap()
}

fn scan(name: &str, spec: DriftScanSpec) -> ScanState {
    ScanState {
        key: ScanKey::new("ns", name),
        spec,
        status: DriftScanStatus::default(),
        generation: Some(1),
        annotation: None,
    }
}

fn resolve(scan: &ScanState) -> Result<Vec<String>, String> {
    Ok(scan.spec.source.git.stacks.clone())
}

fn observed(scans: Vec<ScanState>, capacity: u32) -> Observed {
    Observed {
        scans,
        jobs: Vec::new(),
        reports: Vec::new(),
        now: t0(),
        max_concurrent_jobs: capacity,
    }
}

/// Applies decisions the way the controller does: Jobs first, then deletions, then statuses.
fn apply(o: &mut Observed, d: &Decisions, jobs: bool, statuses: bool) {
    if jobs {
        for plan in &d.create {
            if let Some(existing) = o.jobs.iter().find(|j| j.name == plan.name) {
                // AlreadyExists: the same name must mean the same Job.
                assert_eq!(existing.stacks, plan.stacks, "name reused for other stacks");
                continue;
            }
            o.jobs.push(JobState {
                scan: plan.scan.clone(),
                name: plan.name.clone(),
                run: plan.run.clone(),
                stacks: plan.stacks.clone(),
                phase: JobPhase::Active,
            });
        }
        for (_, name) in &d.delete {
            o.jobs.retain(|j| &j.name != name);
        }
    }
    if statuses {
        for (key, status) in &d.statuses {
            let scan = o.scans.iter_mut().find(|s| &s.key == key).unwrap();
            scan.status = status.clone();
        }
    }
}

fn run(o: &Observed, name: &str) -> RunStatus {
    o.scans
        .iter()
        .find(|s| s.key.name == name)
        .unwrap()
        .status
        .last_run
        .clone()
        .unwrap()
}

fn report(o: &mut Observed, job: &str, status: DriftStatus) {
    let job = o.jobs.iter().find(|j| j.name == job).unwrap().clone();
    for stack in &job.stacks {
        o.reports
            .retain(|r| !(r.scan == job.scan && &r.stack == stack));
        o.reports.push(ReportState {
            scan: job.scan.clone(),
            stack: stack.clone(),
            run: Some(job.run.clone()),
            status,
        });
    }
}

fn succeed(o: &mut Observed, job: &str) {
    let now = o.now;
    set_phase(o, job, JobPhase::Succeeded(Some(now)));
}

fn set_phase(o: &mut Observed, job: &str, phase: JobPhase) {
    o.jobs.iter_mut().find(|j| j.name == job).unwrap().phase = phase;
}

#[test]
fn manual_trigger_on_a_shallow_queue_gives_one_stack_per_job() {
    let mut s = scan("infra", spec(3, 4, 1));
    s.annotation = Some("1".into());
    let mut o = observed(vec![s], 10);
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 3);
    assert!(d.create.iter().all(|j| j.stacks.len() == 1));
    assert_eq!(d.batch_size, 1);
    assert_eq!(d.events[0].reason, "RunStarted");
    apply(&mut o, &d, true, true);
    let r = run(&o, "infra");
    assert_eq!((r.total, r.queued, r.running), (3, 0, 3));
    assert_eq!(r.trigger, TriggerKind::Manual);
    assert!(r.units.iter().all(|u| u.attempts == 1 && u.job.is_some()));
    assert_eq!(o.scans[0].status.last_trigger.as_deref(), Some("1"));
    // Nothing changes: nothing to do.
    let again = decide(&o, &resolve);
    assert!(
        again.create.is_empty() && again.statuses.is_empty(),
        "{again:?}"
    );
}

#[test]
fn deep_queue_gets_fewer_fuller_jobs() {
    let mut s = scan("infra", spec(100, 100, 1));
    s.annotation = Some("1".into());
    let o = observed(vec![s], 10);
    let d = decide(&o, &resolve);
    assert_eq!(d.batch_size, 10);
    assert_eq!(d.create.len(), 10);
    assert!(d.create.iter().all(|j| j.stacks.len() == 10));
    let all: BTreeSet<_> = d.create.iter().flat_map(|j| j.stacks.clone()).collect();
    assert_eq!(all.len(), 100);
    assert_eq!(d.queue_depth, 0);
    // Deeper than capacity × MAX_BATCH: batches stop growing, the rest waits.
    let mut s = scan("big", spec(1000, 100, 1));
    s.annotation = Some("1".into());
    let d = decide(&observed(vec![s], 10), &resolve);
    assert_eq!(d.batch_size, MAX_BATCH);
    assert_eq!(d.create.len(), 10);
    assert_eq!(d.queue_depth, 1000 - 10 * MAX_BATCH);
}

/// A repository whose stacks are known but whose images are still being resolved.
struct ImagesPending(bool);

impl RunSource for ImagesPending {
    fn resolve(&self, scan: &ScanState) -> Resolution {
        Resolution::Ready(RunPlan {
            stacks: scan.spec.source.git.stacks.clone(),
            commit: Some("c0ffee".into()),
        })
    }
    fn images(&self, _: &ScanState, _: &RunStatus) -> Option<BTreeMap<String, String>> {
        self.0.then(BTreeMap::new)
    }
}

#[test]
fn units_waiting_for_images_count_in_the_queue_depth() {
    let mut s = scan("infra", spec(5, 5, 1));
    s.annotation = Some("1".into());
    let mut o = observed(vec![s], 10);
    let d = decide_with(&o, &ImagesPending(false));
    assert!(d.create.is_empty(), "{:?}", d.create);
    assert_eq!(d.queue_depth, 5, "waiting units are queued work");
    apply(&mut o, &d, true, true);
    assert_eq!(run(&o, "infra").queued, 5);
    // Once the images are known the same units start and leave the queue.
    let d = decide_with(&o, &ImagesPending(true));
    assert_eq!(d.create.iter().map(|j| j.stacks.len()).sum::<usize>(), 5);
    assert_eq!(d.queue_depth, 0);
}

#[test]
fn keda_pitfall_double_creation_on_first_scale_up() {
    // 6 stacks, capacity 4: batches of 2; maxParallel 2 leaves 2 stacks queued.
    let mut s = scan("infra", spec(6, 2, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let first = decide(&o, &resolve);
    assert_eq!(first.create.len(), 2);
    assert!(first.create.iter().all(|j| j.stacks.len() == 2));
    // A second decision on the same (stale) state asks for exactly the same Jobs, so the
    // creates are AlreadyExists and nothing is doubled.
    let stale = decide(&o, &resolve);
    assert_eq!(stale.create, first.create);
    // Jobs created, status not yet written (crash, or lagging cache): no new Job, and the
    // run that created them is adopted (same id), not started again.
    apply(&mut o, &first, true, false);
    let d = decide(&o, &resolve);
    assert!(d.create.is_empty(), "{:?}", d.create);
    assert!(d.delete.is_empty(), "{:?}", d.delete);
    apply(&mut o, &d, true, true);
    assert_eq!(o.jobs.len(), 2);
    let r = run(&o, "infra");
    assert_eq!(r.id, first.create[0].run);
    assert_eq!((r.running, r.queued), (4, 2));
}

#[test]
fn keda_pitfall_in_flight_work_is_subtracted() {
    // 60 stacks, capacity 4: batches of 10, 20 stacks left.
    let mut s = scan("infra", spec(60, 10, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    assert_eq!(d.queue_depth, 20);
    apply(&mut o, &d, true, true);
    // Finish two Jobs: exactly two slots free; the running stacks are not in the queue.
    let names: Vec<String> = o.jobs.iter().map(|j| j.name.clone()).collect();
    for name in &names[..2] {
        report(&mut o, name, DriftStatus::InSync);
        set_phase(&mut o, name, JobPhase::Succeeded(Some(t0())));
    }
    let d = decide(&o, &resolve);
    // Depth 20 over capacity 4: batches of 5, two new Jobs.
    assert_eq!(d.batch_size, 5);
    assert_eq!(d.create.len(), 2);
    assert_eq!(d.jobs_active, 4);
    assert_eq!(d.queue_depth, 10);
    let new: BTreeSet<_> = d.create.iter().flat_map(|j| j.stacks.clone()).collect();
    let running: BTreeSet<_> = o.jobs[2..].iter().flat_map(|j| j.stacks.clone()).collect();
    assert!(new.is_disjoint(&running));
}

#[test]
fn keda_pitfall_pending_jobs_are_not_recreated_every_poll() {
    let mut s = scan("infra", spec(3, 10, 2));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 10);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    // The pods never start (no node): poll after poll creates nothing.
    for minute in 1..30 {
        o.now = t0() + Duration::minutes(minute);
        let d = decide(&o, &resolve);
        assert!(d.create.is_empty(), "minute {minute}: {:?}", d.create);
        assert_eq!(d.jobs_active, 3);
    }
}

#[test]
fn failed_job_is_retried_then_errors() {
    let mut s = scan("infra", spec(1, 4, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let first = d.create[0].name.clone();
    set_phase(&mut o, &first, JobPhase::Failed);
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 1);
    assert_ne!(d.create[0].name, first);
    apply(&mut o, &d, true, true);
    assert_eq!(run(&o, "infra").units[0].attempts, 2);
    let second = d.create[0].name.clone();
    report(&mut o, &second, DriftStatus::Error);
    set_phase(&mut o, &second, JobPhase::Failed);
    let d = decide(&o, &resolve);
    assert!(d.create.is_empty());
    apply(&mut o, &d, true, true);
    let r = run(&o, "infra");
    assert_eq!(r.phase, RunPhase::Failed);
    assert_eq!((r.errored, r.completed), (1, 1));
    assert_eq!(d.events[0].reason, "RunFailed");
    assert!(d.events[0].warning);
}

#[test]
fn error_report_is_retried() {
    let mut s = scan("infra", spec(1, 4, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let first = d.create[0].name.clone();
    report(&mut o, &first, DriftStatus::Error);
    set_phase(&mut o, &first, JobPhase::Failed);
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 1);
    apply(&mut o, &d, true, true);
    report(&mut o, &d.create[0].name, DriftStatus::Drifted);
    set_phase(&mut o, &d.create[0].name, JobPhase::Succeeded(Some(t0())));
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let r = run(&o, "infra");
    assert_eq!(r.phase, RunPhase::Succeeded);
    assert_eq!((r.drifted, r.errored), (1, 0));
}

#[test]
fn succeeded_job_waits_for_late_reports_then_retries() {
    let mut s = scan("infra", spec(1, 4, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let name = d.create[0].name.clone();
    set_phase(&mut o, &name, JobPhase::Succeeded(Some(t0())));
    o.now = t0() + Duration::seconds(5);
    let d = decide(&o, &resolve);
    assert!(d.create.is_empty());
    assert_eq!(
        d.wake_at,
        Some(t0() + Duration::seconds(REPORT_GRACE_SECONDS))
    );
    o.now = t0() + Duration::seconds(REPORT_GRACE_SECONDS + 1);
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 1, "no report after the grace: retried");
}

#[test]
fn job_that_disappears_is_requeued() {
    let mut s = scan("infra", spec(2, 4, 1));
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let gone = o.jobs.remove(0);
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.create[0].stacks, gone.stacks);
}

#[test]
fn run_timeout_fails_the_rest_and_deletes_jobs() {
    let mut sp = spec(3, 1, 0);
    sp.timeout = driftless_crds::common::Duration::parse("10m").unwrap();
    let mut s = scan("infra", sp);
    s.annotation = Some("go".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    assert_eq!(d.wake_at, Some(t0() + Duration::minutes(10)));
    apply(&mut o, &d, true, true);
    o.now = t0() + Duration::minutes(11);
    let d = decide(&o, &resolve);
    assert_eq!(d.delete.len(), 1);
    assert!(d.create.is_empty());
    assert!(d.events.iter().any(|e| e.reason == "RunTimedOut"));
    apply(&mut o, &d, true, true);
    let r = run(&o, "infra");
    assert_eq!((r.phase, r.errored, r.total), (RunPhase::Failed, 3, 3));
}

#[test]
fn lock_refuses_or_cancels() {
    let sp = spec(2, 4, 1);
    let mut status = DriftScanStatus::default();
    let request = RunRequest {
        kind: TriggerKind::Webhook,
        actor: Some("ci".into()),
        commit: Some("abc".into()),
        stacks: None,
    };
    let stacks = sp.source.git.stacks.clone();
    start_run(&sp, &mut status, &request, stacks.clone(), t0()).unwrap();
    let first = status.last_run.clone().unwrap();
    assert_eq!(first.commit.as_deref(), Some("abc"));
    match start_run(&sp, &mut status, &request, stacks.clone(), t0()) {
        Err(StartError::Busy(run)) => assert_eq!(run.id, first.id),
        other => panic!("{other:?}"),
    }
    let mut cancelling = sp.clone();
    cancelling.cancel_inflight_on_new_trigger = true;
    let cancelled = start_run(&cancelling, &mut status, &request, stacks, t0()).unwrap();
    assert_eq!(cancelled, Some(first.id.clone()));
    let new = status.last_run.clone().unwrap();
    assert_ne!(new.id, first.id, "unique run id in the same second");
    assert_eq!(status.history[0].id, first.id);
    assert_eq!(status.history[0].phase, RunPhase::Cancelled);
}

#[test]
fn cancelled_run_jobs_are_deleted() {
    let mut sp = spec(2, 4, 1);
    sp.cancel_inflight_on_new_trigger = true;
    let mut s = scan("infra", sp);
    s.annotation = Some("a".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let old: BTreeSet<String> = o.jobs.iter().map(|j| j.name.clone()).collect();
    o.scans[0].annotation = Some("b".into());
    o.now = t0() + Duration::seconds(3);
    let d = decide(&o, &resolve);
    let deleted: BTreeSet<String> = d.delete.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(deleted, old);
    let reasons: Vec<_> = d.events.iter().map(|e| e.reason).collect();
    assert_eq!(reasons, ["RunCancelled", "RunStarted"]);
}

#[test]
fn manual_trigger_during_a_run_waits_for_it() {
    let mut s = scan("infra", spec(1, 4, 0));
    s.annotation = Some("a".into());
    let mut o = observed(vec![s], 4);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let first = run(&o, "infra").id;
    o.scans[0].annotation = Some("b".into());
    o.now = t0() + Duration::seconds(2);
    let d = decide(&o, &resolve);
    assert!(d.create.is_empty());
    apply(&mut o, &d, true, true);
    assert_eq!(o.scans[0].status.last_trigger.as_deref(), Some("a"));
    let job = o.jobs[0].name.clone();
    report(&mut o, &job, DriftStatus::InSync);
    succeed(&mut o, &job);
    let d = decide(&o, &resolve);
    apply(&mut o, &d, true, true);
    let second = run(&o, "infra");
    assert_ne!(second.id, first);
    assert_eq!(o.scans[0].status.history[0].id, first);
    assert_eq!(o.scans[0].status.history[0].phase, RunPhase::Succeeded);
    assert_eq!(o.scans[0].status.last_trigger.as_deref(), Some("b"));
}

#[test]
fn priority_and_per_scan_room() {
    let mut a = scan("a-schedule", spec(5, 10, 0));
    a.spec.schedule = Some("* * * * *".into());
    a.status.next_scheduled_at = Some(driftless_crds::time::time(t0() - Duration::seconds(1)));
    let b = scan("b-webhook", spec(5, 2, 0));
    let mut o = observed(vec![a, b], 3);
    // The webhook run is written by the HTTP API, later than the schedule's.
    let sp = o.scans[1].spec.clone();
    let request = RunRequest {
        kind: TriggerKind::Webhook,
        actor: None,
        commit: None,
        stacks: Some(vec![
            "live/s001".into(),
            "live/s002".into(),
            "live/s003".into(),
        ]),
    };
    let stacks = sp.source.git.stacks.clone();
    start_run(
        &sp,
        &mut o.scans[1].status,
        &request,
        stacks,
        t0() + Duration::seconds(1),
    )
    .unwrap();
    let d = decide(&o, &resolve);
    let by_scan: Vec<_> = d
        .create
        .iter()
        .map(|j| (j.scan.name.as_str(), j.stacks.len()))
        .collect();
    // Depth 8 over capacity 3: batches of 3; the webhook's stacks go first.
    assert_eq!(
        by_scan,
        [("b-webhook", 3), ("a-schedule", 3), ("a-schedule", 2)]
    );
    assert_eq!(run_total(&d, "b-webhook"), 3);
    // One slot: the webhook run takes it.
    o.max_concurrent_jobs = 1;
    let d = decide(&o, &resolve);
    assert_eq!(d.create.len(), 1);
    assert_eq!(d.create[0].scan.name, "b-webhook");
}

fn run_total(d: &Decisions, name: &str) -> u32 {
    d.statuses
        .iter()
        .find(|(k, _)| k.name == name)
        .and_then(|(_, s)| s.last_run.as_ref())
        .map_or(0, |r| r.total)
}

#[test]
fn history_is_bounded() {
    let mut sp = spec(1, 4, 0);
    sp.history_limit = 2;
    let mut s = scan("infra", sp);
    s.annotation = Some("0".into());
    let mut o = observed(vec![s], 4);
    for i in 1..6 {
        let d = decide(&o, &resolve);
        apply(&mut o, &d, true, true);
        let job = o.jobs.last().unwrap().name.clone();
        report(&mut o, &job, DriftStatus::InSync);
        succeed(&mut o, &job);
        let d = decide(&o, &resolve);
        apply(&mut o, &d, true, true);
        o.scans[0].annotation = Some(i.to_string());
        o.now += Duration::seconds(1);
    }
    assert_eq!(o.scans[0].status.history.len(), 2);
}

#[test]
fn job_names_are_short_and_distinct() {
    let long = "a".repeat(80);
    let stacks = vec!["x".to_owned()];
    let name = job_name(&long, "20260101-000000", &stacks, 1);
    assert!(name.len() <= 63, "{name}");
    assert_ne!(name, job_name(&long, "20260101-000000", &stacks, 2));
    assert_eq!(name, job_name(&long, "20260101-000000", &stacks, 1));
}

/// One random world: several DriftScans, random capacity, random outcomes, crashes.
fn property_run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_scans = rng.gen_range(1..=4);
    let mut scans = Vec::new();
    for i in 0..n_scans {
        let mut sp = spec(
            rng.gen_range(1..=25),
            rng.gen_range(1..=5),
            rng.gen_range(0..=2),
        );
        sp.timeout = driftless_crds::common::Duration::parse("100h").unwrap();
        let mut s = scan(&format!("scan{i}"), sp);
        s.annotation = Some("t0".into());
        scans.push(s);
    }
    let capacity = rng.gen_range(1..=8);
    let mut o = observed(scans, capacity);
    let mut finished: BTreeMap<(String, String), u32> = BTreeMap::new();
    let mut terminal_seen: BTreeMap<(String, String, String), UnitPhase> = BTreeMap::new();
    let mut second_trigger_sent = vec![false; n_scans];
    for step in 0..3000 {
        let d = decide(&o, &resolve);
        // Crash points: before anything, after the Jobs (before the statuses), or none.
        let fault = rng.gen_range(0..10);
        let (jobs, statuses) = match fault {
            0 => (false, false),
            1 | 2 => (true, false),
            _ => (true, true),
        };
        apply(&mut o, &d, jobs, statuses);
        if statuses {
            for e in &d.events {
                if matches!(e.reason, "RunSucceeded" | "RunFailed" | "RunTimedOut") {
                    let id = e.message.split(' ').nth(1).unwrap().to_owned();
                    *finished.entry((e.scan.name.clone(), id)).or_default() += 1;
                }
            }
        }
        // Invariants over the applied state.
        let active: Vec<&JobState> = o
            .jobs
            .iter()
            .filter(|j| j.phase == JobPhase::Active)
            .collect();
        assert!(
            active.len() <= capacity as usize,
            "seed {seed} step {step}: over capacity"
        );
        for s in &o.scans {
            let here: Vec<_> = active.iter().filter(|j| j.scan == s.key).collect();
            assert!(
                here.len() <= s.spec.max_parallel as usize,
                "seed {seed}: over maxParallel"
            );
            let mut covered = BTreeSet::new();
            for j in &here {
                for st in &j.stacks {
                    assert!(
                        covered.insert((j.run.clone(), st.clone())),
                        "seed {seed} step {step}: {st} in two active Jobs"
                    );
                }
            }
            if let Some(run) = &s.status.last_run {
                for u in &run.units {
                    let jobs = o
                        .jobs
                        .iter()
                        .filter(|j| {
                            j.scan == s.key && j.run == run.id && j.stacks.contains(&u.stack)
                        })
                        .count();
                    assert!(
                        jobs as u32 <= s.spec.retries + 1,
                        "seed {seed}: {} planned {jobs} times",
                        u.stack
                    );
                    let k = (s.key.name.clone(), run.id.clone(), u.stack.clone());
                    if let Some(prev) = terminal_seen.get(&k) {
                        assert_eq!(
                            *prev, u.phase,
                            "seed {seed} step {step}: terminal unit changed"
                        );
                    } else if terminal(u.phase) {
                        terminal_seen.insert(k, u.phase);
                    }
                }
                let mut r = run.clone();
                count(&mut r);
                assert_eq!(&r, run, "counters agree with units");
            }
        }
        // The world moves: Jobs finish, fail, vanish.
        o.now += Duration::seconds(rng.gen_range(1..20));
        let names: Vec<String> = active.iter().map(|j| j.name.clone()).collect();
        for name in names {
            if !rng.gen_bool(0.3) {
                continue;
            }
            match rng.gen_range(0..20) {
                0 => o.jobs.retain(|j| j.name != name),
                1 | 2 => set_phase(&mut o, &name, JobPhase::Failed),
                3 => {
                    report(&mut o, &name, DriftStatus::Error);
                    set_phase(&mut o, &name, JobPhase::Failed);
                }
                4 => succeed(&mut o, &name),
                n => {
                    let status = if n % 2 == 0 {
                        DriftStatus::Drifted
                    } else {
                        DriftStatus::InSync
                    };
                    report(&mut o, &name, status);
                    succeed(&mut o, &name);
                }
            }
        }
        // A second manual trigger per scan, once, at a random time.
        for (i, sent) in second_trigger_sent.iter_mut().enumerate() {
            if !*sent && rng.gen_bool(0.01) {
                o.scans[i].annotation = Some("t1".into());
                *sent = true;
            }
        }
        let all_done = second_trigger_sent.iter().all(|s| *s)
            && o.scans.iter().all(|s| {
                s.status.last_trigger.as_deref() == Some("t1")
                    && s.status
                        .last_run
                        .as_ref()
                        .is_some_and(|r| r.phase != RunPhase::Running)
            });
        if all_done {
            break;
        }
    }
    for s in &o.scans {
        let run = s.status.last_run.as_ref().unwrap();
        assert_ne!(
            run.phase,
            RunPhase::Running,
            "seed {seed}: {} never finished",
            s.key
        );
        assert_eq!(s.status.last_trigger.as_deref(), Some("t1"), "seed {seed}");
        // Two runs, the first archived; or one, when the first was lost in a crash before its
        // status was written and the second trigger came in before the next decision.
        assert!(s.status.history.len() <= 1, "seed {seed}");
        // Results agree with the reports of the run.
        for u in &run.units {
            let rep = o.reports.iter().find(|r| {
                r.scan == s.key && r.stack == u.stack && r.run.as_deref() == Some(run.id.as_str())
            });
            match (u.phase, rep.map(|r| r.status)) {
                (UnitPhase::InSync, Some(DriftStatus::InSync))
                | (UnitPhase::Drifted, Some(DriftStatus::Drifted)) => {}
                (UnitPhase::Error, Some(DriftStatus::Error) | None) => {}
                other => panic!(
                    "seed {seed}: unit {} disagrees with its report: {other:?}",
                    u.stack
                ),
            }
        }
    }
    for ((scan, id), n) in finished {
        assert_eq!(n, 1, "seed {seed}: run {scan}/{id} finished {n} times");
    }
}

#[test]
fn property_random_runs_with_crashes_finish_once() {
    for seed in 0..300 {
        property_run(seed);
    }
}

/// Restart at every step: after each decision, throw the status away down to what was
/// persisted before it, and check that re-deriving from status + Jobs reaches the same
/// outcome as never crashing.
#[test]
fn restart_at_every_step_resumes_the_run() {
    for seed in 0..50u64 {
        let mut rng = StdRng::seed_from_u64(1000 + seed);
        let mut sp = spec(rng.gen_range(2..=12), rng.gen_range(1..=4), 1);
        sp.timeout = driftless_crds::common::Duration::parse("100h").unwrap();
        let mut s = scan("infra", sp);
        s.annotation = Some("go".into());
        let mut o = observed(vec![s], rng.gen_range(1..=5));
        let mut step = 0;
        loop {
            step += 1;
            assert!(step < 500, "seed {seed}: no progress");
            let d = decide(&o, &resolve);
            apply(&mut o, &d, true, true);
            // Restart: a fresh scheduler deciding from the same observed state must not
            // create, delete or change anything.
            let restarted = decide(&o, &resolve);
            assert!(
                restarted.create.is_empty() && restarted.delete.is_empty(),
                "seed {seed} step {step}: {restarted:?}"
            );
            assert!(
                restarted.statuses.is_empty(),
                "seed {seed} step {step}: status flaps"
            );
            let r = run(&o, "infra");
            if r.phase != RunPhase::Running {
                assert_eq!(r.completed, r.total);
                break;
            }
            o.now += Duration::seconds(5);
            let names: Vec<String> = o
                .jobs
                .iter()
                .filter(|j| j.phase == JobPhase::Active)
                .map(|j| j.name.clone())
                .collect();
            if let Some(name) = names.first() {
                report(&mut o, name, DriftStatus::Drifted);
                succeed(&mut o, name);
            }
        }
    }
}
