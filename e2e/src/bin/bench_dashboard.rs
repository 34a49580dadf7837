//! Dashboard benchmark (`make bench-dashboard`, needs `KUBECONFIG`): fills the API server with
//! 5,000 Nodes (`BENCH_NODES`), a node DriftReport for each, 5,000 stack DriftReports of one
//! DriftScan (`BENCH_STACKS`) and an ApplyPolicy the node reports name; starts the real
//! operator binary (release build) on them and requests every page kind, one request at a time
//! over one keep-alive connection, as a browser would. Prints per page: size, p50 / p95 / max
//! latency and the operator's CPU time per request (from `/proc/PID/stat`), against the goal of
//! < 50 ms per page; then the operator's RSS with the dashboard and with `--no-dashboard` on
//! the same objects.
//!
//! No peer runs beside it: the dashboards of the peer tools (driftd, Argo CD) need their own
//! controllers and data model, so the figures stand against the goal.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use driftless_e2e::procs::{cpu_seconds, env_count, proc_mb, Process};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use serde_json::{json, Value};

const LABEL: &str = "driftless.dev/bench-dashboard";
const REQUESTS: usize = 50;
const WARM_UP: usize = 5;
const GOAL_MS: f64 = 50.0;

fn policies(client: &kube::Client) -> anyhow::Result<Api<DynamicObject>> {
    Ok(Api::all_with(
        client.clone(),
        &driftless_e2e::kind("ApplyPolicy")?.resource,
    ))
}

fn node_name(ns: &str, i: usize) -> String {
    format!("{ns}-n{i:05}")
}

/// In sync, drifted or failed, spread over the fleet as a bad day would have it.
fn state_of(i: usize) -> &'static str {
    match i % 50 {
        0 => "Failed",
        1..=4 => "Drifted",
        _ => "InSync",
    }
}

