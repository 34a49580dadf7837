//! Cluster mode end to end: three real agent processes (each its own `NODE_NAME` and host
//! root) and the operator against a real API server with Node objects.
//!
//! Skipped (and counted as skipped) without `KUBECONFIG`.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use driftless_e2e::procs::{binary, print_logs, start_agent, start_operator, Agent};
use driftless_e2e::{apply, client_or_skip, in_scope, install_crds, kubelet, poll, Scope};
use k8s_openapi::api::core::v1::{Node, Secret};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const SECRET: &str = "e2e-sup3r-s3cret-value";

async fn report(scope: &Scope, node: &str) -> anyhow::Result<Option<Value>> {
    let api = scope.api("DriftReport")?;
    Ok(api
        .get_opt(&format!("node-{node}"))
        .await?
        .map(|o| serde_json::to_value(o).unwrap_or(Value::Null)))
}

fn result<'a>(report: &'a Value, kind: &str, name: &str) -> Option<&'a Value> {
    report["status"]["policies"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind && r["name"] == name)
}

async fn status(scope: &Scope, kind: &str, name: &str) -> anyhow::Result<Value> {
    let api = scope.api(kind)?;
    Ok(serde_json::to_value(api.get(name).await?)?["status"].clone())
}

fn condition(status: &Value, type_: &str) -> Option<String> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_owned)
}

async fn label_node(client: &kube::Client, node: &str, role: &str) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .patch(
            node,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"role": role}}})),
        )
        .await?;
    Ok(())
}

async fn metrics(port: u16) -> String {
    match reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The whole path of the issue: policies from the API server onto the matching nodes, reports
/// and status back, drift repaired, relabelling, thresholds as one Event, a LogPipeline edit
/// without a lost line, a bad regex refused while the previous version runs, and no secret
/// anywhere it should not be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_take_policies_from_the_api_server() {
    let Some(client) = client_or_skip("agents_take_policies_from_the_api_server").await else {
        return;
    };
    install_crds(&client).await.expect("CRDs");
    let agent_bin = binary("driftless-agent", "driftless");
    let operator_bin = binary("driftless-operator", "driftless-operator");
    in_scope(&client, "cluster-mode", move |scope| async move {
        let dir = tempfile::tempdir()?;
        let outcome = scenario(&scope, &agent_bin, &operator_bin, dir.path()).await;
        scope.delete_nodes().await;
        if outcome.is_err() {
            print_logs(dir.path());
        }
        outcome
    })
    .await
    .expect("cluster mode");
}

