//! Rollout benchmark (`make bench-rollout`), against the real API server in `KUBECONFIG`
//! (without it the figures are skipped with that reason).
//!
//! `BENCH_NODES` (default 5,000, Kubernetes' supported limit) Node objects and 20
//! ApplyPolicies selecting all of them (`AllAtOnce`, `maxUnavailable: 10%`). A load driver acts
//! as the agents, as KWOK does for kubelets: it watches the node reports, and whenever the
//! operator assigns a node new revisions it writes that node's status with one healthy result
//! per assigned revision (instant health). The real operator binary (release) plans and
//! assigns. Measured:
//! - the wall time to roll the first revision of all 20 policies to every node, and then one
//!   spec change of one policy, each until every policy's `status.rollout.step` is `Complete`;
//! - of that, the API server's own time on the operator's assignment writes
//!   (`apiserver_request_duration_seconds_sum` for APPLY of `driftreports`, from the API
//!   server's `/metrics`) and on the driver's status writes;
//! - the operator's API writes per node changed (assignment writes, revision writes and status
//!   writes from its `/metrics`);
//! - the operator's RSS (peak VmHWM; goal < 150 MB);
//! - the planner's decision time for one policy over all nodes, in this process (median of
//!   21; goal < 100 ms).
//!
//! The Nodes have no `Ready` condition (no kubelet), which the rollout counts as ready; a
//! kube-controller-manager running beside the API server would mark them `Unknown` after its
//! grace period, so run this against an API server without one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use driftless_e2e::procs::built_binary as binary;
use driftless_e2e::{apply, in_scope, install_crds, Scope, RUN_LABEL};
use driftless_operator::policy::rollout::{self, Health, NodeState};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt as _};
use serde_json::{json, Value};

/// Per node report: the (policy, revision) assignments last written.
type Written = BTreeMap<String, Vec<(String, String)>>;

const POLICIES: usize = 20;
const CONCURRENCY: usize = 32;
const DRIVER: &str = "driftless-bench-agents";
const LOAD_LABEL: &str = "bench.driftless.dev/rollout";
const WAIT: Duration = Duration::from_secs(1200);

fn nodes_wanted() -> usize {
    std::env::var("BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000)
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn text(url: String) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Sum of the samples of `name` whose labels hold every one of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The API server's seconds on APPLY of node reports: (spec writes, status writes).
async fn apiserver_seconds(client: &kube::Client) -> anyhow::Result<(f64, f64)> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = client.request_text(request).await?;
    let name = "apiserver_request_duration_seconds_sum";
    let base = [r#"resource="driftreports""#, r#"verb="APPLY""#];
    let spec = sum(&metrics, name, &[base[0], base[1], r#"subresource="""#]);
    let status = sum(
        &metrics,
        name,
        &[base[0], base[1], r#"subresource="status""#],
    );
    Ok((spec, status))
}

fn node_name(ns: &str, i: usize) -> String {
    format!("{ns}-r{i:05}")
}

fn policy_spec(ns: &str, version: u32) -> Value {
    json!({
        "nodeSelector": {"matchLabels": {LOAD_LABEL: ns}},
        "rollout": {"strategy": "AllAtOnce", "maxUnavailable": "10%"},
        "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": format!("version {version}\n")}}],
    })
}

/// The load driver: answers every change of a node's assignments with a status write that
/// reports each assigned revision healthy.
fn drive(
    scope: &Scope,
    generations: Arc<Mutex<BTreeMap<String, i64>>>,
) -> tokio::task::JoinHandle<()> {
    let api = scope.api("DriftReport").expect("DriftReport api");
    let typed: Api<driftless_crds::drift_report::DriftReport> =
        Api::namespaced(scope.client.clone(), &scope.namespace);
    tokio::spawn(async move {
        let written: Arc<Mutex<Written>> = Default::default();
        let stream = watcher(typed, watcher::Config::default().labels("driftless.dev/node"))
            .applied_objects()
            .filter_map(|r| async move { r.ok() })
            .map(|report| {
                let api = api.clone();
                let written = written.clone();
                let generations = generations.clone();
                async move {
                    let name = report.metadata.name.clone().unwrap_or_default();
                    let assigned: Vec<(String, String)> = report
                        .spec
                        .revisions
                        .iter()
                        .map(|a| (a.policy.clone(), a.revision.clone()))
                        .collect();
                    if written.lock().ok()?.get(&name) == Some(&assigned) {
                        return Some(());
                    }
                    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    let gens = generations.lock().ok()?.clone();
                    let results: Vec<Value> = assigned
                        .iter()
                        .map(|(policy, revision)| {
                            json!({"kind": "ApplyPolicy", "name": policy,
                                   "generation": gens.get(policy).copied().unwrap_or(1),
                                   "state": "InSync", "checkedAt": now,
                                   "revision": revision, "healthySince": now})
                        })
                        .collect();
                    let status = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                        "metadata": {"name": name},
                        "status": {"summary": {"status": "InSync", "checkedAt": now}, "policies": results}});
                    let params = PatchParams::apply(DRIVER).force();
                    match api.patch_status(&name, &params, &Patch::Apply(&status)).await {
                        Ok(_) => {
                            written.lock().ok()?.insert(name, assigned);
                        }
                        Err(e) => eprintln!("driver: {name}: {e}"),
                    }
                    Some(())
                }
            })
            .buffer_unordered(CONCURRENCY);
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {}
    })
}

