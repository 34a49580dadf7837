//! The dashboard's pages over caches filled by hand as the watches would fill them, requested
//! through the router.

use axum::body::Body;
use axum::http::Request;
use kube::runtime::reflector::store::Writer;
use serde_json::json;
use tower::ServiceExt as _;

use super::*;

struct Fixture {
    scans: Writer<DriftScan>,
    reports: Writer<DriftReport>,
    apply: Writer<ApplyPolicy>,
    nodes: Writer<Node>,
    dashboard: Arc<Dashboard>,
}

fn fixture(token: Option<&str>) -> Fixture {
    let (scans_store, scans) = reflector::store();
    let (reports_store, reports) = reflector::store();
    let (apply_store, apply) = reflector::store();
    let (facts_store, _facts) = reflector::store();
    let (logs_store, _logs) = reflector::store();
    let (nodes_store, nodes) = reflector::store();
    let dashboard = Dashboard::new(
        Sources {
            scans: scans_store,
            reports: reports_store,
            apply: apply_store,
            facts: facts_store,
            logs: logs_store,
            nodes: nodes_store,
        },
        token,
        false,
    );
    Fixture {
        scans,
        reports,
        apply,
        nodes,
        dashboard,
    }
}

fn put<K>(writer: &mut Writer<K>, value: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned,
    K::DynamicType: Clone + Eq + std::hash::Hash + Default,
{
    let object: K = serde_json::from_value(value).unwrap();
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}

fn summary(status: &str, at: &str, added: u32) -> serde_json::Value {
    json!({ "status": status, "added": added, "changed": 1, "removed": 0, "checkedAt": at,
            "commit": "0123abc" })
}

fn stack_report(name: &str, status: &str, before: Option<&str>) -> serde_json::Value {
    let history: Vec<_> = before
        .map(|b| summary(b, "2026-12-04T10:00:00Z", 0))
        .into_iter()
        .collect();
    json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
        "metadata": { "name": name, "namespace": "team-a", "uid": name, "resourceVersion": "1",
                      "labels": { "driftless.dev/scan": "infra" } },
        "spec": { "target": { "kind": "Stack", "name": format!("infra/{name}"), "scan": "infra",
                              "stack": name } },
        "status": {
            "summary": summary(status, "2026-12-04T11:00:00Z", 1),
            "history": history,
            "items": [{
                "address": "aws_s3_bucket.logs", "domain": "aws_s3_bucket", "change": "changed",
                "attributes": [
                    { "path": "tags.env", "before": "staging", "after": "prod" },
                    { "path": "policy", "before": "<script>alert(1)</script>", "after": "x" },
                    { "path": "password", "before": "<redacted>", "after": "<redacted>" }
                ]
            }],
            "artifact": { "planJson": "s3://plans/team-a/infra/net.json" },
            "planText": "  ~ tags = { \"env\" = \"staging\" -> \"prod\" }\n"
        }
    })
}

fn node_report(node: &str, state: &str) -> serde_json::Value {
    json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
        "metadata": { "name": format!("node-{node}"), "namespace": "driftless", "uid": node,
                      "resourceVersion": "1", "labels": { "driftless.dev/node": node } },
        "spec": { "target": { "kind": "Node", "name": node, "node": node },
                  "revisions": [{ "policy": "base", "revision": "base-7f9c" }] },
        "status": {
            "summary": summary(if state == "InSync" { "InSync" } else { "Drifted" },
                               "2026-12-04T11:30:00Z", 0),
            "items": [{ "address": "file:/etc/motd", "domain": "file", "source": "base/motd",
                        "change": "changed", "diff": "--- live\n+++ desired\n-old\n+new\n" },
                      { "address": "threshold:disk-full", "domain": "threshold",
                        "source": "limits/disk-full", "change": "changed",
                        "attributes": [
                            { "path": "node_filesystem_avail_bytes{mountpoint=~\"/\"}",
                              "before": "1024", "after": ">= 1073741824" },
                            { "path": "severity", "before": "critical" }] }],
            "policies": [
                { "kind": "ApplyPolicy", "name": "base", "generation": 2, "state": state,
                  "drifted": 1, "checkedAt": "2026-12-04T11:30:00Z", "revision": "base-6d2a" },
                { "kind": "FactsPolicy", "name": "limits", "generation": 1, "state": "Drifted",
                  "drifted": 2, "checkedAt": "2026-12-04T11:30:00Z" }
            ]
        }
    })
}

