//! The agent's running parts and their one owner: the apply loop, facts (collectors,
//! thresholds, S3 snapshots) and each log pipeline, started, reloaded and stopped together from
//! a [`Desired`] state that a policy source produces — a configuration directory (standalone) or
//! the API server (cluster mode). The two modes differ only in that source and in where the
//! node's status goes.
//!
//! Guarantees of [`Topology::reload`]:
//! - Each part takes its policies from the desired state; a part that cannot take its new
//!   policy keeps the previous one running and records the policy as `Failed`.
//! - Refused policies (a check failed on this node, a secret is missing) are recorded as
//!   `Refused` and announced once per generation with a `PolicyRefused` event; the version
//!   that ran before keeps running (the source keeps it in the desired state).
//! - Log pipelines that did not change keep running; changed ones restart from their
//!   checkpoint, so no line is lost.

pub mod apply_loop;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use driftless_crds::drift_report::{PolicyKind, PolicyResult, PolicyState};
use driftless_crds::resource::Resource;

use crate::apply::Root;
use crate::config::Config;
use crate::events::{Events, NodeEvent, Severity};
use crate::facts::runtime::Facts;
use crate::host::HostPaths;
use crate::logs::metrics::LogMetrics;
use crate::logs::pipeline::Pipelines;
use crate::server::AppState;
use crate::status::{cut_message, Entry, SharedStatus};
use apply_loop::{ApplyLoop, SharedLookup, Wanted};

/// A policy the node refused, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Kind of the policy.
    pub kind: PolicyKind,
    /// Name of the policy.
    pub name: String,
    /// The refused generation.
    pub generation: i64,
    /// Why (field path and what was expected), secrets not included.
    pub message: String,
}

/// What the node should run.
#[derive(Clone)]
pub struct Desired {
    /// The valid policies selected for this node (for a refused one: the version that ran
    /// before, if any).
    pub config: Config,
    /// Secret and environment values.
    pub lookup: SharedLookup,
    /// Policies refused on this node.
    pub refusals: Vec<Refusal>,
    /// Digest of the secret values each policy uses (`KIND/NAME`), so a changed secret value
    /// reloads what uses it.
    pub secrets_digests: BTreeMap<String, String>,
}

/// Where the parts keep their state and what they run with.
pub struct Settings {
    /// The host.
    pub host: HostPaths,
    /// `--state-dir`: log checkpoints, the policy cache.
    pub state_dir: PathBuf,
    /// Where audit records wait.
    pub audit_spool: PathBuf,
    /// Where relative paths of ApplyPolicy tasks are read (the configuration directory).
    pub config_dir: PathBuf,
    /// Collector switches.
    pub disable_defaults: bool,
    /// `--collector.NAME` / `--no-collector.NAME`.
    pub switches: Vec<(String, bool)>,
    /// Collector options given as flags.
    pub collector_options: crate::facts::collectors::FlagOptions,
    /// The node's name.
    pub node: String,
    /// Check only: every ApplyPolicy runs as in `Audit` mode.
    pub dry_run: bool,
}

/// The agent's running parts.
pub struct Topology {
    /// The HTTP state (`/metrics`, `/report`).
    pub state: Arc<AppState>,
    /// The node's status.
    pub status: Arc<SharedStatus>,
    /// Events about the node.
    pub events: Arc<Events>,
    facts: Arc<Facts>,
    apply: Arc<ApplyLoop>,
    pipelines: Mutex<Pipelines>,
    announced: Mutex<BTreeSet<(PolicyKind, String, i64)>>,
}

impl Topology {
    /// The parts, not yet running; `events` is where node events go.
    pub fn new(settings: &Settings, state: Arc<AppState>, events: Arc<Events>) -> Self {
        let status = Arc::new(SharedStatus::new(&settings.node));
        let facts = Arc::new(
            Facts::new(
                settings.host.clone(),
                settings.disable_defaults,
                settings.switches.clone(),
                settings.node.clone(),
                status.clone(),
                events.clone(),
            )
            .with_flag_options(settings.collector_options.clone()),
        );
        let apply = Arc::new(
            ApplyLoop::new(
                Root {
                    paths: settings.host.clone(),
                    pending: Default::default(),
                },
                settings.dry_run,
                settings.config_dir.clone(),
                settings.audit_spool.clone(),
                status.clone(),
                events.clone(),
                {
                    let facts = facts.clone();
                    Arc::new(move |min| facts.breached_at_least(min))
                },
            )
            .with_health_file(settings.state_dir.join("rollout-health.json")),
        );
        let log_metrics = LogMetrics::default();
        state.add_source(Arc::new(log_metrics.clone()));
        state.add_source(apply.clone());
        state.set_node_status(status.clone());
        state.set_facts(facts.clone());
        let pipelines = Pipelines::new(
            settings.host.clone(),
            settings.state_dir.clone(),
            log_metrics,
        );
        Self {
            state,
            status,
            events,
            facts,
            apply,
            pipelines: Mutex::new(pipelines),
            announced: Mutex::new(BTreeSet::new()),
        }
    }

    /// Starts the loops (facts evaluation, the apply loop) on the current runtime.
    pub fn start(&self) {
        tokio::spawn(self.facts.clone().run(self.state.clone()));
        tokio::spawn(self.apply.clone().run());
    }