async fn apply_status(
    api: &Api<DynamicObject>,
    name: &str,
    kind: &str,
    status: Value,
) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "status": status});
    api.patch_status(
        name,
        &PatchParams::apply("bench").force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// Fails with the first error of a batch of creations, and how many failed.
fn all_made(made: Vec<anyhow::Result<()>>, what: &str) -> anyhow::Result<()> {
    let total = made.len();
    let failed: Vec<_> = made.into_iter().filter_map(Result::err).collect();
    match failed.first() {
        Some(err) => bail!("{} of {total} {what} failed; first: {err:#}", failed.len()),
        None => Ok(()),
    }
}

async fn fill(client: &kube::Client, ns: &str, nodes: usize, stacks: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let scope = driftless_e2e::kind("DriftReport")?;
    let reports: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &scope.resource);
    let node_api: Api<Node> = Api::all(client.clone());

    // Cluster-scoped: named after the namespace; it targets no Node, so the operator rolls
    // nothing out while the pages are measured.
    let policy_name = format!("{ns}-base");
    let policy = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "ApplyPolicy", "metadata": {"name": policy_name},
        "spec": {"nodeSelector": {"matchLabels": {"driftless.dev/bench-none": "true"}},
                 "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "template": "managed\n"}}]}});
    policies(client)?
        .patch(
            &policy_name,
            &PatchParams::apply("bench"),
            &Patch::Apply(&policy),
        )
        .await
        .context("creating the ApplyPolicy")?;
    let scans: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &driftless_e2e::kind("DriftScan")?.resource,
    );
    let scan = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan", "metadata": {"name": "infra"},
        "spec": {"source": {"git": {"url": "https://git.example.com/infra.git", "ref": "main", "discover": ["live/**"]}},
                 "schedule": "0 * * * *", "suspend": true}});
    scans
        .patch("infra", &PatchParams::apply("bench"), &Patch::Apply(&scan))
        .await
        .context("creating DriftScan infra")?;
    apply_status(&scans, "infra", "DriftScan", json!({"lastRun": {"id": "infra-1", "trigger": "Schedule", "phase": "Succeeded",
        "startedAt": now, "finishedAt": now, "total": stacks, "queued": 0, "running": 0, "completed": stacks,
        "drifted": stacks / 10, "errored": stacks / 50}})).await?;

    let made: Vec<anyhow::Result<()>> = futures::stream::iter(0..nodes)
        .map(|i| {
            let (node_api, reports, now) = (node_api.clone(), reports.clone(), now.clone());
            let name = node_name(ns, i);
            let policy = format!("{ns}-base");
            async move {
                let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {LABEL: ns}}}))?;
                if let Err(err) = node_api.create(&PostParams::default(), &node).await {
                    if !matches!(&err, kube::Error::Api(s) if s.code == 409) {
                        return Err(err.into());
                    }
                }
                let status = json!({"status": {"conditions": [{"type": "Ready", "status": if i % 97 == 0 { "False" } else { "True" },
                    "reason": "KubeletReady", "message": "bench", "lastHeartbeatTime": now, "lastTransitionTime": now}]}});
                node_api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
                let report = format!("node-{name}");
                let state = state_of(i);
                let body = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                    "metadata": {"name": report, "labels": {"driftless.dev/node": name}},
                    "spec": {"target": {"kind": "Node", "name": name, "node": name},
                             "revisions": [{"policy": policy, "revision": "base-2"}]}});
                reports.patch(&report, &PatchParams::apply("bench"), &Patch::Apply(&body)).await?;
                let drifted = state != "InSync";
                let items = if drifted {
                    json!([{"address": "file:/etc/motd", "domain": "file", "source": "base/motd", "change": "changed",
                            "diff": "--- live\n+++ desired\n-hello\n+managed\n"},
                           {"address": "threshold:disk-full", "domain": "threshold", "source": "limits/disk-full", "change": "changed",
                            "attributes": [{"path": "node_filesystem_avail_bytes{mountpoint=\"/\"}", "before": "1024", "after": ">= 1073741824"}]}])
                } else {
                    json!([])
                };
                apply_status(&reports, &report, "DriftReport", json!({
                    "summary": {"status": if drifted { "Drifted" } else { "InSync" }, "changed": u32::from(drifted), "checkedAt": now, "revision": "base-2"},
                    "history": [{"status": "InSync", "checkedAt": now}],
                    "items": items,
                    "policies": [
                        {"kind": "ApplyPolicy", "name": policy, "generation": 1, "state": state, "drifted": u32::from(drifted),
                         "checkedAt": now, "revision": if i % 10 == 0 { "base-1" } else { "base-2" }},
                        {"kind": "FactsPolicy", "name": "limits", "generation": 1, "state": if drifted { "Drifted" } else { "InSync" },
                         "drifted": u32::from(drifted), "checkedAt": now}
                    ]})).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    all_made(made, "Nodes and node reports")?;
    let made: Vec<anyhow::Result<()>> = futures::stream::iter(0..stacks)
        .map(|i| {
            let (reports, now) = (reports.clone(), now.clone());
            async move {
                let stack = format!("live/s{i:05}");
                let name = driftless_crds::drift_report::report_name("infra", &stack);
                let body = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                    "metadata": {"name": name, "labels": {"driftless.dev/scan": "infra"}},
                    "spec": {"target": {"kind": "Stack", "name": format!("infra/{stack}"), "scan": "infra", "stack": stack}}});
                reports.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&body)).await?;
                let status = match i % 50 {
                    0 => "Error",
                    1..=5 => "Drifted",
                    _ => "InSync",
                };
                let mut st = json!({"summary": {"status": status, "changed": u32::from(status == "Drifted"), "checkedAt": now, "run": "infra-1"},
                    "history": [{"status": "InSync", "checkedAt": now, "run": "infra-0"}]});
                if status == "Drifted" {
                    st["items"] = json!([{"address": "aws_s3_bucket.logs", "domain": "aws_s3_bucket", "change": "changed",
                        "attributes": [{"path": "tags.env", "before": "staging", "after": "prod"}]}]);
                    st["planText"] = json!("  ~ resource \"aws_s3_bucket\" \"logs\" {\n      ~ tags = { \"env\" = \"staging\" -> \"prod\" }\n    }\n");
                }
                if status == "Error" {
                    st["error"] = json!("terraform plan: exit status 1: Error: no valid credential sources");
                }
                apply_status(&reports, &name, "DriftReport", st).await?;
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    all_made(made, "stack reports")?;
    println!(
        "filled the API server: {nodes} Nodes, {} DriftReports ({nodes} node, {stacks} stack), 1 DriftScan, 1 ApplyPolicy in {:.0} s",
        nodes + stacks,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start_operator(ns: &str, port: u16, dashboard: bool) -> anyhow::Result<Process> {
    let bin = driftless_e2e::procs::built_binary("driftless-operator");
    let mut args = vec![
        "run".to_owned(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--namespace".into(),
        ns.into(),
        "--no-leader-election".into(),
        "--runner-image".into(),
        "bench".into(),
    ];
    if !dashboard {
        args.push("--no-dashboard".into());
    }
    let log = std::env::temp_dir().join(format!("bench-dashboard-operator-{port}.log"));
    let child = Command::new(&bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (make bench-dashboard builds it)",
                bin.display()
            )
        })?;
    Ok(Process { child, log })
}

