//! What each dashboard page shows, decided from one snapshot of the watch caches: counts,
//! filters, sorting and paging. Pure functions; `render` turns the results into HTML.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use driftless_crds::common::Condition;
use driftless_crds::drift_report::{
    DriftStatus, PolicyKind, PolicyResult, PolicyState, Summary, TargetKind,
};
use driftless_crds::drift_scan::RunPhase;
use driftless_crds::time::of_time;
use driftless_crds::{ApplyPolicy, DriftReport, DriftScan, FactsPolicy, LogPipeline};
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt as _;

/// Rows per page of a list.
pub const PAGE_SIZE: usize = 100;
/// Reports listed under "recent changes" on the overview.
pub const RECENT: usize = 20;

/// Everything a page may read, taken from the caches at the start of a request.
#[derive(Clone, Default)]
pub struct Snapshot {
    /// DriftScans.
    pub scans: Vec<Arc<DriftScan>>,
    /// DriftReports.
    pub reports: Vec<Arc<DriftReport>>,
    /// ApplyPolicies.
    pub apply: Vec<Arc<ApplyPolicy>>,
    /// FactsPolicies.
    pub facts: Vec<Arc<FactsPolicy>>,
    /// LogPipelines.
    pub logs: Vec<Arc<LogPipeline>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// Stacks waiting for a scan Job, over all DriftScans ([`queue_depth`]).
    pub queue_depth: i64,
    /// When the snapshot was taken (relative times count from it).
    pub now: DateTime<Utc>,
}

/// The query of a list page: `?namespace=&status=&q=&page=`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct Filter {
    /// Only objects of this namespace (namespaced kinds).
    pub namespace: String,
    /// Only this status: `InSync`, `Drifted`, `Error` (reports, nodes), `Pending` (no result
    /// yet).
    pub status: String,
    /// Only objects whose name (or target) contains this text, case-insensitively.
    pub q: String,
    /// Reports only: `Stack` or `Node`.
    pub kind: String,
    /// Page number, from 1.
    pub page: usize,
}

impl Filter {
    /// The filter's own query string (without `page`), for links to other pages of a list.
    pub fn query(&self) -> String {
        let mut parts = Vec::new();
        for (k, v) in [
            ("namespace", &self.namespace),
            ("status", &self.status),
            ("q", &self.q),
            ("kind", &self.kind),
        ] {
            if !v.is_empty() {
                parts.push(format!("{k}={}", encode(v)));
            }
        }
        parts.join("&")
    }

    fn text_matches(&self, texts: &[&str]) -> bool {
        if self.q.is_empty() {
            return true;
        }
        let q = self.q.to_lowercase();
        texts.iter().any(|t| {
            if t.is_ascii() && q.is_ascii() {
                t.as_bytes()
                    .windows(q.len())
                    .any(|w| w.eq_ignore_ascii_case(q.as_bytes()))
            } else {
                t.to_lowercase().contains(&q)
            }
        })
    }

    fn status_matches(&self, status: &str) -> bool {
        self.status.is_empty() || self.status.eq_ignore_ascii_case(status)
    }

    fn namespace_matches(&self, namespace: &str) -> bool {
        self.namespace.is_empty() || self.namespace == namespace
    }
}

/// Percent-encodes a query value.
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// One page of a list and where it stands in the whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    /// The rows of this page.
    pub rows: Vec<T>,
    /// Rows that matched the filter, on all pages.
    pub matched: usize,
    /// This page, from 1.
    pub page: usize,
    /// Pages in all (at least 1).
    pub pages: usize,
}

impl<T> Page<T> {
    /// The same page with each row turned into another.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            rows: self.rows.into_iter().map(f).collect(),
            matched: self.matched,
            page: self.page,
            pages: self.pages,
        }
    }
}

/// Cuts page `page` (from 1; 0 means 1; past the end means the last) out of `rows`.
pub fn paginate<T>(rows: Vec<T>, page: usize) -> Page<T> {
    let matched = rows.len();
    let pages = matched.div_ceil(PAGE_SIZE).max(1);
    let page = page.clamp(1, pages);
    let rows = rows
        .into_iter()
        .skip((page - 1) * PAGE_SIZE)
        .take(PAGE_SIZE)
        .collect();
    Page {
        rows,
        matched,
        page,
        pages,
    }
}

