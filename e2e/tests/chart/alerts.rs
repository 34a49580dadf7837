//! The chart's PrometheusRule and Grafana dashboard: rendered only when asked for, every rule
//! loaded and unit-tested by the real `promtool` (Debian's `prometheus` package, installed by
//! `.ci/tools/facts.sh`), every query of the dashboard parsed by it, and every `driftless_*`
//! metric they use one the operator registers or docs/metrics.md lists for the agent.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::{all_of_kind, chart_dir, helm_or_skip, object, render, repo_root, NAMESPACE};

/// The alerts the chart ships; each has cases in `fixtures/alerts.test.yaml`.
const ALERTS: [&str; 13] = [
    "DriftlessStackDrifted",
    "DriftlessStackScanFailing",
    "DriftlessScanRunFailed",
    "DriftlessScanQueueNotDraining",
    "DriftlessScanRunStuck",
    "DriftlessRolloutDegraded",
    "DriftlessOperatorDown",
    "DriftlessAgentDown",
    "DriftlessAgentsMissing",
    "DriftlessNodeDrifted",
    "DriftlessApplyFailing",
    "DriftlessAgentConfigRefused",
    "DriftlessThresholdBreached",
];

/// `promtool` from `$PROMTOOL` or `PATH`, or `None` after printing why the test is skipped
/// (only with DRIFTLESS_SKIP_TOOLS=1, like helm).
fn promtool_or_skip() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("promtool"))
            .find(|candidate| candidate.is_file())
    });
    if found.is_some() {
        return found;
    }
    if std::env::var("DRIFTLESS_SKIP_TOOLS").as_deref() == Ok("1") {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            b"skipped: chart alerts test: promtool not found in $PROMTOOL or PATH (DRIFTLESS_SKIP_TOOLS=1)\n",
        );
        return None;
    }
    panic!(
        "promtool not found in $PROMTOOL or PATH: run .ci/tools/facts.sh \
         (or set DRIFTLESS_SKIP_TOOLS=1 to skip the chart tests)"
    );
}

