//! Tests of the status computation.

use chrono::TimeZone as _;
use driftless_crds::time::time;

use super::*;

fn now() -> Time {
    time(chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap())
}

fn earlier() -> Time {
    time(chrono::Utc.with_ymd_and_hms(2025, 12, 31, 0, 0, 0).unwrap())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A result: (kind, policy, generation, state, drifted, message).
type Row<'a> = (&'a str, &'a str, i64, &'a str, u32, Option<&'a str>);

/// A node report.
fn report(node: &str, results: &[Row<'_>]) -> DriftReport {
    let policies: Vec<Value> = results
        .iter()
        .map(|(kind, name, generation, state, drifted, message)| {
            let mut r = json!({
                "kind": kind, "name": name, "generation": generation, "state": state,
                "checkedAt": "2026-01-01T00:00:00Z",
            });
            if *drifted > 0 {
                r["drifted"] = json!(drifted);
            }
            if let Some(m) = message {
                r["message"] = json!(m);
            }
            r
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
        "metadata": {"name": format!("node-{node}"), "namespace": "driftless",
                     "labels": {NODE_LABEL: node}},
        "spec": {"target": {"kind": "Node", "name": node, "node": node}},
        "status": {"policies": policies},
    }))
    .unwrap()
}

struct World {
    nodes: Vec<(String, BTreeMap<String, String>)>,
    reports: Vec<DriftReport>,
}

impl World {
    fn new(nodes: &[(&str, &[(&str, &str)])]) -> Self {
        Self {
            nodes: nodes
                .iter()
                .map(|(n, l)| ((*n).to_owned(), labels(l)))
                .collect(),
            reports: Vec::new(),
        }
    }

    fn report(mut self, node: &str, results: &[Row<'_>]) -> Self {
        self.reports.push(report(node, results));
        self
    }

    fn compute(&self, policy: &PolicyInput<'_>) -> PolicyStatus {
        let nodes: Vec<NodeRef<'_>> = self
            .nodes
            .iter()
            .map(|(name, labels)| NodeRef { name, labels })
            .collect();
        let index = ReportIndex::new(&self.reports);
        compute(policy, &nodes, &index, &now())
    }
}

fn apply<'a>(
    name: &'a str,
    generation: i64,
    selector: Option<&'a LabelSelector>,
) -> PolicyInput<'a> {
    PolicyInput {
        kind: PolicyKind::ApplyPolicy,
        name,
        generation,
        node_selector: selector,
        sources: 0,
        sinks: 0,
        previous: &[],
    }
}

fn selector(value: Value) -> LabelSelector {
    serde_json::from_value(value).unwrap()
}

fn cond<'a>(status: &'a PolicyStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

