//! The dashboard: read-only HTML pages over the operator's watch caches, served beside
//! `/metrics`. Pages work without JavaScript; a small script refreshes the page's content when
//! the server-sent events stream (`/events`) says the caches changed.
//!
//! Every page is computed from one snapshot of the caches (`view`), never from API calls, and
//! rendered on the server (`render`). Nothing here reads a Secret.

pub mod render;
pub mod view;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use driftless_crds::drift_report::PolicyKind;
use driftless_crds::{ApplyPolicy, DriftReport, DriftScan, FactsPolicy, LogPipeline};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt as _};
use kube::{Api, Client};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use view::{Filter, Snapshot};

/// The cookie a signed-in browser sends.
const COOKIE: &str = "driftless_dashboard";
/// How often open pages' state is compared with the caches.
const CHANGE_CHECK: Duration = Duration::from_secs(1);
/// The stylesheet and the live-update script.
const CSS: &str = include_str!("static/dashboard.css");
const JS: &str = include_str!("static/dashboard.js");
/// No page may load anything from elsewhere, nor run inline script.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
                   img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// Where the dashboard reads from.
#[derive(Clone)]
pub struct Sources {
    /// DriftScans.
    pub scans: Store<DriftScan>,
    /// DriftReports.
    pub reports: Store<DriftReport>,
    /// ApplyPolicies.
    pub apply: Store<ApplyPolicy>,
    /// FactsPolicies.
    pub facts: Store<FactsPolicy>,
    /// LogPipelines.
    pub logs: Store<LogPipeline>,
    /// Nodes.
    pub nodes: Store<Node>,
}

/// The dashboard's state.
pub struct Dashboard {
    sources: Sources,
    /// SHA-256 of the token, when the dashboard needs one.
    token: Option<[u8; 32]>,
    /// Mark the sign-in cookie `Secure` (the operator serves HTTPS).
    secure_cookie: bool,
    changes: tokio::sync::watch::Sender<u64>,
}

fn digest(token: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"driftless-dashboard\0");
    h.update(token.trim().as_bytes());
    h.finalize().into()
}

/// A cache of the DriftReports in `namespaces` (the operator's own and its scan namespaces)
/// with what the pages show (items, history, policies): the scan and policy controllers keep
/// summaries only. Reports of other namespaces never enter it.
pub fn watch_reports(client: &Client, namespaces: BTreeSet<String>) -> Store<DriftReport> {
    let (store, writer) = reflector::store();
    let api: Api<DriftReport> = Api::all(client.clone());
    let stream = reflector::reflector(
        writer,
        watcher(api, watcher::Config::default())
            .filter(move |event| {
                let keep = match event {
                    Ok(
                        watcher::Event::Apply(r)
                        | watcher::Event::InitApply(r)
                        | watcher::Event::Delete(r),
                    ) => r
                        .metadata
                        .namespace
                        .as_ref()
                        .is_some_and(|ns| namespaces.contains(ns)),
                    _ => true,
                };
                futures::future::ready(keep)
            })
            .modify(|r: &mut DriftReport| {
                r.metadata.managed_fields = None;
                r.metadata.annotations = None;
            }),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(err) = event {
                tracing::warn!(error = %err, "dashboard: watching DriftReports");
            }
        }
    });
    store
}

impl Dashboard {
    /// A dashboard over `sources`; with `token`, every page but the sign-in form needs it.
    pub fn new(sources: Sources, token: Option<&str>, secure_cookie: bool) -> Arc<Self> {
        let (changes, _) = tokio::sync::watch::channel(0);
        Arc::new(Self {
            sources,
            token: token.map(digest),
            secure_cookie,
            changes,
        })
    }

