//! The agent's Kubernetes client: every request is classified (verb, group, resource), counted
//! in `driftless_kube_requests_total`, and refused before it leaves the process unless it is
//! in [`driftless_crds::rbac::AGENT_API_CALLS`]. The chart's RBAC is checked against the same
//! table, so the agent cannot start depending on a permission the chart does not grant.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use driftless_crds::rbac;

use crate::metrics::{Family, Kind, MetricsSource};

pub use driftless_crds::rbac::{classify, Call};

/// Counts of the requests made, by verb and resource; shared with `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct Requests(Arc<Mutex<BTreeMap<(String, String), u64>>>);

impl Requests {
    fn count(&self, call: &Call) {
        if let Ok(mut m) = self.0.lock() {
            let resource = if call.group.is_empty() {
                call.resource.clone()
            } else {
                format!("{}.{}", call.resource, call.group)
            };
            *m.entry((call.verb.clone(), resource)).or_default() += 1;
        }
    }

    /// Every (verb, resource.group) seen and how often.
    pub fn snapshot(&self) -> BTreeMap<(String, String), u64> {
        self.0.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

impl MetricsSource for Requests {
    fn encode(&self, out: &mut String) {
        let mut family = Family::new(
            "driftless_kube_requests_total",
            "Requests the agent made to the Kubernetes API server, by verb and resource",
            Kind::Counter,
        );
        for ((verb, resource), n) in self.snapshot() {
            family.push(vec![("verb", verb), ("resource", resource)], n as f64);
        }
        family.encode(out);
    }
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
#[error("the agent does not make this request: {0}")]
pub struct Refused(String);

/// Checks and counts one request: `Err` unless the table allows it.
pub fn guard<B>(
    requests: &Requests,
    request: http::Request<B>,
) -> Result<http::Request<B>, Refused> {
    let uri = request.uri();
    let call = classify(
        request.method().as_str(),
        uri.path(),
        uri.query().unwrap_or_default(),
    );
    match call {
        Some(call) if rbac::agent_allows(&call.group, &call.resource, &call.verb) => {
            requests.count(&call);
            Ok(request)
        }
        Some(call) => Err(Refused(format!(
            "{} {}{}{}",
            call.verb,
            call.resource,
            if call.group.is_empty() { "" } else { "." },
            call.group
        ))),
        // Discovery and version requests carry no data.
        None => Ok(request),
    }
}

/// The layer that puts [`guard`] in front of a client's service.
pub fn layer(
    requests: Requests,
) -> tower::filter::FilterLayer<
    impl Fn(http::Request<kube::client::Body>) -> Result<http::Request<kube::client::Body>, Refused>
        + Clone,
> {
    tower::filter::FilterLayer::new(move |request: http::Request<kube::client::Body>| {
        guard(&requests, request)
    })
}

/// A client for `config` whose requests go through [`guard`].
pub fn client(config: kube::Config, requests: Requests) -> anyhow::Result<kube::Client> {
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer(requests))
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_the_table_does_not_hold_and_counts_what_it_does() {
        let requests = Requests::default();
        let get = |uri: &str, method: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
        };
        assert!(guard(
            &requests,
            get("/api/v1/namespaces/driftless/secrets", "GET")
        )
        .is_err());
        assert!(guard(
            &requests,
            get("/api/v1/namespaces/driftless/secrets/s", "DELETE")
        )
        .is_err());
        assert!(
            guard(&requests, get("/api/v1/nodes/a", "GET")).is_err(),
            "get nodes is not needed"
        );
        assert!(guard(
            &requests,
            get("/api/v1/namespaces/driftless/secrets/s", "GET")
        )
        .is_ok());
        assert!(guard(&requests, get("/api/v1/nodes?watch=true", "GET")).is_ok());
        let seen = requests.snapshot();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[&("get".to_owned(), "secrets".to_owned())], 1);
    }
}
