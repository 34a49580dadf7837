//! DriftScan benchmark (`make bench-scan`):
//! 1. scheduler decision time for one 1,000-stack run and for 10,000 queued units over 100
//!    DriftScans (pure, in process);
//! 2. with `KUBECONFIG`: trigger-to-first-Job latency of the real operator binary against the
//!    API server (goal < 1 s; KEDA polls every 30 s by default), and the operator's RSS with
//!    10,000 DriftReports in its cache (goal < 100 MB). Runs are finished the way a cluster
//!    finishes them: kube-controller-manager's Job controller creates the pods, a kubelet
//!    stand-in ([`driftless_e2e::kubelet`]) reports them exited, the Job controller fails the
//!    Jobs. Without a Job controller the cluster figures are skipped with that reason.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use chrono::Utc;
use driftless_crds::drift_report::{report_name, DriftReport};
use driftless_crds::drift_scan::{DriftScan, DriftScanSpec, DriftScanStatus};
use driftless_operator::scan::queue::ScanKey;
use driftless_operator::scan::scheduler::{decide, Observed, ScanState};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

fn spec(stacks: usize) -> anyhow::Result<DriftScanSpec> {
    let stacks: Vec<String> = (0..stacks).map(|i| format!("live/s{i:05}")).collect();
    Ok(serde_json::from_value(json!({
        "source": {"git": {"url": "file:///repo", "stacks": stacks}},
        "maxParallel": 100,
    }))?)
}

