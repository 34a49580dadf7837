//! Writes the node's DriftReport `node-<node>` with server-side apply (field manager
//! `driftless-agent`), labelled `driftless.dev/node=<node>`.
//!
//! Guarantees:
//! - A change is written within about a second (changes in that second are coalesced); an
//!   unchanged report — only its check times moved — is written at most once per `interval`
//!   (a heartbeat), so thousands of nodes do not flood the API server.
//! - While the API server cannot be reached, writes are retried with a backoff (1 s doubling
//!   to 60 s); the newest status is written once it can be.

use std::sync::Arc;
use std::time::Duration;

use driftless_crds::drift_report::DriftReport;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
// The tokio clock (the system clock in production) so that tests can move it.
use tokio::time::Instant;

use crate::status::SharedStatus;

/// The label that names a node report's node.
pub const NODE_LABEL: &str = "driftless.dev/node";
/// The field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "driftless-agent";

/// The report object without status (what the first apply creates). Pure.
pub fn object(node: &str) -> Value {
    json!({
        "apiVersion": "driftless.dev/v1alpha1",
        "kind": "DriftReport",
        "metadata": {
            "name": crate::facts::report::report_name(node),
            "labels": {NODE_LABEL: node},
        },
        "spec": {"target": {"kind": "Node", "name": node, "node": node}},
    })
}

/// What decides whether a write is due: the status with every `checkedAt` blanked. Pure.
pub fn shape(status: &Value) -> Value {
    fn blank(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.remove("checkedAt");
                map.values_mut().for_each(blank);
            }
            Value::Array(items) => items.iter_mut().for_each(blank),
            _ => {}
        }
    }
    let mut v = status.clone();
    blank(&mut v);
    v
}

/// Writes the report until the runtime stops.
pub async fn run(
    client: kube::Client,
    namespace: String,
    status: Arc<SharedStatus>,
    interval: Duration,
) {
    let api: Api<DriftReport> = Api::namespaced(client, &namespace);
    let node = status.node().to_owned();
    let name = crate::facts::report::report_name(&node);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut changes = status.subscribe();
    let mut created = false;
    let mut written: Option<(Value, Instant)> = None;
    let mut backoff = Duration::from_secs(1);
    loop {
        if !created {
            match api
                .patch(&name, &params, &Patch::Apply(object(&node)))
                .await
            {
                Ok(_) => created = true,
                Err(error) => {
                    tracing::warn!(%error, report = %name, "cannot write the node report; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
        }
        let body = serde_json::to_value(status.report_status()).unwrap_or(Value::Null);
        let now_shape = shape(&body);
        let due = match &written {
            None => true,
            Some((last, at)) => *last != now_shape || at.elapsed() >= interval,
        };
        if due {
            let patch = json!({
                "apiVersion": "driftless.dev/v1alpha1",
                "kind": "DriftReport",
                "metadata": {"name": name},
                "status": body,
            });
            match api.patch_status(&name, &params, &Patch::Apply(patch)).await {
                Ok(_) => {
                    written = Some((now_shape, Instant::now()));
                    backoff = Duration::from_secs(1);
                }
                Err(error) => {
                    if matches!(&error, kube::Error::Api(s) if s.code == 404) {
                        created = false;
                    }
                    tracing::warn!(%error, report = %name, "cannot write the node report; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    continue;
                }
            }
        }
        let until_heartbeat = written
            .as_ref()
            .map_or(interval, |(_, at)| interval.saturating_sub(at.elapsed()));
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                // Coalesce the changes of the next second into one write.
                tokio::time::sleep(Duration::from_secs(1)).await;
                changes.borrow_and_update();
            }
            () = tokio::time::sleep(until_heartbeat) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_check_times_moving_is_not_a_change() {
        let a = json!({"summary": {"status": "InSync", "checkedAt": "2026-01-01T00:00:00Z"},
                       "policies": [{"name": "x", "checkedAt": "2026-01-01T00:00:00Z"}]});
        let b = json!({"summary": {"status": "InSync", "checkedAt": "2026-01-01T00:05:00Z"},
                       "policies": [{"name": "x", "checkedAt": "2026-01-01T00:05:00Z"}]});
        let c = json!({"summary": {"status": "Drifted", "checkedAt": "2026-01-01T00:05:00Z"},
                       "policies": [{"name": "x", "checkedAt": "2026-01-01T00:05:00Z"}]});
        assert_eq!(shape(&a), shape(&b));
        assert_ne!(shape(&a), shape(&c));
    }

    #[test]
    fn the_object_names_and_labels_the_node() {
        let o = object("Worker-1");
        assert_eq!(o["metadata"]["name"], "node-worker-1");
        assert_eq!(o["metadata"]["labels"][NODE_LABEL], "Worker-1");
        assert_eq!(o["spec"]["target"]["kind"], "Node");
    }
}
