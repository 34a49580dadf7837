//! The Helm chart, rendered by the real `helm`: what a cluster admin relies on when installing
//! it. RBAC is least privilege (no wildcards, leases only in a Role, each ServiceAccount's grants
//! are exactly the calls its code makes: `driftless_crds::rbac::AGENT_API_CALLS`,
//! `OPERATOR_API_CALLS`, `RUNNER_API_CALLS`), a
//! ValidatingAdmissionPolicy keeps each agent to its own node, the pods are hardened (the agent
//! runs as a non-root user without capabilities unless `agent.apply.enabled`), the host is
//! mounted read-only, and values.schema.json rejects bad values.
//!
//! Needs `helm` (env `HELM`, `PATH`, or the directory `.ci/install-tools.sh` installs into), and
//! `promtool` for the alerts (`chart/alerts.rs`). When one is missing the tests fail and say how
//! to install it, unless `DRIFTLESS_SKIP_TOOLS=1`.

use std::collections::BTreeSet;

use driftless_crds::rbac::{
    ApiCall, Scope, AGENT_API_CALLS, NODE_EVENTS_NAMESPACE, OPERATOR_ADMISSION_GRANTS,
    OPERATOR_API_CALLS, RUNNER_API_CALLS,
};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

#[path = "chart/alerts.rs"]
mod alerts;

/// Namespace the chart is rendered into; namespaced objects must land here.
const NAMESPACE: &str = "driftless-system";
/// Release name; resource names are `driftless-<component>`.
const RELEASE: &str = "driftless";
/// Kubernetes version `helm template` renders for: the oldest supported (helm 3.17 assumes 1.32).
const KUBE_VERSION: &str = "1.33.0";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

fn chart_dir() -> PathBuf {
    repo_root().join("charts").join("driftless")
}

/// The directory `.ci/install-tools.sh` installs helm and kubectl into.
fn tools_bin_dir() -> Option<PathBuf> {
    let root = match std::env::var_os("DRIFTLESS_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/driftless/tools"),
    };
    Some(root.join("bin"))
}

/// `helm` from `$HELM`, `PATH` or the tools directory.
fn find_helm() -> Option<PathBuf> {
    if let Some(helm) = std::env::var_os("HELM") {
        let helm = PathBuf::from(helm);
        assert!(
            helm.is_file(),
            "HELM={} does not exist; unset it or run .ci/install-tools.sh",
            helm.display()
        );
        return Some(helm);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain(tools_bin_dir())
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file())
}

/// `helm`, or `None` after printing why the test is skipped (only with DRIFTLESS_SKIP_TOOLS=1).
fn helm_or_skip() -> Option<PathBuf> {
    if let Some(helm) = find_helm() {
        return Some(helm);
    }
    if std::env::var("DRIFTLESS_SKIP_TOOLS").as_deref() == Ok("1") {
        // Straight to stderr, past the test harness's capture: CI counts these lines as skips.
        let _ = std::io::Write::write_all(
            &mut std::io::stderr().lock(),
            b"skipped: chart test: helm not found in $HELM, PATH or the tools dir (DRIFTLESS_SKIP_TOOLS=1)\n",
        );
        return None;
    }
    panic!(
        "helm not found in $HELM, PATH or {}: run .ci/install-tools.sh \
         (or set DRIFTLESS_SKIP_TOOLS=1 to skip the chart tests)",
        tools_bin_dir().map_or_else(|| "the tools dir".into(), |d| d.display().to_string())
    );
}

fn helm_cmd(helm: &Path, args: &[&str]) -> Output {
    Command::new(helm)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|err| panic!("running {} {args:?}: {err}", helm.display()))
}

/// `helm template` of the chart with extra arguments; panics with helm's stderr on failure.
fn render(helm: &Path, extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let chart = chart.to_str().expect("chart path is UTF-8");
    let mut args = vec![
        "template",
        RELEASE,
        chart,
        "--namespace",
        NAMESPACE,
        "--kube-version",
        KUBE_VERSION,
    ];
    args.extend_from_slice(extra);
    let out = helm_cmd(helm, &args);
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_docs(&String::from_utf8(out.stdout).expect("helm prints UTF-8"))
}

/// Every non-empty document of a multi-document YAML stream.
fn parse_docs(yaml: &str) -> Vec<Value> {
    driftless_crds::yaml::parse_yaml(yaml).expect("helm rendered valid YAML")
}

fn kind_of(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn name_of(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or_default()
}

fn all_of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|doc| kind_of(doc) == kind).collect()
}

/// The one object of `kind` named `name`.
fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|doc| kind_of(doc) == kind && name_of(doc) == name)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {kind}/{name}, rendered: {:?}",
        docs.iter()
            .map(|d| format!("{}/{}", kind_of(d), name_of(d)))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every (apiGroup, resource, verb) a role grants.
fn grants(role: &Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("role has rules") {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.insert((group.to_owned(), resource.to_owned(), verb.to_owned()));
                }
            }
        }
    }
    out
}

const WRITE_VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "escalate",
    "bind",
    "impersonate",
];

/// The only container of a workload.
fn container(workload: &Value) -> &Value {
    let containers = workload["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("workload has containers");
    assert_eq!(containers.len(), 1, "{}: one container", name_of(workload));
    &containers[0]
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

/// The env var `name` of a container.
fn env<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .unwrap_or_else(|| panic!("env {name} missing in {}", container["env"]))
}

/// The volume mount at `path` and the volume it mounts.
fn mount_at<'a>(workload: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let mount = container(workload)["volumeMounts"]
        .as_array()
        .and_then(|mounts| mounts.iter().find(|m| m["mountPath"] == path))
        .unwrap_or_else(|| panic!("{}: nothing mounted at {path}", name_of(workload)));
    let volume = pod_spec(workload)["volumes"]
        .as_array()
        .and_then(|volumes| volumes.iter().find(|v| v["name"] == mount["name"]))
        .unwrap_or_else(|| panic!("volume {} of {path} missing", mount["name"]));
    (mount, volume)
}

