//! The node's status: the result of every policy the agent runs, and the node's DriftReport
//! status made from them.
//!
//! Guarantees:
//! - One [`PolicyResult`] per policy the node runs or refused, sorted by kind then name, at most
//!   [`MAX_POLICIES`]. A refusal replaces the result of the version that keeps running: the
//!   report says the new generation was refused (the running one is still enforced).
//! - Items: FactsPolicy breaches and ApplyPolicy drift (Audit) or corrections (Enforce, marked
//!   `corrected`), bounded like [`crate::drift::items::node_items`]: at most [`MAX_ITEMS`].
//! - The summary is `Drifted` when an item that is not `corrected` exists, `Error` when a
//!   policy failed or was refused, `InSync` otherwise. When the set of items or results
//!   changes, the previous summary moves to the history (newest first, at most
//!   [`MAX_HISTORY`]).
//! - Pure: the caller passes the clock. Messages are already redacted by whoever made them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use driftless_crds::drift_report::{
    DriftItem, DriftReport, DriftReportSpec, DriftReportStatus, DriftStatus, PolicyKind,
    PolicyResult, PolicyState, Summary, Target, TargetKind, MAX_HISTORY, MAX_ITEMS, MAX_POLICIES,
};
use tokio::sync::watch;

/// Most bytes of a result's message.
pub const MAX_MESSAGE: usize = 1024;

/// A policy's key: kind and name.
pub type Key = (PolicyKind, String);

/// One policy's latest result and its report items.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The result.
    pub result: PolicyResult,
    /// Its items (breaches, drift, corrections).
    pub items: Vec<DriftItem>,
}

/// `text` cut to [`MAX_MESSAGE`] bytes at a character boundary.
pub fn cut_message(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_owned();
    }
    let mut end = MAX_MESSAGE - 3;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// `at` as a Kubernetes time.
pub fn time(at: chrono::DateTime<chrono::Utc>) -> driftless_crds::common::Time {
    driftless_crds::time::time(at)
}

/// The node's results and report history.
#[derive(Clone, Debug, Default)]
pub struct NodeStatus {
    entries: BTreeMap<Key, Entry>,
    refusals: BTreeMap<Key, PolicyResult>,
    summary: Option<Summary>,
    history: Vec<Summary>,
    /// What the summary was made from: item addresses and result states.
    shape: Vec<String>,
}

impl NodeStatus {
    /// Sets a policy's result (replacing the previous one).
    pub fn set(&mut self, entry: Entry, now: chrono::DateTime<chrono::Utc>) {
        let key = (entry.result.kind, entry.result.name.clone());
        self.entries.insert(key, entry);
        self.summarise(now);
    }

    /// Records that a policy's generation was refused on this node, or clears the refusal
    /// (`None`).
    pub fn set_refusal(
        &mut self,
        key: Key,
        refusal: Option<PolicyResult>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        match refusal {
            Some(r) => {
                self.refusals.insert(key, r);
            }
            None => {
                self.refusals.remove(&key);
            }
        }
        self.summarise(now);
    }

    /// Clears every refusal whose key is not in `keep`.
    pub fn clear_refusals_except(
        &mut self,
        keep: &std::collections::BTreeSet<Key>,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.refusals.retain(|k, _| keep.contains(k));
        self.summarise(now);
    }

    /// Forgets the results of `kind` whose names are not in `keep` (policies that no longer
    /// select the node, or were deleted).
    pub fn retain(
        &mut self,
        kind: PolicyKind,
        keep: &dyn Fn(&str) -> bool,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        self.entries.retain(|(k, n), _| *k != kind || keep(n));
        self.refusals.retain(|(k, n), _| *k != kind || keep(n));
        self.summarise(now);
    }

    /// The results, refusals in place of the results they refuse, sorted, bounded.
    pub fn results(&self) -> Vec<PolicyResult> {
        let mut out: BTreeMap<&Key, &PolicyResult> =
            self.entries.iter().map(|(k, e)| (k, &e.result)).collect();
        for (k, r) in &self.refusals {
            out.insert(k, r);
        }
        out.into_values().take(MAX_POLICIES).cloned().collect()
    }

    fn items(&self) -> Vec<&DriftItem> {
        self.entries.values().flat_map(|e| e.items.iter()).collect()
    }

