use super::*;
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn motd(generation: i64, selector: Value, content: &str) -> Value {
    json!({
        "apiVersion": "driftless.dev/v1alpha1",
        "kind": "ApplyPolicy",
        "metadata": {"name": "motd", "generation": generation},
        "spec": {
            "nodeSelector": selector,
            "secrets": [{"name": "TOKEN", "secretKeyRef": {"name": "motd", "key": "token"}}],
            "tasks": [{"name": "write", "file": {"path": "/etc/motd", "content": content}}]
        }
    })
}

fn pipeline(name: &str, generation: i64, pattern: &str) -> Value {
    json!({
        "apiVersion": "driftless.dev/v1alpha1",
        "kind": "LogPipeline",
        "metadata": {"name": name, "generation": generation},
        "spec": {
            "sources": [{"name": "app", "include": ["/var/log/app.log"]}],
            "transforms": [{"exclude": {"field": "message", "pattern": pattern}}],
            "sinks": [{"name": "out", "file": {"directory": "/tmp/out"}}]
        }
    })
}

fn secrets() -> SecretValues {
    [(
        ("motd".to_owned(), "token".to_owned()),
        Ok(SecretString::new("s3cr3t")),
    )]
    .into()
}

fn names(d: &Decision) -> Vec<String> {
    d.config
        .resources
        .iter()
        .map(|l| format!("{}/{}", l.resource.kind(), l.resource.name()))
        .collect()
}

#[test]
fn selects_by_node_labels_and_follows_label_changes() {
    let objects = [motd(
        1,
        json!({"matchLabels": {"role": "web"}}),
        "hello ${secret:TOKEN}\n",
    )];
    let mut last = BTreeMap::new();
    let web = labels(&[("role", "web")]);
    let d = decide(&objects, &web, "driftless", &secrets(), &mut last);
    assert_eq!(names(&d), ["ApplyPolicy/motd"]);
    assert!(d.refusals.is_empty(), "{:?}", d.refusals);
    assert_eq!(d.secrets["TOKEN"].expose(), "s3cr3t");
    let db = labels(&[("role", "db")]);
    let d = decide(&objects, &db, "driftless", &secrets(), &mut last);
    assert!(
        names(&d).is_empty(),
        "a node that stops matching stops running it"
    );
    assert!(last.is_empty(), "and forgets its last good version");
    assert!(needed_secrets(&objects, &db, "driftless").is_empty());
    assert_eq!(needed_secrets(&objects, &web, "driftless").len(), 1);
}

#[test]
fn a_bad_new_generation_is_refused_and_the_last_good_keeps_running() {
    let mut last = BTreeMap::new();
    let node = labels(&[]);
    let good = [pipeline("app", 1, "^debug")];
    let d = decide(&good, &node, "driftless", &secrets(), &mut last);
    assert_eq!(names(&d), ["LogPipeline/app"]);
    let bad = [pipeline("app", 2, "(unclosed")];
    let d = decide(&bad, &node, "driftless", &secrets(), &mut last);
    assert_eq!(
        names(&d),
        ["LogPipeline/app"],
        "the previous version keeps running"
    );
    assert_eq!(d.refusals.len(), 1);
    let r = &d.refusals[0];
    assert_eq!(
        (r.kind, r.name.as_str(), r.generation),
        (PolicyKind::LogPipeline, "app", 2)
    );
    assert!(r.message.contains("spec.transforms[0]"), "{}", r.message);
    match &d.config.resources[0].resource {
        Resource::LogPipeline(p) => assert_eq!(p.metadata.generation, Some(1)),
        other => panic!("{other:?}"),
    }
    // A policy refused on its first generation does not run at all.
    let mut fresh = BTreeMap::new();
    let d = decide(&bad, &node, "driftless", &secrets(), &mut fresh);
    assert!(names(&d).is_empty());
    assert_eq!(d.refusals.len(), 1);
}

