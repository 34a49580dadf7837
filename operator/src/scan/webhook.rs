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
//!
//! Before anything else a request passes, in this order ([`guard`]): its client's budget of
//! authentication failures (`429`), the body size limit (`413`), authentication against the
//! DriftScan watch cache and the token cache ([`tokens`]) — one `401` for every failure — and the
//! DriftScan's budget of requests (`429`). The API server is called only for authenticated
//! requests.

pub mod guard;
#[cfg(test)]
mod http_tests;
pub mod tokens;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use driftless_crds::drift_report::{report_name, DriftReport};
use driftless_crds::drift_scan::{DriftScan, RunStatus, TriggerKind};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::ClientAddr;
use crate::repo::normalize;

use super::controller::{apply_status, scan_state, ScanController};
use super::queue::ScanKey;
use super::scheduler::{start_run, StartError};
use super::triggers::RunRequest;
use guard::Limiter;
pub use guard::{authenticate, Rate, Refusal};
use tokens::{secret_of, Tokens, FIRST_READ_WAIT};

/// Most clients, and DriftScans, whose budget is partly used that the limiters remember.
const MAX_LIMITED_KEYS: usize = 10_000;
/// How long an `/api/health` answer is reused (one API server call per period at most).
const HEALTH_TTL: Duration = Duration::from_secs(5);

/// Limits of the webhook API.
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookSettings {
    /// Longest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Authentication failures allowed per client address (IPv6: per /64).
    pub per_client: Rate,
    /// Authenticated requests allowed per DriftScan.
    pub per_scan: Rate,
    /// How often each webhook Secret is read again.
    pub token_refresh: Duration,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            per_client: Rate {
                per_second: 1.0,
                burst: 20,
            },
            per_scan: Rate {
                per_second: 1.0,
                burst: 10,
            },
            token_refresh: Duration::from_secs(60),
        }
    }
}

/// The webhook API's state: the controller, the token cache and the limiters.
pub struct Webhook {
    controller: Arc<ScanController>,
    tokens: Arc<Tokens>,
    settings: WebhookSettings,
    clients: Mutex<Limiter<IpAddr>>,
    scans: Mutex<Limiter<ScanKey>>,
    health: tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Webhook {
    /// The API over `controller`, authenticating against `tokens` (kept up to date by
    /// [`Tokens::run`]).
    pub fn new(
        controller: Arc<ScanController>,
        tokens: Arc<Tokens>,
        settings: WebhookSettings,
    ) -> Arc<Self> {
        Arc::new(Self {
            controller,
            tokens,
            clients: Mutex::new(Limiter::new(settings.per_client, MAX_LIMITED_KEYS)),
            scans: Mutex::new(Limiter::new(settings.per_scan, MAX_LIMITED_KEYS)),
            settings,
            health: tokio::sync::Mutex::new(None),
        })
    }

    /// The API over `controller`, with its token cache running as a background task.
    pub fn start(controller: Arc<ScanController>, settings: WebhookSettings) -> Arc<Self> {
        let tokens = Arc::new(Tokens::new());
        tokio::spawn(tokens.clone().run(
            controller.client().clone(),
            controller.scans().clone(),
            settings.token_refresh,
        ));
        Self::new(controller, tokens, settings)
    }

    /// Lets a request for `key` in, or says why not; gives the cached DriftScan and the body.
    async fn admit(
        &self,
        peer: IpAddr,
        key: &ScanKey,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Arc<DriftScan>, Bytes), Response> {
        let client = guard::client_key(peer);
        lock(&self.clients)
            .check(&client, Instant::now())
            .map_err(|wait| refuse(Refusal::TooManyRequests(wait)))?;
        let limit = self.settings.max_body_bytes;
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if let Some(len) = announced {
            guard::body_size(len, limit).map_err(refuse)?;
        }
        // The only read error that is not the client hanging up is the limit.
        let body = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| refuse(Refusal::PayloadTooLarge(limit)))?;
        let scan = self
            .controller
            .scans()
            .get(&ObjectRef::new(&key.name).within(&key.namespace));
        let token = match scan.as_deref().and_then(secret_of) {
            Some(secret) => self.tokens.get(&secret, FIRST_READ_WAIT).await,
            None => None,
        };
        let admitted = guard::admit(headers, &body, token.as_ref())
            .and_then(|()| scan.ok_or(Refusal::Unauthorized));
        let scan = match admitted {
            Ok(scan) => scan,
            Err(refusal) => {
                let _ = lock(&self.clients).take(&client, Instant::now());
                return Err(refuse(refusal));
            }
        };
        lock(&self.scans)
            .take(key, Instant::now())
            .map_err(|wait| refuse(Refusal::TooManyRequests(wait)))?;
        Ok((scan, body))
    }
}

