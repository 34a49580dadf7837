//! The dashboard in a real browser: the operator binary watches the API server in `KUBECONFIG`
//! filled by the test (a DriftScan, stack and node DriftReports written through the status
//! subresource, Nodes, an ApplyPolicy), and headless Chromium (Debian's `chromium` and
//! `chromium-driver`, over WebDriver) loads every page.
//!
//! - `every_page_renders_the_cluster_and_updates_live`: each page loads; assertions on the DOM
//!   (the counts, the drifted attribute with its before and after, the run progress, a node's
//!   current and desired revision, the policy's nodes); a screenshot per page is kept in
//!   `target/e2e-artifacts/dashboard/`; a report changed in the API server appears on the open
//!   page without a reload; the page requested nothing from any host but the operator.
//!
//! Skips (with the reason) without `KUBECONFIG` or without Chromium and its driver.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use driftless_e2e::browser::{self, Browser};
use driftless_e2e::identity::{skip, Process};
use driftless_e2e::procs::{binary, free_port, print_logs};
use driftless_e2e::{
    apply, apply_status, client_or_skip, in_scope, install_crds, now, repo_root, Scope,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

const TEST: &str = "every_page_renders_the_cluster_and_updates_live";

fn artifacts() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("e2e-artifacts").join("dashboard")
}

fn summary(status: &str, added: u32, changed: u32) -> Value {
    json!({ "status": status, "added": added, "changed": changed, "removed": 0,
            "checkedAt": now(), "commit": "9f1c2ab", "trigger": "Schedule", "run": "infra-7" })
}

async fn stack(scope: &Scope, name: &str, status: Value) -> anyhow::Result<()> {
    let api = scope.api("DriftReport")?;
    let mut object = scope.object(
        "DriftReport",
        name,
        json!({ "target": { "kind": "Stack", "name": format!("infra/{name}"), "scan": "infra",
                            "stack": name } }),
    )?;
    object["metadata"]["labels"]["driftless.dev/scan"] = json!("infra");
    apply(&api, &object).await?;
    apply_status(&api, "DriftReport", name, status).await?;
    Ok(())
}

fn net_status(after: &str) -> Value {
    json!({
        "summary": summary("Drifted", 0, 1),
        "history": [summary("InSync", 0, 0)],
        "items": [{
            "address": "aws_security_group.web", "domain": "aws_security_group",
            "change": "changed",
            "attributes": [
                { "path": "tags.env", "before": "staging", "after": after },
                { "path": "ingress[0].cidr_blocks", "before": "[\"0.0.0.0/0\"]",
                  "after": "[\"10.0.0.0/8\"]" }
            ]
        }],
        "artifact": { "planJson": "s3://plans/infra/net/plan.json" }
    })
}

async fn fill(scope: &Scope, nodes: &[String], policy: &str) -> anyhow::Result<()> {
    let scans = scope.api("DriftScan")?;
    apply(
        &scans,
        &scope.object(
            "DriftScan",
            "infra",
            json!({ "source": { "git": { "url": "https://git.example.com/infra.git", "ref": "main",
                                         "stacks": ["net", "dns", "db"] } },
                    "artifacts": { "s3": { "bucket": "plans", "pathStyle": true,
                                           "endpoint": "https://minio.example.com" } },
                    "suspend": true }),
        )?,
    )
    .await?;
    apply_status(
        &scans,
        "DriftScan",
        "infra",
        json!({ "lastRun": { "id": "infra-7", "trigger": "Manual", "phase": "Succeeded",
                             "commit": "9f1c2ab", "startedAt": now(), "finishedAt": now(),
                             "total": 3, "queued": 0, "running": 0, "completed": 3,
                             "drifted": 1, "errored": 1 } }),
    )
    .await?;
    stack(scope, "net", net_status("prod")).await?;
    stack(scope, "dns", json!({ "summary": summary("InSync", 0, 0) })).await?;
    stack(
        scope,
        "db",
        json!({ "summary": summary("Error", 0, 0),
                "error": "terraform plan failed: exit status 1" }),
    )
    .await?;
    let node_api: Api<Node> = Api::all(scope.client.clone());
    for node in nodes {
        let object: Node = serde_json::from_value(json!({
            "metadata": { "name": node, "labels": { "driftless.dev/e2e-dashboard": scope.namespace } }
        }))?;
        node_api.create(&PostParams::default(), &object).await?;
    }
    let reports = scope.api("DriftReport")?;
    for (i, node) in nodes.iter().enumerate() {
        let name = format!("node-{node}");
        let mut object = scope.object(
            "DriftReport",
            &name,
            json!({ "target": { "kind": "Node", "name": node, "node": node } }),
        )?;
        object["metadata"]["labels"]["driftless.dev/node"] = json!(node);
        apply(&reports, &object).await?;
        let drifted = i == 0;
        apply_status(
            &reports,
            "DriftReport",
            &name,
            json!({
                "summary": summary(if drifted { "Drifted" } else { "InSync" }, 0, u32::from(drifted)),
                "items": if drifted { json!([{ "address": "file:/etc/motd", "domain": "file",
                    "source": format!("{policy}/motd"), "change": "changed",
                    "diff": "--- live\n+++ desired\n-Welcome\n+Managed by Driftless\n" }]) } else { json!([]) },
                "policies": [
                    { "kind": "ApplyPolicy", "name": policy, "generation": 1,
                      "state": if drifted { "Drifted" } else { "InSync" }, "drifted": u32::from(drifted),
                      "checkedAt": now(), "revision": format!("{policy}-rev1") },
                    { "kind": "FactsPolicy", "name": format!("{policy}-limits"), "generation": 1,
                      "state": if drifted { "Drifted" } else { "InSync" },
                      "drifted": if drifted { 2 } else { 0 }, "checkedAt": now() }
                ]
            }),
        )
        .await?;
    }
    let policies = scope.api("ApplyPolicy")?;
    apply(
        &policies,
        &scope.object(
            "ApplyPolicy",
            policy,
            json!({ "mode": "Audit",
                    "nodeSelector": { "matchLabels": { "driftless.dev/e2e-dashboard": scope.namespace } },
                    "tasks": [{ "name": "motd", "file": { "path": "/etc/motd",
                                                          "content": "Managed by Driftless\n" } }] }),
        )?,
    )
    .await?;
    Ok(())
}