async fn scenario(
    scope: &Scope,
    agent_bin: &Path,
    operator_bin: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| scope.name(n)).collect();
    for (name, role) in names.iter().zip(["web", "web", "db"]) {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "role": role,
                "driftless.dev/e2e-run": scope.namespace,
            }},
        }))?;
        nodes.create(&PostParams::default(), &node).await?;
    }
    // Ready Nodes (the rollout skips NotReady ones), as kubelets would keep them.
    let _heartbeat = HeartbeatGuard(kubelet::heartbeat(
        &client,
        names.clone(),
        Default::default(),
    ));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &scope.namespace);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "motd"},
                "stringData": {"token": SECRET},
            }))?,
        )
        .await?;
    let _operator = start_operator(operator_bin, scope, dir, "e2e-operator")?;
    let agents: Vec<Agent> = names
        .iter()
        .map(|n| start_agent(agent_bin, scope, n, dir, None))
        .collect::<anyhow::Result<_>>()?;
    let policy_name = scope.name("motd");
    let ap = scope.object(
        "ApplyPolicy",
        &policy_name,
        json!({
            // Policies are cluster-wide: select only this run's Nodes.
            "nodeSelector": {"matchLabels": {"role": "web", "driftless.dev/e2e-run": scope.namespace}},
            "interval": "3s",
            "secrets": [{"name": "TOKEN", "secretKeyRef": {"name": "motd", "key": "token"}}],
            "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": "welcome ${secret:TOKEN}\n"}}],
        }),
    )?;
    apply(&scope.api("ApplyPolicy")?, &ap).await?;
    // The file appears with the secret on the two matching roots only.
    let expected = format!("welcome {SECRET}\n");
    for agent in &agents[..2] {
        let path = agent.root.join("etc/motd");
        eprintln!("cluster: waiting");
        poll(&format!("{} on {}", path.display(), agent.node), || {
            let path = path.clone();
            let expected = expected.clone();
            async move { Ok((std::fs::read_to_string(&path).ok() == Some(expected)).then_some(())) }
        })
        .await?;
    }
    assert!(
        !agents[2].root.join("etc/motd").exists(),
        "node c does not match"
    );
    // TARGETED 2, IN-SYNC 2, Ready True.
    eprintln!("cluster: waiting for ApplyPolicy status 2/2 Ready");
    poll("ApplyPolicy status 2/2 Ready", || async {
        let s = status(scope, "ApplyPolicy", &policy_name).await?;
        Ok((s["targeted"] == 2
            && s["inSync"] == 2
            && condition(&s, "Ready").as_deref() == Some("True"))
        .then_some(()))
    })
    .await?;
    // Every node has its report.
    for agent in &agents {
        eprintln!("cluster: waiting");
        poll(&format!("the report of {}", agent.node), || async {
            Ok(report(scope, &agent.node)
                .await?
                .filter(|r| r["status"]["summary"].is_object()))
        })
        .await?;
    }
    // A hand-made change is repaired within an interval, and the report shows it corrected.
    let tampered = agents[0].root.join("etc/motd");
    std::fs::write(&tampered, "changed by hand\n")?;
    eprintln!("cluster: waiting for the repaired file and its report item");
    poll("the repaired file and its report item", || async {
        let fixed = std::fs::read_to_string(&tampered).ok() == Some(expected.clone());
        let r = report(scope, &agents[0].node).await?.unwrap_or(Value::Null);
        let seen = r["status"]["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["address"] == "file:/etc/motd" && i["corrected"] == true)
        }) || r["status"]["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty());
        Ok((fixed && seen).then_some(()))
    })
    .await?;
    // Relabelling c makes it take the policy.
    label_node(&client, &names[2], "web").await?;
    let c_motd = agents[2].root.join("etc/motd");
    eprintln!("cluster: waiting for node c takes the policy after relabelling");
    poll("node c takes the policy after relabelling", || async {
        Ok((std::fs::read_to_string(&c_motd).ok() == Some(expected.clone())).then_some(()))
    })
    .await?;
    eprintln!("cluster: waiting for ApplyPolicy status 3/3");
    poll("ApplyPolicy status 3/3", || async {
        let s = status(scope, "ApplyPolicy", &policy_name).await?;
        Ok((s["targeted"] == 3 && s["inSync"] == 3).then_some(()))
    })
    .await?;

    // A FactsPolicy threshold on node a: breached, cleared, breached again = one Event.
    let fact = agents[0].root.join("var/queue");
    std::fs::write(&fact, "50\n")?;
    let fp_name = scope.name("health");
    let fp = scope.object(
        "FactsPolicy",
        &fp_name,
        json!({
            "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": names[0]}},
            "interval": "1s",
            "facts": [{"name": "queue", "file": {"path": "/var/queue"}}],
            "thresholds": [{
                "name": "queue-long", "metric": "driftless_fact", "labels": {"name": "queue"},
                "comparison": "GreaterThan", "value": 10, "severity": "Critical",
            }],
        }),
    )?;
    nodes
        .patch(
            &names[0],
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"kubernetes.io/hostname": names[0]}}})),
        )
        .await?;
    apply(&scope.api("FactsPolicy")?, &fp).await?;
    eprintln!("cluster: waiting for the breach in node a's report");
    poll("the breach in node a's report", || async {
        let r = report(scope, &agents[0].node).await?.unwrap_or(Value::Null);
        Ok(result(&r, "FactsPolicy", &fp_name)
            .filter(|p| p["state"] == "Drifted")
            .map(|_| ()))
    })
    .await?;
    for value in ["1\n", "60\n", "2\n", "70\n"] {
        std::fs::write(&fact, value)?;
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    eprintln!("cluster: waiting for one ThresholdBreached Event with a count");
    let breached = poll("one ThresholdBreached Event with a count", || async {
        let list = events.list(&ListParams::default()).await?;
        let mine: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| {
                e.reason.as_deref() == Some("ThresholdBreached")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref())
                        == Some(names[0].as_str())
            })
            .collect();
        Ok(
            (mine.len() == 1 && mine[0].series.as_ref().is_some_and(|s| s.count >= 3))
                .then(|| mine[0].clone()),
        )
    })
    .await?;
    assert!(breached.note.unwrap_or_default().contains("queue-long"));
    eprintln!("cluster: waiting for FactsPolicy status");
    poll("FactsPolicy status", || async {
        let s = status(scope, "FactsPolicy", &fp_name).await?;
        Ok((s["targeted"] == 1).then_some(()))
    })
    .await?;

    // A LogPipeline on every node; an edit reloads it with no line lost.
    let lp_name = scope.name("app");
    let sink = dir.join("sink");
    let lp = |max_bytes: u64, pattern: &str| -> anyhow::Result<Value> {
        scope.object(
            "LogPipeline",
            &lp_name,
            json!({
                "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": names[0]}},
                "sources": [{"name": "app", "include": ["/var/log/app.log"]}],
                "transforms": [{"exclude": {"field": "message", "pattern": pattern}}],
                "sinks": [{"name": "out", "file": {"directory": sink.display().to_string(), "maxBytes": max_bytes, "raw": true}}],
            }),
        )
    };
    apply(&scope.api("LogPipeline")?, &lp(10 << 20, "^DEBUG")?).await?;
    eprintln!("cluster: waiting for LogPipeline running on node a");
    poll("LogPipeline running on node a", || async {
        let r = report(scope, &agents[0].node).await?.unwrap_or(Value::Null);
        Ok(result(&r, "LogPipeline", &lp_name)
            .filter(|p| p["state"] == "InSync")
            .map(|_| ()))
    })
    .await?;
    let app_log = agents[0].root.join("var/log/app.log");
    let writer = {
        let app_log = app_log.clone();
        std::thread::spawn(move || -> std::io::Result<usize> {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&app_log)?;
            for i in 0..3000 {
                writeln!(file, "line {i:05}")?;
                if i % 100 == 0 {
                    file.flush()?;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            file.flush()?;
            Ok(3000)
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    apply(&scope.api("LogPipeline")?, &lp(20 << 20, "^DEBUG")?).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    // A bad regex: refused on the node, the previous version keeps forwarding.
    apply(&scope.api("LogPipeline")?, &lp(20 << 20, "(unclosed")?).await?;
    eprintln!("cluster: waiting for the bad LogPipeline refused");
    poll("the bad LogPipeline refused", || async {
        let r = report(scope, &agents[0].node).await?.unwrap_or(Value::Null);
        Ok(result(&r, "LogPipeline", &lp_name)
            .filter(|p| p["state"] == "Refused" && p["generation"] == 3)
            .map(|_| ()))
    })
    .await?;
    eprintln!("cluster: waiting for LogPipeline status Stalled");
    poll("LogPipeline status Stalled", || async {
        let s = status(scope, "LogPipeline", &lp_name).await?;
        Ok((condition(&s, "Stalled").as_deref() == Some("True")).then_some(()))
    })
    .await?;
    let written = writer.join().expect("writer thread")?;
    eprintln!("cluster: waiting for every line in the sink");
    let lines = poll("every line in the sink", || async {
        let mut got = Vec::new();
        for entry in std::fs::read_dir(&sink).into_iter().flatten().flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            got.extend(text.lines().map(str::to_owned));
        }
        got.sort();
        got.dedup();
        Ok((got.len() >= written).then_some(got))
    })
    .await?;
    assert_eq!(lines.len(), written, "no line lost, none invented");

    // The secret is in no log, report, Event or metric.
    for agent in &agents {
        let log = std::fs::read_to_string(&agent.process.log)?;
        assert!(!log.contains(SECRET), "{} logs the secret", agent.node);
        assert!(!metrics(agent.port).await.contains(SECRET));
        let r = report(scope, &agent.node).await?.unwrap_or(Value::Null);
        assert!(
            !r.to_string().contains(SECRET),
            "{}'s report holds the secret",
            agent.node
        );
    }
    let all_events = events.list(&ListParams::default()).await?;
    assert!(!serde_json::to_string(&all_events.items)?.contains(SECRET));
    Ok(())
}

/// Stops the heartbeat task when dropped.
struct HeartbeatGuard(tokio::task::JoinHandle<()>);

impl Drop for HeartbeatGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}