/// Waits until every policy's rollout is `Complete` on `nodes` nodes at its newest revision.
async fn wait_complete(
    scope: &Scope,
    nodes: usize,
    version_of: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + WAIT;
    let selector = format!("{RUN_LABEL}={}", scope.namespace);
    loop {
        let list = scope
            .api("ApplyPolicy")?
            .list(&ListParams::default().labels(&selector))
            .await?;
        let pending: Vec<String> = list
            .items
            .iter()
            .filter(|o| {
                let s = o.data.get("status").cloned().unwrap_or(Value::Null);
                let name = o.metadata.name.clone().unwrap_or_default();
                !(s["rollout"]["step"] == "Complete"
                    && s["updated"] == nodes
                    && version_of
                        .get(&name)
                        .is_none_or(|old| s["currentRevision"].as_str() != Some(old.as_str())))
            })
            .map(|o| o.metadata.name.clone().unwrap_or_default())
            .collect();
        if pending.is_empty() && list.items.len() == POLICIES {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} policies not Complete within {} s",
                pending.len(),
                WAIT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn planner_ms(n: usize) -> f64 {
    let names: Vec<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
    let since = Utc::now() - chrono::Duration::seconds(60);
    let states: Vec<NodeState<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, name)| NodeState {
            name,
            ready: i % 97 != 0,
            cordoned: false,
            assigned: Some(if i < n / 3 { "p-new" } else { "p-old" }),
            health: Health::Healthy { since },
            canary_first: false,
        })
        .collect();
    let rollout_spec: driftless_crds::apply_policy::Rollout =
        serde_json::from_value(json!({"maxUnavailable": "10%"})).expect("rollout");
    let mut times = Vec::new();
    for _ in 0..21 {
        let input = rollout::Input {
            updated: "p-new",
            settings: rollout::Settings::new(&rollout_spec, states.len()),
            nodes: &states,
            memory: rollout::Memory {
                current: Some("p-old"),
                ..Default::default()
            },
            controls: Default::default(),
            now: Utc::now(),
        };
        let t = Instant::now();
        let plan = rollout::plan(&input);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(!plan.changes.is_empty());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let nodes = nodes_wanted();
    let planner = planner_ms(nodes);
    println!(
        "planner: one decision over {nodes} nodes: {planner:.2} ms (median of 21; goal < 100 ms)"
    );
    if std::env::var_os("KUBECONFIG").is_none_or(|v| v.is_empty()) {
        println!(
            "skipped: bench-rollout: KUBECONFIG is not set (needs a Kubernetes 1.33+ API server)"
        );
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    install_crds(&client).await?;
    in_scope(&client, "bench-rollout", move |scope| async move {
        let dir = tempfile_dir()?;
        let outcome = run(&scope, nodes, planner, &dir).await;
        let api: Api<Node> = Api::all(scope.client.clone());
        let _ = api
            .delete_collection(
                &DeleteParams::default(),
                &ListParams::default().labels(&format!("{LOAD_LABEL}={}", scope.namespace)),
            )
            .await;
        for p in 0..POLICIES {
            let _ = scope
                .api("ApplyPolicy")?
                .delete(&scope.name(&format!("ap-{p:02}")), &DeleteParams::default())
                .await;
        }
        outcome
    })
    .await
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("driftless-bench-rollout-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

async fn run(scope: &Scope, nodes: usize, planner: f64, dir: &Path) -> anyhow::Result<()> {
    let ns = scope.namespace.clone();
    let node_api: Api<Node> = Api::all(scope.client.clone());
    let t = Instant::now();
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..nodes)
        .map(|i| {
            let api = node_api.clone();
            let node: Node = serde_json::from_value(json!({"metadata": {
                "name": node_name(&ns, i),
                "labels": {LOAD_LABEL: ns, RUN_LABEL: ns},
            }}))
            .expect("node");
            async move {
                api.create(&PostParams::default(), &node).await?;
                Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for c in created {
        c.context("creating a Node")?;
    }
    println!(
        "setup: {nodes} Nodes created in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let port = driftless_e2e::procs::free_port();
    let log = dir.join("operator.log");
    let operator = Process(
        Command::new(binary("driftless-operator"))
            .args([
                "run",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--namespace",
                &ns,
                "--identity",
                "bench",
                "--runner-image",
                "driftless/operator:bench",
                "--no-leader-election",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context(
                "starting the release operator (cargo build --release -p driftless-operator)",
            )?,
    );
    let pid = operator.0.id();
    let generations: Arc<Mutex<BTreeMap<String, i64>>> = Default::default();
    let driver = drive(scope, generations.clone());
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let writes = |m: &str| {
        sum(m, "driftless_rollout_assignment_writes_total", &[])
            + sum(
                m,
                "driftless_policy_status_writes_total",
                &[r#"kind="ApplyPolicy""#],
            )
    };

    // 1. First revision of all 20 policies to every node.
    let api = scope.api("ApplyPolicy")?;
    let before = apiserver_seconds(&scope.client).await?;
    let m0 = text(metrics_url.clone()).await;
    let t = Instant::now();
    for p in 0..POLICIES {
        let name = scope.name(&format!("ap-{p:02}"));
        let applied = apply(
            &api,
            &scope.object("ApplyPolicy", &name, policy_spec(&ns, 1))?,
        )
        .await?;
        generations
            .lock()
            .map_err(|_| anyhow::anyhow!("lock"))?
            .insert(name, applied.metadata.generation.unwrap_or(1));
    }
    wait_complete(scope, nodes, &BTreeMap::new()).await?;
    let first = t.elapsed().as_secs_f64();
    let after = apiserver_seconds(&scope.client).await?;
    let m1 = text(metrics_url.clone()).await;
    let first_writes = writes(&m1) - writes(&m0);
    let peak_first = driftless_e2e::procs::proc_mb(pid, "VmHWM").unwrap_or(f64::NAN);

    // 2. One spec change of one policy.
    let changed = scope.name("ap-00");
    let current = api.get(&changed).await?;
    let old_rev = current.data["status"]["currentRevision"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let t = Instant::now();
    let applied = apply(
        &api,
        &scope.object("ApplyPolicy", &changed, policy_spec(&ns, 2))?,
    )
    .await?;
    generations
        .lock()
        .map_err(|_| anyhow::anyhow!("lock"))?
        .insert(changed.clone(), applied.metadata.generation.unwrap_or(2));
    wait_complete(scope, nodes, &[(changed.clone(), old_rev)].into()).await?;
    let change = t.elapsed().as_secs_f64();
    let after2 = apiserver_seconds(&scope.client).await?;
    let m2 = text(metrics_url.clone()).await;
    let change_writes = writes(&m2) - writes(&m1);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let peak = driftless_e2e::procs::proc_mb(pid, "VmHWM").unwrap_or(f64::NAN);
    let settled = driftless_e2e::procs::proc_mb(pid, "VmRSS").unwrap_or(f64::NAN);
    driver.abort();
    drop(operator);

    println!();
    println!("| figure | first revision, 20 policies × {nodes} nodes | one spec change, 1 policy × {nodes} nodes |");
    println!("|---|---|---|");
    println!("| wall time to Complete | {first:.1} s | {change:.1} s |");
    println!(
        "| API server time on assignment writes (APPLY driftreports) | {:.1} s | {:.1} s |",
        after.0 - before.0,
        after2.0 - after.0
    );
    println!(
        "| API server time on the driver's status writes | {:.1} s | {:.1} s |",
        after.1 - before.1,
        after2.1 - after.1
    );
    println!(
        "| operator writes (assignments + ApplyPolicy status) per node changed | {:.2} | {:.2} |",
        first_writes / nodes as f64,
        change_writes / nodes as f64
    );
    println!("| operator peak RSS (VmHWM; goal < 150 MB) | {peak_first:.1} MB | {peak:.1} MB |");
    println!("| operator RSS 10 s after | | {settled:.1} MB |");
    println!("| planner, one decision over {nodes} nodes (goal < 100 ms) | {planner:.2} ms | |");
    Ok(())
}
