//! Notifications end to end against the API server in `KUBECONFIG`: the real operator binary
//! watches a NotificationPolicy and DriftReports the test writes through the status
//! subresource, and sends to real HTTP receivers on 127.0.0.1 that check each service's payload
//! schema (Slack incoming webhook, Teams Adaptive Card, PagerDuty Events API v2, the signed
//! JSON webhook) and answer as the service would.
//!
//! - `transitions_are_one_message_per_group`: three reports change within the group wait →
//!   exactly one message per chat receiver listing all three, one signed webhook call whose
//!   HMAC verifies, one PagerDuty event per target (trigger), one Kubernetes Event; one report
//!   back in sync → a second group with a PagerDuty `resolve` of the same dedup key.
//! - `receiver_down_for_a_minute_gets_the_group_once`: the webhook answers 503 for 60 s; the
//!   group arrives once after it is back, with the same delivery id.
//! - `operator_killed_between_detect_and_send_sends_once`: the group is persisted as pending,
//!   the operator is SIGKILLed before its send time; a new operator sends it, once.
//! - `operator_killed_while_sending_resends_with_the_same_id`: the operator is SIGKILLed while
//!   the receiver holds its request unanswered; the new operator sends the group once more,
//!   with the same delivery id, and then never again.
//! - `email_receiver_gets_one_mail_per_group`: a real SMTP server (aiosmtpd, STARTTLS and
//!   AUTH required, from `.ci/tools/smtp.sh`) gets one mail whose Message-ID carries the
//!   delivery id; a second receiver whose server offers no STARTTLS is refused and retried,
//!   with the reason in its status.
//! - `rolled_back_rollout_is_sent_once`: a real agent on a Node kept Ready, an ApplyPolicy
//!   whose canary health probe fails with `autoRollback`: the webhook of a policy with
//!   `rolloutEvents` gets the `RolledBack` rollout once, also after an operator restart.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use driftless_e2e::identity::skip;
use driftless_e2e::procs::{binary, free_port, print_logs, start_agent, start_operator, Process};
use driftless_e2e::{
    apply, apply_status, client_or_skip, in_scope, install_crds, kubelet, now, repo_root, Scope,
};
use hmac::{Hmac, Mac as _};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{json, Value};
use sha2::Sha256;

const HMAC_KEY: &str = "e2e-hmac-key";
const ROUTING_KEY: &str = "R0UT1NGKEY0000000000000000000000";

