//! DriftScan end to end against the API server in `KUBECONFIG`: the real operator binary
//! reconciles a DriftScan triggered by annotation and by the webhook; the test plays the
//! kubelet and the scan runner (it writes each Job's DriftReports and marks the Job succeeded
//! through the status subresource), restarts the operator mid-run, and checks that the run
//! finishes once, with the right Jobs and counts.
//!
//! `drift_scan_over_git_repo_with_real_runner` goes further on the runner side: a DriftScan over
//! a local `file://` git repository of two Terraform stacks, triggered by annotation; each Job's
//! command is run with the real `driftless-operator scan-runner` and the real Terraform 1.0.3
//! (`.ci/tools/terraform.sh`) on PATH, writing the DriftReports to the API server.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use driftless_crds::drift_report::{report_name, ChangeType, DriftReport, DriftStatus};
use driftless_crds::drift_scan::DriftScan;
use driftless_e2e::{client_with_jobs_or_skip, in_scope, install_crds, kubelet, poll, Scope};
use hmac::{Hmac, Mac};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};

const MANAGER: &str = "driftless-e2e";

/// Each test runs an operator; it acts only on DriftScans of its own namespace
/// (`--scan-namespace` defaults to `--namespace`), but two at once would still share the
/// cluster-wide Job and DriftScan watches and the machine. The tests of this file take turns.
static ONE_OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn operator_binary() -> PathBuf {
    driftless_e2e::procs::binary("driftless-operator", "driftless-operator")
}

struct Operator {
    child: Child,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_operator(bin: &PathBuf, scope: &Scope, port: u16) -> anyhow::Result<Operator> {
    let log = std::fs::File::create(
        std::env::temp_dir().join(format!("{}-operator.log", scope.namespace)),
    )?;
    let child = Command::new(bin)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--namespace",
            &scope.namespace,
            "--identity",
            "e2e-operator",
            "--runner-image",
            "driftless/operator:e2e",
            "--max-concurrent-jobs",
            "10",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting driftless-operator")?;
    let op = Operator { child };
    let http = reqwest::Client::new();
    poll("the operator's /api/health", || {
        let http = http.clone();
        async move {
            Ok(
                match http
                    .get(format!("http://127.0.0.1:{port}/api/health"))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => Some(()),
                    _ => None,
                },
            )
        }
    })
    .await?;
    Ok(op)
}

async fn run_jobs(jobs: &Api<Job>, run: &str) -> anyhow::Result<Vec<Job>> {
    let mut list = jobs
        .list(
            &ListParams::default()
                .labels(&format!("driftless.dev/scan=infra,driftless.dev/run={run}")),
        )
        .await?
        .items;
    list.sort_by_key(|j| j.metadata.creation_timestamp.clone().map(|t| t.0));
    Ok(list)
}

fn stacks_of(job: &Job) -> Vec<String> {
    serde_json::from_str(&job.metadata.annotations.as_ref().unwrap()["driftless.dev/stacks"])
        .unwrap()
}

/// Plays the scan runner and the kubelet: one DriftReport per stack, then the Job succeeds.
async fn play(scope: &Scope, job: &Job, run: &str, status: &str) -> anyhow::Result<()> {
    let reports: Api<DriftReport> = Api::namespaced(scope.client.clone(), &scope.namespace);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for stack in stacks_of(job) {
        let name = report_name("infra", &stack);
        let object = json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport",
            "metadata": {"name": name, "labels": {"driftless.dev/scan": "infra"}},
            "spec": {"target": {"kind": "Stack", "name": format!("infra/{stack}"), "scan": "infra", "stack": stack}},
        });
        reports
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await?;
        let drifted = status == "Drifted";
        let patch = json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftReport", "metadata": {"name": name},
            "status": {"summary": {"status": status, "added": u32::from(drifted), "changed": 0, "removed": 0,
                                    "checkedAt": now, "run": run, "trigger": "Manual"}},
        });
        reports
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
    }
    kubelet::finish_job(&scope.client, job, 0).await
}

async fn last_run(
    scans: &Api<DriftScan>,
) -> anyhow::Result<Option<driftless_crds::drift_scan::RunStatus>> {
    Ok(scans.get("infra").await?.status.and_then(|s| s.last_run))
}

