//! Cluster-mode benchmark (`make bench-cluster`), against the real API server in `KUBECONFIG`
//! (without it the figures are skipped with that reason).
//!
//! 1. **Operator under load.** 1,000 Node objects and 20 policies (16 ApplyPolicies, 2
//!    FactsPolicies, 2 LogPipelines) whose `nodeSelector`s pick different subsets (100 to 1,000
//!    nodes). A load driver acts as the 1,000 agents: it writes each node's DriftReport
//!    `node-<node>` the way the agent does (server-side apply of the object once, then of its
//!    `status` with one result per selecting policy, for the policy's current generation),
//!    32 writes at a time. The real operator binary computes the policies' status. Measured:
//!    the time until every policy's status shows the expected `targeted`/`inSync` and
//!    `Ready=True` for its generation (convergence), after the first reports and after a spec
//!    change of the policy that selects all 1,000 nodes (the driver then writes the 1,000
//!    reports again, as agents do when a policy changes); the operator's RSS (peak = VmHWM,
//!    settled = VmRSS after 15 s idle; goal < 100 MB), its CPU seconds (utime + stime) and its
//!    status writes; the driver's API requests per node report. Run twice: with glibc's
//!    default malloc arenas and with `MALLOC_ARENA_MAX=1`.
//! 2. **One real agent.** The release `driftless agent --kubernetes` on its own Node with a
//!    FactsPolicy, a LogPipeline tailing a file under its `--root` and an ApplyPolicy: RSS 60 s
//!    after start (goal ≤ 20 MB) and its API requests (`driftless_kube_requests_total`) over
//!    an idle window (`BENCH_IDLE_SECONDS`, default 120), scaled to an hour.
//!
//! Everything lives in a fresh namespace; the Nodes and the cluster-scoped policies carry the
//! run label and are deleted at the end, also when a step fails.
//!
//! Caveat: the operator's policy controller owns the status of every policy in the cluster, so
//! another operator running against the same API server at the same time writes these
//! policies' status too (and this one writes theirs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use driftless_e2e::procs::{built_binary as binary, cpu_seconds};
use driftless_e2e::{apply, in_scope, install_crds, Scope, RUN_LABEL};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// Nodes the load driver speaks for.
const NODES: usize = 1000;
/// Report writes in flight at once.
const CONCURRENCY: usize = 32;
/// Field manager of the driver's report writes.
const DRIVER: &str = "driftless-bench-agents";
/// Label on the load Nodes (value: the namespace); every load policy selects on it.
const LOAD_LABEL: &str = "bench.driftless.dev/load";
/// Label on the real agent's Node (value: the namespace).
const AGENT_LABEL: &str = "bench.driftless.dev/agent";
/// Longest wait for convergence.
const CONVERGE_WAIT: Duration = Duration::from_secs(300);

/// A child process killed when dropped.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of its log, for a failure message.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().rev().take(20).collect();
        lines.into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metrics(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Sum of every sample of a metric family in a Prometheus exposition.
fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Samples of a metric family by their label set.
fn metric_samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            Some((labels.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One load policy: its kind, name, selector and the nodes (by index) it selects.
struct LoadPolicy {
    kind: &'static str,
    name: String,
    selector: Value,
    targets: Vec<bool>,
    generation: i64,
}

impl LoadPolicy {
    fn targeted(&self) -> usize {
        self.targets.iter().filter(|t| **t).count()
    }

    /// The spec; `version` changes it (and so the generation).
    fn spec(&self, version: u32) -> Value {
        match self.kind {
            "ApplyPolicy" => json!({
                "nodeSelector": self.selector,
                "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": format!("version {version}\n")}}],
            }),
            "FactsPolicy" => json!({
                "nodeSelector": self.selector,
                "interval": format!("{}s", 30 + version),
                "facts": [{"name": "queue", "file": {"path": "/var/queue"}}],
            }),
            _ => json!({
                "nodeSelector": self.selector,
                "sources": [{"name": "app", "include": ["/var/log/app.log"]}],
                "sinks": [{"name": "out", "file": {"directory": "/var/log/driftless-sink", "maxBytes": 1_048_576 + u64::from(version)}}],
            }),
        }
    }
}

