//! The dashboard's HTML. Pages are Rust functions writing into a `String`; every value from a
//! cached object goes through [`Esc`], so nothing in a resource can inject markup.

use std::fmt::{self, Display, Write as _};

use chrono::{DateTime, Utc};
use driftless_crds::apply_policy::RolloutStatus;
use driftless_crds::common::Condition;
use driftless_crds::drift_report::{ChangeType, DriftItem, PolicyKind, Summary, TargetKind};
use driftless_crds::drift_scan::{RunPhase, UnitPhase};
use driftless_crds::time::of_time;
use driftless_crds::{DriftReport, DriftScan};
use kube::ResourceExt as _;

use super::view::{
    self, desired_revision, kind_segment, report_status, state_word, Change, Counts, Filter,
    NodeRow, Overview, Page, PolicyNode, PolicyRow,
};

/// HTML-escapes text (element content and quoted attribute values).
pub struct Esc<'a>(pub &'a str);

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Writes formatted text into a `String` (which cannot fail).
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {
        let _ = write!($out, $($arg)*);
    };
}

/// A whole page around `main`. `fingerprint` is the state the page shows (live updates
/// compare it).
pub fn layout(title: &str, main: &str, fingerprint: u64) -> String {
    let mut out = String::with_capacity(main.len() + 1024);
    w!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Driftless</title>\
         <link rel=\"stylesheet\" href=\"/static/dashboard.css\">\
         <script src=\"/static/dashboard.js\" defer></script></head><body>\
         <header><a class=\"brand\" href=\"/\">Driftless</a><nav>\
         <a href=\"/\">Overview</a><a href=\"/driftscans\">DriftScans</a>\
         <a href=\"/driftreports\">Reports</a><a href=\"/nodes\">Nodes</a>\
         <a href=\"/policies\">Policies</a></nav>\
         <span id=\"live\" title=\"live updates\">static</span></header>\
         <main data-fingerprint=\"{fingerprint:x}\">{main}</main></body></html>",
        Esc(title)
    );
    out
}

/// The body of a page that does not exist.
pub fn not_found(what: &str) -> String {
    format!(
        "<h1>Not found</h1><p class=\"empty\">{} does not exist (or is not in the operator's \
         caches).</p>",
        Esc(what)
    )
}

fn status_badge(out: &mut String, status: &str) {
    w!(
        out,
        "<span class=\"badge s-{}\">{}</span>",
        Esc(&status.to_ascii_lowercase()),
        Esc(status)
    );
}

