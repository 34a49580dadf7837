//! The webhook API served on 127.0.0.1 over a mocked API server that records every request:
//! what a caller without the token sees, and which API calls it causes.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body as KubeBody;
use serde_json::{json, Value};

use super::*;
use crate::scan::controller::{JobDefaults, Settings};
use crate::scan::metrics::ScanMetrics;

/// A DriftScan of namespace `ns` whose webhook names `secret`.
fn scan(name: &str, secret: Option<&str>) -> Value {
    let mut spec = json!({
        "source": {"git": {"url": "file:///nowhere", "stacks": ["live/a"]}},
        "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3"}
    });
    if let Some(secret) = secret {
        spec["webhook"] = json!({"secretRef": {"name": secret}});
    }
    json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
        "metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "resourceVersion": "7"},
        "spec": spec,
        "status": {"history": []}
    })
}

fn secret(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "ns"}, "data": data})
}

fn list(kind: &str, items: &[Value]) -> Value {
    json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

/// Answers the mocked API server's requests; records all but the watches (which it holds open).
async fn api_server(
    mut handle: tower_test::mock::Handle<Request<KubeBody>, Response<KubeBody>>,
    scans: Vec<Value>,
    secrets: Vec<Value>,
    calls: Arc<Mutex<Vec<String>>>,
) {
    let mut watches = Vec::new();
    while let Some((request, send)) = handle.next_request().await {
        let path = request.uri().path().to_owned();
        if request.uri().query().unwrap_or("").contains("watch=true") {
            watches.push(send);
            continue;
        }
        calls
            .lock()
            .unwrap()
            .push(format!("{} {path}", request.method()));
        let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
        let (status, body) = match path.as_str() {
            "/apis/driftless.dev/v1alpha1/driftscans" => (200, list("DriftScanList", &scans)),
            "/apis/batch/v1/jobs" => (200, list("JobList", &[])),
            "/apis/driftless.dev/v1alpha1/driftreports" => (200, list("DriftReportList", &[])),
            p => match p.strip_prefix("/api/v1/namespaces/ns/secrets/") {
                Some(name) => secrets
                    .iter()
                    .find(|s| s["metadata"]["name"] == name)
                    .map(|s| (200, s.clone()))
                    .unwrap_or((404, not_found)),
                None => (404, not_found),
            },
        };
        send.send_response(
            Response::builder()
                .status(status)
                .body(KubeBody::from(body.to_string().into_bytes()))
                .unwrap(),
        );
    }
}

struct Server {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!(
            "http://{}/api/v1/namespaces/ns/driftscans/{path}",
            self.addr
        )
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

/// The webhook API over DriftScans `open` (Secret `hook`, token `t0ken`), `nohook` (no
/// webhook), `notoken` (a Secret without `token`), `nosecret` (a Secret that does not exist).
async fn start(settings: WebhookSettings) -> Server {
    start_acting_in(settings, "ns").await
}

/// [`start`] for an operator whose only scan namespace is `scan_namespace`.
async fn start_acting_in(settings: WebhookSettings, scan_namespace: &str) -> Server {
    let (service, handle) = tower_test::mock::pair::<Request<KubeBody>, Response<KubeBody>>();
    let client = kube::Client::new(service, "default");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let scans = vec![
        scan("open", Some("hook")),
        scan("nohook", None),
        scan("notoken", Some("empty")),
        scan("nosecret", Some("absent")),
    ];
    let secrets = vec![
        secret("hook", json!({"token": "dDBrZW4="})),
        secret("empty", json!({"other": "eA=="})),
    ];
    tokio::spawn(api_server(handle, scans, secrets, calls.clone()));
    let mut registry = prometheus_client::registry::Registry::default();
    let controller = ScanController::start(
        client.clone(),
        Settings {
            namespace: "driftless".into(),
            job_defaults: JobDefaults::default(),
            max_concurrent_jobs: 1,
            identity: "test".into(),
            repo_cache_dir: std::env::temp_dir().join("driftless-webhook-tests"),
            git_timeout: Duration::from_secs(1),
            tenancy: crate::scan::tenancy::Tenancy {
                namespaces: [scan_namespace.to_owned()].into(),
                ..Default::default()
            },
        },
        ScanMetrics::register(&mut registry),
        crate::leader::Leadership::always().is_leader_fn(),
    );
    let tokens = Arc::new(Tokens::new());
    tokio::spawn(
        tokens
            .clone()
            .run(client, controller.scans().clone(), settings.token_refresh),
    );
    // The three Secrets read once, ahead of any request.
    let names = if scan_namespace == "ns" {
        &["hook", "empty", "absent"][..]
    } else {
        &[]
    };
    for &name in names {
        let key = ("ns".to_owned(), name.to_owned());
        let _ = tokens.get(&key, Duration::from_secs(10)).await;
        assert!(matches!(tokens.lookup(&key), tokens::Lookup::Known(_)));
    }
    let app = routes(Webhook::new(controller, tokens, settings))
        .into_make_service_with_connect_info::<ClientAddr>();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Server { addr, calls }
}

fn settings() -> WebhookSettings {
    WebhookSettings {
        token_refresh: Duration::from_secs(3600),
        ..WebhookSettings::default()
    }
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux).
fn http_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn every_authentication_failure_is_one_401_and_no_api_call() {
    let server = start(settings()).await;
    let before = server.calls();
    assert_eq!(
        before
            .iter()
            .filter(|c| c.starts_with("GET /api/v1/namespaces/ns/secrets/"))
            .count(),
        3,
        "{before:?}"
    );
    let http = http_from("127.0.0.1");
    let mut answers = Vec::new();
    // The right token for `open`, sent to DriftScans that cannot take it.
    for name in ["ghost", "nohook", "notoken", "nosecret"] {
        for (post, path) in [(true, format!("{name}/scan")), (false, name.to_owned())] {
            let request = if post {
                http.post(server.url(&path))
            } else {
                http.get(server.url(&path))
            };
            let r = request.bearer_auth("t0ken").send().await.unwrap();
            answers.push((
                name,
                r.status(),
                r.headers().get("www-authenticate").cloned(),
                r.text().await.unwrap(),
            ));
        }
    }
    // A wrong token, a wrong signature, no credentials, a GitHub ping without a signature.
    let wrong = [
        http.post(server.url("open/scan")).bearer_auth("t0kem"),
        http.post(server.url("open/scan"))
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
        http.get(server.url("open/stacks/live/a")),
        http.post(server.url("ghost/scan"))
            .header("x-github-event", "ping"),
    ];
    for request in wrong {
        let r = request.send().await.unwrap();
        answers.push((
            "open",
            r.status(),
            r.headers().get("www-authenticate").cloned(),
            r.text().await.unwrap(),
        ));
    }
    for (name, status, challenge, body) in &answers {
        assert_eq!(
            (
                status.as_u16(),
                challenge.as_ref().map(|c| c.to_str().unwrap()),
                body.as_str()
            ),
            (401, Some("Bearer"), "{\"error\":\"unauthorized\"}\n"),
            "{name}"
        );
    }
    // Authenticating needed nothing from the API server.
    assert_eq!(server.calls(), before);
    // The token itself works, from the cache too.
    let r = http
        .get(server.url("open"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let status: Value = r.json().await.unwrap();
    assert!(status["history"].is_array(), "{status}");
    assert_eq!(server.calls(), before);
}

#[tokio::test]
async fn a_client_that_keeps_failing_gets_429_and_others_are_served() {
    let server = start(WebhookSettings {
        per_client: Rate {
            per_second: 0.2,
            burst: 3,
        },
        ..settings()
    })
    .await;
    let attacker = http_from("127.0.0.2");
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..10 {
        let r = attacker
            .post(server.url("open/scan"))
            .bearer_auth("guess")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
        }
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429, 429, 429, 429, 429, 429]);
    assert_eq!(retry_after.as_deref(), Some("5"), "one failure per 5 s");
    // Even the right token waits once the address is out of budget.
    let r = attacker
        .get(server.url("open"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // Another client is not affected.
    let r = http_from("127.0.0.1")
        .get(server.url("open"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn each_drift_scan_has_a_budget_of_authenticated_requests() {
    let server = start(WebhookSettings {
        per_scan: Rate {
            per_second: 0.1,
            burst: 2,
        },
        ..settings()
    })
    .await;
    let http = http_from("127.0.0.1");
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let r = http
            .get(server.url("open"))
            .bearer_auth("t0ken")
            .send()
            .await
            .unwrap();
        statuses.push((
            r.status().as_u16(),
            r.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
        ));
    }
    assert_eq!(
        statuses,
        [(200, None), (200, None), (429, Some("10".to_owned()))]
    );
    // Failures do not use the DriftScan's budget: nobody can lock its callers out.
    let server = start(WebhookSettings {
        per_scan: Rate {
            per_second: 0.1,
            burst: 1,
        },
        ..settings()
    })
    .await;
    for _ in 0..5 {
        let r = http_from("127.0.0.3")
            .get(server.url("open"))
            .bearer_auth("nope")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = http
        .get(server.url("open"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let server = start(WebhookSettings {
        max_body_bytes: 1024,
        ..settings()
    })
    .await;
    let http = http_from("127.0.0.1");
    let r = http
        .post(server.url("open/scan"))
        .bearer_auth("t0ken")
        .body(vec![b' '; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.text().await.unwrap(),
        "{\"error\":\"the body is longer than 1024 bytes\"}\n"
    );
    // Without Content-Length (chunked): counted while read.
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let chunk = format!("200\r\n{}\r\n", " ".repeat(512));
    let request = format!(
        "POST /api/v1/namespaces/ns/driftscans/ghost/scan HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(4)
    );
    // The server may answer and close before reading it all.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = String::new();
    let _ = tcp.read_to_string(&mut answer).await;
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    // At the limit: read, then judged on its credentials.
    let r = http
        .post(server.url("open/scan"))
        .bearer_auth("wrong")
        .body(vec![b' '; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_driftscan_outside_the_scan_namespaces_is_refused_and_its_secret_never_read() {
    let server = start_acting_in(settings(), "elsewhere").await;
    // The watches' first lists are in; give the reflectors a moment to fill.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let http = http_from("127.0.0.1");
    let r = http
        .post(server.url("open/scan"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(server.url("open"))
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let calls = server.calls();
    assert!(
        calls
            .iter()
            .any(|c| c == "GET /apis/driftless.dev/v1alpha1/driftscans"),
        "{calls:?}"
    );
    assert!(
        !calls.iter().any(|c| c.contains("/secrets/")),
        "a Secret of a namespace the operator does not act on was read: {calls:?}"
    );
}