fn rack(i: usize) -> String {
    format!("r{}", i % 10)
}
fn zone(i: usize) -> String {
    format!("z{}", i % 4)
}
fn tier(i: usize) -> String {
    format!("t{}", i % 5)
}

fn node_name(ns: &str, i: usize) -> String {
    format!("{ns}-n{i:04}")
}

/// The 20 policies: 10 by rack (100 nodes each), 4 by zone (250), tiers t0/t1 (400), every
/// load node (1,000; the one whose spec changes), 2 FactsPolicies by tier (200), LogPipelines
/// on the even racks (500) and on every tier but t0 (800).
fn load_policies(scope: &Scope) -> Vec<LoadPolicy> {
    let ns = scope.namespace.as_str();
    let mut out = Vec::new();
    let mut add = |kind, suffix: String, selector: Value, pick: &dyn Fn(usize) -> bool| {
        out.push(LoadPolicy {
            kind,
            name: scope.name(&suffix),
            selector,
            targets: (0..NODES).map(pick).collect(),
            generation: 0,
        });
    };
    for r in 0..10 {
        add(
            "ApplyPolicy",
            format!("ap-rack{r}"),
            json!({"matchLabels": {LOAD_LABEL: ns, "bench.driftless.dev/rack": format!("r{r}")}}),
            &|i| rack(i) == format!("r{r}"),
        );
    }
    for z in 0..4 {
        add(
            "ApplyPolicy",
            format!("ap-zone{z}"),
            json!({"matchLabels": {LOAD_LABEL: ns, "bench.driftless.dev/zone": format!("z{z}")}}),
            &|i| zone(i) == format!("z{z}"),
        );
    }
    add(
        "ApplyPolicy",
        "ap-tiers".into(),
        json!({"matchLabels": {LOAD_LABEL: ns}, "matchExpressions": [
            {"key": "bench.driftless.dev/tier", "operator": "In", "values": ["t0", "t1"]}]}),
        &|i| ["t0", "t1"].contains(&tier(i).as_str()),
    );
    add(
        "ApplyPolicy",
        "ap-all".into(),
        json!({"matchLabels": {LOAD_LABEL: ns}}),
        &|_| true,
    );
    for t in 0..2 {
        add(
            "FactsPolicy",
            format!("fp-tier{t}"),
            json!({"matchLabels": {LOAD_LABEL: ns, "bench.driftless.dev/tier": format!("t{t}")}}),
            &|i| tier(i) == format!("t{t}"),
        );
    }
    add(
        "LogPipeline",
        "lp-even-racks".into(),
        json!({"matchLabels": {LOAD_LABEL: ns}, "matchExpressions": [
            {"key": "bench.driftless.dev/rack", "operator": "In", "values": ["r0", "r2", "r4", "r6", "r8"]}]}),
        &|i| (i % 10) % 2 == 0,
    );
    add(
        "LogPipeline",
        "lp-not-t0".into(),
        json!({"matchLabels": {LOAD_LABEL: ns}, "matchExpressions": [
            {"key": "bench.driftless.dev/tier", "operator": "NotIn", "values": ["t0"]}]}),
        &|i| tier(i) != "t0",
    );
    out
}

/// Creates (or applies) the policies at spec `version` and records their generations.
async fn apply_policies(
    scope: &Scope,
    policies: &mut [LoadPolicy],
    version: u32,
) -> anyhow::Result<()> {
    for p in policies.iter_mut() {
        let object = scope.object(p.kind, &p.name, p.spec(version))?;
        let applied = apply(&scope.api(p.kind)?, &object).await?;
        p.generation = applied
            .metadata
            .generation
            .context("a policy without generation")?;
    }
    Ok(())
}

/// What the driver wrote.
struct Written {
    reports: usize,
    requests: usize,
    elapsed: Duration,
}

