//! Tests of the status writes against a mocked API server (asserting the exact requests), with
//! caches filled by hand as the watches would fill them.

use std::sync::atomic::{AtomicBool, Ordering};

use http::{Request, Response};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use kube::runtime::reflector::store::Writer;
use tower_test::mock::Handle;

use super::*;

type Mock = Handle<Request<Body>, Response<Body>>;

struct Fixture {
    apply: Writer<ApplyPolicy>,
    facts: Writer<FactsPolicy>,
    logs: Writer<LogPipeline>,
    nodes: Writer<Node>,
    reports: Writer<DriftReport>,
    revisions: Writer<ControllerRevision>,
    leader: Arc<AtomicBool>,
    metrics: PolicyMetrics,
    controller: Arc<PolicyStatusController>,
    handle: Mock,
}

fn fixture() -> Fixture {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (apply_store, apply) = reflector::store();
    let (facts_store, facts) = reflector::store();
    let (logs_store, logs) = reflector::store();
    let (nodes_store, nodes) = reflector::store();
    let (reports_store, reports) = reflector::store();
    let (revisions_store, revisions) = reflector::store();
    let leader = Arc::new(AtomicBool::new(true));
    let is_leader: IsLeader = {
        let leader = leader.clone();
        Arc::new(move || leader.load(Ordering::Relaxed))
    };
    let metrics = PolicyMetrics::default();
    let controller = PolicyStatusController::new(
        client,
        "driftless",
        "operator-0",
        Caches {
            apply: apply_store,
            facts: facts_store,
            logs: logs_store,
            nodes: nodes_store,
            reports: reports_store,
            revisions: revisions_store,
        },
        metrics.clone(),
        is_leader,
        Arc::new(Notify::new()),
    );
    Fixture {
        apply,
        facts,
        logs,
        nodes,
        reports,
        revisions,
        leader,
        metrics,
        controller,
        handle,
    }
}

fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            managed_fields: Some(vec![Default::default()]),
            annotations: Some([("big".to_owned(), "x".repeat(100))].into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A node report; each result is (kind, policy, generation, state, message).
fn report(node: &str, results: &[(&str, &str, i64, &str, Option<&str>)]) -> DriftReport {
    let policies: Vec<Value> = results
        .iter()
        .map(|(kind, name, generation, state, message)| {
            let mut r = json!({"kind": kind, "name": name, "generation": generation,
                               "state": state, "checkedAt": "2026-01-01T00:00:00Z"});
            if let Some(m) = message {
                r["message"] = json!(m);
            }
            r
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
        "metadata": {"name": format!("node-{node}"), "namespace": "driftless",
                     "labels": {NODE_LABEL: node}},
        "spec": {"target": {"kind": "Node", "name": node, "node": node}},
        "status": {"policies": policies,
                   "items": [{"address": "file:/etc/motd", "domain": "file", "change": "changed"}]},
    }))
    .unwrap()
}

fn apply_policy(name: &str, generation: i64, rv: &str, status: Option<Value>) -> ApplyPolicy {
    let mut v = json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "ApplyPolicy",
        "metadata": {"name": name, "generation": generation, "resourceVersion": rv},
        "spec": {
            "nodeSelector": {"matchLabels": {"role": "web"}},
            "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": "hi\n"}}],
        },
    });
    if let Some(status) = status {
        v["status"] = status;
    }
    serde_json::from_value(v).unwrap()
}

fn facts_policy(name: &str) -> FactsPolicy {
    serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "FactsPolicy",
        "metadata": {"name": name, "generation": 2, "resourceVersion": "7"},
        "spec": {},
    }))
    .unwrap()
}

fn log_pipeline(name: &str) -> LogPipeline {
    serde_json::from_value(json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "LogPipeline",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "8"},
        "spec": {
            "sources": [{"name": "app", "include": ["/var/log/app/*.log"]},
                        {"name": "sys", "include": ["/var/log/syslog"]}],
            "sinks": [{"name": "out", "file": {"directory": "/var/lib/logs"}}],
        },
    }))
    .unwrap()
}

