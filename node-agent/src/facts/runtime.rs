//! Facts in the running agent: builds the collectors from the configuration's FactsPolicy and
//! the command-line switches, evaluates thresholds every `interval`, and pushes snapshots to S3
//! every `export.pushInterval`. Reloading the configuration rebuilds all of it.
//!
//! Assumptions: one FactsPolicy applies to a standalone host; when the configuration holds
//! several, the first (by file order) is used and the others are logged as ignored.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use driftless_crds::facts_policy::FactsPolicySpec;
use driftless_crds::secret::Lookup;

use super::collectors::{self, Scraper, Settings};
use super::inventory;
use super::report::NodeReport;
use super::s3push::Pusher;
use super::thresholds::{Evaluator, Shared, Transition};
use crate::config::Config;
use crate::events::{Events, NodeEvent, Severity};
use crate::host::HostPaths;
use crate::metrics::MetricsSource;
use crate::server::AppState;
use crate::status::{Entry, SharedStatus};
use driftless_crds::drift_report::{PolicyKind, PolicyResult, PolicyState};

/// At most this many snapshots wait while S3 is unreachable.
pub const MAX_PENDING_SNAPSHOTS: usize = 32;

/// The facts side of the agent.
pub struct Facts {
    paths: HostPaths,
    disable_defaults: bool,
    switches: Vec<(String, bool)>,
    options: collectors::FlagOptions,
    node: String,
    thresholds: Shared,
    pusher: RwLock<Option<Arc<Pusher>>>,
    policy: RwLock<Option<(String, FactsPolicySpec)>>,
    breached: Mutex<Vec<Transition>>,
    report: Mutex<NodeReport>,
    status: Arc<SharedStatus>,
    events: Arc<Events>,
    generation: RwLock<i64>,
    wake: tokio::sync::Notify,
}

/// The first FactsPolicy of a configuration: its name and spec.
pub fn facts_policy(config: &Config) -> Option<(String, FactsPolicySpec)> {
    let mut policies = config.resources.iter().filter_map(|r| match &r.resource {
        driftless_crds::resource::Resource::FactsPolicy(p) => {
            Some((p.metadata.name.clone().unwrap_or_default(), p.spec.clone()))
        }
        _ => None,
    });
    let first = policies.next();
    for (ignored, _) in policies {
        tracing::warn!(policy = %ignored, "more than one FactsPolicy; only the first applies on a standalone host");
    }
    first
}

