//! The body each receiver type gets for one group of transitions (DriftReports and ApplyPolicy
//! rollouts), and the HMAC-SHA256 signature of the generic webhook: pure functions, no I/O.

use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::{RolloutEvent, RolloutTransition, Transition};
use hmac::{Hmac, Mac as _};
use serde_json::{json, Value};
use sha2::Sha256;

/// PagerDuty's Events API v2 endpoint, used when the Secret has no `url`.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";
/// Header carrying the delivery id (the same in every attempt of a group).
pub const DELIVERY_HEADER: &str = "X-Driftless-Delivery";
/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Driftless-Signature";
/// Longest Slack section text (Slack's limit is 3000 characters).
const SLACK_SECTION_CHARS: usize = 2900;

/// One group of transitions of one policy, as every receiver type renders it.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The policy's namespace (also the reports').
    pub namespace: &'a str,
    /// The policy's name.
    pub policy: &'a str,
    /// Delivery id.
    pub id: &'a str,
    /// Group number.
    pub sequence: u64,
    /// The transitions.
    pub events: &'a [Transition],
    /// ApplyPolicy rollouts that became `Degraded` or `RolledBack`.
    pub rollouts: &'a [RolloutTransition],
    /// Transitions beyond the group's bound, counted only.
    pub omitted: u32,
    /// Most transitions listed by name in chat messages.
    pub max_listed: usize,
    /// The dashboard base URL, if any.
    pub dashboard_url: Option<&'a str>,
}

impl Message<'_> {
    /// The dashboard page of a report, when a dashboard URL is configured.
    pub fn link(&self, report: &str) -> Option<String> {
        self.dashboard_url.map(|base| {
            format!(
                "{}/namespaces/{}/driftreports/{}",
                base.trim_end_matches('/'),
                self.namespace,
                report
            )
        })
    }

    fn count(&self, to: DriftStatus) -> usize {
        self.events.iter().filter(|e| e.to == to).count()
    }

    /// One line: `Driftless team-a: 2 drifted, 1 back in sync, 1 failed`.
    pub fn headline(&self) -> String {
        let mut parts = Vec::new();
        for (to, word) in [
            (DriftStatus::Drifted, "drifted"),
            (DriftStatus::InSync, "back in sync"),
            (DriftStatus::Error, "failed"),
        ] {
            let n = self.count(to);
            if n > 0 {
                parts.push(format!("{n} {word}"));
            }
        }
        for (to, word) in [
            (RolloutEvent::Degraded, "degraded"),
            (RolloutEvent::RolledBack, "rolled back"),
        ] {
            let n = self.rollouts.iter().filter(|r| r.to == to).count();
            if n > 0 {
                let noun = if n == 1 { "rollout" } else { "rollouts" };
                parts.push(format!("{n} {noun} {word}"));
            }
        }
        if self.omitted > 0 {
            parts.push(format!("{} more not listed", self.omitted));
        }
        format!("Driftless {}: {}", self.namespace, parts.join(", "))
    }

    /// The listed rollouts and transitions (rollouts first, `max_listed` in all) and how many
    /// are left out of the list.
    pub(super) fn listed(&self) -> (&[RolloutTransition], &[Transition], usize) {
        let r = self.rollouts.len().min(self.max_listed);
        let n = self.events.len().min(self.max_listed - r);
        (
            &self.rollouts[..r],
            &self.events[..n],
            self.rollouts.len() - r + self.events.len() - n + self.omitted as usize,
        )
    }
}

fn status_word(status: DriftStatus) -> &'static str {
    match status {
        DriftStatus::InSync => "InSync",
        DriftStatus::Drifted => "Drifted",
        DriftStatus::Error => "Error",
    }
}

pub(super) fn kind_word(kind: TargetKind) -> &'static str {
    match kind {
        TargetKind::Stack => "stack",
        TargetKind::Node => "node",
    }
}