fn sign(token: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn drift_scan_runs_once_through_restart_and_webhook() {
    let Some(client) =
        client_with_jobs_or_skip("drift_scan_runs_once_through_restart_and_webhook").await
    else {
        return;
    };
    let _turn = ONE_OPERATOR.lock().await;
    install_crds(&client).await.unwrap();
    let bin = operator_binary();
    // The operator resolves the commit and the stacks' images from the repository itself.
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    for stack in ["live/a", "live/b", "live/c"] {
        std::fs::create_dir_all(repo.join(stack)).unwrap();
        std::fs::write(
            repo.join(stack).join("main.tf"),
            "output \"x\" { value = 1 }\n",
        )
        .unwrap();
    }
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "stacks"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", repo.display());
    in_scope(&client, "scan", move |scope| async move {
        let ns = scope.namespace.clone();
        let secrets: Api<Secret> = Api::namespaced(scope.client.clone(), &ns);
        let secret: Secret = serde_json::from_value(json!({
            "metadata": {"name": "hook"}, "stringData": {"token": "t0ken"}}))?;
        secrets.create(&PostParams::default(), &secret).await?;
        let scans: Api<DriftScan> = Api::namespaced(scope.client.clone(), &ns);
        let scan: DriftScan = serde_json::from_value(json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
            "metadata": {"name": "infra"},
            "spec": {
                "source": {"git": {"url": url, "stacks": ["live/a", "live/b", "live/c"]}},
                "maxParallel": 2,
                "webhook": {"secretRef": {"name": "hook"}},
                "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3",
                                "env": [{"name": "TF_IN_AUTOMATION", "value": "1"}]}
            }
        }))?;
        scans.create(&PostParams::default(), &scan).await?;
        let port = free_port();
        let mut operator = Some(start_operator(&bin, &scope, port).await?);
        let jobs: Api<Job> = Api::namespaced(scope.client.clone(), &ns);

        // Trigger by annotation; time to the first Job.
        let started = Instant::now();
        let patch = json!({"metadata": {"annotations": {"driftless.dev/trigger": "1"}}});
        scans.patch("infra", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let first = poll("the first scan Job", || {
            let jobs = jobs.clone();
            async move {
                let list = jobs.list(&ListParams::default().labels("driftless.dev/scan=infra")).await?;
                Ok(list.items.into_iter().next())
            }
        })
        .await?;
        let latency = started.elapsed();
        eprintln!("trigger-to-first-Job latency: {} ms", latency.as_millis());
        ensure!(latency < Duration::from_secs(5), "trigger-to-first-Job took {latency:?}");
        let run = first.metadata.labels.as_ref().unwrap()["driftless.dev/run"].clone();

        // maxParallel 2: two Jobs of one stack each; the third stack waits.
        let pair = poll("two Jobs", || {
            let (jobs, run) = (jobs.clone(), run.clone());
            async move { Ok(Some(run_jobs(&jobs, &run).await?).filter(|l| l.len() == 2)) }
        })
        .await?;
        let spec = pair[0].spec.as_ref().unwrap();
        ensure!(spec.backoff_limit == Some(0), "backoffLimit: {:?}", spec.backoff_limit);
        ensure!(spec.active_deadline_seconds == Some(3600) && spec.ttl_seconds_after_finished == Some(3600));
        let pod = spec.template.spec.as_ref().unwrap();
        ensure!(pod.restart_policy.as_deref() == Some("Never"));
        let init = &pod.init_containers.as_ref().unwrap()[0];
        ensure!(init.image.as_deref() == Some("driftless/operator:e2e"));
        ensure!(init.command.as_ref().unwrap().join(" ") == "cp /usr/local/bin/driftless-operator /driftless/bin/");
        let main = &pod.containers[0];
        ensure!(main.image.as_deref() == Some("hashicorp/terraform:1.0.3"), "{:?}", main.image);
        let stack = stacks_of(&pair[0]);
        ensure!(stack.len() == 1);
        let expected = format!(
            "/driftless/bin/driftless-operator scan-runner --namespace {ns} --scan infra --run-id {run} --stack {} --commit {head}",
            stack[0]
        );
        ensure!(main.command.as_ref().unwrap().join(" ") == expected, "{:?}", main.command);
        ensure!(main.env.as_ref().unwrap().iter().any(|e| e.name == "TF_IN_AUTOMATION"));
        let owner = &pair[0].metadata.owner_references.as_ref().unwrap()[0];
        ensure!(owner.kind == "DriftScan" && owner.name == "infra" && owner.controller == Some(true));

        // The lock: the webhook is refused with the active run's progress.
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/api/v1/namespaces/{ns}/driftscans/infra");
        let r = http.post(format!("{url}/scan")).bearer_auth("t0ken").body(r#"{"actor":"ci"}"#).send().await?;
        ensure!(r.status() == 409, "expected 409, got {}", r.status());
        let body: Value = serde_json::from_str(&r.text().await?)?;
        ensure!(body["run"]["id"] == run.as_str() && body["run"]["total"] == 3 && body["run"]["running"] == 2, "{body}");
        let r = http.post(format!("{url}/scan")).bearer_auth("wrong").send().await?;
        ensure!(r.status() == 401, "bad token: {}", r.status());

        // One Job done: progress, and the third stack gets its Job.
        play(&scope, &pair[0], &run, "InSync").await?;
        let three = poll("the third Job", || {
            let (jobs, run) = (jobs.clone(), run.clone());
            async move { Ok(Some(run_jobs(&jobs, &run).await?).filter(|l| l.len() == 3)) }
        })
        .await?;
        poll("completed 1 in the status", || {
            let scans = scans.clone();
            async move { Ok(last_run(&scans).await?.filter(|r| r.completed == 1 && r.running == 2)) }
        })
        .await?;

        // Restart mid-run: stop the operator, finish a Job while it is down, start it again.
        let played = pair[0].metadata.name.clone();
        let rest: Vec<&Job> = three.iter().filter(|j| j.metadata.name != played).collect();
        ensure!(rest.len() == 2);
        drop(operator.take());
        play(&scope, rest[0], &run, "Drifted").await?;
        operator = Some(start_operator(&bin, &scope, port).await?);
        play(&scope, rest[1], &run, "InSync").await?;
        let done = poll("the run to finish", || {
            let scans = scans.clone();
            async move { Ok(last_run(&scans).await?.filter(|r| r.finished_at.is_some())) }
        })
        .await?;
        ensure!(
            format!("{:?}", done.phase) == "Succeeded" && (done.total, done.completed, done.drifted, done.errored) == (3, 3, 1, 0),
            "{done:?}"
        );
        ensure!(run_jobs(&jobs, &run).await?.len() == 3, "a stack was planned twice");
        let events: Api<Event> = Api::namespaced(scope.client.clone(), &ns);
        let finished = poll("the RunSucceeded Event", || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default()).await?;
                let n = list.items.iter().filter(|e| e.reason.as_deref() == Some("RunSucceeded")).count();
                Ok(Some(n).filter(|n| *n > 0))
            }
        })
        .await?;
        ensure!(finished == 1, "the run finished {finished} times");

        // Webhook with a GitHub signature, for one stack: 202 and a Job for that stack only.
        let body = br#"{"actor":"github"}"#;
        let r = http
            .post(format!("{url}/stacks/live/b/scan"))
            .header("X-Hub-Signature-256", sign("t0ken", body))
            .body(&body[..])
            .send()
            .await?;
        ensure!(r.status() == 202, "expected 202, got {}", r.status());
        let accepted: Value = serde_json::from_str(&r.text().await?)?;
        ensure!(accepted["total"] == 1 && accepted["trigger"] == "Webhook", "{accepted}");
        let new_run = accepted["id"].as_str().unwrap().to_owned();
        let job = poll("the webhook run's Job", || {
            let (jobs, run) = (jobs.clone(), new_run.clone());
            async move { Ok(run_jobs(&jobs, &run).await?.into_iter().next()) }
        })
        .await?;
        ensure!(stacks_of(&job) == ["live/b"]);
        let r = http.get(format!("{url}/stacks/live/b")).bearer_auth("t0ken").send().await?;
        let stack: Value = serde_json::from_str(&r.text().await?)?;
        ensure!(
            stack["run"] == new_run.as_str()
                && stack["unit"]["stack"] == "live/b"
                && stack["report"]["summary"]["status"].is_string(),
            "{stack}"
        );
        drop(operator);
        if done.id != run {
            bail!("the run changed id");
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// The Terraform 1.0.3 binary installed by `.ci/tools/terraform.sh`.
fn terraform() -> PathBuf {
    let root = std::env::var("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/driftless/tools")
        });
    let bin = root.join("terraform/bin/terraform");
    assert!(
        bin.exists(),
        "Terraform 1.0.3 is missing at {}: run .ci/tools/terraform.sh",
        bin.display()
    );
    bin
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir),
    )
}