fn filled() -> Fixture {
    let mut f = fixture(None);
    put(
        &mut f.scans,
        json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
            "metadata": { "name": "infra", "namespace": "team-a", "uid": "s1", "resourceVersion": "3" },
            "spec": { "source": { "git": { "url": "https://git.example.com/infra.git", "ref": "main",
                                           "stacks": ["net"] } },
                      "schedule": "0 * * * *",
                      "artifacts": { "s3": { "bucket": "plans", "prefix": "team-a",
                                             "endpoint": "https://minio.example.com:9000",
                                             "pathStyle": true } } },
            "status": {
                "lastRun": { "id": "infra-12", "trigger": "Schedule", "phase": "Running",
                             "startedAt": "2026-12-04T11:00:00Z", "total": 3, "queued": 1,
                             "running": 1, "completed": 1, "drifted": 1, "errored": 0,
                             "units": [{ "stack": "net", "phase": "Drifted", "attempts": 1 }] },
                "nextScheduledAt": "2026-12-04T12:00:00Z"
            }
        }),
    );
    put(
        &mut f.reports,
        stack_report("net", "Drifted", Some("InSync")),
    );
    put(
        &mut f.reports,
        stack_report("dns", "InSync", Some("InSync")),
    );
    put(&mut f.reports, node_report("worker-1", "Drifted"));
    put(&mut f.reports, node_report("worker-2", "InSync"));
    for name in ["worker-1", "worker-2", "worker-3"] {
        put(
            &mut f.nodes,
            json!({ "metadata": { "name": name, "uid": name, "resourceVersion": "1" },
                    "status": { "conditions": [{ "type": "Ready", "status": "True" }] } }),
        );
    }
    put(
        &mut f.apply,
        json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "ApplyPolicy",
            "metadata": { "name": "base", "uid": "p1", "resourceVersion": "5", "generation": 2 },
            "spec": { "tasks": [] },
            "status": { "targeted": 3, "updated": 1, "currentRevision": "base-6d2a",
                        "updatedRevision": "base-7f9c",
                        "rollout": { "step": "Canary", "message": "waiting for worker-1 to soak",
                                     "revisions": [{ "name": "base-7f9c", "revision": 3, "nodes": 1 },
                                                   { "name": "base-6d2a", "revision": 2, "nodes": 2 }] },
                        "conditions": [{ "type": "Ready", "status": "False", "reason": "Progressing",
                                         "message": "rolling out", "lastTransitionTime": "2026-12-04T11:00:00Z" }] }
        }),
    );
    f
}

