//! Tests of the controller's I/O against a mocked API server (asserting the exact requests),
//! and of the Job it builds.

use http::{Request, Response};
use kube::client::Body;

use super::*;
use crate::scan::scheduler::{Decisions, JobPlan};

fn scan() -> DriftScan {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
        "metadata": {"name": "infra", "namespace": "ns", "uid": "u-1", "resourceVersion": "42"},
        "spec": {
            "source": {"git": {"url": "file:///repo", "stacks": ["live/a", "live/b"]}},
            "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3",
                            "providerCacheClaim": "cache", "env": [{"name": "A", "value": "1"}]}
        }
    }))
    .unwrap()
}

fn plan() -> JobPlan {
    JobPlan {
        scan: ScanKey::new("ns", "infra"),
        name: "infra-r1-00000001".into(),
        run: "r1".into(),
        commit: Some("abc".into()),
        stacks: vec!["live/a".into(), "live/b".into()],
    }
}

#[test]
fn job_follows_the_runner_contract() {
    let job = build_job(&scan(), &plan(), "driftless/operator:1");
    let v = serde_json::to_value(&job).unwrap();
    assert_eq!(v["metadata"]["labels"]["driftless.dev/scan"], "infra");
    assert_eq!(v["metadata"]["labels"]["driftless.dev/run"], "r1");
    assert_eq!(
        v["metadata"]["annotations"]["driftless.dev/stacks"],
        r#"["live/a","live/b"]"#
    );
    assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
    let spec = &v["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 3600);
    assert_eq!(spec["ttlSecondsAfterFinished"], 3600);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["initContainers"][0]["image"], "driftless/operator:1");
    assert_eq!(
        pod["initContainers"][0]["command"],
        serde_json::json!(["cp", "/usr/local/bin/driftless-operator", "/driftless/bin/"])
    );
    let main = &pod["containers"][0];
    assert_eq!(main["image"], "hashicorp/terraform:1.0.3");
    assert_eq!(
        main["command"],
        serde_json::json!([
            "/driftless/bin/driftless-operator",
            "scan-runner",
            "--namespace",
            "ns",
            "--scan",
            "infra",
            "--run-id",
            "r1",
            "--stack",
            "live/a",
            "--stack",
            "live/b",
            "--commit",
            "abc"
        ])
    );
    assert_eq!(main["env"][1]["name"], "TF_PLUGIN_CACHE_DIR");
    assert_eq!(main["env"][1]["value"], "/driftless/plugin-cache");
    assert_eq!(
        pod["volumes"][1]["persistentVolumeClaim"]["claimName"],
        "cache"
    );
    // Read back: the observed state is the plan's.
    let state = job_state(&job).unwrap();
    assert_eq!(
        (state.run.as_str(), state.stacks.clone(), state.phase),
        ("r1", plan().stacks, JobPhase::Active)
    );
}

#[test]
fn job_phases_from_conditions() {
    let mut job = build_job(&scan(), &plan(), "x");
    job.status = serde_json::from_value(serde_json::json!({
        "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]
    }))
    .unwrap();
    assert_eq!(job_state(&job).unwrap().phase, JobPhase::Failed);
    job.status = serde_json::from_value(serde_json::json!({
        "completionTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Complete", "status": "True"}]
    }))
    .unwrap();
    assert!(matches!(
        job_state(&job).unwrap().phase,
        JobPhase::Succeeded(Some(_))
    ));
}

#[test]
fn discover_finds_stack_directories() {
    let dir = tempfile::tempdir().unwrap();
    for (path, file) in [
        ("live/a", "main.tf"),
        ("live/b/c", "x.tf"),
        ("live/d", "README.md"),
        ("modules/m", "m.tf"),
    ] {
        std::fs::create_dir_all(dir.path().join(path)).unwrap();
        std::fs::write(dir.path().join(path).join(file), "").unwrap();
    }
    let found = discover(dir.path(), &["live/**".into()], Default::default()).unwrap();
    assert_eq!(found, ["live/a", "live/b/c"]);
    assert!(discover(dir.path(), &["[".into()], Default::default())
        .unwrap_err()
        .starts_with("spec.source.git.discover"));
}

fn respond(status: u16, body: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

fn conflict() -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "conflict"})
}

async fn body_json(request: Request<Body>) -> serde_json::Value {
    let bytes = request.into_body().collect_bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn act_creates_jobs_then_deletes_then_applies_status() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let scan = scan();
    let status = DriftScanStatus {
        last_trigger: Some("1".into()),
        ..Default::default()
    };
    let decisions = Decisions {
        create: vec![plan()],
        delete: vec![(ScanKey::new("ns", "infra"), "infra-old-1".into())],
        statuses: vec![(ScanKey::new("ns", "infra"), status)],
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().to_string(),
            "/apis/batch/v1/namespaces/ns/jobs?&fieldManager=driftless-scan"
        );
        let job = body_json(request).await;
        assert_eq!(job["metadata"]["name"], "infra-r1-00000001");
        send.send_response(respond(201, job));

        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::DELETE);
        assert_eq!(
            request.uri().path(),
            "/apis/batch/v1/namespaces/ns/jobs/infra-old-1"
        );
        assert_eq!(body_json(request).await["propagationPolicy"], "Background");
        send.send_response(respond(
            200,
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ));

        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::PATCH);
        assert_eq!(
            request.uri().to_string(),
            "/apis/driftless.dev/v1alpha1/namespaces/ns/driftscans/infra/status?&force=true&fieldManager=driftless-scan"
        );
        assert_eq!(
            request.headers()["content-type"],
            "application/apply-patch+yaml"
        );
        let patch = body_json(request).await;
        assert_eq!(
            patch["metadata"]["resourceVersion"], "42",
            "conditional on what was observed"
        );
        assert_eq!(patch["status"]["lastTrigger"], "1");
        // Someone else wrote the status meanwhile: refused; act skips it.
        send.send_response(respond(409, conflict()));
    });
    let created = act(&client, &decisions, &|_| Some(&scan), "img")
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(created.len(), 1);
}

#[tokio::test]
async fn act_treats_an_existing_job_as_created() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let scan = scan();
    let decisions = Decisions {
        create: vec![plan()],
        ..Default::default()
    };
    let server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.unwrap();
        let mut already = conflict();
        already["reason"] = "AlreadyExists".into();
        send.send_response(respond(409, already));
    });
    let created = act(&client, &decisions, &|_| Some(&scan), "img")
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(created[0].name, "infra-r1-00000001");
}