fn summary(c: Option<&Condition>) -> Option<(&str, &str, &str)> {
    c.map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

const AP: &str = "ApplyPolicy";

#[test]
fn counts_targeted_nodes_by_the_result_of_the_current_generation() {
    let role = selector(json!({"matchLabels": {"role": "web"}}));
    let world = World::new(&[
        ("a", &[("role", "web")]),
        ("b", &[("role", "web")]),
        ("c", &[("role", "web")]),
        ("d", &[("role", "web")]),
        ("db", &[("role", "db")]),
    ])
    .report("a", &[(AP, "base", 3, "InSync", 0, None)])
    .report("b", &[(AP, "base", 3, "Drifted", 2, None)])
    .report("c", &[(AP, "base", 2, "InSync", 0, None)]) // an older generation: pending
    .report("db", &[(AP, "base", 3, "Failed", 0, Some("not targeted"))]);
    let s = world.compute(&apply("base", 3, Some(&role)));
    assert_eq!(
        (s.targeted, s.in_sync, s.drifted, s.failed, s.pending),
        (4, 1, 1, 0, 2)
    );
    assert_eq!(s.observed_generation, 3);
    assert_eq!(
        summary(cond(&s, READY)),
        Some((
            "False",
            "NodesPending",
            "2 of 4 nodes have not reported generation 3: c, d"
        ))
    );
    assert_eq!(
        summary(cond(&s, RECONCILING)),
        Some((
            "True",
            "NodesPending",
            "2 of 4 nodes have not reported generation 3: c, d"
        ))
    );
    assert!(cond(&s, STALLED).is_none(), "{:?}", s.conditions);
    for c in &s.conditions {
        assert_eq!(c.observed_generation, Some(3));
        assert_eq!(c.last_transition_time, now());
    }
}

#[test]
fn ready_when_every_node_reported_and_drift_does_not_block_it() {
    let world = World::new(&[("a", &[]), ("b", &[]), ("c", &[])])
        .report("a", &[(AP, "base", 1, "InSync", 0, None)])
        .report("b", &[(AP, "base", 1, "InSync", 0, None)])
        .report("c", &[(AP, "base", 1, "Drifted", 4, None)]);
    let s = world.compute(&apply("base", 1, None));
    assert_eq!((s.targeted, s.in_sync, s.drifted, s.failed), (3, 2, 1, 0));
    assert!(s.ready());
    assert_eq!(
        summary(cond(&s, READY)),
        Some((
            "True",
            "AllNodesReported",
            "2 of 3 nodes in sync, 1 drifted"
        ))
    );
    assert_eq!(
        s.conditions.len(),
        1,
        "no Reconciling or Stalled: {:?}",
        s.conditions
    );
}

#[test]
fn failed_and_refused_nodes_stall_the_policy() {
    let long = "x".repeat(1000);
    let world = World::new(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])])
        .report(
            "a",
            &[(
                AP,
                "base",
                1,
                "Failed",
                0,
                Some("task motd: permission denied"),
            )],
        )
        .report("b", &[(AP, "base", 1, "Refused", 0, None)])
        .report("c", &[(AP, "base", 1, "Failed", 0, Some(long.as_str()))]);
    let s = world.compute(&apply("base", 1, None));
    assert_eq!((s.targeted, s.failed, s.pending), (4, 3, 1));
    let stalled = cond(&s, STALLED).unwrap();
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "NodesFailed")
    );
    assert!(
        stalled
            .message
            .starts_with("3 node(s) failed: a: task motd: permission denied, b: refused, c: xxx"),
        "{}",
        stalled.message
    );
    assert!(stalled.message.ends_with("..."), "messages are cut");
    assert!(stalled.message.len() < 300, "{}", stalled.message.len());
    let ready = cond(&s, READY).unwrap();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        ("False", "NodesFailed", stalled.message.as_str())
    );
    assert_eq!(
        cond(&s, RECONCILING).unwrap().status,
        "True",
        "d is pending"
    );
    assert!(!s.ready());
}

#[test]
fn messages_name_at_most_five_nodes() {
    let names: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let nodes: Vec<(&str, &[(&str, &str)])> = names.iter().map(|n| (n.as_str(), &[][..])).collect();
    let mut world = World::new(&nodes);
    for n in &names {
        world = world.report(n, &[(AP, "base", 1, "Failed", 0, Some("boom"))]);
    }
    let s = world.compute(&apply("base", 1, None));
    assert_eq!(
        cond(&s, STALLED).unwrap().message,
        "8 node(s) failed: n0: boom, n1: boom, n2: boom, n3: boom, n4: boom and 3 more"
    );
    let world = World::new(&nodes);
    let s = world.compute(&apply("base", 7, None));
    assert_eq!(
        cond(&s, RECONCILING).unwrap().message,
        "8 of 8 nodes have not reported generation 7: n0, n1, n2, n3, n4 and 3 more"
    );
}

#[test]
fn no_matching_node_is_ready() {
    let sel = selector(json!({"matchLabels": {"role": "gpu"}}));
    let world = World::new(&[("a", &[("role", "web")])]);
    let s = world.compute(&apply("base", 2, Some(&sel)));
    assert_eq!(s.targeted, 0);
    assert_eq!(
        summary(cond(&s, READY)),
        Some((
            "True",
            "NoMatchingNodes",
            "no node matches spec.nodeSelector"
        ))
    );
    assert_eq!(s.conditions.len(), 1);
    // And with no Nodes at all.
    let s = World::new(&[]).compute(&apply("base", 2, None));
    assert!(s.ready());
}

#[test]
fn reports_of_nodes_that_no_longer_exist_are_ignored() {
    let world = World::new(&[("a", &[])])
        .report("a", &[(AP, "base", 1, "InSync", 0, None)])
        .report("gone", &[(AP, "base", 1, "Failed", 0, Some("boom"))]);
    let s = world.compute(&apply("base", 1, None));
    assert_eq!((s.targeted, s.in_sync, s.failed), (1, 1, 0));
    assert!(s.ready());
}