    /// Compares the caches with the pages' state every second while a page listens for
    /// changes. Runs until the task is dropped.
    pub async fn watch_changes(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHANGE_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.changes.receiver_count() == 0 {
                continue;
            }
            let now = view::fingerprint(&self.snapshot());
            self.changes.send_if_modified(|v| {
                let changed = *v != now;
                *v = now;
                changed
            });
        }
    }

    /// What the caches hold now.
    pub fn snapshot(&self) -> Snapshot {
        let s = &self.sources;
        let scans = s.scans.state();
        Snapshot {
            queue_depth: view::queue_depth(&scans),
            scans,
            reports: s.reports.state(),
            apply: s.apply.state(),
            facts: s.facts.state(),
            logs: s.logs.state(),
            nodes: s.nodes.state(),
            now: chrono::Utc::now(),
        }
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(digest);
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
            .find_map(|v| {
                let bytes = hex::decode(v).ok()?;
                <[u8; 32]>::try_from(bytes).ok()
            });
        [bearer, cookie]
            .into_iter()
            .flatten()
            .any(|d| bool::from(d.ct_eq(expected)))
    }
}

/// The dashboard's routes: `/`, the pages below it, `/events`, `/login` and `/static/…`.
pub fn routes(dashboard: Arc<Dashboard>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/driftscans", get(scans))
        .route("/driftreports", get(reports))
        .route("/namespaces/{ns}/driftscans/{name}", get(scan))
        .route("/namespaces/{ns}/driftreports/{name}", get(report))
        .route("/nodes", get(nodes))
        .route("/nodes/{name}", get(node))
        .route("/policies", get(policies))
        .route("/policies/{kind}/{name}", get(policy))
        .route("/events", get(events))
        .route("/login", get(login_form).post(login))
        .route(
            "/static/dashboard.css",
            get(|| async { asset("text/css", CSS) }),
        )
        .route(
            "/static/dashboard.js",
            get(|| async { asset("text/javascript", JS) }),
        )
        .with_state(dashboard)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A page with the dashboard's headers.
fn page(status: StatusCode, title: &str, main: &str, fingerprint: u64) -> Response {
    let mut response = (status, render::layout(title, main, fingerprint)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Renders a page from a snapshot, or sends an unsigned-in browser to the sign-in form.
fn serve(
    d: &Dashboard,
    headers: &HeaderMap,
    build: impl FnOnce(&Snapshot) -> Option<(String, String)>,
) -> Response {
    if !d.signed_in(headers) {
        return unauthorized(headers);
    }
    let snapshot = d.snapshot();
    let fingerprint = view::fingerprint(&snapshot);
    match build(&snapshot) {
        Some((title, main)) => page(StatusCode::OK, &title, &main, fingerprint),
        None => page(
            StatusCode::NOT_FOUND,
            "Not found",
            &render::not_found("This page"),
            fingerprint,
        ),
    }
}

fn unauthorized(headers: &HeaderMap) -> Response {
    let wants_html = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"));
    if wants_html {
        Redirect::to("/login").into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the dashboard needs a token: Authorization: Bearer <token>\n",
        )
            .into_response()
    }
}

async fn overview(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    serve(&d, &headers, |s| {
        Some((
            "Overview".into(),
            render::overview(&view::overview(s), s.now),
        ))
    })
}

async fn scans(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        Some((
            "DriftScans".into(),
            render::scan_list(&view::scans(s, &f), &f, s.queue_depth, s.now),
        ))
    })
}

async fn reports(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        Some((
            "DriftReports".into(),
            render::report_list(&view::reports(s, &f), &f, s.now),
        ))
    })
}

async fn scan(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        let scan = d.sources.scans.get(&ObjectRef::new(&name).within(&ns))?;
        let stacks = view::scan_stacks(s, &ns, &name, &f);
        Some((
            format!("DriftScan {ns}/{name}"),
            render::scan_page(&scan, &stacks, &f, s.now),
        ))
    })
}

async fn report(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    serve(&d, &headers, |s| {
        let report = d.sources.reports.get(&ObjectRef::new(&name).within(&ns))?;
        Some((
            report.spec.target.name.clone(),
            render::report_page(&report, |l| view::artifact_link(s, &report, l), s.now),
        ))
    })
}