fn net_state(vpc: &str, serial: u32) -> String {
    json!({
        "version": 4, "terraform_version": "1.0.3", "serial": serial,
        "lineage": "7d1b5b1e-0000-4000-8000-00000000e2e0",
        "outputs": {"vpc_id": {"value": vpc, "type": "string"}},
        "resources": []
    })
    .to_string()
}

/// A git repository with stacks `live/app` (an output read from another state, which the test
/// then changes: drift) and `live/db` (constant outputs: in sync), both applied.
fn two_stacks(root: &std::path::Path) -> PathBuf {
    let repo = root.join("repo");
    let states = root.join("states");
    std::fs::create_dir_all(repo.join("live/app")).unwrap();
    std::fs::create_dir_all(repo.join("live/db")).unwrap();
    std::fs::create_dir_all(&states).unwrap();
    std::fs::write(states.join("net.tfstate"), net_state("vpc-1", 1)).unwrap();
    let s = states.display();
    std::fs::write(
        repo.join("live/app/main.tf"),
        format!(
            "terraform {{\n  backend \"local\" {{ path = \"{s}/app.tfstate\" }}\n}}\n\
             data \"terraform_remote_state\" \"net\" {{\n  backend = \"local\"\n  config  = {{ path = \"{s}/net.tfstate\" }}\n}}\n\
             output \"vpc\" {{ value = data.terraform_remote_state.net.outputs.vpc_id }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("live/db/main.tf"),
        format!(
            "terraform {{\n  backend \"local\" {{ path = \"{s}/db.tfstate\" }}\n}}\noutput \"name\" {{ value = \"db-1\" }}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join(".gitignore"),
        ".terraform/\n.terraform.lock.hcl\n",
    )
    .unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "two stacks"]);
    for stack in ["live/app", "live/db"] {
        for args in [
            &["init", "-input=false"][..],
            &["apply", "-input=false", "-auto-approve"][..],
        ] {
            run_ok(
                Command::new(terraform())
                    .args(args)
                    .current_dir(repo.join(stack))
                    .env("TF_IN_AUTOMATION", "1"),
            );
        }
    }
    // Someone changes the network after the apply: live/app drifts.
    std::fs::write(states.join("net.tfstate"), net_state("vpc-2", 2)).unwrap();
    repo
}