#[test]
fn results_of_other_policies_and_kinds_do_not_count() {
    let world = World::new(&[("a", &[])]).report(
        "a",
        &[
            (AP, "other", 1, "Failed", 0, None),
            ("FactsPolicy", "base", 1, "Failed", 0, None),
        ],
    );
    let s = world.compute(&apply("base", 1, None));
    assert_eq!((s.targeted, s.pending, s.failed), (1, 1, 0));
}

#[test]
fn selector_expressions() {
    let world = World::new(&[
        ("a", &[("zone", "x"), ("gpu", "yes")]),
        ("b", &[("zone", "y")]),
        ("c", &[("zone", "z")]),
        ("d", &[]),
    ]);
    let count = |sel: Value| world.compute(&apply("p", 1, Some(&selector(sel)))).targeted;
    let expr = |op: &str, values: Option<Vec<&str>>| {
        let mut e = json!({"key": "zone", "operator": op});
        if let Some(v) = values {
            e["values"] = json!(v);
        }
        json!({"matchExpressions": [e]})
    };
    assert_eq!(count(expr("In", Some(vec!["x", "y"]))), 2);
    assert_eq!(count(expr("NotIn", Some(vec!["x", "y"]))), 2, "c and d");
    assert_eq!(count(expr("Exists", None)), 3);
    assert_eq!(count(expr("DoesNotExist", None)), 1);
    assert_eq!(
        count(
            json!({"matchLabels": {"zone": "x"}, "matchExpressions": [{"key": "gpu", "operator": "Exists"}]})
        ),
        1
    );
    assert_eq!(count(json!({})), 4, "an empty selector selects every node");
}

#[test]
fn invalid_selectors_stall_the_policy() {
    let world = World::new(&[("a", &[("zone", "x")])]);
    for (sel, needle) in [
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "Near", "values": ["x"]}]}),
            "Invalid expression operator",
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "In"}]}),
            "Expected values for In operator",
        ),
        (
            json!({"matchExpressions": [{"key": "zone", "operator": "NotIn"}]}),
            "Expected values",
        ),
    ] {
        let sel = selector(sel);
        let s = world.compute(&apply("p", 4, Some(&sel)));
        assert_eq!(s.targeted, 0);
        let stalled = cond(&s, STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "InvalidSelector")
        );
        assert!(
            stalled
                .message
                .starts_with("spec.nodeSelector is invalid: "),
            "{}",
            stalled.message
        );
        assert!(
            stalled.message.contains(needle),
            "{} lacks {needle}",
            stalled.message
        );
        let ready = cond(&s, READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "InvalidSelector")
        );
        assert_eq!(ready.observed_generation, Some(4));
        assert!(cond(&s, RECONCILING).is_none());
    }
}

#[test]
fn selectors_match_as_the_agents_match() {
    // The node agents compile selectors with kube's conversion; so does the status, also for
    // the corner cases the API server would refuse on built-in objects.
    let world = World::new(&[("a", &[("zone", "x")]), ("b", &[])]);
    let count = |sel: Value| world.compute(&apply("p", 1, Some(&selector(sel)))).targeted;
    assert_eq!(
        count(json!({"matchExpressions": [{"key": "zone", "operator": "In", "values": []}]})),
        0,
        "an empty In matches nothing"
    );
    assert_eq!(
        count(
            json!({"matchExpressions": [{"key": "zone", "operator": "Exists", "values": ["y"]}]})
        ),
        1,
        "Exists ignores values"
    );
}

#[test]
fn transition_times_are_kept_while_a_condition_keeps_its_status() {
    let world =
        World::new(&[("a", &[]), ("b", &[])]).report("a", &[(AP, "base", 2, "InSync", 0, None)]);
    let previous = vec![
        Condition {
            type_: READY.into(),
            status: "False".into(),
            reason: "NodesPending".into(),
            message: "2 of 2 nodes have not reported generation 2: a, b".into(),
            observed_generation: Some(2),
            last_transition_time: earlier(),
        },
        Condition {
            type_: STALLED.into(),
            status: "False".into(),
            reason: "Other".into(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: earlier(),
        },
    ];
    let mut policy = apply("base", 2, None);
    policy.previous = &previous;
    let s = world.compute(&policy);
    let ready = cond(&s, READY).unwrap();
    assert_eq!(ready.status, "False");
    assert_eq!(
        ready.last_transition_time,
        earlier(),
        "still False: time kept"
    );
    assert_eq!(
        ready.message,
        "1 of 2 nodes have not reported generation 2: b"
    );
    assert_eq!(
        cond(&s, RECONCILING).unwrap().last_transition_time,
        now(),
        "new"
    );
    // b reports: Ready turns True, a transition.
    let world = world.report("b", &[(AP, "base", 2, "InSync", 0, None)]);
    let s = world.compute(&policy);
    let ready = cond(&s, READY).unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.last_transition_time.clone()),
        ("True", now())
    );
}

