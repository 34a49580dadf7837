//! Cluster mode (`driftless agent --kubernetes`): the policies come from the API server and
//! the node's status goes back to it.
//!
//! - One watch each on ApplyPolicies, FactsPolicies and LogPipelines (cluster-wide, as untyped
//!   objects so that one invalid object is refused, not a stuck watch) and one on the agent's
//!   own Node (a field selector on its name). No polling.
//! - [`select::decide`] turns them, with the node's labels and the Secret keys read, into what
//!   the node runs; the [`Topology`] runs it.
//! - Secret keys are read with one GET each in the secrets namespace, again every
//!   `--secret-refresh-seconds` and whenever the set of keys changes. Values live in memory only.
//! - The last good version of each selected policy (never secret values) is cached in
//!   `STATE/cluster/policies.json`; a restarted agent starts from those last good versions, and
//!   when the API server cannot be reached at start, the agent runs the cached policies and
//!   catches up once the watches work.
//! - ApplyPolicies run as the revision the operator assigned to the node: the agent watches its
//!   own DriftReport (`spec.revisions`) and the ControllerRevisions of the report namespace,
//!   and [`select::pin`] replaces each policy's spec with its assigned revision before
//!   [`select::decide`]. A policy without an assignment does not run yet.
//! - The node's DriftReport is written by [`report`], Events by [`events`].

pub mod api;
pub mod events;
pub mod report;
pub mod select;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use driftless_crds::apply_policy::ApplyPolicy;
use driftless_crds::drift_report::DriftReport;
use driftless_crds::facts_policy::FactsPolicy;
use driftless_crds::log_pipeline::LogPipeline;
use driftless_crds::resource::Resource;
use driftless_crds::secret::{MapLookup, SecretString};
use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use serde_json::Value;
use tokio::sync::Notify;

use crate::events::Events;
use crate::server::{self, AppState, Metrics};
use crate::topology::{Desired, Settings, Topology};
use select::{SecretKey, SecretValues};

/// Flags of cluster mode.
#[derive(clap::Args, Debug, Clone)]
pub struct ClusterArgs {
    /// The Node this agent runs on (the downward API's `spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Namespace of the node's DriftReport (default: the pod's namespace, POD_NAMESPACE).
    #[arg(long, env = "POD_NAMESPACE")]
    pub report_namespace: Option<String>,
    /// The only namespace Secrets named by policies are read from (default: the report
    /// namespace).
    #[arg(long, env = "DRIFTLESS_SECRETS_NAMESPACE")]
    pub secrets_namespace: Option<String>,
    /// Longest time between two writes of an unchanged node report (a heartbeat); changes are
    /// written within about a second.
    #[arg(long, env = "DRIFTLESS_REPORT_INTERVAL_SECONDS", default_value_t = 300)]
    pub report_interval_seconds: u64,
    /// How often Secret keys are read again (a rotated Secret takes effect within this time).
    #[arg(long, env = "DRIFTLESS_SECRET_REFRESH_SECONDS", default_value_t = 600)]
    pub secret_refresh_seconds: u64,
}

impl ClusterArgs {
    /// The node name, or a clear error.
    pub fn node_name(&self) -> anyhow::Result<String> {
        match self.node_name.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => Ok(name.to_owned()),
            _ => anyhow::bail!(
                "cluster mode needs the node's name: set NODE_NAME from the downward API \
                 (env: NODE_NAME, valueFrom.fieldRef.fieldPath: spec.nodeName) or pass --node-name"
            ),
        }
    }
}

/// Where the cache of selected policies lives.
fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join("cluster").join("policies.json")
}

/// The last selected policies and the Node's labels, as cached on disk.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Cached {
    labels: BTreeMap<String, String>,
    objects: Vec<Value>,
}

fn write_cache(path: &Path, cached: &Cached) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(&serde_json::to_vec(cached).unwrap_or_default())?;
    file.sync_all()?;
    std::fs::rename(tmp, path)
}

fn read_cache(path: &Path) -> Option<Cached> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The watched objects.
struct Watched {
    policies: Vec<Store<DynamicObject>>,
    kinds: Vec<ApiResource>,
    node: Store<PartialObjectMeta<Node>>,
    report: Store<DriftReport>,
    revisions: Store<ControllerRevision>,
    ready: Arc<std::sync::atomic::AtomicUsize>,
}

/// Number of watches [`Watched`] runs.
const WATCHES: usize = 6;

