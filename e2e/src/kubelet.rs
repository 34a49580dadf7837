//! A stand-in for the kubelet where no node can run pods: it binds the pods of a Job to a Node
//! object and reports their containers as exited, so the real Job controller of
//! kube-controller-manager finishes the Job the way it would on a cluster. KWOK does the same
//! for whole fleets.
//!
//! Assumptions: kube-controller-manager runs its Job controller next to the API server (the
//! pods are its creation). [`job_controller_or_skip`] tells a test whether one answers.

use std::time::Duration;

use anyhow::{bail, Context as _};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// The Node the stand-in binds pods to.
pub const NODE: &str = "driftless-e2e-kubelet";

async fn ensure_node(client: &Client) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"driftless.dev/e2e-kubelet": "true"}},
    });
    nodes
        .patch(
            NODE,
            &PatchParams::apply(crate::FIELD_MANAGER),
            &Patch::Apply(&node),
        )
        .await
        .context("creating the stand-in Node")?;
    Ok(())
}

/// The pods of a Job (label `batch.kubernetes.io/job-name`), waiting up to `wait` for at least
/// one to exist.
pub async fn job_pods(client: &Client, job: &Job, wait: Duration) -> anyhow::Result<Vec<Pod>> {
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let name = job.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("batch.kubernetes.io/job-name={name}");
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        if !list.items.is_empty() {
            return Ok(list.items);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no pod of Job {namespace}/{name} within {wait:?}: is kube-controller-manager (its Job controller) running?");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs every pod of `job` to the end on the stand-in node: bound, then every container
/// terminated with `exit_code` (0: the Job succeeds; otherwise it fails once its backoff limit
/// is used up).
pub async fn finish_job(client: &Client, job: &Job, exit_code: i32) -> anyhow::Result<()> {
    ensure_node(client).await?;
    let namespace = job.metadata.namespace.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    for pod in job_pods(client, job, Duration::from_secs(30)).await? {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        if matches!(phase.as_deref(), Some("Succeeded" | "Failed")) {
            continue;
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
        {
            let binding = json!({
                "apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": NODE},
            });
            let request = http::Request::post(format!(
                "/api/v1/namespaces/{namespace}/pods/{name}/binding"
            ))
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&binding)?)?;
            client
                .request_text(request)
                .await
                .with_context(|| format!("binding pod {namespace}/{name}"))?;
        }
        pods.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&exited(&pod, exit_code)),
        )
        .await
        .with_context(|| format!("reporting pod {namespace}/{name} exited"))?;
    }
    Ok(())
}

/// The status of a pod whose init containers exited 0 and whose containers exited `code`.
fn exited(pod: &Pod, code: i32) -> serde_json::Value {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let spec = pod.spec.clone().unwrap_or_default();
    let status = |c: &k8s_openapi::api::core::v1::Container, code: i32| {
        json!({
            "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
            "ready": false, "restartCount": 0, "started": false,
            "state": {"terminated": {
                "exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                "startedAt": now, "finishedAt": now,
            }},
        })
    };
    let init: Vec<_> = spec
        .init_containers
        .unwrap_or_default()
        .iter()
        .map(|c| status(c, 0))
        .collect();
    let main: Vec<_> = spec.containers.iter().map(|c| status(c, code)).collect();
    json!({"status": {
        "phase": if code == 0 { "Succeeded" } else { "Failed" },
        "startTime": now,
        "initContainerStatuses": init,
        "containerStatuses": main,
    }})
}

/// Whether a Job controller answers: a throw-away Job in `namespace` gets a pod within 20 s.
/// `Err` with the reason when it does not, for a test to print as its skip line.
pub async fn job_controller_or_skip(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let probe: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"generateName": "job-controller-probe-"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": "probe"}],
        }}},
    }))?;
    let created = jobs.create(&PostParams::default(), &probe).await?;
    let answered = job_pods(client, &created, Duration::from_secs(20)).await;
    let name = created.metadata.name.clone().unwrap_or_default();
    let _ = jobs.delete(&name, &DeleteParams::background()).await;
    answered
        .map(|_| ())
        .context("no Job controller answers (run kube-controller-manager next to the API server)")
}

/// Keeps Nodes `Ready` the way kubelets do: every 10 s their status gets a `Ready=True`
/// condition with a fresh heartbeat, so kube-controller-manager's node lifecycle controller
/// does not mark them `Unknown`. Nodes in `not_ready` get `Ready=False` instead (a test turns a
/// node off and on by editing that set). The task ends when the handle is dropped or aborted.
pub fn heartbeat(
    client: &Client,
    nodes: Vec<String>,
    not_ready: std::sync::Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
) -> tokio::task::JoinHandle<()> {
    let api: Api<Node> = Api::all(client.clone());
    tokio::spawn(async move {
        loop {
            for node in &nodes {
                let down = not_ready.lock().map(|s| s.contains(node)).unwrap_or(false);
                let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let status = json!({"status": {"conditions": [{
                    "type": "Ready",
                    "status": if down { "False" } else { "True" },
                    "reason": if down { "KubeletNotReady" } else { "KubeletReady" },
                    "message": "e2e heartbeat",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }]}});
                let _ = api
                    .patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
                    .await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    })
}