/// The status word of a report: its summary's status, or `Pending` before its first check.
pub fn report_status(report: &DriftReport) -> &'static str {
    match summary(report).map(|s| s.status) {
        Some(DriftStatus::InSync) => "InSync",
        Some(DriftStatus::Drifted) => "Drifted",
        Some(DriftStatus::Error) => "Error",
        None => "Pending",
    }
}

/// The latest summary of a report.
pub fn summary(report: &DriftReport) -> Option<&Summary> {
    report.status.as_ref().and_then(|s| s.summary.as_ref())
}

/// When the report was last checked.
pub fn checked_at(report: &DriftReport) -> Option<DateTime<Utc>> {
    summary(report).map(|s| of_time(&s.checked_at))
}

/// Counts of one kind on the overview.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// In sync.
    pub in_sync: usize,
    /// Drifted.
    pub drifted: usize,
    /// Failed (error, failed or refused).
    pub failed: usize,
    /// Not checked yet.
    pub pending: usize,
}

impl Counts {
    fn add_status(&mut self, status: &str) {
        match status {
            "InSync" => self.in_sync += 1,
            "Drifted" => self.drifted += 1,
            "Error" => self.failed += 1,
            _ => self.pending += 1,
        }
    }

    fn add_state(&mut self, state: PolicyState) {
        match state {
            PolicyState::InSync => self.in_sync += 1,
            PolicyState::Drifted => self.drifted += 1,
            PolicyState::Failed | PolicyState::Refused => self.failed += 1,
        }
    }

    /// All counted.
    pub fn total(&self) -> usize {
        self.in_sync + self.drifted + self.failed + self.pending
    }
}

/// A report whose latest check changed its status (or that is new), for "recent changes".
#[derive(Clone, Debug)]
pub struct Change {
    /// The report.
    pub report: Arc<DriftReport>,
    /// The status before (`None`: the first check).
    pub from: Option<&'static str>,
    /// The status now.
    pub to: &'static str,
    /// When the latest check ran.
    pub at: DateTime<Utc>,
}

/// The overview: counts by kind and the most recent changes.
#[derive(Clone, Debug)]
pub struct Overview {
    /// Stack reports.
    pub stacks: Counts,
    /// Node reports.
    pub nodes: Counts,
    /// Per-node results of each policy kind.
    pub policies: [(PolicyKind, Counts); 3],
    /// The most recent changes, newest first.
    pub recent: Vec<Change>,
    /// DriftScans.
    pub scans: usize,
    /// Stacks queued for a scan Job.
    pub queue_depth: i64,
}

/// The word of a summary's status.
pub fn status_word(status: DriftStatus) -> &'static str {
    match status {
        DriftStatus::InSync => "InSync",
        DriftStatus::Drifted => "Drifted",
        DriftStatus::Error => "Error",
    }
}

/// The overview of a snapshot.
pub fn overview(s: &Snapshot) -> Overview {
    let mut o = Overview {
        stacks: Counts::default(),
        nodes: Counts::default(),
        policies: PolicyKind::ALL.map(|k| (k, Counts::default())),
        recent: Vec::new(),
        scans: s.scans.len(),
        queue_depth: s.queue_depth,
    };
    let mut recent = Vec::new();
    for report in &s.reports {
        let status = report_status(report);
        match report.spec.target.kind {
            TargetKind::Stack => o.stacks.add_status(status),
            TargetKind::Node => o.nodes.add_status(status),
        }
        for result in report.status.iter().flat_map(|st| &st.policies) {
            if let Some((_, counts)) = o.policies.iter_mut().find(|(k, _)| *k == result.kind) {
                counts.add_state(result.state);
            }
        }
        let Some(st) = report.status.as_ref() else {
            continue;
        };
        let Some(latest) = st.summary.as_ref() else {
            continue;
        };
        let before = st.history.first().map(|h| status_word(h.status));
        if before != Some(status_word(latest.status)) {
            recent.push(Change {
                report: report.clone(),
                from: before,
                to: status_word(latest.status),
                at: of_time(&latest.checked_at),
            });
        }
    }
    recent.sort_by(|a, b| {
        b.at.cmp(&a.at)
            .then_with(|| a.report.name_any().cmp(&b.report.name_any()))
    });
    recent.truncate(RECENT);
    o.recent = recent;
    o
}

