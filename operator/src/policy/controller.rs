//! The policy status controller: caches the three policy kinds, the Nodes' labels and the node
//! DriftReports, and writes each policy's status (computed by [`status::compute`]) when it
//! differs from the stored one.
//!
//! - One watch per kind, cluster-wide; Nodes through a metadata-only watch; DriftReports in the
//!   operator's namespace with the [`NODE_LABEL`] label. The caches drop what the status does
//!   not read (managedFields, annotations, policy tasks, report items and history), so 1,000
//!   nodes and 20 policies take a few MB.
//! - A change wakes the loop; it waits [`DEBOUNCE`] to gather the burst, then recomputes every
//!   policy (also every [`SAFETY_NET`]). A Node event wakes it only when the Node's labels
//!   changed, it appeared or it went.
//! - A status is written by server-side apply to `/status` (field manager [`FIELD_MANAGER`],
//!   forced), conditional on the `resourceVersion` it was computed from, only when the fields
//!   this controller owns differ from the cached ones (`lastTransitionTime` aside). A write the
//!   cache has not caught up with yet is not repeated.
//! - Only the leader writes.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use driftless_crds::apply_policy::ApplyPolicy;
use driftless_crds::drift_report::{DriftReport, PolicyKind, PolicyState};
use driftless_crds::facts_policy::FactsPolicy;
use driftless_crds::log_pipeline::LogPipeline;
use driftless_crds::time::time;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::metrics::PolicyMetrics;
use super::status::{self, NodeRef, PolicyInput, PolicyStatus, ReportIndex, NODE_LABEL};
use crate::Error;

/// Field manager of the status writes.
pub const FIELD_MANAGER: &str = "driftless-policy-status";
/// How long the loop gathers changes before it recomputes.
pub const DEBOUNCE: Duration = Duration::from_secs(1);
/// Longest time between two recomputes.
pub const SAFETY_NET: Duration = Duration::from_secs(60);

pub use crate::leader::IsLeader;

/// A policy kind whose status this controller writes.
pub trait Policy:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize + Send + Sync + 'static
{
    /// The kind.
    const KIND: PolicyKind;
    /// `spec.nodeSelector`.
    fn node_selector(&self) -> Option<&LabelSelector>;
    /// Sources and sinks in the spec (LogPipeline); `(0, 0)` for other kinds.
    fn parts(&self) -> (usize, usize) {
        (0, 0)
    }
    /// The stored status's conditions.
    fn conditions(&self) -> &[Condition];
    /// The stored status as JSON (`null` without one).
    fn status_json(&self) -> Value;
    /// Drops what the status computation does not read (cache memory).
    fn slim(&mut self);
}

impl Policy for ApplyPolicy {
    const KIND: PolicyKind = PolicyKind::ApplyPolicy;
    fn node_selector(&self) -> Option<&LabelSelector> {
        self.spec.node_selector.as_ref()
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
    fn slim(&mut self) {
        slim_meta(self);
        let spec = &mut self.spec;
        spec.tasks = Vec::new();
        spec.handlers = Vec::new();
        spec.vars = Default::default();
        spec.secrets = Vec::new();
        spec.ignore = Vec::new();
        spec.audit = None;
    }
}

impl Policy for FactsPolicy {
    const KIND: PolicyKind = PolicyKind::FactsPolicy;
    fn node_selector(&self) -> Option<&LabelSelector> {
        self.spec.node_selector.as_ref()
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
    fn slim(&mut self) {
        slim_meta(self);
        self.spec.facts = Vec::new();
        self.spec.thresholds = Vec::new();
        self.spec.secrets = Vec::new();
    }
}

impl Policy for LogPipeline {
    const KIND: PolicyKind = PolicyKind::LogPipeline;
    fn node_selector(&self) -> Option<&LabelSelector> {
        self.spec.node_selector.as_ref()
    }
    fn parts(&self) -> (usize, usize) {
        (self.spec.sources.len(), self.spec.sinks.len())
    }
    fn conditions(&self) -> &[Condition] {
        self.status.as_ref().map_or(&[], |s| &s.conditions)
    }
    fn status_json(&self) -> Value {
        serde_json::to_value(&self.status).unwrap_or(Value::Null)
    }
    fn slim(&mut self) {
        slim_meta(self);
        self.spec.transforms = Vec::new();
        self.spec.secrets = Vec::new();
    }
}

fn slim_meta<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    // `kubectl apply` keeps the whole object in an annotation.
    obj.meta_mut().annotations = None;
}

/// Keeps of a node report what the status reads: its name, labels and policy results (with a
/// message only when the result failed).
pub fn slim_report(report: &mut DriftReport) {
    slim_meta(report);
    if let Some(status) = report.status.as_mut() {
        status.items = Vec::new();
        status.history = Vec::new();
        status.artifact = None;
        status.error = None;
        for result in &mut status.policies {
            if matches!(result.state, PolicyState::InSync | PolicyState::Drifted) {
                result.message = None;
            }
        }
    }
}

/// Keeps of a Node's metadata its name and labels.
pub fn slim_node(node: &mut PartialObjectMeta<Node>) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.owner_references = None;
    node.metadata.finalizers = None;
}

