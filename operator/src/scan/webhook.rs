//! The DriftScan HTTP API, served on the operator's HTTP server.
//!
//! - `POST /api/v1/namespaces/{ns}/driftscans/{name}/scan`: start a run of every stack (or of
//!   the stacks affected by the changed files of the body or of a GitHub push payload);
//! - `POST /api/v1/namespaces/{ns}/driftscans/{name}/stacks/{stack...}/scan`: one stack;
//! - `GET /api/v1/namespaces/{ns}/driftscans/{name}`: the active or latest run and history;
//! - `GET /api/v1/namespaces/{ns}/driftscans/{name}/stacks/{stack...}`: one stack;
//! - `GET /api/health`: the operator and its API server connectivity.
//!
//! Requests are authenticated by the `token` key of the Secret in `spec.webhook.secretRef`:
//! `Authorization: Bearer TOKEN`, or `X-Hub-Signature-256: sha256=HMAC_SHA256(TOKEN, body)`.
//! A run is answered `202 Accepted` with its progress; a DriftScan with an active run answers
//! `409 Conflict` with that run's progress, unless `cancelInflightOnNewTrigger` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use driftless_crds::drift_report::{report_name, DriftReport};
use driftless_crds::drift_scan::{DriftScan, RunStatus, TriggerKind};
use driftless_crds::secret::SecretString;
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::repo::normalize;

use super::controller::{apply_status, scan_state, ScanController};
use super::queue::ScanKey;
use super::scheduler::{start_run, StartError};
use super::triggers::RunRequest;

/// The routes, to merge into the operator's router.
pub fn routes(controller: Arc<ScanController>) -> Router {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/v1/namespaces/{ns}/driftscans/{name}", get(get_scan))
        .route(
            "/api/v1/namespaces/{ns}/driftscans/{name}/scan",
            post(post_scan),
        )
        .route(
            "/api/v1/namespaces/{ns}/driftscans/{name}/stacks/{*rest}",
            get(get_stack).post(post_stack),
        )
        .with_state(controller)
}

fn reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    reply(status, json!({ "error": message.into() }))
}

/// The progress of a run as the API shows it.
pub fn progress(run: &RunStatus) -> Value {
    json!({
        "id": run.id,
        "trigger": run.trigger,
        "phase": run.phase,
        "commit": run.commit,
        "startedAt": run.started_at,
        "finishedAt": run.finished_at,
        "total": run.total,
        "queued": run.queued,
        "running": run.running,
        "completed": run.completed,
        "drifted": run.drifted,
        "errored": run.errored,
    })
}

async fn health(State(c): State<Arc<ScanController>>) -> Response {
    let api = tokio::time::timeout(Duration::from_secs(3), c.client().apiserver_version()).await;
    match api {
        Ok(Ok(v)) => reply(
            StatusCode::OK,
            json!({"status": "ok", "apiServer": {"reachable": true, "version": v.git_version}, "leader": c.is_leader()}),
        ),
        Ok(Err(e)) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "degraded", "apiServer": {"reachable": false, "error": e.to_string()}, "leader": c.is_leader()}),
        ),
        Err(_) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "degraded", "apiServer": {"reachable": false, "error": "no answer within 3s"}, "leader": c.is_leader()}),
        ),
    }
}