fn respond(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

async fn body_json(request: Request<Body>) -> Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Takes the next request, checks it is a forced server-side apply of `/status` by
/// [`FIELD_MANAGER`] at `path`, answers `status` with `answer` and returns the patch.
async fn expect_status_apply(handle: &mut Mock, path: &str, status: u16, answer: Value) -> Value {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(request.method(), http::Method::PATCH);
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_owned();
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    params.sort_unstable();
    assert_eq!(
        params,
        ["fieldManager=driftless-policy-status", "force=true"],
        "{query}"
    );
    assert_eq!(
        request.headers()["content-type"],
        "application/apply-patch+yaml"
    );
    let patch = body_json(request).await;
    send.send_response(respond(status, &answer));
    patch
}

async fn no_request(handle: &mut Mock) {
    let next = tokio::time::timeout(Duration::from_millis(50), handle.next_request()).await;
    assert!(
        next.is_err(),
        "unexpected request: {:?}",
        next.map(|r| r.map(|(req, _)| req.uri().clone()))
    );
}

fn conflict() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict",
           "code": 409, "message": "the object has been modified"})
}

fn counter(metrics: &PolicyMetrics, kind: PolicyKind, errors: bool) -> u64 {
    let family = if errors {
        &metrics.status_write_errors
    } else {
        &metrics.status_writes
    };
    family
        .get_or_create(&super::super::metrics::KindLabels {
            kind: kind.as_str().into(),
        })
        .get()
}

const AP_PATH: &str = "/apis/driftless.dev/v1alpha1/applypolicies/base/status";

#[tokio::test]
async fn writes_a_changed_status_once() {
    let mut f = fixture();
    f.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("a", &[("role", "web")])));
    f.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("b", &[("role", "web")])));
    f.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("db", &[("role", "db")])));
    f.reports.apply_watcher_event(&watcher::Event::Apply(report(
        "a",
        &[("ApplyPolicy", "base", 1, "InSync", None)],
    )));
    f.reports.apply_watcher_event(&watcher::Event::Apply(report(
        "b",
        &[("ApplyPolicy", "base", 1, "Drifted", None)],
    )));
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(apply_policy("base", 1, "10", None)));

    // First pass: the status is written, conditional on the cached resourceVersion.
    let controller = f.controller.clone();
    let (written, patch) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 200, json!(null)),
    );
    // The mock answers `null`, which is not a policy: the write counts as failed.
    assert!(written.is_err(), "{written:?}");
    assert_eq!(patch["apiVersion"], "driftless.dev/v1alpha1");
    assert_eq!(patch["kind"], "ApplyPolicy");
    assert_eq!(
        patch["metadata"],
        json!({"name": "base", "resourceVersion": "10"})
    );
    let status = &patch["status"];
    assert_eq!(
        (
            status["observedGeneration"].clone(),
            status["targeted"].clone(),
            status["inSync"].clone(),
            status["drifted"].clone(),
            status["failed"].clone()
        ),
        (json!(1), json!(2), json!(1), json!(1), json!(0))
    );
    for owned_by_rollout in ["updated", "currentRevision", "updatedRevision"] {
        assert!(status.get(owned_by_rollout).is_none(), "{status}");
    }
    assert_eq!(status["conditions"][0]["type"], "Ready");
    assert_eq!(status["conditions"][0]["status"], "True");
    assert_eq!(status["conditions"][0]["reason"], "AllNodesReported");
    assert_eq!(
        status["conditions"][0]["message"],
        "1 of 2 nodes in sync, 1 drifted"
    );
    assert_eq!(status["conditions"][0]["observedGeneration"], 1);
    assert_eq!(status["conditions"].as_array().unwrap().len(), 1);

    // Again, now answered with the stored object: written.
    let mut stored = apply_policy("base", 1, "11", Some(status.clone()));
    let answer = serde_json::to_value(&stored).unwrap();
    let (written, _) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 200, answer),
    );
    assert_eq!(written.unwrap(), 1);
    assert_eq!(counter(&f.metrics, PolicyKind::ApplyPolicy, false), 1);

    // The watch has not delivered the write yet: nothing is written again.
    assert_eq!(controller.reconcile_once().await.unwrap(), 0);
    no_request(&mut f.handle).await;

    // The watch delivers it (with a later transition time): still nothing to write.
    stored.status.as_mut().unwrap().conditions[0].last_transition_time =
        time(Utc::now() + chrono::Duration::seconds(5));
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(stored.clone()));
    assert_eq!(controller.reconcile_once().await.unwrap(), 0);
    no_request(&mut f.handle).await;

    // A node report that does not change the numbers: nothing to write.
    f.reports.apply_watcher_event(&watcher::Event::Apply(report(
        "a",
        &[
            ("ApplyPolicy", "base", 1, "InSync", None),
            ("ApplyPolicy", "other", 4, "Failed", None),
        ],
    )));
    assert_eq!(controller.reconcile_once().await.unwrap(), 0);
    no_request(&mut f.handle).await;

    // b fails: written again, Stalled; Ready turns False.
    f.reports.apply_watcher_event(&watcher::Event::Apply(report(
        "b",
        &[(
            "ApplyPolicy",
            "base",
            1,
            "Failed",
            Some("task motd: read-only file system"),
        )],
    )));
    let answer = serde_json::to_value(&stored).unwrap();
    let (written, patch) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 200, answer),
    );
    assert_eq!(written.unwrap(), 1);
    assert_eq!(patch["metadata"]["resourceVersion"], "11");
    let status = &patch["status"];
    assert_eq!(
        (status["inSync"].clone(), status["failed"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(status["conditions"][0]["status"], "False");
    assert_eq!(status["conditions"][1]["type"], "Stalled");
    assert_eq!(
        status["conditions"][1]["message"],
        "1 node(s) failed: b: task motd: read-only file system"
    );
}

#[tokio::test]
async fn only_the_leader_writes() {
    let mut f = fixture();
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(apply_policy("base", 1, "10", None)));
    f.leader.store(false, Ordering::Relaxed);
    assert_eq!(f.controller.reconcile_once().await.unwrap(), 0);
    no_request(&mut f.handle).await;
    // Leadership gained: the status is written.
    f.leader.store(true, Ordering::Relaxed);
    let answer = serde_json::to_value(apply_policy("base", 1, "11", None)).unwrap();
    let controller = f.controller.clone();
    let (written, patch) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 200, answer),
    );
    assert_eq!(written.unwrap(), 1);
    assert_eq!(patch["status"]["targeted"], 0);
    assert_eq!(
        patch["status"]["conditions"][0]["message"],
        "no node matches spec.nodeSelector"
    );
}