#[test]
fn secrets_must_be_readable_in_the_secrets_namespace() {
    let mut last = BTreeMap::new();
    let node = labels(&[]);
    let mut object = motd(1, Value::Null, "x ${secret:TOKEN}");
    object["spec"]["secrets"][0]["secretKeyRef"]["namespace"] = json!("kube-system");
    let d = decide(&[object.clone()], &node, "driftless", &secrets(), &mut last);
    assert!(names(&d).is_empty());
    assert!(
        d.refusals[0]
            .message
            .contains("spec.secrets[0].secretKeyRef.namespace"),
        "{}",
        d.refusals[0].message
    );
    assert!(
        needed_secrets(&[object], &node, "driftless").is_empty(),
        "never read elsewhere"
    );
    let missing: SecretValues = [(
        ("motd".to_owned(), "token".to_owned()),
        Err("not found".to_owned()),
    )]
    .into();
    let d = decide(
        &[motd(1, Value::Null, "x")],
        &node,
        "driftless",
        &missing,
        &mut last,
    );
    assert!(
        d.refusals[0].message.contains("not found"),
        "{}",
        d.refusals[0].message
    );
    // An undeclared reference is refused with its field path.
    let mut undeclared = motd(1, Value::Null, "x ${secret:OTHER}");
    undeclared["spec"]["secrets"] = json!([]);
    let d = decide(&[undeclared], &node, "driftless", &secrets(), &mut last);
    assert!(
        d.refusals[0].message.contains("spec.tasks[0].file.content"),
        "{}",
        d.refusals[0].message
    );
    // The secret value is in no refusal.
    assert!(d.refusals.iter().all(|r| !r.message.contains("s3cr3t")));
}

#[test]
fn one_facts_policy_per_node() {
    let facts = |name: &str| {
        json!({
            "apiVersion": "driftless.dev/v1alpha1",
            "kind": "FactsPolicy",
            "metadata": {"name": name, "generation": 1},
            "spec": {}
        })
    };
    let mut last = BTreeMap::new();
    let d = decide(
        &[facts("zeta"), facts("alpha")],
        &labels(&[]),
        "driftless",
        &secrets(),
        &mut last,
    );
    assert_eq!(names(&d), ["FactsPolicy/alpha"]);
    assert_eq!(d.refusals.len(), 1);
    assert_eq!(d.refusals[0].name, "zeta");
    assert!(d.refusals[0].message.contains("FactsPolicy alpha"));
}

#[test]
fn an_invalid_selector_is_refused() {
    let object = motd(
        1,
        json!({"matchExpressions": [{"key": "role", "operator": "Sometimes", "values": ["a"]}]}),
        "x",
    );
    let mut last = BTreeMap::new();
    let d = decide(&[object], &labels(&[]), "driftless", &secrets(), &mut last);
    assert!(names(&d).is_empty());
    assert!(
        d.refusals[0].message.starts_with("spec.nodeSelector"),
        "{}",
        d.refusals[0].message
    );
}

#[test]
fn a_changed_secret_value_changes_the_digest() {
    let objects = [motd(1, Value::Null, "x ${secret:TOKEN}")];
    let mut last = BTreeMap::new();
    let a = decide(&objects, &labels(&[]), "driftless", &secrets(), &mut last);
    let other: SecretValues = [(
        ("motd".to_owned(), "token".to_owned()),
        Ok(SecretString::new("rotated")),
    )]
    .into();
    let b = decide(&objects, &labels(&[]), "driftless", &other, &mut last);
    assert_ne!(a.digests["ApplyPolicy/motd"], b.digests["ApplyPolicy/motd"]);
    assert!(!a.digests["ApplyPolicy/motd"].contains("s3cr3t"));
}