/// Reports matching a filter (and a kind), sorted drifted/failed first, then by name.
pub fn reports(s: &Snapshot, f: &Filter) -> Page<Arc<DriftReport>> {
    let kind = match f.kind.as_str() {
        k if k.eq_ignore_ascii_case("Stack") => Some(TargetKind::Stack),
        k if k.eq_ignore_ascii_case("Node") => Some(TargetKind::Node),
        _ => None,
    };
    // Filter and order on borrowed keys: no string is copied per report or per comparison,
    // and only the rows of the page asked for are cloned.
    let mut rows: Vec<_> = s
        .reports
        .iter()
        .filter(|r| kind.is_none_or(|k| r.spec.target.kind == k))
        .filter(|r| f.namespace_matches(r.metadata.namespace.as_deref().unwrap_or_default()))
        .filter(|r| f.status_matches(report_status(r)))
        .filter(|r| {
            f.text_matches(&[
                r.metadata.name.as_deref().unwrap_or_default(),
                &r.spec.target.name,
            ])
        })
        .map(|r| {
            let key = (
                rank(report_status(r)),
                r.metadata.namespace.as_deref(),
                r.spec.target.name.as_str(),
            );
            (key, r)
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    paginate(rows, f.page).map(|(_, r)| r.clone())
}

/// Order of statuses in lists: what needs attention first.
fn rank(status: &str) -> u8 {
    match status {
        "Error" => 0,
        "Drifted" => 1,
        "Pending" => 2,
        _ => 3,
    }
}

/// DriftScans matching a filter, by namespace and name.
pub fn scans(s: &Snapshot, f: &Filter) -> Page<Arc<DriftScan>> {
    let mut rows: Vec<_> = s
        .scans
        .iter()
        .filter(|d| f.namespace_matches(&d.namespace().unwrap_or_default()))
        .filter(|d| f.text_matches(&[&d.name_any(), &d.spec.source.git.url]))
        .filter(|d| f.status_matches(scan_status(d)))
        .cloned()
        .collect();
    rows.sort_by_key(|d| (d.namespace(), d.name_any()));
    paginate(rows, f.page)
}

/// Stacks of running runs still waiting for a scan Job, as the DriftScans' statuses say (the
/// same on every operator replica).
pub fn queue_depth(scans: &[Arc<DriftScan>]) -> i64 {
    scans
        .iter()
        .filter_map(|d| d.status.as_ref()?.last_run.as_ref())
        .filter(|run| run.phase == RunPhase::Running)
        .map(|run| i64::from(run.queued))
        .sum()
}

/// The phase of a DriftScan's last run (`Pending` before the first).
pub fn scan_status(scan: &DriftScan) -> &'static str {
    match scan.status.as_ref().and_then(|s| s.last_run.as_ref()) {
        Some(run) => match run.phase {
            RunPhase::Running => "Running",
            RunPhase::Succeeded => "Succeeded",
            RunPhase::Failed => "Failed",
            RunPhase::Cancelled => "Cancelled",
        },
        None => "Pending",
    }
}

/// The stack reports of one DriftScan matching a filter (status, text, page), what needs
/// attention first, then by stack.
pub fn scan_stacks(
    s: &Snapshot,
    namespace: &str,
    scan: &str,
    f: &Filter,
) -> Page<Arc<DriftReport>> {
    let mut rows: Vec<_> = s
        .reports
        .iter()
        .filter(|r| r.spec.target.kind == TargetKind::Stack)
        .filter(|r| r.spec.target.scan.as_deref() == Some(scan))
        .filter(|r| r.metadata.namespace.as_deref() == Some(namespace))
        .filter(|r| f.status_matches(report_status(r)))
        .filter(|r| {
            f.text_matches(&[
                r.spec.target.stack.as_deref().unwrap_or_default(),
                &r.spec.target.name,
            ])
        })
        .map(|r| ((rank(report_status(r)), r.spec.target.stack.as_deref()), r))
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    paginate(rows, f.page).map(|(_, r)| r.clone())
}

/// A browser link for an artifact location a report names (`s3://bucket/key`), from the S3
/// target of the report's DriftScan: the object's URL on its endpoint (path-style or
/// virtual-hosted, as the scan uploads), or the AWS console page of the object when the scan
/// uses AWS S3. The browser fetches it with the viewer's own access; the operator never reads
/// the artifact store. `None` for `pvc://` locations, a location outside the scan's bucket, or
/// an endpoint that is not `http(s)://`.
pub fn artifact_link(s: &Snapshot, report: &DriftReport, location: &str) -> Option<String> {
    let scan = report.spec.target.scan.as_deref()?;
    let namespace = report.metadata.namespace.as_deref()?;
    let scan = s.scans.iter().find(|d| {
        d.metadata.name.as_deref() == Some(scan)
            && d.metadata.namespace.as_deref() == Some(namespace)
    })?;
    let target = scan.spec.artifacts.as_ref()?.s3.as_ref()?;
    let key = location
        .strip_prefix("s3://")?
        .strip_prefix(target.bucket.as_str())?
        .strip_prefix('/')?;
    if key.is_empty() {
        return None;
    }
    let path: Vec<String> = key.split('/').map(encode).collect();
    let path = path.join("/");
    let bucket = encode(&target.bucket);
    match target.endpoint.as_deref() {
        None => {
            let region = target.region.as_deref().unwrap_or("us-east-1");
            Some(format!(
                "https://console.aws.amazon.com/s3/object/{bucket}?region={}&prefix={}",
                encode(region),
                encode(key)
            ))
        }
        Some(endpoint) => {
            let endpoint = endpoint.trim_end_matches('/');
            let (scheme, host) = endpoint
                .strip_prefix("https://")
                .map(|h| ("https", h))
                .or_else(|| endpoint.strip_prefix("http://").map(|h| ("http", h)))?;
            if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                return None;
            }
            Some(if target.path_style {
                format!("{scheme}://{host}/{bucket}/{path}")
            } else {
                format!("{scheme}://{bucket}.{host}/{path}")
            })
        }
    }
}