    /// Makes the running parts match `desired`.
    pub fn reload(&self, desired: &Desired) {
        let config = &desired.config;
        self.state.metrics.config_loaded(Ok(config));
        // Facts: the first FactsPolicy (the source refuses the others in a cluster).
        if let Err(error) = self
            .facts
            .apply(&self.state, config, desired.lookup.as_ref())
        {
            tracing::error!(%error, "facts settings refused; keeping the previous ones");
            if let Some((name, generation)) = first_of(config, PolicyKind::FactsPolicy) {
                self.facts.failed(&name, generation, &format!("{error:#}"));
            }
        }
        self.reload_logs(desired);
        let wanted: Vec<Wanted> = config
            .resources
            .iter()
            .filter_map(|l| match &l.resource {
                Resource::ApplyPolicy(p) => Some(Wanted {
                    policy: (**p).clone(),
                    origin: l.origin.clone(),
                    secrets_digest: desired
                        .secrets_digests
                        .get(&format!(
                            "ApplyPolicy/{}",
                            p.metadata.name.as_deref().unwrap_or_default()
                        ))
                        .cloned()
                        .unwrap_or_default(),
                }),
                _ => None,
            })
            .collect();
        self.apply.set(wanted, desired.lookup.clone());
        self.record_refusals(&desired.refusals);
        if let Ok(mut current) = self.state.config.lock() {
            *current = config.clone();
        }
    }

    fn reload_logs(&self, desired: &Desired) {
        let mut wanted = BTreeMap::new();
        let mut generations = BTreeMap::new();
        for l in &desired.config.resources {
            if let Resource::LogPipeline(p) = &l.resource {
                let name = p.metadata.name.clone().unwrap_or_default();
                generations.insert(name.clone(), p.metadata.generation.unwrap_or(0));
                wanted.insert(name, p.spec.clone());
            }
        }
        let Ok(mut pipelines) = self.pipelines.lock() else {
            return;
        };
        let errors: BTreeMap<String, String> = pipelines
            .apply(&wanted, desired.lookup.as_ref())
            .into_iter()
            .map(|(name, e)| (name, e.to_string()))
            .collect();
        let running: BTreeSet<String> = pipelines.names().into_iter().collect();
        drop(pipelines);
        self.status.update(|s, now| {
            s.retain(PolicyKind::LogPipeline, &|n| wanted.contains_key(n), now);
            for name in wanted.keys() {
                let generation = generations.get(name).copied().unwrap_or(0);
                let (state, message) = match errors.get(name) {
                    Some(e) => (PolicyState::Failed, Some(cut_message(e))),
                    None => (PolicyState::InSync, None),
                };
                if state == PolicyState::Failed {
                    self.events.emit(NodeEvent {
                        severity: Severity::Warning,
                        reason: "PipelineFailed",
                        action: "Start",
                        note: format!(
                            "LogPipeline {name}: {}{}",
                            message.as_deref().unwrap_or_default(),
                            if running.contains(name) {
                                " (the previous version keeps running)"
                            } else {
                                ""
                            }
                        ),
                    });
                }
                s.set(
                    Entry {
                        result: PolicyResult {
                            kind: PolicyKind::LogPipeline,
                            name: name.clone(),
                            generation,
                            state,
                            drifted: 0,
                            changed: 0,
                            failed: u32::from(state == PolicyState::Failed),
                            message,
                            checked_at: crate::status::time(now),
                            revision: None,
                            healthy_since: None,
                        },
                        items: Vec::new(),
                    },
                    now,
                );
            }
        });
    }

    fn record_refusals(&self, refusals: &[Refusal]) {
        let keys: BTreeSet<(PolicyKind, String)> =
            refusals.iter().map(|r| (r.kind, r.name.clone())).collect();
        let mut fresh = Vec::new();
        if let Ok(mut announced) = self.announced.lock() {
            announced.retain(|(k, n, _)| keys.contains(&(*k, n.clone())));
            for r in refusals {
                if announced.insert((r.kind, r.name.clone(), r.generation)) {
                    fresh.push(r.clone());
                }
            }
        }
        for r in &fresh {
            tracing::error!(kind = r.kind.as_str(), policy = %r.name, generation = r.generation, problem = %r.message, "policy refused on this node; the previous version keeps running");
            self.events.emit(NodeEvent {
                severity: Severity::Warning,
                reason: "PolicyRefused",
                action: "Load",
                note: cut_message(&format!(
                    "{} {} (generation {}) refused: {}",
                    r.kind.as_str(),
                    r.name,
                    r.generation,
                    r.message
                )),
            });
        }
        self.status.update(|s, now| {
            for kind in PolicyKind::ALL {
                for r in refusals.iter().filter(|r| r.kind == kind) {
                    s.set_refusal(
                        (kind, r.name.clone()),
                        Some(PolicyResult {
                            kind,
                            name: r.name.clone(),
                            generation: r.generation,
                            state: PolicyState::Refused,
                            drifted: 0,
                            changed: 0,
                            failed: 1,
                            message: Some(cut_message(&r.message)),
                            checked_at: crate::status::time(now),
                            revision: None,
                            healthy_since: None,
                        }),
                        now,
                    );
                }
            }
            s.clear_refusals_except(&keys, now);
        });
    }

    /// Stops the log pipelines (each writes its checkpoint).
    pub fn stop(&self) {
        if let Ok(mut pipelines) = self.pipelines.lock() {
            pipelines.stop_all();
        }
    }

    /// Names of the running log pipelines and held ApplyPolicies (for the start-up log).
    pub fn running(&self) -> (Vec<String>, Vec<String>) {
        let logs = self.pipelines.lock().map(|p| p.names()).unwrap_or_default();
        (logs, self.apply.names())
    }
}

fn first_of(config: &Config, kind: PolicyKind) -> Option<(String, i64)> {
    config
        .of_kind(kind.as_str())
        .find_map(|l| match &l.resource {
            Resource::FactsPolicy(p) => Some((
                p.metadata.name.clone().unwrap_or_default(),
                p.metadata.generation.unwrap_or(0),
            )),
            _ => None,
        })
}
