//! Least privilege of the node agent, proven on a real API server: the chart's agent
//! ServiceAccount, RBAC and ValidatingAdmissionPolicy (rendered by the real `helm`) are applied,
//! and one real agent process runs with the ServiceAccount token of a Pod bound to node A, as
//! the DaemonSet's pod would. The agent does its work (a file from an ApplyPolicy that uses a
//! Secret, its report `node-A`) with only those grants; the same token is refused when it
//! writes node B's report or an Event about Node B; and every call the agent made is in
//! `driftless_crds::rbac::AGENT_API_CALLS`. That the chart grants nothing beyond that table is
//! checked by the chart tests (`e2e/tests/chart.rs`).
//!
//! Skipped without `KUBECONFIG` (`driftless_e2e::client_or_skip`) and without `helm` (env
//! `HELM`, `PATH` or the directory `.ci/install-tools.sh` installs into).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, ensure, Context as _};
use driftless_crds::rbac::{agent_allows, AGENT_API_CALLS, NODE_EVENTS_NAMESPACE};
use driftless_e2e::identity::{
    api_for, delete_rendered, find_helm, name_of, render, skip, token_client, token_kubeconfig,
    Created, Process,
};
use driftless_e2e::procs::{binary, start_operator};
use driftless_e2e::{
    api_error, apply, client_or_skip, in_scope, install_crds, kind, now, poll, Scope, RUN_LABEL,
};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Node, Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

/// The Secret's value: must reach the file and nothing else.
const SECRET: &str = "e2e-rbac-s3cret-value";
/// Field manager of the agent's writes (what the agent itself uses).
const AGENT_MANAGER: &str = "driftless-agent";
/// The chart templates that make up the agent's identity and grants.
const TEMPLATES: [&str; 3] = [
    "templates/agent-serviceaccount.yaml",
    "templates/agent-rbac.yaml",
    "templates/agent-admission.yaml",
];

/// An agent holding node A's credentials: its writes are refused for node B and allowed for
/// node A; the real agent does its job with exactly the chart's grants, and every call it made
/// is in the call table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_token_is_held_to_its_own_node() {
    const TEST: &str = "agent_token_is_held_to_its_own_node";
    let Some(client) = client_or_skip(TEST).await else {
        return;
    };
    let Some(helm) = find_helm() else {
        skip(
            TEST,
            "helm not found in $HELM, PATH or the tools dir (run .ci/install-tools.sh)",
        );
        return;
    };
    install_crds(&client).await.expect("CRDs");
    let agent_bin = binary("driftless-agent", "driftless");
    let operator_bin = binary("driftless-operator", "driftless-operator");
    in_scope(&client, "cluster-rbac", move |scope| async move {
        let dir = tempfile::tempdir()?;
        let created = std::sync::Arc::new(std::sync::Mutex::new(Created::default()));
        // A task, so that a panic in the scenario still reaches the cleanup below.
        let outcome = tokio::spawn({
            let (scope, created, path) = (scope.clone(), created.clone(), dir.path().to_owned());
            async move { scenario(&scope, &helm, &agent_bin, &operator_bin, &path, &created).await }
        })
        .await;
        let cleanup = clean_up(&scope, &created).await;
        let log = dir.path().join("agent.log");
        let failed = !matches!(outcome, Ok(Ok(())));
        if failed {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {}:", log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        match outcome {
            Ok(result) => result.and(cleanup),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(err.into()),
        }
    })
    .await
    .expect("agent least privilege");
}

/// Deletes the cluster-scoped objects, the Role and RoleBinding in `default`, the Nodes and
/// the Events about them; the namespace (Pod, Secret, reports, ...) goes with the scope.
async fn clean_up(scope: &Scope, created: &std::sync::Mutex<Created>) -> anyhow::Result<()> {
    let (objects, nodes) = {
        let created = created.lock().map_err(|_| anyhow!("poisoned"))?;
        (created.objects.clone(), created.nodes.clone())
    };
    let client = &scope.client;
    // Bindings and the policy binding first, so nothing is left half-granted.
    let mut problems = delete_rendered(client, &objects).await;
    let events: Api<Event> = Api::namespaced(client.clone(), NODE_EVENTS_NAMESPACE);
    if let Ok(list) = events.list(&ListParams::default()).await {
        for event in list.items {
            let about = event.regarding.as_ref().and_then(|r| r.name.clone());
            if about.is_some_and(|n| nodes.contains(&n)) {
                if let Some(name) = event.metadata.name {
                    let _ = events.delete(&name, &DeleteParams::default()).await;
                }
            }
        }
    }
    let node_api: Api<Node> = Api::all(client.clone());
    for node in &nodes {
        match node_api.delete(node, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if api_error(&e).is_some_and(|s| s.code == 404) => {}
            Err(e) => problems.push(format!("Node {node}: {e}")),
        }
    }
    ensure!(problems.is_empty(), "cleanup: {}", problems.join("; "));
    Ok(())
}

