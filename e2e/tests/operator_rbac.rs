//! Least privilege of the operator, proven on a real API server: the chart's operator
//! ServiceAccount and RBAC (rendered by the real `helm`) are applied, and the real
//! `driftless-operator` runs with a token of that ServiceAccount (TokenRequest) and nothing
//! else. It does its work: leader election (the Lease), the policy status controller and the
//! rollout (an ApplyPolicy over a Node: the policy's status, its revision, the node report's
//! assignment), and a DriftScan triggered by annotation (its webhook token Secret read, a scan
//! Job created, the DriftScan's status written). Its log must hold no refused call and no
//! `403` (Forbidden); every call it logged is in `driftless_crds::rbac::OPERATOR_API_CALLS`; and a
//! SubjectAccessReview confirms that every entry of the table (and of
//! `OPERATOR_ADMISSION_GRANTS`) is granted where it goes, and that calls outside it are not.
//! That the chart grants nothing beyond the tables is checked by the chart tests
//! (`e2e/tests/chart.rs`).
//!
//! Skipped without `KUBECONFIG` (`driftless_e2e::client_or_skip`) and without `helm` (env
//! `HELM`, `PATH` or the directory `.ci/install-tools.sh` installs into).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{anyhow, ensure, Context as _};
use driftless_crds::rbac::{
    classify, permits, ApiCall, Call, Scope as CallScope, NODE_EVENTS_NAMESPACE,
    OPERATOR_ADMISSION_GRANTS, OPERATOR_API_CALLS,
};
use driftless_e2e::identity::{
    api_for, delete_rendered, find_helm, name_of, render, skip, token_client, token_kubeconfig,
    Created, Process,
};
use driftless_e2e::procs::{binary, free_port};
use driftless_e2e::{
    api_error, apply, client_or_skip, in_scope, install_crds, poll, Scope, RUN_LABEL,
};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

/// The chart templates that make up the operator's identity and grants.
const TEMPLATES: [&str; 2] = [
    "templates/operator-serviceaccount.yaml",
    "templates/operator-rbac.yaml",
];

/// The real operator with only the chart's grants: it leads, rolls a policy out, runs a scan,
/// and never calls outside its table or gets a `403`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_works_with_exactly_the_charts_rbac() {
    const TEST: &str = "operator_works_with_exactly_the_charts_rbac";
    let Some(client) = client_or_skip(TEST).await else {
        return;
    };
    let Some(helm) = find_helm() else {
        skip(
            TEST,
            "helm not found in $HELM, PATH or the tools dir (run .ci/install-tools.sh)",
        );
        return;
    };
    install_crds(&client).await.expect("CRDs");
    let operator_bin = binary("driftless-operator", "driftless-operator");
    in_scope(&client, "operator-rbac", move |scope| async move {
        let dir = tempfile::tempdir()?;
        let created = std::sync::Arc::new(std::sync::Mutex::new(Created::default()));
        let outcome = tokio::spawn({
            let (scope, created, path) = (scope.clone(), created.clone(), dir.path().to_owned());
            async move { scenario(&scope, &helm, &operator_bin, &path, &created).await }
        })
        .await;
        let cleanup = clean_up(&scope, &created).await;
        if !matches!(outcome, Ok(Ok(()))) {
            driftless_e2e::procs::print_logs(dir.path());
        }
        match outcome {
            Ok(result) => result.and(cleanup),
            Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
            Err(err) => Err(err.into()),
        }
    })
    .await
    .expect("operator least privilege");
}

