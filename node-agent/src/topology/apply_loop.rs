//! The agent's apply loop: runs every ApplyPolicy it holds on start, whenever the policy
//! changes, and every `spec.interval`; `Enforce` applies, `Audit` only checks.
//!
//! Guarantees:
//! - Runs never overlap: one policy at a time, on the blocking pool, in name order of the due
//!   policies.
//! - A failing task only fails its policy's run: facts and log forwarding run elsewhere.
//! - Each run updates the node's status (result and items), the `driftless_apply_*` metrics and
//!   the policy's audit trail (`spec.audit`), and emits an `ApplyFailed` event when a task failed.
//! - In a cluster the policy is a revision the operator assigned (annotation [`REVISION_ANNOTATION`]):
//!   the result names it, runs the rollout's health checks (`spec.rollout.canary.healthCheck`:
//!   probes, and the node's breached FactsPolicy thresholds) after each successful run, and says since when the revision has been healthy
//!   (`healthySince`). While a revision with health checks is younger than the soak, the policy
//!   runs again every [`PROBE_PERIOD`], so its checks pass for the whole soak or fail it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftless_crds::apply_policy::ApplyPolicy;
use driftless_crds::drift_report::{PolicyKind, PolicyResult, PolicyState};
use driftless_crds::facts_policy::Severity;
use driftless_crds::resource::Resource;
use driftless_crds::secret::Lookup;
use tokio::sync::Notify;

use crate::apply::report::{ApplyReport, PolicyReport, Status};
use crate::apply::{self, Environment, Options, Root};
use crate::config::{Config, Loaded, Origin};
use crate::events::{self, Events, NodeEvent};
use crate::metrics::{Family, Kind, MetricsSource};
use crate::status::{cut_message, Entry, SharedStatus};

/// Annotation naming the ControllerRevision a cluster-mode policy was taken from.
pub const REVISION_ANNOTATION: &str = "driftless.dev/revision";
/// How often a revision with health checks runs during its soak.
pub const PROBE_PERIOD: Duration = Duration::from_secs(10);

/// A lookup shared across threads.
pub type SharedLookup = Arc<dyn Lookup + Send + Sync>;

/// The node's breached FactsPolicy thresholds of a severity or higher (for the health gate).
pub type Breaches = Arc<dyn Fn(Severity) -> Vec<String> + Send + Sync>;

/// One ApplyPolicy as the loop holds it.
#[derive(Clone)]
pub struct Wanted {
    /// The policy.
    pub policy: ApplyPolicy,
    /// Where it came from (a file, or `ApplyPolicy/NAME` in a cluster).
    pub origin: Origin,
    /// Digest of the secret values it uses: a changed secret runs it again.
    pub secrets_digest: String,
}

struct Held {
    wanted: Wanted,
    next: Instant,
}

/// The last run of each policy, for `/metrics`.
#[derive(Clone, Debug, Default)]
struct LastRun {
    tasks: BTreeMap<&'static str, usize>,
    runs: BTreeMap<&'static str, u64>,
    at: f64,
    seconds: f64,
}

/// The loop. Create with [`ApplyLoop::new`], feed with [`ApplyLoop::set`], drive with
/// [`ApplyLoop::run`].
pub struct ApplyLoop {
    root: Root,
    dry_run: bool,
    config_dir: PathBuf,
    spool: PathBuf,
    status: Arc<SharedStatus>,
    events: Arc<Events>,
    held: Mutex<(BTreeMap<String, Held>, Option<SharedLookup>)>,
    last: Mutex<BTreeMap<String, LastRun>>,
    /// Per policy: the revision and since when its runs have been healthy.
    healthy: Mutex<BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)>>,
    breaches: Breaches,
    /// Where `healthy` is kept across restarts (a soak goes on where it was).
    health_file: Option<PathBuf>,
    wake: Notify,
}