async fn scenario(
    scope: &Scope,
    helm: &Path,
    agent_bin: &Path,
    operator_bin: &Path,
    dir: &Path,
    created: &std::sync::Mutex<Created>,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let ns = scope.namespace.clone();
    // Cluster-scoped names are unique per run: the release name holds the namespace's suffix.
    let suffix = ns.rsplit('-').next().unwrap_or("x");
    let release = format!("rbac-{suffix}");

    // The chart's agent ServiceAccount, RBAC and admission policy.
    let docs = render(helm, &release, &ns, &TEMPLATES)?;
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for expected in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        ensure!(
            kinds.contains(&expected),
            "the chart renders no {expected}: {kinds:?}"
        );
    }
    let service_account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .map(|d| name_of(d).to_owned())
        .context("no ServiceAccount")?;
    let policy_name = docs
        .iter()
        .find(|d| d["kind"] == "ValidatingAdmissionPolicy")
        .map(|d| name_of(d).to_owned())
        .context("no ValidatingAdmissionPolicy")?;
    for mut doc in docs {
        doc["metadata"]["labels"][RUN_LABEL] = json!(ns);
        created
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .objects
            .push(doc.clone());
        let api = api_for(&client, &doc).await?;
        apply(&api, &doc).await?;
    }
    eprintln!("cluster_rbac: applied the chart's agent objects of release {release}");

    // Nodes A and B; a Pod bound to A (no kubelet: it stays Pending, which is enough for a
    // token that names the node).
    let node_a = scope.name("a");
    let node_b = scope.name("b");
    let nodes: Api<Node> = Api::all(client.clone());
    for node in [&node_a, &node_b] {
        created
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .nodes
            .push(node.clone());
        let object: Node = serde_json::from_value(json!({
            "metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node,
                RUN_LABEL: ns,
            }},
        }))?;
        nodes.create(&PostParams::default(), &object).await?;
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "agent", "labels": {RUN_LABEL: ns}},
        "spec": {
            "serviceAccountName": service_account,
            "nodeName": node_a,
            // Nodes without a kubelet turn unreachable; the Pod (and so the token) must stay.
            "tolerations": [{"operator": "Exists"}],
            "containers": [{"name": "agent", "image": "example.invalid/driftless-agent:none"}],
        },
    }))?;
    let pod = pods.create(&PostParams::default(), &pod).await?;
    let pod_uid = pod.metadata.uid.context("the Pod has no uid")?;

    // The ServiceAccount token of that Pod, as the kubelet would mount it.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {
            "audiences": [],
            "expirationSeconds": 3600,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "agent", "uid": pod_uid},
        },
    }))?;
    let token: TokenRequest = accounts
        .create_subresource("token", &service_account, &PostParams::default(), &request)
        .await
        .context("TokenRequest")?;
    let token = token.status.context("no token in the TokenRequest")?.token;
    let kubeconfig = dir.join("agent.kubeconfig");
    token_kubeconfig(&token, "agent", &kubeconfig)?;
    let agent = token_client(&kubeconfig).await?;

    // Wait until RBAC and the admission policy are in force: a dry-run write of node B's
    // report must be refused by the policy (dry runs go through admission, and change nothing).
    let reports_kind = kind("DriftReport")?;
    let agent_reports: Api<DynamicObject> =
        Api::namespaced_with(agent.clone(), &ns, &reports_kind.resource);
    let report_b = report_object(&reports_kind.resource.api_version, &node_b);
    let own_report_message = format!(
        "the agent on node {node_a} may write only the DriftReport node-{node_a} labelled \
         driftless.dev/node={node_a}"
    );
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::apply(AGENT_MANAGER)
    };
    eprintln!("cluster_rbac: waiting for the admission policy {policy_name} to be in force");
    poll("the admission policy to refuse node B's report", || async {
        match agent_reports
            .patch(
                &format!("node-{node_b}"),
                &dry_run,
                &Patch::Apply(&report_b),
            )
            .await
        {
            Err(e) => Ok(api_error(&e)
                .is_some_and(|s| s.code == 403 && s.message.contains(&own_report_message))
                .then_some(())),
            Ok(_) => Ok(None),
        }
    })
    .await?;

    // (1) One real agent with only that token: its file (from a Secret it may only `get`) and
    // its report.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "motd", "labels": {RUN_LABEL: ns}},
                "stringData": {"token": SECRET},
            }))?,
        )
        .await?;
    let root = dir.join("root");
    let state = dir.join("state");
    for d in [root.join("etc"), state.clone()] {
        std::fs::create_dir_all(&d)?;
    }
    let port = driftless_e2e::procs::free_port();
    let log = dir.join("agent.log");
    let _agent_process = Process(
        Command::new(agent_bin)
            .args(["--log-format", "text", "agent", "--kubernetes", "--root"])
            .arg(&root)
            .arg("--state-dir")
            .arg(&state)
            .arg("--audit-spool")
            .arg(state.join("audit"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NODE_NAME", &node_a)
            .env("POD_NAMESPACE", &ns)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("DRIFTLESS_REPORT_INTERVAL_SECONDS", "10")
            .env("DRIFTLESS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting driftless agent")?,
    );
    // The operator (admin credentials) assigns node A the policy's revision, as in a cluster;
    // node A stays Ready the way a kubelet keeps it.
    let heartbeat =
        driftless_e2e::kubelet::heartbeat(&client, vec![node_a.clone()], Default::default());
    let _heartbeat = AbortOnDrop(heartbeat);
    let _operator = start_operator(operator_bin, scope, dir, "operator")?;
    let ap_name = scope.name("motd");
    let ap = scope.object(
        "ApplyPolicy",
        &ap_name,
        json!({
            "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node_a}},
            "interval": "5s",
            "secrets": [{"name": "TOKEN", "secretKeyRef": {"name": "motd", "key": "token"}}],
            "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": "welcome ${secret:TOKEN}\n"}}],
        }),
    )?;
    apply(&scope.api("ApplyPolicy")?, &ap).await?;
    let motd = root.join("etc/motd");
    let expected = format!("welcome {SECRET}\n");
    eprintln!("cluster_rbac: waiting for {}", motd.display());
    poll("the agent's file with the secret", || async {
        Ok(
            (std::fs::read_to_string(&motd).ok().as_deref() == Some(expected.as_str()))
                .then_some(()),
        )
    })
    .await?;
    let reports = scope.api("DriftReport")?;
    eprintln!("cluster_rbac: waiting for the report node-{node_a}");
    let report = poll("the report of node A with the policy", || async {
        let Some(report) = reports.get_opt(&format!("node-{node_a}")).await? else {
            return Ok(None);
        };
        let report = serde_json::to_value(report)?;
        let listed = report["status"]["policies"].as_array().is_some_and(|p| {
            p.iter()
                .any(|r| r["kind"] == "ApplyPolicy" && r["name"] == ap_name.as_str())
        });
        Ok(listed.then_some(report))
    })
    .await?;
    ensure!(
        report["metadata"]["labels"]["driftless.dev/node"] == node_a.as_str(),
        "the report carries its node label: {}",
        report["metadata"]
    );

    // (2) The same credentials, used by hand: node B's report and Events about Node B are
    // refused by the admission policy, an Event about Node A is allowed.
    let refused = agent_reports
        .patch(
            &format!("node-{node_b}"),
            &PatchParams::apply(AGENT_MANAGER),
            &Patch::Apply(&report_b),
        )
        .await;
    expect_forbidden(
        refused.map(|_| ()),
        &own_report_message,
        "create node B's report",
    )?;
    // node B's report as its own agent would have created it; then node A's agent writes its
    // status.
    let mut admin_b = report_b.clone();
    scope.adopt(&mut admin_b)?;
    apply(&reports, &admin_b).await?;
    let status_b = json!({
        "apiVersion": reports_kind.resource.api_version,
        "kind": "DriftReport",
        "metadata": {"name": format!("node-{node_b}")},
        "status": {"summary": {"status": "InSync", "checkedAt": now()}},
    });
    let refused = agent_reports
        .patch_status(
            &format!("node-{node_b}"),
            &PatchParams::apply(AGENT_MANAGER),
            &Patch::Apply(&status_b),
        )
        .await;
    expect_forbidden(
        refused.map(|_| ()),
        &own_report_message,
        "write node B's report status",
    )?;

    let agent_events: Api<Event> = Api::namespaced(agent.clone(), NODE_EVENTS_NAMESPACE);
    let events_message =
        format!("the agent on node {node_a} may write only Events regarding its own Node {node_a}");
    let refused = agent_events
        .create(&PostParams::default(), &event_about(&node_b)?)
        .await;
    expect_forbidden(
        refused.map(|_| ()),
        &events_message,
        "an Event about Node B",
    )?;
    let allowed = agent_events
        .create(&PostParams::default(), &event_about(&node_a)?)
        .await
        .context("an Event about its own Node A must be allowed")?;
    ensure!(allowed.metadata.name.is_some(), "the Event was created");

    // (3) Every call the agent made is in the call table, and the API server refused none.
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await?
        .text()
        .await?;
    let calls = kube_requests(&text);
    ensure!(
        !calls.is_empty(),
        "no driftless_kube_requests_total in /metrics:\n{text}"
    );
    for (verb, resource) in &calls {
        let (plural, group) = resource.split_once('.').unwrap_or((resource.as_str(), ""));
        ensure!(
            agent_allows(group, plural, verb),
            "the agent made {verb} {resource}, which is not in AGENT_API_CALLS"
        );
    }
    for (verb, resource) in [
        ("list", "applypolicies.driftless.dev"),
        ("watch", "applypolicies.driftless.dev"),
        ("list", "nodes"),
        ("get", "secrets"),
        ("patch", "driftreports.driftless.dev"),
        ("patch", "driftreports/status.driftless.dev"),
    ] {
        ensure!(
            calls.contains(&(verb.to_owned(), resource.to_owned())),
            "the agent never made {verb} {resource}; it made {calls:?}"
        );
    }
    eprintln!(
        "cluster_rbac: the agent's calls {calls:?} are all in AGENT_API_CALLS ({} entries)",
        AGENT_API_CALLS.len()
    );
    let agent_log = std::fs::read_to_string(&log)?;
    for needle in ["403", "forbidden", "the agent does not make this request"] {
        if let Some(line) = agent_log
            .lines()
            .find(|l| l.to_lowercase().contains(needle))
        {
            bail!("the agent was refused ({needle}): {line}");
        }
    }
    ensure!(!agent_log.contains(SECRET), "the agent logs the secret");
    Ok(())
}