#[tokio::test]
async fn a_conflict_is_written_again_on_the_next_pass() {
    let mut f = fixture();
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(apply_policy("base", 1, "10", None)));
    let controller = f.controller.clone();
    let (written, _) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 409, conflict()),
    );
    assert_eq!(written.unwrap(), 0, "a conflict is not an error");
    assert_eq!(counter(&f.metrics, PolicyKind::ApplyPolicy, true), 1);
    // The newer policy arrives; computed and written from it.
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(apply_policy("base", 2, "12", None)));
    let answer = serde_json::to_value(apply_policy("base", 2, "13", None)).unwrap();
    let (written, patch) = tokio::join!(
        controller.reconcile_once(),
        expect_status_apply(&mut f.handle, AP_PATH, 200, answer),
    );
    assert_eq!(written.unwrap(), 1);
    assert_eq!(patch["metadata"]["resourceVersion"], "12");
    assert_eq!(patch["status"]["observedGeneration"], 2);
}

#[tokio::test]
async fn facts_policies_and_log_pipelines_get_their_fields() {
    let mut f = fixture();
    f.nodes
        .apply_watcher_event(&watcher::Event::Apply(node("a", &[])));
    f.reports.apply_watcher_event(&watcher::Event::Apply(report(
        "a",
        &[
            ("FactsPolicy", "limits", 2, "Drifted", None),
            ("LogPipeline", "app", 1, "InSync", None),
        ],
    )));
    f.facts
        .apply_watcher_event(&watcher::Event::Apply(facts_policy("limits")));
    f.logs
        .apply_watcher_event(&watcher::Event::Apply(log_pipeline("app")));
    let controller = f.controller.clone();
    let facts_answer = serde_json::to_value(facts_policy("limits")).unwrap();
    let logs_answer = serde_json::to_value(log_pipeline("app")).unwrap();
    let (written, (facts, logs)) = tokio::join!(controller.reconcile_once(), async {
        let facts = expect_status_apply(
            &mut f.handle,
            "/apis/driftless.dev/v1alpha1/factspolicies/limits/status",
            200,
            facts_answer,
        )
        .await;
        let logs = expect_status_apply(
            &mut f.handle,
            "/apis/driftless.dev/v1alpha1/logpipelines/app/status",
            200,
            logs_answer,
        )
        .await;
        (facts, logs)
    });
    assert_eq!(written.unwrap(), 2);
    assert_eq!(facts["kind"], "FactsPolicy");
    let s = &facts["status"];
    assert_eq!(
        (
            s["targeted"].clone(),
            s["reporting"].clone(),
            s["breached"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(s["conditions"][0]["status"], "True");
    assert_eq!(logs["kind"], "LogPipeline");
    let s = &logs["status"];
    assert_eq!(
        (
            s["targeted"].clone(),
            s["sources"].clone(),
            s["sinks"].clone()
        ),
        (json!(1), json!(2), json!(1))
    );
    assert_eq!(counter(&f.metrics, PolicyKind::LogPipeline, false), 1);
    let ready = |kind: &str, ready: &str| {
        f.metrics
            .policies
            .get_or_create(&super::super::metrics::ReadyLabels {
                kind: kind.into(),
                ready: ready.into(),
            })
            .get()
    };
    assert_eq!(
        (ready("FactsPolicy", "True"), ready("FactsPolicy", "False")),
        (1, 0)
    );
    assert_eq!(
        (ready("ApplyPolicy", "True"), ready("ApplyPolicy", "False")),
        (0, 0)
    );
}

#[tokio::test]
async fn a_server_error_is_returned_after_the_other_writes() {
    let mut f = fixture();
    f.apply
        .apply_watcher_event(&watcher::Event::Apply(apply_policy("base", 1, "10", None)));
    f.facts
        .apply_watcher_event(&watcher::Event::Apply(facts_policy("limits")));
    let controller = f.controller.clone();
    let answer = serde_json::to_value(facts_policy("limits")).unwrap();
    let (result, ()) = tokio::join!(controller.reconcile_once(), async {
        expect_status_apply(
            &mut f.handle,
            AP_PATH,
            500,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "etcd"}),
        )
        .await;
        expect_status_apply(
            &mut f.handle,
            "/apis/driftless.dev/v1alpha1/factspolicies/limits/status",
            200,
            answer,
        )
        .await;
    });
    assert!(result.is_err());
    assert_eq!(counter(&f.metrics, PolicyKind::ApplyPolicy, true), 1);
    assert_eq!(counter(&f.metrics, PolicyKind::FactsPolicy, false), 1);
}

#[test]
fn caches_keep_only_what_the_status_reads() {
    let mut r = report(
        "a",
        &[
            ("ApplyPolicy", "base", 1, "InSync", Some("fine")),
            ("ApplyPolicy", "x", 1, "Failed", Some("boom")),
        ],
    );
    r.metadata.managed_fields = Some(vec![Default::default()]);
    slim_report(&mut r);
    let status = r.status.as_ref().unwrap();
    assert!(r.metadata.managed_fields.is_none() && status.items.is_empty());
    assert_eq!(status.policies[0].message, None);
    assert_eq!(status.policies[1].message.as_deref(), Some("boom"));
    assert_eq!(r.labels()[NODE_LABEL], "a", "the node label stays");

    let mut n = node("a", &[("role", "web")]);
    slim_node(&mut n);
    assert!(n.metadata.annotations.is_none() && n.metadata.managed_fields.is_none());
    assert_eq!(n.metadata.labels.as_ref().unwrap()["role"], "web");

    let mut p = apply_policy("base", 1, "1", None);
    p.slim();
    assert!(p.spec.tasks.is_empty());
    assert!(p.spec.node_selector.is_some());
    let mut l = log_pipeline("app");
    l.slim();
    assert_eq!(l.parts(), (2, 1));
}

#[test]
fn node_events_wake_only_on_label_changes() {
    let mut relevant = node_label_changes();
    let web = node("a", &[("role", "web")]);
    assert!(!relevant(&watcher::Event::Init));
    assert!(!relevant(&watcher::Event::InitApply(web.clone())));
    assert!(relevant(&watcher::Event::InitDone));
    assert!(!relevant(&watcher::Event::Apply(web.clone())), "heartbeat");
    assert!(relevant(&watcher::Event::Apply(node(
        "a",
        &[("role", "db")]
    ))));
    assert!(
        relevant(&watcher::Event::Apply(node("b", &[]))),
        "a new node"
    );
    assert!(!relevant(&watcher::Event::Apply(node("b", &[]))));
    assert!(relevant(&watcher::Event::Delete(node("b", &[]))));
}

/// A policy as the watch caches it (slimmed, with its revision hash), and the full object.
fn rollout_policy(status: Option<Value>) -> (ApplyPolicy, ApplyPolicy) {
    let mut full = apply_policy("base", 1, "10", status);
    full.metadata.uid = Some("uid-base".into());
    let mut slim = full.clone();
    slim.slim();
    (slim, full)
}

/// Takes the next request, checks its method and path, answers 200 with `answer` (`null`:
/// the request's body), returns the request's query and body (`null` when empty).
async fn expect(
    handle: &mut Mock,
    method: http::Method,
    path: &str,
    answer: Value,
) -> (String, Value) {
    let (request, send) = handle.next_request().await.expect("a request");
    assert_eq!(
        (request.method(), request.uri().path()),
        (&method, path),
        "unexpected request"
    );
    let query = request.uri().query().unwrap_or_default().to_owned();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let answer = if answer.is_null() {
        body.clone()
    } else {
        answer
    };
    send.send_response(respond(200, &answer));
    (query, body)
}

/// Answers every request with 200 and `answer` until none comes for 100 ms; returns them.
async fn answer_all(handle: &mut Mock, answer: &Value) -> Vec<(String, String)> {
    let mut seen = Vec::new();
    while let Ok(Some((request, send))) =
        tokio::time::timeout(Duration::from_millis(100), handle.next_request()).await
    {
        seen.push((
            request.method().to_string(),
            request.uri().path().to_owned(),
        ));
        send.send_response(respond(200, answer));
    }
    seen
}

const REPORTS: &str = "/apis/driftless.dev/v1alpha1/namespaces/driftless/driftreports";

#[tokio::test]
async fn rollout_stores_a_revision_and_assigns_one_node_at_a_time() {
    let mut f = fixture();
    for n in ["a", "b"] {
        f.nodes
            .apply_watcher_event(&watcher::Event::Apply(node(n, &[("role", "web")])));
    }
    let (slim, full) = rollout_policy(None);
    let revision = revisions::name("base", &revisions::policy_hash(&full));
    f.apply.apply_watcher_event(&watcher::Event::Apply(slim));

    // First pass: the revision is created from the full policy, node a (first by name) is
    // assigned it — the default strategy with maxUnavailable 1 — and the status says so.
    let controller = f.controller.clone();
    let full_json = serde_json::to_value(&full).unwrap();
    let handle = &mut f.handle;
    let (result, created, assigned, status) = {
        let requests = async {
            expect(
                handle,
                http::Method::GET,
                "/apis/driftless.dev/v1alpha1/applypolicies/base",
                full_json.clone(),
            )
            .await;
            let (_, created) = expect(
                handle,
                http::Method::POST,
                "/apis/apps/v1/namespaces/driftless/controllerrevisions",
                json!(null),
            )
            .await;
            let answer = serde_json::to_value(report("a", &[])).unwrap();
            let assigned = expect(
                handle,
                http::Method::PATCH,
                &format!("{REPORTS}/node-a"),
                answer,
            )
            .await;
            let status = expect_status_apply(handle, AP_PATH, 200, full_json.clone()).await;
            (created, assigned, status)
        };
        let (result, (created, assigned, status)) =
            tokio::join!(controller.reconcile_once(), requests);
        (result, created, assigned, status)
    };
    assert_eq!(result.unwrap(), 1);
    assert_eq!(created["metadata"]["name"], revision);
    assert_eq!(
        created["metadata"]["labels"][revisions::POLICY_UID_LABEL],
        "uid-base"
    );
    assert_eq!(created["metadata"]["ownerReferences"][0]["uid"], "uid-base");
    assert_eq!(created["revision"], 1);
    assert_eq!(
        created["data"]["spec"]["tasks"][0]["name"], "motd",
        "the revision holds the tasks: {created}"
    );
    assert!(
        created["data"]["spec"].get("nodeSelector").is_none(),
        "{created}"
    );
    let (query, patch) = assigned;
    assert!(query.contains("fieldManager=driftless-rollout"), "{query}");
    assert!(query.contains("force=true"), "{query}");
    assert_eq!(
        patch["spec"]["revisions"],
        json!([{"policy": "base", "revision": revision}])
    );
    assert_eq!(
        patch["spec"]["target"],
        json!({"kind": "Node", "name": "a", "node": "a"})
    );
    assert_eq!(status["status"]["updatedRevision"], revision);
    assert_eq!(status["status"]["updated"], 1);
    assert_eq!(status["status"]["rollout"]["step"], "Progressing");
    assert_eq!(f.metrics.assignment_writes.get(), 1);

    // The watches deliver the revision and a's report: a is applying it (no result yet). No
    // second node is assigned while a is unavailable; nothing is written.
    let object = revisions::object(&full, "driftless", 1);
    f.revisions
        .apply_watcher_event(&watcher::Event::Apply(object));
    let mut a = report("a", &[]);
    a.spec.revisions = vec![driftless_crds::drift_report::RevisionAssignment {
        policy: "base".into(),
        revision: revision.clone(),
    }];
    f.reports
        .apply_watcher_event(&watcher::Event::Apply(a.clone()));
    only_the_status_is_written(&mut f, status["status"].clone(), &full_json).await;
    no_request(&mut f.handle).await;
    assert_eq!(f.metrics.assignment_writes.get(), 1);

    // a reports the revision applied and healthy: b is assigned, a is not written again.
    a.status = Some(
        serde_json::from_value(json!({
            "policies": [{"kind": "ApplyPolicy", "name": "base", "generation": 1,
                          "state": "InSync", "checkedAt": "2026-01-01T00:00:00Z",
                          "revision": revision, "healthySince": "2026-01-01T00:00:00Z"}],
        }))
        .unwrap(),
    );
    f.reports.apply_watcher_event(&watcher::Event::Apply(a));
    let (result, (assigned, _)) = tokio::join!(controller.reconcile_once(), async {
        let answer = serde_json::to_value(report("b", &[])).unwrap();
        let assigned = expect(
            &mut f.handle,
            http::Method::PATCH,
            &format!("{REPORTS}/node-b"),
            answer,
        )
        .await;
        let status = expect_status_apply(&mut f.handle, AP_PATH, 200, full_json.clone()).await;
        (assigned, status)
    });
    result.unwrap();
    assert_eq!(
        assigned.1["spec"]["revisions"],
        json!([{"policy": "base", "revision": revision}])
    );
    no_request(&mut f.handle).await;
    assert_eq!(f.metrics.assignment_writes.get(), 2);

    // b fails its health gate: the rollout stops (Degraded), one Warning Event on the policy.
    let mut b = report("b", &[]);
    b.spec.revisions = vec![driftless_crds::drift_report::RevisionAssignment {
        policy: "base".into(),
        revision: revision.clone(),
    }];
    b.status = Some(
        serde_json::from_value(json!({
            "policies": [{"kind": "ApplyPolicy", "name": "base", "generation": 1,
                          "state": "Failed", "checkedAt": "2026-01-01T00:00:00Z",
                          "revision": revision,
                          "message": "health check failed: GET http://127.0.0.1:1/ answered 503"}],
        }))
        .unwrap(),
    );
    f.reports.apply_watcher_event(&watcher::Event::Apply(b));
    let (result, (event, status)) = tokio::join!(controller.reconcile_once(), async {
        let (_, event) = expect(
            &mut f.handle,
            http::Method::POST,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            json!(null),
        )
        .await;
        let status = expect_status_apply(&mut f.handle, AP_PATH, 200, full_json.clone()).await;
        (event, status)
    });
    result.unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "HealthGateFailed");
    assert_eq!(event["action"], "Rollout");
    assert_eq!(event["regarding"]["kind"], "ApplyPolicy");
    assert_eq!(event["regarding"]["name"], "base");
    assert_eq!(event["reportingInstance"], "operator-0");
    let note = event["note"].as_str().unwrap();
    assert!(
        note.contains("node b") && note.contains("answered 503"),
        "{note}"
    );
    assert_eq!(status["status"]["rollout"]["step"], "Degraded");
    assert_eq!(status["status"]["rollout"]["failedNode"], "b");
    // The stored status remembers the failure: the next pass records no second Event.
    only_the_status_is_written(&mut f, status["status"].clone(), &full_json).await;
}

/// Stores `status` on the rollout policy, runs one pass and checks that it wrote nothing but
/// the policy's status (no assignment, no revision, no Event).
async fn only_the_status_is_written(f: &mut Fixture, status: Value, full_json: &Value) {
    let (slim, _) = rollout_policy(Some(status));
    f.apply.apply_watcher_event(&watcher::Event::Apply(slim));
    let controller = f.controller.clone();
    let (result, seen) = tokio::join!(
        controller.reconcile_once(),
        answer_all(&mut f.handle, full_json)
    );
    result.unwrap();
    assert!(
        seen.iter().all(|(m, p)| m == "PATCH" && p == AP_PATH),
        "only the status may be written: {seen:?}"
    );
}