impl ApplyLoop {
    /// A loop for the host at `root`; `config_dir` is where relative `src` paths are read
    /// (the configuration directory, standalone), `spool` where audit records wait. With
    /// `dry_run` every policy only checks, as in `Audit` mode.
    pub fn new(
        root: Root,
        dry_run: bool,
        config_dir: PathBuf,
        spool: PathBuf,
        status: Arc<SharedStatus>,
        events: Arc<Events>,
        breaches: Breaches,
    ) -> Self {
        Self {
            root,
            dry_run,
            config_dir,
            spool,
            status,
            events,
            held: Mutex::new((BTreeMap::new(), None)),
            last: Mutex::new(BTreeMap::new()),
            healthy: Mutex::new(BTreeMap::new()),
            breaches,
            health_file: None,
            wake: Notify::new(),
        }
    }

    /// Keeps since when each revision has been healthy in `path` (written when it changes),
    /// and starts from what it holds, so an agent restart does not restart a soak.
    pub fn with_health_file(mut self, path: PathBuf) -> Self {
        if let Ok(map) = self.healthy.get_mut() {
            *map = read_health(&path);
        }
        self.health_file = Some(path);
        self
    }

    /// Makes the held policies `wanted`: new or changed ones (spec, generation or secret values)
    /// run at once; removed ones stop running and leave the status and metrics.
    pub fn set(&self, wanted: Vec<Wanted>, lookup: SharedLookup) {
        let now = Instant::now();
        let names: Vec<String> = wanted.iter().map(|w| name_of(&w.policy)).collect();
        if let Ok(mut guard) = self.held.lock() {
            let (held, current) = &mut *guard;
            held.retain(|name, _| names.contains(name));
            for w in wanted {
                let name = name_of(&w.policy);
                let same = held.get(&name).is_some_and(|h| {
                    h.wanted.policy.spec == w.policy.spec
                        && h.wanted.policy.metadata.generation == w.policy.metadata.generation
                        && h.wanted.secrets_digest == w.secrets_digest
                });
                if same {
                    if let Some(h) = held.get_mut(&name) {
                        h.wanted.origin = w.origin;
                    }
                } else {
                    held.insert(
                        name,
                        Held {
                            wanted: w,
                            next: now,
                        },
                    );
                }
            }
            *current = Some(lookup);
        }
        if let Ok(mut last) = self.last.lock() {
            last.retain(|name, _| names.contains(name));
        }
        self.status.update(|s, now| {
            s.retain(
                PolicyKind::ApplyPolicy,
                &|n| names.iter().any(|k| k == n),
                now,
            )
        });
        self.wake.notify_one();
    }

