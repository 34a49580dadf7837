//! Cluster mode's I/O against a mocked API server (tower-test), asserting the exact requests:
//! the DriftReport writer, the Event writer, the Secret reader and the guarded client. Time is
//! the paused tokio clock, so backoffs and heartbeats are checked to the second.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use driftless_crds::drift_report::{PolicyKind, PolicyResult, PolicyState};
use driftless_crds::secret::SecretString;
use http::{Method, Request, Response};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::client::Body;
use serde_json::{json, Value};
use tokio::time::{timeout, Instant};
use tower_test::mock::{self, Handle, SendResponse};

use super::*;
use crate::events::{NodeEvent, Severity};
use crate::status::{Entry, SharedStatus};

type Mock = Handle<Request<Body>, Response<Body>>;

fn mocked() -> (kube::Client, Mock) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).expect("json")))
        .expect("response")
}

fn failure(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
           "reason": reason, "code": code, "message": format!("{reason} (mocked)")})
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .expect("request body");
    serde_json::from_slice(&bytes).expect("json request body")
}

/// The next request, or `None` when none comes within `within` (of the paused clock).
async fn next(
    handle: &mut Mock,
    within: Duration,
) -> Option<(Request<Body>, SendResponse<Response<Body>>)> {
    timeout(within, handle.next_request())
        .await
        .ok()
        .map(|r| r.expect("the client is alive"))
}

async fn expect_next(handle: &mut Mock) -> (Request<Body>, SendResponse<Response<Body>>) {
    next(handle, Duration::from_secs(3600))
        .await
        .expect("a request within an hour")
}

// --- report::run -----------------------------------------------------------------------

const NS: &str = "driftless";
const REPORT: &str = "/apis/driftless.dev/v1alpha1/namespaces/driftless/driftreports/node-worker-1";
const QUERY: &str = "?&force=true&fieldManager=driftless-agent";
const INTERVAL: Duration = Duration::from_secs(300);

fn set_state(status: &SharedStatus, state: PolicyState) {
    status.update(|s, now| {
        s.set(
            Entry {
                result: PolicyResult {
                    kind: PolicyKind::ApplyPolicy,
                    name: "motd".into(),
                    generation: 3,
                    state,
                    drifted: 0,
                    changed: 0,
                    failed: 0,
                    message: None,
                    checked_at: crate::status::time(now),
                    revision: None,
                    healthy_since: None,
                },
                items: Vec::new(),
            },
            now,
        );
    });
}

/// What the API server answers to a write of the report: the whole object.
fn report_object(status: Option<&Value>) -> Value {
    let mut object = report::object("worker-1");
    object["metadata"]["namespace"] = NS.into();
    if let Some(status) = status {
        object["status"] = status.clone();
    }
    object
}

/// Expects the server-side apply that creates the report and answers it.
async fn expect_create(handle: &mut Mock) {
    let (request, send) = expect_next(handle).await;
    assert_eq!(request.method(), Method::PATCH);
    assert_eq!(request.uri().to_string(), format!("{REPORT}{QUERY}"));
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let body = body_json(request).await;
    assert_eq!(body["metadata"]["name"], "node-worker-1");
    assert_eq!(body["metadata"]["labels"][report::NODE_LABEL], "worker-1");
    assert_eq!(
        body["spec"]["target"],
        json!({"kind": "Node", "name": "worker-1", "node": "worker-1"})
    );
    assert!(body.get("status").is_none(), "status goes to /status");
    send.send_response(respond(200, &report_object(None)));
}

/// Expects a status write; returns its `status` and the means to answer it.
async fn expect_status(handle: &mut Mock) -> (Value, SendResponse<Response<Body>>) {
    let (request, send) = expect_next(handle).await;
    assert_eq!(request.method(), Method::PATCH);
    assert_eq!(request.uri().to_string(), format!("{REPORT}/status{QUERY}"));
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let body = body_json(request).await;
    assert_eq!(body["kind"], "DriftReport");
    assert_eq!(body["metadata"]["name"], "node-worker-1");
    (body["status"].clone(), send)
}