/// One request a receiver accepted (answered 2xx).
#[derive(Clone, Debug)]
struct Received {
    receiver: String,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// Loopback HTTP receivers for every HTTP receiver type, at `/<type>`.
#[derive(Default)]
struct Receivers {
    accepted: Mutex<Vec<Received>>,
    refused: Mutex<usize>,
    problems: Mutex<Vec<String>>,
    down: AtomicBool,
    /// While set, requests are held unanswered; their delivery ids go to `held`.
    hold: AtomicBool,
    held: Mutex<Vec<String>>,
}

impl Receivers {
    fn accepted(&self, receiver: &str) -> Vec<Received> {
        let all = self.accepted.lock().unwrap();
        all.iter()
            .filter(|r| r.receiver == receiver)
            .cloned()
            .collect()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().clone()
    }
}

async fn receive(
    State(state): State<Arc<Receivers>>,
    UrlPath(receiver): UrlPath<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    if state.down.load(Ordering::SeqCst) {
        *state.refused.lock().unwrap() += 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "down".into());
    }
    let headers: BTreeMap<String, String> = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    if state.hold.load(Ordering::SeqCst) {
        let id = headers
            .get("x-driftless-delivery")
            .cloned()
            .unwrap_or_default();
        state.held.lock().unwrap().push(id);
        // hyper drops this future when the client goes away.
        while state.hold.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let checked = serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("not JSON: {e}"))
        .and_then(|value| {
            check(&receiver, &headers, &body, &value)?;
            Ok(value)
        });
    match checked {
        Ok(value) => {
            state.accepted.lock().unwrap().push(Received {
                receiver: receiver.clone(),
                headers,
                body: value,
            });
            let status = if receiver == "pagerduty" {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            (status, r#"{"status":"success"}"#.into())
        }
        Err(problem) => {
            state
                .problems
                .lock()
                .unwrap()
                .push(format!("{receiver}: {problem}"));
            (StatusCode::BAD_REQUEST, problem)
        }
    }
}

fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, String> {
    v.as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("{what}: expected a non-empty string, got {v}"))
}

/// The payload schema of each service (the fields the service requires, with their limits).
fn check(
    receiver: &str,
    headers: &BTreeMap<String, String>,
    raw: &[u8],
    v: &Value,
) -> Result<(), String> {
    if headers.get("content-type").map(String::as_str) != Some("application/json") {
        return Err(format!("content-type {:?}", headers.get("content-type")));
    }
    match receiver {
        "slack" => {
            text(&v["text"], "text")?;
            for (i, block) in v["blocks"]
                .as_array()
                .ok_or("blocks: not a list")?
                .iter()
                .enumerate()
            {
                match block["type"].as_str() {
                    Some("header") => {
                        if block["text"]["type"] != "plain_text"
                            || text(&block["text"]["text"], "header")?.chars().count() > 150
                        {
                            return Err(format!("blocks[{i}]: bad header {block}"));
                        }
                    }
                    Some("section") => {
                        if block["text"]["type"] != "mrkdwn"
                            || text(&block["text"]["text"], "section")?.chars().count() > 3000
                        {
                            return Err(format!("blocks[{i}]: bad section {block}"));
                        }
                    }
                    Some("context") => {
                        block["elements"]
                            .as_array()
                            .filter(|e| !e.is_empty())
                            .ok_or("context without elements")?;
                    }
                    other => return Err(format!("blocks[{i}]: unknown type {other:?}")),
                }
            }
            Ok(())
        }
        "teams" => {
            if v["type"] != "message" {
                return Err("type is not message".into());
            }
            let attachments = v["attachments"]
                .as_array()
                .ok_or("attachments: not a list")?;
            if attachments.len() != 1 {
                return Err("expected one attachment".into());
            }
            let card = &attachments[0];
            if card["contentType"] != "application/vnd.microsoft.card.adaptive"
                || card["content"]["type"] != "AdaptiveCard"
            {
                return Err(format!("not an Adaptive Card: {card}"));
            }
            text(&card["content"]["version"], "version")?;
            for element in card["content"]["body"]
                .as_array()
                .ok_or("body: not a list")?
            {
                text(&element["type"], "body[].type")?;
            }
            Ok(())
        }
        "pagerduty" => {
            if v["routing_key"] != ROUTING_KEY {
                return Err("wrong routing_key".into());
            }
            let action = text(&v["event_action"], "event_action")?;
            if text(&v["dedup_key"], "dedup_key")?.len() > 255 {
                return Err("dedup_key longer than 255".into());
            }
            match action {
                "trigger" => {
                    let p = &v["payload"];
                    if text(&p["summary"], "payload.summary")?.chars().count() > 1024 {
                        return Err("summary longer than 1024".into());
                    }
                    text(&p["source"], "payload.source")?;
                    let severity = text(&p["severity"], "payload.severity")?;
                    if !["critical", "error", "warning", "info"].contains(&severity) {
                        return Err(format!("severity {severity}"));
                    }
                    Ok(())
                }
                "resolve" | "acknowledge" => Ok(()),
                other => Err(format!("event_action {other}")),
            }
        }
        "webhook" => {
            let delivery = headers
                .get("x-driftless-delivery")
                .ok_or("no X-Driftless-Delivery")?;
            if v["id"] != *delivery {
                return Err("X-Driftless-Delivery differs from the body's id".into());
            }
            let signature = headers
                .get("x-driftless-signature")
                .ok_or("no X-Driftless-Signature")?;
            let hex_mac = signature
                .strip_prefix("sha256=")
                .ok_or("signature without sha256=")?;
            let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
            mac.update(raw);
            mac.verify_slice(&hex::decode(hex_mac).map_err(|_| "signature not hex")?)
                .map_err(|_| "HMAC does not verify".to_owned())?;
            v["events"].as_array().ok_or("events: not a list")?;
            Ok(())
        }
        other => Err(format!("unknown receiver {other}")),
    }
}

async fn serve() -> anyhow::Result<(Arc<Receivers>, String)> {
    let state = Arc::new(Receivers::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app = Router::new()
        .route("/{receiver}", post(receive))
        .with_state(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((state, base))
}

async fn secret(scope: &Scope, name: &str, data: Value) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(scope.client.clone(), &scope.namespace);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": { "name": name }, "stringData": data,
    }))?;
    api.create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// Creates the report `name` (a stack of `scan`, labelled so) with `status`.