    fn summarise(&mut self, now: chrono::DateTime<chrono::Utc>) {
        let items = self.items();
        let results = self.results();
        let mut shape: Vec<String> = items
            .iter()
            .map(|i| format!("{} {:?} {}", i.address, i.change, i.corrected))
            .collect();
        shape.extend(
            results
                .iter()
                .map(|r| format!("{:?}/{} {} {:?}", r.kind, r.name, r.generation, r.state)),
        );
        let status = if results
            .iter()
            .any(|r| matches!(r.state, PolicyState::Failed | PolicyState::Refused))
        {
            DriftStatus::Error
        } else if items.iter().any(|i| !i.corrected) {
            DriftStatus::Drifted
        } else {
            DriftStatus::InSync
        };
        let mut summary = Summary {
            status,
            added: 0,
            changed: 0,
            removed: 0,
            checked_at: time(now),
            revision: None,
            commit: None,
            trigger: None,
            run: None,
        };
        for item in &items {
            use driftless_crds::drift_report::ChangeType;
            let n = match item.change {
                ChangeType::Added => &mut summary.added,
                ChangeType::Changed => &mut summary.changed,
                ChangeType::Removed => &mut summary.removed,
            };
            *n = n.saturating_add(1);
        }
        if shape != self.shape {
            if let Some(previous) = self.summary.take() {
                self.history.insert(0, previous);
                self.history.truncate(MAX_HISTORY);
            }
            self.shape = shape;
        }
        self.summary = Some(summary);
    }

    /// The DriftReport status: summary, bounded items, history, policy results, and the
    /// messages of failed or refused policies as `error`.
    pub fn report_status(&self) -> DriftReportStatus {
        let items = self.items();
        let total = items.len();
        let kept: Vec<DriftItem> = items.into_iter().take(MAX_ITEMS).cloned().collect();
        let results = self.results();
        let errors: Vec<String> = results
            .iter()
            .filter(|r| matches!(r.state, PolicyState::Failed | PolicyState::Refused))
            .map(|r| {
                format!(
                    "{} {}: {}",
                    r.kind.as_str(),
                    r.name,
                    r.message.as_deref().unwrap_or("failed")
                )
            })
            .collect();
        DriftReportStatus {
            summary: self.summary.clone(),
            truncated_items: u32::try_from(total - kept.len()).unwrap_or(u32::MAX),
            items: kept,
            error: (!errors.is_empty()).then(|| cut_message(&errors.join("; "))),
            artifact: None,
            plan_text: None,
            history: self.history.clone(),
            policies: results,
        }
    }
}

/// The node's status shared by the parts that produce results and the parts that publish
/// them (`/report`, the DriftReport writer). Every change bumps a version the writer waits on.
pub struct SharedStatus {
    node: String,
    inner: Mutex<NodeStatus>,
    changed: watch::Sender<u64>,
}

impl SharedStatus {
    /// An empty status for `node`.
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_owned(),
            inner: Mutex::new(NodeStatus::default()),
            changed: watch::channel(0).0,
        }
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Changes the status and tells the waiters.
    pub fn update(&self, f: impl FnOnce(&mut NodeStatus, chrono::DateTime<chrono::Utc>)) {
        let now = chrono::Utc::now();
        match self.inner.lock() {
            Ok(mut s) => f(&mut s, now),
            Err(poisoned) => f(&mut poisoned.into_inner(), now),
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The report status now.
    pub fn report_status(&self) -> DriftReportStatus {
        match self.inner.lock() {
            Ok(s) => s.report_status(),
            Err(poisoned) => poisoned.into_inner().report_status(),
        }
    }

    /// The node's DriftReport object (`node-<node>`), as `/report` serves it.
    pub fn report(&self) -> DriftReport {
        let name = crate::facts::report::report_name(&self.node);
        let mut report = DriftReport::new(
            &name,
            DriftReportSpec {
                target: Target {
                    kind: TargetKind::Node,
                    name: self.node.clone(),
                    scan: None,
                    stack: None,
                    node: Some(self.node.clone()),
                },
                revisions: Vec::new(),
            },
        );
        report.status = Some(self.report_status());
        report
    }
}

#[cfg(test)]
mod tests;