/// The controller's caches.
#[derive(Clone)]
pub struct Caches {
    /// ApplyPolicies.
    pub apply: Store<ApplyPolicy>,
    /// FactsPolicies.
    pub facts: Store<FactsPolicy>,
    /// LogPipelines.
    pub logs: Store<LogPipeline>,
    /// Nodes (metadata only).
    pub nodes: Store<PartialObjectMeta<Node>>,
    /// Node DriftReports in the operator's namespace.
    pub reports: Store<DriftReport>,
}

/// A write whose echo the cache may not have yet.
#[derive(Debug, PartialEq)]
struct Written {
    resource_version: Option<String>,
    view: Value,
}

/// One status to write.
struct Pending {
    kind: PolicyKind,
    name: String,
    resource_version: Option<String>,
    status: PolicyStatus,
    view: Value,
}

/// The policy status controller.
pub struct PolicyStatusController {
    client: Client,
    caches: Caches,
    metrics: PolicyMetrics,
    is_leader: IsLeader,
    wake: Arc<Notify>,
    written: std::sync::Mutex<HashMap<(PolicyKind, String), Written>>,
}

impl PolicyStatusController {
    /// Starts the watches (background tasks) and returns the controller; call
    /// [`PolicyStatusController::run`] to write statuses.
    pub fn start(
        client: Client,
        namespace: &str,
        metrics: PolicyMetrics,
        is_leader: IsLeader,
    ) -> Arc<Self> {
        let wake = Arc::new(Notify::new());
        let caches = Caches {
            apply: watch_policies::<ApplyPolicy>(&client, &wake),
            facts: watch_policies::<FactsPolicy>(&client, &wake),
            logs: watch_policies::<LogPipeline>(&client, &wake),
            nodes: {
                let (store, writer) = reflector::store();
                // Metadata-only requests: labels, not the Nodes' status.
                let api: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
                spawn_watch(
                    reflector::reflector(
                        writer,
                        watcher(api, watcher::Config::default()).modify(slim_node),
                    )
                    .default_backoff(),
                    wake.clone(),
                    node_label_changes(),
                );
                store
            },
            reports: {
                let (store, writer) = reflector::store();
                let api: Api<DriftReport> = Api::namespaced(client.clone(), namespace);
                spawn_watch(
                    reflector::reflector(
                        writer,
                        watcher(api, watcher::Config::default().labels(NODE_LABEL))
                            .modify(slim_report),
                    )
                    .default_backoff(),
                    wake.clone(),
                    |_: &watcher::Event<DriftReport>| true,
                );
                store
            },
        };
        Self::new(client, caches, metrics, is_leader, wake)
    }

