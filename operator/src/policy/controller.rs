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
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::SelectorExt as _;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::metrics::{PolicyLabels, PolicyMetrics};
use super::revisions::{self, RevisionRef, HASH_ANNOTATION, POLICY_UID_LABEL};
use super::rollout::{self, Health, NodeState, RETRY_ANNOTATION, UNDO_ANNOTATION};
use super::status::{self, NodeRef, PolicyInput, ReportIndex, NODE_LABEL};
use crate::Error;

/// Field manager of the status writes.
pub const FIELD_MANAGER: &str = "driftless-policy-status";
/// Field manager of the node assignments (`spec.revisions` of node reports).
pub const ROLLOUT_MANAGER: &str = "driftless-rollout";
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
        // Kept: the spec's revision hash (the tasks are dropped below) and the rollout's
        // manual controls.
        let mut keep: BTreeMap<String, String> = self
            .annotations()
            .iter()
            .filter(|(k, _)| *k == RETRY_ANNOTATION || *k == UNDO_ANNOTATION)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        keep.insert(HASH_ANNOTATION.into(), revisions::policy_hash(self));
        slim_meta(self);
        self.meta_mut().annotations = Some(keep);
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
        status.plan_text = None;
        status.error = None;
        for result in &mut status.policies {
            if matches!(result.state, PolicyState::InSync | PolicyState::Drifted) {
                result.message = None;
            }
        }
    }
}

/// Keeps of a Node its name, labels, `spec.unschedulable` and its `Ready` condition.
pub fn slim_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    node.metadata.annotations = None;
    node.metadata.owner_references = None;
    node.metadata.finalizers = None;
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable);
    node.spec = unschedulable.map(|u| k8s_openapi::api::core::v1::NodeSpec {
        unschedulable: Some(u),
        ..Default::default()
    });
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| k8s_openapi::api::core::v1::NodeCondition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            ..Default::default()
        });
    node.status = ready.map(|c| k8s_openapi::api::core::v1::NodeStatus {
        conditions: Some(vec![c]),
        ..Default::default()
    });
}

/// A Node is ready unless its `Ready` condition is `False` or `Unknown` (a Node no kubelet
/// manages has none).
pub fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_none_or(|c| c.status == "True")
}

/// `spec.unschedulable` (cordoned).
pub fn node_cordoned(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
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
    /// Nodes (slimmed: labels, readiness, cordon).
    pub nodes: Store<Node>,
    /// Node DriftReports in the operator's namespace.
    pub reports: Store<DriftReport>,
    /// ApplyPolicy revisions in the operator's namespace.
    pub revisions: Store<ControllerRevision>,
}

/// A write whose echo the cache may not have yet.
#[derive(Debug, PartialEq)]
struct Written {
    resource_version: Option<String>,
    view: Value,
}

/// What one status pass computes every policy's status from.
struct Pass<'a> {
    nodes: &'a [NodeRef<'a>],
    index: &'a ReportIndex<'a>,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    rollouts: &'a HashMap<String, Value>,
}

/// One status to write.
struct Pending {
    kind: PolicyKind,
    name: String,
    resource_version: Option<String>,
    status: Value,
    view: Value,
}

/// The policy status controller.
pub struct PolicyStatusController {
    client: Client,
    caches: Caches,
    metrics: PolicyMetrics,
    is_leader: IsLeader,
    wake: Arc<Notify>,
    namespace: String,
    written: std::sync::Mutex<HashMap<(PolicyKind, String), Written>>,
    requeue: std::sync::Mutex<Option<Duration>>,
    recorder: Recorder,
}