/// The routes, to merge into the operator's router; it must be served with
/// [`ClientAddr`] connection info.
pub fn routes(webhook: Arc<Webhook>) -> Router {
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
        .with_state(webhook)
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

/// The answer to a refused request.
pub fn refuse(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Unauthorized => {
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized");
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        Refusal::TooManyRequests(wait) => {
            let secs = wait.as_secs().max(1);
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many requests; retry after {secs} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            r
        }
        Refusal::PayloadTooLarge(limit) => error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is longer than {limit} bytes"),
        ),
    }
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

async fn probe(c: &ScanController) -> (StatusCode, Value) {
    let api = tokio::time::timeout(Duration::from_secs(3), c.client().apiserver_version()).await;
    match api {
        Ok(Ok(v)) => (
            StatusCode::OK,
            json!({"status": "ok", "apiServer": {"reachable": true, "version": v.git_version}}),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "degraded", "apiServer": {"reachable": false, "error": e.to_string()}}),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "degraded", "apiServer": {"reachable": false, "error": "no answer within 3s"}}),
        ),
    }
}

/// Unauthenticated, so the API server's answer is reused for [`HEALTH_TTL`].
async fn health(State(w): State<Arc<Webhook>>) -> Response {
    let mut cached = w.health.lock().await;
    let (status, mut body) = match &*cached {
        Some((at, status, body)) if at.elapsed() < HEALTH_TTL => (*status, body.clone()),
        _ => {
            let (status, body) = probe(&w.controller).await;
            *cached = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    drop(cached);
    body["leader"] = json!(w.controller.is_leader());
    reply(status, body)
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
    State(w): State<Arc<Webhook>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    trigger(&w, peer.ip(), ScanKey::new(ns, name), None, &headers, body).await
}

async fn post_stack(
    State(w): State<Arc<Webhook>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((ns, name, rest)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(stack) = rest.strip_suffix("/scan") else {
        return error(StatusCode::NOT_FOUND, "POST .../stacks/{stack}/scan");
    };
    let stack = Some(stack.trim_matches('/').to_owned());
    trigger(&w, peer.ip(), ScanKey::new(ns, name), stack, &headers, body).await
}

async fn trigger(
    w: &Webhook,
    peer: IpAddr,
    key: ScanKey,
    stack: Option<String>,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let (cached, body) = match w.admit(peer, &key, headers, body).await {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if headers.get("x-github-event").and_then(|v| v.to_str().ok()) == Some("ping") {
        return reply(StatusCode::OK, json!({"message": "pong"}));
    }
    let parsed = match parse_body(&body) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let c = &w.controller;
    let (ns, name) = (key.namespace.as_str(), key.name.as_str());
    let authenticated_with = secret_of(&cached);
    let mut resolved = None;
    for attempt in 0..5 {
        // The cached DriftScan first; after a conflict, the API server's (the request is
        // authenticated by then).
        let scan = if attempt == 0 {
            cached.as_ref().clone()
        } else {
            let api: Api<DriftScan> = Api::namespaced(c.client().clone(), ns);
            match api.get_opt(name).await {
                Ok(Some(scan)) if secret_of(&scan) == authenticated_with => scan,
                Ok(_) => return refuse(Refusal::Unauthorized),
                Err(e) => return error(StatusCode::BAD_GATEWAY, format!("Kubernetes API: {e}")),
            }
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
    State(w): State<Arc<Webhook>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((ns, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = ScanKey::new(ns, name);
    let scan = match w.admit(peer.ip(), &key, &headers, body).await {
        Ok((scan, _)) => scan,
        Err(response) => return response,
    };
    let status = scan.status.clone().unwrap_or_default();
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
    State(w): State<Arc<Webhook>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    Path((ns, name, stack)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let key = ScanKey::new(ns.clone(), name.clone());
    let scan = match w.admit(peer.ip(), &key, &headers, body).await {
        Ok((scan, _)) => scan,
        Err(response) => return response,
    };
    let stack = stack.trim_matches('/').to_owned();
    let status = scan.status.clone().unwrap_or_default();
    let unit = status.last_run.as_ref().and_then(|r| {
        r.units
            .iter()
            .find(|u| normalize(&u.stack) == normalize(&stack))
    });
    let reports: Api<DriftReport> = Api::namespaced(w.controller.client().clone(), &ns);
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