    /// A controller over caches filled by someone else (tests); `wake` wakes [`Self::run`].
    pub fn new(
        client: Client,
        caches: Caches,
        metrics: PolicyMetrics,
        is_leader: IsLeader,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            caches,
            metrics,
            is_leader,
            wake,
            written: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Wakes [`Self::run`] for a recompute (for example when this replica starts leading).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Recomputes and writes statuses forever: after every change (debounced) and at least
    /// every [`SAFETY_NET`].
    pub async fn run(self: Arc<Self>) {
        let _ = self.caches.apply.wait_until_ready().await;
        let _ = self.caches.facts.wait_until_ready().await;
        let _ = self.caches.logs.wait_until_ready().await;
        let _ = self.caches.nodes.wait_until_ready().await;
        let _ = self.caches.reports.wait_until_ready().await;
        tracing::info!("policy status controller watching");
        let mut sleep = Duration::ZERO;
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
            tokio::time::sleep(DEBOUNCE).await;
            sleep = SAFETY_NET;
            if !(self.is_leader)() {
                continue;
            }
            if let Err(err) = self.reconcile_once().await {
                tracing::warn!(error = %err, "policy status update failed; retrying");
                sleep = Duration::from_secs(5);
            }
        }
    }

    /// Computes every policy's status and writes those that changed; returns how many were
    /// written. Writes nothing unless this replica is the leader. A conflict (the policy
    /// changed since the cache saw it) is left to the recompute its watch event brings; other
    /// failures are returned after the remaining writes were tried.
    pub async fn reconcile_once(&self) -> Result<usize, Error> {
        if !(self.is_leader)() {
            return Ok(0);
        }
        let pending = self.compute_all();
        let mut written = 0;
        let mut first_error = None;
        for p in pending {
            let result = match p.kind {
                PolicyKind::ApplyPolicy => self.write::<ApplyPolicy>(&p).await,
                PolicyKind::FactsPolicy => self.write::<FactsPolicy>(&p).await,
                PolicyKind::LogPipeline => self.write::<LogPipeline>(&p).await,
            };
            match result {
                Ok(()) => {
                    written += 1;
                    self.metrics.written(p.kind);
                    if let Ok(mut memo) = self.written.lock() {
                        memo.insert(
                            (p.kind, p.name),
                            Written {
                                resource_version: p.resource_version,
                                view: p.view,
                            },
                        );
                    }
                }
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    self.metrics.write_failed(p.kind);
                    tracing::debug!(kind = p.kind.as_str(), name = %p.name, "policy changed meanwhile; status computed again on its event");
                }
                Err(err) => {
                    self.metrics.write_failed(p.kind);
                    tracing::warn!(kind = p.kind.as_str(), name = %p.name, error = %err, "writing policy status failed");
                    first_error.get_or_insert(err);
                }
            }
        }
        match first_error {
            Some(err) => Err(err.into()),
            None => Ok(written),
        }
    }

    /// The statuses that differ from the cache (and from what was just written).
    fn compute_all(&self) -> Vec<Pending> {
        let nodes = self.caches.nodes.state();
        let empty = BTreeMap::new();
        let node_refs: Vec<NodeRef<'_>> = nodes
            .iter()
            .filter_map(|n| {
                Some(NodeRef {
                    name: n.metadata.name.as_deref()?,
                    labels: n.metadata.labels.as_ref().unwrap_or(&empty),
                })
            })
            .collect();
        let reports = self.caches.reports.state();
        let index = ReportIndex::new(reports.iter().map(|r| r.as_ref()));
        let now = time(Utc::now());
        let mut out = Vec::new();
        let mut seen = Vec::new();
        self.compute_kind(
            &self.caches.apply,
            &node_refs,
            &index,
            &now,
            &mut out,
            &mut seen,
        );
        self.compute_kind(
            &self.caches.facts,
            &node_refs,
            &index,
            &now,
            &mut out,
            &mut seen,
        );
        self.compute_kind(
            &self.caches.logs,
            &node_refs,
            &index,
            &now,
            &mut out,
            &mut seen,
        );
        if let Ok(mut memo) = self.written.lock() {
            memo.retain(|key, _| seen.contains(key));
        }
        out
    }

    fn compute_kind<K: Policy>(
        &self,
        store: &Store<K>,
        nodes: &[NodeRef<'_>],
        index: &ReportIndex<'_>,
        now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
        out: &mut Vec<Pending>,
        seen: &mut Vec<(PolicyKind, String)>,
    ) {
        let (mut ready, mut not_ready) = (0i64, 0i64);
        for policy in store.state() {
            let name = policy.name_any();
            let (sources, sinks) = policy.parts();
            let computed = status::compute(
                &PolicyInput {
                    kind: K::KIND,
                    name: &name,
                    generation: policy.meta().generation.unwrap_or(0),
                    node_selector: policy.node_selector(),
                    sources,
                    sinks,
                    previous: policy.conditions(),
                },
                nodes,
                index,
                now,
            );
            if computed.ready() {
                ready += 1;
            } else {
                not_ready += 1;
            }
            let view = status::owned_view(K::KIND, &computed.to_json());
            let key = (K::KIND, name);
            let resource_version = policy.resource_version();
            let stored = status::owned_view(K::KIND, &policy.status_json());
            let already = stored == view
                || self.written.lock().is_ok_and(|memo| {
                    memo.get(&key)
                        == Some(&Written {
                            resource_version: resource_version.clone(),
                            view: view.clone(),
                        })
                });
            if !already {
                out.push(Pending {
                    kind: K::KIND,
                    name: key.1.clone(),
                    resource_version,
                    status: computed,
                    view,
                });
            }
            seen.push(key);
        }
        self.metrics.set_ready(K::KIND, ready, not_ready);
    }

    async fn write<K: Policy>(&self, p: &Pending) -> Result<(), kube::Error> {
        let api: Api<K> = Api::all(self.client.clone());
        let mut metadata = json!({ "name": p.name });
        if let Some(rv) = &p.resource_version {
            metadata["resourceVersion"] = rv.clone().into();
        }
        let patch = json!({
            "apiVersion": K::api_version(&()),
            "kind": K::kind(&()),
            "metadata": metadata,
            "status": p.status.to_json(),
        });
        api.patch_status(
            &p.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
        Ok(())
    }
}

fn watch_policies<K: Policy>(client: &Client, wake: &Arc<Notify>) -> Store<K> {
    let (store, writer) = reflector::store();
    let api: Api<K> = Api::all(client.clone());
    spawn_watch(
        reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(K::slim),
        )
        .default_backoff(),
        wake.clone(),
        |_: &watcher::Event<K>| true,
    );
    store
}