/// Waits until `url` answers 200.
async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        ensure!(Instant::now() < deadline, "{url} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The text of the first element matching `selector` (empty when none).
async fn text(b: &Browser, selector: &str) -> anyhow::Result<String> {
    let script = format!(
        "var e = document.querySelector({}); return e ? e.textContent : '';",
        serde_json::to_string(selector)?
    );
    Ok(b.eval(&script)
        .await?
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn visit(b: &Browser, base: &str, path: &str, shot: &str) -> anyhow::Result<()> {
    b.goto(&format!("{base}{path}")).await?;
    b.wait_for(
        path,
        "return document.readyState === 'complete' && !!document.querySelector('main');",
        Duration::from_secs(10),
    )
    .await?;
    b.screenshot(&artifacts().join(format!("{shot}.png"))).await
}

#[tokio::test]
async fn every_page_renders_the_cluster_and_updates_live() -> anyhow::Result<()> {
    let Some(client) = client_or_skip(TEST).await else {
        return Ok(());
    };
    let Some((chromium, driver)) = browser::find() else {
        skip(
            TEST,
            "chromium and chromedriver not found (apt-get install chromium chromium-driver)",
        );
        return Ok(());
    };
    install_crds(&client).await?;
    let operator = binary("driftless-operator", "driftless-operator");
    let dir = tempfile::tempdir()?;
    let logs = dir.path().to_owned();
    let result = in_scope(&client, "dashboard", move |scope| async move {
        let nodes: Vec<String> = (1..=3).map(|i| scope.name(&format!("worker-{i}"))).collect();
        let policy = scope.name("base");
        let outcome = async {
            fill(&scope, &nodes, &policy).await?;
            let port = free_port();
            let base = format!("http://127.0.0.1:{port}");
            let log = logs.join("operator.log");
            let _operator = Process(
                Command::new(&operator)
                    .args(["run", "--listen", &format!("127.0.0.1:{port}"), "--namespace",
                           &scope.namespace, "--identity", "dashboard-0", "--no-leader-election",
                           "--runner-image", "driftless/operator:e2e"])
                    .env("DRIFTLESS_LOG", "info")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log)?)
                    .spawn()
                    .context("starting driftless-operator")?,
            );
            wait_ready(&format!("{base}/readyz")).await?;
            let b = Browser::start(&chromium, &driver, 1280, 1000).await?;

            // Overview: stacks 1 in sync, 1 drifted, 1 failed; nodes 2 in sync, 1 drifted.
            let counts = "return Array.from(document.querySelectorAll('#counts tr[data-kind]'))\
                          .map(function (r) { return r.dataset.kind + ':' + Array.from(r.querySelectorAll('td'))\
                          .map(function (c) { return c.textContent; }).join(','); }).join(' ');";
            b.goto(&format!("{base}/")).await?;
            b.wait_for(
                "the overview counts every report",
                &format!(
                    "return ({}).indexOf('Stacks:1,1,1,0 Nodes:2,1,0,0') === 0;",
                    counts.trim_start_matches("return ").trim_end_matches(';')
                ),
                Duration::from_secs(30),
            )
            .await
            .with_context(|| "overview")?;
            b.screenshot(&artifacts().join("01-overview.png")).await?;
            let recent = text(&b, "#recent").await?;
            ensure!(recent.contains("infra/net") && recent.contains("InSync → Drifted"), "recent: {recent}");

            visit(&b, &base, "/driftscans", "02-driftscans").await?;
            let row = text(&b, "tr[data-scan=infra]").await?;
            ensure!(row.contains("0 queued · 0 running · 3/3 done"), "scan row: {row}");
            ensure!(row.contains("Succeeded"), "scan row: {row}");

            visit(&b, &base, &format!("/namespaces/{}/driftscans/infra", scope.namespace), "03-driftscan").await?;
            let order = b
                .eval("return Array.from(document.querySelectorAll('tr[data-report]')).map(function (r) { return r.dataset.report; }).join(',');")
                .await?;
            ensure!(order == json!("db,net,dns"), "stacks by attention: {order}");

            visit(&b, &base, &format!("/namespaces/{}/driftreports/net", scope.namespace), "04-stack").await?;
            let attrs = b
                .eval("return Array.from(document.querySelectorAll('table.attributes tr')).map(function (r) { return Array.from(r.cells).map(function (c) { return c.textContent; }).join('|'); });")
                .await?;
            ensure!(
                attrs.as_array().unwrap().contains(&json!("tags.env|staging|prod")),
                "attribute table: {attrs}"
            );
            ensure!(text(&b, "#status").await? == "Drifted", "status badge");
            ensure!(text(&b, "#history").await?.contains("InSync"), "history");
            let link = b.eval("var a = document.querySelector('a.artifact'); return a ? a.href : '';").await?;
            ensure!(link == json!("https://minio.example.com/plans/infra/net/plan.json"), "artifact link: {link}");

            visit(&b, &base, "/nodes", "05-nodes").await?;
            let first = b
                .eval("var r = document.querySelector('tr[data-node]'); return r ? r.dataset.node : '';")
                .await?;
            ensure!(first == json!(nodes[0]), "drifted node first: {first}");

            visit(&b, &base, &format!("/nodes/{}", nodes[0]), "06-node").await?;
            ensure!(text(&b, "#breaches").await? == "2", "breaches");
            let row = text(&b, &format!("#node-policies tr[data-policy='{policy}']")).await?;
            ensure!(row.contains(&format!("{policy}-rev1")), "current revision: {row}");
            ensure!(text(&b, "pre.diff").await?.contains("+Managed by Driftless"), "diff");

            visit(&b, &base, "/policies", "07-policies").await?;
            ensure!(!text(&b, &format!("tr[data-policy='{policy}']")).await?.is_empty(), "policy row");
            visit(&b, &base, &format!("/policies/applypolicies/{policy}"), "08-policy").await?;
            let per_revision = text(&b, "#per-revision").await?;
            ensure!(per_revision.contains(&format!("{policy}-rev1: 3 nodes")), "per revision: {per_revision}");

            // Live: the report page follows a change made in the API server, without a reload.
            visit(&b, &base, &format!("/namespaces/{}/driftreports/net", scope.namespace), "09-before").await?;
            b.wait_for("the event stream is open", "return document.getElementById('live').textContent === 'live';", Duration::from_secs(10)).await?;
            b.eval("window.sameDocument = true; return true;").await?;
            let api = scope.api("DriftReport")?;
            apply_status(&api, "DriftReport", "net", net_status("production")).await?;
            b.wait_for(
                "the changed attribute appears",
                "return document.querySelector('table.attributes').textContent.indexOf('production') >= 0;",
                Duration::from_secs(15),
            )
            .await?;
            ensure!(b.eval("return window.sameDocument === true && document.body.dataset.updates >= 1;").await? == json!(true), "updated in place, not reloaded");
            b.screenshot(&artifacts().join("10-after-live-update.png")).await?;

            // Nothing but the operator was asked for anything.
            let requested = b.requested().await?;
            let foreign: Vec<_> = requested.iter().filter(|u| !u.starts_with(&base)).collect();
            ensure!(foreign.is_empty(), "requests to other hosts: {foreign:?}");
            ensure!(requested.iter().any(|u| u.ends_with("/static/dashboard.js")), "{requested:?}");
            Ok::<_, anyhow::Error>(())
        }
        .await;
        let node_api: Api<Node> = Api::all(scope.client.clone());
        for node in &nodes {
            let _ = node_api.delete(node, &DeleteParams::default()).await;
        }
        outcome
    })
    .await;
    if result.is_err() {
        print_logs(dir.path());
    }
    result
}