fn time(out: &mut String, at: Option<DateTime<Utc>>, now: DateTime<Utc>) {
    let Some(at) = at else {
        out.push_str("<span class=\"muted\">never</span>");
        return;
    };
    let secs = (now - at).num_seconds();
    let ago = match secs {
        s if s < 0 => format!("in {}", span(-s)),
        s => format!("{} ago", span(s)),
    };
    w!(
        out,
        "<time datetime=\"{0}\" title=\"{0}\">{1}</time>",
        at.format("%Y-%m-%dT%H:%M:%SZ"),
        ago
    );
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn counts_cells(out: &mut String, c: &Counts) {
    w!(
        out,
        "<td class=\"n\">{}</td><td class=\"n drifted\">{}</td><td class=\"n failed\">{}</td>\
         <td class=\"n\">{}</td>",
        c.in_sync,
        c.drifted,
        c.failed,
        c.pending
    );
}

/// The link of a report's page.
pub fn report_href(report: &DriftReport) -> String {
    format!(
        "/namespaces/{}/driftreports/{}",
        view::encode(&report.namespace().unwrap_or_default()),
        view::encode(&report.name_any())
    )
}

fn report_link(out: &mut String, report: &DriftReport) {
    w!(
        out,
        "<a href=\"{}\">{}</a>",
        Esc(&report_href(report)),
        Esc(&report.spec.target.name)
    );
}

fn plus_tilde_minus(out: &mut String, s: Option<&Summary>) {
    match s {
        Some(s) => {
            w!(
                out,
                "<span class=\"ptm\">+{} ~{} -{}</span>",
                s.added,
                s.changed,
                s.removed
            );
        }
        None => out.push_str("<span class=\"muted\">–</span>"),
    }
}

fn filter_form(out: &mut String, f: &Filter, namespaced: bool, statuses: &[&str]) {
    out.push_str("<form class=\"filter\" method=\"get\">");
    if !f.kind.is_empty() {
        w!(
            out,
            "<input type=\"hidden\" name=\"kind\" value=\"{}\">",
            Esc(&f.kind)
        );
    }
    if namespaced {
        w!(
            out,
            "<label>Namespace <input name=\"namespace\" value=\"{}\"></label>",
            Esc(&f.namespace)
        );
    }
    out.push_str("<label>Status <select name=\"status\"><option value=\"\">any</option>");
    for s in statuses {
        let selected = if f.status.eq_ignore_ascii_case(s) {
            " selected"
        } else {
            ""
        };
        w!(out, "<option{selected}>{}</option>", Esc(s));
    }
    w!(
        out,
        "</select></label><label>Text <input name=\"q\" value=\"{}\"></label>\
         <button type=\"submit\">Filter</button></form>",
        Esc(&f.q)
    );
}

fn pager<T>(out: &mut String, base: &str, f: &Filter, page: &Page<T>) {
    w!(
        out,
        "<p class=\"pager\"><span class=\"matched\">{} matching</span>",
        page.matched
    );
    if page.pages > 1 {
        let query = f.query();
        let sep = if query.is_empty() { "" } else { "&" };
        if page.page > 1 {
            w!(
                out,
                " <a rel=\"prev\" href=\"{}?{}{sep}page={}\">previous</a>",
                Esc(base),
                Esc(&query),
                page.page - 1
            );
        }
        w!(out, " page {} of {}", page.page, page.pages);
        if page.page < page.pages {
            w!(
                out,
                " <a rel=\"next\" href=\"{}?{}{sep}page={}\">next</a>",
                Esc(base),
                Esc(&query),
                page.page + 1
            );
        }
    }
    out.push_str("</p>");
}

/// The overview.
pub fn overview(o: &Overview, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    out.push_str(
        "<h1>Overview</h1><table class=\"counts\" id=\"counts\"><thead><tr><th>Kind</th>\
         <th>In sync</th><th>Drifted</th><th>Failed</th><th>Not checked</th></tr></thead><tbody>",
    );
    let mut row = |label: &str, href: &str, c: &Counts| {
        w!(
            out,
            "<tr data-kind=\"{0}\"><th><a href=\"{1}\">{0}</a></th>",
            Esc(label),
            Esc(href)
        );
        counts_cells(&mut out, c);
        out.push_str("</tr>");
    };
    row("Stacks", "/driftreports?kind=Stack", &o.stacks);
    row("Nodes", "/nodes", &o.nodes);
    for (kind, counts) in &o.policies {
        row(kind.as_str(), "/policies", counts);
    }
    w!(
        out,
        "</tbody></table><p>{} DriftScans; <span id=\"queue-depth\">{}</span> stacks queued \
         for a scan Job. Policy rows count per-node results (a failed or refused result is \
         failed).</p><h2>Recent changes</h2>",
        o.scans,
        o.queue_depth
    );
    if o.recent.is_empty() {
        out.push_str("<p class=\"empty\">No report has changed status.</p>");
        return out;
    }
    out.push_str(
        "<table id=\"recent\"><thead><tr><th>When</th><th>Kind</th><th>Namespace</th>\
         <th>Target</th><th>Change</th><th>Items</th></tr></thead><tbody>",
    );
    for Change {
        report,
        from,
        to,
        at,
    } in &o.recent
    {
        out.push_str("<tr><td>");
        time(&mut out, Some(*at), now);
        w!(
            out,
            "</td><td>{}</td><td>{}</td><td>",
            kind_word(report.spec.target.kind),
            Esc(&report.namespace().unwrap_or_default())
        );
        report_link(&mut out, report);
        out.push_str("</td><td>");
        match from {
            Some(from) => {
                status_badge(&mut out, from);
                out.push_str(" → ");
            }
            None => out.push_str("new → "),
        }
        status_badge(&mut out, to);
        out.push_str("</td><td>");
        plus_tilde_minus(&mut out, view::summary(report));
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
    out
}

fn kind_word(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Stack => "Stack",
        TargetKind::Node => "Node",
    }
}

/// The list of DriftReports.
pub fn report_list(
    page: &Page<std::sync::Arc<DriftReport>>,
    f: &Filter,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::from("<h1>DriftReports</h1><p class=\"kinds\">");
    for (label, kind) in [("all", ""), ("stacks", "Stack"), ("nodes", "Node")] {
        if f.kind.eq_ignore_ascii_case(kind) {
            w!(out, "<strong>{label}</strong> ");
        } else {
            let other = Filter {
                kind: kind.to_owned(),
                page: 1,
                ..f.clone()
            };
            w!(
                out,
                "<a href=\"/driftreports?{}\">{label}</a> ",
                Esc(&other.query())
            );
        }
    }
    out.push_str("</p>");
    filter_form(
        &mut out,
        f,
        true,
        &["InSync", "Drifted", "Error", "Pending"],
    );
    reports_table(&mut out, &page.rows, now);
    pager(&mut out, "/driftreports", f, page);
    out
}

fn reports_table(out: &mut String, reports: &[std::sync::Arc<DriftReport>], now: DateTime<Utc>) {
    if reports.is_empty() {
        out.push_str("<p class=\"empty\">No reports match.</p>");
        return;
    }
    out.push_str(
        "<table class=\"reports\"><thead><tr><th>Status</th><th>Kind</th><th>Namespace</th>\
         <th>Target</th><th>Items</th><th>Checked</th></tr></thead><tbody>",
    );
    for r in reports {
        let status = report_status(r);
        w!(
            out,
            "<tr data-report=\"{}\" data-status=\"{}\"><td>",
            Esc(&r.name_any()),
            status
        );
        status_badge(out, status);
        w!(
            out,
            "</td><td>{}</td><td>{}</td><td>",
            kind_word(r.spec.target.kind),
            Esc(&r.namespace().unwrap_or_default())
        );
        report_link(out, r);
        out.push_str("</td><td>");
        plus_tilde_minus(out, view::summary(r));
        out.push_str("</td><td>");
        time(out, view::checked_at(r), now);
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
}

fn phase_word(phase: RunPhase) -> &'static str {
    match phase {
        RunPhase::Running => "Running",
        RunPhase::Succeeded => "Succeeded",
        RunPhase::Failed => "Failed",
        RunPhase::Cancelled => "Cancelled",
    }
}

/// The href of a DriftScan's page.
pub fn scan_href(scan: &DriftScan) -> String {
    format!(
        "/namespaces/{}/driftscans/{}",
        view::encode(&scan.namespace().unwrap_or_default()),
        view::encode(&scan.name_any())
    )
}

fn progress(out: &mut String, scan: &DriftScan) {
    match scan.status.as_ref().and_then(|s| s.last_run.as_ref()) {
        Some(run) => {
            w!(
                out,
                "<span class=\"progress\" data-total=\"{0}\">{1} queued · {2} running · {3}/{0} \
                 done</span>",
                run.total,
                run.queued,
                run.running,
                run.completed
            );
        }
        None => out.push_str("<span class=\"muted\">no run yet</span>"),
    }
}

/// The list of DriftScans.
pub fn scan_list(
    page: &Page<std::sync::Arc<DriftScan>>,
    f: &Filter,
    queue_depth: i64,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::from("<h1>DriftScans</h1>");
    w!(
        out,
        "<p>Queue depth: <strong id=\"queue-depth\">{queue_depth}</strong> stacks waiting for a \
         scan Job.</p>"
    );
    filter_form(
        &mut out,
        f,
        true,
        &["Running", "Succeeded", "Failed", "Cancelled", "Pending"],
    );
    if page.rows.is_empty() {
        out.push_str("<p class=\"empty\">No DriftScans match.</p>");
    } else {
        out.push_str(
            "<table class=\"scans\"><thead><tr><th>Namespace</th><th>Name</th><th>Schedule</th>\
             <th>Last run</th><th>Progress</th><th>Drifted</th><th>Errored</th><th>Next run</th>\
             </tr></thead><tbody>",
        );
        for scan in &page.rows {
            let status = scan.status.clone().unwrap_or_default();
            w!(
                out,
                "<tr data-scan=\"{1}\"><td>{0}</td><td><a href=\"{2}\">{1}</a></td><td>{3}{4}</td><td>",
                Esc(&scan.namespace().unwrap_or_default()),
                Esc(&scan.name_any()),
                Esc(&scan_href(scan)),
                Esc(scan.spec.schedule.as_deref().unwrap_or("manual")),
                if scan.spec.suspend { " (suspended)" } else { "" }
            );
            match &status.last_run {
                Some(run) => {
                    status_badge(&mut out, phase_word(run.phase));
                    out.push(' ');
                    time(&mut out, Some(of_time(&run.started_at)), now);
                }
                None => out.push_str("<span class=\"muted\">never</span>"),
            }
            out.push_str("</td><td>");
            progress(&mut out, scan);
            let (drifted, errored) = status
                .last_run
                .as_ref()
                .map_or((0, 0), |r| (r.drifted, r.errored));
            w!(
                out,
                "</td><td class=\"n drifted\">{drifted}</td><td class=\"n failed\">{errored}</td><td>"
            );
            match &status.next_scheduled_at {
                Some(at) => time(&mut out, Some(of_time(at)), now),
                None => out.push_str("<span class=\"muted\">–</span>"),
            }
            out.push_str("</td></tr>");
        }
        out.push_str("</tbody></table>");
    }
    pager(&mut out, "/driftscans", f, page);
    out
}

fn unit_word(phase: UnitPhase) -> String {
    format!("{phase:?}")
}

/// One DriftScan: its runs and its stacks.
pub fn scan_page(
    scan: &DriftScan,
    stacks: &Page<std::sync::Arc<DriftReport>>,
    f: &Filter,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    let status = scan.status.clone().unwrap_or_default();
    w!(
        out,
        "<h1>DriftScan {}/{}</h1><dl class=\"facts\"><dt>Repository</dt><dd>{} @ {}</dd>\
         <dt>Schedule</dt><dd>{}{}</dd><dt>Next run</dt><dd>",
        Esc(&scan.namespace().unwrap_or_default()),
        Esc(&scan.name_any()),
        Esc(&scan.spec.source.git.url),
        Esc(&scan.spec.source.git.git_ref),
        Esc(scan.spec.schedule.as_deref().unwrap_or("manual")),
        if scan.spec.suspend {
            " (suspended)"
        } else {
            ""
        },
    );
    match &status.next_scheduled_at {
        Some(at) => time(&mut out, Some(of_time(at)), now),
        None => out.push_str("<span class=\"muted\">–</span>"),
    }
    out.push_str("</dd><dt>Last run</dt><dd>");
    match &status.last_run {
        Some(run) => {
            w!(out, "{} ", Esc(&run.id));
            status_badge(&mut out, phase_word(run.phase));
            w!(
                out,
                " {:?} at {} · ",
                run.trigger,
                Esc(run.commit.as_deref().unwrap_or("?"))
            );
            time(&mut out, Some(of_time(&run.started_at)), now);
            out.push_str(" · ");
            progress(&mut out, scan);
        }
        None => out.push_str("<span class=\"muted\">never</span>"),
    }
    out.push_str("</dd></dl>");
    if let Some(run) = &status.last_run {
        if !run.units.is_empty() {
            out.push_str(
                "<h2>Units of the last run</h2><table class=\"units\"><thead><tr><th>Stack</th>\
                 <th>Phase</th><th>Attempts</th></tr></thead><tbody>",
            );
            for u in &run.units {
                w!(
                    out,
                    "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td></tr>",
                    Esc(&u.stack),
                    unit_word(u.phase),
                    u.attempts
                );
            }
            out.push_str("</tbody></table>");
        }
    }
    out.push_str("<h2>Stacks</h2>");
    filter_form(
        &mut out,
        f,
        false,
        &["InSync", "Drifted", "Error", "Pending"],
    );
    reports_table(&mut out, &stacks.rows, now);
    pager(
        &mut out,
        &format!(
            "/namespaces/{}/driftscans/{}",
            view::encode(&scan.namespace().unwrap_or_default()),
            view::encode(&scan.name_any())
        ),
        f,
        stacks,
    );
    if !status.history.is_empty() {
        out.push_str("<h2>Runs</h2><ol class=\"timeline\">");
        for run in &status.history {
            out.push_str("<li>");
            time(&mut out, Some(of_time(&run.started_at)), now);
            w!(out, " {} ", Esc(&run.id));
            status_badge(&mut out, phase_word(run.phase));
            w!(
                out,
                " {:?} at {}: {} stacks, {} drifted, {} errored</li>",
                run.trigger,
                Esc(run.commit.as_deref().unwrap_or("?")),
                run.total,
                run.drifted,
                run.errored
            );
        }
        out.push_str("</ol>");
    }
    out
}

fn change_word(change: ChangeType) -> &'static str {
    match change {
        ChangeType::Added => "added",
        ChangeType::Changed => "changed",
        ChangeType::Removed => "removed",
    }
}