/// Writes the reports of `nodes` as their agents would: the object first when `create`, then
/// the status with one InSync result per selecting policy at its current generation.
async fn write_reports(
    scope: &Scope,
    policies: &[LoadPolicy],
    nodes: &[usize],
    create: bool,
) -> anyhow::Result<Written> {
    let api = scope.api("DriftReport")?;
    let params = PatchParams::apply(DRIVER).force();
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start = Instant::now();
    let outcomes: Vec<anyhow::Result<usize>> = futures::stream::iter(nodes.iter().copied())
        .map(|i| {
            let api = api.clone();
            let params = params.clone();
            let now = now.clone();
            let node = node_name(&scope.namespace, i);
            let results: Vec<Value> = policies
                .iter()
                .filter(|p| p.targets[i])
                .map(|p| {
                    json!({"kind": p.kind, "name": p.name, "generation": p.generation,
                           "state": "InSync", "checkedAt": now})
                })
                .collect();
            async move {
                let name = format!("node-{node}");
                let mut requests = 0;
                if create {
                    let object = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                        "metadata": {"name": name, "labels": {"driftless.dev/node": node}},
                        "spec": {"target": {"kind": "Node", "name": node, "node": node}}});
                    api.patch(&name, &params, &Patch::Apply(&object)).await?;
                    requests += 1;
                }
                let status = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
                    "metadata": {"name": name},
                    "status": {"summary": {"status": "InSync", "checkedAt": now}, "policies": results}});
                api.patch_status(&name, &params, &Patch::Apply(&status))
                    .await?;
                anyhow::Ok(requests + 1)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut requests = 0;
    for outcome in outcomes {
        requests += outcome.context("a report write failed")?;
    }
    Ok(Written {
        reports: nodes.len(),
        requests,
        elapsed: start.elapsed(),
    })
}

/// Whether one policy's stored status matches what the reports say.
fn converged(p: &LoadPolicy, status: &Value) -> bool {
    let want = p.targeted();
    let ready = status["conditions"].as_array().is_some_and(|c| {
        c.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    });
    let counted = match p.kind {
        "ApplyPolicy" => status["inSync"] == want,
        "FactsPolicy" => status["reporting"] == want,
        _ => true,
    };
    status["observedGeneration"] == p.generation && status["targeted"] == want && ready && counted
}