async fn nodes(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        Some((
            "Nodes".into(),
            render::node_list(&view::nodes(s, &f), &f, s.now),
        ))
    })
}

async fn node(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    serve(&d, &headers, |s| {
        let row = view::node(s, &name)?;
        Some((format!("Node {name}"), render::node_page(&row, s.now)))
    })
}

async fn policies(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        Some((
            "Policies".into(),
            render::policy_list(&view::policies(s, &f), &f),
        ))
    })
}

async fn policy(
    State(d): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Path((kind, name)): Path<(String, String)>,
    Query(f): Query<Filter>,
) -> Response {
    serve(&d, &headers, |s| {
        let kind = view::kind_of_segment(&kind)?;
        let (apply, facts, logs);
        let detail = match kind {
            PolicyKind::ApplyPolicy => {
                apply = d.sources.apply.get(&ObjectRef::new(&name))?;
                let st = apply.status.as_ref();
                render::PolicyDetail {
                    kind,
                    name: &name,
                    generation: apply.metadata.generation,
                    targeted: st.map_or(0, |s| s.targeted),
                    conditions: st.map_or(&[], |s| &s.conditions),
                    rollout: st.and_then(|s| s.rollout.as_ref()),
                    current_revision: st.and_then(|s| s.current_revision.as_deref()),
                    updated_revision: st.and_then(|s| s.updated_revision.as_deref()),
                }
            }
            PolicyKind::FactsPolicy => {
                facts = d.sources.facts.get(&ObjectRef::new(&name))?;
                let st = facts.status.as_ref();
                render::PolicyDetail {
                    kind,
                    name: &name,
                    generation: facts.metadata.generation,
                    targeted: st.map_or(0, |s| s.targeted),
                    conditions: st.map_or(&[], |s| &s.conditions),
                    rollout: None,
                    current_revision: None,
                    updated_revision: None,
                }
            }
            PolicyKind::LogPipeline => {
                logs = d.sources.logs.get(&ObjectRef::new(&name))?;
                let st = logs.status.as_ref();
                render::PolicyDetail {
                    kind,
                    name: &name,
                    generation: logs.metadata.generation,
                    targeted: st.map_or(0, |s| s.targeted),
                    conditions: st.map_or(&[], |s| &s.conditions),
                    rollout: None,
                    current_revision: None,
                    updated_revision: None,
                }
            }
        };
        let (rows, per_revision) = view::policy_nodes(s, kind, &name, &f);
        Some((
            format!("{} {name}", kind.as_str()),
            render::policy_page(&detail, &rows, &per_revision, &f, s.now),
        ))
    })
}

/// `change` events, each carrying the new state's fingerprint, whenever the caches change.
async fn events(State(d): State<Arc<Dashboard>>, headers: HeaderMap) -> Response {
    if !d.signed_in(&headers) {
        return unauthorized(&headers);
    }
    let rx = d.changes.subscribe();
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let fingerprint = *rx.borrow_and_update();
        let event = Event::default()
            .event("change")
            .data(format!("{fingerprint:x}"));
        Some((Ok::<_, Infallible>(event), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn login_form(State(d): State<Arc<Dashboard>>) -> Response {
    if d.token.is_none() {
        return Redirect::to("/").into_response();
    }
    page(StatusCode::OK, "Sign in", &render::login(false), 0)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

async fn login(
    State(d): State<Arc<Dashboard>>,
    axum::extract::Form(form): axum::extract::Form<LoginForm>,
) -> Response {
    let Some(expected) = &d.token else {
        return Redirect::to("/").into_response();
    };
    let given = digest(&form.token);
    if !bool::from(given.ct_eq(expected)) {
        return page(StatusCode::UNAUTHORIZED, "Sign in", &render::login(true), 0);
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict{}",
        hex::encode(given),
        if d.secure_cookie { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

#[cfg(test)]
mod tests;