impl Watched {
    fn objects(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for (store, kind) in self.policies.iter().zip(&self.kinds) {
            for object in store.state() {
                let mut value = serde_json::to_value(object.as_ref()).unwrap_or(Value::Null);
                if let Some(map) = value.as_object_mut() {
                    map.insert("apiVersion".into(), kind.api_version.clone().into());
                    map.insert("kind".into(), kind.kind.clone().into());
                }
                out.push(value);
            }
        }
        out
    }

    fn node(&self) -> Option<(BTreeMap<String, String>, Option<String>)> {
        self.node.state().first().map(|n| {
            (
                n.metadata.labels.clone().unwrap_or_default(),
                n.metadata.uid.clone(),
            )
        })
    }

    fn all_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Relaxed) >= WATCHES
    }

    /// Policy → assigned revision, from the node's report.
    fn assignments(&self) -> BTreeMap<String, String> {
        self.report
            .state()
            .first()
            .map(|r| {
                r.spec
                    .revisions
                    .iter()
                    .map(|a| (a.policy.clone(), a.revision.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Revision name → its data, and whether it is its policy's newest.
    fn revision_data(&self) -> BTreeMap<String, select::Revision> {
        let all = self.revisions.state();
        let policy = |r: &ControllerRevision| {
            r.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(driftless_crds::rbac::REVISION_POLICY_UID_LABEL))
                .cloned()
        };
        let mut newest: BTreeMap<Option<String>, i64> = BTreeMap::new();
        for r in &all {
            let top = newest.entry(policy(r)).or_insert(r.revision);
            *top = (*top).max(r.revision);
        }
        all.iter()
            .filter_map(|r| {
                Some((
                    r.metadata.name.clone()?,
                    select::Revision {
                        data: r.data.as_ref()?.0.clone(),
                        newest: newest.get(&policy(r)) == Some(&r.revision),
                    },
                ))
            })
            .collect()
    }
}

fn spawn_watch<K, S>(stream: S, wake: Arc<Notify>, ready: Arc<std::sync::atomic::AtomicUsize>)
where
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    K: Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        let mut counted = false;
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::InitDone) if !counted => {
                    counted = true;
                    ready.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    wake.notify_one();
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Ok(_) => wake.notify_one(),
                Err(error) => tracing::warn!(%error, "watch failed; retrying"),
            }
        }
    });
}

fn watch(client: &kube::Client, node: &str, report_namespace: &str, wake: &Arc<Notify>) -> Watched {
    let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let kinds = vec![
        ApiResource::erase::<ApplyPolicy>(&()),
        ApiResource::erase::<FactsPolicy>(&()),
        ApiResource::erase::<LogPipeline>(&()),
    ];
    let mut policies = Vec::new();
    for kind in &kinds {
        let writer = reflector::store::Writer::<DynamicObject>::new(kind.clone());
        let reader = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), kind);
        let stream = reflector::reflector(
            writer,
            watcher(api, watcher::Config::default()).modify(|o: &mut DynamicObject| {
                o.metadata.managed_fields = None;
                o.metadata.annotations = None;
                if let Some(map) = o.data.as_object_mut() {
                    map.remove("status");
                }
            }),
        )
        .default_backoff();
        spawn_watch(stream, wake.clone(), ready.clone());
        policies.push(reader);
    }
    let (node_store, node_writer) = reflector::store();
    let nodes: Api<PartialObjectMeta<Node>> = Api::all(client.clone());
    let stream = reflector::reflector(
        node_writer,
        watcher(
            nodes,
            watcher::Config::default().fields(&format!("metadata.name={node}")),
        )
        .modify(|n: &mut PartialObjectMeta<Node>| {
            n.metadata.managed_fields = None;
            n.metadata.annotations = None;
        }),
    )
    .default_backoff();
    spawn_watch(stream, wake.clone(), ready.clone());
    let (report_store, report_writer) = reflector::store();
    let reports: Api<DriftReport> = Api::namespaced(client.clone(), report_namespace);
    let name = crate::facts::report::report_name(node);
    let stream = reflector::reflector(
        report_writer,
        watcher(
            reports,
            watcher::Config::default().fields(&format!("metadata.name={name}")),
        )
        .modify(|r: &mut DriftReport| {
            // Only spec.revisions is read.
            r.metadata.managed_fields = None;
            r.status = None;
        }),
    )
    .default_backoff();
    spawn_watch(stream, wake.clone(), ready.clone());
    let (revision_store, revision_writer) = reflector::store();
    let revisions: Api<ControllerRevision> = Api::namespaced(client.clone(), report_namespace);
    let stream = reflector::reflector(
        revision_writer,
        watcher(
            revisions,
            watcher::Config::default().labels(driftless_crds::rbac::REVISION_POLICY_UID_LABEL),
        )
        .modify(|r: &mut ControllerRevision| {
            r.metadata.managed_fields = None;
        }),
    )
    .default_backoff();
    spawn_watch(stream, wake.clone(), ready.clone());
    Watched {
        policies,
        kinds,
        node: node_store,
        report: report_store,
        revisions: revision_store,
        ready,
    }
}

