//! Every CEL rule (`x-kubernetes-validations`) of the generated CRDs rejects a bad object.
//!
//! The objects are evaluated by a CEL interpreter over the generated schema (the same path
//! `driftless validate` takes); `e2e/` sends the same kind of objects to a real API server. A
//! rule added to the types without a case here fails `every_rule_has_a_case`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use driftless_crds::generate;
use driftless_crds::resource::parse;
use serde_json::{json, Value};

fn doc(kind: &str, spec: Value) -> Value {
    let mut metadata = json!({"name": "t"});
    if matches!(kind, "DriftScan" | "DriftReport") {
        metadata["namespace"] = json!("default");
    }
    json!({"apiVersion": "driftless.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
}

fn problems(kind: &str, spec: Value) -> Vec<String> {
    match parse(doc(kind, spec)) {
        Ok(_) => Vec::new(),
        Err(problems) => problems.iter().map(ToString::to_string).collect(),
    }
}

fn task(body: Value) -> Value {
    json!({"tasks": [body]})
}

fn pipeline(source: Value, sink: Value) -> Value {
    json!({"sources": [source], "sinks": [sink]})
}

fn file_source() -> Value {
    json!({"name": "app", "include": ["/var/log/*.log"]})
}

fn file_sink() -> Value {
    json!({"name": "out", "file": {"directory": "/tmp/out"}})
}

fn scan(git: Value) -> Value {
    json!({"source": {"git": git}})
}

/// (kind, bad spec, the exact problem it must produce).
fn cases() -> Vec<(&'static str, Value, &'static str)> {
    let one_task_type = "exactly one task type must be set, one of: file, directory, symlink, lineInFile, blockInFile, package, service, sysctl, user, group, kernelModule, mount, cron, command, plugin";
    vec![
        (
            "ApplyPolicy",
            task(json!({"name": "two", "file": {"path": "/a"}, "directory": {"path": "/b"}})),
            "spec.tasks[0]: ",
        ),
        ("ApplyPolicy", task(json!({"name": "none"})), one_task_type),
        (
            "ApplyPolicy",
            task(json!({"name": "p", "plugin": {"name": "motd", "url": "https://x/motd.wasm"}})),
            "spec.tasks[0].plugin: a plugin with a url needs its sha256",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "handlers": [{"name": "h"}]}),
            one_task_type,
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "f", "file": {"path": "/a", "content": "x", "template": "y"}})),
            "spec.tasks[0].file: at most one of content, template and source may be set",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "l", "lineInFile": {"path": "/a", "line": "x", "insertAfter": "EOF", "insertBefore": "BOF"}})),
            "spec.tasks[0].lineInFile: insertAfter and insertBefore are mutually exclusive",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "l", "lineInFile": {"path": "/a"}})),
            "spec.tasks[0].lineInFile: line is required unless state is absent with a regexp",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "b", "blockInFile": {"path": "/a", "block": "x", "insertAfter": "EOF", "insertBefore": "BOF"}})),
            "spec.tasks[0].blockInFile: insertAfter and insertBefore are mutually exclusive",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "p", "package": {"name": "curl", "state": "absent", "version": "1.0"}})),
            "spec.tasks[0].package: version cannot be set when state is absent",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "s", "service": {"name": "cron"}})),
            "spec.tasks[0].service: set enabled, state or both",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "c", "command": {"argv": ["true"], "shell": "true"}})),
            "spec.tasks[0].command: exactly one of argv and shell must be set",
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "c", "command": {}})),
            "spec.tasks[0].command: exactly one of argv and shell must be set",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "ignore": [{"reason": "why"}]}),
            "spec.ignore[0]: set at least one of task, resource and path",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"strategy": "Canary"}}),
            "spec.rollout: canary must be set when strategy is Canary",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": 0}}),
            "spec.rollout.maxUnavailable: must be a positive count or a percentage between 1% and 100%",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": "0%"}}),
            "spec.rollout.maxUnavailable: must be a positive count or a percentage between 1% and 100%",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": "150%"}}),
            "spec.rollout.maxUnavailable: must be a positive count or a percentage between 1% and 100%",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": "abc"}}),
            "spec.rollout.maxUnavailable: must be a positive count or a percentage between 1% and 100%",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"strategy": "Canary", "canary": {"nodes": -1}}}),
            "spec.rollout.canary.nodes: must be a positive count or a percentage between 1% and 100%",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "secrets": [{"name": "A"}, {"name": "A"}]}),
            "spec.secrets: names must be unique",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "audit": {"sinks": [{"name": "a", "directory": {"path": "/x"}}, {"name": "a", "http": {"url": "http://x"}}]}}),
            "spec.audit.sinks: names must be unique",
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "audit": {"sinks": [{"name": "a"}]}}),
            "spec.audit.sinks[0]: exactly one audit sink kind must be set, one of: directory, http, s3",
        ),
        (
            "FactsPolicy",
            json!({"facts": [{"name": "k", "file": {"path": "/a"}}, {"name": "k", "command": {"argv": ["true"]}}]}),
            "spec.facts: names must be unique",
        ),
        (
            "FactsPolicy",
            json!({"facts": [{"name": "k"}]}),
            "spec.facts[0]: exactly one fact source must be set, one of: command, file, plugin",
        ),
        (
            "FactsPolicy",
            json!({"thresholds": [
                {"name": "t", "metric": "node_load1", "comparison": "GreaterThan", "value": 1},
                {"name": "t", "metric": "node_load5", "comparison": "GreaterThan", "value": 1}]}),
            "spec.thresholds: names must be unique",
        ),
        (
            "LogPipeline",
            json!({"sources": [file_source(), file_source()], "sinks": [file_sink()]}),
            "spec.sources: names must be unique",
        ),
        (
            "LogPipeline",
            json!({"sources": [file_source()], "sinks": [file_sink(), file_sink()]}),
            "spec.sinks: names must be unique",
        ),
        (
            "LogPipeline",
            pipeline(json!({"name": "app"}), file_sink()),
            "spec.sources[0]: include must list at least one glob unless kubernetes is true",
        ),
        (
            "LogPipeline",
            pipeline(json!({"name": "app", "include": ["/a"], "format": "regex"}), file_sink()),
            "spec.sources[0]: regex must be set exactly when format is regex",
        ),
        (
            "LogPipeline",
            pipeline(json!({"name": "app", "include": ["/a"], "regex": {"pattern": "(?P<x>.*)"}}), file_sink()),
            "spec.sources[0]: regex must be set exactly when format is regex",
        ),
        (
            "LogPipeline",
            pipeline(json!({"name": "app", "include": ["/a"], "multiline": {"startPattern": "^a", "continuationPattern": "^ "}}), file_sink()),
            "spec.sources[0].multiline: exactly one of startPattern and continuationPattern must be set",
        ),
        (
            "LogPipeline",
            json!({"sources": [file_source()], "sinks": [file_sink()], "transforms": [{"dropFields": ["a"], "addFields": {"b": "c"}}]}),
            "spec.transforms[0]: exactly one transform must be set, one of: include, exclude, addFields, dropFields, renameFields, redact, plugin",
        ),
        (
            "LogPipeline",
            pipeline(file_source(), json!({"name": "two", "file": {"directory": "/a"}, "http": {"url": "http://x"}})),
            "spec.sinks[0]: exactly one sink kind must be set, one of: file, s3, syslog, http",
        ),
        (
            "LogPipeline",
            pipeline(file_source(), json!({"name": "none"})),
            "spec.sinks[0]: exactly one sink kind must be set, one of: file, s3, syslog, http",
        ),
        (
            "DriftScan",
            scan(json!({"url": "file:///r"})),
            "spec.source.git: set stacks or discover (or both)",
        ),
        (
            "DriftScan",
            scan(json!({"url": "file:///r", "stacks": ["a"], "credentials": {"https": {"name": "s"}, "ssh": {"name": "s"}}})),
            "spec.source.git.credentials: exactly one credential kind must be set, one of: https, ssh, githubApp",
        ),
        (
            "DriftScan",
            json!({"source": {"git": {"url": "file:///r", "stacks": ["a"]}}, "artifacts": {"volumeClaim": "c", "s3": {"bucket": "plans"}}}),
            "spec.artifacts: exactly one of s3 and volumeClaim must be set",
        ),
    ]
}