fn ok(send: SendResponse<Response<Body>>, status: &Value) {
    send.send_response(respond(200, &report_object(Some(status))));
}

fn start_report(client: kube::Client, status: &Arc<SharedStatus>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(report::run(client, NS.to_owned(), status.clone(), INTERVAL))
}

#[tokio::test(start_paused = true)]
async fn report_is_created_then_its_status_written_once_per_change() {
    let (client, mut handle) = mocked();
    let status = Arc::new(SharedStatus::new("worker-1"));
    set_state(&status, PolicyState::InSync);
    let writer = start_report(client, &status);

    expect_create(&mut handle).await;
    let (written, send) = expect_status(&mut handle).await;
    assert_eq!(written["policies"][0]["name"], "motd");
    assert_eq!(written["policies"][0]["kind"], "ApplyPolicy");
    assert_eq!(written["policies"][0]["state"], "InSync");
    assert_eq!(written["summary"]["status"], "InSync");
    ok(send, &written);

    // Two changes half a second apart are one write, of the newer status, a second after
    // the first change.
    let changed = Instant::now();
    set_state(&status, PolicyState::Drifted);
    tokio::time::sleep(Duration::from_millis(500)).await;
    set_state(&status, PolicyState::Failed);
    let (written, send) = expect_status(&mut handle).await;
    assert_eq!(written["policies"][0]["state"], "Failed");
    assert_eq!(changed.elapsed(), Duration::from_secs(1));
    ok(send, &written);
    let last_write = Instant::now();

    // Nothing else until the heartbeat.
    assert!(next(&mut handle, INTERVAL - Duration::from_secs(5))
        .await
        .is_none());
    let (heartbeat, send) = expect_status(&mut handle).await;
    assert_eq!(last_write.elapsed(), INTERVAL);
    assert_eq!(heartbeat["policies"][0]["state"], "Failed");
    ok(send, &heartbeat);
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn only_check_times_moving_waits_for_the_heartbeat() {
    let (client, mut handle) = mocked();
    let status = Arc::new(SharedStatus::new("worker-1"));
    set_state(&status, PolicyState::InSync);
    let writer = start_report(client, &status);
    expect_create(&mut handle).await;
    let (written, send) = expect_status(&mut handle).await;
    ok(send, &written);
    let last_write = Instant::now();

    // The same result checked again, over and over: only `checkedAt` moves.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        set_state(&status, PolicyState::InSync);
        assert!(
            next(&mut handle, Duration::from_secs(10)).await.is_none(),
            "a new checkedAt alone is not written before the heartbeat"
        );
    }
    let (heartbeat, send) = expect_status(&mut handle).await;
    assert_eq!(last_write.elapsed(), INTERVAL, "written at the heartbeat");
    assert_eq!(heartbeat["policies"][0]["state"], "InSync");
    ok(send, &heartbeat);
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_deleted_report_is_created_again() {
    let (client, mut handle) = mocked();
    let status = Arc::new(SharedStatus::new("worker-1"));
    set_state(&status, PolicyState::InSync);
    let writer = start_report(client, &status);
    expect_create(&mut handle).await;
    let (_, send) = expect_status(&mut handle).await;
    send.send_response(respond(404, &failure(404, "NotFound")));
    let refused = Instant::now();

    // After a second's backoff: the object again, then its status.
    expect_create(&mut handle).await;
    assert_eq!(refused.elapsed(), Duration::from_secs(1));
    let (written, send) = expect_status(&mut handle).await;
    assert_eq!(written["policies"][0]["state"], "InSync");
    ok(send, &written);
    assert!(next(&mut handle, INTERVAL - Duration::from_secs(5))
        .await
        .is_none());
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failing_api_server_is_retried_with_backoff_and_gets_the_newest_status() {
    let (client, mut handle) = mocked();
    let status = Arc::new(SharedStatus::new("worker-1"));
    set_state(&status, PolicyState::InSync);
    let writer = start_report(client, &status);
    expect_create(&mut handle).await;

    let mut last = Instant::now();
    let mut waits = Vec::new();
    for attempt in 0..4 {
        let (_, send) = expect_status(&mut handle).await;
        if attempt > 0 {
            waits.push(last.elapsed().as_secs());
        }
        send.send_response(respond(500, &failure(500, "InternalError")));
        last = Instant::now();
        if attempt == 2 {
            // A change while the server is down is what gets written once it is back.
            set_state(&status, PolicyState::Drifted);
        }
    }
    assert_eq!(waits, [1, 2, 4], "the backoff doubles");
    let (written, send) = expect_status(&mut handle).await;
    assert_eq!(last.elapsed(), Duration::from_secs(8));
    assert_eq!(written["policies"][0]["state"], "Drifted");
    ok(send, &written);

    // Success resets the backoff: the next failure waits a second again.
    set_state(&status, PolicyState::InSync);
    let (_, send) = expect_status(&mut handle).await;
    send.send_response(respond(500, &failure(500, "InternalError")));
    let failed = Instant::now();
    let (written, send) = expect_status(&mut handle).await;
    assert_eq!(failed.elapsed(), Duration::from_secs(1));
    ok(send, &written);
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_failed_create_is_retried_before_any_status_write() {
    let (client, mut handle) = mocked();
    let status = Arc::new(SharedStatus::new("worker-1"));
    set_state(&status, PolicyState::InSync);
    let writer = start_report(client, &status);
    let (request, send) = expect_next(&mut handle).await;
    assert_eq!(request.uri().to_string(), format!("{REPORT}{QUERY}"));
    send.send_response(respond(503, &failure(503, "ServiceUnavailable")));
    let failed = Instant::now();
    expect_create(&mut handle).await;
    assert_eq!(failed.elapsed(), Duration::from_secs(1));
    let (written, send) = expect_status(&mut handle).await;
    ok(send, &written);
    writer.abort();
}

// --- events::run -----------------------------------------------------------------------

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn breach(note: &str) -> NodeEvent {
    NodeEvent {
        severity: Severity::Warning,
        reason: "ThresholdBreached",
        action: "Evaluate",
        note: note.to_owned(),
    }
}

/// Expects the creation of an Event; answers it and returns it.
async fn expect_event_created(handle: &mut Mock, note: &str) -> Value {
    let (request, send) = expect_next(handle).await;
    assert_eq!(request.method(), Method::POST);
    assert_eq!(request.uri().path(), EVENTS);
    let event = body_json(request).await;
    assert_eq!(
        event["regarding"],
        json!({"apiVersion": "v1", "kind": "Node", "name": "worker-1", "uid": "uid-1"})
    );
    assert_eq!(event["reason"], "ThresholdBreached");
    assert_eq!(event["action"], "Evaluate");
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["note"], note);
    assert_eq!(event["reportingController"], events::CONTROLLER);
    assert_eq!(event["metadata"]["namespace"], "default");
    assert!(event.get("series").is_none());
    send.send_response(respond(201, &event));
    event
}

/// Expects a repeat of `event` as its series count going to `count`.
async fn expect_event_counted(handle: &mut Mock, event: &Value, count: i64) {
    let name = event["metadata"]["name"].as_str().expect("a name");
    let (request, send) = expect_next(handle).await;
    assert_eq!(request.method(), Method::PATCH);
    assert_eq!(request.uri().path(), format!("{EVENTS}/{name}"));
    assert_eq!(
        request.headers()["content-type"],
        "application/merge-patch+json"
    );
    let patch = body_json(request).await;
    assert_eq!(patch["series"]["count"], count);
    assert!(patch["series"]["lastObservedTime"].is_string());
    assert_eq!(
        patch.as_object().map(|o| o.len()),
        Some(1),
        "only the series"
    );
    let mut answer = event.clone();
    answer["series"] = patch["series"].clone();
    send.send_response(respond(200, &answer));
}

#[tokio::test(start_paused = true)]
async fn events_wait_for_the_node_then_repeats_are_one_event_with_a_count() {
    let (client, mut handle) = mocked();
    let uid = Arc::new(Mutex::new(None::<String>));
    let (tx, rx) = crate::events::Events::channel();
    let writer = tokio::spawn(events::run(client, "worker-1".into(), uid.clone(), rx));

    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    assert!(
        next(&mut handle, Duration::from_secs(60)).await.is_none(),
        "nothing is written before the Node's uid is known"
    );
    *uid.lock().expect("lock") = Some("uid-1".into());
    let first = expect_event_created(&mut handle, "cpu 97% > 90%").await;

    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    expect_event_counted(&mut handle, &first, 2).await;
    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    expect_event_counted(&mut handle, &first, 3).await;

    // Another note is another Event; the first one's series goes on.
    tx.send(breach("disk 99% > 95%")).await.expect("send");
    let second = expect_event_created(&mut handle, "disk 99% > 95%").await;
    assert_ne!(second["metadata"]["name"], first["metadata"]["name"]);
    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    expect_event_counted(&mut handle, &first, 4).await;

    drop(tx);
    writer
        .await
        .expect("the writer ends when the channel closes");
    assert!(
        handle.next_request().await.is_none(),
        "nothing more was written"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_event_write_is_dropped_and_the_next_one_is_new() {
    let (client, mut handle) = mocked();
    let uid = Arc::new(Mutex::new(Some("uid-1".to_owned())));
    let (tx, rx) = crate::events::Events::channel();
    let writer = tokio::spawn(events::run(client, "worker-1".into(), uid, rx));

    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    let (request, send) = expect_next(&mut handle).await;
    assert_eq!(request.method(), Method::POST);
    send.send_response(respond(403, &failure(403, "Forbidden")));
    // Not created, so the repeat is a creation, not a count.
    tx.send(breach("cpu 97% > 90%")).await.expect("send");
    expect_event_created(&mut handle, "cpu 97% > 90%").await;
    drop(tx);
    writer.await.expect("writer");
}

// --- SecretCache::refresh ----------------------------------------------------------------

fn key(secret: &str, key: &str) -> SecretKey {
    (secret.to_owned(), key.to_owned())
}

/// Answers Secret reads in namespace `driftless` until the client goes away: `motd` exists
/// (its `text` is `hello`, then `hello2` from the second read on), nothing else does.
/// Returns the paths read.
fn serve_secrets(mut handle: Mock) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut motd_reads = 0;
        while let Some((request, send)) = handle.next_request().await {
            assert_eq!(request.method(), Method::GET);
            let path = request.uri().path().to_owned();
            log.lock().expect("lock").push(path.clone());
            if path == "/api/v1/namespaces/driftless/secrets/motd" {
                motd_reads += 1;
                let text = if motd_reads == 1 {
                    "aGVsbG8="
                } else {
                    "aGVsbG8y"
                };
                send.send_response(respond(
                    200,
                    &json!({"apiVersion": "v1", "kind": "Secret",
                            "metadata": {"name": "motd", "namespace": "driftless"},
                            "data": {"text": text, "title": "d29ybGQ="}}),
                ));
            } else {
                send.send_response(respond(404, &failure(404, "NotFound")));
            }
        }
    });
    seen
}

#[tokio::test]
async fn secrets_are_read_once_per_secret_and_cached_until_max_age() {
    let (client, handle) = mocked();
    let seen = serve_secrets(handle);
    let api: Api<Secret> = Api::namespaced(client, "driftless");
    let needed: BTreeSet<SecretKey> = [
        key("motd", "text"),
        key("motd", "title"),
        key("motd", "other"),
        key("gone", "x"),
    ]
    .into();
    let mut cache = SecretCache::default();
    let hour = Duration::from_secs(3600);

    assert!(cache.refresh(&api, &needed, hour).await, "new values");
    let values = cache.values();
    assert_eq!(values[&key("motd", "text")], Ok(SecretString::new("hello")));
    assert_eq!(
        values[&key("motd", "title")],
        Ok(SecretString::new("world"))
    );
    assert_eq!(
        values[&key("motd", "other")],
        Err("has no key \"other\"".to_owned())
    );
    assert_eq!(values[&key("gone", "x")], Err("not found".to_owned()));
    assert_eq!(
        *seen.lock().expect("lock"),
        [
            "/api/v1/namespaces/driftless/secrets/gone",
            "/api/v1/namespaces/driftless/secrets/motd",
        ],
        "one GET per Secret, however many of its keys are needed"
    );

    // Younger than max_age: nothing is read, nothing changed.
    assert!(!cache.refresh(&api, &needed, hour).await);
    assert_eq!(seen.lock().expect("lock").len(), 2);

    // A key no longer needed is forgotten without a read.
    let fewer: BTreeSet<SecretKey> = [key("motd", "text"), key("motd", "title")].into();
    assert!(!cache.refresh(&api, &fewer, hour).await);
    assert_eq!(cache.values().len(), 2);
    assert_eq!(seen.lock().expect("lock").len(), 2);

    // Older than max_age: read again (once), and the rotated value is seen.
    assert!(cache.refresh(&api, &fewer, Duration::ZERO).await);
    assert_eq!(
        cache.values()[&key("motd", "text")],
        Ok(SecretString::new("hello2"))
    );
    assert_eq!(seen.lock().expect("lock").len(), 3);
    // Unchanged on the next read: not a change.
    assert!(!cache.refresh(&api, &fewer, Duration::ZERO).await);
    assert_eq!(seen.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn an_unreadable_secret_keeps_the_api_servers_message() {
    let (client, mut handle) = mocked();
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("a request");
        send.send_response(respond(403, &failure(403, "Forbidden")));
    });
    let api: Api<Secret> = Api::namespaced(client, "driftless");
    let mut cache = SecretCache::default();
    let needed: BTreeSet<SecretKey> = [key("motd", "text")].into();
    assert!(
        cache
            .refresh(&api, &needed, Duration::from_secs(3600))
            .await
    );
    assert_eq!(
        cache.values()[&key("motd", "text")],
        Err("Forbidden (mocked)".to_owned())
    );
    server.await.expect("server");
}

// --- api::client / api::guard ------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn the_guarded_client_refuses_what_the_table_does_not_hold() {
    let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
    let requests = api::Requests::default();
    let client = kube::client::ClientBuilder::new(service, "default")
        .with_layer(&api::layer(requests.clone()))
        .build();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "driftless");

    // LIST secrets: refused in the process, at once.
    let listed = timeout(Duration::from_secs(5), secrets.list(&Default::default()))
        .await
        .expect("refused without waiting for the server");
    let error = listed.expect_err("a LIST of secrets is refused");
    let kube::Error::Service(inner) = &error else {
        panic!("refused by the guard, not the server: {error:?}");
    };
    assert_eq!(
        inner
            .downcast_ref::<api::Refused>()
            .map(ToString::to_string)
            .as_deref(),
        Some("the agent does not make this request: list secrets")
    );
    // Neither are DELETE of a secret and GET of a Node.
    assert!(secrets.delete("motd", &Default::default()).await.is_err());
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    assert!(nodes.get("worker-1").await.is_err());
    assert!(
        next(&mut handle, Duration::from_secs(60)).await.is_none(),
        "no refused request reached the API server"
    );
    assert!(
        requests.snapshot().is_empty(),
        "refused requests are not counted"
    );

    // A GET of one secret goes through and is counted.
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.expect("the GET");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/api/v1/namespaces/driftless/secrets/motd"
        );
        send.send_response(respond(
            200,
            &json!({"apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": "motd", "namespace": "driftless"}}),
        ));
    });
    secrets.get("motd").await.expect("allowed");
    server.await.expect("server");
    assert_eq!(
        requests.snapshot(),
        [(("get".to_owned(), "secrets".to_owned()), 1)].into()
    );
}