impl Facts {
    /// Facts for a host, with node_exporter-style collector switches.
    pub fn new(
        paths: HostPaths,
        disable_defaults: bool,
        switches: Vec<(String, bool)>,
        node: String,
        status: Arc<SharedStatus>,
        events: Arc<Events>,
    ) -> Self {
        Self {
            paths,
            disable_defaults,
            switches,
            options: collectors::FlagOptions::default(),
            thresholds: Shared::default(),
            pusher: RwLock::new(None),
            policy: RwLock::new(None),
            breached: Mutex::new(Vec::new()),
            report: Mutex::new(NodeReport::new(&node)),
            node,
            status,
            events,
            generation: RwLock::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Collector options given as flags (`--collector.textfile.directory`, ...).
    pub fn with_flag_options(mut self, options: collectors::FlagOptions) -> Self {
        self.options = options;
        self
    }

    /// Builds collectors, thresholds and the S3 pusher for a configuration and installs the
    /// collectors into `state`. On error nothing changes.
    pub fn apply(
        &self,
        state: &AppState,
        config: &Config,
        lookup: &dyn Lookup,
    ) -> anyhow::Result<()> {
        let policy = facts_policy(config);
        let generation = config
            .of_kind("FactsPolicy")
            .find_map(|l| match &l.resource {
                driftless_crds::resource::Resource::FactsPolicy(p) => p.metadata.generation,
                _ => None,
            })
            .unwrap_or(0);
        let spec = policy.as_ref().map(|(_, s)| s);
        let mut settings = Settings::new(self.paths.clone());
        settings.flags = self.options.clone();
        if let Some(spec) = spec {
            settings.collectors = spec.collectors.clone();
            settings.facts = spec.facts.clone();
            settings.interval = spec.interval.get();
        }
        let enabled = collectors::select(
            spec.map(|s| &s.collectors),
            self.disable_defaults,
            &self.switches,
        )?;
        let scraper = Scraper::new(&settings, &enabled)?;
        let evaluator = match &policy {
            Some((name, spec)) => Evaluator::new(name, &spec.thresholds)?,
            None => Evaluator::default(),
        };
        let pusher = match spec.and_then(|s| s.export.s3.as_ref()) {
            Some(target) => Some(Arc::new(Pusher::new(
                target,
                lookup,
                &self.node,
                MAX_PENDING_SNAPSHOTS,
            )?)),
            None => None,
        };
        let serve = spec.is_none_or(|s| s.export.prometheus);
        tracing::info!(collectors = ?scraper.names(), thresholds = evaluator.states().len(), s3 = pusher.is_some(), "facts configured");
        state.set_scraper(serve.then(|| Arc::new(scraper)));
        if evaluator.states().is_empty() {
            // Nothing is evaluated without thresholds: the report says so at once (and a
            // reload that removed the thresholds clears their breaches).
            if let Ok(mut report) = self.report.lock() {
                report.record(chrono::Utc::now(), &[]);
            }
        }
        if let Ok(mut current) = self.thresholds.0.lock() {
            *current = evaluator;
        }
        if let Ok(mut current) = self.pusher.write() {
            *current = pusher;
        }
        let name = policy.as_ref().map(|(n, _)| n.clone());
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
        if let Ok(mut current) = self.generation.write() {
            *current = generation;
        }
        let no_thresholds = self
            .thresholds
            .0
            .lock()
            .map(|e| e.states().is_empty())
            .unwrap_or(true);
        self.status.update(|s, now| {
            s.retain(
                PolicyKind::FactsPolicy,
                &|n| name.as_deref() == Some(n),
                now,
            );
            if let (Some(name), true) = (&name, no_thresholds) {
                s.set(facts_entry(name, generation, &[], now), now);
            }
        });
        // Evaluate the new settings now, not after the old interval.
        self.wake.notify_one();
        Ok(())
    }

    /// Records a FactsPolicy that could not be set up on this node as failed (the previous
    /// settings keep running).
    pub fn failed(&self, name: &str, generation: i64, message: &str) {
        self.status.update(|s, now| {
            let mut entry = facts_entry(name, generation, &[], now);
            entry.result.state = PolicyState::Failed;
            entry.result.failed = 1;
            entry.result.message = Some(crate::status::cut_message(message));
            s.set(entry, now);
        });
    }

    /// Transitions seen so far (most recent last, at most 100), for the node's report.
    pub fn transitions(&self) -> Vec<Transition> {
        self.breached.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// The breached thresholds of severity `min` or higher (`POLICY/THRESHOLD (SEVERITY)`),
    /// for the rollout's health gate.
    pub fn breached_at_least(&self, min: driftless_crds::facts_policy::Severity) -> Vec<String> {
        self.thresholds
            .0
            .lock()
            .map(|e| e.breached_at_least(min))
            .unwrap_or_default()
    }

    /// The node's report: breached thresholds, and the history of breaches and clearings.
    pub fn report(&self) -> driftless_crds::drift_report::DriftReport {
        match self.report.lock() {
            Ok(report) => report.object(),
            Err(poisoned) => poisoned.into_inner().object(),
        }
    }

    /// Evaluates thresholds every policy interval and pushes snapshots every push interval,
    /// until the runtime stops.
    pub async fn run(self: Arc<Self>, state: Arc<AppState>) {
        let mut last_push: Option<Instant> = None;
        loop {
            let (interval, push_interval, has_work) =
                match self.policy.read().ok().and_then(|p| p.clone()) {
                    Some((_, spec)) => (
                        spec.interval.get(),
                        spec.export.push_interval.get(),
                        !spec.thresholds.is_empty() || spec.export.s3.is_some(),
                    ),
                    None => (Duration::from_secs(60), Duration::from_secs(300), false),
                };
            if has_work {
                self.tick(&state, push_interval, &mut last_push).await;
            }
            tokio::select! {
                () = tokio::time::sleep(interval.max(Duration::from_secs(1))) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    async fn tick(
        &self,
        state: &Arc<AppState>,
        push_interval: Duration,
        last_push: &mut Option<Instant>,
    ) {
        let paths = self.paths.clone();
        let scraper = match state.scraper.read().ok().and_then(|s| s.clone()) {
            Some(scraper) => scraper,
            None => {
                // Metrics are not served, but thresholds and snapshots still need values.
                let Some((_, spec)) = self.policy.read().ok().and_then(|p| p.clone()) else {
                    return;
                };
                let mut settings = Settings::new(paths.clone());
                settings.flags = self.options.clone();
                settings.collectors = spec.collectors.clone();
                settings.facts = spec.facts.clone();
                match collectors::select(
                    Some(&spec.collectors),
                    self.disable_defaults,
                    &self.switches,
                )
                .and_then(|enabled| Scraper::new(&settings, &enabled))
                {
                    Ok(scraper) => Arc::new(scraper),
                    Err(error) => {
                        tracing::warn!(%error, "facts collectors unavailable");
                        return;
                    }
                }
            }
        };
        // The inventory (packages and all) is only needed for a snapshot that is due.
        let pusher = self.pusher.read().ok().and_then(|p| p.clone());
        let push_due = pusher.is_some() && last_push.is_none_or(|at| at.elapsed() >= push_interval);
        let Ok((families, facts)) = tokio::task::spawn_blocking(move || {
            (
                scraper.scrape(),
                push_due.then(|| inventory::gather(&paths)),
            )
        })
        .await
        else {
            return;
        };
        let now = chrono::Utc::now();
        let (transitions, breaches) = match self.thresholds.0.lock() {
            Ok(mut evaluator) => (
                evaluator.evaluate(&families, now.timestamp_millis() as f64 / 1000.0),
                evaluator.breaches(),
            ),
            Err(_) => (Vec::new(), Vec::new()),
        };
        if let Ok(mut report) = self.report.lock() {
            report.record(now, &breaches);
        }
        let current = self
            .policy
            .read()
            .ok()
            .and_then(|p| p.as_ref().map(|(n, _)| n.clone()));
        if let Some(name) = current {
            let generation = self.generation.read().map(|g| *g).unwrap_or(0);
            self.status
                .update(|s, now| s.set(facts_entry(&name, generation, &breaches, now), now));
        }
        for t in &transitions {
            self.events.emit(transition_event(t));
        }
        for t in &transitions {
            match t {
                Transition::Breached {
                    policy,
                    threshold,
                    severity,
                    value,
                } => {
                    tracing::warn!(%policy, %threshold, %severity, value, "threshold breached");
                }
                Transition::Cleared {
                    policy,
                    threshold,
                    severity,
                } => {
                    tracing::info!(%policy, %threshold, %severity, "threshold cleared");
                }
            }
        }
        if let Ok(mut log) = self.breached.lock() {
            log.extend(transitions);
            let excess = log.len().saturating_sub(100);
            log.drain(..excess);
        }
        if let (Some(pusher), Some(facts)) = (pusher, facts) {
            *last_push = Some(Instant::now());
            pusher.enqueue(now, &facts, &families);
            pusher.flush().await;
        }
    }
}

/// The FactsPolicy's result: `Drifted` while a threshold is breached. Pure.
pub fn facts_entry(
    name: &str,
    generation: i64,
    breaches: &[super::thresholds::Breach],
    now: chrono::DateTime<chrono::Utc>,
) -> Entry {
    Entry {
        result: PolicyResult {
            kind: PolicyKind::FactsPolicy,
            name: name.to_owned(),
            generation,
            state: if breaches.is_empty() {
                PolicyState::InSync
            } else {
                PolicyState::Drifted
            },
            drifted: u32::try_from(breaches.len()).unwrap_or(u32::MAX),
            changed: 0,
            failed: 0,
            message: None,
            checked_at: crate::status::time(now),
            revision: None,
            healthy_since: None,
        },
        items: breaches.iter().map(super::report::threshold_item).collect(),
    }
}

/// The node event of a threshold transition. The note names the policy, threshold and
/// severity but not the value, so a flapping threshold is one Event with a count.
pub fn transition_event(t: &Transition) -> NodeEvent {
    match t {
        Transition::Breached {
            policy,
            threshold,
            severity,
            ..
        } => NodeEvent {
            severity: Severity::Warning,
            reason: "ThresholdBreached",
            action: "Evaluate",
            note: format!("FactsPolicy {policy}: threshold {threshold} ({severity}) breached"),
        },
        Transition::Cleared {
            policy,
            threshold,
            severity,
        } => NodeEvent {
            severity: Severity::Normal,
            reason: "ThresholdCleared",
            action: "Evaluate",
            note: format!("FactsPolicy {policy}: threshold {threshold} ({severity}) cleared"),
        },
    }
}

impl MetricsSource for Facts {
    fn encode(&self, out: &mut String) {
        self.thresholds.encode(out);
        if let Some(pusher) = self.pusher.read().ok().and_then(|p| p.clone()) {
            pusher.encode(out);
        }
    }
}