fn items_table(out: &mut String, items: &[DriftItem], truncated: u32) {
    if items.is_empty() {
        out.push_str("<p class=\"empty\">Nothing drifted.</p>");
        return;
    }
    out.push_str("<div class=\"items\">");
    for item in items {
        w!(
            out,
            "<section class=\"item\" data-address=\"{0}\"><h3><code>{0}</code> \
             <span class=\"change c-{1}\">{1}{2}</span>",
            Esc(&item.address),
            change_word(item.change),
            if item.replace { ", replace" } else { "" }
        );
        if item.corrected {
            out.push_str(" <span class=\"badge s-insync\">corrected</span>");
        }
        out.push_str("</h3>");
        if let Some(source) = &item.source {
            w!(out, "<p class=\"muted\">from {}</p>", Esc(source));
        }
        if !item.attributes.is_empty() {
            out.push_str(
                "<table class=\"attributes\"><thead><tr><th>Attribute</th><th>Before (live)</th>\
                 <th>After (code)</th></tr></thead><tbody>",
            );
            for a in &item.attributes {
                w!(out, "<tr><td><code>{}</code></td>", Esc(&a.path));
                for value in [&a.before, &a.after] {
                    match value {
                        Some(v) => {
                            w!(out, "<td><code>{}</code></td>", Esc(v));
                        }
                        None => out.push_str("<td class=\"muted\">(absent)</td>"),
                    }
                }
                out.push_str("</tr>");
            }
            out.push_str("</tbody></table>");
        }
        if let Some(diff) = &item.diff {
            w!(out, "<pre class=\"diff\">{}</pre>", Esc(diff));
        }
        out.push_str("</section>");
    }
    out.push_str("</div>");
    if truncated > 0 {
        w!(
            out,
            "<p class=\"muted\">{truncated} more items are not in the report (it holds at most \
             200).</p>"
        );
    }
}

