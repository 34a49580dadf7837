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
use crate::host::HostPaths;
use crate::metrics::MetricsSource;
use crate::server::AppState;

/// At most this many snapshots wait while S3 is unreachable.
pub const MAX_PENDING_SNAPSHOTS: usize = 32;

/// The facts side of the agent.
pub struct Facts {
    paths: HostPaths,
    disable_defaults: bool,
    switches: Vec<(String, bool)>,
    node: String,
    thresholds: Shared,
    pusher: RwLock<Option<Arc<Pusher>>>,
    policy: RwLock<Option<(String, FactsPolicySpec)>>,
    breached: Mutex<Vec<Transition>>,
    report: Mutex<NodeReport>,
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
    ) -> Self {
        Self {
            paths,
            disable_defaults,
            switches,
            thresholds: Shared::default(),
            pusher: RwLock::new(None),
            policy: RwLock::new(None),
            breached: Mutex::new(Vec::new()),
            report: Mutex::new(NodeReport::new(&node)),
            node,
        }
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
        let spec = policy.as_ref().map(|(_, s)| s);
        let mut settings = Settings::new(self.paths.clone());
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
        if let Ok(mut current) = self.policy.write() {
            *current = policy;
        }
        Ok(())
    }

    /// Transitions seen so far (most recent last, at most 100), for the node's report.
    pub fn transitions(&self) -> Vec<Transition> {
        self.breached.lock().map(|t| t.clone()).unwrap_or_default()
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
            tokio::time::sleep(interval.max(Duration::from_secs(1))).await;
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

impl MetricsSource for Facts {
    fn encode(&self, out: &mut String) {
        self.thresholds.encode(out);
        if let Some(pusher) = self.pusher.read().ok().and_then(|p| p.clone()) {
            pusher.encode(out);
        }
    }
}
