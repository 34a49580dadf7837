//! The Driftless API against a real Kubernetes API server: the CRDs install, the samples
//! round-trip, `kubectl get` shows the printer columns, the CEL rules and the schema refuse
//! bad objects with their messages, and strict field validation names unknown fields.
//!
//! Every test needs `KUBECONFIG`; without it each prints one `skipped:` line and passes.

use std::collections::BTreeSet;

use anyhow::{ensure, Context as _};
use driftless_e2e::{
    api_error, apply, apply_status, cel_rules, client_or_skip, crd_condition, crds,
    create_with_field_validation, differences, dynamic, get_table, in_scope, install_crds, kinds,
    now, read_documents, repo_root, Scope, Table, FIELD_MANAGER, RUN_LABEL,
};
use kube::api::{ListParams, PatchParams, PostParams};
use serde_json::{json, Value};

/// Scope, short names and presence of the status subresource of every kind, as the design
/// specifies them.
const EXPECTED_KINDS: &[(&str, &str, &str, &str)] = &[
    ("ApplyPolicy", "applypolicies", "Cluster", "ap"),
    ("FactsPolicy", "factspolicies", "Cluster", "fp"),
    ("LogPipeline", "logpipelines", "Cluster", "lp"),
    ("DriftScan", "driftscans", "Namespaced", "ds"),
    ("DriftReport", "driftreports", "Namespaced", "dr"),
    (
        "NotificationPolicy",
        "notificationpolicies",
        "Namespaced",
        "np",
    ),
];

#[tokio::test]
async fn crds_apply_and_become_established() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("crds_apply_and_become_established").await else {
        return Ok(());
    };
    let stored = install_crds(&client).await?;
    let generated = crds();
    ensure!(
        stored.len() == EXPECTED_KINDS.len(),
        "expected {} CRDs, installed {}",
        EXPECTED_KINDS.len(),
        stored.len()
    );
    let mut problems = Vec::new();
    for ((kind, plural, scope, short), (crd, sent)) in
        EXPECTED_KINDS.iter().zip(stored.iter().zip(&generated))
    {
        let names = &crd.spec.names;
        let name = format!("{plural}.driftless.dev");
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(format!("{name}: {what}"));
            }
        };
        check(
            crd.metadata.name.as_deref() == Some(name.as_str()),
            format!("named {:?}", crd.metadata.name),
        );
        check(names.kind == *kind, format!("kind is {}", names.kind));
        check(
            crd.spec.scope == *scope,
            format!("scope is {}", crd.spec.scope),
        );
        check(
            names.short_names.as_deref() == Some(&[short.to_string()][..]),
            format!(
                "short names are {:?}, expected [{short}]",
                names.short_names
            ),
        );
        check(
            names
                .categories
                .as_deref()
                .unwrap_or_default()
                .iter()
                .any(|c| c == "driftless"),
            format!("categories are {:?}", names.categories),
        );
        for condition in ["Established", "NamesAccepted"] {
            check(
                crd_condition(crd, condition) == Some("True"),
                format!(
                    "condition {condition} is {:?}",
                    crd_condition(crd, condition)
                ),
            );
        }
        let accepted = crd
            .status
            .as_ref()
            .and_then(|s| s.accepted_names.as_ref())
            .map(|n| (n.plural.as_str(), n.short_names.clone()));
        check(
            accepted == Some((*plural, Some(vec![short.to_string()]))),
            format!("accepted names are {accepted:?}"),
        );
        check(
            crd.spec.versions.len() == 1,
            format!("{} versions", crd.spec.versions.len()),
        );
        for version in &crd.spec.versions {
            check(
                version.name == driftless_crds::VERSION && version.served && version.storage,
                format!(
                    "version {} served={} storage={}",
                    version.name, version.served, version.storage
                ),
            );
            check(
                version
                    .subresources
                    .as_ref()
                    .is_some_and(|s| s.status.is_some()),
                format!("version {} has no status subresource", version.name),
            );
        }
        // The server keeps the generated spec as it is: nothing pruned or rewritten.
        let diffs = differences(
            &serde_json::to_value(&sent.spec)?,
            &serde_json::to_value(&crd.spec)?,
        );
        check(
            diffs.is_empty(),
            format!("the server changed the spec: {}", diffs.join("; ")),
        );
        let managed = crd
            .metadata
            .managed_fields
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|m| {
                m.manager.as_deref() == Some(FIELD_MANAGER)
                    && m.operation.as_deref() == Some("Apply")
            });
        check(
            managed,
            format!("no Apply entry of field manager {FIELD_MANAGER}"),
        );
    }
    // Discovery is what `kubectl get driftless` and `kubectl get ap` resolve names with.
    let discovery = client
        .list_api_group_resources(driftless_crds::API_VERSION)
        .await?;
    for (kind, plural, scope, short) in EXPECTED_KINDS {
        match discovery.resources.iter().find(|r| r.name == *plural) {
            None => problems.push(format!("discovery does not list {plural}")),
            Some(resource) => {
                let categories = resource.categories.clone().unwrap_or_default();
                let shorts = resource.short_names.clone().unwrap_or_default();
                if resource.kind != *kind
                    || resource.namespaced != (*scope == "Namespaced")
                    || !categories.iter().any(|c| c == "driftless")
                    || shorts != [short.to_string()]
                {
                    problems.push(format!(
                        "discovery lists {plural} as kind {} namespaced={} \
                         categories={categories:?} shortNames={shorts:?}",
                        resource.kind, resource.namespaced
                    ));
                }
            }
        }
        if !discovery
            .resources
            .iter()
            .any(|r| r.name == format!("{plural}/status"))
        {
            problems.push(format!("discovery does not list {plural}/status"));
        }
    }
    ensure!(
        problems.is_empty(),
        "CRD problems:\n  {}",
        problems.join("\n  ")
    );
    Ok(())
}