/// User + system CPU time of a process, in milliseconds.
fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    cpu_seconds(pid)
        .map(|s| s * 1000.0)
        .with_context(|| format!("reading /proc/{pid}/stat"))
}

/// Waits until RSS stops growing: three samples two seconds apart within 1 %.
async fn settled_rss(pid: u32) -> f64 {
    let mut last = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        last.push(proc_mb(pid, "VmRSS:").unwrap_or(0.0));
        if last.len() >= 3 {
            let tail = &last[last.len() - 3..];
            let (lo, hi) = tail
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
            if hi > 0.0 && (hi - lo) / hi < 0.01 {
                break;
            }
        }
    }
    last.last().copied().unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench(client: &kube::Client, ns: &str, nodes: usize, stacks: usize) -> anyhow::Result<()> {
    fill(client, ns, nodes, stacks).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()?;
    let port = driftless_e2e::procs::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let operator = start_operator(ns, port, true)?;
    let pid = operator.child.id();
    // Ready, and every report and Node in the dashboard's caches.
    let last_node = node_name(ns, nodes - 1);
    let last_stack = format!("live/s{:05}", stacks - 1);
    let started = Instant::now();
    loop {
        if started.elapsed() > Duration::from_secs(180) {
            bail!("the dashboard did not show every object within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let page = |q: String| {
            let http = http.clone();
            async move { http.get(q).send().await.ok()?.text().await.ok() }
        };
        let nodes_page = page(format!("{base}/nodes?q={last_node}&status=InSync"))
            .await
            .unwrap_or_default();
        let reports_page = page(format!("{base}/driftreports?kind=Stack&q={last_stack}"))
            .await
            .unwrap_or_default();
        if nodes_page.contains(&format!("data-node=\"{last_node}\""))
            && reports_page.contains(&last_stack)
        {
            break;
        }
    }
    println!(
        "operator ready with every object cached after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let rss_with = settled_rss(pid).await;
    // Measure a settled operator: its controllers' first pass over the new objects (node
    // assignments written through the API server, which shares this machine) is over when it
    // uses under 5 % of a core for three 2-second windows in a row.
    let started = Instant::now();
    let mut quiet = 0;
    let mut idle_rate = 0.0;
    while quiet < 3 && started.elapsed() < Duration::from_secs(300) {
        let before = cpu_ms(pid)?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        idle_rate = (cpu_ms(pid)? - before) / 2.0;
        quiet = if idle_rate < 50.0 { quiet + 1 } else { 0 };
    }
    println!(
        "operator settled after {:.0} s more; idle: {idle_rate:.0} ms CPU per second",
        started.elapsed().as_secs_f64()
    );

    let stack_report = driftless_crds::drift_report::report_name("infra", "live/s00001");
    let node = node_name(ns, 1);
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/".into()),
        ("DriftScans", "/driftscans".into()),
        (
            "DriftScan (5,000 stacks, page 1)",
            format!("/namespaces/{ns}/driftscans/infra"),
        ),
        (
            "DriftScan, drifted stacks",
            format!("/namespaces/{ns}/driftscans/infra?status=Drifted"),
        ),
        ("DriftReports (10,000)", "/driftreports".into()),
        ("DriftReports, page 30", "/driftreports?page=30".into()),
        (
            "DriftReports, kind=Stack",
            "/driftreports?kind=Stack".into(),
        ),
        (
            "DriftReports, status=Drifted",
            "/driftreports?status=Drifted".into(),
        ),
        ("DriftReports, text search", "/driftreports?q=s0420".into()),
        (
            "stack report",
            format!("/namespaces/{ns}/driftreports/{stack_report}"),
        ),
        (
            "node report",
            format!("/namespaces/{ns}/driftreports/node-{node}"),
        ),
        ("nodes (5,000)", "/nodes".into()),
        ("nodes, status=Drifted", "/nodes?status=Drifted".into()),
        ("node", format!("/nodes/{node}")),
        ("policies", "/policies".into()),
        (
            "ApplyPolicy (5,000 nodes)",
            format!("/policies/applypolicies/{ns}-base"),
        ),
    ];
    println!();
    println!("{REQUESTS} requests per page, one at a time, after {WARM_UP} warm-up requests; goal < {GOAL_MS} ms per page");
    println!(
        "{:<36} {:>9} {:>8} {:>8} {:>8} {:>12}  goal",
        "page", "bytes", "p50 ms", "p95 ms", "max ms", "CPU ms/req"
    );
    let mut worst: f64 = 0.0;
    for (label, path) in &pages {
        let url = format!("{base}{path}");
        let mut bytes = 0;
        for _ in 0..WARM_UP {
            let r = http.get(&url).send().await?;
            if !r.status().is_success() {
                bail!("{path}: {}", r.status());
            }
            bytes = r.bytes().await?.len();
        }
        let cpu_before = cpu_ms(pid)?;
        let mut times = Vec::with_capacity(REQUESTS);
        for _ in 0..REQUESTS {
            let t = Instant::now();
            let body = http.get(&url).send().await?.bytes().await?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            bytes = body.len();
        }
        let cpu = (cpu_ms(pid)? - cpu_before) / REQUESTS as f64;
        times.sort_by(f64::total_cmp);
        let p95 = percentile(&times, 0.95);
        worst = worst.max(p95);
        println!(
            "{label:<36} {bytes:>9} {:>8.1} {p95:>8.1} {:>8.1} {cpu:>12.1}  {}",
            percentile(&times, 0.5),
            times[times.len() - 1],
            if p95 < GOAL_MS { "met" } else { "MISSED" }
        );
    }
    drop(operator);

    let port = driftless_e2e::procs::free_port();
    let without = start_operator(ns, port, false)?;
    let ready = format!("http://127.0.0.1:{port}/readyz");
    let started = Instant::now();
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the operator with --no-dashboard was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss_without = settled_rss(without.child.id()).await;
    drop(without);
    println!();
    println!(
        "worst p95: {worst:.1} ms (goal < {GOAL_MS} ms: {})",
        if worst < GOAL_MS { "met" } else { "MISSED" }
    );
    println!(
        "operator RSS, settled, with these objects: {rss_with:.1} MB with the dashboard, {rss_without:.1} MB with --no-dashboard ({:+.1} MB)",
        rss_with - rss_without
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("KUBECONFIG").is_none() {
        bail!("bench-dashboard needs an API server: set KUBECONFIG");
    }
    let nodes = env_count("BENCH_NODES", 5000).max(2);
    let stacks = env_count("BENCH_STACKS", 5000).max(2);
    let client = kube::Client::try_default().await?;
    driftless_e2e::install_crds(&client).await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns = driftless_e2e::fresh_namespace(&client, "bench-dash-").await?;
    let result = bench(&client, &ns, nodes, stacks).await;
    let node_api: Api<Node> = Api::all(client.clone());
    let _ = node_api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&format!("{LABEL}={ns}")),
        )
        .await;
    if let Ok(api) = policies(&client) {
        let _ = api
            .delete(&format!("{ns}-base"), &DeleteParams::default())
            .await;
    }
    let _ = ns_api.delete(&ns, &DeleteParams::background()).await;
    result
}