async fn get(
    d: &Arc<Dashboard>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::get(uri);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = routes(d.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn overview_counts_by_kind_and_lists_changes() {
    let f = filled();
    let (status, headers, body) = get(&f.dashboard, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .starts_with("default-src 'none'"));
    // Stacks: 1 in sync, 1 drifted; nodes: 1 in sync, 1 drifted (worker-3 has no report).
    assert!(body.contains("<tr data-kind=\"Stacks\"><th><a href=\"/driftreports?kind=Stack\">Stacks</a></th><td class=\"n\">1</td><td class=\"n drifted\">1</td><td class=\"n failed\">0</td><td class=\"n\">0</td></tr>"), "{body}");
    assert!(body.contains("<tr data-kind=\"FactsPolicy\"><th><a href=\"/policies\">FactsPolicy</a></th><td class=\"n\">0</td><td class=\"n drifted\">2</td>"), "{body}");
    assert!(body.contains("<span id=\"queue-depth\">1</span>"), "{body}");
    // net went InSync → Drifted; dns stayed in sync and is not a change; node reports without
    // history are new.
    let recent = &body[body.find("id=\"recent\"").unwrap()..];
    assert!(recent.contains("infra/net</a></td><td><span class=\"badge s-insync\">InSync</span> → <span class=\"badge s-drifted\">Drifted</span>"), "{recent}");
    assert!(!recent.contains("infra/dns"), "{recent}");
    assert!(recent.contains("worker-1"), "{recent}");
}

#[tokio::test]
async fn report_page_shows_attributes_escaped_and_history() {
    let f = filled();
    let (status, _, body) = get(&f.dashboard, "/namespaces/team-a/driftreports/net", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<tr><td><code>tags.env</code></td><td><code>staging</code></td><td><code>prod</code></td></tr>"), "{body}");
    assert!(
        body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{body}"
    );
    assert!(!body.contains("<script>alert"), "{body}");
    assert!(body.contains("<code>&lt;redacted&gt;</code>"), "{body}");
    // The artifact links to the object on the scan's endpoint.
    assert!(body.contains("<a class=\"artifact\" href=\"https://minio.example.com:9000/plans/team-a/infra/net.json\" rel=\"noopener noreferrer\"><code>s3://plans/team-a/infra/net.json</code></a>"), "{body}");
    assert!(
        body.contains("<pre class=\"plan\" id=\"plan\">  ~ tags = { &quot;env&quot; = &quot;staging&quot; -&gt; &quot;prod&quot; }\n</pre>"),
        "{body}"
    );
    let history = &body[body.find("id=\"history\"").unwrap()..];
    assert_eq!(history.matches("<li>").count(), 2, "{history}");
    assert!(
        body.contains("href=\"/namespaces/team-a/driftscans/infra\""),
        "{body}"
    );
    let (status, _, _) = get(&f.dashboard, "/namespaces/team-a/driftreports/nope", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_scans_stacks_are_a_filtered_list() {
    let f = filled();
    let page = "/namespaces/team-a/driftscans/infra";
    let (_, _, in_sync) = get(&f.dashboard, &format!("{page}?status=InSync"), &[]).await;
    assert!(in_sync.contains("data-report=\"dns\""), "{in_sync}");
    assert!(!in_sync.contains("data-report=\"net\""), "{in_sync}");
    assert!(
        in_sync.contains("<option selected>InSync</option>"),
        "{in_sync}"
    );
    let (_, _, text) = get(&f.dashboard, &format!("{page}?q=NE"), &[]).await;
    assert!(text.contains("data-report=\"net\""), "{text}");
    assert!(!text.contains("data-report=\"dns\""), "{text}");
    assert!(
        text.contains("<span class=\"matched\">1 matching</span>"),
        "{text}"
    );
    let (status, _, _) = get(&f.dashboard, &format!("{page}?page=x"), &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn scan_pages_show_progress_and_stacks() {
    let f = filled();
    let (_, _, list) = get(&f.dashboard, "/driftscans", &[]).await;
    assert!(list.contains("1 queued · 1 running · 1/3 done"), "{list}");
    assert!(
        list.contains("<strong id=\"queue-depth\">1</strong>"),
        "{list}"
    );
    let (status, _, page) = get(&f.dashboard, "/namespaces/team-a/driftscans/infra", &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Drifted stacks first.
    let net = page.find("data-report=\"net\"").unwrap();
    let dns = page.find("data-report=\"dns\"").unwrap();
    assert!(net < dns, "{page}");
    assert!(
        page.contains("https://git.example.com/infra.git @ main"),
        "{page}"
    );
}

#[tokio::test]
async fn lists_filter_by_status_text_and_namespace() {
    let f = filled();
    let (_, _, body) = get(&f.dashboard, "/driftreports?status=Drifted", &[]).await;
    assert!(body.contains("data-report=\"net\""), "{body}");
    assert!(!body.contains("data-report=\"dns\""), "{body}");
    assert!(body.contains("data-report=\"node-worker-1\""), "{body}");
    let (_, _, body) = get(&f.dashboard, "/driftreports?kind=Stack&q=DNS", &[]).await;
    assert!(body.contains("data-report=\"dns\""), "{body}");
    assert!(!body.contains("data-report=\"net\""), "{body}");
    assert!(body.contains("1 matching"), "{body}");
    let (_, _, body) = get(&f.dashboard, "/driftreports?namespace=driftless", &[]).await;
    assert!(body.contains("2 matching"), "{body}");
    // A query the filter does not know is refused, not ignored silently.
    let (status, _, _) = get(&f.dashboard, "/driftreports?page=x", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn node_and_policy_pages_show_revisions_and_breaches() {
    let f = filled();
    let (_, _, list) = get(&f.dashboard, "/nodes", &[]).await;
    assert!(list.contains("data-node=\"worker-3\""), "{list}");
    let w1 = list.find("data-node=\"worker-1\"").unwrap();
    let w3 = list.find("data-node=\"worker-3\"").unwrap();
    assert!(w1 < w3, "drifted before not checked: {list}");
    let (_, _, node) = get(&f.dashboard, "/nodes/worker-1", &[]).await;
    assert!(node.contains("<dd id=\"breaches\">2</dd>"), "{node}");
    assert!(
        node.contains("<code>base-6d2a</code> / <code>base-7f9c</code>"),
        "{node}"
    );
    assert!(node.contains("+new"), "{node}");
    let breaches =
        &node[node.find("id=\"breach-list\"").unwrap()..node.find("What drifted").unwrap()];
    assert!(breaches.contains("<tr><td>limits/disk-full</td><td><code>node_filesystem_avail_bytes{mountpoint=~&quot;/&quot;}</code></td><td>1024</td><td>&gt;= 1073741824</td><td>critical</td></tr>"), "{breaches}");
    assert!(!breaches.contains("motd"), "{breaches}");
    let (_, _, policy) = get(&f.dashboard, "/policies/applypolicies/base", &[]).await;
    assert!(
        policy.contains("<dd id=\"rollout-step\">Canary</dd>"),
        "{policy}"
    );
    assert!(
        policy.contains("<li><code>base-6d2a</code>: 2 nodes</li>"),
        "{policy}"
    );
    let (status, _, _) = get(&f.dashboard, "/policies/widgets/base", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, _, list) = get(&f.dashboard, "/policies", &[]).await;
    assert!(list.contains("data-policy=\"base\""), "{list}");
}

#[tokio::test]
async fn a_token_guards_every_page_and_the_event_stream() {
    let f = fixture(Some("s3cret-token\n"));
    let (status, headers, _) = get(&f.dashboard, "/", &[("accept", "text/html")]).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/login");
    for path in ["/", "/events", "/nodes", "/namespaces/a/driftreports/b"] {
        let (status, _, body) = get(&f.dashboard, path, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert!(!body.contains("s3cret"), "{body}");
    }
    let (status, _, _) = get(
        &f.dashboard,
        "/",
        &[("authorization", "Bearer s3cret-token")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&f.dashboard, "/", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Sign in with the form: the cookie holds a digest, never the token.
    let response = routes(f.dashboard.clone())
        .oneshot(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("token=s3cret-token"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!cookie.contains("s3cret"), "{cookie}");
    assert!(cookie.contains("HttpOnly; SameSite=Strict"), "{cookie}");
    let pair = cookie.split(';').next().unwrap();
    let (status, _, _) = get(&f.dashboard, "/nodes", &[("cookie", pair)]).await;
    assert_eq!(status, StatusCode::OK);
    let response = routes(f.dashboard.clone())
        .oneshot(
            Request::post("/login")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from("token=nope"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    // Static files need no token (they hold nothing from the cluster).
    let (status, _, _) = get(&f.dashboard, "/static/dashboard.css", &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn fingerprint_follows_changes_not_order_or_heartbeats() {
    let mut f = filled();
    let before = view::fingerprint(&f.dashboard.snapshot());
    assert_eq!(before, view::fingerprint(&f.dashboard.snapshot()));
    // A Node heartbeat (new resourceVersion, same readiness) changes nothing a page shows.
    put(
        &mut f.nodes,
        json!({ "metadata": { "name": "worker-3", "uid": "worker-3", "resourceVersion": "99" },
                "status": { "conditions": [{ "type": "Ready", "status": "True" }] } }),
    );
    assert_eq!(before, view::fingerprint(&f.dashboard.snapshot()));
    let mut report = stack_report("dns", "Drifted", Some("InSync"));
    report["metadata"]["resourceVersion"] = json!("2");
    put(&mut f.reports, report);
    assert_ne!(before, view::fingerprint(&f.dashboard.snapshot()));
}

#[tokio::test]
async fn an_open_event_stream_hears_of_a_change() {
    let mut f = filled();
    tokio::spawn(f.dashboard.clone().watch_changes());
    let response = routes(f.dashboard.clone())
        .oneshot(Request::get("/events").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body().into_data_stream();
    // The first comparison sets the state; a change after it is an event.
    tokio::time::sleep(CHANGE_CHECK * 2).await;
    let mut report = stack_report("dns", "Drifted", Some("InSync"));
    report["metadata"]["resourceVersion"] = json!("2");
    put(&mut f.reports, report);
    let expected = format!("data: {:x}\n", view::fingerprint(&f.dashboard.snapshot()));
    // Earlier events may carry earlier states; the page compares them with its own.
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        let mut seen = String::new();
        while let Some(Ok(chunk)) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if seen.contains(&expected) {
                break;
            }
        }
        seen
    })
    .await
    .expect("an event within 10 s");
    assert!(
        seen.contains(&format!("event: change\n{expected}")),
        "{seen}"
    );
}

#[test]
fn paging_clamps_and_counts() {
    let p = view::paginate((0..250).collect::<Vec<_>>(), 0);
    assert_eq!((p.page, p.pages, p.matched, p.rows.len()), (1, 3, 250, 100));
    let p = view::paginate((0..250).collect::<Vec<_>>(), 9);
    assert_eq!((p.page, p.rows.len(), p.rows[0]), (3, 50, 200));
    let p = view::paginate(Vec::<u8>::new(), 2);
    assert_eq!((p.page, p.pages), (1, 1));
}

#[test]
fn escaping_covers_markup_and_quotes() {
    assert_eq!(
        render::Esc("<a href=\"x\">'&'</a>").to_string(),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    let f = view::Filter {
        q: "a b&c=d".into(),
        status: "Drifted".into(),
        ..Default::default()
    };
    assert_eq!(f.query(), "status=Drifted&q=a%20b%26c%3Dd");
}

#[test]
fn artifact_links_follow_the_scans_s3_target() {
    let report: DriftReport = serde_json::from_value(stack_report("net", "Drifted", None)).unwrap();
    let snapshot = |s3: serde_json::Value| {
        let scan: DriftScan = serde_json::from_value(json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
            "metadata": { "name": "infra", "namespace": "team-a" },
            "spec": { "source": { "git": { "url": "https://git.example.com/infra.git" } },
                      "artifacts": { "s3": s3 } }
        }))
        .unwrap();
        view::Snapshot {
            scans: vec![Arc::new(scan)],
            ..Default::default()
        }
    };
    let link = |s3: serde_json::Value, location: &str| {
        view::artifact_link(&snapshot(s3), &report, location)
    };
    let key = "s3://plans/team-a/infra/net/run 1/plan.json";
    // AWS S3: the console page of the object, in the scan's region.
    assert_eq!(
        link(json!({ "bucket": "plans", "region": "eu-west-1" }), key).as_deref(),
        Some("https://console.aws.amazon.com/s3/object/plans?region=eu-west-1&prefix=team-a%2Finfra%2Fnet%2Frun%201%2Fplan.json")
    );
    // An S3-compatible endpoint: path-style or virtual-hosted, as the scan uploads.
    assert_eq!(
        link(
            json!({ "bucket": "plans", "endpoint": "http://minio:9000/", "pathStyle": true }),
            key
        )
        .as_deref(),
        Some("http://minio:9000/plans/team-a/infra/net/run%201/plan.json")
    );
    assert_eq!(
        link(
            json!({ "bucket": "plans", "endpoint": "https://s3.example.com" }),
            key
        )
        .as_deref(),
        Some("https://plans.s3.example.com/team-a/infra/net/run%201/plan.json")
    );
    // No link: another bucket, a volume claim, an endpoint that is not http(s) or has a path.
    assert_eq!(link(json!({ "bucket": "other" }), key), None);
    assert_eq!(link(json!({ "bucket": "plan" }), key), None);
    assert_eq!(
        link(
            json!({ "bucket": "plans" }),
            "pvc://claim/infra/net/1/plan.json"
        ),
        None
    );
    for endpoint in [
        "javascript:alert(1)//",
        "https://a.example.com/x",
        "https://u@evil.example.com",
    ] {
        assert_eq!(
            link(
                json!({ "bucket": "plans", "endpoint": endpoint, "pathStyle": true }),
                key
            ),
            None,
            "{endpoint}"
        );
    }
    // The report of another scan, or of none, gets no link.
    assert_eq!(
        view::artifact_link(&view::Snapshot::default(), &report, key),
        None
    );
}
