//! Rollout end to end: four real agent processes (each its own `NODE_NAME` and host root) and
//! the operator against a real API server with Node objects kept Ready by a heartbeat.
//!
//! 1. A Canary rollout (1 canary of 4, soak, `maxUnavailable: 1`): the canary first, then one
//!    node at a time, each after the previous one soaked (observed order and timing).
//! 2. A revision whose health probe fails on the canary: `RolledBack`, no other node touched,
//!    the canary back on the previous revision with its file content.
//! 3. The operator killed mid-rollout: a new one continues from the API objects; every node
//!    goes to the new revision exactly once.
//! 4. `kubectl get applypolicies` shows UPDATED and STEP.
//!
//! A second test: the canary is the node labelled for `canary.nodeSelector`, and a FactsPolicy
//! threshold of the gate's severity breached on it (a metric in its textfile directory) fails
//! the gate: `Degraded`, a Warning Event on the policy, no other node touched.
//!
//! Skipped (and counted as skipped) without `KUBECONFIG`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use driftless_e2e::procs::{binary, print_logs, start_agent, start_operator, Agent};
use driftless_e2e::{
    apply, client_or_skip, get_table, in_scope, install_crds, kubelet, poll, Scope,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SOAK_SECONDS: u64 = 6;

/// Answers every HTTP request with 200 (the health probe target).
async fn healthy_endpoint() -> anyhow::Result<u16> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    Ok(port)
}

fn policy(scope: &Scope, name: &str, content: &str, probe: &str) -> anyhow::Result<Value> {
    scope.object(
        "ApplyPolicy",
        name,
        json!({
            "nodeSelector": {"matchLabels": {"role": "app", "driftless.dev/e2e-run": scope.namespace}},
            "interval": "30s",
            "rollout": {
                "strategy": "Canary",
                "maxUnavailable": 1,
                "canary": {
                    "nodes": 1,
                    "soak": format!("{SOAK_SECONDS}s"),
                    "healthCheck": {"httpGet": probe, "timeout": "2s"},
                },
                "autoRollback": true,
            },
            "tasks": [{"name": "conf", "file": {"path": "/etc/app.conf", "content": content}}],
        }),
    )
}

fn read(agent: &Agent) -> String {
    std::fs::read_to_string(agent.root.join("etc/app.conf")).unwrap_or_default()
}

async fn status(scope: &Scope, name: &str) -> anyhow::Result<Value> {
    let api = scope.api("ApplyPolicy")?;
    Ok(serde_json::to_value(api.get(name).await?)?["status"].clone())
}

/// Waits until the policy's `status.rollout.step` is `step`; returns the status.
async fn step(scope: &Scope, name: &str, step: &str) -> anyhow::Result<Value> {
    poll(&format!("rollout {step}"), || async {
        let s = status(scope, name).await?;
        Ok((s["rollout"]["step"] == step).then_some(s))
    })
    .await
}

async fn node_result(scope: &Scope, node: &str, policy: &str) -> anyhow::Result<Value> {
    let api = scope.api("DriftReport")?;
    let Some(report) = api.get_opt(&format!("node-{node}")).await? else {
        return Ok(Value::Null);
    };
    let report = serde_json::to_value(report)?;
    Ok(report["status"]["policies"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|r| r["kind"] == "ApplyPolicy" && r["name"] == policy)
                .cloned()
        })
        .unwrap_or(Value::Null))
}