async fn report(scope: &Scope, name: &str, status: &str, scan: &str) -> anyhow::Result<()> {
    let api = scope.api("DriftReport")?;
    let mut object = scope.object(
        "DriftReport",
        name,
        json!({ "target": { "kind": "Stack", "name": format!("{scan}/{name}"), "scan": scan, "stack": name } }),
    )?;
    object["metadata"]["labels"]["driftless.dev/scan"] = json!(scan);
    apply(&api, &object).await?;
    set_status(scope, name, status).await
}

async fn set_status(scope: &Scope, name: &str, status: &str) -> anyhow::Result<()> {
    let api = scope.api("DriftReport")?;
    let mut body = json!({ "summary": { "status": status, "added": 1, "changed": 2, "removed": 0,
                                        "checkedAt": now(), "commit": "0123abc" } });
    if status == "Error" {
        body["error"] = json!("terraform plan failed: exit 1");
    }
    apply_status(&api, "DriftReport", name, body).await?;
    Ok(())
}

async fn policy(scope: &Scope, spec: Value) -> anyhow::Result<()> {
    let api = scope.api("NotificationPolicy")?;
    apply(&api, &scope.object("NotificationPolicy", "notify", spec)?).await?;
    Ok(())
}

async fn policy_status(scope: &Scope) -> anyhow::Result<Value> {
    let api = scope.api("NotificationPolicy")?;
    Ok(serde_json::to_value(api.get("notify").await?)?["status"].clone())
}