fn is_read_only(mount: &Value) -> bool {
    mount["readOnly"].as_bool().unwrap_or(false)
}

fn arg_after<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args = strings(&container["args"]);
    let at = args.iter().position(|a| *a == flag)?;
    args.get(at + 1).copied()
}

fn app_version() -> String {
    let chart = driftless_crds::yaml::parse_yaml(
        &std::fs::read_to_string(chart_dir().join("Chart.yaml")).expect("Chart.yaml readable"),
    )
    .expect("Chart.yaml is YAML")
    .remove(0);
    chart["appVersion"]
        .as_str()
        .expect("appVersion is a string")
        .to_owned()
}

#[test]
fn chart_passes_helm_lint() {
    let Some(helm) = helm_or_skip() else { return };
    for extra in [&[][..], &["--set", "agent.apply.enabled=true"][..]] {
        let mut args = vec!["lint", "charts/driftless", "--strict"];
        args.extend_from_slice(extra);
        let out = helm_cmd(&helm, &args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("0 chart(s) failed"),
            "helm {args:?}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn no_role_uses_wildcards_or_escalation_verbs() {
    let Some(helm) = helm_or_skip() else { return };
    for (extra, count, what) in [
        (
            &[][..],
            10,
            "operator: ClusterRole + leader-election Role + rollout Role + scan Role + policy \
             Events Role; scan runner: ClusterRole; agent: ClusterRole + Roles for reports, \
             secrets and node Events",
        ),
        (&["--set", "agent.apply.enabled=true"][..], 10, "as above"),
        (
            &["--set", "scanRunner.namespaces={team-a,team-b}"][..],
            11,
            "as above, with the operator's scan Role in each of the two scan namespaces",
        ),
        (
            &[
                "--set",
                "agent.source=configMap",
                "--set-string",
                "agent.config.files.host\\.yaml=kind: ApplyPolicy",
            ][..],
            6,
            "a standalone agent has no RBAC at all (the operator's five, the runner's one)",
        ),
    ] {
        let docs = render(&helm, extra);
        let roles: Vec<_> = docs
            .iter()
            .filter(|d| matches!(kind_of(d), "ClusterRole" | "Role"))
            .collect();
        assert_eq!(roles.len(), count, "{extra:?}: {what}");
        for role in roles {
            for rule in role["rules"].as_array().expect("rules") {
                for field in ["apiGroups", "resources", "verbs"] {
                    assert!(
                        !strings(&rule[field]).contains(&"*"),
                        "{}/{}: wildcard in {field}: {rule}",
                        kind_of(role),
                        name_of(role)
                    );
                }
                assert!(rule.get("nonResourceURLs").is_none(), "{rule}");
                for verb in ["escalate", "bind", "impersonate", "deletecollection"] {
                    assert!(!strings(&rule["verbs"]).contains(&verb), "{rule}");
                }
            }
        }
    }
}

/// The operator's ServiceAccount can do exactly what the operator's code calls (the table its
/// client enforces, plus the grant the API server checks when admitting a scan Job), in exactly
/// the namespaces the calls go to: nothing more, nothing less.
#[test]
fn operator_rbac_is_exactly_the_operator_api_call_table() {
    let Some(helm) = helm_or_skip() else { return };
    for (extra, scan_namespaces) in [
        (&[][..], vec![NAMESPACE]),
        (
            &["--set", "scanRunner.namespaces={team-a,team-b}"][..],
            vec!["team-a", "team-b"],
        ),
    ] {
        let docs = render(&helm, extra);
        let name = "driftless-operator";
        object(&docs, "ServiceAccount", name);
        let place = |scope: Scope| -> Vec<String> {
            match scope {
                Scope::Cluster => vec!["*".to_owned()],
                Scope::Reports | Scope::Leader => vec![NAMESPACE.to_owned()],
                Scope::Scans => scan_namespaces.iter().map(|n| (*n).to_owned()).collect(),
                Scope::NodeEvents => vec![NODE_EVENTS_NAMESPACE.to_owned()],
                Scope::Secrets => panic!("no operator call goes to the agent's Secrets"),
            }
        };
        let mut expected = table_grants(OPERATOR_API_CALLS, place);
        expected.extend(table_grants(OPERATOR_ADMISSION_GRANTS, place));
        let actual = effective_grants(&docs, name, NAMESPACE);
        let missing: Vec<_> = expected.difference(&actual).collect();
        let extra_grants: Vec<_> = actual.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra_grants.is_empty(),
            "{extra:?}: operator RBAC missing {missing:?}, not in OPERATOR_API_CALLS or \
             OPERATOR_ADMISSION_GRANTS {extra_grants:?}"
        );
        // Nothing is written cluster-wide except the policies' status; Secrets are only read,
        // by name, and only in the scan namespaces.
        for (scope, group, resource, verb) in &actual {
            if scope == "*" && WRITE_VERBS.contains(&verb.as_str()) {
                assert!(
                    resource.ends_with("policies/status") || resource == "logpipelines/status",
                    "operator may {verb} {group}/{resource} cluster-wide"
                );
            }
            if resource == "secrets" {
                assert_eq!(verb, "get");
                assert!(scan_namespaces.contains(&scope.as_str()), "{scope}");
            }
        }
        // The operator is told the same scan namespaces (--scan-namespace) and acts nowhere else.
        let deployment = object(&docs, "Deployment", name);
        assert_eq!(
            arg_after(container(deployment), "--scan-namespace"),
            Some(scan_namespaces.join(",").as_str())
        );
    }
}

/// Leader election: leases only through a Role in the release namespace, `get` and `update`
/// only of the operator's Lease (RBAC cannot narrow `create` by name).
#[test]
fn operator_leases_are_narrowed_to_its_lease() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    for role in all_of_kind(&docs, "ClusterRole") {
        assert!(
            !grants(role).iter().any(|(_, r, _)| r == "leases"),
            "{}: leases must not be granted cluster-wide",
            name_of(role)
        );
    }
    let leases: Vec<_> = all_of_kind(&docs, "Role")
        .into_iter()
        .filter(|role| grants(role).iter().any(|(_, r, _)| r == "leases"))
        .collect();
    assert_eq!(leases.len(), 1, "one Role grants leases");
    let lease_role = leases[0];
    assert_eq!(lease_role["metadata"]["namespace"], NAMESPACE);
    for rule in lease_role["rules"].as_array().unwrap() {
        let verbs = strings(&rule["verbs"]);
        if verbs == ["create"] {
            assert!(rule.get("resourceNames").is_none(), "{rule}");
        } else {
            assert_eq!(
                rule["resourceNames"],
                serde_json::json!(["driftless-operator"]),
                "{rule}"
            );
        }
    }
}