/// A node and what its report says.
#[derive(Clone, Debug)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// `Ready` condition: `True`, `False`, `Unknown` (also without the condition); `None` when
    /// the Node object is gone.
    pub ready: Option<String>,
    /// The report.
    pub report: Option<Arc<DriftReport>>,
    /// Policy results by state.
    pub counts: Counts,
    /// Threshold breaches (FactsPolicy results' `drifted`).
    pub breaches: u32,
}

impl NodeRow {
    /// The node's status word: its report's, `Pending` without one.
    pub fn status(&self) -> &'static str {
        self.report.as_deref().map_or("Pending", report_status)
    }
}

fn node_ready(node: &Node) -> Option<String> {
    node_ready_str(node).map(str::to_owned)
}

fn node_ready_str(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// The node reports by node name.
fn node_reports(s: &Snapshot) -> HashMap<&str, &Arc<DriftReport>> {
    s.reports
        .iter()
        .filter(|r| r.spec.target.kind == TargetKind::Node)
        .map(|r| {
            (
                r.spec
                    .target
                    .node
                    .as_deref()
                    .unwrap_or(r.spec.target.name.as_str()),
                r,
            )
        })
        .collect()
}

fn node_row(name: &str, node: Option<&Node>, report: Option<&Arc<DriftReport>>) -> NodeRow {
    let mut counts = Counts::default();
    let mut breaches = 0;
    for result in report
        .iter()
        .flat_map(|r| r.status.iter().flat_map(|s| &s.policies))
    {
        counts.add_state(result.state);
        if result.kind == PolicyKind::FactsPolicy {
            breaches += result.drifted;
        }
    }
    NodeRow {
        name: name.to_owned(),
        ready: node.map(|n| node_ready(n).unwrap_or_else(|| "Unknown".to_owned())),
        report: report.cloned(),
        counts,
        breaches,
    }
}

/// A node list's sort key (rank of its status, name) with the node and its report.
type NodeKey<'a> = (u8, &'a str, Option<&'a Node>, Option<&'a Arc<DriftReport>>);

/// Nodes (Node objects, and node reports whose Node is gone) matching a filter. Filtered and
/// ordered on borrowed keys; rows are built for the page asked for only.
pub fn nodes(s: &Snapshot, f: &Filter) -> Page<NodeRow> {
    let mut by_node = node_reports(s);
    let mut keys: Vec<NodeKey> = Vec::with_capacity(s.nodes.len() + by_node.len());
    for node in &s.nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        let report = by_node.remove(name);
        keys.push((0, name, Some(node.as_ref()), report));
    }
    keys.extend(
        by_node
            .into_iter()
            .map(|(name, report)| (0, name, None, Some(report))),
    );
    keys.retain_mut(|(rank_of, name, _, report)| {
        let status = report.map_or("Pending", |r| report_status(r));
        *rank_of = rank(status);
        f.status_matches(status) && f.text_matches(&[name])
    });
    keys.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    paginate(keys, f.page).map(|(_, name, node, report)| node_row(name, node, report))
}