/// `InSync → Drifted (+1 ~2 -0)` or `Drifted → Error: why`.
pub(super) fn change_text(t: &Transition) -> String {
    let from = t.from.map_or("new", status_word);
    let mut text = format!("{from} → {}", status_word(t.to));
    match t.to {
        DriftStatus::Drifted => {
            text.push_str(&format!(" (+{} ~{} -{})", t.added, t.changed, t.removed));
        }
        DriftStatus::Error => {
            if let Some(error) = &t.error {
                text.push_str(&format!(": {error}"));
            }
        }
        DriftStatus::InSync => {}
    }
    text
}

/// `Progressing → Degraded (revision web-7, node n1)`.
pub(super) fn rollout_change(r: &RolloutTransition) -> String {
    let mut text = format!("{} → {}", r.from.as_deref().unwrap_or("new"), r.to.as_str());
    let mut what = Vec::new();
    if let Some(revision) = &r.revision {
        what.push(format!("revision {revision}"));
    }
    if let Some(node) = &r.node {
        what.push(format!("node {node}"));
    }
    if !what.is_empty() {
        text.push_str(&format!(" ({})", what.join(", ")));
    }
    text
}

/// [`rollout_change`] and the rollout's message.
fn rollout_text(r: &RolloutTransition) -> String {
    match &r.message {
        Some(message) => format!("{}: {message}", rollout_change(r)),
        None => rollout_change(r),
    }
}

/// Escapes the three characters Slack's mrkdwn treats as control characters.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Slack incoming-webhook body: `text` (the notification fallback) and `section` blocks with
/// one line per target, each at most 2900 characters.
pub fn slack(m: &Message<'_>) -> Value {
    let (rollouts, listed, rest) = m.listed();
    let mut lines: Vec<String> = rollouts
        .iter()
        .map(|r| {
            format!(
                "• ApplyPolicy *{}*: {}",
                slack_escape(&r.policy),
                slack_escape(&rollout_text(r))
            )
        })
        .collect();
    lines.extend(listed.iter().map(|t| {
        let name = slack_escape(&t.target);
        let name = match m.link(&t.report) {
            Some(url) => format!("<{url}|{name}>"),
            None => format!("*{name}*"),
        };
        format!(
            "• {name} ({}): {}",
            kind_word(t.kind),
            slack_escape(&change_text(t))
        )
    }));
    if rest > 0 {
        lines.push(format!("… and {rest} more"));
    }
    let mut blocks = vec![json!({
        "type": "header",
        "text": { "type": "plain_text", "text": cut(&m.headline(), 150) },
    })];
    for chunk in chunks(&lines, SLACK_SECTION_CHARS) {
        blocks.push(json!({ "type": "section", "text": { "type": "mrkdwn", "text": chunk } }));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{ "type": "mrkdwn", "text": format!("NotificationPolicy {}/{} · delivery {}", m.namespace, m.policy, m.id) }],
    }));
    json!({ "text": slack_escape(&m.headline()), "blocks": blocks })
}

/// Joins lines into texts of at most `max` characters (a longer line is cut).
fn chunks(lines: &[String], max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in lines {
        let line = cut(line, max);
        if !current.is_empty() && current.chars().count() + 1 + line.chars().count() > max {
            out.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push('\n');
        }
        current.push_str(&line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A Microsoft Teams Workflows webhook body: a `message` with one Adaptive Card (1.4) holding
/// the headline and a FactSet of the listed targets.
pub fn teams(m: &Message<'_>) -> Value {
    let (rollouts, listed, rest) = m.listed();
    let mut facts: Vec<Value> = rollouts
        .iter()
        .map(|r| json!({ "title": format!("ApplyPolicy {}", r.policy), "value": rollout_text(r) }))
        .collect();
    facts.extend(listed.iter().map(|t| {
        let title = match m.link(&t.report) {
            Some(url) => format!("[{}]({url})", t.target),
            None => t.target.clone(),
        };
        json!({ "title": title, "value": change_text(t) })
    }));
    if rest > 0 {
        facts.push(json!({ "title": "…", "value": format!("and {rest} more") }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    { "type": "TextBlock", "text": m.headline(), "weight": "Bolder", "size": "Medium", "wrap": true },
                    { "type": "FactSet", "facts": facts },
                    { "type": "TextBlock", "text": format!("NotificationPolicy {}/{} · delivery {}", m.namespace, m.policy, m.id), "isSubtle": true, "wrap": true },
                ],
            },
        }],
    })
}