/// Runs `promtool ARGS` in `dir`; `Err` carries its output.
fn promtool(promtool: &Path, dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("running {} {args:?}: {err}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

/// The PrometheusRule rendered with the toggle on and `extra` values.
fn rendered_rule(helm: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--set", "prometheusRule.enabled=true"];
    args.extend_from_slice(extra);
    let docs = render(helm, &args);
    let rules = all_of_kind(&docs, "PrometheusRule");
    assert_eq!(rules.len(), 1, "one PrometheusRule");
    rules[0].clone()
}

/// Names of the alerting rules of a PrometheusRule.
fn alert_names(rule: &Value) -> Vec<String> {
    rule["spec"]["groups"]
        .as_array()
        .expect("spec.groups is a list")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("group has rules").iter())
        .map(|r| r["alert"].as_str().expect("every rule alerts").to_owned())
        .collect()
}

#[test]
fn prometheus_rule_and_dashboard_only_when_enabled() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    assert!(all_of_kind(&docs, "PrometheusRule").is_empty());
    assert!(
        !all_of_kind(&docs, "ConfigMap")
            .iter()
            .any(|c| super::name_of(c) == "driftless-dashboard"),
        "no dashboard ConfigMap by default"
    );

    let rule = rendered_rule(&helm, &["--set", "prometheusRule.labels.release=kps"]);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["name"], "driftless");
    assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    assert_eq!(alert_names(&rule), ALERTS);
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(r["annotations"]["summary"].is_string(), "{name}: summary");
            assert!(
                r["annotations"]["description"].is_string(),
                "{name}: description"
            );
            // The threshold's own severity label is the alert's.
            if name != "DriftlessThresholdBreached" {
                assert!(r["labels"]["severity"].is_string(), "{name}: severity");
            }
        }
    }

    // Per alert: off, another `for`, another severity; the agent's group goes with the agent.
    let rule = rendered_rule(
        &helm,
        &[
            "--set",
            "prometheusRule.alerts.DriftlessAgentDown.enabled=false",
            "--set",
            "prometheusRule.alerts.DriftlessStackDrifted.for=2h",
            "--set",
            "prometheusRule.alerts.DriftlessStackDrifted.severity=info",
            "--set",
            "prometheusRule.operatorJob=ops/driftless",
        ],
    );
    let names = alert_names(&rule);
    assert!(!names.contains(&"DriftlessAgentDown".to_owned()));
    assert_eq!(names.len(), ALERTS.len() - 1);
    let drifted = &rule["spec"]["groups"][0]["rules"][0];
    assert_eq!(drifted["alert"], "DriftlessStackDrifted");
    assert_eq!(drifted["for"], "2h");
    assert_eq!(drifted["labels"]["severity"], "info");
    let down = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "DriftlessOperatorDown")
        .unwrap();
    assert_eq!(
        down["expr"],
        format!(r#"absent(up{{job="ops/driftless", namespace="{NAMESPACE}"}} == 1)"#)
    );
    let rule = rendered_rule(&helm, &["--set", "agent.enabled=false"]);
    let groups: Vec<_> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(groups, ["driftless-operator"]);

    // The operator's ServiceMonitor keeps the DriftScan namespace the alerts name.
    let docs = render(&helm, &["--set", "serviceMonitor.enabled=true"]);
    let monitor = object(&docs, "ServiceMonitor", "driftless-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], true);

    let docs = render(
        &helm,
        &[
            "--set",
            "grafanaDashboard.enabled=true",
            "--set",
            "grafanaDashboard.annotations.grafana_folder=Platform",
        ],
    );
    let map = object(&docs, "ConfigMap", "driftless-dashboard");
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Platform");
    let shipped: Value = serde_json::from_str(map["data"]["driftless.json"].as_str().unwrap())
        .expect("the ConfigMap holds JSON");
    assert_eq!(
        shipped,
        dashboard(),
        "the ConfigMap holds dashboards/driftless.json"
    );
}

#[test]
fn prometheus_rules_pass_promtool_unit_tests() {
    let Some(helm) = helm_or_skip() else { return };
    let Some(promtool_bin) = promtool_or_skip() else {
        return;
    };
    let rule = rendered_rule(&helm, &[]);
    let dir = tempfile::tempdir().unwrap();
    let rules = serde_json::json!({ "groups": rule["spec"]["groups"] });
    std::fs::write(
        dir.path().join("rules.yaml"),
        driftless_crds::yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    let fixture = repo_root().join("e2e/tests/fixtures/alerts.test.yaml");
    let tests = std::fs::read_to_string(&fixture).unwrap();
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).unwrap();

    let checked = promtool(&promtool_bin, dir.path(), &["check", "rules", "rules.yaml"])
        .unwrap_or_else(|out| panic!("promtool check rules: {out}"));
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", ALERTS.len())),
        "{checked}"
    );
    promtool(
        &promtool_bin,
        dir.path(),
        &["test", "rules", "alerts.test.yaml"],
    )
    .unwrap_or_else(|out| panic!("promtool test rules {}: {out}", fixture.display()));

    // Every alert has a case where it fires and one where it stays quiet.
    let cases = driftless_crds::yaml::parse_yaml(&tests).unwrap().remove(0);
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in cases["tests"].as_array().unwrap() {
        for t in case["alert_rule_test"].as_array().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_owned();
            if t["exp_alerts"].as_array().unwrap().is_empty() {
                quiet.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for alert in ALERTS {
        assert!(fires.contains(alert), "no case where {alert} fires");
        assert!(quiet.contains(alert), "no case where {alert} stays quiet");
    }

    // The cases fail when a rule is wrong: the same tests against a threshold that always
    // fires.
    let broken = driftless_crds::yaml::to_string(&rules).unwrap().replace(
        "driftless_threshold_breached == 1",
        "driftless_threshold_breached >= 0",
    );
    std::fs::write(dir.path().join("rules.yaml"), broken).unwrap();
    let out = promtool(
        &promtool_bin,
        dir.path(),
        &["test", "rules", "alerts.test.yaml"],
    )
    .expect_err("an alert that always fires fails the cases");
    assert!(out.contains("DriftlessThresholdBreached"), "{out}");
}

fn dashboard() -> Value {
    let path = chart_dir().join("dashboards/driftless.json");
    serde_json::from_str(&std::fs::read_to_string(&path).expect("the dashboard file is readable"))
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels is a list") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// The dashboard has what Grafana's import needs: a title and uid, a schema version Grafana
/// 9.2+ reads without migrating, a Prometheus data source variable every query goes through,
/// panels with unique ids placed on the 24-column grid.
#[test]
fn grafana_dashboard_is_importable() {
    let d = dashboard();
    assert_eq!(d["title"], "Driftless");
    let uid = d["uid"].as_str().expect("uid");
    assert!(!uid.is_empty() && uid.len() <= 40, "uid {uid:?}");
    assert!(
        d["id"].is_null(),
        "id is null so import creates the dashboard"
    );
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let variables = d["templating"]["list"].as_array().expect("templating.list");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");

    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels(&d) {
        let id = panel["id"].as_u64().expect("panel id");
        let title = panel["title"].as_str().expect("panel title");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            grid["h"].as_u64().unwrap() > 0 && grid["y"].is_u64(),
            "{title}"
        );
        assert!(
            w > 0 && x + w <= 24,
            "{title}: x {x} + w {w} beyond 24 columns"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(
                refs.insert(t["refId"].as_str().unwrap()),
                "{title}: refId twice"
            );
            assert!(
                !t["expr"].as_str().unwrap().is_empty(),
                "{title}: empty expr"
            );
            queries += 1;
        }
    }
    assert!(queries >= 20, "{queries} queries");
}

/// The dashboard's queries with Grafana's variables replaced by what Grafana would put there.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(d) {
        for t in panel["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .expect("expr is a string")
                .replace("$__rate_interval", "2m")
                .replace("$__interval", "1m")
                .replace("$operator_job", "driftless-operator")
                .replace("$agent_job", "driftless-agent-metrics");
            assert!(!expr.contains('$'), "unknown variable in {expr}");
            out.push((panel["title"].to_string(), expr));
        }
    }
    out
}