#[tokio::test]
async fn samples_round_trip() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("samples_round_trip").await else {
        return Ok(());
    };
    install_crds(&client).await?;
    let dir = repo_root().join("config/samples");
    let documents = read_documents(&dir)?;
    let samples: Vec<_> = documents
        .into_iter()
        .filter(|d| {
            d.value["apiVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("driftless.dev/"))
        })
        .collect();
    let sample_kinds: BTreeSet<&str> = samples
        .iter()
        .filter_map(|d| d.value["kind"].as_str())
        .collect();
    let all_kinds: BTreeSet<String> = kinds().into_iter().map(|k| k.resource.kind).collect();
    let missing: Vec<_> = all_kinds
        .iter()
        .filter(|k| !sample_kinds.contains(k.as_str()))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} has no sample of {missing:?}",
        dir.display()
    );

    in_scope(&client, "samples", move |scope: Scope| async move {
        let mut problems = Vec::new();
        // (kind, name) of every object applied, to find again through the category.
        let mut applied = Vec::new();
        for sample in &samples {
            let kind = sample.value["kind"].as_str().unwrap_or_default().to_owned();
            let mut object = sample.value.clone();
            let original = object["metadata"]["name"]
                .as_str()
                .with_context(|| format!("{}: no metadata.name", sample.describe()))?
                .to_owned();
            // Cluster-scoped samples get a name of this run, so a copy of the samples someone
            // applied to the cluster is never touched.
            let name = if driftless_e2e::kind(&kind)?.namespaced {
                original
            } else {
                scope.name(&original)
            };
            object["metadata"]["name"] = json!(name);
            scope.adopt(&mut object)?;
            let api = scope.api(&kind)?;
            if let Err(err) = apply(&api, &object).await {
                problems.push(format!("{}: {err:#}", sample.describe()));
                continue;
            }
            let stored = serde_json::to_value(api.get(&name).await?)?;
            for diff in differences(&sample.value["spec"], &stored["spec"]) {
                problems.push(format!("{}: spec{diff}", sample.describe()));
            }
            if let Some(status) = sample.value.get("status") {
                let stored = apply_status(&api, &kind, &name, status.clone()).await?;
                let stored = serde_json::to_value(stored)?;
                for diff in differences(status, &stored["status"]) {
                    problems.push(format!("{}: status{diff}", sample.describe()));
                }
            }
            applied.push((kind, name));
        }

        // `kubectl get driftless`: every resource in the category, listed; each sample is there.
        let discovery = scope
            .client
            .list_api_group_resources(driftless_crds::API_VERSION)
            .await?;
        let in_category: BTreeSet<String> = discovery
            .resources
            .iter()
            .filter(|r| {
                r.categories
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c == "driftless")
            })
            .map(|r| r.kind.clone())
            .collect();
        let expected: BTreeSet<String> = kinds().into_iter().map(|k| k.resource.kind).collect();
        ensure!(
            in_category == expected,
            "the category driftless holds {in_category:?}, expected {expected:?}"
        );
        let selector = format!("{RUN_LABEL}={}", scope.namespace);
        for kind in &in_category {
            let listed = scope
                .api(kind)?
                .list(&ListParams::default().labels(&selector))
                .await
                .with_context(|| format!("listing {kind}"))?;
            let names: BTreeSet<String> = listed
                .items
                .into_iter()
                .filter_map(|o| o.metadata.name)
                .collect();
            for (_, name) in applied.iter().filter(|(k, _)| k == kind) {
                if !names.contains(name) {
                    problems.push(format!("listing {kind} does not show {name}: {names:?}"));
                }
            }
        }
        ensure!(
            problems.is_empty(),
            "samples do not round-trip:\n  {}",
            problems.join("\n  ")
        );
        Ok(())
    })
    .await
}

/// The text `kubectl get` prints for a cell.
fn cell_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

