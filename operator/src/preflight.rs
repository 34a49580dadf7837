//! Start-up checks against the API server.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};

use crate::error::Error;

/// Names of the CRDs the operator needs (`applypolicies.driftless.dev`, ...).
pub fn required_crds() -> Vec<String> {
    driftless_crds::generate::crds()
        .into_iter()
        .filter_map(|crd| crd.metadata.name)
        .collect()
}

/// Which required CRDs are missing or not yet established, given what the server returned.
pub fn missing<'a>(
    required: &'a [String],
    found: &[Option<CustomResourceDefinition>],
) -> Vec<&'a str> {
    required
        .iter()
        .zip(found)
        .filter(|(_, crd)| !crd.as_ref().is_some_and(is_established))
        .map(|(name, _)| name.as_str())
        .collect()
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Fails with [`Error::MissingCrds`] unless every Driftless CRD is installed and established.
pub async fn check_crds(client: &Client, server: &str) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let required = required_crds();
    let mut found = Vec::with_capacity(required.len());
    for name in &required {
        found.push(api.get_opt(name).await?);
    }
    let missing = missing(&required, &found);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::MissingCrds {
            server: server.to_owned(),
            missing: missing.join(", "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;

    fn established(name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {"group": "driftless.dev", "scope": "Cluster", "names": {"plural": "x", "kind": "X"}, "versions": []},
            "status": {"conditions": [{"type": "Established", "status": "True"}], "acceptedNames": {"plural": "x", "kind": "X"}, "storedVersions": []}
        })
    }

    /// Serves the CRD GETs: every CRD exists except `absent`.
    async fn serve(
        mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
        absent: &str,
    ) -> Vec<String> {
        let mut paths = Vec::new();
        for _ in required_crds() {
            let (request, send) = handle.next_request().await.expect("a request");
            assert_eq!(request.method(), http::Method::GET);
            let path = request.uri().path().to_owned();
            let name = path.rsplit('/').next().unwrap_or_default().to_owned();
            let response = if name == absent {
                let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
                Response::builder()
                    .status(404)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
            } else {
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&established(&name)).unwrap()))
            };
            send.send_response(response.unwrap());
            paths.push(path);
        }
        paths
    }

    #[tokio::test]
    async fn missing_crd_is_named() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let server = tokio::spawn(serve(handle, "driftscans.driftless.dev"));
        let err = check_crds(&client, "https://127.0.0.1:6443")
            .await
            .unwrap_err();
        let paths = server.await.unwrap();
        assert_eq!(
            paths[0],
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/applypolicies.driftless.dev"
        );
        assert_eq!(err.metric_label(), "missing_crds");
        assert!(
            err.to_string().starts_with(
                "the API server at https://127.0.0.1:6443 lacks the Driftless CRDs driftscans.driftless.dev;"
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn all_crds_installed_passes() {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let server = tokio::spawn(serve(handle, ""));
        check_crds(&client, "https://x").await.unwrap();
        // One GET per Driftless CRD.
        assert_eq!(
            server.await.unwrap().len(),
            driftless_crds::generate::crds().len()
        );
    }

    #[test]
    fn crd_without_established_condition_counts_as_missing() {
        let required = vec!["a.driftless.dev".to_owned(), "b.driftless.dev".to_owned()];
        let mut pending: CustomResourceDefinition =
            serde_json::from_value(established("a.driftless.dev")).unwrap();
        pending.status = None;
        assert_eq!(
            missing(&required, &[Some(pending), None]),
            ["a.driftless.dev", "b.driftless.dev"]
        );
    }
}
