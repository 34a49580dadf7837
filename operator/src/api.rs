//! The operator's and the scan runner's Kubernetes clients: every request is classified
//! ([`rbac::classify`]: verb, group, resource, namespace) and refused before it leaves the
//! process unless its component's call table allows it there
//! ([`rbac::OPERATOR_API_CALLS`], [`rbac::RUNNER_API_CALLS`]). The chart's RBAC is derived from
//! the same tables, so neither can start depending on a permission the chart does not grant.
//!
//! Each request allowed is logged at `debug` (`kube request`), each refused one at `warn`
//! (`kube request refused`), with its verb, resource and namespace.

use std::collections::BTreeSet;
use std::sync::Arc;

use driftless_crds::rbac::{self, ApiCall, Call, Scope};

/// Where a component's scopes are: which namespaces each [`Scope`] of its table covers.
#[derive(Clone, Debug)]
pub struct Places {
    /// The component's name in errors (`operator`, `scan runner`).
    pub component: &'static str,
    /// Its call table.
    pub table: &'static [ApiCall],
    /// The operator's namespace: node reports, revisions and the leader Lease.
    pub namespace: String,
    /// The scan namespaces.
    pub scan_namespaces: BTreeSet<String>,
}

impl Places {
    /// The operator (`driftless-operator run`) in `namespace`, acting on DriftScans in
    /// `scan_namespaces`.
    pub fn operator(namespace: &str, scan_namespaces: BTreeSet<String>) -> Self {
        Places {
            component: "operator",
            table: rbac::OPERATOR_API_CALLS,
            namespace: namespace.to_owned(),
            scan_namespaces,
        }
    }

    /// A scan runner for a DriftScan in `namespace`.
    pub fn runner(namespace: &str) -> Self {
        Places {
            component: "scan runner",
            table: rbac::RUNNER_API_CALLS,
            namespace: namespace.to_owned(),
            scan_namespaces: BTreeSet::from([namespace.to_owned()]),
        }
    }

    fn covers(&self, scope: Scope, namespace: &str) -> bool {
        match scope {
            Scope::Cluster => true,
            Scope::Reports | Scope::Leader => namespace == self.namespace,
            Scope::Scans => self.scan_namespaces.contains(namespace),
            Scope::NodeEvents => namespace == rbac::NODE_EVENTS_NAMESPACE,
            // The agent's Secrets namespace: no operator call goes there.
            Scope::Secrets => false,
        }
    }

    /// Whether the table allows `call` where it goes.
    pub fn permits(&self, call: &Call) -> bool {
        rbac::permits(self.table, call, |scope, ns| self.covers(scope, ns))
    }
}

/// Why a request was refused: the call, as RBAC names it.
#[derive(Debug, thiserror::Error)]
#[error("the {component} does not make this Kubernetes API call (not in its call table, so not granted by the chart's RBAC): {call}")]
pub struct Refused {
    component: &'static str,
    call: Call,
}

/// Checks one request: `Err` unless the table allows it where it goes. Requests that are no
/// resource request (discovery, `/version`) pass.
pub fn guard<B>(
    places: &Places,
    request: ::http::Request<B>,
) -> Result<::http::Request<B>, Refused> {
    let uri = request.uri();
    let Some(call) = rbac::classify(
        request.method().as_str(),
        uri.path(),
        uri.query().unwrap_or_default(),
    ) else {
        return Ok(request);
    };
    if places.permits(&call) {
        tracing::debug!(verb = %call.verb, group = %call.group, resource = %call.resource,
            namespace = call.namespace.as_deref().unwrap_or(""), "kube request");
        Ok(request)
    } else {
        tracing::warn!(verb = %call.verb, group = %call.group, resource = %call.resource,
            namespace = call.namespace.as_deref().unwrap_or(""), "kube request refused");
        Err(Refused {
            component: places.component,
            call,
        })
    }
}