/// Checks a request against the token: bearer, or GitHub's `X-Hub-Signature-256`.
pub fn authenticate(headers: &HeaderMap, body: &[u8], token: &SecretString) -> bool {
    let token = token.expose().trim();
    if token.is_empty() {
        return false;
    }
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(given) = auth.strip_prefix("Bearer ") {
            return constant_time_eq(given.trim().as_bytes(), token.as_bytes());
        }
    }
    if let Some(sig) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    {
        let Ok(given) = hex::decode(sig.trim()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(token.as_bytes()) else {
            return false;
        };
        mac.update(body);
        return mac.verify_slice(&given).is_ok();
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fetches the DriftScan and checks the request's credentials; the error is the response.
async fn authorized(
    c: &ScanController,
    ns: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<DriftScan, Response> {
    let api: Api<DriftScan> = Api::namespaced(c.client().clone(), ns);
    let scan = match api.get_opt(name).await {
        Ok(Some(scan)) => scan,
        Ok(None) => {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no DriftScan {ns}/{name}"),
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!("Kubernetes API: {e}"),
            ))
        }
    };
    let Some(auth) = &scan.spec.webhook else {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("DriftScan {ns}/{name} has no spec.webhook: its HTTP API is off"),
        ));
    };
    let secrets: Api<Secret> = Api::namespaced(c.client().clone(), ns);
    let token = match secrets.get_opt(&auth.secret_ref.name).await {
        Ok(Some(secret)) => secret.data.and_then(|d| {
            d.get("token")
                .map(|v| SecretString::new(String::from_utf8_lossy(&v.0).into_owned()))
        }),
        Ok(None) => None,
        Err(e) => {
            return Err(error(
                StatusCode::BAD_GATEWAY,
                format!("Kubernetes API: {e}"),
            ))
        }
    };
    let Some(token) = token else {
        return Err(error(
            StatusCode::FORBIDDEN,
            format!("Secret {ns}/{} has no key \"token\"", auth.secret_ref.name),
        ));
    };
    if !authenticate(headers, body, &token) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "bad or missing bearer token or X-Hub-Signature-256",
        ));
    }
    Ok(scan)
}