#[test]
fn grafana_dashboard_queries_parse() {
    let Some(promtool_bin) = promtool_or_skip() else {
        return;
    };
    let queries = dashboard_queries(&dashboard());
    // Recording rules are the way promtool parses an arbitrary expression.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("queries.yaml"),
        driftless_crds::yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let out = promtool(
        &promtool_bin,
        dir.path(),
        &["check", "rules", "queries.yaml"],
    )
    .unwrap_or_else(|out| panic!("a dashboard query does not parse: {out}\n{queries:#?}"));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

/// Names of the metric families the operator registers, with the sample names Prometheus
/// stores for them (`_total` of counters, `_bucket`/`_sum`/`_count` of histograms).
fn operator_metric_names() -> BTreeSet<String> {
    use driftless_operator::http::HttpState;
    use driftless_operator::policy::metrics::PolicyMetrics;
    use driftless_operator::scan::metrics::ScanMetrics;
    let mut state = HttpState::new();
    ScanMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    PolicyMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &state.registry)
        .expect("the registry encodes");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("a TYPE line without a name and a type: {line}");
        };
        names.insert(name.to_owned());
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {}
        }
    }
    names
}

/// `driftless_*` words of `text`.
fn driftless_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("driftless_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn alerts_and_dashboard_use_exported_metrics() {
    let Some(helm) = helm_or_skip() else { return };
    let operator = operator_metric_names();
    assert!(operator.contains("driftless_drift_state"), "{operator:?}");
    // The agent's families are written by hand in several modules; docs/metrics.md lists them.
    let agent_doc = std::fs::read_to_string(repo_root().join("docs/metrics.md")).unwrap();
    let agent: BTreeSet<String> = driftless_names(&agent_doc);
    let rule = rendered_rule(&helm, &[]);
    let mut used = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            used.extend(driftless_names(r["expr"].as_str().unwrap()));
        }
    }
    for (_, expr) in dashboard_queries(&dashboard()) {
        used.extend(driftless_names(&expr));
    }
    assert!(used.len() >= 12, "{used:?}");
    for name in &used {
        assert!(
            operator.contains(name) || agent.contains(name),
            "{name} is neither registered by the operator nor listed in docs/metrics.md"
        );
    }
}

#[test]
fn alert_values_are_validated() {
    let Some(helm) = helm_or_skip() else { return };
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for (set, complaint) in [
        (
            "prometheusRule.alerts.DriftlessStackDrifted.for=soon",
            "for",
        ),
        (
            "prometheusRule.alerts.DriftlessNoSuchAlert.enabled=true",
            "DriftlessNoSuchAlert",
        ),
        (
            "prometheusRule.alerts.DriftlessScanRunStuck.seconds=5",
            "seconds",
        ),
        (
            "prometheusRule.alerts.DriftlessThresholdBreached.severity=page",
            "severity",
        ),
        ("prometheusRule.operatorJob=a\"b", "operatorJob"),
        ("grafanaDashboard.namespace=Not_A_Namespace", "namespace"),
    ] {
        super::assert_schema_rejects(&helm, chart, set, complaint);
    }
}