/// One node's row, if the node or its report exists.
pub fn node(s: &Snapshot, name: &str) -> Option<NodeRow> {
    let object = s.nodes.iter().find(|n| n.name_any() == name);
    let report = node_reports(s).get(name).copied().cloned();
    if object.is_none() && report.is_none() {
        return None;
    }
    Some(node_row(name, object.map(|n| n.as_ref()), report.as_ref()))
}

/// The desired revision of `policy` on a node (its report's `spec.revisions`).
pub fn desired_revision<'a>(report: &'a DriftReport, policy: &str) -> Option<&'a str> {
    report
        .spec
        .revisions
        .iter()
        .find(|a| a.policy == policy)
        .map(|a| a.revision.as_str())
}

/// A policy of any kind, as the lists show it.
#[derive(Clone, Debug)]
pub struct PolicyRow {
    /// Kind.
    pub kind: PolicyKind,
    /// Name.
    pub name: String,
    /// Nodes the policy targets.
    pub targeted: i32,
    /// The `Ready` condition's status and reason.
    pub ready: Option<(String, String)>,
    /// ApplyPolicy: the rollout's step.
    pub step: Option<String>,
    /// Per-node results by state.
    pub counts: Counts,
}

fn ready_of(conditions: &[Condition]) -> Option<(String, String)> {
    conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// Every policy matching a filter's text, with per-node result counts.
pub fn policies(s: &Snapshot, f: &Filter) -> Vec<PolicyRow> {
    let mut counts: HashMap<(PolicyKind, &str), Counts> = HashMap::new();
    for result in s
        .reports
        .iter()
        .filter(|r| r.spec.target.kind == TargetKind::Node)
        .flat_map(|r| r.status.iter().flat_map(|st| &st.policies))
    {
        counts
            .entry((result.kind, result.name.as_str()))
            .or_default()
            .add_state(result.state);
    }
    let mut rows = Vec::new();
    let mut push = |kind, name: String, targeted, ready, step| {
        let counts = counts
            .get(&(kind, name.as_str()))
            .copied()
            .unwrap_or_default();
        rows.push(PolicyRow {
            kind,
            name,
            targeted,
            ready,
            step,
            counts,
        });
    };
    for p in &s.apply {
        let st = p.status.clone().unwrap_or_default();
        push(
            PolicyKind::ApplyPolicy,
            p.name_any(),
            st.targeted,
            ready_of(&st.conditions),
            st.rollout.map(|r| r.step),
        );
    }
    for p in &s.facts {
        let st = p.status.clone().unwrap_or_default();
        push(
            PolicyKind::FactsPolicy,
            p.name_any(),
            st.targeted,
            ready_of(&st.conditions),
            None,
        );
    }
    for p in &s.logs {
        let st = p.status.clone().unwrap_or_default();
        push(
            PolicyKind::LogPipeline,
            p.name_any(),
            st.targeted,
            ready_of(&st.conditions),
            None,
        );
    }
    rows.retain(|r| {
        f.text_matches(&[&r.name])
            && (f.status.is_empty()
                || r.ready
                    .as_ref()
                    .is_some_and(|(_, reason)| reason.eq_ignore_ascii_case(&f.status)))
    });
    rows.sort_by(|a, b| a.kind.cmp(&b.kind).then_with(|| a.name.cmp(&b.name)));
    rows
}

/// The URL segment of a policy kind (`applypolicies`).
pub fn kind_segment(kind: PolicyKind) -> &'static str {
    match kind {
        PolicyKind::ApplyPolicy => "applypolicies",
        PolicyKind::FactsPolicy => "factspolicies",
        PolicyKind::LogPipeline => "logpipelines",
    }
}

/// The policy kind of a URL segment.
pub fn kind_of_segment(segment: &str) -> Option<PolicyKind> {
    PolicyKind::ALL
        .into_iter()
        .find(|k| kind_segment(*k) == segment)
}

