use super::*;
use driftless_crds::drift_report::ChangeType;

fn at(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

fn result(kind: PolicyKind, name: &str, generation: i64, state: PolicyState) -> PolicyResult {
    PolicyResult {
        kind,
        name: name.into(),
        generation,
        state,
        drifted: 0,
        changed: 0,
        failed: 0,
        message: None,
        checked_at: time(at(0)),
        revision: None,
        healthy_since: None,
    }
}

fn item(address: &str, corrected: bool) -> DriftItem {
    DriftItem {
        address: address.into(),
        domain: "file".into(),
        source: Some("motd/write".into()),
        change: ChangeType::Changed,
        replace: false,
        attributes: Vec::new(),
        diff: None,
        corrected,
    }
}

#[test]
fn corrections_are_in_sync_and_audit_drift_is_drifted() {
    let mut s = NodeStatus::default();
    s.set(
        Entry {
            result: result(PolicyKind::ApplyPolicy, "motd", 1, PolicyState::InSync),
            items: vec![item("file:/etc/motd", true)],
        },
        at(0),
    );
    let status = s.report_status();
    assert_eq!(status.summary.as_ref().unwrap().status, DriftStatus::InSync);
    assert_eq!(status.summary.as_ref().unwrap().changed, 1);
    assert_eq!(status.items.len(), 1);
    s.set(
        Entry {
            result: result(PolicyKind::ApplyPolicy, "audit", 3, PolicyState::Drifted),
            items: vec![item("file:/etc/issue", false)],
        },
        at(1),
    );
    let status = s.report_status();
    assert_eq!(
        status.summary.as_ref().unwrap().status,
        DriftStatus::Drifted
    );
    assert_eq!(
        status.history.len(),
        1,
        "the shape changed: one history entry"
    );
    assert_eq!(status.policies.len(), 2);
    assert_eq!(
        status.policies[0].name, "audit",
        "sorted by kind, then name"
    );
}

#[test]
fn a_refusal_shows_instead_of_the_running_result_and_clears() {
    let mut s = NodeStatus::default();
    let key = (PolicyKind::LogPipeline, "app".to_owned());
    s.set(
        Entry {
            result: result(PolicyKind::LogPipeline, "app", 1, PolicyState::InSync),
            items: Vec::new(),
        },
        at(0),
    );
    let mut refused = result(PolicyKind::LogPipeline, "app", 2, PolicyState::Refused);
    refused.message = Some("spec.transforms[0].regex: unclosed group".into());
    s.set_refusal(key.clone(), Some(refused), at(1));
    let status = s.report_status();
    assert_eq!(status.policies.len(), 1);
    assert_eq!(status.policies[0].state, PolicyState::Refused);
    assert_eq!(status.policies[0].generation, 2);
    assert_eq!(status.summary.as_ref().unwrap().status, DriftStatus::Error);
    assert!(status
        .error
        .as_deref()
        .unwrap()
        .contains("LogPipeline app: spec.transforms[0]"));
    s.set_refusal(key, None, at(2));
    let status = s.report_status();
    assert_eq!(status.policies[0].state, PolicyState::InSync);
    assert_eq!(status.policies[0].generation, 1);
    assert!(status.error.is_none());
}

#[test]
fn retain_forgets_policies_that_no_longer_select_the_node() {
    let mut s = NodeStatus::default();
    for name in ["a", "b"] {
        s.set(
            Entry {
                result: result(PolicyKind::ApplyPolicy, name, 1, PolicyState::InSync),
                items: vec![item(&format!("file:/{name}"), false)],
            },
            at(0),
        );
    }
    s.set(
        Entry {
            result: result(PolicyKind::FactsPolicy, "a", 1, PolicyState::InSync),
            items: Vec::new(),
        },
        at(0),
    );
    s.retain(PolicyKind::ApplyPolicy, &|n| n == "b", at(1));
    let status = s.report_status();
    let names: Vec<_> = status
        .policies
        .iter()
        .map(|r| format!("{}/{}", r.kind.as_str(), r.name))
        .collect();
    assert_eq!(names, ["ApplyPolicy/b", "FactsPolicy/a"]);
    assert_eq!(status.items.len(), 1);
}

#[test]
fn items_and_history_are_bounded() {
    let mut s = NodeStatus::default();
    for round in 0..(MAX_HISTORY + 5) {
        let items = (0..MAX_ITEMS + 10)
            .map(|i| item(&format!("file:/r{round}/{i}"), false))
            .collect();
        s.set(
            Entry {
                result: result(PolicyKind::ApplyPolicy, "big", 1, PolicyState::Drifted),
                items,
            },
            at(round as i64),
        );
    }
    let status = s.report_status();
    assert_eq!(status.items.len(), MAX_ITEMS);
    assert_eq!(status.truncated_items, 10);
    assert_eq!(status.history.len(), MAX_HISTORY);
    assert_eq!(
        status.summary.as_ref().unwrap().changed as usize,
        MAX_ITEMS + 10,
        "the summary counts every item"
    );
}

#[test]
fn long_messages_are_cut_on_a_character_boundary() {
    let text = "é".repeat(MAX_MESSAGE);
    let cut = cut_message(&text);
    assert!(cut.len() <= MAX_MESSAGE);
    assert!(cut.ends_with('…'));
    assert_eq!(cut_message("short"), "short");
}

#[tokio::test]
async fn shared_status_wakes_subscribers() {
    let shared = SharedStatus::new("node-a");
    let mut rx = shared.subscribe();
    shared.update(|s, now| {
        s.set(
            Entry {
                result: result(PolicyKind::FactsPolicy, "base", 4, PolicyState::InSync),
                items: Vec::new(),
            },
            now,
        )
    });
    rx.changed().await.unwrap();
    let report = shared.report();
    assert_eq!(report.metadata.name.as_deref(), Some("node-node-a"));
    assert_eq!(report.status.unwrap().policies[0].generation, 4);
}