/// What a trigger body asks.
#[derive(Debug, Default, PartialEq)]
pub struct TriggerBody {
    /// Who asks.
    pub actor: Option<String>,
    /// The commit to scan.
    pub commit: Option<String>,
    /// Changed files (repository paths), when known: only affected stacks are scanned.
    pub changed_files: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlainBody {
    trigger: Option<String>,
    commit: Option<String>,
    actor: Option<String>,
    changed_files: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct PushBody {
    after: Option<String>,
    pusher: Option<PushUser>,
    #[serde(default)]
    commits: Vec<PushCommit>,
}

#[derive(Deserialize)]
struct PushUser {
    name: Option<String>,
}

#[derive(Deserialize)]
struct PushCommit {
    #[serde(default)]
    added: Vec<String>,
    #[serde(default)]
    modified: Vec<String>,
    #[serde(default)]
    removed: Vec<String>,
}

/// Parses a trigger body: empty, `{trigger, commit, actor, changedFiles}`, or a GitHub push
/// payload (recognised by its `commits` list).
pub fn parse_body(body: &[u8]) -> Result<TriggerBody, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(TriggerBody::default());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    if value.get("commits").is_some() {
        let push: PushBody =
            serde_json::from_value(value).map_err(|e| format!("GitHub push payload: {e}"))?;
        let files: BTreeSet<String> = push
            .commits
            .into_iter()
            .flat_map(|c| c.added.into_iter().chain(c.modified).chain(c.removed))
            .collect();
        return Ok(TriggerBody {
            actor: push.pusher.and_then(|p| p.name),
            commit: push.after.filter(|c| !c.chars().all(|ch| ch == '0')),
            changed_files: Some(files.into_iter().collect()),
        });
    }
    let plain: PlainBody = serde_json::from_value(value)
        .map_err(|e| format!("body: expected {{trigger, commit, actor, changedFiles}}: {e}"))?;
    Ok(TriggerBody {
        actor: plain.actor.or(plain.trigger),
        commit: plain.commit,
        changed_files: plain.changed_files,
    })
}

fn under(file: &str, dir: &str) -> bool {
    dir.is_empty() || dir == "." || file == dir || file.starts_with(&format!("{dir}/"))
}

/// The stacks a change of `changed` files affects: a file in the stack's directory, or in a
/// local module the stack uses (directly, or through other local modules: `modules` maps a
/// directory to the local modules its `.tf` files use).
pub fn affected_stacks(
    stacks: &[String],
    changed: &[String],
    modules: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    stacks
        .iter()
        .filter(|stack| {
            let stack = normalize(stack);
            let mut dirs = vec![stack.clone()];
            let mut seen = BTreeSet::new();
            while let Some(dir) = dirs.pop() {
                if !seen.insert(dir.clone()) {
                    continue;
                }
                if changed.iter().any(|f| under(&normalize(f), &dir)) {
                    return true;
                }
                dirs.extend(modules.get(&dir).cloned().unwrap_or_default());
            }
            false
        })
        .cloned()
        .collect()
}

async fn post_scan(
    State(c): State<Arc<ScanController>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    trigger(&c, &ns, &name, None, &headers, &body).await
}

async fn post_stack(
    State(c): State<Arc<ScanController>>,
    Path((ns, name, rest)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(stack) = rest.strip_suffix("/scan") else {
        return error(StatusCode::NOT_FOUND, "POST .../stacks/{stack}/scan");
    };
    trigger(
        &c,
        &ns,
        &name,
        Some(stack.trim_matches('/').to_owned()),
        &headers,
        &body,
    )
    .await
}

async fn trigger(
    c: &ScanController,
    ns: &str,
    name: &str,
    stack: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    if headers.get("x-github-event").and_then(|v| v.to_str().ok()) == Some("ping") {
        return reply(StatusCode::OK, json!({"message": "pong"}));
    }
    let parsed = match parse_body(body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut resolved = None;
    for _attempt in 0..5 {
        let scan = match authorized(c, ns, name, headers, body).await {
            Ok(scan) => scan,
            Err(response) => return response,
        };
        let state = scan_state(&scan);
        // The run's commit (the body's, else the head of spec.source.git.ref), and the stacks
        // and local modules at that commit; fetched once per request.
        let repo = match &resolved {
            Some(r) => Arc::clone(r),
            None => match c.resolve_now(&scan, parsed.commit.clone()).await {
                Ok(r) => {
                    resolved = Some(Arc::clone(&r));
                    r
                }
                Err(e) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
            },
        };
        let all = repo.stacks.clone();
        let only = if let Some(stack) = &stack {
            if !all.iter().any(|s| normalize(s) == normalize(stack)) {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("DriftScan {ns}/{name} has no stack {stack:?}"),
                );
            }
            Some(vec![all
                .iter()
                .find(|s| normalize(s) == normalize(stack))
                .cloned()
                .unwrap_or_default()])
        } else if let Some(changed) = &parsed.changed_files {
            let hit = affected_stacks(&all, changed, &repo.modules);
            if hit.is_empty() {
                return reply(
                    StatusCode::OK,
                    json!({"message": "no stack is affected by the changed files"}),
                );
            }
            Some(hit)
        } else {
            None
        };
        let request = RunRequest {
            kind: TriggerKind::Webhook,
            actor: parsed.actor.clone(),
            commit: Some(repo.commit.clone()),
            stacks: only,
        };
        let mut status = state.status.clone();
        match start_run(&state.spec, &mut status, &request, all, Utc::now()) {
            Err(StartError::Busy(run)) => {
                return reply(
                    StatusCode::CONFLICT,
                    json!({"error": format!("DriftScan {ns}/{name} has an active run"), "run": progress(&run)}),
                )
            }
            Err(StartError::Stacks(e)) => return error(StatusCode::UNPROCESSABLE_ENTITY, e),
            Ok(_) => {}
        }
        let key = ScanKey::new(ns, name);
        match apply_status(
            c.client(),
            &key,
            &status,
            scan.metadata.resource_version.clone(),
        )
        .await
        {
            Ok(()) => {
                c.wake.notify_one();
                let run = status
                    .last_run
                    .as_ref()
                    .map(progress)
                    .unwrap_or(Value::Null);
                tracing::info!(scan = %key, run = %run["id"], "webhook started a run");
                return reply(StatusCode::ACCEPTED, run);
            }
            Err(crate::Error::Kube(kube::Error::Api(e))) if e.code == 409 => continue,
            Err(e) => return error(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "the DriftScan keeps changing; try again",
    )
}

async fn get_scan(
    State(c): State<Arc<ScanController>>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let scan = match authorized(&c, &ns, &name, &headers, b"").await {
        Ok(scan) => scan,
        Err(response) => return response,
    };
    let status = scan.status.unwrap_or_default();
    reply(
        StatusCode::OK,
        json!({
            "run": status.last_run.as_ref().map(progress),
            "units": status.last_run.as_ref().map(|r| &r.units),
            "history": status.history,
            "nextScheduledAt": status.next_scheduled_at,
        }),
    )
}

async fn get_stack(
    State(c): State<Arc<ScanController>>,
    Path((ns, name, stack)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let scan = match authorized(&c, &ns, &name, &headers, b"").await {
        Ok(scan) => scan,
        Err(response) => return response,
    };
    let stack = stack.trim_matches('/').to_owned();
    let status = scan.status.unwrap_or_default();
    let unit = status.last_run.as_ref().and_then(|r| {
        r.units
            .iter()
            .find(|u| normalize(&u.stack) == normalize(&stack))
    });
    let reports: Api<DriftReport> = Api::namespaced(c.client().clone(), &ns);
    let report = reports
        .get_opt(&report_name(&name, &stack))
        .await
        .ok()
        .flatten();
    if unit.is_none() && report.is_none() {
        return error(
            StatusCode::NOT_FOUND,
            format!("no stack {stack:?} in DriftScan {ns}/{name}"),
        );
    }
    reply(
        StatusCode::OK,
        json!({
            "stack": stack,
            "run": status.last_run.as_ref().map(|r| r.id.clone()),
            "unit": unit,
            "report": report.and_then(|r| r.status).map(|s| json!({"summary": s.summary, "error": s.error, "items": s.items.len(), "truncatedItems": s.truncated_items})),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_hmac() {
        let token = SecretString::new("s3cret");
        let mut h = HeaderMap::new();
        assert!(!authenticate(&h, b"{}", &token));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authenticate(&h, b"{}", &token));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authenticate(&h, b"{}", &token));
        let mut h = HeaderMap::new();
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let gh = SecretString::new("It's a Secret to Everybody");
        h.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                .parse()
                .unwrap(),
        );
        assert!(authenticate(&h, b"Hello, World!", &gh));
        assert!(!authenticate(&h, b"Hello, World?", &gh));
        assert!(!authenticate(&h, b"Hello, World!", &SecretString::new("")));
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").unwrap(), TriggerBody::default());
        let b = parse_body(br#"{"trigger":"ci","commit":"abc"}"#).unwrap();
        assert_eq!(
            (b.actor.as_deref(), b.commit.as_deref()),
            (Some("ci"), Some("abc"))
        );
        let push = br#"{"ref":"refs/heads/main","after":"0123abc","pusher":{"name":"alice"},
            "commits":[{"added":["live/a/main.tf"],"modified":["modules/net/x.tf"],"removed":[]},
                       {"added":[],"modified":["README.md"],"removed":["live/b/old.tf"]}]}"#;
        let b = parse_body(push).unwrap();
        assert_eq!(b.actor.as_deref(), Some("alice"));
        assert_eq!(b.commit.as_deref(), Some("0123abc"));
        assert_eq!(
            b.changed_files.unwrap(),
            [
                "README.md",
                "live/a/main.tf",
                "live/b/old.tf",
                "modules/net/x.tf"
            ]
        );
        assert!(parse_body(b"{not json")
            .unwrap_err()
            .starts_with("body is not JSON"));
    }

    #[test]
    fn changed_files_select_stacks_through_local_modules() {
        let tf = r#"
module "net" {
  source = "../../modules/net"
  cidr   = "10.0.0.0/16"
}
module "remote" {
  source = "terraform-aws-modules/vpc/aws"
}
"#;
        let snapshot = crate::repo::Snapshot::from_files([("live/a/main.tf", tf)]);
        let graph = crate::repo::module_graph(&snapshot, &["live/a".to_owned()]);
        assert_eq!(graph["live/a"], ["modules/net"]);
        let stacks: Vec<String> = ["live/a", "live/b", "live/c"].map(String::from).to_vec();
        let modules = BTreeMap::from([
            ("live/a".to_owned(), vec!["modules/net".to_owned()]),
            ("live/b".to_owned(), vec!["modules/app".to_owned()]),
            ("modules/app".to_owned(), vec!["modules/net".to_owned()]),
        ]);
        let hit = |files: &[&str]| {
            let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
            affected_stacks(&stacks, &files, &modules)
        };
        assert_eq!(hit(&["live/c/main.tf"]), ["live/c"]);
        assert_eq!(hit(&["modules/net/main.tf"]), ["live/a", "live/b"]);
        assert_eq!(hit(&["modules/app/x.tf"]), ["live/b"]);
        assert!(hit(&["README.md", "live/cc/x.tf"]).is_empty());
    }
}
