//! Running a component with exactly the chart's grants: render its ServiceAccount and RBAC
//! with the real `helm`, apply them, and give the process a kubeconfig holding only that
//! ServiceAccount's token (`tests/cluster_rbac.rs`, `tests/operator_rbac.rs`).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{anyhow, ensure, Context as _};
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::Scope as ResourceScope;
use kube::{Client, Config};
use serde_json::{json, Value};

use crate::{api_error, repo_root};

/// `helm` from `$HELM`, `PATH` or the directory `.ci/install-tools.sh` installs into.
pub fn find_helm() -> Option<PathBuf> {
    if let Some(helm) = std::env::var_os("HELM") {
        return Some(PathBuf::from(helm)).filter(|h| h.is_file());
    }
    let tools = match std::env::var_os("DRIFTLESS_TOOLS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/driftless/tools")),
    };
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(tools.map(|t| t.join("bin")))
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file())
}

/// Prints `skipped: <test>: <reason>` straight to stderr (CI counts it as a skip).
pub fn skip(test: &str, reason: &str) {
    let line = format!("skipped: {test}: {reason}\n");
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chart's `templates` for release `release` in `namespace`, as `helm template` renders
/// them for the oldest supported Kubernetes.
pub fn render(
    helm: &Path,
    release: &str,
    namespace: &str,
    templates: &[&str],
) -> anyhow::Result<Vec<Value>> {
    let chart = repo_root().join("charts").join("driftless");
    let mut command = Command::new(helm);
    command.arg("template").arg(release).arg(&chart).args([
        "--namespace",
        namespace,
        "--kube-version",
        "1.33.0",
    ]);
    for template in templates {
        command.args(["--show-only", template]);
    }
    let out = command.output().context("running helm template")?;
    ensure!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).context("helm prints UTF-8")?;
    driftless_crds::yaml::parse_yaml(&text).map_err(|err| anyhow!("helm rendered {err}"))
}

/// The API of a rendered object (namespaced in its own namespace or cluster-wide).
pub async fn api_for(client: &Client, object: &Value) -> anyhow::Result<Api<DynamicObject>> {
    let api_version = object["apiVersion"].as_str().context("no apiVersion")?;
    let kind = object["kind"].as_str().context("no kind")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovery of {api_version} {kind}"))?;
    Ok(match caps.scope {
        ResourceScope::Cluster => Api::all_with(client.clone(), &resource),
        ResourceScope::Namespaced => {
            let ns = object["metadata"]["namespace"]
                .as_str()
                .with_context(|| format!("the {kind} has no namespace"))?;
            Api::namespaced_with(client.clone(), ns, &resource)
        }
    })
}

/// `metadata.name` of a rendered object.
pub fn name_of(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

/// A kubeconfig for the API server of `KUBECONFIG` that authenticates with `token`, as `user`.
pub fn token_kubeconfig(token: &str, user: &str, path: &Path) -> anyhow::Result<()> {
    let admin = Kubeconfig::read().context("reading KUBECONFIG")?;
    let context_name = admin
        .current_context
        .clone()
        .context("the kubeconfig has no current-context")?;
    let cluster_name = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .map(|c| c.cluster.clone())
        .context("the current context names no cluster")?;
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == cluster_name)
        .and_then(|c| c.cluster.as_ref())
        .context("the current cluster is not in the kubeconfig")?;
    let config = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": serde_json::to_value(cluster)?}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": user, "context": {"cluster": "e2e", "user": user}}],
        "current-context": user,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&config)?)?;
    Ok(())
}

/// A client that authenticates as the kubeconfig at `path` says.
pub async fn token_client(path: &Path) -> anyhow::Result<Client> {
    let kubeconfig = Kubeconfig::read_from(path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// What the cleanup must delete outside the test's namespace.
#[derive(Default)]
pub struct Created {
    /// Rendered objects applied outside the test's namespace.
    pub objects: Vec<Value>,
    /// Node objects.
    pub nodes: Vec<String>,
}

/// Deletes rendered `objects` in reverse order (bindings before what they bind); a missing one
/// is fine. Returns what could not be deleted.
pub async fn delete_rendered(client: &Client, objects: &[Value]) -> Vec<String> {
    let mut problems = Vec::new();
    for object in objects.iter().rev() {
        let result = match api_for(client, object).await {
            Ok(api) => api
                .delete(name_of(object), &DeleteParams::default())
                .await
                .map(|_| ())
                .or_else(|e| match api_error(&e) {
                    Some(s) if s.code == 404 => Ok(()),
                    _ => Err(anyhow::Error::from(e)),
                }),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            problems.push(format!("{} {}: {err:#}", object["kind"], name_of(object)));
        }
    }
    problems
}
