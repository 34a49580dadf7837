//! Operator leader election against the API server in `KUBECONFIG`: real `driftless-operator`
//! processes with the default timing (15 s lease, 10 s renew deadline, 2 s retry) compete for
//! the Lease `driftless-operator` in the test's namespace.
//!
//! `leader_fails_over_after_sigkill_and_hands_over_on_sigterm`: two operators start; exactly one
//! leads, and it writes policy statuses. SIGKILL the leader → the standby leads in under 20 s
//! and writes the status of a policy created meanwhile. A third operator joins as standby;
//! SIGTERM the leader → it releases the Lease and exits 0, and the standby leads within a few
//! seconds. At no poll do two processes claim to lead. The measured times are printed.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use driftless_e2e::{client_or_skip, in_scope, install_crds, poll, Scope};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

const LEASE: &str = "driftless-operator";

fn operator_binary() -> PathBuf {
    driftless_e2e::procs::binary("driftless-operator", "driftless-operator")
}

/// One operator process; killed when dropped.
struct Operator {
    identity: String,
    port: u16,
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(bin: &Path, scope: &Scope, dir: &Path, identity: &str) -> anyhow::Result<Operator> {
    let port = free_port();
    let log = dir.join(format!("{identity}.log"));
    let child = Command::new(bin)
        .args(["run", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--namespace", &scope.namespace, "--identity", identity])
        .args(["--runner-image", "driftless/operator:e2e"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting driftless-operator")?;
    Ok(Operator {
        identity: identity.to_owned(),
        port,
        child,
        log,
    })
}

/// `Some(leader)` from the process's `/api/health`, `None` when it does not answer.
async fn claims(http: &reqwest::Client, op: &Operator) -> Option<bool> {
    let url = format!("http://127.0.0.1:{}/api/health", op.port);
    let body: Value = http.get(url).send().await.ok()?.json().await.ok()?;
    body["leader"].as_bool()
}

/// The identities of the processes that claim to lead now; fails when two do.
async fn leaders(http: &reqwest::Client, ops: &[&Operator]) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for op in ops {
        if claims(http, op).await == Some(true) {
            out.push(op.identity.clone());
        }
    }
    ensure!(out.len() <= 1, "two operators lead at once: {out:?}");
    Ok(out)
}

/// Polls every 100 ms until `who` claims to lead (and no one else does).
async fn wait_leader(
    http: &reqwest::Client,
    ops: &[&Operator],
    who: &Operator,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        if leaders(http, ops).await? == [who.identity.clone()] {
            return Ok(());
        }
        if started.elapsed() > limit {
            bail!(
                "{} did not lead within {limit:?}; its log: {}",
                who.identity,
                who.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn lease(scope: &Scope) -> anyhow::Result<(String, i32)> {
    let api: Api<Lease> = Api::namespaced(scope.client.clone(), &scope.namespace);
    let spec = api.get(LEASE).await?.spec.unwrap_or_default();
    Ok((
        spec.holder_identity.unwrap_or_default(),
        spec.lease_transitions.unwrap_or(0),
    ))
}

/// Creates an ApplyPolicy and waits until a leader wrote its status; returns the time taken.
async fn policy_status_written(scope: &Scope, suffix: &str) -> anyhow::Result<Duration> {
    let api = scope.api("ApplyPolicy")?;
    let name = scope.name(suffix);
    let object = scope.object(
        "ApplyPolicy",
        &name,
        json!({"nodeSelector": {"matchLabels": {"driftless.dev/e2e-none": "x"}},
               "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": "hi\n"}}]}),
    )?;
    let started = Instant::now();
    api.create(&PostParams::default(), &driftless_e2e::dynamic(&object)?)
        .await?;
    poll(&format!("the status of ApplyPolicy {name}"), || {
        let api = api.clone();
        let name = name.clone();
        async move {
            let status = serde_json::to_value(api.get(&name).await?)?["status"].clone();
            Ok((status["observedGeneration"] == 1).then_some(()))
        }
    })
    .await?;
    Ok(started.elapsed())
}

#[tokio::test]
async fn leader_fails_over_after_sigkill_and_hands_over_on_sigterm() {
    let test = "leader_fails_over_after_sigkill_and_hands_over_on_sigterm";
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    install_crds(&client).await.unwrap();
    let bin = operator_binary();
    in_scope(&client, "leader", move |scope| async move {
        let dir = tempfile::tempdir()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(1))
            .build()?;
        let a = start(&bin, &scope, dir.path(), "leader-a")?;
        let b = start(&bin, &scope, dir.path(), "leader-b")?;

        // One of the two takes the new Lease; the other stands by.
        let first = poll("one operator to lead", || {
            let (http, a, b) = (&http, &a, &b);
            async move {
                let both_up = claims(http, a).await.is_some() && claims(http, b).await.is_some();
                let now = leaders(http, &[a, b]).await?;
                Ok(now.into_iter().next().filter(|_| both_up))
            }
        })
        .await?;
        let (holder, transitions) = lease(&scope).await?;
        ensure!(holder == first, "the Lease names {holder}, {first} claims to lead");
        let took = policy_status_written(&scope, "before").await?;
        eprintln!("leader {first}: first policy status written {} ms after create", took.as_millis());
        let (mut leader, standby) = if first == a.identity { (a, b) } else { (b, a) };

        // SIGKILL: nothing is released; the standby waits out the lease on its own clock.
        leader.child.kill()?;
        let killed = Instant::now();
        leader.child.wait()?;
        wait_leader(&http, &[&standby], &standby, Duration::from_secs(30)).await?;
        let failover = killed.elapsed();
        eprintln!(
            "SIGKILL failover: {} leads {} ms after {} was killed (lease 15 s, renew deadline 10 s, retry 2 s)",
            standby.identity,
            failover.as_millis(),
            leader.identity
        );
        ensure!(failover < Duration::from_secs(20), "failover took {failover:?}");
        let (holder, after_kill) = lease(&scope).await?;
        ensure!(holder == standby.identity, "the Lease names {holder}");
        ensure!(after_kill == transitions + 1, "leaseTransitions {transitions} → {after_kill}");
        let took = policy_status_written(&scope, "after-kill").await?;
        eprintln!("new leader {}: policy status written {} ms after create", standby.identity, took.as_millis());
        drop(leader);

        // SIGTERM: the leader stops its controllers, releases the Lease and exits 0.
        let c = start(&bin, &scope, dir.path(), "leader-c")?;
        poll("leader-c to stand by", || {
            let (http, c) = (&http, &c);
            async move { Ok((claims(http, c).await == Some(false)).then_some(())) }
        })
        .await?;
        let mut leader = standby;
        let status = Command::new("kill")
            .args(["-TERM", &leader.child.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill -TERM failed");
        let termed = Instant::now();
        wait_leader(&http, &[&leader, &c], &c, Duration::from_secs(30)).await?;
        let handover = termed.elapsed();
        eprintln!(
            "SIGTERM handover: {} leads {} ms after {} got SIGTERM",
            c.identity,
            handover.as_millis(),
            leader.identity
        );
        ensure!(handover < Duration::from_secs(5), "handover took {handover:?}");
        let exit = loop {
            if let Some(exit) = leader.child.try_wait()? {
                break exit;
            }
            ensure!(termed.elapsed() < Duration::from_secs(15), "{} did not exit", leader.identity);
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        ensure!(exit.success(), "{} exited with {exit}", leader.identity);
        let log = std::fs::read_to_string(&leader.log)?;
        ensure!(log.contains("released the leader Lease"), "no release in {}", leader.log.display());
        let (holder, after_term) = lease(&scope).await?;
        ensure!(holder == c.identity, "the Lease names {holder}");
        ensure!(after_term == after_kill + 1, "leaseTransitions {after_kill} → {after_term}");
        policy_status_written(&scope, "after-term").await?;
        drop(c);
        Ok(())
    })
    .await
    .unwrap();
}