    /// Names of the held policies.
    pub fn names(&self) -> Vec<String> {
        self.held
            .lock()
            .map(|g| g.0.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs due policies forever (until the runtime stops).
    pub async fn run(self: Arc<Self>) {
        loop {
            let (due, next) = self.due(Instant::now());
            if due.is_empty() {
                let wait = next.map_or(Duration::from_secs(3600), |n| {
                    n.saturating_duration_since(Instant::now())
                });
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = self.wake.notified() => {}
                }
                continue;
            }
            let this = self.clone();
            let ran = tokio::task::spawn_blocking(move || this.run_batch(due)).await;
            if let Err(error) = ran {
                tracing::error!(%error, "apply run stopped unexpectedly");
            }
        }
    }

    /// The due policies (with the lookup) and when the next one is due otherwise.
    fn due(&self, now: Instant) -> (Vec<(Wanted, SharedLookup)>, Option<Instant>) {
        let Ok(mut guard) = self.held.lock() else {
            return (Vec::new(), None);
        };
        let (held, lookup) = &mut *guard;
        let Some(lookup) = lookup.clone() else {
            return (Vec::new(), None);
        };
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        let healthy = self.healthy.lock().map(|h| h.clone()).unwrap_or_default();
        let wall = chrono::Utc::now();
        for h in held.values_mut() {
            if h.next <= now {
                due.push((h.wanted.clone(), lookup.clone()));
                let mut every = h.wanted.policy.spec.interval.get();
                if soaking(&h.wanted.policy, &healthy, wall) {
                    every = every.min(PROBE_PERIOD);
                }
                h.next = now + every.max(Duration::from_secs(1));
            }
            next = Some(next.map_or(h.next, |n| n.min(h.next)));
        }
        (due, next)
    }

    /// Runs policies one after the other (blocking).
    fn run_batch(&self, due: Vec<(Wanted, SharedLookup)>) {
        let facts = serde_json::to_value(crate::facts::inventory::gather(&self.root.paths))
            .unwrap_or(serde_json::Value::Null);
        for (wanted, lookup) in due {
            self.run_one(&wanted, lookup.as_ref(), &facts);
        }
    }

    fn run_one(
        &self,
        wanted: &Wanted,
        lookup: &(dyn Lookup + Send + Sync),
        facts: &serde_json::Value,
    ) {
        let name = name_of(&wanted.policy);
        let started = Instant::now();
        let config = Config {
            resources: vec![Loaded {
                resource: Resource::ApplyPolicy(Box::new(wanted.policy.clone())),
                origin: wanted.origin.clone(),
            }],
        };
        let env = Environment {
            root: &self.root,
            facts,
            secrets: lookup,
            config_dir: &self.config_dir,
        };
        let options = Options {
            dry_run: self.dry_run,
            ..Options::default()
        };
        let report = apply::apply(&config, &env, &options);
        let seconds = started.elapsed().as_secs_f64();
        for problem in crate::audit::deliver(&report, &config, lookup, &self.spool) {
            tracing::warn!(policy = %name, %problem, "audit");
        }
        let Some(policy_report) = report.policies.first() else {
            return;
        };
        let generation = wanted.policy.metadata.generation.unwrap_or(0);
        let now = chrono::Utc::now();
        let mut entry = entry_of(&report, policy_report, generation, now);
        if let Some(revision) = revision_of(&wanted.policy) {
            let healthy = entry.result.state != PolicyState::Failed && entry.result.failed == 0;
            let checks = wanted
                .policy
                .spec
                .rollout
                .canary
                .as_ref()
                .and_then(|c| c.health_check.as_ref());
            if let (true, Some(checks)) = (healthy, checks) {
                let checked = probe(&self.root, checks)
                    .and_then(|()| threshold_gate(checks.threshold_severity, &*self.breaches));
                if let Err(why) = checked {
                    entry.result.state = PolicyState::Failed;
                    entry.result.message =
                        Some(cut_message(&format!("health check failed: {why}")));
                }
            }
            entry.result.revision = Some(revision.clone());
            if let Ok(mut map) = self.healthy.lock() {
                let before = map.get(&name).cloned();
                if entry.result.state == PolicyState::Failed {
                    map.remove(&name);
                } else {
                    let since = match map.get(&name) {
                        Some((r, since)) if *r == revision => *since,
                        _ => now,
                    };
                    map.insert(name.clone(), (revision, since));
                    entry.result.healthy_since = Some(crate::status::time(since));
                }
                if let (Some(path), true) = (&self.health_file, map.get(&name) != before.as_ref()) {
                    if let Err(error) = write_health(path, &map) {
                        tracing::warn!(path = %path.display(), %error, "cannot keep the rollout health record");
                    }
                }
            }
        }
        let counts = report.counts();
        tracing::info!(
            policy = %name,
            check_only = policy_report.check_only,
            changed = counts.changed,
            failed = counts.failed,
            unchanged = counts.unchanged,
            seconds,
            "policy run"
        );
        if entry.result.state == PolicyState::Failed {
            self.events.emit(NodeEvent {
                severity: events::Severity::Warning,
                reason: "ApplyFailed",
                action: "Apply",
                note: format!(
                    "ApplyPolicy {name}: {}",
                    entry.result.message.as_deref().unwrap_or("a task failed")
                ),
            });
        }
        if let Ok(mut last) = self.last.lock() {
            let run = last.entry(name.clone()).or_default();
            run.tasks.clear();
            for task in &policy_report.tasks {
                *run.tasks.entry(task.status.as_str()).or_default() += 1;
            }
            let result = if counts.failed > 0 {
                "failure"
            } else {
                "success"
            };
            *run.runs.entry(result).or_default() += 1;
            run.at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or_default();
            run.seconds = seconds;
        }
        let held = self
            .held
            .lock()
            .map(|g| g.0.contains_key(&name))
            .unwrap_or(false);
        if held {
            self.status.update(|s, now| s.set(entry, now));
        }
    }
}

fn name_of(policy: &ApplyPolicy) -> String {
    policy.metadata.name.clone().unwrap_or_default()
}

/// The ControllerRevision a cluster-mode policy was taken from.
pub fn revision_of(policy: &ApplyPolicy) -> Option<String> {
    policy
        .metadata
        .annotations
        .as_ref()?
        .get(REVISION_ANNOTATION)
        .cloned()
}

/// Whether `policy` is a revision with health checks that has not been healthy for its whole
/// soak yet (so it runs every [`PROBE_PERIOD`]). Pure.
pub fn soaking(
    policy: &ApplyPolicy,
    healthy: &BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let Some(revision) = revision_of(policy) else {
        return false;
    };
    let Some(canary) = policy.spec.rollout.canary.as_ref() else {
        return false;
    };
    if canary.health_check.is_none() {
        return false;
    }
    let soak = chrono::Duration::from_std(canary.soak.get()).unwrap_or_default();
    match healthy.get(&name_of(policy)) {
        Some((r, since)) if *r == revision => *since + soak > now,
        _ => true,
    }
}

/// Runs a rollout health check on the node: the command (below the root, as command tasks
/// run) must exit 0 and the URL must answer 2xx, each within `timeout`. Blocking.
pub fn probe(root: &Root, check: &driftless_crds::apply_policy::HealthCheck) -> Result<(), String> {
    let timeout = check.timeout.get();
    if !check.command.is_empty() {
        let deadline = Instant::now() + timeout;
        match root.run(&check.command, &[], None, Some(deadline)) {
            Ok(out) if out.success() => {}
            Ok(out) => {
                let said = out.stderr.trim();
                return Err(format!(
                    "command {:?} exited with {}{}",
                    check.command.join(" "),
                    out.code
                        .map_or_else(|| "a signal".to_owned(), |c| c.to_string()),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", cut_message(said))
                    }
                ));
            }
            Err(error) => return Err(format!("command {:?}: {error}", check.command.join(" "))),
        }
    }
    if let Some(url) = &check.http_get {
        let url = url.clone();
        let got = tokio::runtime::Handle::try_current()
            .map_err(|e| e.to_string())?
            .block_on(async move {
                let client = reqwest::Client::builder()
                    .timeout(timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let response = client.get(&url).send().await.map_err(|e| {
                    use std::error::Error as _;
                    let mut text = e.to_string();
                    let mut source = e.source();
                    while let Some(cause) = source {
                        text.push_str(&format!(": {cause}"));
                        source = cause.source();
                    }
                    format!("GET {url}: {text}")
                })?;
                let code = response.status();
                if code.is_success() {
                    Ok(())
                } else {
                    Err(format!("GET {url} answered {code}"))
                }
            });
        got?;
    }
    Ok(())
}

type HealthMap = BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)>;