/// One DriftReport: the target, what drifted attribute by attribute, the history.
pub fn report_page(
    report: &DriftReport,
    artifact_link: impl Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    let status = report.status.clone().unwrap_or_default();
    let word = report_status(report);
    w!(
        out,
        "<h1>{} <span id=\"status\">",
        Esc(&report.spec.target.name)
    );
    status_badge(&mut out, word);
    w!(
        out,
        "</span></h1><dl class=\"facts\"><dt>Report</dt><dd>{}/{}</dd><dt>Kind</dt><dd>{}</dd>",
        Esc(&report.namespace().unwrap_or_default()),
        Esc(&report.name_any()),
        kind_word(report.spec.target.kind)
    );
    if let (Some(scan), Some(ns)) = (&report.spec.target.scan, report.namespace()) {
        w!(
            out,
            "<dt>DriftScan</dt><dd><a href=\"/namespaces/{}/driftscans/{}\">{}</a></dd>",
            Esc(&view::encode(&ns)),
            Esc(&view::encode(scan)),
            Esc(scan)
        );
    }
    if let Some(node) = &report.spec.target.node {
        w!(
            out,
            "<dt>Node</dt><dd><a href=\"/nodes/{}\">{}</a></dd>",
            Esc(&view::encode(node)),
            Esc(node)
        );
    }
    if let Some(s) = &status.summary {
        out.push_str("<dt>Items</dt><dd id=\"counts\">");
        plus_tilde_minus(&mut out, Some(s));
        out.push_str("</dd><dt>Checked</dt><dd>");
        time(&mut out, Some(of_time(&s.checked_at)), now);
        for (label, value) in [
            ("Commit", &s.commit),
            ("Revision", &s.revision),
            ("Trigger", &s.trigger),
            ("Run", &s.run),
        ] {
            if let Some(v) = value {
                w!(out, "</dd><dt>{label}</dt><dd><code>{}</code>", Esc(v));
            }
        }
        out.push_str("</dd>");
    }
    if let Some(artifact) = &status.artifact {
        out.push_str("<dt>Plan artifact</dt><dd>");
        let locations = std::iter::once(&artifact.plan_json).chain(&artifact.plan_text);
        for (i, location) in locations.enumerate() {
            if i > 0 {
                out.push_str("<br>");
            }
            match artifact_link(location) {
                Some(href) => {
                    w!(
                        out,
                        "<a class=\"artifact\" href=\"{}\" rel=\"noopener noreferrer\"><code>{}</code></a>",
                        Esc(&href),
                        Esc(location)
                    );
                }
                None => {
                    w!(out, "<code class=\"artifact\">{}</code>", Esc(location));
                }
            }
        }
        out.push_str("</dd>");
    }
    out.push_str("</dl>");
    if let Some(error) = &status.error {
        w!(
            out,
            "<h2>Error</h2><pre class=\"error\">{}</pre>",
            Esc(error)
        );
    }
    if !status.policies.is_empty() {
        policy_results(&mut out, report, now);
    }
    out.push_str("<h2>What drifted</h2>");
    items_table(&mut out, &status.items, status.truncated_items);
    if let Some(text) = &status.plan_text {
        w!(
            out,
            "<h2>Plan</h2><pre class=\"plan\" id=\"plan\">{}</pre>",
            Esc(text)
        );
    }
    if let Some(current) = &status.summary {
        out.push_str("<h2>History</h2><ol class=\"timeline\" id=\"history\">");
        for s in std::iter::once(current).chain(&status.history) {
            out.push_str("<li>");
            time(&mut out, Some(of_time(&s.checked_at)), now);
            out.push(' ');
            status_badge(&mut out, view::status_word(s.status));
            out.push(' ');
            plus_tilde_minus(&mut out, Some(s));
            if let Some(c) = s.commit.as_ref().or(s.revision.as_ref()) {
                w!(out, " <code>{}</code>", Esc(c));
            }
            out.push_str("</li>");
        }
        out.push_str("</ol>");
    }
    out
}

