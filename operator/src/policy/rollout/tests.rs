use std::collections::BTreeMap;

use chrono::TimeZone;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn t(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + seconds, 0).unwrap()
}

fn settings(strategy: RolloutStrategy, max_unavailable: usize, canary: usize) -> Settings {
    Settings {
        strategy,
        max_unavailable,
        canary,
        soak: Duration::seconds(if strategy == RolloutStrategy::Canary {
            60
        } else {
            0
        }),
        auto_rollback: false,
        paused: false,
    }
}

fn node<'a>(name: &'a str, assigned: Option<&'a str>, health: Health) -> NodeState<'a> {
    NodeState {
        name,
        ready: true,
        cordoned: false,
        assigned,
        health,
        canary_first: false,
    }
}

fn input<'a>(nodes: &'a [NodeState<'a>], settings: Settings, now: i64) -> Input<'a> {
    Input {
        updated: "web-b",
        settings,
        nodes,
        memory: Memory {
            current: Some("web-a"),
            ..Memory::default()
        },
        controls: Controls::default(),
        now: t(now),
    }
}

fn assigned_new(plan: &Plan) -> Vec<&str> {
    plan.changes
        .iter()
        .filter(|(_, v)| v.as_deref() == Some("web-b"))
        .map(|(k, _)| k.as_str())
        .collect()
}

#[test]
fn scaled_counts_and_percentages() {
    assert_eq!(scaled(&IntOrString::Int(3), 10), 3);
    assert_eq!(scaled(&IntOrString::Int(30), 10), 10);
    assert_eq!(scaled(&IntOrString::String("10%".into()), 5000), 500);
    assert_eq!(scaled(&IntOrString::String("10%".into()), 5), 1);
    assert_eq!(scaled(&IntOrString::String("25%".into()), 6), 2);
    assert_eq!(scaled(&IntOrString::String("100%".into()), 4), 4);
    assert_eq!(scaled(&IntOrString::String("x".into()), 4), 1);
    assert_eq!(scaled(&IntOrString::Int(2), 0), 1);
}

#[test]
fn canary_goes_first_then_soaks_then_batches() {
    let old = Health::Healthy { since: t(0) };
    let s = settings(RolloutStrategy::Canary, 1, 1);
    let mut nodes = vec![
        node("n1", Some("web-a"), old.clone()),
        node("n2", Some("web-a"), old.clone()),
        node("n3", Some("web-a"), old.clone()),
        node("n4", Some("web-a"), old.clone()),
    ];
    let p = plan(&input(&nodes, s.clone(), 100));
    assert_eq!(p.step, Step::Canary);
    assert_eq!(assigned_new(&p), ["n1"]);
    nodes[0].assigned = Some("web-b");
    nodes[0].health = Health::Pending;
    let p = plan(&input(&nodes, s.clone(), 110));
    assert_eq!(p.step, Step::Canary);
    assert!(p.changes.is_empty());
    nodes[0].health = Health::Healthy { since: t(120) };
    let p = plan(&input(&nodes, s.clone(), 130));
    assert_eq!(p.step, Step::Soaking);
    assert!(p.changes.is_empty());
    assert_eq!(p.requeue, Some(Duration::seconds(50)));
    let p = plan(&input(&nodes, s.clone(), 180));
    assert_eq!(p.step, Step::Progressing);
    assert_eq!(assigned_new(&p), ["n2"]);
    nodes[1].assigned = Some("web-b");
    nodes[1].health = Health::Healthy { since: t(190) };
    // n2 soaks too before the next batch.
    let p = plan(&input(&nodes, s.clone(), 200));
    assert!(p.changes.is_empty(), "{p:?}");
    let p = plan(&input(&nodes, s.clone(), 250));
    assert_eq!(assigned_new(&p), ["n3"]);
}

#[test]
fn failed_canary_degrades_and_touches_no_other_node() {
    let old = Health::Healthy { since: t(0) };
    let nodes = vec![
        node(
            "n1",
            Some("web-b"),
            Health::Failed {
                reason: "health check failed: exit 1".into(),
            },
        ),
        node("n2", Some("web-a"), old.clone()),
    ];
    let p = plan(&input(&nodes, settings(RolloutStrategy::Canary, 1, 1), 100));
    assert_eq!(p.step, Step::Degraded);
    assert!(p.changes.is_empty());
    let f = p.failed.unwrap();
    assert_eq!((f.revision.as_str(), f.node.as_str()), ("web-b", "n1"));
    assert!(p.message.contains("exit 1"), "{}", p.message);
}

#[test]
fn auto_rollback_restores_the_previous_revision_on_the_affected_nodes() {
    let nodes = vec![
        node(
            "n1",
            Some("web-b"),
            Health::Failed {
                reason: "task x failed".into(),
            },
        ),
        node("n2", Some("web-b"), Health::Healthy { since: t(0) }),
        node("n3", Some("web-a"), Health::Healthy { since: t(0) }),
    ];
    let mut s = settings(RolloutStrategy::AllAtOnce, 2, 0);
    s.auto_rollback = true;
    let p = plan(&input(&nodes, s.clone(), 100));
    assert_eq!(p.step, Step::RolledBack);
    let expected: BTreeMap<String, Option<String>> = [
        ("n1".to_owned(), Some("web-a".to_owned())),
        ("n2".to_owned(), Some("web-a".to_owned())),
    ]
    .into();
    assert_eq!(p.changes, expected);
    // Once rolled back, the failed revision is remembered and not rolled forward again.
    let rolled: Vec<NodeState<'_>> = nodes
        .iter()
        .map(|n| NodeState {
            assigned: Some("web-a"),
            health: Health::Healthy { since: t(120) },
            ..n.clone()
        })
        .collect();
    let mut i = input(&rolled, s.clone(), 200);
    i.memory.failed = p.failed.clone();
    let again = plan(&i);
    assert_eq!(again.step, Step::RolledBack);
    assert!(again.changes.is_empty(), "{again:?}");
    // A retry clears it.
    i.controls.retry = Some("1");
    let retried = plan(&i);
    assert_eq!(retried.retried.as_deref(), Some("1"));
    assert_eq!(retried.failed, None);
    assert_eq!(assigned_new(&retried), ["n1", "n2"]);
    // The same retry value is not acted on twice.
    i.memory.retried = Some("1");
    assert_eq!(plan(&i).step, Step::RolledBack);
}

#[test]
fn undo_rolls_back_by_annotation_once() {
    let nodes = vec![
        node("n1", Some("web-b"), Health::Healthy { since: t(0) }),
        node("n2", Some("web-a"), Health::Healthy { since: t(0) }),
    ];
    let mut i = input(&nodes, settings(RolloutStrategy::AllAtOnce, 1, 0), 100);
    i.controls.undo = Some("now");
    let p = plan(&i);
    assert_eq!(p.step, Step::RolledBack);
    assert_eq!(p.undone.as_deref(), Some("now"));
    assert_eq!(
        p.changes,
        [("n1".to_owned(), Some("web-a".to_owned()))].into()
    );
}

#[test]
fn not_ready_and_cordoned_nodes_are_skipped_and_never_block() {
    let old = Health::Healthy { since: t(0) };
    let mut nodes = vec![
        node("n1", Some("web-a"), old.clone()),
        node("n2", Some("web-a"), old.clone()),
        node("n3", Some("web-a"), old.clone()),
    ];
    nodes[1].ready = false;
    nodes[2].cordoned = true;
    let s = settings(RolloutStrategy::AllAtOnce, 1, 0);
    let p = plan(&input(&nodes, s.clone(), 10));
    assert_eq!(assigned_new(&p), ["n1"]);
    assert_eq!(p.skipped, 2);
    nodes[0].assigned = Some("web-b");
    nodes[0].health = Health::Healthy { since: t(20) };
    let p = plan(&input(&nodes, s.clone(), 30));
    assert_eq!(p.step, Step::Complete);
    assert_eq!(p.current.as_deref(), Some("web-b"));
    // Back: it catches up.
    nodes[1].ready = true;
    let mut i = input(&nodes, s, 40);
    i.memory.current = Some("web-b");
    let p = plan(&i);
    assert_eq!(assigned_new(&p), ["n2"]);
}

#[test]
fn a_node_going_not_ready_before_its_gate_fails_it() {
    let mut nodes = vec![node("n1", Some("web-b"), Health::Pending)];
    nodes[0].ready = false;
    let p = plan(&input(
        &nodes,
        settings(RolloutStrategy::AllAtOnce, 1, 0),
        10,
    ));
    assert_eq!(p.step, Step::Degraded);
    assert!(p.message.contains("NotReady"));
}

#[test]
fn paused_assigns_nothing() {
    let nodes = vec![node("n1", Some("web-a"), Health::Healthy { since: t(0) })];
    let mut s = settings(RolloutStrategy::AllAtOnce, 1, 0);
    s.paused = true;
    let p = plan(&input(&nodes, s, 10));
    assert_eq!(p.step, Step::Paused);
    assert!(p.changes.is_empty());
}

#[test]
fn canaries_matching_the_selector_go_first() {
    let mut nodes = vec![
        node("n1", Some("web-a"), Health::Healthy { since: t(0) }),
        node("n2", Some("web-a"), Health::Healthy { since: t(0) }),
        node("n3", Some("web-a"), Health::Healthy { since: t(0) }),
        node("n4", Some("web-a"), Health::Healthy { since: t(0) }),
    ];
    nodes[3].canary_first = true;
    nodes[2].canary_first = true;
    let p = plan(&input(&nodes, settings(RolloutStrategy::Canary, 1, 1), 10));
    assert_eq!(assigned_new(&p), ["n3"]);
    // More canaries than matching nodes: the rest by name.
    let p = plan(&input(&nodes, settings(RolloutStrategy::Canary, 1, 3), 10));
    assert_eq!(assigned_new(&p), ["n1", "n3", "n4"]);
    // A matching node that is NotReady is skipped, not waited for.
    nodes[2].ready = false;
    let p = plan(&input(&nodes, settings(RolloutStrategy::Canary, 1, 2), 10));
    assert_eq!(assigned_new(&p), ["n1", "n4"]);
}

#[test]
fn a_first_revision_and_an_empty_selection() {
    let nodes = vec![
        node("n1", None, Health::Pending),
        node("n2", None, Health::Pending),
    ];
    let mut i = input(&nodes, settings(RolloutStrategy::AllAtOnce, 5, 0), 0);
    i.memory.current = None;
    let p = plan(&i);
    assert_eq!(assigned_new(&p), ["n1", "n2"]);
    let none: Vec<NodeState<'_>> = Vec::new();
    let p = plan(&input(&none, settings(RolloutStrategy::Canary, 1, 1), 0));
    assert_eq!(p.step, Step::Complete);
}

/// A simulated fleet: the planner runs, its changes are carried out, agents take their
/// assignment after a random delay and report healthy or (on a bad revision, at random)
/// failed. Checks every guarantee of the module doc on every step.
#[test]
fn properties_hold_on_random_fleets() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for case in 0..400 {
        let n = rng.gen_range(1..40usize);
        let names: Vec<String> = (0..n).map(|i| format!("node-{i:03}")).collect();
        let strategy = if rng.gen_bool(0.5) {
            RolloutStrategy::Canary
        } else {
            RolloutStrategy::AllAtOnce
        };
        let mut s = settings(
            strategy,
            rng.gen_range(1..=n.max(1)),
            if strategy == RolloutStrategy::Canary {
                rng.gen_range(1..=n)
            } else {
                0
            },
        );
        s.auto_rollback = rng.gen_bool(0.5);
        let bad = rng.gen_bool(0.3);
        // Per node: (assigned, health, ready, cordoned, when the agent reports).
        let mut fleet: Vec<(Option<String>, Health, bool, bool, i64)> = (0..n)
            .map(|_| {
                (
                    Some("web-a".to_owned()),
                    Health::Healthy { since: t(0) },
                    !rng.gen_bool(0.1),
                    rng.gen_bool(0.05),
                    0,
                )
            })
            .collect();
        // Nodes matching `canary.nodeSelector`.
        let preferred: Vec<bool> = (0..n).map(|_| rng.gen_bool(0.3)).collect();
        let mut memory_failed: Option<Failure> = None;
        let mut now = 10;
        let mut best_updated = 0;
        let mut complete = false;
        for _step in 0..400 {
            let nodes: Vec<NodeState<'_>> = fleet
                .iter()
                .zip(&names)
                .zip(&preferred)
                .map(|((f, name), preferred)| NodeState {
                    name,
                    ready: f.2,
                    cordoned: f.3,
                    assigned: f.0.as_deref(),
                    health: f.1.clone(),
                    canary_first: *preferred,
                })
                .collect();
            let i = Input {
                updated: "web-b",
                settings: s.clone(),
                nodes: &nodes,
                memory: Memory {
                    current: Some("web-a"),
                    failed: memory_failed.clone(),
                    retried: None,
                    undone: None,
                },
                controls: Controls::default(),
                now: t(now),
            };
            let p = plan(&i);
            let on_before: Vec<bool> = nodes.iter().map(|n| n.assigned == Some("web-b")).collect();
            let any_failed = nodes
                .iter()
                .any(|n| n.assigned == Some("web-b") && matches!(n.health, Health::Failed { .. }));
            let new: Vec<&String> = p
                .changes
                .iter()
                .filter(|(_, v)| v.as_deref() == Some("web-b"))
                .map(|(k, _)| k)
                .collect();
            // A failed gate never advances.
            if any_failed || memory_failed.is_some() {
                assert!(
                    new.is_empty(),
                    "case {case}: advanced past a failure: {p:?}"
                );
            }
            // Rollback touches exactly the nodes on the failed revision, back to web-a.
            if p.step == Step::RolledBack && memory_failed.is_none() {
                let affected: Vec<&str> = nodes
                    .iter()
                    .filter(|n| n.assigned == Some("web-b"))
                    .map(|n| n.name)
                    .collect();
                let changed: Vec<&str> = p.changes.keys().map(String::as_str).collect();
                assert_eq!(changed, affected, "case {case}");
                assert!(p.changes.values().all(|v| v.as_deref() == Some("web-a")));
            }
            // Never assigned to a NotReady or cordoned node.
            for name in &new {
                let f = &fleet[names.iter().position(|x| x == *name).unwrap()];
                assert!(f.2 && !f.3, "case {case}: assigned {name} while not ready");
            }
            let on_after = on_before.iter().filter(|b| **b).count() + new.len();
            // Canaries first: beyond the canary count only once every canary passed.
            // (After the canary step, batch nodes may be unavailable: maxUnavailable bounds them.)
            let on_count = on_before.iter().filter(|b| **b).count();
            if strategy == RolloutStrategy::Canary
                && on_count <= s.canary
                && on_after > s.canary
                && !new.is_empty()
            {
                for n in nodes
                    .iter()
                    .filter(|n| n.assigned == Some("web-b") && n.ready && !n.cordoned)
                {
                    let Health::Healthy { since } = n.health else {
                        panic!("case {case}: batch while canary {} not healthy", n.name);
                    };
                    assert!(
                        since + s.soak <= t(now),
                        "case {case}: batch before the canary soaked"
                    );
                }
            }
            // Canaries matching the selector first: a non-matching canary only when every
            // eligible matching node is on the new revision or taken now.
            if strategy == RolloutStrategy::Canary && on_count < s.canary {
                let picked_other = new
                    .iter()
                    .any(|name| !preferred[names.iter().position(|x| x == *name).unwrap()]);
                if picked_other {
                    for (k, n) in nodes.iter().enumerate() {
                        if preferred[k] && n.ready && !n.cordoned && n.assigned != Some("web-b") {
                            assert!(
                                new.contains(&&n.name.to_owned()),
                                "case {case}: canary skipped selected node {}",
                                n.name
                            );
                        }
                    }
                }
            }
            // maxUnavailable outside the canary step.
            let canary_step = strategy == RolloutStrategy::Canary
                && on_before.iter().filter(|b| **b).count() < s.canary;
            if !new.is_empty() && !canary_step {
                let unavailable = nodes
                    .iter()
                    .filter(|n| n.ready && !n.cordoned)
                    .filter(|n| {
                        new.contains(&&n.name.to_owned())
                            || (n.assigned == Some("web-b")
                                && !matches!(n.health, Health::Healthy { since } if since + s.soak <= t(now)))
                    })
                    .count();
                assert!(
                    unavailable <= s.max_unavailable,
                    "case {case}: {unavailable} unavailable > {}",
                    s.max_unavailable
                );
            }
            // Monotonic while healthy.
            if p.failed.is_none() {
                assert!(p.updated >= best_updated, "case {case}: progress went back");
                best_updated = p.updated;
            }
            if p.step == Step::Complete {
                complete = true;
                break;
            }
            if matches!(p.step, Step::Degraded | Step::RolledBack) {
                memory_failed = p.failed.clone();
            }
            // Carry out the plan.
            for (name, rev) in &p.changes {
                let i = names.iter().position(|x| x == name).unwrap();
                fleet[i].0 = rev.clone();
                fleet[i].1 = Health::Pending;
                fleet[i].4 = now + rng.gen_range(1..30);
            }
            now += rng.gen_range(1..40);
            for f in &mut fleet {
                if f.1 == Health::Pending && f.4 <= now {
                    f.1 = if bad && f.0.as_deref() == Some("web-b") && rng.gen_bool(0.5) {
                        Health::Failed {
                            reason: "probe failed".into(),
                        }
                    } else {
                        Health::Healthy { since: t(f.4) }
                    };
                }
            }
            if p.step == Step::RolledBack
                && fleet.iter().all(|f| f.0.as_deref() != Some("web-b"))
                && fleet.iter().all(|f| f.1 != Health::Pending)
            {
                break;
            }
        }
        if !bad {
            assert!(complete, "case {case}: a healthy rollout did not complete");
        }
    }
}