/// The scan runner's ServiceAccount in each scan namespace can do exactly what the runner's
/// code calls (`RUNNER_API_CALLS`) in that namespace, bound by a RoleBinding, never
/// cluster-wide.
#[test]
fn scan_runner_rbac_is_the_runner_api_call_table_per_namespace() {
    let Some(helm) = helm_or_skip() else { return };
    let name = "driftless-scan-runner";
    for (extra, scan_namespaces) in [
        (&[][..], vec![NAMESPACE]),
        (
            &["--set", "scanRunner.namespaces={team-a,team-b}"][..],
            vec!["team-a", "team-b"],
        ),
    ] {
        let docs = render(&helm, extra);
        for ns in &scan_namespaces {
            let expected = table_grants(RUNNER_API_CALLS, |scope| {
                assert_eq!(scope, Scope::Scans, "a runner calls only its namespace");
                vec![(*ns).to_owned()]
            });
            let actual = effective_grants(&docs, name, ns);
            let missing: Vec<_> = expected.difference(&actual).collect();
            let extra_grants: Vec<_> = actual.difference(&expected).collect();
            assert!(
                missing.is_empty() && extra_grants.is_empty(),
                "{extra:?}: scan runner RBAC in {ns} missing {missing:?}, not in \
                 RUNNER_API_CALLS {extra_grants:?}"
            );
            let account = docs.iter().find(|d| {
                kind_of(d) == "ServiceAccount"
                    && name_of(d) == name
                    && d["metadata"]["namespace"] == *ns
            });
            assert!(
                account.is_some(),
                "{extra:?}: no ServiceAccount {name} in {ns}"
            );
        }
        for b in all_of_kind(&docs, "ClusterRoleBinding") {
            assert_ne!(
                b["roleRef"]["name"],
                name,
                "ClusterRoleBinding/{} binds the scan runner cluster-wide",
                name_of(b)
            );
        }
    }
}

#[test]
fn scan_runner_service_account_and_repo_cache() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    let name = "driftless-scan-runner";
    let deployment = object(&docs, "Deployment", "driftless-operator");
    let c = container(deployment);
    assert_eq!(arg_after(c, "--scan-service-account"), Some(name));
    assert_eq!(
        arg_after(c, "--repo-cache-dir"),
        Some("/var/cache/driftless/repos")
    );
    let (mount, volume) = mount_at(deployment, "/var/cache/driftless/repos");
    assert_eq!(mount["name"], "repo-cache");
    assert!(!is_read_only(mount), "the repository cache is written");
    assert!(
        volume["emptyDir"].is_object(),
        "repo-cache is an emptyDir: {volume}"
    );
}

/// What a ServiceAccount may do, from every binding naming it: (namespace or "*" for
/// cluster-wide, apiGroup, resource, verb).
fn effective_grants(
    docs: &[Value],
    account: &str,
    namespace: &str,
) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| matches!(kind_of(d), "ClusterRoleBinding" | "RoleBinding"))
    {
        let names_account = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == namespace
            })
        });
        if !names_account {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        let (scope, role) = if kind_of(binding) == "ClusterRoleBinding" {
            assert_eq!(role_kind, "ClusterRole", "{binding}");
            ("*".to_owned(), object(docs, "ClusterRole", role_name))
        } else {
            let ns = binding["metadata"]["namespace"]
                .as_str()
                .expect("RoleBinding namespace")
                .to_owned();
            let role = docs
                .iter()
                .find(|d| {
                    kind_of(d) == role_kind
                        && name_of(d) == role_name
                        && (role_kind == "ClusterRole" || d["metadata"]["namespace"] == ns.as_str())
                })
                .unwrap_or_else(|| panic!("{role_kind}/{role_name} of {binding} not rendered"));
            (ns, role)
        };
        for (group, resource, verb) in grants(role) {
            out.insert((scope.clone(), group, resource, verb));
        }
    }
    out
}

/// What a call table says its component calls, each scope placed where `place` says the chart
/// puts it (`"*"`: cluster-wide): (namespace or `"*"`, apiGroup, resource, verb).
fn table_grants(
    table: &[ApiCall],
    place: impl Fn(Scope) -> Vec<String>,
) -> BTreeSet<(String, String, String, String)> {
    let mut out = BTreeSet::new();
    for call in table {
        for scope in place(call.scope) {
            for verb in call.verbs {
                out.insert((
                    scope.clone(),
                    call.group.to_owned(),
                    call.resource.to_owned(),
                    (*verb).to_owned(),
                ));
            }
        }
    }
    out
}

/// What `AGENT_API_CALLS` says the agent calls, with each scope placed where the chart puts it.
fn agent_calls(secrets_namespace: &str) -> BTreeSet<(String, String, String, String)> {
    table_grants(AGENT_API_CALLS, |scope| {
        vec![match scope {
            Scope::Cluster => "*",
            Scope::Reports => NAMESPACE,
            Scope::Secrets => secrets_namespace,
            Scope::NodeEvents => NODE_EVENTS_NAMESPACE,
            Scope::Scans | Scope::Leader => panic!("no agent call goes to {scope:?}"),
        }
        .to_owned()]
    })
}

