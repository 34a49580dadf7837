//! Webhook under attack (`make bench-webhook`), with `KUBECONFIG`: the real operator binary
//! against the API server, a DriftScan with a webhook, and on loopback
//! - valid triggers (bearer token, from 127.0.0.1) at `BENCH_VALID_PER_SECOND` (default 10),
//!   first alone for a third of the time (the baseline), then
//! - beside forged requests (wrong tokens and signatures, unknown DriftScans, from 127.0.0.2) at
//!   `BENCH_FORGED_PER_SECOND` (default 1,000) for `BENCH_SECONDS` (default 30).
//!
//! Prints how the forged requests were refused (goal: all), the p50/p99 latency of valid
//! triggers under attack against the baseline (goal: p99 < 100 ms), and the `get` requests for
//! DriftScans and Secrets the API server served meanwhile (`apiserver_request_total` before
//! and after; goal: none beyond the token refresher's one per Secret per minute — before the
//! webhook cached credentials, every forged request cost one or two).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use driftless_e2e::procs::built_binary as binary;
use driftless_e2e::{in_scope, install_crds, poll, Scope};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use serde_json::json;

fn env_or(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?}: expected a whole number")),
        Err(_) => Ok(default),
    }
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A one-stack git repository the operator resolves each trigger against.
fn repo() -> anyhow::Result<PathBuf> {
    let repo = std::env::temp_dir().join(format!("bench-webhook-repo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&repo);
    std::fs::create_dir_all(repo.join("live/a"))?;
    std::fs::write(repo.join("live/a/main.tf"), "output \"x\" { value = 1 }\n")?;
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
            "a",
        ],
    ] {
        let status = Command::new("git").args(args).current_dir(&repo).status()?;
        if !status.success() {
            bail!("git {args:?} failed in {}", repo.display());
        }
    }
    Ok(repo)
}

/// `get` requests for DriftScans and Secrets the API server has served, by its `/metrics`.
async fn api_gets(client: &kube::Client) -> anyhow::Result<BTreeMap<&'static str, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client
        .request_text(request)
        .await
        .context("reading the API server's /metrics")?;
    let mut counts = BTreeMap::from([("driftscans", 0.0), ("secrets", 0.0)]);
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        if !line.contains("verb=\"GET\"") {
            continue;
        }
        for (resource, count) in counts.iter_mut() {
            if line.contains(&format!("resource=\"{resource}\""))
                && !line.contains("subresource=\"status\"")
            {
                *count += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    Ok(counts)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Valid triggers at `per_second` until `stop`; their latencies and statuses.
async fn valid(url: String, per_second: u64, stop: Instant) -> (Vec<Duration>, BTreeMap<u16, u64>) {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 1]))
        .build()
        .unwrap_or_default();
    let mut latencies = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
    while Instant::now() < stop {
        tick.tick().await;
        let started = Instant::now();
        let status = match http
            .post(&url)
            .bearer_auth("bench-t0ken")
            .body(r#"{"actor":"bench"}"#)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        latencies.push(started.elapsed());
        *statuses.entry(status).or_insert(0) += 1;
    }
    latencies.sort();
    (latencies, statuses)
}

