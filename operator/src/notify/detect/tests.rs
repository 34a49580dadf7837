use chrono::{DateTime, TimeZone as _, Utc};
use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::{
    NotificationPolicySpec, NotificationPolicyStatus, RolloutState,
};
use driftless_crds::time::{of_time, time};
use serde_json::json;

use super::*;

fn spec(extra: serde_json::Value) -> NotificationPolicySpec {
    let mut value = json!({ "receivers": [{ "name": "hook", "type": "webhook", "secretRef": { "name": "s" } }] });
    if let (Some(map), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        map.extend(extra.clone());
    }
    serde_json::from_value(value).unwrap()
}

fn at(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
}

fn obs(report: &str, status: DriftStatus) -> Observed {
    Observed {
        report: report.into(),
        kind: TargetKind::Stack,
        target: format!("infra/{report}"),
        status,
        checked_at: at(0),
        added: 1,
        changed: 2,
        removed: 0,
        revision: Some("abc123".into()),
        error: Some("plan failed".into()),
    }
}

fn write(step: Step) -> NotificationPolicyStatus {
    match step {
        Step::Write(status) => *status,
        other => panic!("expected a write, got {other:?}"),
    }
}

use DriftStatus::{Drifted, Error as Failed, InSync};

/// [`plan`] of policy `u` (no generation) seeing reports only.
fn plan_reports(
    spec: &NotificationPolicySpec,
    stored: Option<&NotificationPolicyStatus>,
    observed: &[Observed],
    now: DateTime<Utc>,
) -> Step {
    plan(spec, stored, "u", None, observed, &[], now)
}

/// [`plan`] of policy `u` (no generation) seeing rollouts only.
fn plan_rollouts(
    spec: &NotificationPolicySpec,
    stored: Option<&NotificationPolicyStatus>,
    rollouts: &[ObservedRollout],
    now: DateTime<Utc>,
) -> Step {
    plan(spec, stored, "u", None, &[], rollouts, now)
}

#[test]
fn first_sight_is_the_baseline_without_a_group() {
    let s = write(plan(
        &spec(json!({})),
        None,
        "u",
        Some(1),
        &[obs("a", Drifted), obs("b", InSync)],
        &[],
        at(0),
    ));
    assert!(s.pending.is_none());
    assert_eq!(s.targets.len(), 2);
    assert_eq!(s.targets[0].status, Drifted);
    assert_eq!(s.observed_generation, Some(1));
    // Nothing changed since: idle.
    assert_eq!(
        plan(
            &spec(json!({})),
            Some(&s),
            "u",
            Some(1),
            &[obs("a", Drifted), obs("b", InSync)],
            &[],
            at(5)
        ),
        Step::Idle { wake: None }
    );
}

#[test]
fn transitions_open_one_group_that_gathers_for_the_group_wait() {
    let sp = spec(json!({ "groupWait": "30s" }));
    let base = write(plan_reports(
        &sp,
        None,
        &[obs("a", InSync), obs("b", InSync), obs("c", Drifted)],
        at(0),
    ));
    // a drifts, c is back in sync: one group of two.
    let s = write(plan_reports(
        &sp,
        Some(&base),
        &[obs("a", Drifted), obs("b", InSync), obs("c", InSync)],
        at(10),
    ));
    let g = s.pending.clone().unwrap();
    assert_eq!((g.id.as_str(), g.sequence), ("u-1", 1));
    assert_eq!(of_time(&g.send_at), at(40));
    assert_eq!(
        g.events
            .iter()
            .map(|e| (e.report.as_str(), e.from, e.to))
            .collect::<Vec<_>>(),
        [("a", Some(InSync), Drifted), ("c", Some(Drifted), InSync)]
    );
    assert_eq!(g.events[0].error, None, "no error text for a drift");
    // Within the wait: b drifts too and joins the same group.
    let now = [obs("a", Drifted), obs("b", Drifted), obs("c", InSync)];
    let s2 = write(plan_reports(&sp, Some(&s), &now, at(20)));
    let g2 = s2.pending.clone().unwrap();
    assert_eq!(g2.id, "u-1");
    assert_eq!(g2.events.len(), 3);
    assert_eq!(of_time(&g2.send_at), at(40), "the wait does not restart");
    // Before send time: idle until then; at send time: send.
    assert_eq!(
        plan_reports(&sp, Some(&s2), &now, at(39)),
        Step::Idle { wake: Some(at(40)) }
    );
    assert_eq!(plan_reports(&sp, Some(&s2), &now, at(40)), Step::Send);
}