/// The DriftReport an agent on `node` writes (metadata and spec).
fn report_object(api_version: &str, node: &str) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "DriftReport",
        "metadata": {
            "name": format!("node-{node}"),
            "labels": {"driftless.dev/node": node},
        },
        "spec": {"target": {"kind": "Node", "name": node}},
    })
}

/// An events.k8s.io Event about the Node `node`, as the agent writes them.
fn event_about(node: &str) -> anyhow::Result<Event> {
    Ok(serde_json::from_value(json!({
        "metadata": {"generateName": "driftless-e2e-rbac-"},
        "eventTime": chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "reportingController": "driftless.dev/agent",
        "reportingInstance": "driftless-e2e",
        "action": "Apply",
        "reason": "ApplyFailed",
        "type": "Warning",
        "note": "written by the e2e test",
        "regarding": {"apiVersion": "v1", "kind": "Node", "name": node},
    }))?)
}

/// `Ok` when `result` is the API server's 403 with `message` in it.
fn expect_forbidden(
    result: Result<(), kube::Error>,
    message: &str,
    what: &str,
) -> anyhow::Result<()> {
    match result {
        Ok(()) => bail!("{what}: allowed, expected 403 Forbidden"),
        Err(err) => {
            let status = api_error(&err).with_context(|| format!("{what}: {err}"))?;
            ensure!(
                status.code == 403 && status.message.contains(message),
                "{what}: expected 403 with {message:?}, got {} {}",
                status.code,
                status.message
            );
            eprintln!("cluster_rbac: {what}: 403 {}", status.message);
            Ok(())
        }
    }
}

/// Every (verb, resource) of `driftless_kube_requests_total` in a Prometheus text exposition.
fn kube_requests(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("driftless_kube_requests_total{") else {
            continue;
        };
        let Some((labels, _)) = rest.split_once('}') else {
            continue;
        };
        let mut verb = String::new();
        let mut resource = String::new();
        for pair in labels.split(',') {
            if let Some((key, value)) = pair.split_once('=') {
                let value = value.trim_matches('"').to_owned();
                match key.trim() {
                    "verb" => verb = value,
                    "resource" => resource = value,
                    _ => {}
                }
            }
        }
        out.push((verb, resource));
    }
    out.sort();
    out.dedup();
    out
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