/// The health record in `path` (empty when missing or unreadable: soaks start again).
fn read_health(path: &std::path::Path) -> HealthMap {
    let Ok(bytes) = std::fs::read(path) else {
        return HealthMap::new();
    };
    let stored: BTreeMap<String, (String, String)> =
        serde_json::from_slice(&bytes).unwrap_or_default();
    stored
        .into_iter()
        .filter_map(|(policy, (revision, since))| {
            let since = chrono::DateTime::parse_from_rfc3339(&since).ok()?;
            Some((policy, (revision, since.with_timezone(&chrono::Utc))))
        })
        .collect()
}

fn write_health(path: &std::path::Path, map: &HealthMap) -> std::io::Result<()> {
    let stored: BTreeMap<&String, (&String, String)> = map
        .iter()
        .map(|(policy, (revision, since))| (policy, (revision, since.to_rfc3339())))
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(&stored).unwrap_or_default())?;
    std::fs::rename(tmp, path)
}

/// The health check's FactsPolicy part: no threshold of severity `min` or higher breached on
/// the node (nothing to check without `min`).
pub fn threshold_gate(
    min: Option<Severity>,
    breaches: &(dyn Fn(Severity) -> Vec<String> + Send + Sync),
) -> Result<(), String> {
    let Some(min) = min else { return Ok(()) };
    let breached = breaches(min);
    if breached.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "FactsPolicy threshold(s) breached on the node: {}",
            breached.join(", ")
        ))
    }
}