/// A local git repository with stacks `a` and `b`: the operator reads the run's commit from it
/// before it creates Jobs.
fn stacks_repo() -> anyhow::Result<std::path::PathBuf> {
    let repo = std::env::temp_dir().join(format!("bench-scan-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(&repo)?;
    for stack in ["a", "b"] {
        std::fs::create_dir_all(repo.join(stack))?;
        std::fs::write(
            repo.join(stack).join("main.tf"),
            "output \"x\" { value = 1 }\n",
        )?;
    }
    for args in [
        &["init", "-q"][..],
        &["add", "."],
        &[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.com",
            "commit",
            "-q",
            "-m",
            "stacks",
        ],
    ] {
        let status = Command::new("git").args(args).current_dir(&repo).status()?;
        if !status.success() {
            bail!("git {args:?} failed in {}", repo.display());
        }
    }
    Ok(repo)
}

fn time_decide(label: &str, scans: Vec<ScanState>, capacity: u32) -> anyhow::Result<()> {
    let mut observed = Observed {
        scans,
        jobs: Vec::new(),
        reports: Vec::new(),
        now: Utc::now(),
        max_concurrent_jobs: capacity,
    };
    let resolve = |s: &ScanState| Ok(s.spec.source.git.stacks.clone());
    let start = Instant::now();
    let first = decide(&observed, &resolve);
    let start_ms = start.elapsed().as_secs_f64() * 1000.0;
    // Steady state: the runs exist, the Jobs run.
    for (key, status) in &first.statuses {
        if let Some(s) = observed.scans.iter_mut().find(|s| &s.key == key) {
            s.status = status.clone();
        }
    }
    for plan in &first.create {
        observed
            .jobs
            .push(driftless_operator::scan::scheduler::JobState {
                scan: plan.scan.clone(),
                name: plan.name.clone(),
                run: plan.run.clone(),
                stacks: plan.stacks.clone(),
                phase: driftless_operator::scan::scheduler::JobPhase::Active,
            });
    }
    let rounds = 20;
    let start = Instant::now();
    for _ in 0..rounds {
        let d = decide(&observed, &resolve);
        if !d.create.is_empty() {
            bail!("steady state created Jobs");
        }
    }
    let steady_ms = start.elapsed().as_secs_f64() * 1000.0 / f64::from(rounds);
    println!(
        "{label}: start decision {start_ms:.1} ms ({} Jobs, batch {}), steady decision {steady_ms:.1} ms, queue {}",
        first.create.len(),
        first.batch_size,
        first.queue_depth
    );
    Ok(())
}

fn scan_state(name: &str, stacks: usize) -> anyhow::Result<ScanState> {
    Ok(ScanState {
        key: ScanKey::new("bench", name),
        spec: spec(stacks)?,
        status: DriftScanStatus::default(),
        generation: Some(1),
        annotation: Some("1".into()),
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn cluster(client: kube::Client) -> anyhow::Result<()> {
    driftless_e2e::install_crds(&client).await?;
    let ns_api: Api<Namespace> = Api::all(client.clone());
    let ns = driftless_e2e::fresh_namespace(&client, "driftless-bench-scan-").await?;
    let result = cluster_in(&client, &ns).await;
    let _ = ns_api.delete(&ns, &DeleteParams::background()).await;
    result
}

async fn cluster_in(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    // 10,000 DriftReports.
    let reports: Api<DriftReport> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let made = futures::stream::iter(0..10_000)
        .map(|i| {
            let reports = reports.clone();
            let now = now.clone();
            async move {
                let stack = format!("live/s{i:05}");
                let name = report_name("bulk", &stack);
                let object = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport", "metadata": {"name": name, "labels": {"driftless.dev/scan": "bulk"}},
                    "spec": {"target": {"kind": "Stack", "name": format!("bulk/{stack}"), "scan": "bulk", "stack": stack}}});
                reports.patch(&name, &PatchParams::apply("bench"), &Patch::Apply(&object)).await?;
                let status = json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport", "metadata": {"name": name},
                    "status": {"summary": {"status": "Drifted", "added": 1, "checkedAt": now, "run": "r0"},
                               "items": [{"address": "aws_s3_bucket.logs", "domain": "aws_s3_bucket", "change": "changed",
                                          "attributes": [{"path": "tags.env", "before": "prod", "after": "staging"}]}]}});
                reports.patch_status(&name, &PatchParams::apply("bench"), &Patch::Apply(&status)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(32)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    println!(
        "created {made} DriftReports in {:.1} s",
        start.elapsed().as_secs_f64()
    );

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bin = driftless_e2e::procs::built_binary("driftless-operator");
    let mut child = Command::new(&bin)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            ns,
            "--no-leader-election",
            "--runner-image",
            "bench",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let outcome = async {
        // Ready, and the report cache filled (the drift gauges appear once it is).
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if Instant::now() > deadline {
                bail!("the operator did not load the reports within 120 s");
            }
            if let Ok(r) = http.get(format!("http://127.0.0.1:{port}/metrics")).send().await {
                let text = r.text().await.unwrap_or_default();
                if text.matches("driftless_drift_items{").count() >= 10_000 {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let repo = stacks_repo()?;
        let url = format!("file://{}", repo.display());
        let scans: Api<DriftScan> = Api::namespaced(client.clone(), ns);
        let scan: DriftScan = serde_json::from_value(json!({"apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
            "metadata": {"name": "infra"}, "spec": {"source": {"git": {"url": url, "stacks": ["a", "b"]}}}}))?;
        scans.create(&PostParams::default(), &scan).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
        let mut latencies = Vec::new();
        for i in 0..5 {
            let start = Instant::now();
            let patch = json!({"metadata": {"annotations": {"driftless.dev/trigger": format!("bench-{i}")}}});
            scans.patch("infra", &PatchParams::default(), &Patch::Merge(&patch)).await?;
            let before = latencies.len();
            while Instant::now() - start < Duration::from_secs(30) {
                let list = jobs.list(&ListParams::default().labels("driftless.dev/scan=infra")).await?;
                if list.items.len() > i * 2 {
                    latencies.push(start.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if latencies.len() == before {
                bail!("no Job within 30 s of trigger {i}");
            }
            // Finish the run so the next trigger starts one: its Jobs' pods exit 1 on the
            // stand-in node and the Job controller fails the Jobs (no runner writes reports).
            for job in jobs.list(&ListParams::default().labels("driftless.dev/scan=infra")).await?.items {
                if job.status.as_ref().and_then(|s| s.completion_time.as_ref()).is_none() {
                    driftless_e2e::kubelet::finish_job(client, &job, 1).await?;
                }
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                let s = scans.get("infra").await?;
                if s.status.and_then(|s| s.last_run).is_some_and(|r| r.finished_at.is_some()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        latencies.sort();
        println!(
            "trigger-to-first-Job latency over {} triggers: median {} ms, max {} ms (goal < 1000 ms; KEDA default poll 30000 ms)",
            latencies.len(),
            latencies[latencies.len() / 2].as_millis(),
            latencies[latencies.len() - 1].as_millis()
        );
        let rss = rss_kib(child.id()).unwrap_or(0);
        println!("operator RSS with 10,000 DriftReports cached: {:.1} MB (goal < 100 MB) [{}]", rss as f64 / 1024.0, bin.display());
        anyhow::Ok(())
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    time_decide("1,000-stack run", vec![scan_state("big", 1000)?], 10)?;
    let many: Vec<ScanState> = (0..100)
        .map(|i| scan_state(&format!("scan{i:03}"), 100))
        .collect::<anyhow::Result<_>>()?;
    time_decide(
        "10,000 queued units (100 DriftScans x 100 stacks)",
        many,
        10,
    )?;
    if std::env::var_os("KUBECONFIG").is_none_or(|k| k.is_empty()) {
        println!("skipped the cluster figures: KUBECONFIG is not set");
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    if let Err(reason) = driftless_e2e::kubelet::job_controller_or_skip(&client, "default").await {
        println!("skipped the cluster figures: {reason:#}");
        return Ok(());
    }
    cluster(client).await
}
