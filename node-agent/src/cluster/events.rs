//! Kubernetes Events (events.k8s.io/v1) on the agent's Node, in namespace `default`.
//!
//! Guarantees: an event with the same reason and note as one written in the last
//! [`SERIES_TTL`] is not a new Event: the existing one's `series.count` goes up (a flapping
//! threshold is one Event with a count). Events wait until the Node's uid is known (the
//! watch sees the Node). A failed write is logged and dropped: Events are best effort.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use tokio::sync::mpsc;

use crate::events::{NodeEvent, Severity};

/// How long a written Event takes repeats as a series.
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 3600);
/// The reporting controller of the agent's Events.
pub const CONTROLLER: &str = "driftless.dev/agent";

struct Written {
    name: String,
    count: i32,
    at: Instant,
}

/// The Event object for a new event. Pure.
pub fn event_object(
    node: &str,
    uid: &str,
    event: &NodeEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{node}.{:x}",
                now.timestamp_nanos_opt().unwrap_or_default()
            )),
            namespace: Some(driftless_crds::rbac::NODE_EVENTS_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        event_time: Some(driftless_crds::time::micro_time(now)),
        action: Some(event.action.to_owned()),
        reason: Some(event.reason.to_owned()),
        note: Some(event.note.clone()),
        type_: Some(match event.severity {
            Severity::Normal => "Normal".to_owned(),
            Severity::Warning => "Warning".to_owned(),
        }),
        regarding: Some(ObjectReference {
            api_version: Some("v1".to_owned()),
            kind: Some("Node".to_owned()),
            name: Some(node.to_owned()),
            uid: Some(uid.to_owned()),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(CONTROLLER.to_owned()),
        reporting_instance: Some(format!("{CONTROLLER}-{node}")),
        ..Event::default()
    }
}

/// Writes events until the channel closes.
pub async fn run(
    client: kube::Client,
    node: String,
    node_uid: Arc<Mutex<Option<String>>>,
    mut events: mpsc::Receiver<NodeEvent>,
) {
    let api: Api<Event> = Api::namespaced(client, driftless_crds::rbac::NODE_EVENTS_NAMESPACE);
    let mut written: BTreeMap<(&'static str, String), Written> = BTreeMap::new();
    while let Some(event) = events.recv().await {
        let uid = loop {
            if let Some(uid) = node_uid.lock().ok().and_then(|u| u.clone()) {
                break uid;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        };
        written.retain(|_, w| w.at.elapsed() < SERIES_TTL);
        let key = (event.reason, event.note.clone());
        let now = chrono::Utc::now();
        let result = match written.get_mut(&key) {
            Some(w) => {
                w.count += 1;
                w.at = Instant::now();
                let patch = serde_json::json!({
                    "series": EventSeries {
                        count: w.count,
                        last_observed_time: driftless_crds::time::micro_time(now),
                    }
                });
                api.patch(&w.name, &PatchParams::default(), &Patch::Merge(patch))
                    .await
                    .map(|_| ())
            }
            None => {
                let object = event_object(&node, &uid, &event, now);
                let name = object.metadata.name.clone().unwrap_or_default();
                let created = api.create(&PostParams::default(), &object).await;
                if created.is_ok() {
                    written.insert(
                        key,
                        Written {
                            name,
                            count: 1,
                            at: Instant::now(),
                        },
                    );
                }
                created.map(|_| ())
            }
        };
        if let Err(error) = result {
            tracing::warn!(%error, reason = event.reason, "cannot write the Event");
        }
    }
}