/// The result and items of one policy's run. Pure.
pub fn entry_of(
    report: &ApplyReport,
    policy: &PolicyReport,
    generation: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Entry {
    let mut changed = 0u32;
    let mut failed = 0u32;
    let mut failures = Vec::new();
    for task in &policy.tasks {
        match task.status {
            Status::Changed => changed += 1,
            Status::Failed => {
                failed += 1;
                failures.push(format!(
                    "{}: {}",
                    task.task,
                    task.message.as_deref().unwrap_or("failed")
                ));
            }
            _ => {}
        }
    }
    let state = if failed > 0 {
        PolicyState::Failed
    } else if policy.check_only && changed > 0 {
        PolicyState::Drifted
    } else {
        PolicyState::InSync
    };
    let one = ApplyReport {
        dry_run: report.dry_run,
        policies: vec![policy.clone()],
    };
    Entry {
        result: PolicyResult {
            kind: PolicyKind::ApplyPolicy,
            name: policy.policy.clone(),
            generation,
            state,
            drifted: if policy.check_only { changed } else { 0 },
            changed: if policy.check_only { 0 } else { changed },
            failed,
            message: (!failures.is_empty()).then(|| cut_message(&failures.join("; "))),
            checked_at: crate::status::time(now),
            revision: None,
            healthy_since: None,
        },
        items: crate::drift::items::node_items(&one).items,
    }
}

impl MetricsSource for ApplyLoop {
    fn encode(&self, out: &mut String) {
        let Ok(last) = self.last.lock() else { return };
        let mut tasks = Family::new(
            "driftless_apply_tasks",
            "Tasks of each ApplyPolicy by the state its last run left them in",
            Kind::Gauge,
        );
        let mut runs = Family::new(
            "driftless_apply_runs_total",
            "ApplyPolicy runs since the agent started, by result",
            Kind::Counter,
        );
        let mut at = Family::new(
            "driftless_apply_last_run_timestamp_seconds",
            "Unix time the last run of each ApplyPolicy ended",
            Kind::Gauge,
        );
        let mut took = Family::new(
            "driftless_apply_last_run_duration_seconds",
            "How long the last run of each ApplyPolicy took",
            Kind::Gauge,
        );
        for (policy, run) in last.iter() {
            for state in ["unchanged", "changed", "failed", "skipped"] {
                let n = run.tasks.get(state).copied().unwrap_or(0);
                tasks.push(
                    vec![("policy", policy.clone()), ("state", state.to_owned())],
                    n as f64,
                );
            }
            for result in ["failure", "success"] {
                let n = run.runs.get(result).copied().unwrap_or(0);
                runs.push(
                    vec![("policy", policy.clone()), ("result", result.to_owned())],
                    n as f64,
                );
            }
            at.push(vec![("policy", policy.clone())], run.at);
            took.push(vec![("policy", policy.clone())], run.seconds);
        }
        for family in [tasks, runs, at, took] {
            family.encode(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_record_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/rollout-health.json");
        assert!(read_health(&path).is_empty());
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-04T06:10:12Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let map: HealthMap = [("web".to_owned(), ("web-8c01d2aa94".to_owned(), since))].into();
        write_health(&path, &map).unwrap();
        assert_eq!(read_health(&path), map);
        std::fs::write(&path, "not json").unwrap();
        assert!(read_health(&path).is_empty());
    }

    #[test]
    fn thresholds_fail_the_gate_only_when_asked_and_at_the_severity() {
        let breaches = |min: Severity| -> Vec<String> {
            [
                ("disk/root-low (critical)", Severity::Critical),
                ("load/high (warning)", Severity::Warning),
            ]
            .iter()
            .filter(|(_, s)| *s >= min)
            .map(|(n, _)| (*n).to_owned())
            .collect()
        };
        assert_eq!(threshold_gate(None, &breaches), Ok(()));
        assert_eq!(
            threshold_gate(Some(Severity::Critical), &breaches),
            Err("FactsPolicy threshold(s) breached on the node: disk/root-low (critical)".into())
        );
        assert_eq!(
            threshold_gate(Some(Severity::Warning), &breaches),
            Err(
                "FactsPolicy threshold(s) breached on the node: disk/root-low (critical), load/high (warning)"
                    .into()
            )
        );
        let none = |_: Severity| Vec::new();
        assert_eq!(threshold_gate(Some(Severity::Info), &none), Ok(()));
    }
}
