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
        image: "hashicorp/terraform:1.5.7".into(),
    }
}

fn defaults(image: &str) -> JobDefaults {
    JobDefaults {
        runner_image: image.into(),
        service_account: Some("driftless-scan-runner".into()),
        source_rules: Default::default(),
    }
}

#[test]
fn job_follows_the_runner_contract() {
    let job = build_job(&scan(), &plan(), &defaults("driftless/operator:1"));
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
    assert_eq!(
        main["image"], "hashicorp/terraform:1.5.7",
        "the plan's image"
    );
    assert_eq!(pod["serviceAccountName"], "driftless-scan-runner");
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
fn scan_jobs_run_locked_down_and_mount_only_the_secrets_their_scan_names() {
    let mut scan = scan();
    scan.spec = serde_json::from_value(serde_json::json!({
        "source": {"git": {"url": "https://git.example.com/r.git", "stacks": ["live/a"],
                           "credentials": {"https": {"name": "git-token"}}}},
        "artifacts": {"s3": {"bucket": "b", "region": "r"}, "credentialsSecret": {"name": "s3"}}
    }))
    .unwrap();
    let mut defaults = defaults("x");
    defaults.source_rules.git_hosts = ["git.example.com".to_owned()].into();
    let v = serde_json::to_value(build_job(&scan, &plan(), &defaults)).unwrap();
    let pod = &v["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], RUNNER_UID);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], true);
    for c in [&pod["initContainers"][0], &pod["containers"][0]] {
        let sc = &c["securityContext"];
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{c}");
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{c}");
        assert_eq!(
            sc["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{c}"
        );
    }
    let main = &pod["containers"][0];
    let env: Vec<(String, String)> = main["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["value"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(env.contains(&("HOME".into(), "/tmp".into())), "{env:?}");
    assert!(env.contains(&("TMPDIR".into(), "/tmp".into())), "{env:?}");
    let command: Vec<&str> = main["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    let joined = command.join(" ");
    assert!(
        joined.contains("--allowed-git-host git.example.com"),
        "{joined}"
    );
    assert!(
        joined.contains("--secrets-dir /driftless/secrets"),
        "{joined}"
    );
    assert!(!joined.contains("--allow-insecure-credentials"), "{joined}");
    // Exactly the two Secrets the DriftScan names, read-only, each in its own directory.
    let secrets: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["secret"]["secretName"].as_str())
        .collect();
    assert_eq!(secrets, ["git-token", "s3"]);
    let mounts: Vec<(&str, bool)> = main["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["mountPath"].as_str().unwrap(), m["readOnly"] == true))
        .collect();
    assert!(
        mounts.contains(&("/driftless/secrets/git-token", true)),
        "{mounts:?}"
    );
    assert!(
        mounts.contains(&("/driftless/secrets/s3", true)),
        "{mounts:?}"
    );
    assert!(mounts.contains(&("/tmp", false)), "{mounts:?}");
}

#[test]
fn job_phases_from_conditions() {
    let mut job = build_job(&scan(), &plan(), &defaults("x"));
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
    let created = act(&client, &decisions, &|_| Some(&scan), &defaults("img"))
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
    let created = act(&client, &decisions, &|_| Some(&scan), &defaults("img"))
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(created[0].name, "infra-r1-00000001");
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A triggered run over a real repository: the stacks are discovered at the branch head,
/// each stack's image comes from its version files at that commit, Jobs only group stacks of
/// one image, and every Job pins the commit.
#[tokio::test]
async fn a_run_pins_its_commit_and_gives_each_stack_its_image() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("infra");
    for (path, text) in [
        ("live/a/main.tf", ""),
        ("live/a/.terraform-version", "1.5.7\n"),
        (
            "live/b/main.tf",
            "terraform {\n  required_version = \"~> 1.4.0\"\n}\n",
        ),
        ("live/c/main.tf", ""),
        ("live/c/.terraform-version", "1.5.7\n"),
        ("live/d/main.tf", ""),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(&root, &["init", "-q", "-b", "main"]);
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "one"]);
    let commit = git(&root, &["rev-parse", "HEAD"]);
    // Moved on after the trigger resolved: the run must not see this.
    let url = format!("file://{}", root.display());
    let mut scan: DriftScan = serde_json::from_value(serde_json::json!({
        "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
        "metadata": {"name": "infra", "namespace": "ns", "uid": "u-1", "resourceVersion": "7",
                     "generation": 1, "annotations": {"driftless.dev/trigger": "1"}},
        "spec": {
            "source": {"git": {"url": url, "ref": "main", "discover": ["live/*"]}},
            "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3"}
        }
    }))
    .unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = Arc::new(RepoCache::new(cache_dir.path()));
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let resolved = Arc::new(
        repo::resolve_at(
            cache,
            &client,
            "ns",
            &scan.spec,
            None,
            Duration::from_secs(30),
        )
        .await
        .unwrap(),
    );
    std::fs::write(root.join("live/a/.terraform-version"), "1.6.0\n").unwrap();
    git(&root, &["commit", "-q", "-am", "two"]);
    assert_eq!(resolved.commit, commit);
    assert_eq!(resolved.images["live/d"], "hashicorp/terraform:1.0.3");

    // The decision, with what the controller prepared from the resolution.
    let state = scan_state(&scan);
    let mut prepared = Prepared::default();
    prepared
        .resolutions
        .insert(state.key.clone(), resolution_of(&Ok(resolved.clone())));
    prepared.images.insert(
        (state.key.clone(), resolved.commit.clone()),
        resolved.images.clone(),
    );
    let observed = Observed {
        scans: vec![state],
        jobs: Vec::new(),
        reports: Vec::new(),
        now: Utc::now(),
        // A deep queue relative to capacity: batches of 2.
        max_concurrent_jobs: 2,
    };
    let decisions = scheduler::decide_with(&observed, &prepared);
    let run = decisions.statuses[0].1.last_run.clone().unwrap();
    assert_eq!(run.commit.as_deref(), Some(commit.as_str()));
    assert_eq!(run.total, 4);
    let mut jobs: Vec<(String, Vec<String>)> = decisions
        .create
        .iter()
        .map(|p| (p.image.clone(), p.stacks.clone()))
        .collect();
    jobs.sort();
    assert_eq!(
        jobs,
        [
            (
                "hashicorp/terraform:1.4".to_owned(),
                vec!["live/b".to_owned()]
            ),
            (
                "hashicorp/terraform:1.5.7".to_owned(),
                vec!["live/a".to_owned(), "live/c".to_owned()]
            ),
        ],
        "stacks of one image share a Job (a, c); b's ~> 1.4.0 gets 1.4; d waits for a slot"
    );

    // The Jobs the API server receives.
    let expected: Vec<(String, Vec<String>)> = decisions
        .create
        .iter()
        .map(|p| (p.image.clone(), p.stacks.clone()))
        .collect();
    let pinned = commit.clone();
    let mut answer = serde_json::to_value(&scan).unwrap();
    let server = tokio::spawn(async move {
        for (image, stacks) in expected {
            let (request, send) = handle.next_request().await.unwrap();
            assert_eq!(request.method(), http::Method::POST);
            assert_eq!(request.uri().path(), "/apis/batch/v1/namespaces/ns/jobs");
            let job = body_json(request).await;
            let main = &job["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(main["image"], image.as_str());
            let args: Vec<String> = serde_json::from_value(main["command"].clone()).unwrap();
            let at = args.iter().position(|a| a == "--commit").unwrap();
            assert_eq!(args[at + 1], pinned, "every Job plans the run's commit");
            let planned: Vec<&String> = args
                .iter()
                .enumerate()
                .filter(|(i, _)| *i > 0 && args[i - 1] == "--stack")
                .map(|(_, a)| a)
                .collect();
            assert_eq!(planned, stacks.iter().collect::<Vec<_>>());
            send.send_response(respond(201, job));
        }
        let (request, send) = handle.next_request().await.unwrap();
        assert_eq!(request.method(), http::Method::PATCH);
        let patch = body_json(request).await;
        assert_eq!(patch["status"]["lastRun"]["commit"], pinned.as_str());
        assert_eq!(patch["status"]["lastTrigger"], "1");
        answer["status"] = patch["status"].clone();
        send.send_response(respond(200, answer));
    });
    scan.metadata.resource_version = Some("7".into());
    let created = act(&client, &decisions, &|_| Some(&scan), &defaults("img"))
        .await
        .unwrap();
    server.await.unwrap();
    assert_eq!(created.len(), 2);
}

#[test]
fn a_pending_resolution_keeps_the_trigger_due() {
    let mut scan = scan();
    scan.metadata.annotations = Some(BTreeMap::from([(
        TRIGGER_ANNOTATION.to_owned(),
        "2".to_owned(),
    )]));
    let state = scan_state(&scan);
    let observed = Observed {
        scans: vec![state.clone()],
        jobs: Vec::new(),
        reports: Vec::new(),
        now: Utc::now(),
        max_concurrent_jobs: 2,
    };
    // Still fetching: nothing starts, the annotation is not recorded (decided again later).
    let d = scheduler::decide_with(&observed, &Prepared::default());
    assert!(d.create.is_empty());
    assert!(d.events.is_empty());
    assert!(d
        .statuses
        .iter()
        .all(|(_, s)| s.last_trigger.is_none() && s.last_run.is_none()));
    // A failed fetch: a Warning naming the field, and the trigger is consumed.
    let mut prepared = Prepared::default();
    prepared.resolutions.insert(
        state.key.clone(),
        resolution_of(&Err(
            "spec.source.git.url https://example.com/x: fetch failed: 404".into(),
        )),
    );
    let d = scheduler::decide_with(&observed, &prepared);
    assert!(d.create.is_empty());
    assert_eq!(d.events[0].reason, "RunFailed");
    assert!(d.events[0].warning);
    assert!(d.events[0].message.contains("spec.source.git.url"));
    assert_eq!(d.statuses[0].1.last_trigger.as_deref(), Some("2"));
    // ...and the status says why, in the Stalled condition.
    let stalled = &d.statuses[0].1.conditions;
    assert_eq!(stalled.len(), 1, "{stalled:?}");
    assert_eq!(
        (
            stalled[0].type_.as_str(),
            stalled[0].status.as_str(),
            stalled[0].reason.as_str()
        ),
        ("Stalled", "True", "RunFailed")
    );
    assert_eq!(
        stalled[0].message,
        "cannot start a run: spec.source.git.url https://example.com/x: fetch failed: 404"
    );
}

#[test]
fn units_of_a_run_wait_for_their_images() {
    let scan = scan();
    let mut state = scan_state(&scan);
    let mut status = DriftScanStatus::default();
    let request = crate::scan::triggers::RunRequest {
        kind: driftless_crds::drift_scan::TriggerKind::Manual,
        actor: None,
        commit: Some("c0ffee".into()),
        stacks: None,
    };
    scheduler::start_run(
        &state.spec,
        &mut status,
        &request,
        vec!["live/a".into(), "live/b".into()],
        Utc::now(),
    )
    .unwrap();
    state.status = status;
    let observed = Observed {
        scans: vec![state.clone()],
        jobs: Vec::new(),
        reports: Vec::new(),
        now: Utc::now(),
        max_concurrent_jobs: 5,
    };
    // The commit's images are not known yet: no Job.
    assert!(scheduler::decide_with(&observed, &Prepared::default())
        .create
        .is_empty());
    let mut prepared = Prepared::default();
    prepared.images.insert(
        (state.key.clone(), "c0ffee".into()),
        BTreeMap::from([("live/a".to_owned(), "tf:1.5.7".to_owned())]),
    );
    let d = scheduler::decide_with(&observed, &prepared);
    let mut images: Vec<_> = d
        .create
        .iter()
        .map(|p| (p.stacks.join(","), p.image.clone(), p.commit.clone()))
        .collect();
    images.sort();
    assert_eq!(
        images,
        [
            ("live/a".into(), "tf:1.5.7".into(), Some("c0ffee".into())),
            (
                "live/b".into(),
                "hashicorp/terraform:1.0.3".into(),
                Some("c0ffee".into())
            ),
        ]
    );
}
