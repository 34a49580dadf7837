use chrono::{DateTime, TimeZone as _, Utc};
use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::{NotificationPolicySpec, NotificationPolicyStatus};
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

#[test]
fn first_sight_is_the_baseline_without_a_group() {
    let s = write(plan(
        &spec(json!({})),
        None,
        "u",
        Some(1),
        &[obs("a", Drifted), obs("b", InSync)],
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
            at(5)
        ),
        Step::Idle { wake: None }
    );
}

#[test]
fn transitions_open_one_group_that_gathers_for_the_group_wait() {
    let sp = spec(json!({ "groupWait": "30s" }));
    let base = write(plan(
        &sp,
        None,
        "u",
        None,
        &[obs("a", InSync), obs("b", InSync), obs("c", Drifted)],
        at(0),
    ));
    // a drifts, c is back in sync: one group of two.
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
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
    let s2 = write(plan(&sp, Some(&s), "u", None, &now, at(20)));
    let g2 = s2.pending.clone().unwrap();
    assert_eq!(g2.id, "u-1");
    assert_eq!(g2.events.len(), 3);
    assert_eq!(of_time(&g2.send_at), at(40), "the wait does not restart");
    // Before send time: idle until then; at send time: send.
    assert_eq!(
        plan(&sp, Some(&s2), "u", None, &now, at(39)),
        Step::Idle { wake: Some(at(40)) }
    );
    assert_eq!(plan(&sp, Some(&s2), "u", None, &now, at(40)), Step::Send);
}

#[test]
fn a_target_back_where_it_started_leaves_the_group() {
    let sp = spec(json!({}));
    let base = write(plan(&sp, None, "u", None, &[obs("a", InSync)], at(0)));
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
        &[obs("a", Drifted)],
        at(1),
    ));
    assert!(s.pending.is_some());
    let s2 = write(plan(&sp, Some(&s), "u", None, &[obs("a", InSync)], at(2)));
    assert!(
        s2.pending.is_none(),
        "flap within the wait: nothing to send"
    );
    assert_eq!(s2.sequence, 0);
    // Drifted → Error within the wait keeps the first `from`.
    let s3 = write(plan(&sp, Some(&s2), "u", None, &[obs("a", Drifted)], at(3)));
    let s4 = write(plan(&sp, Some(&s3), "u", None, &[obs("a", Failed)], at(4)));
    let e = &s4.pending.unwrap().events;
    assert_eq!((e.len(), e[0].from, e[0].to), (1, Some(InSync), Failed));
    assert_eq!(e[0].error.as_deref(), Some("plan failed"));
}

#[test]
fn new_reports_notify_only_when_not_in_sync_and_events_filter() {
    let sp = spec(json!({ "events": ["Drifted"] }));
    let base = write(plan(&sp, None, "u", None, &[], at(0)));
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
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
    let base = write(plan(
        &sp,
        None,
        "u",
        None,
        &[obs("a", InSync), obs("b", InSync)],
        at(0),
    ));
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
        &[obs("a", Drifted), obs("b", InSync)],
        at(1),
    ));
    // Send time reached: b's drift waits for the next group (not in the baseline).
    let now = [obs("a", Drifted), obs("b", Drifted)];
    assert_eq!(plan(&sp, Some(&s), "u", None, &now, at(1)), Step::Send);
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
        plan(&sp, Some(&failed), "u", None, &now, at(2)),
        Step::Idle { wake: Some(at(3)) }
    );
    assert_eq!(plan(&sp, Some(&failed), "u", None, &now, at(3)), Step::Send);
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
    let next = write(plan(&sp, Some(&done), "u", None, &now, at(4)));
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
    let base = write(plan(&sp, None, "u", None, &[obs("x", InSync)], at(0)));
    let s = write(plan(
        &sp,
        Some(&base),
        "u",
        None,
        &[obs("x", Drifted)],
        at(0),
    ));
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
    let base = write(plan(&sp, None, "u", None, &many, at(0)));
    let drifted: Vec<Observed> = (0..1200)
        .map(|i| obs(&format!("r{i:04}"), Drifted))
        .collect();
    let s = write(plan(&sp, Some(&base), "u", None, &drifted, at(1)));
    let g = s.pending.clone().unwrap();
    assert_eq!((g.events.len(), g.omitted), (1000, 200));
    // Deleted reports leave the baseline without a notification.
    let s2 = write(plan(
        &sp,
        Some(&NotificationPolicyStatus {
            pending: None,
            ..s.clone()
        }),
        "u",
        None,
        &drifted[..10],
        at(2),
    ));
    assert_eq!(s2.targets.len(), 10);
    assert!(s2.pending.is_none());
    let _ = time(at(0));
}