/// The generic webhook body: every transition of the group, machine-readable.
pub fn webhook(m: &Message<'_>) -> Value {
    let events: Vec<Value> = m
        .events
        .iter()
        .map(|t| {
            let mut e = serde_json::to_value(t).unwrap_or(Value::Null);
            if let (Some(url), Some(map)) = (m.link(&t.report), e.as_object_mut()) {
                map.insert("url".into(), json!(url));
            }
            e
        })
        .collect();
    json!({
        "id": m.id,
        "sequence": m.sequence,
        "policy": { "namespace": m.namespace, "name": m.policy },
        "summary": m.headline(),
        "events": events,
        "rollouts": m.rollouts,
        "omitted": m.omitted,
    })
}

/// The PagerDuty dedup key of a target: one incident per DriftReport.
pub fn dedup_key(namespace: &str, report: &str) -> String {
    format!("driftless/{namespace}/{report}")
}

/// The PagerDuty dedup key of a failed rollout: one incident per ApplyPolicy revision.
pub fn rollout_dedup_key(policy: &str, revision: Option<&str>) -> String {
    format!("driftless/applypolicy/{policy}/{}", revision.unwrap_or("-"))
}

/// PagerDuty Events API v2 events for the group: one per target, `trigger` on `Drifted`
/// (severity `warning`) and `Error` (severity `error`), `resolve` on `InSync`; then one
/// `trigger` per rollout (`Degraded`: severity `error`, `RolledBack`: `warning`).
pub fn pagerduty(m: &Message<'_>, routing_key: &str) -> Vec<Value> {
    let rollouts = m.rollouts.iter().map(|r| {
        let severity = match r.to {
            RolloutEvent::Degraded => "error",
            RolloutEvent::RolledBack => "warning",
        };
        json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": rollout_dedup_key(&r.policy, r.revision.as_deref()),
            "payload": {
                "summary": cut(&format!("ApplyPolicy {} rollout: {}", r.policy, rollout_text(r)), 1024),
                "source": r.policy,
                "severity": severity,
                "component": format!("applypolicy/{}", r.policy),
                "group": m.namespace,
                "class": r.to.as_str(),
                "custom_details": {
                    "revision": r.revision, "node": r.node, "message": r.message,
                    "policy": m.policy, "delivery": m.id,
                },
            },
        })
    });
    m.events
        .iter()
        .map(|t| {
            let key = dedup_key(m.namespace, &t.report);
            if t.to == DriftStatus::InSync {
                return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": key });
            }
            let severity = if t.to == DriftStatus::Error {
                "error"
            } else {
                "warning"
            };
            let mut event = json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": key,
                "payload": {
                    "summary": cut(&format!("{} {} {}: {}", m.namespace, kind_word(t.kind), t.target, change_text(t)), 1024),
                    "source": t.target,
                    "severity": severity,
                    "component": t.report,
                    "group": m.namespace,
                    "class": status_word(t.to),
                    "custom_details": {
                        "added": t.added, "changed": t.changed, "removed": t.removed,
                        "revision": t.revision, "error": t.error,
                        "policy": m.policy, "delivery": m.id,
                    },
                },
            });
            if let Some(url) = m.link(&t.report) {
                event["links"] = json!([{ "href": url, "text": "Driftless" }]);
            }
            event
        })
        .chain(rollouts)
        .collect()
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length; this cannot fail.
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Kubernetes Event note for the group (Events keep at most 1 KiB of note).
pub fn event_note(m: &Message<'_>) -> String {
    let (rollouts, listed, rest) = m.listed();
    let mut note = m.headline();
    for r in rollouts {
        note.push_str(&format!("; ApplyPolicy {}: {}", r.policy, rollout_text(r)));
    }
    for t in listed {
        note.push_str(&format!("; {}: {}", t.target, change_text(t)));
    }
    if rest > 0 {
        note.push_str(&format!("; and {rest} more"));
    }
    cut(&note, 1000)
}

#[cfg(test)]
mod tests;