fn labels_hash(node: &PartialObjectMeta<Node>) -> u64 {
    let mut hasher = DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    hasher.finish()
}

/// A filter of Node events: relevant when a Node appears, goes, or its labels change, and at
/// the end of every (re-)list. Status heartbeats are not.
pub fn node_label_changes() -> impl FnMut(&watcher::Event<PartialObjectMeta<Node>>) -> bool + Send {
    let mut known: HashMap<String, u64> = HashMap::new();
    let mut listing: HashMap<String, u64> = HashMap::new();
    move |event| match event {
        watcher::Event::Init => {
            listing.clear();
            false
        }
        watcher::Event::InitApply(node) => {
            listing.insert(node.name_any(), labels_hash(node));
            false
        }
        watcher::Event::InitDone => {
            known = std::mem::take(&mut listing);
            true
        }
        watcher::Event::Apply(node) => {
            known.insert(node.name_any(), labels_hash(node)) != Some(labels_hash(node))
        }
        watcher::Event::Delete(node) => {
            known.remove(&node.name_any());
            true
        }
    }
}

fn spawn_watch<K, S, F>(stream: S, wake: Arc<Notify>, mut relevant: F)
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    F: FnMut(&watcher::Event<K>) -> bool + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => {
                    if relevant(&event) {
                        wake.notify_one();
                    }
                }
                Err(err) => tracing::warn!(error = %err, "policy status watch failed; retrying"),
            }
        }
    });
}

#[cfg(test)]
mod tests;