#[test]
fn every_case_is_rejected_with_its_message() {
    for (kind, spec, expected) in cases() {
        let got = problems(kind, spec.clone());
        assert!(
            got.iter().any(|p| p.contains(expected)),
            "{kind} {spec}\nexpected a problem containing {expected:?}\ngot {got:#?}"
        );
    }
}

#[test]
fn two_task_types_name_both() {
    let got = problems(
        "ApplyPolicy",
        task(json!({"name": "two", "file": {"path": "/a"}, "directory": {"path": "/b"}})),
    );
    assert_eq!(got, ["spec.tasks[0]: exactly one task type must be set, one of: file, directory, symlink, lineInFile, blockInFile, package, service, sysctl, user, group, kernelModule, mount, cron, command, plugin"]);
}

#[test]
fn valid_neighbours_are_accepted() {
    // The same shapes with the rule satisfied: the rejections above are due to the rules.
    let valid = [
        (
            "ApplyPolicy",
            task(json!({"name": "f", "file": {"path": "/a", "content": "x"}})),
        ),
        (
            "ApplyPolicy",
            task(
                json!({"name": "l", "lineInFile": {"path": "/a", "regexp": "^x", "state": "absent"}}),
            ),
        ),
        (
            "ApplyPolicy",
            task(json!({"name": "c", "command": {"shell": "true", "creates": "/x"}})),
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": "100%"}}),
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"maxUnavailable": 3}}),
        ),
        (
            "ApplyPolicy",
            json!({"tasks": [], "rollout": {"strategy": "Canary", "canary": {"nodes": "10%"}}}),
        ),
        (
            "LogPipeline",
            pipeline(json!({"name": "k", "kubernetes": true}), file_sink()),
        ),
        (
            "LogPipeline",
            pipeline(
                json!({"name": "r", "include": ["/a"], "format": "regex", "regex": {"pattern": "(?P<x>.*)"}}),
                file_sink(),
            ),
        ),
        (
            "DriftScan",
            scan(json!({"url": "file:///r", "discover": ["stacks/*"]})),
        ),
        ("FactsPolicy", json!({})),
    ];
    for (kind, spec) in valid {
        assert_eq!(
            problems(kind, spec.clone()),
            Vec::<String>::new(),
            "{kind} {spec}"
        );
    }
}

fn collect_messages(schema: &Value, out: &mut BTreeSet<String>) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for rule in rules {
                    if let Some(message) = rule.get("message").and_then(Value::as_str) {
                        out.insert(message.to_owned());
                    }
                }
            }
            map.values().for_each(|v| collect_messages(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_messages(v, out)),
        _ => {}
    }
}

#[test]
fn every_rule_has_a_case() {
    let mut messages = BTreeSet::new();
    for crd in generate::crds() {
        collect_messages(&serde_json::to_value(&crd).unwrap(), &mut messages);
    }
    let covered: Vec<&str> = cases().iter().map(|(_, _, expected)| *expected).collect();
    let untested: Vec<&String> = messages
        .iter()
        .filter(|m| !covered.iter().any(|c| c.contains(m.as_str())))
        .collect();
    assert!(
        untested.is_empty(),
        "CEL rules without a rejecting case: {untested:#?}"
    );
    assert!(messages.len() >= 15, "expected the CRDs to carry CEL rules");
}