#[test]
fn the_cache_keeps_the_last_good_version_across_a_restart() {
    let node = labels(&[]);
    let good = [pipeline("app", 1, "^debug")];
    let mut last = BTreeMap::new();
    let d = decide(&good, &node, "driftless", &secrets(), &mut last);
    let raw = good_objects(&good, &node, &d.refusals, &BTreeMap::new());
    assert_eq!(raw.len(), 1);
    // Generation 2 is bad: the cache keeps generation 1.
    let bad = [pipeline("app", 2, "(unclosed")];
    let d = decide(&bad, &node, "driftless", &secrets(), &mut last);
    let raw = good_objects(&bad, &node, &d.refusals, &raw);
    let cached: Vec<Value> = raw.values().cloned().collect();
    assert_eq!(cached[0]["metadata"]["generation"], 1);
    // A restarted agent seeds its last good versions from the cache and keeps running
    // generation 1 while generation 2 is refused.
    let (mut seeded, _) = seed(&cached);
    let d = decide(&bad, &node, "driftless", &secrets(), &mut seeded);
    assert_eq!(names(&d), ["LogPipeline/app"]);
    assert_eq!(d.refusals.len(), 1);
    match &d.config.resources[0].resource {
        Resource::LogPipeline(p) => assert_eq!(p.metadata.generation, Some(1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn apply_policies_run_the_assigned_revision_only() {
    use crate::topology::apply_loop::REVISION_ANNOTATION;
    let live = motd(7, json!({"matchLabels": {"role": "web"}}), "live\n");
    let facts = pipeline("p", 1, "x");
    let old = motd(5, Value::Null, "old\n");
    let old_data = json!({"spec": old["spec"].clone()});
    let revisions: BTreeMap<String, Revision> = [(
        "motd-aaaa".to_owned(),
        Revision {
            data: old_data,
            newest: true,
        },
    )]
    .into();
    // No assignment: the ApplyPolicy does not run yet; other kinds are untouched.
    let pinned = pin(
        vec![live.clone(), facts.clone()],
        &BTreeMap::new(),
        &revisions,
        &BTreeMap::new(),
    );
    assert_eq!(pinned, vec![facts.clone()]);
    // Assigned: the revision's spec with the live selector, annotated.
    let assignments: BTreeMap<String, String> =
        [("motd".to_owned(), "motd-aaaa".to_owned())].into();
    let pinned = pin(
        vec![live.clone()],
        &assignments,
        &revisions,
        &BTreeMap::new(),
    );
    assert_eq!(pinned.len(), 1);
    let p = &pinned[0];
    assert_eq!(p["spec"]["tasks"], old["spec"]["tasks"]);
    assert_eq!(p["spec"]["nodeSelector"], live["spec"]["nodeSelector"]);
    assert_eq!(
        p["metadata"]["annotations"][REVISION_ANNOTATION],
        "motd-aaaa"
    );
    assert_eq!(p["metadata"]["generation"], 7);
    // It parses and is decided like any policy.
    let mut last_good = BTreeMap::new();
    let d = decide(
        &pinned,
        &labels(&[("role", "web")]),
        "driftless",
        &secrets(),
        &mut last_good,
    );
    assert!(d.refusals.is_empty(), "{:?}", d.refusals);
    assert_eq!(names(&d), ["ApplyPolicy/motd"]);
    // Assigned a revision the node cannot see yet: the previous version keeps running.
    let unknown: BTreeMap<String, String> = [("motd".to_owned(), "motd-bbbb".to_owned())].into();
    let previous: BTreeMap<Key, Value> =
        [((PolicyKind::ApplyPolicy, "motd".to_owned()), p.clone())].into();
    assert_eq!(
        pin(vec![live.clone()], &unknown, &revisions, &previous),
        vec![p.clone()]
    );
    assert!(pin(vec![live], &unknown, &revisions, &BTreeMap::new()).is_empty());
}

#[test]
fn only_the_newest_revision_runs_the_probes() {
    let mut live = motd(7, Value::Null, "live\n");
    live["spec"]["rollout"] = json!({"strategy": "Canary", "canary": {"nodes": 1,
        "healthCheck": {"command": ["/bin/false"]}}});
    let data = json!({"spec": motd(5, Value::Null, "old\n")["spec"].clone()});
    let assignments: BTreeMap<String, String> =
        [("motd".to_owned(), "motd-aaaa".to_owned())].into();
    for newest in [true, false] {
        let revisions: BTreeMap<String, Revision> = [(
            "motd-aaaa".to_owned(),
            Revision {
                data: data.clone(),
                newest,
            },
        )]
        .into();
        let pinned = pin(
            vec![live.clone()],
            &assignments,
            &revisions,
            &BTreeMap::new(),
        );
        let canary = &pinned[0]["spec"]["rollout"]["canary"];
        assert_eq!(canary["nodes"], 1, "{newest}");
        assert_eq!(canary.get("healthCheck").is_some(), newest, "{canary}");
    }
}