/// Watches the agents' files until `done` holds: for each node, the times its content changed
/// and to what.
async fn watch_files<F>(
    agents: &[Agent],
    what: &str,
    limit: Duration,
    mut done: F,
) -> anyhow::Result<BTreeMap<String, Vec<(Duration, String)>>>
where
    F: FnMut(&BTreeMap<String, Vec<(Duration, String)>>) -> bool,
{
    let start = Instant::now();
    let mut seen: BTreeMap<String, Vec<(Duration, String)>> = agents
        .iter()
        .map(|a| (a.node.clone(), vec![(Duration::ZERO, read(a))]))
        .collect();
    loop {
        for a in agents {
            let now = read(a);
            let list = seen.entry(a.node.clone()).or_default();
            if list.last().map(|(_, c)| c) != Some(&now) {
                list.push((start.elapsed(), now));
            }
        }
        if done(&seen) {
            return Ok(seen);
        }
        if start.elapsed() > limit {
            anyhow::bail!("timed out waiting for {what}: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_soak_batches_rollback_and_operator_restart() {
    on_fleet(
        "canary_soak_batches_rollback_and_operator_restart",
        "rollout",
        |scope, agent, operator, dir| Box::pin(scenario(scope, agent, operator, dir)),
    )
    .await;
}

type Scenario = for<'a> fn(
    &'a Scope,
    &'a Path,
    &'a Path,
    &'a Path,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + 'a>,
>;

/// Runs `scenario` in a fresh scope with the agent and operator binaries and a temporary
/// directory; deletes the scope's Node objects afterwards and prints the logs on failure.
/// Skipped without `KUBECONFIG`.
async fn on_fleet(test: &str, prefix: &str, scenario: Scenario) {
    let Some(client) = client_or_skip(test).await else {
        return;
    };
    install_crds(&client).await.expect("CRDs");
    let agent_bin = binary("driftless-agent", "driftless");
    let operator_bin = binary("driftless-operator", "driftless-operator");
    in_scope(&client, prefix, move |scope| async move {
        let dir = tempfile::tempdir()?;
        let outcome = scenario(&scope, &agent_bin, &operator_bin, dir.path()).await;
        scope.delete_nodes().await;
        if outcome.is_err() {
            print_logs(dir.path());
        }
        outcome
    })
    .await
    .expect(test);
}

async fn scenario(
    scope: &Scope,
    agent_bin: &Path,
    operator_bin: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = ["n1", "n2", "n3", "n4"]
        .iter()
        .map(|n| scope.name(n))
        .collect();
    for name in &names {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "role": "app",
                "driftless.dev/e2e-run": scope.namespace,
            }},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    let heartbeat = kubelet::heartbeat(&client, names.clone(), Default::default());
    let good = format!("http://127.0.0.1:{}/healthz", healthy_endpoint().await?);
    let bad = format!(
        "http://127.0.0.1:{}/healthz",
        driftless_e2e::procs::free_port()
    );
    let mut operator = start_operator(operator_bin, scope, dir, "operator-1")?;
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| start_agent(agent_bin, scope, n, dir, None))
        .collect::<anyhow::Result<_>>()?;
    let name = scope.name("app");
    let api = scope.api("ApplyPolicy")?;

    // 1. The first revision: canary n1, soak, then n2, n3, n4 one at a time.
    apply(&api, &policy(scope, &name, "v1\n", &good)?).await?;
    let seen = watch_files(
        &agents,
        "v1 on every node",
        Duration::from_secs(180),
        |seen| {
            seen.values()
                .all(|list| list.last().is_some_and(|(_, c)| c == "v1\n"))
        },
    )
    .await?;
    let arrived: Vec<(Duration, &String)> = names
        .iter()
        .map(|n| {
            (
                seen[n]
                    .iter()
                    .find(|(_, c)| c == "v1\n")
                    .expect("every node applied v1")
                    .0,
                n,
            )
        })
        .collect();
    eprintln!("rollout: v1 arrived at {arrived:?}");
    for pair in arrived.windows(2) {
        let gap = pair[1].0.saturating_sub(pair[0].0);
        assert!(
            gap >= Duration::from_secs(SOAK_SECONDS - 1),
            "{} took v1 only {gap:?} after {} (soak {SOAK_SECONDS}s): {arrived:?}",
            pair[1].1,
            pair[0].1
        );
    }
    let s = step(scope, &name, "Complete").await?;
    let rev1 = s["currentRevision"].as_str().unwrap_or_default().to_owned();
    assert_eq!(s["updatedRevision"], rev1.as_str());
    assert_eq!(s["updated"], 4);
    for n in &names {
        let r = node_result(scope, n, &name).await?;
        assert_eq!(r["revision"], rev1.as_str(), "{n}: {r}");
    }
    // kubectl get applypolicies: UPDATED and STEP.
    let table = get_table(&client, &api).await?;
    let columns = table.default_columns();
    assert!(
        columns.contains(&"UPDATED") && columns.contains(&"STEP"),
        "{columns:?}"
    );
    let row = table.row(&name).expect("a row");
    let cell = |c: &str| row.iter().find(|(k, _)| *k == c).map(|(_, v)| (*v).clone());
    assert_eq!(cell("UPDATED"), Some(json!(4)));
    assert_eq!(cell("STEP"), Some(json!("Complete")));

    // 2. A revision whose probe fails: the canary takes it, fails, and is rolled back; no
    //    other node ever sees it.
    apply(&api, &policy(scope, &name, "v2\n", &bad)?).await?;
    let s = step(scope, &name, "RolledBack").await?;
    assert_eq!(s["rollout"]["failedNode"], names[0].as_str(), "{s}");
    assert!(
        s["rollout"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("health check failed"),
        "{s}"
    );
    let degraded = s["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Degraded"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(degraded["status"], "True", "{s}");
    let rev2 = s["updatedRevision"].as_str().unwrap_or_default().to_owned();
    assert_ne!(rev2, rev1);
    poll(
        "the canary back on v1 and its previous revision",
        || async {
            let r = node_result(scope, &names[0], &name).await?;
            Ok((read(&agents[0]) == "v1\n"
                && r["revision"] == rev1.as_str()
                && r["state"] == "InSync")
                .then_some(()))
        },
    )
    .await?;
    // Nothing advances: wait two soaks, the other nodes stay on v1.
    let seen = watch_files(
        &agents,
        "two soaks",
        Duration::from_secs(2 * SOAK_SECONDS),
        |_| false,
    )
    .await
    .err();
    assert!(seen.is_some());
    for a in &agents[1..] {
        assert_eq!(read(a), "v1\n", "{} was touched", a.node);
        let r = node_result(scope, &a.node, &name).await?;
        assert_eq!(r["revision"], rev1.as_str(), "{}: {r}", a.node);
    }

    // 3. A good revision; the operator is killed while the canary soaks, a new one goes on.
    apply(&api, &policy(scope, &name, "v3\n", &good)?).await?;
    watch_files(
        &agents,
        "the canary on v3",
        Duration::from_secs(60),
        |seen| seen[&names[0]].last().is_some_and(|(_, c)| c == "v3\n"),
    )
    .await?;
    operator.kill();
    let _operator2 = start_operator(operator_bin, scope, dir, "operator-2")?;
    let seen = watch_files(
        &agents,
        "v3 on every node",
        Duration::from_secs(180),
        |seen| {
            seen.values()
                .all(|list| list.last().is_some_and(|(_, c)| c == "v3\n"))
        },
    )
    .await?;
    for (node, list) in &seen {
        let contents: Vec<&str> = list.iter().map(|(_, c)| c.as_str()).collect();
        assert!(
            contents == ["v1\n", "v3\n"] || contents == ["v3\n"],
            "{node} went {contents:?}: skipped or applied twice"
        );
    }
    let s = step(scope, &name, "Complete").await?;
    assert_ne!(s["currentRevision"], rev1.as_str());
    assert_ne!(s["currentRevision"], rev2.as_str());
    heartbeat.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_by_label_and_a_breached_threshold_fail_the_gate_with_an_event() {
    on_fleet(
        "canary_by_label_and_a_breached_threshold_fail_the_gate_with_an_event",
        "gate",
        |scope, agent, operator, dir| Box::pin(threshold_scenario(scope, agent, operator, dir)),
    )
    .await;
}

async fn threshold_scenario(
    scope: &Scope,
    agent_bin: &Path,
    operator_bin: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = ["g1", "g2", "g3"].iter().map(|n| scope.name(n)).collect();
    for (i, name) in names.iter().enumerate() {
        let mut labels = json!({"role": "gate", "driftless.dev/e2e-run": scope.namespace});
        if i == 2 {
            labels["driftless.dev/canary"] = json!("true");
        }
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    let heartbeat = kubelet::heartbeat(&client, names.clone(), Default::default());
    let _operator = start_operator(operator_bin, scope, dir, "operator-1")?;
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| start_agent(agent_bin, scope, n, dir, None))
        .collect::<anyhow::Result<_>>()?;
    let selector =
        json!({"matchLabels": {"role": "gate", "driftless.dev/e2e-run": scope.namespace}});
    // Each node's health metric: 0 everywhere for now.
    for a in &agents {
        let d = a.root.join("var/lib/health");
        std::fs::create_dir_all(&d)?;
        std::fs::write(d.join("app.prom"), "app_broken 0\n")?;
    }
    let facts = scope.object(
        "FactsPolicy",
        &scope.name("health"),
        json!({
            "nodeSelector": selector,
            "interval": "2s",
            "collectors": {"enable": ["textfile"], "textfile": {"directories": ["/var/lib/health"]}},
            "thresholds": [{"name": "app-broken", "metric": "app_broken",
                            "comparison": "GreaterThan", "value": 0, "severity": "Critical"}],
        }),
    )?;
    apply(&scope.api("FactsPolicy")?, &facts).await?;
    let name = scope.name("gated");
    let api = scope.api("ApplyPolicy")?;
    let gated = |content: &str| {
        scope.object(
            "ApplyPolicy",
            &name,
            json!({
                "nodeSelector": selector,
                "interval": "30s",
                "rollout": {
                    "strategy": "Canary",
                    "maxUnavailable": 1,
                    "canary": {
                        "nodes": 1,
                        "nodeSelector": {"matchLabels": {"driftless.dev/canary": "true"}},
                        "soak": format!("{SOAK_SECONDS}s"),
                        "healthCheck": {"thresholdSeverity": "Warning", "timeout": "2s"},
                    },
                },
                "tasks": [{"name": "conf", "file": {"path": "/etc/app.conf", "content": content}}],
            }),
        )
    };
    // v1 rolls out everywhere, the labelled node (the last by name) first.
    apply(&api, &gated("v1\n")?).await?;
    let seen = watch_files(
        &agents,
        "v1 on every node",
        Duration::from_secs(180),
        |seen| {
            seen.values()
                .all(|list| list.last().is_some_and(|(_, c)| c == "v1\n"))
        },
    )
    .await?;
    let first = seen
        .iter()
        .min_by_key(|(_, list)| list.iter().find(|(_, c)| c == "v1\n").map(|(t, _)| *t))
        .map(|(n, _)| n.clone());
    assert_eq!(first.as_deref(), Some(names[2].as_str()), "{seen:?}");
    step(scope, &name, "Complete").await?;
    // The canary's metric breaches the threshold; v2 reaches the canary and fails its gate.
    std::fs::write(
        agents[2].root.join("var/lib/health/app.prom"),
        "app_broken 1\n",
    )?;
    apply(&api, &gated("v2\n")?).await?;
    let s = step(scope, &name, "Degraded").await?;
    assert_eq!(s["rollout"]["failedNode"], names[2].as_str(), "{s}");
    let message = s["rollout"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("FactsPolicy threshold(s) breached") && message.contains("app-broken"),
        "{s}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event = poll("a HealthGateFailed Event", || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list.items.into_iter().find(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name.as_str())
                && e.reason.as_deref() == Some("HealthGateFailed")
        }))
    })
    .await?;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("app-broken"),
        "{event:?}"
    );
    for a in &agents[..2] {
        assert_eq!(read(a), "v1\n", "{} was touched", a.node);
    }
    let _ = events
        .delete(
            &event.metadata.name.clone().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await;
    heartbeat.abort();
    Ok(())
}
