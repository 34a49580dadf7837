//! A WebAssembly plugin task in cluster mode: an ApplyPolicy taken from a real API server whose
//! task is the Rust `motd` example plugin (pinned by digest), applied by a real agent from its
//! plugin directory, repaired after a change by hand, and counted in sync in the policy's status.
//!
//! Skipped (and counted as skipped) without `KUBECONFIG`, or when the example plugins do not
//! build here (`.ci/tools/plugins.sh` installs their toolchains).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use driftless_e2e::procs::{binary, print_logs, start_agent_with, start_operator};
use driftless_e2e::{
    apply, client_or_skip, in_scope, install_crds, kubelet, poll, repo_root, Scope,
};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::json;
use sha2::Digest as _;

const TEST: &str = "plugin_tasks_run_in_cluster_mode";

/// The example plugins, built into the test's target directory; `None` with a skip line when a
/// toolchain is missing.
fn examples() -> Option<PathBuf> {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-plugins");
    let run = Command::new(repo_root().join("plugins/build.sh"))
        .arg(&out)
        .output();
    match run {
        Ok(r) if r.status.success() => Some(out),
        Ok(r) => {
            let why = String::from_utf8_lossy(&r.stderr).replace('\n', " ");
            let line = format!("skipped: {TEST}: the example plugins do not build here: {why}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
        Err(e) => {
            let line = format!("skipped: {TEST}: plugins/build.sh: {e}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
            None
        }
    }
}

#[tokio::test]
async fn plugin_tasks_run_in_cluster_mode() {
    let Some(client) = client_or_skip(TEST).await else {
        return;
    };
    let Some(examples) = examples() else {
        return;
    };
    install_crds(&client).await.expect("CRDs");
    let agent_bin = binary("driftless-agent", "driftless");
    let operator_bin = binary("driftless-operator", "driftless-operator");
    in_scope(&client, "cluster-plugins", move |scope| async move {
        let dir = tempfile::tempdir()?;
        let outcome = scenario(&scope, &agent_bin, &operator_bin, &examples, dir.path()).await;
        scope.delete_nodes().await;
        if outcome.is_err() {
            print_logs(dir.path());
        }
        outcome
    })
    .await
    .expect("plugin task in cluster mode");
}

async fn scenario(
    scope: &Scope,
    agent_bin: &Path,
    operator_bin: &Path,
    examples: &Path,
    dir: &Path,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let node = scope.name("p");
    let nodes: Api<Node> = Api::all(client.clone());
    let object: Node = serde_json::from_value(json!({
        "metadata": {"name": node, "labels": {"driftless.dev/e2e-run": scope.namespace}},
    }))?;
    nodes.create(&PostParams::default(), &object).await?;
    let heartbeat = kubelet::heartbeat(&client, vec![node.clone()], Default::default());
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    std::fs::copy(examples.join("motd.wasm"), plugins.join("motd.wasm"))?;
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(
        plugins.join("motd.wasm"),
    )?));
    let cache = dir.join("plugin-cache");
    let _operator = start_operator(operator_bin, scope, dir, "e2e-operator")?;
    let agent = start_agent_with(
        agent_bin,
        scope,
        &node,
        dir,
        None,
        &[
            ("DRIFTLESS_PLUGIN_DIR", &plugins),
            ("DRIFTLESS_PLUGIN_CACHE", &cache),
        ],
    )?;
    let policy = scope.name("motd");
    let ap = scope.object(
        "ApplyPolicy",
        &policy,
        json!({
            "nodeSelector": {"matchLabels": {"driftless.dev/e2e-run": scope.namespace}},
            "interval": "3s",
            "tasks": [{"name": "motd", "plugin": {
                "name": "motd",
                "sha256": format!("sha256:{digest}"),
                "config": {"path": "/etc/motd", "text": "from the cluster\n"},
                "grants": {"write": ["/etc"]},
            }}],
        }),
    )?;
    apply(&scope.api("ApplyPolicy")?, &ap).await?;
    let path = agent.root.join("etc/motd");
    holds("the plugin's file on the node", &path, "from the cluster\n").await?;
    // Changed by hand: the plugin's plan sees it and the next interval repairs it.
    std::fs::write(&path, "changed by hand\n")?;
    holds("the repaired file", &path, "from the cluster\n").await?;
    poll("ApplyPolicy status 1/1 in sync", || async {
        let status = scope.api("ApplyPolicy")?.get_status(&policy).await?;
        let s = status.data.get("status").cloned().unwrap_or_default();
        Ok((s["targeted"] == 1 && s["inSync"] == 1).then_some(()))
    })
    .await?;
    heartbeat.abort();
    Ok(())
}

/// Waits until the file at `path` holds `text`.
async fn holds(what: &str, path: &Path, text: &str) -> anyhow::Result<()> {
    poll(what, || async {
        Ok((std::fs::read_to_string(path).ok().as_deref() == Some(text)).then_some(()))
    })
    .await
}
