//! The Kubernetes API calls each Driftless component makes, one table per ServiceAccount the
//! chart creates: the node agent ([`AGENT_API_CALLS`]), the operator ([`OPERATOR_API_CALLS`])
//! and the scan runner ([`RUNNER_API_CALLS`]).
//!
//! Each component's client classifies every request ([`classify`]) and refuses, before it
//! leaves the process, any call that is not in its table; the chart's RBAC is compared with the
//! tables (nothing missing, nothing extra), and end-to-end tests run the components on a real
//! API server with exactly the chart's RBAC. So the RBAC the chart grants is derived from what
//! the code calls.

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Cluster-wide (a ClusterRole).
    Cluster,
    /// The namespace the node reports go to (the release namespace).
    Reports,
    /// The namespace Secrets are read from (`secretsNamespace`).
    Secrets,
    /// `default`: where Events about cluster-scoped objects (Nodes, ApplyPolicies) are written.
    NodeEvents,
    /// Each scan namespace (`--scan-namespace`, the chart's `scanRunner.namespaces`): where the
    /// operator acts on DriftScans, and where scan runners run.
    Scans,
    /// The operator's namespace (the release namespace), its leader Lease only: `get` and
    /// `update` are narrowed to the Lease's name (`resourceNames`), `create` cannot be.
    Leader,
}

/// One API resource the agent uses and the verbs it uses on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiCall {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// Resource (plural), with `/subresource` when it is one.
    pub resource: &'static str,
    /// Verbs, as RBAC names them.
    pub verbs: &'static [&'static str],
    /// Where.
    pub scope: Scope,
}

/// Label of the ControllerRevisions holding ApplyPolicy revisions: their policy's uid.
pub const REVISION_POLICY_UID_LABEL: &str = "driftless.dev/policy-uid";

/// Namespace of Events about Nodes (Kubernetes puts Events about cluster-scoped objects there).
pub const NODE_EVENTS_NAMESPACE: &str = "default";