/// Waits until every policy's status has converged; returns when it did.
async fn wait_converged(scope: &Scope, policies: &[LoadPolicy]) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + CONVERGE_WAIT;
    let selector = format!("{RUN_LABEL}={}", scope.namespace);
    loop {
        let mut statuses: BTreeMap<String, Value> = BTreeMap::new();
        for kind in ["ApplyPolicy", "FactsPolicy", "LogPipeline"] {
            let list = scope
                .api(kind)?
                .list(&ListParams::default().labels(&selector))
                .await?;
            for o in list.items {
                let name = o.metadata.name.clone().unwrap_or_default();
                statuses.insert(
                    format!("{kind}/{name}"),
                    o.data.get("status").cloned().unwrap_or(Value::Null),
                );
            }
        }
        let pending: Vec<&LoadPolicy> = policies
            .iter()
            .filter(|p| {
                !statuses
                    .get(&format!("{}/{}", p.kind, p.name))
                    .is_some_and(|s| converged(p, s))
            })
            .collect();
        if pending.is_empty() {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            let p = pending[0];
            bail!(
                "{} of 20 policies did not converge within {} s; {} {} has {}",
                pending.len(),
                CONVERGE_WAIT.as_secs(),
                p.kind,
                p.name,
                statuses
                    .get(&format!("{}/{}", p.kind, p.name))
                    .unwrap_or(&Value::Null)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The figures of one operator run.
struct OperatorRun {
    label: &'static str,
    first: Written,
    first_converged: Duration,
    first_after_last_write: Duration,
    change: Written,
    change_converged: Duration,
    change_after_last_write: Duration,
    peak_mb: f64,
    settled_mb: f64,
    cpu_start: f64,
    cpu_load: f64,
    cpu_idle: f64,
    status_writes: f64,
}

fn start_operator(ns: &str, dir: &Path, malloc_arena_max: bool) -> anyhow::Result<(Process, u16)> {
    let bin = binary("driftless-operator");
    let port = driftless_e2e::procs::free_port();
    let log = dir.join(if malloc_arena_max {
        "operator-arena1.log"
    } else {
        "operator.log"
    });
    let mut command = Command::new(&bin);
    command
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            ns,
            "--no-leader-election",
            "--identity",
            "bench-cluster",
            "--runner-image",
            "bench",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if malloc_arena_max {
        command.env("MALLOC_ARENA_MAX", "1");
    }
    let child = command
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok((Process { child, log }, port))
}

/// One run of the operator: fresh reports, convergence, a spec change, convergence, idle.
async fn operator_run(
    scope: &Scope,
    policies: &mut [LoadPolicy],
    dir: &Path,
    version: u32,
    label: &'static str,
    malloc_arena_max: bool,
) -> anyhow::Result<OperatorRun> {
    // Every policy at a new generation and no reports: every node is pending.
    scope
        .api("DriftReport")?
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    apply_policies(scope, policies, version).await?;
    let (operator, port) = start_operator(&scope.namespace, dir, malloc_arena_max)?;
    let pid = operator.pid();
    let outcome = async {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Instant::now() > deadline {
                bail!("the operator was not ready within 60 s");
            }
            if let Ok(r) = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Let the caches fill (1,000 Nodes) before the load starts.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let cpu_start = cpu_seconds(pid).unwrap_or(0.0);
        let writes_before =
            metric_sum(&metrics(port).await, "driftless_policy_status_writes_total");

        let all: Vec<usize> = (0..NODES).collect();
        let start = Instant::now();
        let first = write_reports(scope, policies, &all, true).await?;
        let last_write = Instant::now();
        let done = wait_converged(scope, policies).await?;
        let first_converged = done - start;
        let first_after_last_write = done - last_write;

        // A spec change of the policy on every node: its agents apply it and report the new
        // generation.
        let changed = policies
            .iter()
            .position(|p| p.targeted() == NODES)
            .context("no policy selects every node")?;
        let start = Instant::now();
        let object = scope.object(
            policies[changed].kind,
            &policies[changed].name,
            policies[changed].spec(version + 100),
        )?;
        let applied = apply(&scope.api(policies[changed].kind)?, &object).await?;
        policies[changed].generation = applied.metadata.generation.context("generation")?;
        let change = write_reports(scope, policies, &all, false).await?;
        let last_write = Instant::now();
        let done = wait_converged(scope, policies).await?;
        let change_converged = done - start;
        let change_after_last_write = done - last_write;
        let cpu_load = cpu_seconds(pid).unwrap_or(0.0) - cpu_start;
        let writes_after = metric_sum(&metrics(port).await, "driftless_policy_status_writes_total");

        let idle_from = cpu_seconds(pid).unwrap_or(0.0);
        tokio::time::sleep(Duration::from_secs(15)).await;
        let cpu_idle = cpu_seconds(pid).unwrap_or(0.0) - idle_from;
        anyhow::Ok(OperatorRun {
            label,
            first,
            first_converged,
            first_after_last_write,
            change,
            change_converged,
            change_after_last_write,
            peak_mb: driftless_e2e::procs::proc_mb(pid, "VmHWM:").unwrap_or(0.0),
            settled_mb: driftless_e2e::procs::proc_mb(pid, "VmRSS:").unwrap_or(0.0),
            cpu_start,
            cpu_load,
            cpu_idle,
            status_writes: writes_after - writes_before,
        })
    }
    .await;
    outcome.map_err(|e| e.context(format!("operator log:\n{}", operator.tail())))
}

/// The figures of the real agent.
struct AgentRun {
    rss_mb: f64,
    peak_mb: f64,
    startup: BTreeMap<String, f64>,
    idle_seconds: u64,
    idle: BTreeMap<String, f64>,
}

async fn agent_run(scope: &Scope, dir: &Path) -> anyhow::Result<AgentRun> {
    let client = scope.client.clone();
    let ns = scope.namespace.as_str();
    let node = scope.name("agent");
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node, "labels": {
                RUN_LABEL: ns, AGENT_LABEL: ns}}}))?,
        )
        .await?;
    let root = dir.join("agent/root");
    let state = dir.join("agent/state");
    let sink = dir.join("agent/sink");
    for d in [root.join("etc"), root.join("var/log"), state.clone()] {
        std::fs::create_dir_all(&d)?;
    }
    std::fs::write(root.join("var/queue"), "3\n")?;
    let app_log = root.join("var/log/app.log");
    std::fs::write(&app_log, "")?;
    let selector = json!({"matchLabels": {AGENT_LABEL: ns}});
    let policies = [
        (
            "ApplyPolicy",
            "agent-apply",
            json!({"nodeSelector": selector, "tasks": [
                {"name": "motd", "file": {"path": "/etc/motd", "content": "managed by driftless\n"}},
                {"name": "issue", "file": {"path": "/etc/issue", "content": "bench\n"}}]}),
        ),
        (
            "FactsPolicy",
            "agent-facts",
            json!({"nodeSelector": selector,
                   "facts": [{"name": "queue", "file": {"path": "/var/queue"}}],
                   "thresholds": [{"name": "queue-long", "metric": "driftless_fact", "labels": {"name": "queue"},
                                   "comparison": "GreaterThan", "value": 100, "severity": "Warning"}]}),
        ),
        (
            "LogPipeline",
            "agent-logs",
            json!({"nodeSelector": selector,
                   "sources": [{"name": "app", "include": ["/var/log/app.log"]}],
                   "sinks": [{"name": "out", "file": {"directory": sink.display().to_string(), "raw": true}}]}),
        ),
    ];
    for (kind, suffix, spec) in &policies {
        apply(
            &scope.api(kind)?,
            &scope.object(kind, &scope.name(suffix), spec.clone())?,
        )
        .await?;
    }
    let bin = binary("driftless");
    let port = driftless_e2e::procs::free_port();
    let log = dir.join("agent.log");
    let child = Command::new(&bin)
        .args(["--log-format", "text", "agent", "--kubernetes", "--root"])
        .arg(&root)
        .arg("--state-dir")
        .arg(&state)
        .arg("--audit-spool")
        .arg(state.join("audit"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NODE_NAME", &node)
        .env("POD_NAMESPACE", ns)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let agent = Process { child, log };
    let started = Instant::now();
    let outcome = async {
        // Lines for the pipeline to forward.
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().append(true).open(&app_log)?;
            for i in 0..1000 {
                writeln!(f, "line {i} of the application log")?;
            }
        }
        // The node's report lists the three policies.
        let reports = scope.api("DriftReport")?;
        let report_name = format!("node-{node}");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let report: Option<DynamicObject> = reports.get_opt(&report_name).await?;
            let listed = report
                .and_then(|r| r.data["status"]["policies"].as_array().map(Vec::len))
                .unwrap_or(0);
            if listed >= 3 {
                break;
            }
            if Instant::now() > deadline {
                bail!("the agent's report did not list its three policies within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !root.join("etc/motd").exists() {
            bail!("the ApplyPolicy did not write /etc/motd under the agent's root");
        }
        let since = started.elapsed();
        if since < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(60) - since).await;
        }
        let forwarded = std::fs::read_dir(&sink)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .map(|t| t.lines().count())
                    .sum::<usize>()
            })
            .unwrap_or(0);
        if forwarded < 1000 {
            bail!("the LogPipeline forwarded {forwarded} of 1000 lines");
        }
        let rss_mb = driftless_e2e::procs::proc_mb(agent.pid(), "VmRSS:").unwrap_or(0.0);
        let peak_mb = driftless_e2e::procs::proc_mb(agent.pid(), "VmHWM:").unwrap_or(0.0);
        let name = "driftless_kube_requests_total";
        let before = metric_samples(&metrics(port).await, name);
        let idle_seconds: u64 = std::env::var("BENCH_IDLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(120);
        tokio::time::sleep(Duration::from_secs(idle_seconds)).await;
        let after = metric_samples(&metrics(port).await, name);
        let idle = after
            .iter()
            .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, d)| *d > 0.0)
            .collect();
        anyhow::Ok(AgentRun {
            rss_mb,
            peak_mb,
            startup: before,
            idle_seconds,
            idle,
        })
    }
    .await;
    let outcome = outcome.map_err(|e| e.context(format!("agent log:\n{}", agent.tail())));
    drop(agent);
    let _ = nodes.delete(&node, &DeleteParams::default()).await;
    outcome
}