/// The agent's ServiceAccount can do exactly what the agent's code calls (the table the agent's
/// client enforces), in exactly the namespaces the calls go to: nothing more, nothing less.
#[test]
fn agent_rbac_is_exactly_the_agent_api_call_table() {
    let Some(helm) = helm_or_skip() else { return };
    for (extra, secrets_namespace) in [
        (&[][..], NAMESPACE),
        (&["--set", "agent.apply.enabled=true"][..], NAMESPACE),
        (
            &["--set", "agent.secretsNamespace=policy-secrets"][..],
            "policy-secrets",
        ),
    ] {
        let docs = render(&helm, extra);
        let expected = agent_calls(secrets_namespace);
        let actual = effective_grants(&docs, "driftless-agent", NAMESPACE);
        let missing: Vec<_> = expected.difference(&actual).collect();
        let extra_grants: Vec<_> = actual.difference(&expected).collect();
        assert!(
            missing.is_empty() && extra_grants.is_empty(),
            "{extra:?}: agent RBAC missing {missing:?}, not in AGENT_API_CALLS {extra_grants:?}"
        );
        // Nothing is written cluster-wide, and Secrets are only read by name.
        for (scope, group, resource, verb) in &actual {
            if scope == "*" {
                assert!(
                    !WRITE_VERBS.contains(&verb.as_str()),
                    "agent may {verb} {group}/{resource} cluster-wide"
                );
            }
            if resource == "secrets" {
                assert_eq!((scope.as_str(), verb.as_str()), (secrets_namespace, "get"));
            }
        }
        let daemonset = object(&docs, "DaemonSet", "driftless-agent");
        assert_eq!(
            env(container(daemonset), "DRIFTLESS_SECRETS_NAMESPACE")["value"],
            secrets_namespace
        );
    }
}

/// The ValidatingAdmissionPolicy: matches only the agent's ServiceAccount, covers every write
/// the agent makes to a shared place (its report, its Events), keys on the node name of the
/// token, fails closed, and can be turned off.
#[test]
fn agent_admission_policy_keeps_each_agent_to_its_own_node() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    let name = "driftless-agent-own-node";
    let policy = object(&docs, "ValidatingAdmissionPolicy", name);
    assert_eq!(policy["apiVersion"], "admissionregistration.k8s.io/v1");
    assert!(
        policy["metadata"].get("namespace").is_none(),
        "cluster-scoped"
    );
    let spec = &policy["spec"];
    assert_eq!(spec["failurePolicy"], "Fail");
    let conditions = spec["matchConditions"].as_array().expect("matchConditions");
    assert_eq!(conditions.len(), 1);
    assert_eq!(
        conditions[0]["expression"],
        format!(
            "request.userInfo.username == \"system:serviceaccount:{NAMESPACE}:driftless-agent\""
        )
    );
    // Every write of the agent outside the cluster scope (reports, Events) is matched, on
    // create and update (patches and server-side apply are updates, or creates).
    let mut matched = BTreeSet::new();
    for rule in spec["matchConstraints"]["resourceRules"]
        .as_array()
        .expect("resourceRules")
    {
        let operations = strings(&rule["operations"]);
        assert!(
            operations.contains(&"CREATE") && operations.contains(&"UPDATE"),
            "{rule}"
        );
        assert_eq!(strings(&rule["apiVersions"]), ["*"], "{rule}");
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                matched.insert((group.to_owned(), resource.to_owned()));
            }
        }
    }
    for call in AGENT_API_CALLS {
        let writes = call.verbs.iter().any(|v| WRITE_VERBS.contains(v));
        if writes && matches!(call.scope, Scope::Reports | Scope::NodeEvents) {
            assert!(
                matched.contains(&(call.group.to_owned(), call.resource.to_owned())),
                "{}/{} is written by the agent but not checked by the policy",
                call.group,
                call.resource
            );
        }
    }
    let variables = spec["variables"].as_array().expect("variables");
    let node = variables
        .iter()
        .find(|v| v["name"] == "nodeName")
        .expect("variable nodeName");
    assert!(node["expression"]
        .as_str()
        .expect("expression")
        .contains("request.userInfo.extra['authentication.kubernetes.io/node-name']"));
    let validations: Vec<&str> = spec["validations"]
        .as_array()
        .expect("validations")
        .iter()
        .map(|v| v["expression"].as_str().expect("expression"))
        .collect();
    assert_eq!(validations[0], "variables.nodeName != ''", "fails closed");
    assert!(validations
        .iter()
        .any(|e| e.contains("'node-' + variables.nodeName")
            && e.contains("object.metadata.labels['driftless.dev/node'] == variables.nodeName")));
    assert!(validations
        .iter()
        .any(|e| e.contains("object.regarding.kind == 'Node'")
            && e.contains("object.regarding.name == variables.nodeName")));
    let binding = object(&docs, "ValidatingAdmissionPolicyBinding", name);
    assert_eq!(binding["spec"]["policyName"], name);
    assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);

    // Another ServiceAccount name is what the policy matches.
    let docs = render(&helm, &["--set", "agent.serviceAccount.name=node-agent"]);
    let policy = object(&docs, "ValidatingAdmissionPolicy", name);
    assert_eq!(
        policy["spec"]["matchConditions"][0]["expression"],
        format!("request.userInfo.username == \"system:serviceaccount:{NAMESPACE}:node-agent\"")
    );

    // Off on request, and absent for a standalone agent (it writes nothing to the API server).
    for extra in [
        &["--set", "agent.admissionPolicy.enabled=false"][..],
        &[
            "--set",
            "agent.source=configMap",
            "--set-string",
            "agent.config.files.host\\.yaml=kind: ApplyPolicy",
        ][..],
    ] {
        let docs = render(&helm, extra);
        assert!(
            all_of_kind(&docs, "ValidatingAdmissionPolicy").is_empty(),
            "{extra:?}"
        );
        assert!(
            all_of_kind(&docs, "ValidatingAdmissionPolicyBinding").is_empty(),
            "{extra:?}"
        );
    }
}