impl PolicyStatusController {
    /// Starts the watches (background tasks) and returns the controller; call
    /// [`PolicyStatusController::run`] to write statuses.
    pub fn start(
        client: Client,
        namespace: &str,
        identity: &str,
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
                let api: Api<Node> = Api::all(client.clone());
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
            revisions: {
                let (store, writer) = reflector::store();
                let api: Api<ControllerRevision> = Api::namespaced(client.clone(), namespace);
                spawn_watch(
                    reflector::reflector(
                        writer,
                        watcher(api, watcher::Config::default().labels(POLICY_UID_LABEL)).modify(
                            |r: &mut ControllerRevision| {
                                // The planner reads names and numbers, not the specs.
                                r.data = None;
                                r.metadata.managed_fields = None;
                            },
                        ),
                    )
                    .default_backoff(),
                    wake.clone(),
                    |_: &watcher::Event<ControllerRevision>| true,
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
        Self::new(
            client, namespace, identity, caches, metrics, is_leader, wake,
        )
    }

    /// The controller's caches (the dashboard reads them).
    pub fn caches(&self) -> &Caches {
        &self.caches
    }

    /// A controller over caches filled by someone else (tests); `wake` wakes [`Self::run`].
    pub fn new(
        client: Client,
        namespace: &str,
        identity: &str,
        caches: Caches,
        metrics: PolicyMetrics,
        is_leader: IsLeader,
        wake: Arc<Notify>,
    ) -> Arc<Self> {
        Arc::new(Self {
            // Events name this replica (the Lease identity) as the reporting instance.
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: "driftless-operator".into(),
                    instance: Some(identity.to_owned()),
                },
            ),
            client,
            caches,
            metrics,
            is_leader,
            wake,
            namespace: namespace.to_owned(),
            written: std::sync::Mutex::new(HashMap::new()),
            requeue: std::sync::Mutex::new(None),
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
        let _ = self.caches.revisions.wait_until_ready().await;
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
            if let Some(soon) = self.requeue.lock().ok().and_then(|mut r| r.take()) {
                sleep = sleep.min(soon.max(Duration::from_secs(1)));
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
        let rollouts = match self.rollout_all().await {
            Ok(r) => r,
            Err(err) => {
                tracing::warn!(error = %err, "rollout step failed; retrying");
                return Err(err);
            }
        };
        let pending = self.compute_all(&rollouts);
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
    fn compute_all(&self, rollouts: &HashMap<String, Value>) -> Vec<Pending> {
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
        let pass = Pass {
            nodes: &node_refs,
            index: &index,
            now: time(Utc::now()),
            rollouts,
        };
        let mut out = Vec::new();
        let mut seen = Vec::new();
        self.compute_kind(&self.caches.apply, &pass, &mut out, &mut seen);
        self.compute_kind(&self.caches.facts, &pass, &mut out, &mut seen);
        self.compute_kind(&self.caches.logs, &pass, &mut out, &mut seen);
        if let Ok(mut memo) = self.written.lock() {
            memo.retain(|key, _| seen.contains(key));
        }
        out
    }

    fn compute_kind<K: Policy>(
        &self,
        store: &Store<K>,
        pass: &Pass<'_>,
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
                pass.nodes,
                pass.index,
                &pass.now,
            );
            if computed.ready() {
                ready += 1;
            } else {
                not_ready += 1;
            }
            let mut json = computed.to_json();
            if let Some(extra) = pass
                .rollouts
                .get(&name)
                .filter(|_| K::KIND == PolicyKind::ApplyPolicy)
            {
                merge_rollout(&mut json, extra);
            }
            let view = status::owned_view(K::KIND, &json);
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
                    status: json,
                    view,
                });
            }
            seen.push(key);
        }
        self.metrics.set_ready(K::KIND, ready, not_ready);
    }

    /// One rollout step for every ApplyPolicy: makes its newest revision exist (creating or
    /// renumbering the ControllerRevision), plans the assignments ([`rollout::plan`]), writes
    /// the nodes whose assignments changed (one server-side apply per node, O(nodes
    /// changed)), prunes old revisions, and returns each policy's rollout status fields.
    async fn rollout_all(&self) -> Result<HashMap<String, Value>, Error> {
        let policies = self.caches.apply.state();
        let nodes = self.caches.nodes.state();
        let reports = self.caches.reports.state();
        let all_revisions = self.caches.revisions.state();
        let by_node: HashMap<&str, &DriftReport> = reports
            .iter()
            .filter_map(|r| Some((status::report_node(r)?, r.as_ref())))
            .collect();
        let now = Utc::now();
        let mut changes: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
        let mut out = HashMap::new();
        let mut requeue: Option<Duration> = None;
        let live: BTreeSet<String> = policies.iter().map(|p| p.name_any()).collect();
        let revisions_api: Api<ControllerRevision> =
            Api::namespaced(self.client.clone(), &self.namespace);
        for policy in &policies {
            let name = policy.name_any();
            let (Some(uid), Some(hash)) = (policy.uid(), policy.annotations().get(HASH_ANNOTATION))
            else {
                continue;
            };
            let updated = revisions::name(&name, hash);
            let mine: Vec<RevisionRef> = all_revisions
                .iter()
                .filter(|r| r.labels().get(POLICY_UID_LABEL) == Some(&uid))
                .map(|r| RevisionRef {
                    name: r.name_any(),
                    number: r.revision,
                })
                .collect();
            match revisions::newest(&mine, &updated) {
                revisions::Action::None => {}
                revisions::Action::Create(number) => {
                    // The cache holds no tasks: read the policy, and create the revision only
                    // when its spec still has this hash.
                    let api: Api<ApplyPolicy> = Api::all(self.client.clone());
                    let Some(full) = api.get_opt(&name).await? else {
                        continue;
                    };
                    if revisions::policy_hash(&full) != *hash {
                        continue;
                    }
                    let object = revisions::object(&full, &self.namespace, number);
                    match revisions_api.create(&PostParams::default(), &object).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                    tracing::info!(policy = %name, revision = %updated, number, "new revision");
                }
                revisions::Action::Renumber(number) => {
                    revisions_api
                        .patch(
                            &updated,
                            &PatchParams::default(),
                            &Patch::Merge(json!({ "revision": number })),
                        )
                        .await?;
                    tracing::info!(policy = %name, revision = %updated, number, "earlier revision is the newest again");
                }
            }
            let Ok(selector) = status::compile_selector(policy.spec.node_selector.as_ref()) else {
                continue;
            };
            let canary_selector = policy
                .spec
                .rollout
                .canary
                .as_ref()
                .and_then(|c| c.node_selector.as_ref());
            let (canary_first, canary_error) = match status::compile_selector(canary_selector) {
                Ok(s) => (canary_selector.map(|_| s), None),
                Err(e) => (
                    None,
                    Some(format!(
                        "spec.rollout.canary.nodeSelector is invalid: {e}; no node is assigned a new revision until it is fixed"
                    )),
                ),
            };
            let empty = BTreeMap::new();
            let mut targeted = BTreeSet::new();
            let states: Vec<NodeState<'_>> = nodes
                .iter()
                .filter_map(|n| {
                    let node = n.metadata.name.as_deref()?;
                    if !selector.matches(n.metadata.labels.as_ref().unwrap_or(&empty)) {
                        return None;
                    }
                    targeted.insert(node);
                    let report = by_node.get(node);
                    let assigned = report.and_then(|r| {
                        r.spec
                            .revisions
                            .iter()
                            .find(|a| a.policy == name)
                            .map(|a| a.revision.as_str())
                    });
                    let result = report.and_then(|r| r.status.as_ref()).and_then(|s| {
                        s.policies
                            .iter()
                            .find(|p| p.kind == PolicyKind::ApplyPolicy && p.name == name)
                    });
                    Some(NodeState {
                        name: node,
                        ready: node_ready(n),
                        cordoned: node_cordoned(n),
                        assigned,
                        health: health(assigned, result),
                        canary_first: canary_first.as_ref().is_some_and(|s| {
                            s.matches(n.metadata.labels.as_ref().unwrap_or(&empty))
                        }),
                    })
                })
                .collect();
            let stored = policy.status.as_ref();
            let memory_failed = stored.and_then(|s| s.rollout.as_ref()).and_then(|r| {
                Some(rollout::Failure {
                    revision: r.failed_revision.clone()?,
                    node: r.failed_node.clone().unwrap_or_default(),
                    reason: r.message.clone().unwrap_or_default(),
                })
            });
            let mut settings = rollout::Settings::new(&policy.spec.rollout, states.len());
            if canary_error.is_some() {
                settings.paused = true;
            }
            let input = rollout::Input {
                updated: &updated,
                settings,
                nodes: &states,
                memory: rollout::Memory {
                    current: stored.and_then(|s| s.current_revision.as_deref()),
                    failed: memory_failed,
                    retried: stored
                        .and_then(|s| s.rollout.as_ref())
                        .and_then(|r| r.retried.as_deref()),
                    undone: stored
                        .and_then(|s| s.rollout.as_ref())
                        .and_then(|r| r.undone.as_deref()),
                },
                controls: rollout::Controls {
                    retry: policy
                        .annotations()
                        .get(RETRY_ANNOTATION)
                        .map(String::as_str),
                    undo: policy
                        .annotations()
                        .get(UNDO_ANNOTATION)
                        .map(String::as_str),
                },
                now,
            };
            let mut plan = rollout::plan(&input);
            if let (Some(why), rollout::Step::Paused) = (&canary_error, plan.step) {
                plan.message = why.clone();
            }
            let was_failed = stored
                .and_then(|s| s.rollout.as_ref())
                .is_some_and(|r| r.failed_revision.as_deref() == Some(updated.as_str()));
            if plan.failed.is_some() && !was_failed {
                self.metrics
                    .gate_failures
                    .get_or_create(&PolicyLabels {
                        policy: name.clone(),
                    })
                    .inc();
                tracing::warn!(policy = %name, revision = %updated, message = %plan.message, "rollout stopped");
                let event = gate_event(&plan);
                if let Err(err) = self.recorder.publish(&event, &policy.object_ref(&())).await {
                    tracing::warn!(policy = %name, error = %err, "cannot record an Event");
                }
            }
            self.metrics
                .nodes_updated
                .get_or_create(&PolicyLabels {
                    policy: name.clone(),
                })
                .set(i64::try_from(plan.updated).unwrap_or(i64::MAX));
            if let Some(r) = plan.requeue {
                if let Ok(r) = r.to_std() {
                    requeue = Some(requeue.map_or(r, |q| q.min(r)));
                }
            }
            for (node, revision) in &plan.changes {
                changes
                    .entry(node.clone())
                    .or_default()
                    .insert(name.clone(), revision.clone());
            }
            // Nodes the policy no longer targets lose its assignment.
            for (node, report) in &by_node {
                if !targeted.contains(node)
                    && report.spec.revisions.iter().any(|a| a.policy == name)
                {
                    changes
                        .entry((*node).to_owned())
                        .or_default()
                        .insert(name.clone(), None);
                }
            }
            // History.
            let mut keep: BTreeSet<&str> = states.iter().filter_map(|n| n.assigned).collect();
            keep.insert(&updated);
            if let Some(c) = plan.current.as_deref() {
                keep.insert(c);
            }
            let limit = usize::try_from(policy.spec.revision_history_limit).unwrap_or(10);
            for old in revisions::prune(&mine, limit, &keep) {
                match revisions_api.delete(&old, &Default::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => {
                        tracing::warn!(revision = %old, error = %e, "cannot delete an old revision")
                    }
                }
            }
            let mut counts: BTreeMap<&str, i32> = BTreeMap::new();
            for n in &states {
                let after = plan
                    .changes
                    .get(n.name)
                    .map_or(n.assigned, |c| c.as_deref());
                if let Some(a) = after {
                    *counts.entry(a).or_default() += 1;
                }
            }
            let mut per_revision: Vec<Value> = counts
                .iter()
                .map(|(rev, nodes)| {
                    let number = mine.iter().find(|r| r.name == *rev).map_or(0, |r| r.number);
                    json!({"name": rev, "revision": number, "nodes": nodes})
                })
                .collect();
            per_revision.sort_by_key(|v| std::cmp::Reverse(v["revision"].as_i64()));
            out.insert(
                name.clone(),
                rollout_status(
                    &plan,
                    &updated,
                    per_revision,
                    stored.map_or(&[][..], |s| &s.conditions),
                ),
            );
        }
        // Assignments of policies that are gone.
        for (node, report) in &by_node {
            for a in &report.spec.revisions {
                if !live.contains(&a.policy) {
                    changes
                        .entry((*node).to_owned())
                        .or_default()
                        .insert(a.policy.clone(), None);
                }
            }
        }
        if let Ok(mut r) = self.requeue.lock() {
            *r = requeue;
        }
        let reports_api: Api<DriftReport> = Api::namespaced(self.client.clone(), &self.namespace);
        for (node, node_changes) in changes {
            let mut list: BTreeMap<String, String> = by_node
                .get(node.as_str())
                .map(|r| {
                    r.spec
                        .revisions
                        .iter()
                        .map(|a| (a.policy.clone(), a.revision.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let before = list.clone();
            for (policy, revision) in node_changes {
                match revision {
                    Some(r) => list.insert(policy, r),
                    None => list.remove(&policy),
                };
            }
            if list == before && by_node.contains_key(node.as_str()) {
                continue;
            }
            let patch = assignment_patch(&node, &list);
            let name = driftless_crds::drift_report::node_report_name(&node);
            reports_api
                .patch(
                    &name,
                    &PatchParams::apply(ROLLOUT_MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await?;
            self.metrics.assignment_writes.inc();
        }
        Ok(out)
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
            "status": p.status,
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

/// How a node fares on the revision it was assigned, from its result for the policy. Pure.
pub fn health(
    assigned: Option<&str>,
    result: Option<&driftless_crds::drift_report::PolicyResult>,
) -> Health {
    // A refusal carries no revision: the node refuses what it was assigned (or the live
    // policy's selector), so it fails the gate whatever revision it names.
    let Some(result) = result.filter(|r| {
        assigned.is_some() && (r.revision.as_deref() == assigned || r.state == PolicyState::Refused)
    }) else {
        return Health::Pending;
    };
    match result.state {
        PolicyState::Failed | PolicyState::Refused => Health::Failed {
            reason: result
                .message
                .clone()
                .unwrap_or_else(|| format!("the node reports {:?}", result.state)),
        },
        _ if result.failed > 0 => Health::Failed {
            reason: format!("{} task(s) failed", result.failed),
        },
        _ => match &result.healthy_since {
            Some(since) => Health::Healthy {
                since: driftless_crds::time::of_time(since),
            },
            None => Health::Pending,
        },
    }
}

/// The server-side apply patch of a node report that sets its assignments (and creates the
/// report, labelled and named as the agent does, when it is missing). Pure.
pub fn assignment_patch(node: &str, assignments: &BTreeMap<String, String>) -> Value {
    let list: Vec<Value> = assignments
        .iter()
        .map(|(policy, revision)| json!({"policy": policy, "revision": revision}))
        .collect();
    json!({
        "apiVersion": "driftless.dev/v1alpha1",
        "kind": "DriftReport",
        "metadata": {
            "name": driftless_crds::drift_report::node_report_name(node),
            "labels": {NODE_LABEL: node},
        },
        "spec": {
            "target": {"kind": "Node", "name": node, "node": node},
            "revisions": list,
        },
    })
}

/// The Warning Event on an ApplyPolicy whose rollout stopped at a failed health gate (reason
/// `HealthGateFailed`, or `RolledBack` when the nodes went back). Pure.
pub fn gate_event(plan: &rollout::Plan) -> Event {
    Event {
        type_: EventType::Warning,
        reason: if plan.step == rollout::Step::RolledBack {
            "RolledBack".into()
        } else {
            "HealthGateFailed".into()
        },
        note: Some(status::cut(&plan.message, 1024)),
        action: "Rollout".into(),
        secondary: None,
    }
}

/// The rollout's part of an ApplyPolicy status: `currentRevision`, `updatedRevision`,
/// `updated`, `rollout` and the conditions `Progressing` and `Degraded` (their transition
/// times kept from `previous`). Pure.
pub fn rollout_status(
    plan: &rollout::Plan,
    updated: &str,
    per_revision: Vec<Value>,
    previous: &[Condition],
) -> Value {
    use rollout::Step;
    let now = time(Utc::now());
    let condition = |type_: &str, on: bool, reason: &str, message: &str| {
        let status = if on { "True" } else { "False" };
        let since = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": since})
    };
    let degraded = matches!(plan.step, Step::Degraded | Step::RolledBack);
    let progressing = matches!(plan.step, Step::Canary | Step::Soaking | Step::Progressing);
    let mut rollout = json!({"step": plan.step.as_str(), "message": plan.message});
    if let Some(f) = &plan.failed {
        rollout["failedRevision"] = f.revision.clone().into();
        if !f.node.is_empty() {
            rollout["failedNode"] = f.node.clone().into();
        }
        rollout["message"] = plan.message.clone().into();
    }
    if let Some(r) = &plan.retried {
        rollout["retried"] = r.clone().into();
    }
    if let Some(u) = &plan.undone {
        rollout["undone"] = u.clone().into();
    }
    if plan.skipped > 0 {
        rollout["skipped"] = plan.skipped.into();
    }
    if !per_revision.is_empty() {
        rollout["revisions"] = Value::Array(per_revision);
    }
    let mut status = json!({
        "updatedRevision": updated,
        "updated": plan.updated,
        "rollout": rollout,
        "conditions": [
            condition("Progressing", progressing, plan.step.as_str(), &plan.message),
            condition("Degraded", degraded, if degraded { "HealthGateFailed" } else { "Healthy" },
                      if degraded { &plan.message } else { "" }),
        ],
    });
    if let Some(c) = &plan.current {
        status["currentRevision"] = c.clone().into();
    }
    status
}

/// Adds the rollout's fields and conditions to a computed ApplyPolicy status.
fn merge_rollout(status: &mut Value, rollout: &Value) {
    let (Some(status), Some(rollout)) = (status.as_object_mut(), rollout.as_object()) else {
        return;
    };
    for (key, value) in rollout {
        if key == "conditions" {
            if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
                list.extend(value.as_array().cloned().unwrap_or_default());
            }
        } else {
            status.insert(key.clone(), value.clone());
        }
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

fn labels_hash(node: &Node) -> u64 {
    let mut hasher = DefaultHasher::new();
    node.metadata.labels.hash(&mut hasher);
    node_ready(node).hash(&mut hasher);
    node_cordoned(node).hash(&mut hasher);
    hasher.finish()
}

/// A filter of Node events: relevant when a Node appears, goes, its labels change, it turns
/// ready or not, is cordoned or uncordoned, and at the end of every (re-)list. Status
/// heartbeats are not.
pub fn node_label_changes() -> impl FnMut(&watcher::Event<Node>) -> bool + Send {
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
