use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::{RolloutEvent, RolloutTransition, Transition};
use driftless_crds::time::time;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

use super::*;

fn t(report: &str, from: Option<DriftStatus>, to: DriftStatus) -> Transition {
    Transition {
        report: report.into(),
        kind: TargetKind::Stack,
        target: format!("infra/{report}"),
        from,
        to,
        checked_at: time(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
        added: 1,
        changed: 2,
        removed: 3,
        revision: Some("abc".into()),
        error: (to == DriftStatus::Error).then(|| "token <redacted> & more".into()),
    }
}

fn message<'a>(events: &'a [Transition], dashboard: Option<&'a str>) -> Message<'a> {
    Message {
        namespace: "team-a",
        policy: "ops",
        id: "uid-7",
        sequence: 7,
        events,
        rollouts: &[],
        omitted: 0,
        max_listed: 2,
        dashboard_url: dashboard,
    }
}

fn events() -> Vec<Transition> {
    vec![
        t("net", Some(DriftStatus::InSync), DriftStatus::Drifted),
        t("db", Some(DriftStatus::Drifted), DriftStatus::InSync),
        t("dns", None, DriftStatus::Error),
    ]
}

#[test]
fn headline_counts_each_kind() {
    let e = events();
    assert_eq!(
        message(&e, None).headline(),
        "Driftless team-a: 1 drifted, 1 back in sync, 1 failed"
    );
}

#[test]
fn slack_lists_up_to_max_listed_and_escapes() {
    let e = events();
    let body = slack(&message(&e, Some("https://dash.example.com/")));
    assert_eq!(
        body["text"],
        "Driftless team-a: 1 drifted, 1 back in sync, 1 failed"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[1]["type"], "section");
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    let text = blocks[1]["text"]["text"].as_str().unwrap();
    assert_eq!(
        text,
        "• <https://dash.example.com/namespaces/team-a/driftreports/net|infra/net> (stack): InSync → Drifted (+1 ~2 -3)\n\
         • <https://dash.example.com/namespaces/team-a/driftreports/db|infra/db> (stack): Drifted → InSync\n\
         … and 1 more"
    );
    // Without a dashboard: no links.
    let plain = slack(&message(&e, None));
    assert!(!plain.to_string().contains("http"), "{plain}");
    // Control characters of mrkdwn are escaped.
    let err = [t("dns", None, DriftStatus::Error)];
    let body = slack(&message(&err, None));
    assert!(body["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .contains("new → Error: token &lt;redacted&gt; &amp; more"));
}

#[test]
fn slack_sections_stay_under_the_limit() {
    let many: Vec<Transition> = (0..200)
        .map(|i| {
            t(
                &format!("stack-{i:03}-{}", "x".repeat(40)),
                Some(DriftStatus::InSync),
                DriftStatus::Drifted,
            )
        })
        .collect();
    let mut m = message(&many, Some("https://dash.example.com"));
    m.max_listed = 200;
    let body = slack(&m);
    let sections: Vec<_> = body["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["type"] == "section")
        .collect();
    assert!(sections.len() > 1);
    let lines: usize = sections
        .iter()
        .map(|s| {
            let text = s["text"]["text"].as_str().unwrap();
            assert!(text.chars().count() <= 3000);
            text.lines().count()
        })
        .sum();
    assert_eq!(lines, 200);
}

#[test]
fn teams_is_one_adaptive_card() {
    let e = events();
    let body = teams(&message(&e, Some("https://dash.example.com")));
    assert_eq!(body["type"], "message");
    let a = &body["attachments"][0];
    assert_eq!(a["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(a["content"]["type"], "AdaptiveCard");
    assert_eq!(a["content"]["version"], "1.4");
    let facts = a["content"]["body"][1]["facts"].as_array().unwrap();
    assert_eq!(facts.len(), 3, "two listed and the rest counted");
    assert_eq!(
        facts[0]["title"],
        "[infra/net](https://dash.example.com/namespaces/team-a/driftreports/net)"
    );
    assert_eq!(facts[2]["value"], "and 1 more");
}

#[test]
fn webhook_carries_every_event_with_links() {
    let e = events();
    let body = webhook(&message(&e, Some("https://dash.example.com")));
    assert_eq!(body["id"], "uid-7");
    assert_eq!(body["sequence"], 7);
    assert_eq!(body["policy"]["namespace"], "team-a");
    let list = body["events"].as_array().unwrap();
    assert_eq!(list.len(), 3, "the webhook is not cut to maxListed");
    assert_eq!(list[0]["from"], "InSync");
    assert_eq!(list[0]["to"], "Drifted");
    assert_eq!(list[0]["checkedAt"], "2023-11-14T22:13:20Z");
    assert_eq!(list[2].get("from"), None);
    assert_eq!(
        list[0]["url"],
        "https://dash.example.com/namespaces/team-a/driftreports/net"
    );
    assert_eq!(webhook(&message(&e, None))["events"][0].get("url"), None);
}

#[test]
fn pagerduty_triggers_and_resolves_per_target() {
    let e = events();
    let out = pagerduty(&message(&e, None), "RKEY");
    assert_eq!(out.len(), 3);
    assert_eq!(out[0]["event_action"], "trigger");
    assert_eq!(out[0]["dedup_key"], "driftless/team-a/net");
    assert_eq!(out[0]["payload"]["severity"], "warning");
    assert_eq!(out[0]["payload"]["source"], "infra/net");
    assert_eq!(out[1]["event_action"], "resolve");
    assert_eq!(out[1]["dedup_key"], "driftless/team-a/db");
    assert_eq!(out[1].get("payload"), None);
    assert_eq!(out[2]["payload"]["severity"], "error");
    assert!(out.iter().all(|e| e["routing_key"] == "RKEY"));
}

#[test]
fn signature_is_hmac_sha256_of_the_body() {
    // RFC 4231 test case 2.
    assert_eq!(
        sign(b"Jefe", b"what do ya want for nothing?"),
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
    mac.update(b"{}");
    assert_eq!(
        sign(b"k", b"{}"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
}

#[test]
fn event_note_is_bounded() {
    let many: Vec<Transition> = (0..100)
        .map(|i| {
            t(
                &format!("s{i}"),
                Some(DriftStatus::InSync),
                DriftStatus::Drifted,
            )
        })
        .collect();
    let mut m = message(&many, None);
    m.max_listed = 100;
    let note = event_note(&m);
    assert!(note.chars().count() <= 1000);
    assert!(
        note.starts_with("Driftless team-a: 100 drifted; infra/s0: InSync → Drifted (+1 ~2 -3)")
    );
}

fn rollout(policy: &str, to: RolloutEvent) -> RolloutTransition {
    RolloutTransition {
        policy: policy.into(),
        from: Some("Canary".into()),
        to,
        revision: Some(format!("{policy}-7")),
        node: Some("node-1".into()),
        message: Some("revision web-7 failed the health gate on node node-1: <unit failed>".into()),
        seen_at: time(chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()),
    }
}

#[test]
fn rollouts_are_in_every_payload() {
    let e = events();
    let r = [
        rollout("web", RolloutEvent::Degraded),
        rollout("api", RolloutEvent::RolledBack),
    ];
    let mut m = message(&e, None);
    m.rollouts = &r;
    m.max_listed = 3;
    assert_eq!(
        m.headline(),
        "Driftless team-a: 1 drifted, 1 back in sync, 1 failed, 1 rollout degraded, 1 rollout rolled back"
    );
    let web = "Canary → Degraded (revision web-7, node node-1): revision web-7 failed the health gate on node node-1: <unit failed>";
    // Slack: rollouts listed first, escaped; 3 listed in all, 2 more counted.
    let text = slack(&m)["blocks"][1]["text"]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "• ApplyPolicy *web*: Canary → Degraded (revision web-7, node node-1): revision web-7 failed the health gate on node node-1: &lt;unit failed&gt;"
    );
    assert!(lines[1].starts_with("• ApplyPolicy *api*: Canary → RolledBack"));
    assert!(lines[2].contains("infra/net"));
    assert_eq!(lines[3], "… and 2 more");
    let facts = teams(&m)["attachments"][0]["content"]["body"][1]["facts"].clone();
    assert_eq!(
        facts[0],
        json!({ "title": "ApplyPolicy web", "value": web })
    );
    let hook = webhook(&m);
    assert_eq!(hook["rollouts"][1]["policy"], "api");
    assert_eq!(hook["rollouts"][1]["to"], "RolledBack");
    assert_eq!(hook["rollouts"][0]["revision"], "web-7");
    assert_eq!(
        hook["events"].as_array().unwrap().len(),
        3,
        "the webhook lists all"
    );
    let pd = pagerduty(&m, "key");
    assert_eq!(pd.len(), 5);
    assert_eq!(pd[3]["event_action"], "trigger");
    assert_eq!(pd[3]["dedup_key"], "driftless/applypolicy/web/web-7");
    assert_eq!(pd[3]["payload"]["severity"], "error");
    assert_eq!(pd[3]["payload"]["class"], "Degraded");
    assert_eq!(pd[4]["payload"]["severity"], "warning");
    assert_eq!(
        pd[4]["payload"]["summary"],
        format!("ApplyPolicy api rollout: Canary → RolledBack (revision api-7, node node-1): revision web-7 failed the health gate on node node-1: <unit failed>")
    );
    let note = event_note(&m);
    assert!(
        note.contains(&format!("; ApplyPolicy web: {web}")),
        "{note}"
    );
    // Without rollouts the webhook still has the (empty) list.
    assert_eq!(webhook(&message(&e, None))["rollouts"], json!([]));
}