fn policy_results(out: &mut String, report: &DriftReport, now: DateTime<Utc>) {
    out.push_str(
        "<h2>Policies</h2><table class=\"policies\" id=\"node-policies\"><thead><tr><th>Kind</th>\
         <th>Policy</th><th>State</th><th>Revision (current / desired)</th><th>Drifted</th>\
         <th>Changed</th><th>Failed</th><th>Checked</th><th>Message</th></tr></thead><tbody>",
    );
    for p in report.status.iter().flat_map(|s| &s.policies) {
        w!(
            out,
            "<tr data-policy=\"{1}\"><td>{0}</td><td><a href=\"/policies/{2}/{3}\">{1}</a></td><td>",
            p.kind.as_str(),
            Esc(&p.name),
            kind_segment(p.kind),
            Esc(&view::encode(&p.name))
        );
        status_badge(out, state_word(p.state));
        w!(
            out,
            "</td><td><code>{}</code> / <code>{}</code></td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td>",
            Esc(p.revision.as_deref().unwrap_or("–")),
            Esc(desired_revision(report, &p.name).unwrap_or("–")),
            p.drifted,
            p.changed,
            p.failed
        );
        time(out, Some(of_time(&p.checked_at)), now);
        w!(
            out,
            "</td><td>{}</td></tr>",
            Esc(p.message.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</tbody></table>");
}

/// The list of nodes.
pub fn node_list(page: &Page<NodeRow>, f: &Filter, now: DateTime<Utc>) -> String {
    let mut out = String::from("<h1>Nodes</h1>");
    filter_form(
        &mut out,
        f,
        false,
        &["InSync", "Drifted", "Error", "Pending"],
    );
    if page.rows.is_empty() {
        out.push_str("<p class=\"empty\">No nodes match.</p>");
    } else {
        out.push_str(
            "<table class=\"nodes\"><thead><tr><th>Node</th><th>Ready</th><th>Status</th>\
             <th>Policies in sync</th><th>Drifted</th><th>Failed</th><th>Breaches</th>\
             <th>Items</th><th>Checked</th></tr></thead><tbody>",
        );
        for n in &page.rows {
            w!(
                out,
                "<tr data-node=\"{0}\"><td><a href=\"/nodes/{1}\">{0}</a></td><td>{2}</td><td>",
                Esc(&n.name),
                Esc(&view::encode(&n.name)),
                Esc(n.ready.as_deref().unwrap_or("(gone)"))
            );
            status_badge(&mut out, n.status());
            w!(
                out,
                "</td><td class=\"n\">{}</td><td class=\"n drifted\">{}</td>\
                 <td class=\"n failed\">{}</td><td class=\"n\">{}</td><td>",
                n.counts.in_sync,
                n.counts.drifted,
                n.counts.failed,
                n.breaches
            );
            plus_tilde_minus(&mut out, n.report.as_deref().and_then(view::summary));
            out.push_str("</td><td>");
            time(
                &mut out,
                n.report.as_deref().and_then(view::checked_at),
                now,
            );
            out.push_str("</td></tr>");
        }
        out.push_str("</tbody></table>");
    }
    pager(&mut out, "/nodes", f, page);
    out
}

/// One node: its policies and what drifted.
pub fn node_page(row: &NodeRow, now: DateTime<Utc>) -> String {
    let mut out = String::new();
    w!(out, "<h1>Node {} <span id=\"status\">", Esc(&row.name));
    status_badge(&mut out, row.status());
    w!(
        out,
        "</span></h1><dl class=\"facts\"><dt>Ready</dt><dd>{}</dd><dt>Threshold breaches</dt>\
         <dd id=\"breaches\">{}</dd>",
        Esc(row.ready.as_deref().unwrap_or("(Node object gone)")),
        row.breaches
    );
    match &row.report {
        Some(report) => {
            w!(
                out,
                "<dt>Report</dt><dd><a href=\"{}\">{}/{}</a></dd></dl>",
                Esc(&report_href(report)),
                Esc(&report.namespace().unwrap_or_default()),
                Esc(&report.name_any())
            );
            if report
                .status
                .as_ref()
                .is_some_and(|s| !s.policies.is_empty())
            {
                policy_results(&mut out, report, now);
            } else {
                out.push_str("<p class=\"empty\">No policy has reported from this node.</p>");
            }
            let status = report.status.clone().unwrap_or_default();
            let (breaches, items): (Vec<DriftItem>, Vec<DriftItem>) = status
                .items
                .into_iter()
                .partition(|i| i.domain == "threshold");
            if !breaches.is_empty() {
                out.push_str(
                    "<h2>Threshold breaches</h2><table class=\"breaches\" id=\"breach-list\">\
                     <thead><tr><th>Threshold</th><th>Series</th><th>Value</th><th>Expected</th>\
                     <th>Severity</th></tr></thead><tbody>",
                );
                for b in &breaches {
                    let series = b.attributes.first();
                    let severity = b.attributes.iter().find(|a| a.path == "severity");
                    w!(
                        out,
                        "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        Esc(b.source.as_deref().unwrap_or(&b.address)),
                        Esc(series.map_or("", |a| a.path.as_str())),
                        Esc(series.and_then(|a| a.before.as_deref()).unwrap_or("")),
                        Esc(series.and_then(|a| a.after.as_deref()).unwrap_or("")),
                        Esc(severity.and_then(|a| a.before.as_deref()).unwrap_or(""))
                    );
                }
                out.push_str("</tbody></table>");
            }
            out.push_str("<h2>What drifted</h2>");
            items_table(&mut out, &items, status.truncated_items);
        }
        None => out
            .push_str("</dl><p class=\"empty\">The node's agent has not written a report yet.</p>"),
    }
    out
}

/// The list of policies.
pub fn policy_list(rows: &[PolicyRow], f: &Filter) -> String {
    let mut out = String::from("<h1>Policies</h1>");
    filter_form(&mut out, f, false, &["Ready", "Progressing", "Degraded"]);
    if rows.is_empty() {
        out.push_str("<p class=\"empty\">No policies match.</p>");
        return out;
    }
    out.push_str(
        "<table class=\"policies\"><thead><tr><th>Kind</th><th>Name</th><th>Ready</th>\
         <th>Rollout</th><th>Targeted</th><th>In sync</th><th>Drifted</th><th>Failed</th>\
         <th>Not checked</th></tr></thead><tbody>",
    );
    for p in rows {
        w!(
            out,
            "<tr data-policy=\"{1}\"><td>{0}</td><td><a href=\"/policies/{2}/{3}\">{1}</a></td><td>",
            p.kind.as_str(),
            Esc(&p.name),
            kind_segment(p.kind),
            Esc(&view::encode(&p.name))
        );
        match &p.ready {
            Some((status, reason)) => {
                w!(out, "{} ({})", Esc(status), Esc(reason));
            }
            None => out.push_str("<span class=\"muted\">–</span>"),
        }
        w!(
            out,
            "</td><td>{}</td><td class=\"n\">{}</td>",
            Esc(p.step.as_deref().unwrap_or("–")),
            p.targeted
        );
        counts_cells(&mut out, &p.counts);
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// What a policy's page shows of the policy object.
pub struct PolicyDetail<'a> {
    /// Kind.
    pub kind: PolicyKind,
    /// Name.
    pub name: &'a str,
    /// `metadata.generation`.
    pub generation: Option<i64>,
    /// Nodes the policy targets.
    pub targeted: i32,
    /// Its status conditions.
    pub conditions: &'a [Condition],
    /// ApplyPolicy only.
    pub rollout: Option<&'a RolloutStatus>,
    /// ApplyPolicy: the revision every node ran before the rollout.
    pub current_revision: Option<&'a str>,
    /// ApplyPolicy: the revision being rolled out.
    pub updated_revision: Option<&'a str>,
}

/// One policy: its conditions, its rollout and the nodes on each revision.
pub fn policy_page(
    p: &PolicyDetail<'_>,
    nodes: &Page<PolicyNode>,
    per_revision: &[(String, usize)],
    f: &Filter,
    now: DateTime<Utc>,
) -> String {
    let mut out = String::new();
    w!(
        out,
        "<h1>{} {}</h1><dl class=\"facts\"><dt>Generation</dt><dd>{}</dd><dt>Targeted nodes</dt>\
         <dd>{}</dd>",
        p.kind.as_str(),
        Esc(p.name),
        p.generation.unwrap_or_default(),
        p.targeted
    );
    for c in p.conditions {
        w!(
            out,
            "<dt>{}</dt><dd>{} ({}) {}</dd>",
            Esc(&c.type_),
            Esc(&c.status),
            Esc(&c.reason),
            Esc(&c.message)
        );
    }
    out.push_str("</dl>");
    if p.kind == PolicyKind::ApplyPolicy {
        out.push_str("<h2>Rollout</h2><dl class=\"facts\" id=\"rollout\">");
        w!(
            out,
            "<dt>Current revision</dt><dd><code>{}</code></dd><dt>Updated revision</dt>\
             <dd><code>{}</code></dd>",
            Esc(p.current_revision.unwrap_or("–")),
            Esc(p.updated_revision.unwrap_or("–"))
        );
        if let Some(r) = p.rollout {
            w!(
                out,
                "<dt>Step</dt><dd id=\"rollout-step\">{}</dd><dt>Message</dt><dd>{}</dd>",
                Esc(&r.step),
                Esc(r.message.as_deref().unwrap_or(""))
            );
            if let Some(failed) = &r.failed_revision {
                w!(
                    out,
                    "<dt>Failed revision</dt><dd><code>{}</code> on {}</dd>",
                    Esc(failed),
                    Esc(r.failed_node.as_deref().unwrap_or("?"))
                );
            }
            if r.skipped > 0 {
                w!(out, "<dt>Skipped nodes</dt><dd>{}</dd>", r.skipped);
            }
            out.push_str("<dt>Assigned</dt><dd>");
            for rc in &r.revisions {
                w!(
                    out,
                    "<code>{}</code> (#{}): {} nodes<br>",
                    Esc(&rc.name),
                    rc.revision,
                    rc.nodes
                );
            }
            out.push_str("</dd>");
        }
        out.push_str("</dl>");
    }
    out.push_str("<h2>Nodes by current revision</h2>");
    if !per_revision.is_empty() {
        out.push_str("<ul id=\"per-revision\">");
        for (rev, n) in per_revision {
            w!(
                out,
                "<li><code>{}</code>: {n} nodes</li>",
                Esc(if rev.is_empty() { "(none)" } else { rev })
            );
        }
        out.push_str("</ul>");
    }
    filter_form(
        &mut out,
        f,
        false,
        &["InSync", "Drifted", "Failed", "Refused"],
    );
    if nodes.rows.is_empty() {
        out.push_str("<p class=\"empty\">No node reports a result for this policy.</p>");
    } else {
        out.push_str(
            "<table class=\"policy-nodes\"><thead><tr><th>Node</th><th>Current revision</th>\
             <th>Desired revision</th><th>State</th><th>Drifted</th><th>Failed</th>\
             <th>Checked</th><th>Message</th></tr></thead><tbody>",
        );
        for n in &nodes.rows {
            w!(
                out,
                "<tr data-node=\"{0}\"><td><a href=\"/nodes/{1}\">{0}</a></td><td><code>{2}</code></td>\
                 <td><code>{3}</code></td><td>",
                Esc(&n.node),
                Esc(&view::encode(&n.node)),
                Esc(n.result.revision.as_deref().unwrap_or("–")),
                Esc(n.desired.as_deref().unwrap_or("–"))
            );
            status_badge(&mut out, state_word(n.result.state));
            w!(
                out,
                "</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>",
                n.result.drifted,
                n.result.failed
            );
            time(&mut out, Some(of_time(&n.result.checked_at)), now);
            w!(
                out,
                "</td><td>{}</td></tr>",
                Esc(n.result.message.as_deref().unwrap_or(""))
            );
        }
        out.push_str("</tbody></table>");
    }
    pager(
        &mut out,
        &format!(
            "/policies/{}/{}",
            kind_segment(p.kind),
            view::encode(p.name)
        ),
        f,
        nodes,
    );
    out
}

/// The sign-in form (a dashboard with a token).
pub fn login(failed: bool) -> String {
    let mut out = String::from("<h1>Sign in</h1>");
    if failed {
        out.push_str("<p class=\"error\" id=\"login-error\">That token is not valid.</p>");
    }
    out.push_str(
        "<form method=\"post\" action=\"/login\" class=\"login\"><label>Dashboard token \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\"></label>\
         <button type=\"submit\">Sign in</button></form>",
    );
    out
}