/// Secret keys read so far, with when.
#[derive(Default)]
struct SecretCache(BTreeMap<SecretKey, (Result<SecretString, String>, Instant)>);

impl SecretCache {
    async fn refresh(
        &mut self,
        api: &Api<Secret>,
        needed: &std::collections::BTreeSet<SecretKey>,
        max_age: Duration,
    ) -> bool {
        self.0.retain(|k, _| needed.contains(k));
        let mut changed = false;
        let mut by_secret: BTreeMap<&str, Option<Result<Secret, String>>> = BTreeMap::new();
        for key in needed {
            let fresh = self
                .0
                .get(key)
                .is_some_and(|(_, at)| at.elapsed() < max_age);
            if fresh {
                continue;
            }
            let entry = by_secret.entry(key.0.as_str()).or_default();
            if entry.is_none() {
                *entry = Some(match api.get_opt(&key.0).await {
                    Ok(Some(secret)) => Ok(secret),
                    Ok(None) => Err("not found".to_owned()),
                    Err(kube::Error::Api(status)) => Err(status.message.clone()),
                    Err(error) => Err(error.to_string()),
                });
            }
            let value = match entry.as_ref() {
                Some(Ok(secret)) => {
                    let bytes = secret
                        .data
                        .as_ref()
                        .and_then(|d| d.get(&key.1))
                        .map(|b| b.0.clone())
                        .or_else(|| {
                            secret
                                .string_data
                                .as_ref()
                                .and_then(|d| d.get(&key.1))
                                .map(|s| s.clone().into_bytes())
                        });
                    match bytes {
                        Some(bytes) => String::from_utf8(bytes)
                            .map(SecretString::new)
                            .map_err(|_| "is not UTF-8 text".to_owned()),
                        None => Err(format!("has no key {:?}", key.1)),
                    }
                }
                Some(Err(why)) => Err(why.clone()),
                None => Err("not read".to_owned()),
            };
            let old = self.0.insert(key.clone(), (value.clone(), Instant::now()));
            changed |= old.map(|(v, _)| v) != Some(value);
        }
        changed
    }

    fn values(&self) -> SecretValues {
        self.0
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect()
    }
}

/// A short fingerprint of a decision, to reload only when something changed.
fn fingerprint(decision: &select::Decision) -> String {
    let mut out = String::new();
    for l in &decision.config.resources {
        let generation = match &l.resource {
            Resource::ApplyPolicy(p) => p.metadata.generation,
            Resource::FactsPolicy(p) => p.metadata.generation,
            Resource::LogPipeline(p) => p.metadata.generation,
            Resource::DriftScan(p) => p.metadata.generation,
        };
        let revision = match &l.resource {
            Resource::ApplyPolicy(p) => crate::topology::apply_loop::revision_of(p),
            _ => None,
        };
        out.push_str(&format!(
            "{}/{}@{generation:?}:{revision:?};",
            l.resource.kind(),
            l.resource.name()
        ));
    }
    for (k, v) in &decision.digests {
        out.push_str(&format!("{k}={v};"));
    }
    for r in &decision.refusals {
        out.push_str(&format!(
            "!{}/{}@{}:{};",
            r.kind.as_str(),
            r.name,
            r.generation,
            r.message
        ));
    }
    out
}

fn to_desired(decision: select::Decision) -> Desired {
    Desired {
        config: decision.config,
        lookup: Arc::new(MapLookup {
            env: std::env::vars().collect(),
            secrets: decision.secrets,
        }),
        refusals: decision.refusals,
        secrets_digests: decision.digests,
    }
}