/// Where one policy stands on one node.
#[derive(Clone, Debug)]
pub struct PolicyNode {
    /// The node.
    pub node: String,
    /// The revision the rollout assigned to the node.
    pub desired: Option<String>,
    /// The node's result.
    pub result: PolicyResult,
}

/// The nodes that report a result for a policy, plus how many nodes each current revision
/// has; nodes on the same revision stay together.
pub fn policy_nodes(
    s: &Snapshot,
    kind: PolicyKind,
    name: &str,
    f: &Filter,
) -> (Page<PolicyNode>, Vec<(String, usize)>) {
    // Filtered and ordered on borrowed keys; rows are built for the page asked for only.
    let mut keys = Vec::new();
    let mut per_revision: HashMap<&str, usize> = HashMap::new();
    for report in s
        .reports
        .iter()
        .filter(|r| r.spec.target.kind == TargetKind::Node)
    {
        let Some(result) = report
            .status
            .iter()
            .flat_map(|st| &st.policies)
            .find(|p| p.kind == kind && p.name == name)
        else {
            continue;
        };
        let node = report
            .spec
            .target
            .node
            .as_deref()
            .unwrap_or(report.spec.target.name.as_str());
        *per_revision
            .entry(result.revision.as_deref().unwrap_or_default())
            .or_default() += 1;
        if !f.text_matches(&[node]) || !f.status_matches(state_word(result.state)) {
            continue;
        }
        keys.push(((result.revision.as_deref(), node), report, result));
    }
    keys.sort_by(|a, b| a.0.cmp(&b.0));
    let mut per_revision: Vec<_> = per_revision
        .into_iter()
        .map(|(revision, n)| (revision.to_owned(), n))
        .collect();
    per_revision.sort();
    let page = paginate(keys, f.page).map(|((_, node), report, result)| PolicyNode {
        node: node.to_owned(),
        desired: desired_revision(report, name).map(str::to_owned),
        result: result.clone(),
    });
    (page, per_revision)
}

/// The word of a policy state.
pub fn state_word(state: PolicyState) -> &'static str {
    match state {
        PolicyState::InSync => "InSync",
        PolicyState::Drifted => "Drifted",
        PolicyState::Failed => "Failed",
        PolicyState::Refused => "Refused",
    }
}

/// A hash of what the pages may show: every object's uid and `resourceVersion`, each Node's
/// readiness and cordon (not its heartbeats), and the queue depth. Compared once a second for
/// live updates and computed for every page, so it is a word-at-a-time multiply-rotate hash
/// (no allocation, no SipHash rounds): a change detector, not a defence against crafted
/// collisions.
pub fn fingerprint(s: &Snapshot) -> u64 {
    // A sum of per-object hashes: the same whatever order the caches list objects in.
    fn versions<K: kube::Resource>(objects: &[Arc<K>]) -> u64 {
        objects.iter().fold(objects.len() as u64, |acc, o| {
            let meta = o.meta();
            let mut h = Fx::default();
            h.str(meta.uid.as_deref().unwrap_or_default());
            h.str(meta.resource_version.as_deref().unwrap_or_default());
            acc.wrapping_add(h.finish())
        })
    }
    let nodes = s.nodes.iter().fold(s.nodes.len() as u64, |acc, n| {
        let mut h = Fx::default();
        h.str(n.metadata.name.as_deref().unwrap_or_default());
        h.str(node_ready_str(n).unwrap_or("-"));
        h.word(match n.spec.as_ref().and_then(|s| s.unschedulable) {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        });
        acc.wrapping_add(h.finish())
    });
    let mut h = Fx::default();
    for part in [
        versions(&s.scans),
        versions(&s.reports),
        versions(&s.apply),
        versions(&s.facts),
        versions(&s.logs),
        nodes,
        s.queue_depth as u64,
    ] {
        h.word(part);
    }
    h.finish()
}

/// The multiply-rotate hash of [`fingerprint`], eight bytes at a time.
#[derive(Default)]
struct Fx(u64);

impl Fx {
    const K: u64 = 0x517c_c1b7_2722_0a95;

    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(Self::K);
    }

    fn str(&mut self, s: &str) {
        let mut chunks = s.as_bytes().chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(tail));
        // The length ends each string, so ("ab", "c") and ("a", "bc") differ.
        self.word(s.len() as u64);
    }

    fn finish(&self) -> u64 {
        // A final mix, so sums of per-object hashes do not cancel in the low bits.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x
    }
}