/// Polls every 250 ms for at most `limit` until `check` holds for the policy's status.
async fn wait_status(
    scope: &Scope,
    what: &str,
    limit: Duration,
    check: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let started = Instant::now();
    loop {
        let status = policy_status(scope).await?;
        if check(&status) {
            return Ok(status);
        }
        ensure!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}; status: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn operator_binary() -> PathBuf {
    binary("driftless-operator", "driftless-operator")
}

fn start(scope: &Scope, dir: &Path, identity: &str) -> anyhow::Result<Process> {
    start_operator(&operator_binary(), scope, dir, identity)
}

/// Runs `body` with a temp dir whose logs are printed when it fails.
async fn with_logs<F, Fut>(client: &kube::Client, test: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Scope, PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    install_crds(client).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_owned();
    let result = in_scope(client, test, move |scope| body(scope, path)).await;
    if result.is_err() {
        print_logs(dir.path());
    }
    result
}

#[tokio::test]
async fn transitions_are_one_message_per_group() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("transitions_are_one_message_per_group").await else {
        return Ok(());
    };
    with_logs(&client, "notify-groups", |scope, dir| async move {
        let (rx, base) = serve().await?;
        secret(&scope, "slack", json!({ "url": format!("{base}/slack") })).await?;
        secret(&scope, "teams", json!({ "url": format!("{base}/teams") })).await?;
        secret(
            &scope,
            "pd",
            json!({ "routingKey": ROUTING_KEY, "url": format!("{base}/pagerduty") }),
        )
        .await?;
        secret(
            &scope,
            "hook",
            json!({ "url": format!("{base}/webhook"), "hmacKey": HMAC_KEY }),
        )
        .await?;
        for name in ["net", "dns", "db"] {
            report(&scope, name, "InSync", "infra").await?;
        }
        // Outside the selector.
        report(&scope, "other", "InSync", "elsewhere").await?;
        policy(
            &scope,
            json!({
                "reportSelector": { "matchLabels": { "driftless.dev/scan": "infra" } },
                "groupWait": "4s",
                "dashboardUrl": "https://driftless.example.com",
                "receivers": [
                    { "name": "slack", "type": "slack", "secretRef": { "name": "slack" } },
                    { "name": "teams", "type": "teams", "secretRef": { "name": "teams" } },
                    { "name": "pagerduty", "type": "pagerduty", "secretRef": { "name": "pd" } },
                    { "name": "hook", "type": "webhook", "secretRef": { "name": "hook" } },
                    { "name": "events", "type": "event" },
                ],
            }),
        )
        .await?;
        let _operator = start(&scope, &dir, "notify-a")?;
        wait_status(&scope, "the baseline", Duration::from_secs(60), |s| {
            s["targets"].as_array().is_some_and(|t| t.len() == 3)
        })
        .await?;
        set_status(&scope, "net", "Drifted").await?;
        set_status(&scope, "dns", "Drifted").await?;
        set_status(&scope, "db", "Error").await?;
        set_status(&scope, "other", "Drifted").await?;
        let status = wait_status(&scope, "group 1 delivered", Duration::from_secs(60), |s| {
            s["sequence"] == 1
        })
        .await?;
        let id = status["receivers"][0]["lastDelivery"]
            .as_str()
            .context("no lastDelivery")?
            .to_owned();
        ensure!(
            rx.problems().is_empty(),
            "payload problems: {:?}",
            rx.problems()
        );
        let slack = rx.accepted("slack");
        ensure!(slack.len() == 1, "slack got {} messages", slack.len());
        let text = slack[0].body.to_string();
        for want in [
            "infra/net",
            "infra/dns",
            "infra/db",
            "2 drifted",
            "1 failed",
            "https://driftless.example.com/namespaces/",
        ] {
            ensure!(text.contains(want), "slack message lacks {want:?}: {text}");
        }
        ensure!(
            !text.contains("infra/other"),
            "a report outside the selector was sent: {text}"
        );
        ensure!(
            rx.accepted("teams").len() == 1,
            "teams got {}",
            rx.accepted("teams").len()
        );
        let hooks = rx.accepted("webhook");
        ensure!(hooks.len() == 1, "webhook got {}", hooks.len());
        ensure!(
            hooks[0].headers["x-driftless-delivery"] == id,
            "delivery id {} != {id}",
            hooks[0].headers["x-driftless-delivery"]
        );
        let events = hooks[0].body["events"].as_array().unwrap();
        let mut changes: Vec<(String, String, String)> = events
            .iter()
            .map(|e| {
                (
                    e["report"].as_str().unwrap_or_default().to_owned(),
                    e["from"].as_str().unwrap_or_default().to_owned(),
                    e["to"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        changes.sort();
        ensure!(
            changes
                == [
                    ("db".into(), "InSync".into(), "Error".into()),
                    ("dns".into(), "InSync".into(), "Drifted".into()),
                    ("net".into(), "InSync".into(), "Drifted".into())
                ],
            "webhook events {changes:?}"
        );
        let pd = rx.accepted("pagerduty");
        let mut keys: Vec<(String, String)> = pd
            .iter()
            .map(|r| {
                (
                    r.body["dedup_key"].as_str().unwrap_or_default().to_owned(),
                    r.body["event_action"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect();
        keys.sort();
        let ns = &scope.namespace;
        ensure!(
            keys == [
                (format!("driftless/{ns}/db"), "trigger".into()),
                (format!("driftless/{ns}/dns"), "trigger".into()),
                (format!("driftless/{ns}/net"), "trigger".into())
            ],
            "pagerduty events {keys:?}"
        );
        let k8s_events: Api<Event> = Api::namespaced(scope.client.clone(), ns);
        let list = k8s_events.list(&ListParams::default()).await?;
        let ours: Vec<&Event> = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some("DriftNotification"))
            .collect();
        ensure!(
            ours.len() == 1,
            "expected one DriftNotification Event, got {}",
            ours.len()
        );
        let note = ours[0].note.clone().unwrap_or_default();
        ensure!(
            note.contains("2 drifted, 1 failed") && note.contains("infra/net"),
            "Event note: {note}"
        );
        ensure!(
            !serde_json::to_string(&status)?.contains(HMAC_KEY),
            "a key in the status"
        );

        // Back in sync: a second group, PagerDuty resolves the same incident.
        set_status(&scope, "net", "InSync").await?;
        wait_status(&scope, "group 2 delivered", Duration::from_secs(60), |s| {
            s["sequence"] == 2
        })
        .await?;
        ensure!(
            rx.accepted("slack").len() == 2,
            "slack got {}",
            rx.accepted("slack").len()
        );
        let resolve: Vec<_> = rx
            .accepted("pagerduty")
            .into_iter()
            .filter(|r| r.body["event_action"] == "resolve")
            .collect();
        ensure!(
            resolve.len() == 1 && resolve[0].body["dedup_key"] == format!("driftless/{ns}/net"),
            "resolve: {resolve:?}"
        );
        ensure!(
            rx.problems().is_empty(),
            "payload problems: {:?}",
            rx.problems()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn receiver_down_for_a_minute_gets_the_group_once() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("receiver_down_for_a_minute_gets_the_group_once").await
    else {
        return Ok(());
    };
    with_logs(&client, "notify-down", |scope, dir| async move {
        let (rx, base) = serve().await?;
        secret(&scope, "hook", json!({ "url": format!("{base}/webhook"), "hmacKey": HMAC_KEY })).await?;
        report(&scope, "net", "InSync", "infra").await?;
        policy(&scope, json!({ "groupWait": "1s",
            "receivers": [{ "name": "hook", "type": "webhook", "secretRef": { "name": "hook" } }] })).await?;
        let _operator = start(&scope, &dir, "notify-down")?;
        wait_status(&scope, "the baseline", Duration::from_secs(60), |s| s["targets"].as_array().is_some_and(|t| t.len() == 1)).await?;
        rx.down.store(true, Ordering::SeqCst);
        set_status(&scope, "net", "Drifted").await?;
        let status = wait_status(&scope, "a failed attempt", Duration::from_secs(30), |s| {
            s["pending"]["attempts"].as_u64().unwrap_or(0) >= 1
        })
        .await?;
        let id = status["pending"]["id"].as_str().unwrap().to_owned();
        ensure!(status["receivers"][0]["lastError"] == "POST answered 503 Service Unavailable", "{status}");
        tokio::time::sleep(Duration::from_secs(60)).await;
        let refused = *rx.refused.lock().unwrap();
        ensure!(rx.accepted("webhook").is_empty(), "delivered while down");
        ensure!((3..=10).contains(&refused), "{refused} attempts in a minute of downtime (backoff 2s..60s)");
        rx.down.store(false, Ordering::SeqCst);
        wait_status(&scope, "delivery after the receiver is back", Duration::from_secs(75), |s| s["sequence"] == 1).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let hooks = rx.accepted("webhook");
        ensure!(hooks.len() == 1, "webhook got {} messages", hooks.len());
        ensure!(hooks[0].headers["x-driftless-delivery"] == id, "delivery id changed");
        ensure!(rx.problems().is_empty(), "payload problems: {:?}", rx.problems());
        eprintln!("receiver down 60s: {refused} refused attempts, then delivered once");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn operator_killed_between_detect_and_send_sends_once() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("operator_killed_between_detect_and_send_sends_once").await
    else {
        return Ok(());
    };
    with_logs(&client, "notify-kill", |scope, dir| async move {
        let (rx, base) = serve().await?;
        secret(
            &scope,
            "hook",
            json!({ "url": format!("{base}/webhook"), "hmacKey": HMAC_KEY }),
        )
        .await?;
        secret(&scope, "slack", json!({ "url": format!("{base}/slack") })).await?;
        report(&scope, "net", "InSync", "infra").await?;
        policy(
            &scope,
            json!({ "groupWait": "6s", "receivers": [
            { "name": "hook", "type": "webhook", "secretRef": { "name": "hook" } },
            { "name": "slack", "type": "slack", "secretRef": { "name": "slack" } }] }),
        )
        .await?;
        let mut first = start(&scope, &dir, "notify-first")?;
        wait_status(&scope, "the baseline", Duration::from_secs(60), |s| {
            s["targets"].as_array().is_some_and(|t| t.len() == 1)
        })
        .await?;
        set_status(&scope, "net", "Drifted").await?;
        let pending = wait_status(&scope, "the pending group", Duration::from_secs(30), |s| {
            s["pending"]["id"].is_string()
        })
        .await?;
        first.kill();
        ensure!(
            rx.accepted("webhook").is_empty() && rx.accepted("slack").is_empty(),
            "sent before its send time"
        );
        // Past the group's send time with no operator running: nothing may arrive.
        tokio::time::sleep(Duration::from_secs(7)).await;
        ensure!(
            rx.accepted("webhook").is_empty(),
            "sent by a killed operator"
        );
        let _second = start(&scope, &dir, "notify-second")?;
        wait_status(
            &scope,
            "delivery by the new operator",
            Duration::from_secs(60),
            |s| s["sequence"] == 1,
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let hooks = rx.accepted("webhook");
        ensure!(hooks.len() == 1, "webhook got {} messages", hooks.len());
        ensure!(
            rx.accepted("slack").len() == 1,
            "slack got {}",
            rx.accepted("slack").len()
        );
        ensure!(
            hooks[0].headers["x-driftless-delivery"] == pending["pending"]["id"].as_str().unwrap(),
            "delivery id changed"
        );
        ensure!(
            hooks[0].body["events"][0]["to"] == "Drifted",
            "{}",
            hooks[0].body
        );
        ensure!(
            rx.problems().is_empty(),
            "payload problems: {:?}",
            rx.problems()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn operator_killed_while_sending_resends_with_the_same_id() -> anyhow::Result<()> {
    let Some(client) =
        client_or_skip("operator_killed_while_sending_resends_with_the_same_id").await
    else {
        return Ok(());
    };
    with_logs(&client, "notify-inflight", |scope, dir| async move {
        let (rx, base) = serve().await?;
        secret(&scope, "hook", json!({ "url": format!("{base}/webhook"), "hmacKey": HMAC_KEY })).await?;
        report(&scope, "net", "InSync", "infra").await?;
        policy(&scope, json!({ "groupWait": "1s",
            "receivers": [{ "name": "hook", "type": "webhook", "secretRef": { "name": "hook" } }] })).await?;
        let mut first = start(&scope, &dir, "notify-inflight-1")?;
        wait_status(&scope, "the baseline", Duration::from_secs(60), |s| s["targets"].as_array().is_some_and(|t| t.len() == 1)).await?;
        rx.hold.store(true, Ordering::SeqCst);
        set_status(&scope, "net", "Drifted").await?;
        let started = Instant::now();
        while rx.held.lock().unwrap().is_empty() {
            ensure!(started.elapsed() < Duration::from_secs(30), "no request arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        first.kill();
        rx.hold.store(false, Ordering::SeqCst);
        let _second = start(&scope, &dir, "notify-inflight-2")?;
        let status = wait_status(&scope, "delivery by the new operator", Duration::from_secs(60), |s| s["sequence"] == 1).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The held request was never answered (its sender died); the new operator resent the
        // group once, with the same delivery id.
        let held = rx.held.lock().unwrap().clone();
        let hooks = rx.accepted("webhook");
        ensure!(held.len() == 1, "{} requests held", held.len());
        ensure!(hooks.len() == 1, "webhook accepted {} requests", hooks.len());
        let id = status["receivers"][0]["lastDelivery"].as_str().context("no lastDelivery")?;
        ensure!(held[0] == id && hooks[0].headers["x-driftless-delivery"] == id,
            "delivery ids: held {held:?}, resent {}, recorded {id}", hooks[0].headers["x-driftless-delivery"]);
        ensure!(rx.problems().is_empty(), "payload problems: {:?}", rx.problems());
        Ok(())
    })
    .await
}

/// An aiosmtpd started from the operator's test fixture, killed when dropped.
struct SmtpServer {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn smtp_python() -> PathBuf {
    std::env::var_os("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/driftless/tools")
        })
        .join("smtp/bin/python")
}

impl SmtpServer {
    /// `mode`: `starttls` (required, with AUTH as `bot`/`e2e-password`) or `plain`.
    fn start(mode: &str) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let dir = tempfile::tempdir()?;
        let mut command = std::process::Command::new(smtp_python());
        command
            .arg(repo_root().join("operator/tests/fixtures/smtp/server.py"))
            .arg(dir.path())
            .arg(mode);
        if mode == "starttls" {
            command.args(["bot", "e2e-password"]);
        }
        let mut child = command.stdout(std::process::Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the SMTP server did not start: {line:?}"))?;
        Ok(Self { child, port, dir })
    }

    fn messages(&self) -> Vec<Value> {
        (1..)
            .map_while(|n| {
                std::fs::read_to_string(self.dir.path().join(format!("messages/{n}.json"))).ok()
            })
            .filter_map(|text| serde_json::from_str(&text).ok())
            .collect()
    }

    fn ca(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.dir.path().join("ca.crt"))?)
    }
}

#[tokio::test]
async fn email_receiver_gets_one_mail_per_group() -> anyhow::Result<()> {
    const TEST: &str = "email_receiver_gets_one_mail_per_group";
    let Some(client) = client_or_skip(TEST).await else {
        return Ok(());
    };
    let aiosmtpd = std::process::Command::new(smtp_python())
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !aiosmtpd {
        skip(TEST, "aiosmtpd is missing: run .ci/tools/smtp.sh");
        return Ok(());
    }
    with_logs(&client, "notify-email", |scope, dir| async move {
        let good = SmtpServer::start("starttls")?;
        let plain = SmtpServer::start("plain")?;
        for (name, server) in [("mail", &good), ("plain-mail", &plain)] {
            secret(
                &scope,
                name,
                json!({ "host": "127.0.0.1", "port": server.port.to_string(),
                        "from": "Driftless <driftless@example.com>",
                        "to": "ops@example.com, oncall@example.org",
                        "username": "bot", "password": "e2e-password",
                        "ca.crt": good.ca()? }),
            )
            .await?;
        }
        report(&scope, "net", "InSync", "infra").await?;
        policy(
            &scope,
            json!({ "groupWait": "2s", "dashboardUrl": "https://driftless.example.com",
                    "receivers": [
                        { "name": "mail", "type": "email", "secretRef": { "name": "mail" } },
                        { "name": "plain", "type": "email", "secretRef": { "name": "plain-mail" } }] }),
        )
        .await?;
        let _operator = start(&scope, &dir, "notify-email")?;
        wait_status(&scope, "the baseline", Duration::from_secs(60), |s| {
            s["targets"].as_array().is_some_and(|t| t.len() == 1)
        })
        .await?;
        set_status(&scope, "net", "Drifted").await?;
        let status = wait_status(
            &scope,
            "delivered to mail, refused by plain",
            Duration::from_secs(60),
            |s| {
                s["pending"]["delivered"] == json!(["mail"])
                    && s["receivers"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["lastError"].is_string()))
            },
        )
        .await?;
        let id = status["pending"]["id"].as_str().context("no pending id")?;
        let plain_status = status["receivers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "plain")
            .context("no status of the plain receiver")?;
        let error = plain_status["lastError"].as_str().unwrap_or_default();
        ensure!(
            error.starts_with(&format!(
                "email receiver plain: SMTP server 127.0.0.1:{} does not offer STARTTLS",
                plain.port
            )),
            "lastError: {error}"
        );
        ensure!(
            !serde_json::to_string(&status)?.contains("e2e-password"),
            "the password in the status"
        );
        // Retries of the refused receiver do not mail the accepted one again.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mails = good.messages();
        ensure!(mails.len() == 1, "{} mails: {mails:?}", mails.len());
        ensure!(plain.messages().is_empty(), "mail over a plain connection");
        let mail = &mails[0];
        let header = |name: &str| {
            mail["headers"]
                .as_array()
                .and_then(|h| h.iter().find(|h| h[0] == name))
                .and_then(|h| h[1].as_str())
                .unwrap_or_default()
                .to_owned()
        };
        ensure!(
            header("Message-ID") == format!("<{id}.mail@example.com>"),
            "Message-ID {} for delivery {id}",
            header("Message-ID")
        );
        ensure!(
            header("Subject") == format!("Driftless {}: 1 drifted", scope.namespace),
            "Subject {}",
            header("Subject")
        );
        ensure!(mail["starttls"] == true && mail["login"] == "bot", "{mail}");
        ensure!(mail["defects"] == json!([]), "{mail}");
        ensure!(
            mail["rcpt_tos"] == json!(["ops@example.com", "oncall@example.org"]),
            "{mail}"
        );
        let body = mail["body"].as_str().unwrap_or_default();
        ensure!(
            body.contains("infra/net (stack): InSync → Drifted (+1 ~2 -0)")
                && body.contains("https://driftless.example.com/namespaces/"),
            "body: {body}"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rolled_back_rollout_is_sent_once() -> anyhow::Result<()> {
    let Some(client) = client_or_skip("rolled_back_rollout_is_sent_once").await else {
        return Ok(());
    };
    let agent_bin = binary("driftless-agent", "driftless");
    with_logs(&client, "notify-rollout", |scope, dir| async move {
        use k8s_openapi::api::core::v1::Node;
        let nodes: Api<Node> = Api::all(scope.client.clone());
        let node = scope.name("n1");
        let result = async {
            let (rx, base) = serve().await?;
            secret(&scope, "hook", json!({ "url": format!("{base}/webhook"), "hmacKey": HMAC_KEY }))
                .await?;
            let labels = json!({ "role": "app", "notify-e2e": scope.namespace });
            nodes
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(json!({ "metadata": { "name": node, "labels": {
                        "role": "app", "driftless.dev/e2e-run": scope.namespace } } }))?,
                )
                .await?;
            let _heartbeat = kubelet::heartbeat(&scope.client, vec![node.clone()], Default::default());
            policy(
                &scope,
                // The node's own DriftReport (in this namespace) is left out: rollouts only.
                json!({ "groupWait": "2s", "rolloutEvents": ["Degraded", "RolledBack"],
                        "reportSelector": { "matchLabels": { "notify-e2e": "no-report" } },
                        "policySelector": { "matchLabels": labels },
                        "receivers": [{ "name": "hook", "type": "webhook", "secretRef": { "name": "hook" } }] }),
            )
            .await?;
            let mut operator = start(&scope, &dir, "notify-rollout-1")?;
            let _agent = start_agent(&agent_bin, &scope, &node, &dir, None)?;
            wait_status(&scope, "the baseline", Duration::from_secs(60), |s| s["sequence"] == 0 && s.is_object())
                .await?;
            // An ApplyPolicy outside the selector fails too: not sent.
            let bad_probe = format!("http://127.0.0.1:{}/healthz", free_port());
            let api = scope.api("ApplyPolicy")?;
            let mut names = Vec::new();
            for (suffix, selected) in [("web", true), ("other", false)] {
                let name = scope.name(suffix);
                let mut object = scope.object(
                    "ApplyPolicy",
                    &name,
                    json!({
                        "nodeSelector": { "matchLabels": { "role": "app", "driftless.dev/e2e-run": scope.namespace } },
                        "interval": "30s",
                        "rollout": { "strategy": "Canary", "autoRollback": true,
                                     "canary": { "nodes": 1, "soak": "1s",
                                                 "healthCheck": { "httpGet": bad_probe, "timeout": "1s" } } },
                        "tasks": [{ "name": "conf", "file": { "path": format!("/etc/{suffix}.conf"), "content": "v1\n" } }],
                    }),
                )?;
                if selected {
                    object["metadata"]["labels"]["role"] = json!("app");
                    object["metadata"]["labels"]["notify-e2e"] = json!(scope.namespace);
                }
                apply(&api, &object).await?;
                names.push(name);
            }
            let status = wait_status(&scope, "the rollout group delivered", Duration::from_secs(120), |s| {
                s["sequence"] == 1
            })
            .await?;
            ensure!(
                status["rollouts"].as_array().is_some_and(|r| r.iter().any(|r| r["policy"] == names[0].as_str()
                    && r["step"] == "RolledBack")),
                "status.rollouts: {status}"
            );
            // Past a restart and a few group waits: still the one message.
            operator.kill();
            let _operator = start(&scope, &dir, "notify-rollout-2")?;
            tokio::time::sleep(Duration::from_secs(8)).await;
            let hooks = rx.accepted("webhook");
            ensure!(hooks.len() == 1, "webhook got {} messages: {hooks:?}", hooks.len());
            let body = &hooks[0].body;
            let rollouts = body["rollouts"].as_array().context("no rollouts")?;
            ensure!(rollouts.len() == 1, "rollouts: {body}");
            ensure!(
                rollouts[0]["policy"] == names[0].as_str()
                    && rollouts[0]["to"] == "RolledBack"
                    && rollouts[0]["node"] == node.as_str()
                    && rollouts[0]["revision"].is_string(),
                "rollout: {body}"
            );
            ensure!(body["events"] == json!([]), "report events: {body}");
            ensure!(
                body["summary"] == format!("Driftless {}: 1 rollout rolled back", scope.namespace),
                "summary: {body}"
            );
            ensure!(rx.problems().is_empty(), "payload problems: {:?}", rx.problems());
            anyhow::Ok(())
        }
        .await;
        // The scope's cleanup deletes the ApplyPolicies (labelled with the run), not Nodes.
        let _ = nodes.delete(&node, &Default::default()).await;
        result
    })
    .await
}