#[test]
fn a_target_back_where_it_started_leaves_the_group() {
    let sp = spec(json!({}));
    let base = write(plan_reports(&sp, None, &[obs("a", InSync)], at(0)));
    let s = write(plan_reports(&sp, Some(&base), &[obs("a", Drifted)], at(1)));
    assert!(s.pending.is_some());
    let s2 = write(plan_reports(&sp, Some(&s), &[obs("a", InSync)], at(2)));
    assert!(
        s2.pending.is_none(),
        "flap within the wait: nothing to send"
    );
    assert_eq!(s2.sequence, 0);
    // Drifted → Error within the wait keeps the first `from`.
    let s3 = write(plan_reports(&sp, Some(&s2), &[obs("a", Drifted)], at(3)));
    let s4 = write(plan_reports(&sp, Some(&s3), &[obs("a", Failed)], at(4)));
    let e = &s4.pending.unwrap().events;
    assert_eq!((e.len(), e[0].from, e[0].to), (1, Some(InSync), Failed));
    assert_eq!(e[0].error.as_deref(), Some("plan failed"));
}

#[test]
fn new_reports_notify_only_when_not_in_sync_and_events_filter() {
    let sp = spec(json!({ "events": ["Drifted"] }));
    let base = write(plan_reports(&sp, None, &[], at(0)));
    let s = write(plan_reports(
        &sp,
        Some(&base),
        &[obs("n", InSync), obs("d", Drifted), obs("e", Failed)],
        at(1),
    ));
    let g = s.pending.unwrap();
    assert_eq!(
        g.events
            .iter()
            .map(|e| e.report.as_str())
            .collect::<Vec<_>>(),
        ["d"]
    );
    assert_eq!(g.events[0].from, None);
    assert_eq!(
        s.targets.len(),
        3,
        "unnotified changes still move the baseline"
    );
}

#[test]
fn a_sealed_group_takes_no_new_transitions() {
    let sp = spec(json!({ "groupWait": "0s" }));
    let base = write(plan_reports(
        &sp,
        None,
        &[obs("a", InSync), obs("b", InSync)],
        at(0),
    ));
    let s = write(plan_reports(
        &sp,
        Some(&base),
        &[obs("a", Drifted), obs("b", InSync)],
        at(1),
    ));
    // Send time reached: b's drift waits for the next group (not in the baseline).
    let now = [obs("a", Drifted), obs("b", Drifted)];
    assert_eq!(plan_reports(&sp, Some(&s), &now, at(1)), Step::Send);
    let failed = record(
        &s,
        &["hook".into()],
        &[Outcome {
            receiver: "hook".into(),
            result: Err("POST answered 503".into()),
        }],
        at(1),
    );
    let g = failed.pending.clone().unwrap();
    assert_eq!((g.attempts, g.delivered.len()), (1, 0));
    assert_eq!(of_time(g.next_attempt_at.as_ref().unwrap()), at(3));
    assert_eq!(
        failed.receivers[0].last_error.as_deref(),
        Some("POST answered 503")
    );
    assert_eq!(
        plan_reports(&sp, Some(&failed), &now, at(2)),
        Step::Idle { wake: Some(at(3)) }
    );
    assert_eq!(plan_reports(&sp, Some(&failed), &now, at(3)), Step::Send);
    let done = record(
        &failed,
        &["hook".into()],
        &[Outcome {
            receiver: "hook".into(),
            result: Ok(()),
        }],
        at(3),
    );
    assert!(done.pending.is_none());
    assert_eq!(done.sequence, 1);
    assert_eq!(done.receivers[0].last_delivery.as_deref(), Some("u-1"));
    assert_eq!(done.receivers[0].last_error, None);
    // Now b's drift opens group 2.
    let next = write(plan_reports(&sp, Some(&done), &now, at(4)));
    let g2 = next.pending.unwrap();
    assert_eq!(
        (
            g2.id.as_str(),
            g2.events.len(),
            g2.events[0].report.as_str()
        ),
        ("u-2", 1, "b")
    );
}

#[test]
fn partial_delivery_retries_only_the_failed_receivers() {
    let sp: NotificationPolicySpec =
        serde_json::from_value(json!({ "groupWait": "0s", "receivers": [
        { "name": "a", "type": "slack", "secretRef": { "name": "s" } },
        { "name": "b", "type": "teams", "secretRef": { "name": "s" } }] }))
        .unwrap();
    let base = write(plan_reports(&sp, None, &[obs("x", InSync)], at(0)));
    let s = write(plan_reports(&sp, Some(&base), &[obs("x", Drifted)], at(0)));
    let names = vec!["a".to_owned(), "b".to_owned()];
    let half = record(
        &s,
        &names,
        &[
            Outcome {
                receiver: "a".into(),
                result: Ok(()),
            },
            Outcome {
                receiver: "b".into(),
                result: Err("down".into()),
            },
        ],
        at(0),
    );
    assert_eq!(half.pending.as_ref().unwrap().delivered, ["a"]);
    let done = record(
        &half,
        &names,
        &[Outcome {
            receiver: "b".into(),
            result: Ok(()),
        }],
        at(5),
    );
    assert!(done.pending.is_none());
    assert_eq!(done.sequence, 1);
}