/// Deletes the cluster-scoped objects, the Role and RoleBinding in `default` and the Node; the
/// namespace goes with the scope.
async fn clean_up(scope: &Scope, created: &std::sync::Mutex<Created>) -> anyhow::Result<()> {
    let (objects, nodes) = {
        let created = created.lock().map_err(|_| anyhow!("poisoned"))?;
        (created.objects.clone(), created.nodes.clone())
    };
    let client = &scope.client;
    let mut problems = delete_rendered(client, &objects).await;
    let node_api: Api<Node> = Api::all(client.clone());
    for node in &nodes {
        match node_api.delete(node, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if api_error(&e).is_some_and(|s| s.code == 404) => {}
            Err(e) => problems.push(format!("Node {node}: {e}")),
        }
    }
    ensure!(problems.is_empty(), "cleanup: {}", problems.join("; "));
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .output()?;
    ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Whether `user` may `verb` `resource` of `group` in `namespace` (`None`: cluster-wide), by
/// the API server's own authorizer. Leases are asked about by the operator's Lease's name (the
/// only one granted).
async fn allowed(
    client: &Client,
    user: &str,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> anyhow::Result<bool> {
    let name = if resource == "leases" {
        "driftless-operator"
    } else {
        ""
    };
    let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": user,
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": resource,
                "subresource": subresource, "namespace": namespace.unwrap_or(""), "name": name,
            },
        },
    }))?;
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn scenario(
    scope: &Scope,
    helm: &Path,
    operator_bin: &Path,
    dir: &Path,
    created: &std::sync::Mutex<Created>,
) -> anyhow::Result<()> {
    let client = scope.client.clone();
    let ns = scope.namespace.clone();
    let suffix = ns.rsplit('-').next().unwrap_or("x");
    let release = format!("oprbac-{suffix}");

    // The chart's operator ServiceAccount and RBAC; the test's namespace is the release
    // namespace and (the chart's default) the only scan namespace.
    let docs = render(helm, &release, &ns, &TEMPLATES)?;
    let service_account = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount")
        .map(|d| name_of(d).to_owned())
        .context("no ServiceAccount")?;
    for mut doc in docs {
        doc["metadata"]["labels"][RUN_LABEL] = json!(ns);
        created
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .objects
            .push(doc.clone());
        apply(&api_for(&client, &doc).await?, &doc).await?;
    }
    let user = format!("system:serviceaccount:{ns}:{service_account}");
    eprintln!("operator_rbac: applied the chart's operator objects of release {release} ({user})");

    // Every table entry is granted where it goes; calls outside it are not.
    let place = |scope: CallScope| -> Vec<Option<String>> {
        match scope {
            CallScope::Cluster => vec![None],
            CallScope::Reports | CallScope::Leader | CallScope::Scans => vec![Some(ns.clone())],
            CallScope::NodeEvents => vec![Some(NODE_EVENTS_NAMESPACE.to_owned())],
            CallScope::Secrets => vec![],
        }
    };
    let entries: Vec<&ApiCall> = OPERATOR_API_CALLS
        .iter()
        .chain(OPERATOR_ADMISSION_GRANTS)
        .collect();
    for call in &entries {
        for namespace in place(call.scope) {
            for verb in call.verbs {
                let what = format!("{verb} {}.{} in {namespace:?}", call.resource, call.group);
                poll(&format!("RBAC to allow {what}"), || async {
                    Ok(allowed(
                        &client,
                        &user,
                        verb,
                        call.group,
                        call.resource,
                        namespace.as_deref(),
                    )
                    .await?
                    .then_some(()))
                })
                .await?;
            }
        }
    }
    for (verb, group, resource, namespace) in [
        ("get", "", "secrets", Some("default")),
        ("list", "", "secrets", Some(ns.as_str())),
        ("update", "", "secrets", Some(ns.as_str())),
        ("create", "batch", "jobs", Some("default")),
        ("delete", "coordination.k8s.io", "leases", Some(ns.as_str())),
        ("patch", "", "nodes", None),
        ("patch", "driftless.dev", "applypolicies", None),
        (
            "patch",
            "driftless.dev",
            "driftscans/status",
            Some("default"),
        ),
        ("create", "driftless.dev", "driftreports", Some("default")),
        ("create", "events.k8s.io", "events", Some("kube-system")),
    ] {
        ensure!(
            !allowed(&client, &user, verb, group, resource, namespace).await?,
            "{user} may {verb} {resource}.{group} in {namespace:?}: the chart grants more than \
             OPERATOR_API_CALLS"
        );
    }

    // A token of the operator's ServiceAccount, as the kubelet would mount it.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}}))?;
    let token: TokenRequest = accounts
        .create_subresource("token", &service_account, &PostParams::default(), &request)
        .await
        .context("TokenRequest")?;
    let token = token.status.context("no token in the TokenRequest")?.token;
    let kubeconfig = dir.join("operator.kubeconfig");
    token_kubeconfig(&token, "operator", &kubeconfig)?;
    // The token works (a call the operator makes).
    let leases: Api<Lease> = Api::namespaced(token_client(&kubeconfig).await?, &ns);
    leases
        .get_opt("driftless-operator")
        .await
        .context("reading the Lease with the operator's token")?;

    // The work: a Node (kept Ready) targeted by an ApplyPolicy, and a DriftScan over a local
    // repository with a webhook token, triggered by annotation.
    let node = scope.name("n");
    created
        .lock()
        .map_err(|_| anyhow!("poisoned"))?
        .nodes
        .push(node.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": node, "labels": {
                "kubernetes.io/hostname": node, RUN_LABEL: ns}}}))?,
        )
        .await?;
    let heartbeat =
        driftless_e2e::kubelet::heartbeat(&client, vec![node.clone()], Default::default());
    let _heartbeat = AbortOnDrop(heartbeat);
    let policy = scope.name("p");
    let ap = scope.object(
        "ApplyPolicy",
        &policy,
        json!({
            "nodeSelector": {"matchLabels": {"kubernetes.io/hostname": node}},
            "tasks": [{"name": "motd", "file": {"path": "/etc/motd", "content": "hi\n"}}],
        }),
    )?;
    apply(&scope.api("ApplyPolicy")?, &ap).await?;

    let repo = dir.join("repo");
    std::fs::create_dir_all(repo.join("live/a"))?;
    std::fs::write(repo.join("live/a/main.tf"), "output \"x\" { value = 1 }\n")?;
    git(&repo, &["init", "-q"])?;
    git(&repo, &["add", "."])?;
    git(&repo, &["commit", "-q", "-m", "stack"])?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "hook"}, "stringData": {"token": "t0ken"}}),
            )?,
        )
        .await?;
    let scan = scope.object(
        "DriftScan",
        "infra",
        json!({
            "source": {"git": {"url": format!("file://{}", repo.display()), "stacks": ["live/a"]}},
            "webhook": {"secretRef": {"name": "hook"}},
            "jobTemplate": {"image": "hashicorp/terraform:{{ version }}", "defaultVersion": "1.0.3"},
        }),
    )?;
    let scans = scope.api("DriftScan")?;
    apply(&scans, &scan).await?;

    // The operator, with leader election, and only the token.
    let log = dir.join("operator.log");
    let operator = Process(
        Command::new(operator_bin)
            .args(["run", "--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--namespace", &ns, "--identity", "e2e-rbac"])
            .args(["--runner-image", "driftless/operator:e2e"])
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("DRIFTLESS_LOG", "info,driftless_operator::api=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting driftless-operator")?,
    );
    let admin_leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
    poll("the operator to take the Lease", || async {
        let lease = admin_leases.get_opt("driftless-operator").await?;
        Ok(lease
            .and_then(|l| l.spec?.holder_identity)
            .filter(|h| h == "e2e-rbac")
            .map(|_| ()))
    })
    .await?;
    let trigger = json!({"metadata": {"annotations": {"driftless.dev/trigger": "1"}}});
    scans
        .patch("infra", &PatchParams::default(), &Patch::Merge(&trigger))
        .await?;

    // The rollout: the policy's status, its revision, the node's assignment.
    let policies = scope.api("ApplyPolicy")?;
    poll("the ApplyPolicy's status", || async {
        let p = serde_json::to_value(policies.get(&policy).await?)?;
        Ok((p["status"]["targeted"] == 1).then_some(()))
    })
    .await?;
    let reports = scope.api("DriftReport")?;
    poll("the node's revision assignment", || async {
        let Some(r) = reports.get_opt(&format!("node-{node}")).await? else {
            return Ok(None);
        };
        let r = serde_json::to_value(r)?;
        let assigned = r["spec"]["revisions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["policy"] == policy.as_str()));
        Ok(assigned.then_some(()))
    })
    .await?;
    // The scan: a Job, and the DriftScan's status.
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    poll("the scan Job", || async {
        let list = jobs
            .list(&ListParams::default().labels("driftless.dev/scan=infra"))
            .await?;
        Ok(list.items.into_iter().next().map(|_| ()))
    })
    .await?;
    poll("the DriftScan's status", || async {
        let s = serde_json::to_value(scans.get("infra").await?)?;
        Ok((s["status"]["lastTrigger"] == "1" && s["status"]["lastRun"].is_object()).then_some(()))
    })
    .await?;
    // The webhook token Secret is read in the background; give it the time of one read.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    drop(operator);

    // The log: no refused call, no 403, every call in the table.
    let text = std::fs::read_to_string(&log)?;
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for line in text.lines() {
        if line.contains("Forbidden") || line.contains("forbidden") {
            problems.push(format!("a 403: {line}"));
        }
        let Ok(entry) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        // The JSON log puts the fields next to the message.
        let fields = &entry;
        match fields["message"].as_str() {
            Some("kube request refused") => problems.push(format!("refused: {line}")),
            Some("kube request") => {
                let call = Call {
                    verb: fields["verb"].as_str().unwrap_or_default().to_owned(),
                    group: fields["group"].as_str().unwrap_or_default().to_owned(),
                    resource: fields["resource"].as_str().unwrap_or_default().to_owned(),
                    namespace: fields["namespace"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .map(str::to_owned),
                };
                let in_table = permits(OPERATOR_API_CALLS, &call, |scope, n| {
                    place(scope).contains(&Some(n.to_owned()))
                });
                if !in_table {
                    problems.push(format!("not in OPERATOR_API_CALLS: {call}"));
                }
                seen.insert(call.to_string());
            }
            _ => {}
        }
    }
    eprintln!(
        "operator_rbac: {} distinct calls made with the chart's RBAC:",
        seen.len()
    );
    for call in &seen {
        eprintln!("  {call}");
    }
    ensure!(problems.is_empty(), "operator log: {}", problems.join("\n"));
    // The scenario exercised the calls it was built for.
    for expected in [
        classify(
            "GET",
            &format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/x"),
            "",
        ),
        classify("POST", &format!("/apis/batch/v1/namespaces/{ns}/jobs"), ""),
        classify("GET", &format!("/api/v1/namespaces/{ns}/secrets/hook"), ""),
        classify(
            "PATCH",
            &format!("/apis/driftless.dev/v1alpha1/namespaces/{ns}/driftscans/infra/status"),
            "",
        ),
        classify(
            "POST",
            &format!("/apis/apps/v1/namespaces/{ns}/controllerrevisions"),
            "",
        ),
        classify(
            "PATCH",
            &format!("/apis/driftless.dev/v1alpha1/namespaces/{ns}/driftreports/x"),
            "",
        ),
        classify(
            "PATCH",
            "/apis/driftless.dev/v1alpha1/applypolicies/x/status",
            "",
        ),
        classify(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/x",
            "",
        ),
    ] {
        let expected = expected.context("a resource request")?.to_string();
        ensure!(
            seen.contains(&expected),
            "the operator never made {expected}"
        );
    }
    Ok(())
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