/// Forged requests at `per_second` until `stop`; their statuses.
async fn forged(base: String, per_second: u64, stop: Instant) -> BTreeMap<u16, u64> {
    let http = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .pool_max_idle_per_host(256)
        .build()
        .unwrap_or_default();
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let inflight = Arc::new(tokio::sync::Semaphore::new(512));
    let sent = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while Instant::now() < stop {
        tick.tick().await;
        let Ok(permit) = inflight.clone().acquire_owned().await else {
            break;
        };
        let n = sent.fetch_add(1, Ordering::Relaxed);
        let request = match n % 4 {
            0 => http
                .post(format!("{base}/bench/scan"))
                .bearer_auth(format!("guess-{n}")),
            1 => http
                .post(format!("{base}/bench/scan"))
                .header("x-hub-signature-256", format!("sha256={:064x}", n))
                .body(r#"{"after":"0","commits":[]}"#),
            2 => http
                .post(format!("{base}/scan-{n}/scan"))
                .bearer_auth("bench-t0ken"),
            _ => http
                .get(format!("{base}/bench"))
                .bearer_auth(format!("guess-{n}")),
        };
        let statuses = statuses.clone();
        tokio::spawn(async move {
            let status = match request.send().await {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            };
            *statuses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(status)
                .or_insert(0) += 1;
            drop(permit);
        });
    }
    // Let the last ones finish.
    let _ = inflight.acquire_many(512).await;
    let out = statuses.lock().unwrap_or_else(|e| e.into_inner()).clone();
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("KUBECONFIG").is_none_or(|k| k.is_empty()) {
        println!("skipped: bench-webhook: KUBECONFIG is not set (it runs the operator against a real API server)");
        return Ok(());
    }
    let client = kube::Client::try_default().await?;
    install_crds(&client).await?;
    in_scope(&client, "bench-webhook", move |scope| async move {
        bench(&scope).await
    })
    .await
}

async fn bench(scope: &Scope) -> anyhow::Result<()> {
    let seconds = env_or("BENCH_SECONDS", 30)?;
    let forged_rate = env_or("BENCH_FORGED_PER_SECOND", 1000)?;
    let valid_rate = env_or("BENCH_VALID_PER_SECOND", 10)?;
    let ns = scope.namespace.clone();
    let repo = repo()?;
    let secrets: Api<Secret> = Api::namespaced(scope.client.clone(), &ns);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hook"}, "stringData": {"token": "bench-t0ken"}}))?;
    secrets.create(&PostParams::default(), &secret).await?;
    let scans: Api<driftless_crds::drift_scan::DriftScan> =
        Api::namespaced(scope.client.clone(), &ns);
    let scan = serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
        "metadata": {"name": "bench"},
        "spec": {
            "source": {"git": {"url": format!("file://{}", repo.display()), "stacks": ["live/a"]}},
            "webhook": {"secretRef": {"name": "hook"}},
            "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3"}
        }
    }))?;
    scans.create(&PostParams::default(), &scan).await?;

    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = std::env::temp_dir().join(format!("bench-webhook-{}.log", std::process::id()));
    // The DriftScan's budget is raised above the valid rate: the valid triggers measure
    // latency, not the per-DriftScan limit.
    let scan_rate = (valid_rate * 2).max(1).to_string();
    let bin = binary("driftless-operator");
    let child = Command::new(&bin)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            &ns,
        ])
        .args([
            "--no-leader-election",
            "--identity",
            "bench-webhook",
            "--runner-image",
            "bench",
        ])
        .args([
            "--webhook-scan-rate",
            &scan_rate,
            "--webhook-scan-burst",
            &scan_rate,
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let _operator = Process(child);
    let base = format!("http://127.0.0.1:{port}/api/v1/namespaces/{ns}/driftscans");
    let probe = reqwest::Client::new();
    poll("the webhook to accept the token", || {
        let (probe, url) = (probe.clone(), format!("{base}/bench"));
        async move {
            let r = probe.get(url).bearer_auth("bench-t0ken").send().await;
            Ok(r.ok().filter(|r| r.status() == 200).map(|_| ()))
        }
    })
    .await
    .with_context(|| format!("operator log: {}", log.display()))?;
    println!(
        "operator {} on 127.0.0.1:{port}; valid triggers {valid_rate}/s from 127.0.0.1; forged {forged_rate}/s from 127.0.0.2 for {seconds} s",
        bin.display()
    );

    // Baseline: valid triggers alone.
    let quiet_for = Duration::from_secs((seconds / 3).max(3));
    let (quiet, quiet_statuses) = valid(
        format!("{base}/bench/scan"),
        valid_rate,
        Instant::now() + quiet_for,
    )
    .await;

    // Under attack.
    let before = api_gets(&scope.client).await?;
    let stop = Instant::now() + Duration::from_secs(seconds);
    let attack = tokio::spawn(forged(base.clone(), forged_rate, stop));
    let (loud, loud_statuses) = valid(format!("{base}/bench/scan"), valid_rate, stop).await;
    let refused = attack.await?;
    // Let the API server's counters catch up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = api_gets(&scope.client).await?;

    let total: u64 = refused.values().sum();
    let accepted: u64 = refused
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    println!("forged requests: {total} sent, {accepted} accepted; by status: {refused:?}");
    println!(
        "valid triggers alone: {} answered {quiet_statuses:?}; p50 {}, p99 {}",
        quiet.len(),
        ms(percentile(&quiet, 0.5)),
        ms(percentile(&quiet, 0.99))
    );
    println!(
        "valid triggers under attack: {} answered {loud_statuses:?}; p50 {}, p99 {}, max {}",
        loud.len(),
        ms(percentile(&loud, 0.5)),
        ms(percentile(&loud, 0.99)),
        ms(loud.last().copied().unwrap_or_default())
    );
    let ratio =
        percentile(&loud, 0.99).as_secs_f64() / percentile(&quiet, 0.99).as_secs_f64().max(1e-6);
    println!("p99 under attack / alone: {ratio:.2}x");
    for (resource, count) in &after {
        let delta = count - before.get(resource).copied().unwrap_or(0.0);
        println!("API server GET {resource} during the attack: {delta} (all clients; the token refresher reads the one Secret once a minute)");
    }
    let valid_failed: u64 = loud_statuses
        .iter()
        .filter(|(s, _)| !matches!(**s, 202 | 409))
        .map(|(_, n)| n)
        .sum();
    if accepted > 0 {
        bail!("{accepted} forged requests were accepted");
    }
    if valid_failed > 0 {
        bail!("{valid_failed} valid triggers were not answered 202/409: {loud_statuses:?} (operator log: {})", log.display());
    }
    Ok(())
}