/// Checks the columns shown without `-o wide` (after NAME) and the cells of one row.
fn check_table(
    table: &Table,
    what: &str,
    columns: &[&str],
    row_name: &str,
    cells: &[(&str, &str)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut expected = vec!["Name"];
    expected.extend_from_slice(columns);
    if table.default_columns() != expected {
        problems.push(format!(
            "{what}: columns are {:?}, expected {expected:?}",
            table.default_columns()
        ));
    }
    for column in &table.column_definitions {
        if column.priority > 1 {
            problems.push(format!(
                "{what}: column {} has priority {}",
                column.name, column.priority
            ));
        }
    }
    match table.row(row_name) {
        None => problems.push(format!("{what}: no row for {row_name}")),
        Some(row) => {
            for (column, want) in cells {
                match row.iter().find(|(name, _)| name == column) {
                    None => problems.push(format!("{what}: no cell {column}")),
                    Some((_, got)) if cell_text(got) != *want => problems.push(format!(
                        "{what}: {column} shows {}, expected {want}",
                        cell_text(got)
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    problems
}

#[tokio::test]
async fn printer_columns_show_status() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("printer_columns_show_status").await else {
        return Ok(());
    };
    install_crds(&client).await?;
    in_scope(&client, "columns", |scope: Scope| async move {
        let mut problems = Vec::new();

        let reports = scope.api("DriftReport")?;
        let report = scope.object(
            "DriftReport",
            "infra-network",
            json!({ "target": { "kind": "Stack", "name": "infra/network", "scan": "infra",
                                "stack": "network" } }),
        )?;
        apply(&reports, &report).await?;
        let table = get_table(&scope.client, &reports).await?;
        problems.extend(check_table(
            &table,
            "DriftReport before any status",
            &[
                "TARGET", "STATUS", "ADDED", "CHANGED", "REMOVED", "CHECKED", "AGE",
            ],
            "infra-network",
            &[("TARGET", "infra/network"), ("STATUS", "<none>")],
        ));
        let summary = json!({ "summary": { "status": "Drifted", "added": 1, "changed": 2,
                                           "removed": 0, "checkedAt": now() } });
        let stored = apply_status(&reports, "DriftReport", "infra-network", summary).await?;
        let stored = serde_json::to_value(stored)?;
        ensure!(
            stored["status"]["summary"]["status"] == "Drifted",
            "the status subresource did not keep the summary: {}",
            stored["status"]
        );
        let table = get_table(&scope.client, &reports).await?;
        problems.extend(check_table(
            &table,
            "DriftReport",
            &[
                "TARGET", "STATUS", "ADDED", "CHANGED", "REMOVED", "CHECKED", "AGE",
            ],
            "infra-network",
            &[
                ("TARGET", "infra/network"),
                ("STATUS", "Drifted"),
                ("ADDED", "1"),
                ("CHANGED", "2"),
                ("REMOVED", "0"),
                ("KIND", "Stack"),
            ],
        ));
        if let Some(row) = table.row("infra-network") {
            // A date column is rendered as an age, like `5s`.
            let checked = row
                .iter()
                .find(|(c, _)| *c == "CHECKED")
                .map(|(_, v)| cell_text(v));
            if !checked
                .as_deref()
                .is_some_and(|t| t.ends_with('s') || t.ends_with('m'))
            {
                problems.push(format!(
                    "DriftReport: CHECKED shows {checked:?}, expected an age"
                ));
            }
        }

        let scans = scope.api("DriftScan")?;
        let scan = scope.object(
            "DriftScan",
            "infra",
            json!({ "source": { "git": { "url": "https://git.example.com/infra.git",
                                         "stacks": ["network"] } },
                    "schedule": "0 2 * * *" }),
        )?;
        apply(&scans, &scan).await?;
        let last_run = json!({ "lastRun": { "id": "infra-1", "trigger": "Schedule",
                                            "phase": "Succeeded", "startedAt": now(),
                                            "total": 3, "completed": 3, "drifted": 2 } });
        apply_status(&scans, "DriftScan", "infra", last_run).await?;
        let table = get_table(&scope.client, &scans).await?;
        problems.extend(check_table(
            &table,
            "DriftScan",
            &["SCHEDULE", "LAST RUN", "STATUS", "DRIFTED", "AGE"],
            "infra",
            &[
                ("SCHEDULE", "0 2 * * *"),
                ("STATUS", "Succeeded"),
                ("DRIFTED", "2"),
            ],
        ));

        let policies = scope.api("ApplyPolicy")?;
        let name = scope.name("columns");
        let policy = scope.object(
            "ApplyPolicy",
            &name,
            json!({ "tasks": [{ "name": "motd",
                                "file": { "path": "/etc/motd", "content": "hi\n" } }] }),
        )?;
        apply(&policies, &policy).await?;
        let status = json!({ "targeted": 3, "inSync": 1, "drifted": 1, "failed": 1,
            "updated": 2, "rollout": { "step": "Progressing" },
            "conditions": [{ "type": "Ready", "status": "False", "reason": "NodesFailed",
                             "message": "1 of 3 nodes failed", "lastTransitionTime": now() }] });
        apply_status(&policies, "ApplyPolicy", &name, status).await?;
        let table = get_table(&scope.client, &policies).await?;
        problems.extend(check_table(
            &table,
            "ApplyPolicy",
            &[
                "MODE", "TARGETED", "UPDATED", "STEP", "IN-SYNC", "DRIFTED", "FAILED", "READY",
                "AGE",
            ],
            &name,
            // MODE comes from the schema default.
            &[
                ("MODE", "Enforce"),
                ("TARGETED", "3"),
                ("UPDATED", "2"),
                ("STEP", "Progressing"),
                ("IN-SYNC", "1"),
                ("DRIFTED", "1"),
                ("FAILED", "1"),
                ("READY", "False"),
            ],
        ));

        ensure!(
            problems.is_empty(),
            "printer columns:\n  {}",
            problems.join("\n  ")
        );
        Ok(())
    })
    .await
}

/// What the API server must answer to a case.
#[derive(Clone, Debug)]
enum Expect {
    /// 422, from the CEL rule of `kind` at schema path `rule` whose message is `message`,
    /// reported at the concrete field path `field`.
    Rule {
        rule: &'static str,
        message: &'static str,
        field: &'static str,
    },
    /// 422 from the structural schema (not CEL), with `message` at `field`.
    Schema {
        message: &'static str,
        field: &'static str,
    },
    /// Accepted: shows a rule does not refuse valid objects.
    Accepted,
}

/// One object to create (as a dry run): a valid baseline of `kind` with `set` applied.
#[derive(Clone, Debug)]
struct Case {
    what: &'static str,
    kind: &'static str,
    /// (JSON pointer into the object, value); an index one past the end of a list appends.
    set: Vec<(&'static str, Value)>,
    expect: Expect,
}

fn baseline(kind: &str) -> Value {
    match kind {
        "ApplyPolicy" => json!({
            "tasks": [{ "name": "motd", "file": { "path": "/etc/motd", "content": "hello\n" } }],
        }),
        "FactsPolicy" => json!({ "interval": "30s" }),
        "LogPipeline" => json!({
            "sources": [{ "name": "app", "include": ["/var/log/app/*.log"] }],
            "sinks": [{ "name": "out", "file": { "directory": "/var/lib/driftless/out" } }],
        }),
        "DriftScan" => json!({
            "source": { "git": { "url": "https://git.example.com/infra.git",
                                 "stacks": ["network"] } },
        }),
        "DriftReport" => json!({ "target": { "kind": "Stack", "name": "infra/network" } }),
        "NotificationPolicy" => json!({ "receivers": [{ "name": "events", "type": "event" }] }),
        _ => Value::Null,
    }
}

/// Sets `value` at `pointer`, creating objects on the way; index `len` of a list appends.
fn set(target: &mut Value, pointer: &str, value: Value) -> anyhow::Result<()> {
    let mut node = target;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    let (last, parents) = parts.split_last().context("empty pointer")?;
    for part in parents {
        node = match node {
            Value::Array(items) => items
                .get_mut(part.parse::<usize>()?)
                .with_context(|| format!("{pointer}: no item {part}"))?,
            Value::Object(map) => map.entry(*part).or_insert_with(|| json!({})),
            _ => anyhow::bail!("{pointer}: {part} is not in a list or mapping"),
        };
    }
    match node {
        Value::Array(items) => {
            let index: usize = last.parse()?;
            if index == items.len() {
                items.push(value);
            } else {
                *items
                    .get_mut(index)
                    .with_context(|| format!("{pointer}: no item {index}"))? = value;
            }
        }
        Value::Object(map) => {
            map.insert((*last).to_owned(), value);
        }
        _ => anyhow::bail!("{pointer}: not in a list or mapping"),
    }
    Ok(())
}

const TASK_TYPE: &str = "exactly one task type must be set, one of: file, directory, symlink, \
                         lineInFile, blockInFile, package, service, sysctl, user, group, \
                         kernelModule, mount, cron, command, plugin";
const FILE_CONTENT: &str = "at most one of content, template and source may be set";
const INSERT: &str = "insertAfter and insertBefore are mutually exclusive";
const LINE: &str = "line is required unless state is absent with a regexp";
const ARGV_SHELL: &str = "exactly one of argv and shell must be set";
const VERSION_ABSENT: &str = "version cannot be set when state is absent";
const SERVICE: &str = "set enabled, state or both";
const IGNORE: &str = "set at least one of task, resource and path";
const COUNT_OR_PERCENT: &str = "must be a positive count or a percentage between 1% and 100%";
const CANARY: &str = "canary must be set when strategy is Canary";
const UNIQUE: &str = "names must be unique";
const AUDIT_SINK: &str = "exactly one audit sink kind must be set, one of: directory, http, s3";
const FACT_SOURCE: &str = "exactly one fact source must be set, one of: command, file, plugin";
const PLUGIN_URL: &str = "a plugin with a url needs its sha256";
const SINK: &str = "exactly one sink kind must be set, one of: file, s3, syslog, http";
const MULTILINE: &str = "exactly one of startPattern and continuationPattern must be set";
const REGEX: &str = "regex must be set exactly when format is regex";
const INCLUDE: &str = "include must list at least one glob unless kubernetes is true";
const TRANSFORM: &str = "exactly one transform must be set, one of: include, exclude, addFields, \
                         dropFields, renameFields, redact, plugin";
const GIT_STACKS: &str = "set stacks or discover (or both)";
const CREDENTIALS: &str = "exactly one credential kind must be set, one of: https, ssh, githubApp";
const ARTIFACTS: &str = "exactly one of s3 and volumeClaim must be set";

fn rejected(
    what: &'static str,
    kind: &'static str,
    set: Vec<(&'static str, Value)>,
    rule: &'static str,
    message: &'static str,
    field: &'static str,
) -> Case {
    Case {
        what,
        kind,
        set,
        expect: Expect::Rule {
            rule,
            message,
            field,
        },
    }
}

fn accepted(what: &'static str, kind: &'static str, set: Vec<(&'static str, Value)>) -> Case {
    Case {
        what,
        kind,
        set,
        expect: Expect::Accepted,
    }
}

/// A task (or handler) holding one task body, named `name`.
fn task(name: &str, key: &str, body: Value) -> Value {
    json!({ "name": name, key: body })
}

/// Every case, by kind. Add a row when a rule is added; `every_cel_rule_has_a_case` insists.
/// Kept as a hand-aligned table: one case per entry reads better than rustfmt's one argument
/// per line.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    const AP: &str = "ApplyPolicy";
    const FP: &str = "FactsPolicy";
    const LP: &str = "LogPipeline";
    const DS: &str = "DriftScan";
    let motd = json!({ "path": "/etc/motd" });
    let hosts_both = json!({ "path": "/etc/hosts", "line": "10.0.0.1 db", "insertAfter": "EOF",
                             "insertBefore": "BOF" });
    let block_both = json!({ "path": "/etc/hosts", "block": "10.0.0.1 db", "insertAfter": "EOF",
                             "insertBefore": "BOF" });
    let argv_and_shell = json!({ "argv": ["true"], "shell": "true" });
    let absent_version = json!({ "name": "telnet", "state": "absent", "version": "1.0" });
    let service_nothing = json!({ "name": "ssh" });
    let secret_twice = json!([{ "name": "TOKEN" }, { "name": "TOKEN" }]);
    let mut cases = Vec::new();
    for kind in [AP, FP, LP, DS, "DriftReport", "NotificationPolicy"] {
        cases.push(accepted("the baseline", kind, vec![]));
    }
    cases.extend([
        // ApplyPolicy: tasks and handlers share the Task schema; both carry every rule.
        rejected("a task with two task types", AP,
            vec![("/spec/tasks/0", json!({ "name": "motd", "file": motd,
                                          "directory": { "path": "/etc/motd.d" } }))],
            "spec.tasks[]", TASK_TYPE, "spec.tasks[0]"),
        rejected("a task with no task type", AP,
            vec![("/spec/tasks/0", json!({ "name": "motd" }))],
            "spec.tasks[]", TASK_TYPE, "spec.tasks[0]"),
        rejected("a handler with no task type", AP,
            vec![("/spec/handlers", json!([{ "name": "restart-ssh" }]))],
            "spec.handlers[]", TASK_TYPE, "spec.handlers[0]"),
        rejected("a plugin task with a url and no sha256", AP,
            vec![("/spec/tasks/0", json!({ "name": "motd",
                "plugin": { "name": "motd", "url": "https://example.com/motd.wasm" } }))],
            "spec.tasks[].plugin", PLUGIN_URL, "spec.tasks[0].plugin"),
        rejected("a plugin handler with a url and no sha256", AP,
            vec![("/spec/handlers", json!([{ "name": "motd",
                "plugin": { "name": "motd", "url": "https://example.com/motd.wasm" } }]))],
            "spec.handlers[].plugin", PLUGIN_URL, "spec.handlers[0].plugin"),
        rejected("a filter plugin with a url and no sha256", AP,
            vec![("/spec/templateFilters", json!([{ "name": "redact",
                "url": "https://example.com/redact.wasm" }]))],
            "spec.templateFilters[]", PLUGIN_URL, "spec.templateFilters[0]"),
        accepted("a plugin task pinned by digest", AP,
            vec![("/spec/tasks/0", json!({ "name": "motd",
                "plugin": { "name": "motd", "url": "https://example.com/motd.wasm",
                            "sha256": format!("sha256:{}", "a".repeat(64)),
                            "config": { "path": "/etc/motd", "text": "hi" },
                            "grants": { "write": ["/etc"] }, "memoryMiB": 16 } }))]),
        rejected("a file task with content and template", AP,
            vec![("/spec/tasks/0/file/template", json!("{{ vars.motd }}"))],
            "spec.tasks[].file", FILE_CONTENT, "spec.tasks[0].file"),
        rejected("a file handler with content and source", AP,
            vec![("/spec/handlers", json!([task("motd", "file",
                json!({ "path": "/etc/motd", "content": "hi", "source": "files/motd" }))]))],
            "spec.handlers[].file", FILE_CONTENT, "spec.handlers[0].file"),
        accepted("a file task with only a template", AP,
            vec![("/spec/tasks/0/file", json!({ "path": "/etc/motd", "template": "{{ x }}" }))]),
        rejected("lineInFile with insertAfter and insertBefore", AP,
            vec![("/spec/tasks/0", task("hosts", "lineInFile", hosts_both.clone()))],
            "spec.tasks[].lineInFile", INSERT, "spec.tasks[0].lineInFile"),
        rejected("a lineInFile handler with insertAfter and insertBefore", AP,
            vec![("/spec/handlers", json!([task("hosts", "lineInFile", hosts_both)]))],
            "spec.handlers[].lineInFile", INSERT, "spec.handlers[0].lineInFile"),
        rejected("lineInFile without a line", AP,
            vec![("/spec/tasks/0", task("hosts", "lineInFile",
                json!({ "path": "/etc/hosts", "regexp": "^10\\.0\\.0\\.1" })))],
            "spec.tasks[].lineInFile", LINE, "spec.tasks[0].lineInFile"),
        rejected("lineInFile absent with neither line nor regexp", AP,
            vec![("/spec/tasks/0", task("hosts", "lineInFile",
                json!({ "path": "/etc/hosts", "state": "absent" })))],
            "spec.tasks[].lineInFile", LINE, "spec.tasks[0].lineInFile"),
        rejected("a lineInFile handler without a line", AP,
            vec![("/spec/handlers", json!([task("hosts", "lineInFile",
                json!({ "path": "/etc/hosts" }))]))],
            "spec.handlers[].lineInFile", LINE, "spec.handlers[0].lineInFile"),
        accepted("lineInFile absent with only a regexp", AP,
            vec![("/spec/tasks/0", task("hosts", "lineInFile",
                json!({ "path": "/etc/hosts", "state": "absent", "regexp": "^10\\." })))]),
        rejected("blockInFile with insertAfter and insertBefore", AP,
            vec![("/spec/tasks/0", task("hosts", "blockInFile", block_both.clone()))],
            "spec.tasks[].blockInFile", INSERT, "spec.tasks[0].blockInFile"),
        rejected("a blockInFile handler with insertAfter and insertBefore", AP,
            vec![("/spec/handlers", json!([task("hosts", "blockInFile", block_both)]))],
            "spec.handlers[].blockInFile", INSERT, "spec.handlers[0].blockInFile"),
        rejected("a command with argv and shell", AP,
            vec![("/spec/tasks/0", task("run", "command", argv_and_shell.clone()))],
            "spec.tasks[].command", ARGV_SHELL, "spec.tasks[0].command"),
        rejected("a command with neither argv nor shell", AP,
            vec![("/spec/tasks/0", task("run", "command", json!({ "creates": "/etc/done" })))],
            "spec.tasks[].command", ARGV_SHELL, "spec.tasks[0].command"),
        rejected("a command handler with argv and shell", AP,
            vec![("/spec/handlers", json!([task("run", "command", argv_and_shell)]))],
            "spec.handlers[].command", ARGV_SHELL, "spec.handlers[0].command"),
        rejected("a package with a version and state absent", AP,
            vec![("/spec/tasks/0", task("telnet", "package", absent_version.clone()))],
            "spec.tasks[].package", VERSION_ABSENT, "spec.tasks[0].package"),
        rejected("a package handler with a version and state absent", AP,
            vec![("/spec/handlers", json!([task("telnet", "package", absent_version)]))],
            "spec.handlers[].package", VERSION_ABSENT, "spec.handlers[0].package"),
        rejected("a service with neither enabled nor state", AP,
            vec![("/spec/tasks/0", task("ssh", "service", service_nothing.clone()))],
            "spec.tasks[].service", SERVICE, "spec.tasks[0].service"),
        rejected("a service handler with neither enabled nor state", AP,
            vec![("/spec/handlers", json!([task("ssh", "service", service_nothing)]))],
            "spec.handlers[].service", SERVICE, "spec.handlers[0].service"),
        accepted("a restart handler notified by a task", AP, vec![
            ("/spec/tasks/0/notify", json!(["restart-ssh"])),
            ("/spec/handlers", json!([task("restart-ssh", "service",
                json!({ "name": "ssh", "state": "restarted" }))])),
        ]),
        Case {
            what: "two tasks with the same name",
            kind: AP,
            set: vec![("/spec/tasks/1", task("motd", "directory", json!({ "path": "/srv" })))],
            expect: Expect::Schema { message: "Duplicate value", field: "spec.tasks[1]" },
        },
        Case {
            what: "two handlers with the same name",
            kind: AP,
            set: vec![("/spec/handlers", json!([
                task("restart", "service", json!({ "name": "ssh", "state": "restarted" })),
                task("restart", "service", json!({ "name": "cron", "state": "restarted" })),
            ]))],
            expect: Expect::Schema { message: "Duplicate value", field: "spec.handlers[1]" },
        },
        rejected("an ignore rule with only a reason", AP,
            vec![("/spec/ignore", json!([{ "reason": "managed elsewhere" }]))],
            "spec.ignore[]", IGNORE, "spec.ignore[0]"),
        rejected("maxUnavailable 0", AP,
            vec![("/spec/rollout/maxUnavailable", json!(0))],
            "spec.rollout.maxUnavailable", COUNT_OR_PERCENT, "spec.rollout.maxUnavailable"),
        rejected("maxUnavailable \"0%\"", AP,
            vec![("/spec/rollout/maxUnavailable", json!("0%"))],
            "spec.rollout.maxUnavailable", COUNT_OR_PERCENT, "spec.rollout.maxUnavailable"),
        rejected("maxUnavailable \"150%\"", AP,
            vec![("/spec/rollout/maxUnavailable", json!("150%"))],
            "spec.rollout.maxUnavailable", COUNT_OR_PERCENT, "spec.rollout.maxUnavailable"),
        rejected("maxUnavailable \"abc\"", AP,
            vec![("/spec/rollout/maxUnavailable", json!("abc"))],
            "spec.rollout.maxUnavailable", COUNT_OR_PERCENT, "spec.rollout.maxUnavailable"),
        rejected("maxUnavailable -1", AP,
            vec![("/spec/rollout/maxUnavailable", json!(-1))],
            "spec.rollout.maxUnavailable", COUNT_OR_PERCENT, "spec.rollout.maxUnavailable"),
        accepted("maxUnavailable 3", AP, vec![("/spec/rollout/maxUnavailable", json!(3))]),
        accepted("maxUnavailable \"1%\"", AP, vec![("/spec/rollout/maxUnavailable", json!("1%"))]),
        accepted("maxUnavailable \"100%\"", AP,
            vec![("/spec/rollout/maxUnavailable", json!("100%"))]),
        rejected("strategy Canary without canary", AP,
            vec![("/spec/rollout", json!({ "strategy": "Canary" }))],
            "spec.rollout", CANARY, "spec.rollout"),
        rejected("canary nodes 0", AP,
            vec![("/spec/rollout", json!({ "strategy": "Canary", "canary": { "nodes": 0 } }))],
            "spec.rollout.canary.nodes", COUNT_OR_PERCENT, "spec.rollout.canary.nodes"),
        rejected("canary nodes \"101%\"", AP,
            vec![("/spec/rollout", json!({ "strategy": "Canary", "canary": { "nodes": "101%" } }))],
            "spec.rollout.canary.nodes", COUNT_OR_PERCENT, "spec.rollout.canary.nodes"),
        accepted("a canary rollout", AP, vec![("/spec/rollout", json!({
            "strategy": "Canary", "maxUnavailable": "25%", "autoRollback": true,
            "canary": { "nodes": "10%", "soak": "10m" } }))]),
        rejected("two secrets with the same name", AP,
            vec![("/spec/secrets", secret_twice.clone())],
            "spec.secrets", UNIQUE, "spec.secrets"),
        rejected("an audit sink of two kinds", AP,
            vec![("/spec/audit", json!({ "sinks": [{ "name": "audit",
                "directory": { "path": "/var/log/driftless" },
                "http": { "url": "https://audit.example.com" } }] }))],
            "spec.audit.sinks[]", AUDIT_SINK, "spec.audit.sinks[0]"),
        rejected("an audit sink of no kind", AP,
            vec![("/spec/audit", json!({ "sinks": [{ "name": "audit" }] }))],
            "spec.audit.sinks[]", AUDIT_SINK, "spec.audit.sinks[0]"),
        rejected("two audit sinks with the same name", AP,
            vec![("/spec/audit", json!({ "sinks": [
                { "name": "audit", "directory": { "path": "/var/log/a" } },
                { "name": "audit", "directory": { "path": "/var/log/b" } }] }))],
            "spec.audit.sinks", UNIQUE, "spec.audit.sinks"),
        // FactsPolicy
        rejected("a fact with a command and a file", FP,
            vec![("/spec/facts", json!([{ "name": "kernel", "command": { "argv": ["uname", "-r"] },
                                          "file": { "path": "/etc/os-release" } }]))],
            "spec.facts[]", FACT_SOURCE, "spec.facts[0]"),
        rejected("a fact with no source", FP,
            vec![("/spec/facts", json!([{ "name": "kernel" }]))],
            "spec.facts[]", FACT_SOURCE, "spec.facts[0]"),
        rejected("a plugin fact with a url and no sha256", FP,
            vec![("/spec/facts", json!([{ "name": "release",
                "plugin": { "name": "release", "url": "https://example.com/release.wasm" } }]))],
            "spec.facts[].plugin", PLUGIN_URL, "spec.facts[0].plugin"),
        accepted("a command fact", FP,
            vec![("/spec/facts", json!([{ "name": "kernel",
                                          "command": { "argv": ["uname", "-r"] } }]))]),
        rejected("two facts with the same name", FP,
            vec![("/spec/facts", json!([
                { "name": "kernel", "command": { "argv": ["uname", "-r"] } },
                { "name": "kernel", "file": { "path": "/proc/version" } }]))],
            "spec.facts", UNIQUE, "spec.facts"),
        rejected("two thresholds with the same name", FP,
            vec![("/spec/thresholds", json!([
                { "name": "load", "metric": "node_load1", "comparison": "GreaterThan", "value": 8 },
                { "name": "load", "metric": "node_load5", "comparison": "GreaterThan",
                  "value": 4 }]))],
            "spec.thresholds", UNIQUE, "spec.thresholds"),
        rejected("two secrets with the same name", FP,
            vec![("/spec/secrets", secret_twice.clone())],
            "spec.secrets", UNIQUE, "spec.secrets"),
        // LogPipeline
        rejected("a sink of two kinds", LP,
            vec![("/spec/sinks/0/http", json!({ "url": "http://loki:3100/loki/api/v1/push" }))],
            "spec.sinks[]", SINK, "spec.sinks[0]"),
        rejected("a sink of no kind", LP,
            vec![("/spec/sinks/0", json!({ "name": "out" }))],
            "spec.sinks[]", SINK, "spec.sinks[0]"),
        rejected("two sinks with the same name", LP,
            vec![("/spec/sinks/1", json!({ "name": "out", "http": { "url": "http://x" } }))],
            "spec.sinks", UNIQUE, "spec.sinks"),
        rejected("two sources with the same name", LP,
            vec![("/spec/sources/1", json!({ "name": "app", "include": ["/var/log/b.log"] }))],
            "spec.sources", UNIQUE, "spec.sources"),
        rejected("multiline with both patterns", LP,
            vec![("/spec/sources/0/multiline", json!({ "startPattern": "^\\S",
                                                       "continuationPattern": "^\\s" }))],
            "spec.sources[].multiline", MULTILINE, "spec.sources[0].multiline"),
        rejected("multiline with no pattern", LP,
            vec![("/spec/sources/0/multiline", json!({ "maxLines": 50 }))],
            "spec.sources[].multiline", MULTILINE, "spec.sources[0].multiline"),
        accepted("multiline with a start pattern", LP,
            vec![("/spec/sources/0/multiline", json!({ "startPattern": "^\\d{4}-" }))]),
        rejected("format regex without regex", LP,
            vec![("/spec/sources/0/format", json!("regex"))],
            "spec.sources[]", REGEX, "spec.sources[0]"),
        rejected("regex with format json", LP, vec![
            ("/spec/sources/0/format", json!("json")),
            ("/spec/sources/0/regex", json!({ "pattern": "(?P<level>\\w+)" })),
        ], "spec.sources[]", REGEX, "spec.sources[0]"),
        accepted("format regex with regex", LP, vec![
            ("/spec/sources/0/format", json!("regex")),
            ("/spec/sources/0/regex", json!({ "pattern": "(?P<level>\\w+)" })),
        ]),
        rejected("a source with no include and kubernetes false", LP,
            vec![("/spec/sources/0/include", json!([]))],
            "spec.sources[]", INCLUDE, "spec.sources[0]"),
        accepted("a kubernetes source without include", LP,
            vec![("/spec/sources/0", json!({ "name": "pods", "kubernetes": true,
                                             "format": "cri" }))]),
        rejected("a transform of two kinds", LP,
            vec![("/spec/transforms", json!([{ "include": { "field": "level", "pattern": "error" },
                                               "dropFields": ["debug"] }]))],
            "spec.transforms[]", TRANSFORM, "spec.transforms[0]"),
        rejected("a transform of no kind", LP,
            vec![("/spec/transforms", json!([{}]))],
            "spec.transforms[]", TRANSFORM, "spec.transforms[0]"),
        rejected("a plugin transform with a url and no sha256", LP,
            vec![("/spec/transforms", json!([{
                "plugin": { "name": "redact", "url": "https://example.com/redact.wasm" } }]))],
            "spec.transforms[].plugin", PLUGIN_URL, "spec.transforms[0].plugin"),
        rejected("two secrets with the same name", LP,
            vec![("/spec/secrets", secret_twice)],
            "spec.secrets", UNIQUE, "spec.secrets"),
        // DriftScan
        rejected("git with neither stacks nor discover", DS,
            vec![("/spec/source/git/stacks", json!([]))],
            "spec.source.git", GIT_STACKS, "spec.source.git"),
        accepted("git with only discover", DS, vec![
            ("/spec/source/git/stacks", json!([])),
            ("/spec/source/git/discover", json!(["live/**"])),
        ]),
        rejected("credentials of two kinds", DS,
            vec![("/spec/source/git/credentials", json!({ "https": { "name": "git-token" },
                                                          "ssh": { "name": "git-key" } }))],
            "spec.source.git.credentials", CREDENTIALS, "spec.source.git.credentials"),
        rejected("credentials of no kind", DS,
            vec![("/spec/source/git/credentials", json!({}))],
            "spec.source.git.credentials", CREDENTIALS, "spec.source.git.credentials"),
        rejected("artifacts in s3 and a volume claim", DS,
            vec![("/spec/artifacts", json!({ "s3": { "bucket": "plans" },
                                             "volumeClaim": "plans" }))],
            "spec.artifacts", ARTIFACTS, "spec.artifacts"),
        rejected("artifacts with no destination", DS,
            vec![("/spec/artifacts", json!({}))],
            "spec.artifacts", ARTIFACTS, "spec.artifacts"),
    ]);
    cases
}

/// Needs no cluster: every CEL rule of the generated CRDs has a case that breaks it, and every
/// case names a rule that exists with that exact message.
#[test]
fn every_cel_rule_has_a_case() {
    let rules = cel_rules();
    let cases = cases();
    let mut problems = Vec::new();
    for rule in &rules {
        let covered = cases.iter().any(|c| {
            matches!(c.expect, Expect::Rule { rule: path, message, .. }
                if c.kind == rule.kind && path == rule.path && message == rule.message)
        });
        if !covered {
            problems.push(format!(
                "no case breaks {} {}: {} ({})",
                rule.kind, rule.path, rule.rule, rule.message
            ));
        }
    }
    for case in &cases {
        if let Expect::Rule { rule, message, .. } = case.expect {
            if !rules
                .iter()
                .any(|r| r.kind == case.kind && r.path == rule && r.message == message)
            {
                problems.push(format!(
                    "{} {:?}: no rule at {rule} says {message:?}",
                    case.kind, case.what
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn cel_rules_reject_bad_objects() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("cel_rules_reject_bad_objects").await else {
        return Ok(());
    };
    install_crds(&client).await?;
    in_scope(&client, "cel", |scope: Scope| async move {
        let cases = cases();
        let mut failures = Vec::new();
        for case in &cases {
            let name = if driftless_e2e::kind(case.kind)?.namespaced {
                "cel".to_owned()
            } else {
                scope.name("cel")
            };
            let mut object = scope.object(case.kind, &name, baseline(case.kind))?;
            for (pointer, value) in &case.set {
                set(&mut object, pointer, value.clone())?;
            }
            let params = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let result = scope
                .api(case.kind)?
                .create(&params, &dynamic(&object)?)
                .await;
            let label = format!("{} {}", case.kind, case.what);
            match (&case.expect, result) {
                (Expect::Accepted, Ok(_)) => {}
                (Expect::Accepted, Err(err)) => {
                    failures.push(format!("{label}: should be accepted, got: {err}"))
                }
                (
                    Expect::Rule { message, field, .. } | Expect::Schema { message, field },
                    result,
                ) => match result {
                    Ok(_) => failures.push(format!("{label}: accepted, expected {message:?}")),
                    Err(err) => match api_error(&err) {
                        Some(e)
                            if e.code == 422
                                && e.message.contains(message)
                                && e.message.contains(&format!("{field}: ")) => {}
                        _ => failures.push(format!(
                            "{label}: expected 422 with {message:?} at {field}, got: {err}"
                        )),
                    },
                },
            }
        }
        ensure!(
            failures.is_empty(),
            "{} of {} cases failed:\n  {}",
            failures.len(),
            cases.len(),
            failures.join("\n  ")
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn strict_field_validation_names_unknown_fields() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("strict_field_validation_names_unknown_fields").await else {
        return Ok(());
    };
    install_crds(&client).await?;
    in_scope(&client, "unknown-fields", |scope: Scope| async move {
        let api = scope.api("ApplyPolicy")?;
        let name = scope.name("colour");
        let object = scope.object(
            "ApplyPolicy",
            &name,
            json!({ "tasks": [{ "name": "motd", "file": {
                "path": "/etc/motd", "content": "hi\n", "colour": "blue" } }] }),
        )?;
        let field = "spec.tasks[0].file.colour";

        // kubectl create --validate=strict
        let strict =
            create_with_field_validation(&scope.client, &api, &object, "Strict", true).await?;
        let message = strict.body["message"].as_str().unwrap_or_default();
        ensure!(
            strict.status == 400 && message.contains(&format!("unknown field \"{field}\"")),
            "Strict: expected 400 naming {field}, got {} {}",
            strict.status,
            strict.body
        );

        // kubectl apply --server-side (strict by default)
        let params = PatchParams::apply(FIELD_MANAGER)
            .dry_run()
            .validation_strict();
        let result = api
            .patch(&name, &params, &kube::api::Patch::Apply(&object))
            .await;
        match result {
            Ok(_) => anyhow::bail!("server-side apply with Strict accepted {field}"),
            Err(err) => ensure!(
                err.to_string().contains("colour"),
                "server-side apply with Strict: the error does not name colour: {err}"
            ),
        }

        // The default (Warn): accepted, the field pruned, and a warning that names it.
        let warn = create_with_field_validation(&scope.client, &api, &object, "Warn", true).await?;
        ensure!(
            warn.status == 201,
            "Warn: expected 201, got {} {}",
            warn.status,
            warn.body
        );
        ensure!(
            warn.warnings.iter().any(|w| w.contains(field)),
            "Warn: no warning names {field}: {:?}",
            warn.warnings
        );
        let file = &warn.body["spec"]["tasks"][0]["file"];
        ensure!(
            file["path"] == "/etc/motd" && file.get("colour").is_none(),
            "Warn: expected the file task without colour, got {file}"
        );
        Ok(())
    })
    .await
}