async fn create_nodes(scope: &Scope) -> anyhow::Result<Duration> {
    let nodes: Api<Node> = Api::all(scope.client.clone());
    let ns = scope.namespace.clone();
    let start = Instant::now();
    let outcomes: Vec<anyhow::Result<()>> = futures::stream::iter(0..NODES)
        .map(|i| {
            let nodes = nodes.clone();
            let ns = ns.clone();
            async move {
                let node: Node = serde_json::from_value(json!({"metadata": {
                "name": node_name(&ns, i),
                "labels": {
                    RUN_LABEL: ns, LOAD_LABEL: ns,
                    "bench.driftless.dev/rack": rack(i),
                    "bench.driftless.dev/zone": zone(i),
                    "bench.driftless.dev/tier": tier(i),
                }}}))?;
                nodes.create(&PostParams::default(), &node).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    for outcome in outcomes {
        outcome.context("creating a Node")?;
    }
    Ok(start.elapsed())
}

async fn delete_nodes(client: &kube::Client, selector: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let _ = nodes
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(selector),
        )
        .await;
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn print_operator(runs: &[OperatorRun], results: usize) {
    println!();
    println!(
        "operator, {NODES} Nodes, 20 policies (16 ApplyPolicies, 2 FactsPolicies, 2 LogPipelines), {results} policy results in {NODES} node reports:"
    );
    let mut rows: Vec<(String, Vec<String>)> = vec![
        ("".into(), runs.iter().map(|r| r.label.to_owned()).collect()),
        (
            "first reports: driver writes (2 requests each)".into(),
            runs.iter()
                .map(|r| format!("{} reports in {}", r.first.reports, secs(r.first.elapsed)))
                .collect(),
        ),
        (
            "  converged after the first write".into(),
            runs.iter().map(|r| secs(r.first_converged)).collect(),
        ),
        (
            "  converged after the last write".into(),
            runs.iter()
                .map(|r| secs(r.first_after_last_write))
                .collect(),
        ),
        (
            "spec change on 1,000 nodes: driver rewrites (1 request each)".into(),
            runs.iter()
                .map(|r| format!("{} reports in {}", r.change.reports, secs(r.change.elapsed)))
                .collect(),
        ),
        (
            "  converged after the spec change".into(),
            runs.iter().map(|r| secs(r.change_converged)).collect(),
        ),
        (
            "  converged after the last write".into(),
            runs.iter()
                .map(|r| secs(r.change_after_last_write))
                .collect(),
        ),
        (
            "API requests per node report (first / later)".into(),
            runs.iter()
                .map(|r| {
                    format!(
                        "{:.1} / {:.1}",
                        r.first.requests as f64 / r.first.reports as f64,
                        r.change.requests as f64 / r.change.reports as f64
                    )
                })
                .collect(),
        ),
        (
            "operator status writes (both phases)".into(),
            runs.iter()
                .map(|r| format!("{:.0}", r.status_writes))
                .collect(),
        ),
        (
            "operator RSS peak (goal < 100 MB)".into(),
            runs.iter()
                .map(|r| format!("{:.1} MB", r.peak_mb))
                .collect(),
        ),
        (
            "operator RSS settled, 15 s idle".into(),
            runs.iter()
                .map(|r| format!("{:.1} MB", r.settled_mb))
                .collect(),
        ),
        (
            "operator CPU: start + cache fill".into(),
            runs.iter()
                .map(|r| format!("{:.2} s", r.cpu_start))
                .collect(),
        ),
        (
            "operator CPU: both phases".into(),
            runs.iter()
                .map(|r| format!("{:.2} s", r.cpu_load))
                .collect(),
        ),
        (
            "operator CPU: 15 s idle".into(),
            runs.iter()
                .map(|r| format!("{:.2} s", r.cpu_idle))
                .collect(),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (key, values) in rows.drain(..) {
        let cells: Vec<String> = values.iter().map(|v| format!("{v:>24}")).collect();
        println!("  {key:<width$} {}", cells.join(" "));
    }
    for r in runs {
        if r.peak_mb >= 100.0 {
            println!(
                "  NOTE: operator RSS ({}) peaked at {:.1} MB: above the goal of 100 MB",
                r.label, r.peak_mb
            );
        }
    }
}

fn print_agent(a: &AgentRun) {
    println!();
    println!("one real agent (cluster mode: ApplyPolicy with 2 files, FactsPolicy with default collectors + 1 fact + 1 threshold, LogPipeline tailing 1 file; report heartbeat 300 s):");
    let goal = if a.rss_mb <= 20.0 {
        "goal ≤ 20 MB: met"
    } else {
        "goal ≤ 20 MB: NOT met"
    };
    println!(
        "  RSS 60 s after start:  {:.1} MB (peak {:.1} MB; {goal})",
        a.rss_mb, a.peak_mb
    );
    let total = |m: &BTreeMap<String, f64>| m.values().fold(0.0, |a, b| a + b);
    println!("  API requests at start: {:.0}", total(&a.startup));
    for (labels, n) in &a.startup {
        println!("    {labels}: {n:.0}");
    }
    let idle = total(&a.idle);
    let scale = 3600.0 / a.idle_seconds as f64;
    println!(
        "  API requests idle:     {idle:.0} in {} s, scaled x{scale:.1} = {:.0} per hour (measured)",
        a.idle_seconds,
        idle * scale
    );
    for (labels, n) in &a.idle {
        println!("    {labels}: {n:.0}");
    }
    // Each watch is one long request the server ends after kube-rs's timeoutSeconds (290 s),
    // then re-opened; the report is written once per heartbeat (300 s) when nothing changes.
    let watches = a
        .startup
        .iter()
        .filter(|(k, _)| k.contains("verb=\"watch\""))
        .map(|(_, n)| *n)
        .fold(0.0, |a, b| a + b);
    println!(
        "  API requests idle:     {:.0} per hour (from the timers: {watches:.0} watches re-opened every 290 s + 1 report heartbeat every 300 s)",
        watches * 3600.0 / 290.0 + 3600.0 / 300.0
    );
    if (a.idle_seconds as f64) < 300.0 {
        println!("  (the idle window is shorter than the watch timeout and the heartbeat, so the measured figure can miss them; BENCH_IDLE_SECONDS=600 measures a longer window)");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("KUBECONFIG").is_none_or(|k| k.is_empty()) {
        println!("skipped the cluster figures: KUBECONFIG is not set");
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    install_crds(&client).await?;
    // in_scope deletes the namespace and the labelled policies, also on failure; the Nodes
    // are deleted here.
    in_scope(&client, "bench-cluster", move |scope| async move {
        let dir = std::env::temp_dir().join(format!("bench-cluster-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let outcome = bench(&scope, &dir).await;
        delete_nodes(&scope.client, &format!("{RUN_LABEL}={}", scope.namespace)).await;
        let _ = std::fs::remove_dir_all(&dir);
        outcome
    })
    .await
}

async fn bench(scope: &Scope, dir: &Path) -> anyhow::Result<()> {
    println!("namespace {}", scope.namespace);
    let took = create_nodes(scope).await?;
    println!("created {NODES} Nodes in {}", secs(took));
    let mut policies = load_policies(scope);
    let results: usize = policies.iter().map(LoadPolicy::targeted).sum();
    println!(
        "20 policies select {}; {results} policy results in all",
        policies
            .iter()
            .map(|p| p.targeted().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut runs = Vec::new();
    for (version, label, arena) in [
        (1, "default malloc", false),
        (2, "MALLOC_ARENA_MAX=1", true),
    ] {
        let run = operator_run(scope, &mut policies, dir, version, label, arena).await?;
        println!(
            "{label}: converged {} after the first reports, {} after the spec change",
            secs(run.first_converged),
            secs(run.change_converged)
        );
        runs.push(run);
    }
    // The load is done: the agent's Node and policies only from here.
    delete_nodes(&scope.client, &format!("{LOAD_LABEL}={}", scope.namespace)).await;
    for p in &policies {
        let _ = scope
            .api(p.kind)?
            .delete(&p.name, &DeleteParams::default())
            .await;
    }
    let agent = agent_run(scope, dir).await?;
    print_operator(&runs, results);
    print_agent(&agent);
    Ok(())
}