#[test]
fn retry_delays_double_up_to_a_minute() {
    let d: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
    assert_eq!(d, [2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(retry_delay(1000).as_secs(), 60);
}

#[test]
fn a_large_run_is_one_group_and_bounded() {
    let sp = spec(json!({}));
    let many: Vec<Observed> = (0..1200)
        .map(|i| obs(&format!("r{i:04}"), InSync))
        .collect();
    let base = write(plan_reports(&sp, None, &many, at(0)));
    let drifted: Vec<Observed> = (0..1200)
        .map(|i| obs(&format!("r{i:04}"), Drifted))
        .collect();
    let s = write(plan_reports(&sp, Some(&base), &drifted, at(1)));
    let g = s.pending.clone().unwrap();
    assert_eq!((g.events.len(), g.omitted), (1000, 200));
    // Deleted reports leave the baseline without a notification.
    let s2 = write(plan_reports(
        &sp,
        Some(&NotificationPolicyStatus {
            pending: None,
            ..s.clone()
        }),
        &drifted[..10],
        at(2),
    ));
    assert_eq!(s2.targets.len(), 10);
    assert!(s2.pending.is_none());
    let _ = time(at(0));
}

fn ro(policy: &str, step: &str, failed: Option<&str>) -> ObservedRollout {
    ObservedRollout {
        policy: policy.into(),
        step: step.into(),
        failed_revision: failed.map(str::to_owned),
        failed_node: failed.map(|_| "node-1".to_owned()),
        message: failed.map(|r| format!("revision {r} failed the health gate on node node-1")),
    }
}

fn rollout_spec(events: &[&str]) -> NotificationPolicySpec {
    spec(json!({ "groupWait": "10s", "rolloutEvents": events }))
}

/// The (policy, from, to, revision) of the pending group's rollouts.
fn rollouts_of(
    s: &NotificationPolicyStatus,
) -> Vec<(String, Option<String>, &'static str, Option<String>)> {
    s.pending
        .iter()
        .flat_map(|g| &g.rollouts)
        .map(|r| {
            (
                r.policy.clone(),
                r.from.clone(),
                r.to.as_str(),
                r.revision.clone(),
            )
        })
        .collect()
}

#[test]
fn rollouts_are_not_tracked_without_rollout_events() {
    let sp = spec(json!({}));
    let base = write(plan_rollouts(
        &sp,
        None,
        &[ro("web", "Progressing", None)],
        at(0),
    ));
    assert!(base.rollouts.is_empty());
    // Degraded or not, nothing is written or sent.
    assert_eq!(
        plan_rollouts(
            &sp,
            Some(&base),
            &[ro("web", "Degraded", Some("web-2"))],
            at(1)
        ),
        Step::Idle { wake: None }
    );
}

#[test]
fn rollout_first_sight_is_the_baseline_even_when_degraded() {
    let sp = rollout_spec(&["Degraded", "RolledBack"]);
    let base = write(plan_rollouts(
        &sp,
        None,
        &[
            ro("web", "Degraded", Some("web-2")),
            ro("db", "Complete", None),
        ],
        at(0),
    ));
    assert!(base.pending.is_none());
    assert_eq!(
        base.rollouts,
        [
            RolloutState {
                policy: "db".into(),
                step: "Complete".into(),
                failed_revision: None
            },
            RolloutState {
                policy: "web".into(),
                step: "Degraded".into(),
                failed_revision: Some("web-2".into())
            },
        ]
    );
    // Seen again unchanged (a restarted operator): nothing to do.
    assert_eq!(
        plan_rollouts(
            &sp,
            Some(&base),
            &[
                ro("db", "Complete", None),
                ro("web", "Degraded", Some("web-2"))
            ],
            at(5)
        ),
        Step::Idle { wake: None }
    );
}

#[test]
fn rollout_steps_notify_only_on_the_selected_events() {
    let sp = rollout_spec(&["Degraded"]);
    let base = write(plan_rollouts(
        &sp,
        None,
        &[ro("web", "Progressing", None)],
        at(0),
    ));
    // Progressing → Canary → Paused: steps move the baseline, no group.
    for (t, step) in [(1, "Canary"), (2, "Paused")] {
        let s = write(plan_rollouts(
            &sp,
            Some(&base),
            &[ro("web", step, None)],
            at(t),
        ));
        assert!(s.pending.is_none(), "{step}");
        assert_eq!(s.rollouts[0].step, step);
    }
    // RolledBack is not selected.
    let rb = write(plan_rollouts(
        &sp,
        Some(&base),
        &[ro("web", "RolledBack", Some("web-2"))],
        at(3),
    ));
    assert!(rb.pending.is_none());
    // Degraded is.
    let s = write(plan_rollouts(
        &sp,
        Some(&base),
        &[ro("web", "Degraded", Some("web-2"))],
        at(4),
    ));
    assert_eq!(
        rollouts_of(&s),
        [(
            "web".into(),
            Some("Progressing".into()),
            "Degraded",
            Some("web-2".into())
        )]
    );
    let g = s.pending.as_ref().unwrap();
    assert!(g.events.is_empty());
    assert_eq!(g.rollouts[0].node.as_deref(), Some("node-1"));
    assert_eq!(of_time(&g.rollouts[0].seen_at), at(4));
    assert_eq!(of_time(&g.send_at), at(14));
    // The group and the baseline that accounts for it are one write: seen again, no news.
    assert_eq!(
        plan_rollouts(
            &sp,
            Some(&s),
            &[ro("web", "Degraded", Some("web-2"))],
            at(5)
        ),
        Step::Idle { wake: Some(at(14)) }
    );
}

#[test]
fn a_new_failing_revision_is_news_while_the_step_stays_degraded() {
    let sp = rollout_spec(&["Degraded", "RolledBack"]);
    let base = write(plan_rollouts(
        &sp,
        None,
        &[ro("web", "Degraded", Some("web-2"))],
        at(0),
    ));
    let s = write(plan_rollouts(
        &sp,
        Some(&base),
        &[ro("web", "Degraded", Some("web-3"))],
        at(1),
    ));
    assert_eq!(
        rollouts_of(&s),
        [(
            "web".into(),
            Some("Degraded".into()),
            "Degraded",
            Some("web-3".into())
        )]
    );
    // Undone within the group wait: the policy is listed once, from its first state.
    let s2 = write(plan_rollouts(
        &sp,
        Some(&s),
        &[ro("web", "RolledBack", Some("web-3"))],
        at(2),
    ));
    assert_eq!(
        rollouts_of(&s2),
        [(
            "web".into(),
            Some("Degraded".into()),
            "RolledBack",
            Some("web-3".into())
        )]
    );
}

#[test]
fn rollouts_and_reports_share_one_group_and_new_policies_count() {
    let sp = rollout_spec(&["Degraded", "RolledBack"]);
    let base = write(plan(
        &sp,
        None,
        "u",
        None,
        &[obs("net", InSync)],
        &[ro("web", "Progressing", None)],
        at(0),
    ));
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
        &[obs("net", Drifted)],
        // A policy created after the baseline that is already rolled back is news.
        &[
            ro("web", "Degraded", Some("web-2")),
            ro("api", "RolledBack", Some("api-4")),
        ],
        at(1),
    ));
    let g = s.pending.clone().unwrap();
    assert_eq!(g.events.len(), 1);
    assert_eq!(
        rollouts_of(&s),
        [
            ("api".into(), None, "RolledBack", Some("api-4".into())),
            (
                "web".into(),
                Some("Progressing".into()),
                "Degraded",
                Some("web-2".into())
            ),
        ]
    );
    // Sealed (send time passed): a later failure waits for the next group, unaccounted for.
    let later = [
        ro("web", "Degraded", Some("web-3")),
        ro("api", "RolledBack", Some("api-4")),
    ];
    assert_eq!(
        plan(
            &sp,
            Some(&s),
            "u",
            None,
            &[obs("net", Drifted)],
            &later,
            at(11)
        ),
        Step::Send
    );
    let done = record(
        &s,
        &["hook".into()],
        &[Outcome {
            receiver: "hook".into(),
            result: Ok(()),
        }],
        at(11),
    );
    assert_eq!(done.rollouts[1].failed_revision.as_deref(), Some("web-2"));
    let next = write(plan(
        &sp,
        Some(&done),
        "u",
        None,
        &[obs("net", Drifted)],
        &later,
        at(12),
    ));
    assert_eq!(
        rollouts_of(&next),
        [(
            "web".into(),
            Some("Degraded".into()),
            "Degraded",
            Some("web-3".into())
        )]
    );
    assert_eq!(next.pending.unwrap().sequence, 2);
}

#[test]
fn a_deleted_policy_leaves_the_rollout_baseline_quietly() {
    let sp = rollout_spec(&["Degraded"]);
    let base = write(plan_rollouts(
        &sp,
        None,
        &[
            ro("web", "Degraded", Some("web-2")),
            ro("db", "Complete", None),
        ],
        at(0),
    ));
    let s = write(plan_rollouts(
        &sp,
        Some(&base),
        &[ro("db", "Complete", None)],
        at(1),
    ));
    assert!(s.pending.is_none());
    assert_eq!(s.rollouts.len(), 1);
}