#[test]
fn facts_policy_fields() {
    let world = World::new(&[("a", &[]), ("b", &[]), ("c", &[]), ("d", &[])])
        .report("a", &[("FactsPolicy", "limits", 5, "Drifted", 3, None)])
        .report("b", &[("FactsPolicy", "limits", 5, "Drifted", 0, None)])
        .report("c", &[("FactsPolicy", "limits", 5, "InSync", 0, None)])
        .report(
            "d",
            &[("FactsPolicy", "limits", 5, "Refused", 0, Some("bad regex"))],
        );
    let policy = PolicyInput {
        kind: PolicyKind::FactsPolicy,
        ..apply("limits", 5, None)
    };
    let s = world.compute(&policy);
    assert_eq!((s.targeted, s.drifted, s.breached, s.failed), (4, 2, 4, 1));
    let v = s.to_json();
    assert_eq!(v["targeted"], 4);
    assert_eq!(v["reporting"], 3, "in sync or breached, not refused");
    assert_eq!(v["breached"], 4, "3 + at least 1");
    assert_eq!(v["observedGeneration"], 5);
    assert!(
        v.get("inSync").is_none() && v.get("failed").is_none(),
        "{v}"
    );
    assert_eq!(v["conditions"][0]["type"], "Ready");
    assert_eq!(v["conditions"][0]["reason"], "NodesFailed");
    assert_eq!(v["conditions"][1]["type"], "Stalled");
    assert_eq!(
        v["conditions"][1]["message"],
        "1 node(s) failed: d: bad regex"
    );
    let world =
        World::new(&[("a", &[])]).report("a", &[("FactsPolicy", "limits", 5, "Drifted", 2, None)]);
    let s = world.compute(&policy);
    assert_eq!(
        cond(&s, READY).unwrap().message,
        "0 of 1 nodes in sync, 1 with thresholds breached"
    );
}

#[test]
fn log_pipeline_fields() {
    let world = World::new(&[("a", &[]), ("b", &[])])
        .report("a", &[("LogPipeline", "app", 1, "InSync", 0, None)])
        .report("b", &[("LogPipeline", "app", 1, "InSync", 0, None)]);
    let policy = PolicyInput {
        kind: PolicyKind::LogPipeline,
        sources: 3,
        sinks: 2,
        ..apply("app", 1, None)
    };
    let s = world.compute(&policy);
    let v = s.to_json();
    assert_eq!(
        (
            v["targeted"].clone(),
            v["sources"].clone(),
            v["sinks"].clone()
        ),
        (json!(2), json!(3), json!(2))
    );
    assert!(
        v.get("inSync").is_none() && v.get("breached").is_none(),
        "{v}"
    );
    assert!(s.ready());
}

#[test]
fn apply_policy_json_leaves_the_rollout_fields_alone() {
    let world = World::new(&[("a", &[])]).report("a", &[(AP, "base", 1, "InSync", 0, None)]);
    let v = world.compute(&apply("base", 1, None)).to_json();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "conditions",
            "drifted",
            "failed",
            "inSync",
            "observedGeneration",
            "targeted"
        ]
    );
}