/// Runs cluster mode until SIGINT or SIGTERM.
pub async fn run(args: &ClusterArgs, settings: Settings, listen: SocketAddr) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let node = settings.node.clone();
    let config = kube::Config::infer()
        .await
        .context("finding the API server (in-cluster service account or KUBECONFIG)")?;
    let report_namespace = args
        .report_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let secrets_namespace = args
        .secrets_namespace
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| report_namespace.clone());
    let requests = api::Requests::default();
    let client = api::client(config, requests.clone())?;
    let state = Arc::new(AppState::new(Metrics::new(), Default::default()));
    state.add_source(Arc::new(requests));
    let (event_tx, event_rx) = Events::channel();
    let topology = Arc::new(Topology::new(
        &settings,
        state.clone(),
        Arc::new(Events::to_channel(event_tx)),
    ));
    topology.start();
    let wake = Arc::new(Notify::new());
    let watched = watch(&client, &node, &report_namespace, &wake);
    let node_uid = Arc::new(Mutex::new(None::<String>));
    tokio::spawn(events::run(
        client.clone(),
        node.clone(),
        node_uid.clone(),
        event_rx,
    ));
    tokio::spawn(report::run(
        client.clone(),
        report_namespace.clone(),
        topology.status.clone(),
        Duration::from_secs(args.report_interval_seconds.max(10)),
    ));
    tracing::info!(%node, reports = %report_namespace, secrets = %secrets_namespace, "watching policies and the node");
    let source = tokio::spawn(follow(
        client.clone(),
        watched,
        wake,
        topology.clone(),
        node_uid,
        secrets_namespace,
        cache_path(&settings.state_dir),
        Duration::from_secs(args.secret_refresh_seconds.max(10)),
    ));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /metrics and /report");
    let mut terminate = signal(SignalKind::terminate())?;
    let served = axum::serve(listener, server::router(state))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("shutting down");
        })
        .await;
    source.abort();
    let stopper = topology.clone();
    tokio::task::spawn_blocking(move || stopper.stop()).await?;
    served?;
    Ok(())
}

/// How long the agent waits for the watches before it runs the cached policies.
const OFFLINE_AFTER: Duration = Duration::from_secs(10);

#[allow(clippy::too_many_arguments)]
async fn follow(
    client: kube::Client,
    watched: Watched,
    wake: Arc<Notify>,
    topology: Arc<Topology>,
    node_uid: Arc<Mutex<Option<String>>>,
    secrets_namespace: String,
    cache: PathBuf,
    refresh: Duration,
) {
    let secrets_api: Api<Secret> = Api::namespaced(client, &secrets_namespace);
    let mut secrets = SecretCache::default();
    // The last good versions survive a restart: they are what the cache holds.
    let cached = read_cache(&cache).unwrap_or_default();
    let (mut last_good, mut good_raw) = select::seed(&cached.objects);
    let mut applied: Option<String> = None;
    let started = Instant::now();
    let mut offline = false;
    loop {
        tokio::select! {
            () = wake.notified() => {
                // Let a burst of watch events settle into one decision.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            () = tokio::time::sleep(refresh.min(OFFLINE_AFTER)) => {}
        }
        let live = watched.all_ready().then(|| watched.node()).flatten();
        let (labels, objects) = match live {
            Some((labels, uid)) => {
                if let Ok(mut slot) = node_uid.lock() {
                    *slot = uid;
                }
                offline = false;
                let objects = select::pin(
                    watched.objects(),
                    &watched.assignments(),
                    &watched.revision_data(),
                    &good_raw,
                );
                (labels, objects)
            }
            None if !offline && applied.is_none() && started.elapsed() >= OFFLINE_AFTER => {
                match read_cache(&cache) {
                    Some(cached) => {
                        tracing::warn!(cache = %cache.display(), "the API server has not answered; running the cached policies until it does");
                        offline = true;
                        (cached.labels, cached.objects)
                    }
                    None => continue,
                }
            }
            None => {
                if watched.all_ready() {
                    tracing::warn!("the Node object of this agent is not visible; waiting for it");
                }
                continue;
            }
        };
        let needed = select::needed_secrets(&objects, &labels, &secrets_namespace);
        if !offline {
            secrets.refresh(&secrets_api, &needed, refresh).await;
        }
        let decision = select::decide(
            &objects,
            &labels,
            &secrets_namespace,
            &secrets.values(),
            &mut last_good,
        );
        let print = fingerprint(&decision);
        if applied.as_deref() == Some(print.as_str()) {
            continue;
        }
        if !offline {
            good_raw = select::good_objects(&objects, &labels, &decision.refusals, &good_raw);
            let cached = Cached {
                labels: labels.clone(),
                objects: good_raw.values().cloned().collect(),
            };
            if let Err(error) = write_cache(&cache, &cached) {
                tracing::warn!(%error, cache = %cache.display(), "cannot cache the policies");
            }
        }
        tracing::info!(
            policies = decision.config.resources.len(),
            refused = decision.refusals.len(),
            "policies changed; reloading"
        );
        let desired = to_desired(decision);
        let t = topology.clone();
        tokio::task::block_in_place(move || t.reload(&desired));
        applied = Some(print);
    }
}

#[cfg(test)]
mod tests;