/// Runs a Job's main container command with the real runner binary and Terraform on PATH (what
/// the Job's pod would do in a terraform image), against the API server of `KUBECONFIG`.
fn run_job_command(bin: &std::path::Path, job: &Job) -> std::process::Output {
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let command = pod.containers[0].command.clone().unwrap();
    assert_eq!(
        command[0], "/driftless/bin/driftless-operator",
        "{command:?}"
    );
    let tf_dir = terraform().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        tf_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin)
        .args(&command[1..])
        .env("PATH", path)
        .env("TF_IN_AUTOMATION", "1")
        .env("DRIFTLESS_LOG", "info")
        .output()
        .unwrap();
    eprintln!(
        "scan-runner {:?}: {}\n{}",
        &command[1..],
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[tokio::test]
async fn drift_scan_over_git_repo_with_real_runner() {
    let Some(client) = client_with_jobs_or_skip("drift_scan_over_git_repo_with_real_runner").await
    else {
        return;
    };
    let _turn = ONE_OPERATOR.lock().await;
    install_crds(&client).await.unwrap();
    let bin = operator_binary();
    let dir = tempfile::tempdir().unwrap();
    let repo = two_stacks(dir.path());
    let head = git(&repo, &["rev-parse", "HEAD"]);
    in_scope(&client, "scan-runner", move |scope| async move {
        let ns = scope.namespace.clone();
        let scans: Api<DriftScan> = Api::namespaced(scope.client.clone(), &ns);
        let scan: DriftScan = serde_json::from_value(json!({
            "apiVersion": "driftless.dev/v1alpha1", "kind": "DriftScan",
            "metadata": {"name": "infra"},
            "spec": {
                "source": {"git": {"url": format!("file://{}", repo.display()), "discover": ["live/*"]}},
                "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3"}
            }
        }))?;
        scans.create(&PostParams::default(), &scan).await?;
        let port = free_port();
        let operator = start_operator(&bin, &scope, port).await?;
        let jobs: Api<Job> = Api::namespaced(scope.client.clone(), &ns);

        let patch = json!({"metadata": {"annotations": {"driftless.dev/trigger": "1"}}});
        scans.patch("infra", &PatchParams::default(), &Patch::Merge(&patch)).await?;
        let first = poll("the first scan Job", || {
            let jobs = jobs.clone();
            async move {
                let list = jobs.list(&ListParams::default().labels("driftless.dev/scan=infra")).await?;
                Ok(list.items.into_iter().next())
            }
        })
        .await?;
        let run = first.metadata.labels.as_ref().unwrap()["driftless.dev/run"].clone();

        // Play the kubelet: run every Job of the run with the real runner until both stacks
        // have been planned.
        let mut done: Vec<String> = Vec::new();
        let mut planned: Vec<String> = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(300);
        while planned.len() < 2 {
            ensure!(Instant::now() < deadline, "only {planned:?} planned");
            for job in run_jobs(&jobs, &run).await? {
                let name = job.metadata.name.clone().unwrap();
                if done.contains(&name) {
                    continue;
                }
                let out = run_job_command(&bin, &job);
                ensure!(out.status.success(), "the runner failed for Job {name}");
                kubelet::finish_job(&scope.client, &job, 0).await?;
                planned.extend(stacks_of(&job));
                done.push(name);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        planned.sort();
        ensure!(planned == ["live/app", "live/db"], "{planned:?}");

        let finished = poll("the run to finish", || {
            let scans = scans.clone();
            async move { Ok(last_run(&scans).await?.filter(|r| r.finished_at.is_some())) }
        })
        .await?;
        ensure!(
            (finished.total, finished.completed, finished.drifted, finished.errored) == (2, 2, 1, 0),
            "{finished:?}"
        );

        let reports: Api<DriftReport> = Api::namespaced(scope.client.clone(), &ns);
        let list = reports.list(&ListParams::default().labels("driftless.dev/scan=infra")).await?;
        ensure!(list.items.len() == 2, "{} DriftReports", list.items.len());
        let app = reports.get("infra-live-app").await?;
        let st = app.status.clone().context("infra-live-app has no status")?;
        let s = st.summary.clone().context("no summary")?;
        ensure!(
            (s.status, s.added, s.changed, s.removed) == (DriftStatus::Drifted, 0, 1, 0),
            "{s:?}"
        );
        ensure!(s.commit.as_deref() == Some(head.as_str()) && s.run.as_deref() == Some(run.as_str()), "{s:?}");
        ensure!(st.items.len() == 1, "{:?}", st.items);
        let item = &st.items[0];
        ensure!(item.address == "output.vpc" && item.change == ChangeType::Changed, "{item:?}");
        ensure!(
            item.attributes[0].before.as_deref() == Some("vpc-1")
                && item.attributes[0].after.as_deref() == Some("vpc-2"),
            "{item:?}"
        );
        ensure!(app.spec.target.stack.as_deref() == Some("live/app"));
        let db = reports.get("infra-live-db").await?;
        let s = db.status.and_then(|s| s.summary).context("infra-live-db has no summary")?;
        ensure!(
            (s.status, s.added, s.changed, s.removed) == (DriftStatus::InSync, 0, 0, 0),
            "{s:?}"
        );
        // What `kubectl get driftreports` and `kubectl get driftscans` show.
        for kind in ["driftreports", "driftscans"] {
            if let Ok(out) = Command::new("kubectl").args(["get", kind, "-n", &ns]).output() {
                eprintln!("kubectl get {kind} -n {ns}:\n{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        drop(operator);
        Ok(())
    })
    .await
    .unwrap();
}