#[test]
fn operator_deployment_is_hardened() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    let deployment = object(&docs, "Deployment", "driftless-operator");
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    // Two replicas: a standby takes the Lease over when the leader goes.
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = pod_spec(deployment);
    assert_eq!(pod["serviceAccountName"], "driftless-operator");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = container(deployment);
    assert_eq!(
        c["image"],
        format!("ghcr.io/driftless-dev/driftless-operator:{}", app_version()),
        "image tag defaults to the chart's appVersion"
    );
    assert_eq!(strings(&c["args"]).first(), Some(&"run"));
    assert_eq!(arg_after(c, "--listen"), Some("0.0.0.0:8080"));
    assert_eq!(arg_after(c, "--namespace"), Some(NAMESPACE));
    assert_eq!(
        env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(c["ports"][0]["name"], "http");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"].is_object(), "resources set");
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_ne!(sc["privileged"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(sc["capabilities"].get("add").is_none());
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    let service = object(&docs, "Service", "driftless-operator");
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    assert_eq!(service["spec"]["ports"][0]["port"], 8080);
    assert_eq!(
        service["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert!(
        all_of_kind(&docs, "ServiceMonitor").is_empty(),
        "no ServiceMonitor unless serviceMonitor.enabled"
    );

    let custom = render(
        &helm,
        &[
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "operator.service.prometheusAnnotations=false",
            "--set",
            "operator.priorityClassName=platform-critical",
            "--set",
            "operator.image.tag=9.9.9",
        ],
    );
    let monitor = object(&custom, "ServiceMonitor", "driftless-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    let service = object(&custom, "Service", "driftless-operator");
    assert!(service["metadata"]["annotations"]["prometheus.io/scrape"].is_null());
    let deployment = object(&custom, "Deployment", "driftless-operator");
    assert_eq!(
        pod_spec(deployment)["priorityClassName"],
        "platform-critical"
    );
    assert_eq!(
        container(deployment)["image"],
        "ghcr.io/driftless-dev/driftless-operator:9.9.9"
    );
}

/// `operator.tls.secretName`: the Secret mounted, the flags passed, the probes and the
/// ServiceMonitor on HTTPS; nothing of it without the value.
#[test]
fn operator_tls_from_a_secret() {
    let Some(helm) = helm_or_skip() else {
        return;
    };
    let plain = render(&helm, &["--set", "serviceMonitor.enabled=true"]);
    let c = container(object(&plain, "Deployment", "driftless-operator"));
    assert_eq!(arg_after(c, "--tls-cert"), None);
    assert!(c["livenessProbe"]["httpGet"]["scheme"].is_null());
    let monitor = object(&plain, "ServiceMonitor", "driftless-operator");
    assert!(monitor["spec"]["endpoints"][0]["scheme"].is_null());

    let docs = render(
        &helm,
        &[
            "--set",
            "operator.tls.secretName=operator-tls",
            "--set",
            "serviceMonitor.enabled=true",
            "--set",
            "serviceMonitor.operatorTlsConfig.serverName=driftless-operator.driftless.svc",
        ],
    );
    let deployment = object(&docs, "Deployment", "driftless-operator");
    let c = container(deployment);
    assert_eq!(
        arg_after(c, "--tls-cert"),
        Some("/etc/driftless/tls/tls.crt")
    );
    assert_eq!(
        arg_after(c, "--tls-key"),
        Some("/etc/driftless/tls/tls.key")
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
    assert_eq!(c["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    let mount = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "tls")
        .expect("the tls mount");
    assert_eq!(mount["mountPath"], "/etc/driftless/tls");
    assert_eq!(mount["readOnly"], true);
    let volume = pod_spec(deployment)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .expect("the tls volume");
    assert_eq!(volume["secret"]["secretName"], "operator-tls");
    let monitor = object(&docs, "ServiceMonitor", "driftless-operator");
    assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["tlsConfig"]["serverName"],
        "driftless-operator.driftless.svc"
    );
    let out = helm_cmd(
        &helm,
        &[
            "template",
            RELEASE,
            chart_dir().to_str().unwrap(),
            "--set",
            "operator.tls.secretName=Not_A_Name",
        ],
    );
    assert!(!out.status.success(), "an invalid Secret name renders");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator.tls.secretName"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn operator_dashboard_token_and_ingress() {
    let Some(helm) = helm_or_skip() else {
        return;
    };
    let plain = render(&helm, &[]);
    let c = container(object(&plain, "Deployment", "driftless-operator"));
    let args = strings(&c["args"]);
    assert!(!args.contains(&"--no-dashboard"), "{args:?}");
    assert_eq!(arg_after(c, "--dashboard-token-file"), None);
    assert!(!plain.iter().any(|d| d["kind"] == "Ingress"));

    let docs = render(
        &helm,
        &[
            "--set",
            "operator.dashboard.tokenSecret=dash",
            "--set",
            "operator.dashboard.ingress.enabled=true",
            "--set",
            "operator.dashboard.ingress.host=driftless.example.com",
            "--set",
            "operator.dashboard.ingress.tlsSecretName=web-tls",
        ],
    );
    let deployment = object(&docs, "Deployment", "driftless-operator");
    let c = container(deployment);
    assert_eq!(
        arg_after(c, "--dashboard-token-file"),
        Some("/etc/driftless/dashboard/token")
    );
    let volume = pod_spec(deployment)["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "dashboard-token")
        .expect("the token volume");
    assert_eq!(volume["secret"]["secretName"], "dash");
    assert_eq!(volume["secret"]["items"][0]["key"], "token");
    let ingress = object(&docs, "Ingress", "driftless-operator-dashboard");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "web-tls");
    let rule = &ingress["spec"]["rules"][0];
    assert_eq!(rule["host"], "driftless.example.com");
    let paths: Vec<(String, String)> = rule["http"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            assert_eq!(p["backend"]["service"]["name"], "driftless-operator");
            (
                p["path"].as_str().unwrap().to_owned(),
                p["pathType"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(paths.contains(&("/".into(), "Exact".into())), "{paths:?}");
    // Only the dashboard's paths: nothing routes /metrics, /healthz or the webhook API.
    for hidden in [
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/namespaces/a/driftscans/b",
    ] {
        assert!(
            !paths.iter().any(|(p, t)| {
                (t == "Prefix" && (hidden == p || hidden.starts_with(&format!("{p}/"))))
                    || (t == "Exact" && hidden == p)
            }),
            "{hidden} is routed: {paths:?}"
        );
    }

    let off = render(&helm, &["--set", "operator.dashboard.enabled=false"]);
    let c = container(object(&off, "Deployment", "driftless-operator"));
    assert!(strings(&c["args"]).contains(&"--no-dashboard"));
    let out = helm_cmd(
        &helm,
        &[
            "template",
            RELEASE,
            chart_dir().to_str().unwrap(),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "operator.dashboard.ingress.enabled=true",
        ],
    );
    assert!(!out.status.success(), "an Ingress without a host renders");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("operator.dashboard.ingress.host"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Host mounts and scheduling that hold in both agent profiles and both sources.
fn check_agent_common(daemonset: &Value) {
    let pod = pod_spec(daemonset);
    assert_eq!(pod["serviceAccountName"], "driftless-agent");
    assert_eq!(pod["hostNetwork"], false);
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    let tolerations = pod["tolerations"].as_array().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint so it runs on every node: {tolerations:?}"
    );
    let c = container(daemonset);
    assert_eq!(strings(&c["args"]).first(), Some(&"agent"));
    assert_eq!(arg_after(c, "--root"), Some("/host"));
    assert_eq!(arg_after(c, "--listen"), Some("0.0.0.0:9779"));
    assert_eq!(arg_after(c, "--state-dir"), Some("/var/lib/driftless"));
    assert_eq!(
        env(c, "NODE_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.nodeName"
    );
    assert_eq!(c["ports"][0]["name"], "metrics");
    assert_eq!(c["ports"][0]["containerPort"], 9779);
    assert!(c["ports"][0].get("hostPort").is_none(), "no host port");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "metrics");

    for (path, host_path) in [
        ("/host", "/"),
        ("/host/proc", "/proc"),
        ("/host/sys", "/sys"),
        ("/host/var/log", "/var/log"),
    ] {
        let (_, volume) = mount_at(daemonset, path);
        assert_eq!(volume["hostPath"]["path"], host_path, "{path}");
    }
    let (root, _) = mount_at(daemonset, "/host");
    assert_eq!(root["mountPropagation"], "HostToContainer");
    let (logs, _) = mount_at(daemonset, "/host/var/log");
    assert!(is_read_only(logs), "host logs are never writable");
    let (state, volume) = mount_at(daemonset, "/var/lib/driftless");
    assert!(!is_read_only(state), "the state dir is writable");
    assert_eq!(volume["hostPath"]["path"], "/var/lib/driftless");
    assert_eq!(volume["hostPath"]["type"], "DirectoryOrCreate");
}

fn init_containers(daemonset: &Value) -> Vec<&Value> {
    pod_spec(daemonset)["initContainers"]
        .as_array()
        .map(|c| c.iter().collect())
        .unwrap_or_default()
}

/// Cluster mode is the default: the agent takes its policies from the API server and needs no
/// ConfigMap; it gets a ServiceAccount token and the settings of its report and Secrets.
#[test]
fn agent_runs_in_cluster_mode_by_default() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    let c = container(daemonset);
    let args = strings(&c["args"]);
    assert_eq!(args.get(1), Some(&"--kubernetes"), "{args:?}");
    assert!(
        !args.contains(&"--config") && !args.contains(&"--standalone"),
        "{args:?}"
    );
    assert_eq!(
        env(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env(c, "DRIFTLESS_SECRETS_NAMESPACE")["value"], NAMESPACE);
    assert_eq!(env(c, "DRIFTLESS_REPORT_INTERVAL_SECONDS")["value"], "300");
    assert_eq!(pod_spec(daemonset)["automountServiceAccountToken"], true);
    let mounts = c["volumeMounts"].as_array().expect("mounts");
    assert!(
        !mounts
            .iter()
            .any(|m| m["mountPath"] == "/etc/driftless/config"),
        "no config mount in cluster mode: {mounts:?}"
    );
    assert!(all_of_kind(&docs, "ConfigMap").is_empty());

    let docs = render(&helm, &["--set", "agent.reportIntervalSeconds=60"]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    assert_eq!(
        env(container(daemonset), "DRIFTLESS_REPORT_INTERVAL_SECONDS")["value"],
        "60"
    );

    // Config files are a ConfigMap-mode setting: refused rather than silently ignored.
    let chart = chart_dir();
    let out = helm_cmd(
        &helm,
        &[
            "template",
            RELEASE,
            chart.to_str().expect("UTF-8 path"),
            "--kube-version",
            KUBE_VERSION,
            "--set-string",
            "agent.config.files.host\\.yaml=kind: ApplyPolicy",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("only read with agent.source=configMap"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The read-only profile (the default): a non-root user with the `adm` group, no capabilities,
/// a read-only root filesystem and host, and an init container that gives it the state dir.
#[test]
fn agent_is_non_root_and_reads_the_host_read_only_by_default() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &[]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    assert_eq!(daemonset["metadata"]["namespace"], NAMESPACE);
    check_agent_common(daemonset);
    assert!(
        strings(&container(daemonset)["args"]).contains(&"--dry-run"),
        "a read-only host: ApplyPolicies only check"
    );
    let pod = pod_spec(daemonset);
    assert_eq!(pod["hostPID"], false);
    assert_eq!(
        pod["securityContext"]["supplementalGroups"],
        serde_json::json!([4]),
        "adm: Debian/Ubuntu logs are root:adm 0640"
    );
    let sc = &container(daemonset)["securityContext"];
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["runAsGroup"], 65532);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert!(
        sc["capabilities"].get("add").is_none(),
        "no capability added"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for path in ["/host", "/host/proc", "/host/sys", "/host/var/log"] {
        let (mount, _) = mount_at(daemonset, path);
        assert!(is_read_only(mount), "{path} must be read-only by default");
    }
    // The state dir is the only writable host path.
    let mounts = container(daemonset)["volumeMounts"]
        .as_array()
        .expect("mounts");
    for mount in mounts {
        let (_, volume) = mount_at(daemonset, mount["mountPath"].as_str().expect("path"));
        if volume.get("hostPath").is_some() && !is_read_only(mount) {
            assert_eq!(mount["mountPath"], "/var/lib/driftless", "{mount}");
        }
    }

    // The init container: same image, chown of the state dir only, root with CAP_CHOWN and
    // CAP_DAC_OVERRIDE (to descend into the agent's 0700 directories) and nothing else.
    let inits = init_containers(daemonset);
    assert_eq!(inits.len(), 1);
    let init = inits[0];
    assert_eq!(init["image"], container(daemonset)["image"]);
    assert_eq!(
        strings(&init["command"]),
        ["chown", "-R", "-h", "65532:65532", "/var/lib/driftless"]
    );
    let isc = &init["securityContext"];
    assert_eq!(isc["runAsUser"], 0);
    assert_eq!(isc["privileged"], false);
    assert_eq!(isc["allowPrivilegeEscalation"], false);
    assert_eq!(isc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&isc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&isc["capabilities"]["add"]),
        ["CHOWN", "DAC_OVERRIDE"]
    );
    let init_mounts = init["volumeMounts"].as_array().expect("init mounts");
    assert_eq!(init_mounts.len(), 1, "only the state dir: {init_mounts:?}");
    assert_eq!(init_mounts[0]["name"], "state");
    assert_eq!(init_mounts[0]["mountPath"], "/var/lib/driftless");

    assert!(
        !all_of_kind(&docs, "Service")
            .iter()
            .any(|s| name_of(s).contains("agent")),
        "the agent metrics Service is opt-in"
    );

    // Another user and groups go to the container, the pod and the init container's chown.
    let docs = render(
        &helm,
        &[
            "--set",
            "agent.securityContext.runAsUser=1000",
            "--set",
            "agent.securityContext.runAsGroup=1001",
            "--set",
            "agent.securityContext.supplementalGroups={4,190}",
        ],
    );
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    let sc = &container(daemonset)["securityContext"];
    assert_eq!(
        (&sc["runAsUser"], &sc["runAsGroup"]),
        (&1000.into(), &1001.into())
    );
    assert_eq!(
        pod_spec(daemonset)["securityContext"]["supplementalGroups"],
        serde_json::json!([4, 190])
    );
    assert_eq!(
        strings(&init_containers(daemonset)[0]["command"])[3],
        "1000:1001"
    );
    // uid 0 (to read root-only host files as their owner) is allowed, and says so.
    let docs = render(&helm, &["--set", "agent.securityContext.runAsUser=0"]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    let sc = &container(daemonset)["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
}

#[test]
fn agent_apply_mode_is_privileged_with_a_writable_host() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(&helm, &["--set", "agent.apply.enabled=true"]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    check_agent_common(daemonset);
    assert_eq!(
        pod_spec(daemonset)["hostPID"],
        true,
        "systemctl needs the host's PID namespace"
    );
    assert!(
        !strings(&container(daemonset)["args"]).contains(&"--dry-run"),
        "apply mode enforces"
    );
    let sc = &container(daemonset)["securityContext"];
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["privileged"], true);
    assert_ne!(
        sc["allowPrivilegeEscalation"], false,
        "the API server rejects privileged with allowPrivilegeEscalation=false"
    );
    let (root, _) = mount_at(daemonset, "/host");
    assert!(!is_read_only(root), "/host is read-write in apply mode");
    assert!(
        init_containers(daemonset).is_empty(),
        "a root agent owns the state dir already"
    );
    assert!(pod_spec(daemonset)["securityContext"]
        .get("supplementalGroups")
        .is_none());
}

/// ConfigMap mode: the standalone agent reads /etc/driftless/config, gets no ServiceAccount
/// token and no RBAC, and refuses to start without a ConfigMap to read.
#[test]
fn agent_config_map_mode_is_standalone() {
    let Some(helm) = helm_or_skip() else { return };
    let docs = render(
        &helm,
        &[
            "--set",
            "agent.source=configMap",
            "--set-string",
            "agent.config.files.host\\.yaml=kind: ApplyPolicy",
            "--set",
            "agent.metricsService.enabled=true",
        ],
    );
    let config_map = object(&docs, "ConfigMap", "driftless-agent-config");
    assert_eq!(config_map["data"]["host.yaml"], "kind: ApplyPolicy");
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    check_agent_common(daemonset);
    let c = container(daemonset);
    let args = strings(&c["args"]);
    assert_eq!(args.get(1), Some(&"--standalone"), "{args:?}");
    assert_eq!(arg_after(c, "--config"), Some("/etc/driftless/config"));
    assert!(!args.contains(&"--kubernetes"), "{args:?}");
    let (mount, volume) = mount_at(daemonset, "/etc/driftless/config");
    assert!(is_read_only(mount));
    assert_eq!(volume["configMap"]["name"], "driftless-agent-config");
    assert_eq!(pod_spec(daemonset)["automountServiceAccountToken"], false);
    assert!(
        effective_grants(&docs, "driftless-agent", NAMESPACE).is_empty(),
        "a standalone agent is granted nothing"
    );
    assert_eq!(
        init_containers(daemonset).len(),
        1,
        "still non-root, so still the state dir init container"
    );
    let service = object(&docs, "Service", "driftless-agent-metrics");
    assert_eq!(service["spec"]["clusterIP"], "None", "headless");
    assert_eq!(service["spec"]["ports"][0]["port"], 9779);

    let docs = render(
        &helm,
        &[
            "--set",
            "agent.source=configMap",
            "--set",
            "agent.config.existingConfigMap=host-policies",
        ],
    );
    assert!(all_of_kind(&docs, "ConfigMap").is_empty());
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    let (_, volume) = mount_at(daemonset, "/etc/driftless/config");
    assert_eq!(volume["configMap"]["name"], "host-policies");

    let chart = chart_dir();
    let out = helm_cmd(
        &helm,
        &[
            "template",
            RELEASE,
            chart.to_str().expect("UTF-8 path"),
            "--kube-version",
            KUBE_VERSION,
            "--set",
            "agent.source=configMap",
        ],
    );
    assert!(!out.status.success(), "configMap mode without a ConfigMap");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("agent.source=configMap needs agent.config.files"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn crds_ship_in_the_chart() {
    let Some(helm) = helm_or_skip() else { return };
    let expected: BTreeSet<&str> = [
        "applypolicies.driftless.dev",
        "driftreports.driftless.dev",
        "driftscans.driftless.dev",
        "factspolicies.driftless.dev",
        "logpipelines.driftless.dev",
        "notificationpolicies.driftless.dev",
    ]
    .into();
    let crd_dir = chart_dir().join("crds");
    let mut in_dir = BTreeSet::new();
    for entry in std::fs::read_dir(&crd_dir).expect("charts/driftless/crds exists") {
        let path = entry.expect("dir entry").path();
        let text = std::fs::read_to_string(&path).expect("CRD file readable");
        for doc in parse_docs(&text) {
            assert_eq!(
                kind_of(&doc),
                "CustomResourceDefinition",
                "{}",
                path.display()
            );
            assert_eq!(doc["spec"]["group"], "driftless.dev");
            in_dir.insert(name_of(&doc).to_owned());
        }
    }
    assert_eq!(in_dir, expected.iter().map(|s| (*s).to_owned()).collect());
    // And helm installs them: they come out of `helm template --include-crds`.
    let docs = render(&helm, &["--include-crds"]);
    let rendered: BTreeSet<&str> = all_of_kind(&docs, "CustomResourceDefinition")
        .into_iter()
        .map(name_of)
        .collect();
    assert_eq!(rendered, expected);
}

/// `helm template --set SET` fails with a values-schema error that names `complaint`.
fn assert_schema_rejects(helm: &Path, chart: &str, set: &str, complaint: &str) {
    let out = helm_cmd(
        helm,
        &[
            "template",
            RELEASE,
            chart,
            "--kube-version",
            KUBE_VERSION,
            "--set",
            set,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "--set {set} must be rejected");
    assert!(
        stderr.contains("schema") && stderr.contains(complaint),
        "--set {set}: expected a schema error naming {complaint}, got: {stderr}"
    );
}

#[test]
fn values_schema_rejects_invalid_values() {
    let Some(helm) = helm_or_skip() else { return };
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    for (set, complaint) in [
        ("agent.port=notanumber", "agent.port"),
        ("agent.port=70000", "agent.port"),
        ("operator.image.pullPolicy=Sometimes", "pullPolicy"),
        ("agent.apply.enabled=maybe", "enabled"),
        ("agent.tpyo=1", "tpyo"),
        ("agent.source=apiserver", "agent.source"),
        ("agent.reportIntervalSeconds=1", "reportIntervalSeconds"),
        ("agent.securityContext.runAsUser=-1", "runAsUser"),
        ("agent.secretsNamespace=Not_A_Namespace", "secretsNamespace"),
    ] {
        assert_schema_rejects(&helm, chart, set, complaint);
    }
    // A valid override goes through to the pod.
    let docs = render(&helm, &["--set", "agent.port=9100"]);
    let daemonset = object(&docs, "DaemonSet", "driftless-agent");
    assert_eq!(container(daemonset)["ports"][0]["containerPort"], 9100);
    assert_eq!(
        arg_after(container(daemonset), "--listen"),
        Some("0.0.0.0:9100")
    );
}

#[test]
fn chart_requires_kubernetes_1_33() {
    let Some(helm) = helm_or_skip() else { return };
    let chart = chart_dir();
    let chart = chart.to_str().expect("UTF-8 path");
    let old = helm_cmd(
        &helm,
        &["template", RELEASE, chart, "--kube-version", "1.32.9"],
    );
    assert!(!old.status.success(), "Kubernetes 1.32 must be refused");
    assert!(
        String::from_utf8_lossy(&old.stderr).contains(">=1.33.0-0"),
        "{}",
        String::from_utf8_lossy(&old.stderr)
    );
    for version in ["1.33.0", "1.35.2-gke.1000", "1.37.1"] {
        render(&helm, &["--kube-version", version]);
    }
}

/// `config/default` (the kustomize base) is the chart rendered with default values, and
/// `kubectl kustomize` builds it into the CRDs plus the chart's objects.
#[test]
fn kustomize_base_is_the_rendered_chart() {
    let Some(helm) = helm_or_skip() else { return };
    let chart = chart_dir();
    let args = [
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        "driftless",
        "--kube-version",
        KUBE_VERSION,
    ];
    let out = helm_cmd(&helm, &args);
    assert!(out.status.success());
    let expected = format!(
        "# Generated by `make manifests` (helm template driftless charts/driftless --namespace driftless --kube-version 1.33.0); do not edit.\n{}",
        String::from_utf8(out.stdout).unwrap()
    );
    let on_disk =
        std::fs::read_to_string(repo_root().join("config/default/driftless.yaml")).unwrap();
    assert!(
        on_disk == expected,
        "config/default/driftless.yaml is stale: run `make manifests` and commit"
    );
    let kubectl = helm.with_file_name("kubectl");
    let out = Command::new(&kubectl)
        .args(["kustomize", "config/default"])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|err| panic!("running {}: {err}", kubectl.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = parse_docs(&String::from_utf8(out.stdout).unwrap());
    let count = |kind: &str| all_of_kind(&docs, kind).len();
    assert_eq!(count("CustomResourceDefinition"), 5);
    assert_eq!(count("Deployment"), 1);
    assert_eq!(count("DaemonSet"), 1);
    assert_eq!(count("Namespace"), 1);
    for doc in docs
        .iter()
        .filter(|d| kind_of(d) == "Deployment" || kind_of(d) == "DaemonSet")
    {
        assert_eq!(
            doc["metadata"]["namespace"],
            "driftless",
            "{}",
            name_of(doc)
        );
    }
}