/// Every call the node agent makes in cluster mode.
pub const AGENT_API_CALLS: &[ApiCall] = &[
    // The three policy kinds: one watch each (list, then watch).
    ApiCall {
        group: "driftless.dev",
        resource: "applypolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "factspolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "logpipelines",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // Its own Node (a field selector on metadata.name): labels for nodeSelector, uid for Events.
    ApiCall {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // The Secret keys policies name in spec.secrets, one GET per key, never list or watch.
    ApiCall {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        scope: Scope::Secrets,
    },
    // Its node's DriftReport, by server-side apply (a PATCH that creates it when missing), and
    // one watch on it (field selector on its name) for the revisions the operator assigned.
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports",
        verbs: &["create", "patch", "list", "watch"],
        scope: Scope::Reports,
    },
    // The ApplyPolicy revisions (ControllerRevisions labelled with their policy's uid).
    ApiCall {
        group: "apps",
        resource: "controllerrevisions",
        verbs: &["list", "watch"],
        scope: Scope::Reports,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports/status",
        verbs: &["patch"],
        scope: Scope::Reports,
    },
    // Events on its Node (a new Event, then PATCHes of its series count).
    ApiCall {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::NodeEvents,
    },
];

/// Every call the operator (`driftless-operator run`) makes.
pub const OPERATOR_API_CALLS: &[ApiCall] = &[
    // Startup check that the driftless.dev CRDs are installed: one GET per CRD
    // (operator/src/preflight.rs, `check_crds`).
    ApiCall {
        group: "apiextensions.k8s.io",
        resource: "customresourcedefinitions",
        verbs: &["get"],
        scope: Scope::Cluster,
    },
    // Leader election (operator/src/leader.rs): read the Lease, create it when missing, renew,
    // take over and release it with a PUT carrying its resourceVersion.
    ApiCall {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        scope: Scope::Leader,
    },
    // The policy status controller's caches of the three policy kinds
    // (operator/src/policy/controller.rs, `watch_policies`: a reflector each) ...
    ApiCall {
        group: "driftless.dev",
        resource: "applypolicies",
        verbs: &["list", "watch", "get"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "factspolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "logpipelines",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // ... (the `get` above: the rollout reads an ApplyPolicy's full spec once per spec change to
    // store it as a revision, `PolicyStatusController::rollout_all`) and their status, by
    // server-side apply (`PolicyStatusController::write`).
    ApiCall {
        group: "driftless.dev",
        resource: "applypolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "factspolicies/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "logpipelines/status",
        verbs: &["patch"],
        scope: Scope::Cluster,
    },
    // Nodes: which ones each policy's nodeSelector targets, which are Ready or cordoned
    // (policy/controller.rs: a reflector).
    ApiCall {
        group: "",
        resource: "nodes",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // DriftReports: the scan controller's cache of scan reports in every namespace
    // (scan/controller.rs, `ScanController::start`), and the policy controller's cache of the
    // node reports in the release namespace (covered by the same cluster-wide grant).
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // DriftScans and scan Jobs: the scan controller's caches (reflectors in every namespace;
    // DriftScans outside the scan namespaces are dropped on arrival), and the Jobs of one
    // DriftScan's run listed in its namespace (scan/controller.rs, `run_jobs`).
    ApiCall {
        group: "driftless.dev",
        resource: "driftscans",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    ApiCall {
        group: "batch",
        resource: "jobs",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // NotificationPolicies: the notification controller's cache (notify/controller.rs, a
    // reflector in every namespace; policies outside the scan namespaces are ignored).
    ApiCall {
        group: "driftless.dev",
        resource: "notificationpolicies",
        verbs: &["list", "watch"],
        scope: Scope::Cluster,
    },
    // Rollout (policy/controller.rs, `PolicyStatusController::rollout_all`): the ApplyPolicy
    // revisions (ControllerRevisions: a reflector, create, renumber by merge patch, delete of
    // old ones) and the revision each node may run (spec.revisions of its node report, by
    // server-side apply, which creates the report when the agent has not written it yet).
    ApiCall {
        group: "apps",
        resource: "controllerrevisions",
        verbs: &["list", "watch", "create", "patch", "delete"],
        scope: Scope::Reports,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports",
        verbs: &["create", "patch"],
        scope: Scope::Reports,
    },
    // Events about ApplyPolicy rollouts stopped at a failed health gate (kube-runtime's
    // Recorder: a new Event, then PATCHes of its series); the policy is cluster-scoped, so its
    // Events are in `default`.
    ApiCall {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::NodeEvents,
    },
    // In each scan namespace only (scan/tenancy.rs: DriftScans elsewhere never enter the
    // caches): the webhook tokens (scan/webhook/tokens.rs) and Git credentials for stack
    // discovery (repo.rs, `secret_value`) its DriftScans name, one GET each, never listed ...
    ApiCall {
        group: "",
        resource: "secrets",
        verbs: &["get"],
        scope: Scope::Scans,
    },
    // ... its scan Jobs, created and deleted once their run is over (scan/controller.rs,
    // `act`) ...
    ApiCall {
        group: "batch",
        resource: "jobs",
        verbs: &["create", "delete"],
        scope: Scope::Scans,
    },
    // ... the DriftScan re-read after a conflicting webhook trigger and a stack's report read
    // by the webhook API (scan/webhook.rs) ...
    ApiCall {
        group: "driftless.dev",
        resource: "driftscans",
        verbs: &["get"],
        scope: Scope::Scans,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports",
        verbs: &["get"],
        scope: Scope::Scans,
    },
    // ... the DriftScans' status, by server-side apply (scan/controller.rs, `apply_status`) ...
    ApiCall {
        group: "driftless.dev",
        resource: "driftscans/status",
        verbs: &["patch"],
        scope: Scope::Scans,
    },
    // ... the NotificationPolicy read fresh before its status (the delivery state) is replaced,
    // conditionally on that read's resourceVersion (notify/controller.rs; receiver Secrets are
    // the `secrets` GET above) ...
    ApiCall {
        group: "driftless.dev",
        resource: "notificationpolicies",
        verbs: &["get"],
        scope: Scope::Scans,
    },
    ApiCall {
        group: "driftless.dev",
        resource: "notificationpolicies/status",
        verbs: &["update"],
        scope: Scope::Scans,
    },
    // ... and Events about DriftScans and NotificationPolicies (the `event` receiver), by
    // kube-runtime's Recorder.
    ApiCall {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        scope: Scope::Scans,
    },
];

/// Grants the operator needs that none of its requests uses directly: the API server checks
/// them while admitting one of the calls above. Not allowed by the operator's client.
pub const OPERATOR_ADMISSION_GRANTS: &[ApiCall] = &[
    // A scan Job carries an owner reference to its DriftScan with blockOwnerDeletion; where the
    // OwnerReferencesPermissionEnforcement admission plugin is on, creating it needs this on
    // the owner (in the Job's namespace).
    ApiCall {
        group: "driftless.dev",
        resource: "driftscans/finalizers",
        verbs: &["update"],
        scope: Scope::Scans,
    },
];

/// Every call a scan runner (`driftless-operator scan-runner` in a scan Job) makes, all in its
/// DriftScan's namespace (operator/src/runner/mod.rs). No Secret: the Secrets its DriftScan
/// names are mounted into its pod (`--secrets-dir`).
pub const RUNNER_API_CALLS: &[ApiCall] = &[
    // Its DriftScan (`scan`), once.
    ApiCall {
        group: "driftless.dev",
        resource: "driftscans",
        verbs: &["get"],
        scope: Scope::Scans,
    },
    // Each stack's report: the previous one read for its history (`Io::previous`), then
    // written by server-side apply, which creates it when missing (`Io::write`) ...
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports",
        verbs: &["get", "create", "patch"],
        scope: Scope::Scans,
    },
    // ... and its status, by server-side apply.
    ApiCall {
        group: "driftless.dev",
        resource: "driftreports/status",
        verbs: &["patch"],
        scope: Scope::Scans,
    },
];

/// The call table's entry for a request, if the request is one the agent may make.
pub fn agent_allows(group: &str, resource: &str, verb: &str) -> bool {
    allows(AGENT_API_CALLS, group, resource, verb)
}

/// Whether `table` holds `verb` on `resource` of `group`, in any scope.
pub fn allows(table: &[ApiCall], group: &str, resource: &str, verb: &str) -> bool {
    table
        .iter()
        .any(|c| c.group == group && c.resource == resource && c.verbs.contains(&verb))
}

/// Whether `table` allows `call` in the place it goes to: `in_scope(scope, namespace)` says
/// whether a namespaced request to `namespace` falls in `scope`. A [`Scope::Cluster`] entry
/// allows the call in every namespace and cluster-wide (a ClusterRole); any other entry only
/// in a namespace it covers.
pub fn permits(table: &[ApiCall], call: &Call, in_scope: impl Fn(Scope, &str) -> bool) -> bool {
    table.iter().any(|c| {
        c.group == call.group
            && c.resource == call.resource
            && c.verbs.contains(&call.verb.as_str())
            && match (c.scope, call.namespace.as_deref()) {
                (Scope::Cluster, _) => true,
                (_, None) => false,
                (scope, Some(ns)) => in_scope(scope, ns),
            }
    })
}

/// One classified request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    /// RBAC verb (`get`, `list`, `watch`, `create`, `patch`, `update`, `delete`).
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Resource, with `/subresource`.
    pub resource: String,
    /// Namespace, when namespaced.
    pub namespace: Option<String>,
}

impl std::fmt::Display for Call {
    /// `verb resource.group [in namespace]`, as RBAC names them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)?;
        if !self.group.is_empty() {
            write!(f, ".{}", self.group)?;
        }
        match &self.namespace {
            Some(ns) => write!(f, " in namespace {ns}"),
            None => write!(f, " cluster-wide"),
        }
    }
}

/// Classifies a request by method, path and query, the way the API server's RBAC authorizer
/// does. Pure. `None` for paths that are not resource requests (discovery, `/version`).
pub fn classify(method: &str, path: &str, query: &str) -> Option<Call> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => return None,
    };
    let watch = query
        .split('&')
        .any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, name) {
        ("GET", _) if watch => "watch",
        ("GET", Some(_)) => "get",
        ("GET", None) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", Some(_)) => "delete",
        ("DELETE", None) => "deletecollection",
        _ => return None,
    };
    let resource = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_owned(),
    };
    Some(Call {
        verb: verb.to_owned(),
        group: group.to_owned(),
        resource,
        namespace,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(verb: &str, group: &str, resource: &str, ns: Option<&str>) -> Option<Call> {
        Some(Call {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: ns.map(Into::into),
        })
    }

    #[test]
    fn classifies_requests_as_rbac_does() {
        assert_eq!(
            classify(
                "GET",
                "/apis/driftless.dev/v1alpha1/applypolicies",
                "limit=500"
            ),
            c("list", "driftless.dev", "applypolicies", None)
        );
        assert_eq!(
            classify(
                "GET",
                "/apis/driftless.dev/v1alpha1/applypolicies",
                "watch=true&resourceVersion=5"
            ),
            c("watch", "driftless.dev", "applypolicies", None)
        );
        assert_eq!(
            classify("GET", "/api/v1/namespaces/driftless/secrets/motd", ""),
            c("get", "", "secrets", Some("driftless"))
        );
        assert_eq!(
            classify(
                "PATCH",
                "/apis/driftless.dev/v1alpha1/namespaces/driftless/driftreports/node-a/status",
                "fieldManager=driftless-agent&force=true"
            ),
            c(
                "patch",
                "driftless.dev",
                "driftreports/status",
                Some("driftless")
            )
        );
        assert_eq!(
            classify(
                "PUT",
                "/apis/coordination.k8s.io/v1/namespaces/ops/leases/driftless-operator",
                ""
            ),
            c("update", "coordination.k8s.io", "leases", Some("ops"))
        );
        assert_eq!(
            classify("DELETE", "/apis/batch/v1/namespaces/team-a/jobs/j", ""),
            c("delete", "batch", "jobs", Some("team-a"))
        );
        assert_eq!(
            classify("DELETE", "/apis/batch/v1/namespaces/team-a/jobs", ""),
            c("deletecollection", "batch", "jobs", Some("team-a"))
        );
        assert_eq!(
            classify("GET", "/api/v1/nodes", "fieldSelector=metadata.name%3Da"),
            c("list", "", "nodes", None)
        );
        assert_eq!(
            classify(
                "POST",
                "/apis/events.k8s.io/v1/namespaces/default/events",
                ""
            ),
            c("create", "events.k8s.io", "events", Some("default"))
        );
        assert_eq!(classify("GET", "/version", ""), None);
        assert_eq!(classify("GET", "/apis/driftless.dev/v1alpha1", ""), None);
        // A namespace object itself is a cluster-scoped resource.
        assert_eq!(
            classify("GET", "/api/v1/namespaces/driftless", ""),
            c("get", "", "namespaces", None)
        );
    }

    #[test]
    fn permits_a_call_only_in_its_scope() {
        let in_scope = |scope: Scope, ns: &str| match scope {
            Scope::Scans => ns == "team-a",
            Scope::Reports | Scope::Leader => ns == "ops",
            Scope::NodeEvents => ns == NODE_EVENTS_NAMESPACE,
            _ => false,
        };
        let ok = |method: &str, path: &str| {
            let call = classify(method, path, "").expect("a resource request");
            permits(OPERATOR_API_CALLS, &call, in_scope)
        };
        assert!(ok("GET", "/api/v1/namespaces/team-a/secrets/token"));
        assert!(!ok("GET", "/api/v1/namespaces/ops/secrets/token"));
        assert!(
            !ok("GET", "/api/v1/namespaces/team-a/secrets"),
            "never listed"
        );
        assert!(ok("POST", "/apis/batch/v1/namespaces/team-a/jobs"));
        assert!(!ok("POST", "/apis/batch/v1/namespaces/team-b/jobs"));
        // A cluster-wide entry covers every namespace; a namespaced one never the whole cluster.
        assert!(ok("GET", "/apis/batch/v1/namespaces/team-b/jobs"));
        assert!(!ok("GET", "/api/v1/secrets/token"));
        assert!(ok(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/driftless-operator"
        ));
        assert!(!ok(
            "DELETE",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/driftless-operator"
        ));
        assert!(ok(
            "POST",
            "/apis/events.k8s.io/v1/namespaces/default/events"
        ));
        assert!(!ok("POST", "/apis/events.k8s.io/v1/namespaces/ops/events"));
        // The admission-only grant is no request the operator makes.
        assert!(!ok(
            "PUT",
            "/apis/driftless.dev/v1alpha1/namespaces/team-a/driftscans/s/finalizers"
        ));
    }

    #[test]
    fn tables_hold_each_verb_once_per_scope_and_no_wildcards() {
        for table in [AGENT_API_CALLS, OPERATOR_API_CALLS, RUNNER_API_CALLS] {
            let mut seen = std::collections::BTreeSet::new();
            for c in table {
                for verb in c.verbs {
                    assert_ne!(*verb, "*");
                    assert!(
                        seen.insert((c.scope, c.group, c.resource, *verb)),
                        "{c:?}: {verb} twice"
                    );
                }
                assert_ne!(c.resource, "*");
            }
        }
    }
}