#[test]
fn owned_view_ignores_transition_times_and_foreign_fields() {
    let world = World::new(&[("a", &[])]).report("a", &[(AP, "base", 1, "InSync", 0, None)]);
    let s = world.compute(&apply("base", 1, None));
    let mut stored = s.to_json();
    stored["conditions"][0]["lastTransitionTime"] = json!("2020-01-01T00:00:00Z");
    stored["someoneElses"] = json!(1);
    stored["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Other", "status": "True", "reason": "x", "message": "", "lastTransitionTime": "2020-01-01T00:00:00Z"}));
    let view = owned_view(PolicyKind::ApplyPolicy, &s.to_json());
    assert_eq!(view, owned_view(PolicyKind::ApplyPolicy, &stored));
    // A stored status always carries `updated`, 0 when no revision was assigned yet.
    stored["updated"] = json!(0);
    assert_eq!(view, owned_view(PolicyKind::ApplyPolicy, &stored));
    // The rollout's fields and conditions are this controller's too.
    for (key, value) in [
        ("updated", json!(1)),
        ("currentRevision", json!("base-1")),
        ("rollout", json!({"step": "Complete"})),
    ] {
        let mut changed = stored.clone();
        changed[key] = value;
        assert_ne!(view, owned_view(PolicyKind::ApplyPolicy, &changed), "{key}");
    }
    let mut changed = stored.clone();
    changed["conditions"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "Degraded", "status": "True", "reason": "x", "message": ""}));
    assert_ne!(view, owned_view(PolicyKind::ApplyPolicy, &changed));
    stored["inSync"] = json!(0);
    assert_ne!(view, owned_view(PolicyKind::ApplyPolicy, &stored));
    assert_ne!(view, owned_view(PolicyKind::ApplyPolicy, &Value::Null));
}

#[test]
fn reports_count_only_under_their_own_node_name() {
    let mut spoof = report("b", &[(AP, "base", 1, "InSync", 0, None)]);
    spoof.metadata.name = Some("node-a".into());
    let mut unlabelled = report("c", &[(AP, "base", 1, "InSync", 0, None)]);
    unlabelled.metadata.labels = None;
    let good = report("d", &[(AP, "base", 1, "InSync", 0, None)]);
    assert_eq!(report_node(&spoof), None);
    assert_eq!(report_node(&unlabelled), None);
    assert_eq!(report_node(&good), Some("d"));
    let mut upper = report("Worker-1", &[]);
    upper.metadata.name = Some("node-worker-1".into());
    assert_eq!(
        report_node(&upper),
        Some("Worker-1"),
        "named as the agent names it"
    );
    let index = ReportIndex::new([&spoof, &unlabelled, &good]);
    assert_eq!(index.len(), 1);
    assert!(index.result("d", PolicyKind::ApplyPolicy, "base").is_some());
    assert!(index.result("b", PolicyKind::ApplyPolicy, "base").is_none());
}

#[test]
fn a_duplicate_result_keeps_the_newest_generation() {
    let r = report(
        "a",
        &[
            (AP, "base", 2, "InSync", 0, None),
            (AP, "base", 1, "Failed", 0, None),
            (AP, "base", 2, "Failed", 0, None),
        ],
    );
    let index = ReportIndex::new([&r]);
    let got = index.result("a", PolicyKind::ApplyPolicy, "base").unwrap();
    assert_eq!((got.generation, got.state), (2, PolicyState::InSync));
}

#[test]
fn cut_keeps_char_boundaries() {
    assert_eq!(cut("short", 10), "short");
    assert_eq!(cut("abcdefghij", 8), "abcde...");
    let s = "ééééé"; // 10 bytes
    let c = cut(s, 6);
    assert!(c.len() <= 6 && c.ends_with("..."), "{c}");
}

#[test]
fn scales_to_a_thousand_nodes_and_twenty_policies() {
    let names: Vec<String> = (0..1000).map(|i| format!("node-{i:04}")).collect();
    let zone = |i: usize| if i.is_multiple_of(2) { "a" } else { "b" };
    let node_labels: Vec<BTreeMap<String, String>> =
        (0..1000).map(|i| labels(&[("zone", zone(i))])).collect();
    let policies: Vec<String> = (0..20).map(|i| format!("p{i}")).collect();
    let reports: Vec<DriftReport> = names
        .iter()
        .map(|n| {
            let results: Vec<Row<'_>> = policies
                .iter()
                .map(|p| (AP, p.as_str(), 1, "InSync", 0, None))
                .collect();
            report(n, &results)
        })
        .collect();
    let nodes: Vec<NodeRef<'_>> = names
        .iter()
        .zip(&node_labels)
        .map(|(name, labels)| NodeRef { name, labels })
        .collect();
    let started = std::time::Instant::now();
    let index = ReportIndex::new(&reports);
    let sel = selector(json!({"matchLabels": {"zone": "a"}}));
    for p in &policies {
        let s = compute(&apply(p, 1, Some(&sel)), &nodes, &index, &now());
        assert_eq!((s.targeted, s.in_sync), (500, 500));
    }
    // Generous: a debug build on a slow machine; the point is "no quadratic blow-up".
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
