//! The Kubernetes API calls the node agent makes in cluster mode, in one table.
//!
//! The agent's client refuses (in its request layer) any call that is not in this table, the
//! chart's agent RBAC is checked against it, and the end-to-end test compares it with the calls
//! the agents really made. So the RBAC the chart grants is derived from what the code calls.

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Cluster-wide (a ClusterRole).
    Cluster,
    /// The namespace the node reports go to (the release namespace).
    Reports,
    /// The namespace Secrets are read from (`secretsNamespace`).
    Secrets,
    /// `default`: where Events about cluster-scoped objects (Nodes) are written.
    NodeEvents,
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

/// The call table's entry for a request, if the request is one the agent may make.
pub fn agent_allows(group: &str, resource: &str, verb: &str) -> bool {
    AGENT_API_CALLS
        .iter()
        .any(|c| c.group == group && c.resource == resource && c.verbs.contains(&verb))
}