/// A client for `config` whose requests go through [`guard`].
pub fn client(config: kube::Config, places: Places) -> Result<kube::Client, kube::Error> {
    let places = Arc::new(places);
    let layer = tower::filter::FilterLayer::new(move |request| guard(&places, request));
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, uri: &str) -> ::http::Request<()> {
        ::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
    }

    fn operator() -> Places {
        Places::operator("ops", BTreeSet::from(["team-a".to_owned()]))
    }

    #[test]
    fn the_operator_may_make_its_calls_where_they_go_and_no_other() {
        let ok = |method: &str, uri: &str| guard(&operator(), request(method, uri)).is_ok();
        assert!(ok(
            "GET",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/driftscans.driftless.dev"
        ));
        assert!(ok(
            "GET",
            "/apis/driftless.dev/v1alpha1/driftscans?watch=true"
        ));
        assert!(ok("POST", "/apis/batch/v1/namespaces/team-a/jobs"));
        assert!(ok("GET", "/api/v1/namespaces/team-a/secrets/git"));
        assert!(ok(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/driftless-operator"
        ));
        assert!(ok(
            "PATCH",
            "/apis/driftless.dev/v1alpha1/namespaces/ops/driftreports/node-a"
        ));
        assert!(ok("GET", "/version"), "no resource request");
        // Secrets outside the scan namespaces, never listed, never written.
        assert!(!ok("GET", "/api/v1/namespaces/ops/secrets/git"));
        assert!(!ok("GET", "/api/v1/namespaces/team-a/secrets"));
        assert!(!ok("PUT", "/api/v1/namespaces/team-a/secrets/git"));
        // Jobs only in the scan namespaces; nothing the code does not do.
        assert!(!ok("POST", "/apis/batch/v1/namespaces/team-b/jobs"));
        assert!(!ok("GET", "/api/v1/nodes/a"));
        assert!(!ok("PATCH", "/api/v1/nodes/a"));
        assert!(!ok(
            "DELETE",
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/driftless-operator"
        ));
        assert!(!ok(
            "PATCH",
            "/apis/driftless.dev/v1alpha1/applypolicies/web"
        ));
    }

    #[test]
    fn a_refusal_names_the_call() {
        let err = guard(
            &operator(),
            request("DELETE", "/api/v1/namespaces/ops/secrets/git"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("operator"), "{err}");
        assert!(err.contains("delete secrets in namespace ops"), "{err}");
        let err = guard(
            &Places::runner("team-a"),
            request("GET", "/api/v1/namespaces/team-a/secrets/git"),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("scan runner"), "{err}");
        assert!(err.contains("get secrets in namespace team-a"), "{err}");
    }

    #[test]
    fn the_runner_may_only_touch_its_scan_and_reports_in_its_namespace() {
        let ok = |method: &str, uri: &str| {
            guard(&Places::runner("team-a"), request(method, uri)).is_ok()
        };
        assert!(ok(
            "GET",
            "/apis/driftless.dev/v1alpha1/namespaces/team-a/driftscans/s"
        ));
        assert!(ok(
            "PATCH",
            "/apis/driftless.dev/v1alpha1/namespaces/team-a/driftreports/r/status"
        ));
        assert!(!ok(
            "GET",
            "/apis/driftless.dev/v1alpha1/namespaces/team-b/driftscans/s"
        ));
        assert!(!ok("GET", "/apis/driftless.dev/v1alpha1/driftscans"));
    }

    /// The guard sits in the client's request path: a refused call never reaches the server
    /// and comes back as an error naming it.
    #[tokio::test]
    async fn a_client_refuses_before_the_request_leaves() {
        let (service, mut handle) = tower_test::mock::pair::<
            ::http::Request<kube::client::Body>,
            ::http::Response<kube::client::Body>,
        >();
        let places = Arc::new(operator());
        let service = tower::ServiceBuilder::new()
            .layer(tower::filter::FilterLayer::new(move |r| guard(&places, r)))
            .service(service);
        let client = kube::Client::new(service, "default");
        let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client, "ops");
        let err = secrets.get("git").await.unwrap_err().to_string();
        assert!(err.contains("get secrets in namespace ops"), "{err}");
        // Nothing reached the mock server.
        let reached =
            tokio::time::timeout(std::time::Duration::from_millis(100), handle.next_request())
                .await;
        assert!(
            !matches!(reached, Ok(Some(_))),
            "the refused request was sent"
        );
    }
}
