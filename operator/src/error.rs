//! The operator's error type.

/// Everything that can go wrong in the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The Driftless CRDs are not (all) installed.
    #[error("the API server at {server} lacks the Driftless CRDs {missing}; install them with `kubectl apply --server-side -f config/crd/bases` or `helm install driftless charts/driftless`")]
    MissingCrds {
        /// API server URL.
        server: String,
        /// Comma-separated CRD names.
        missing: String,
    },
    /// The HTTP server's certificate or key cannot be used.
    #[error("TLS: {path}: {reason}")]
    Tls {
        /// The file (`--tls-cert` or `--tls-key`).
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::MissingCrds { .. } => "missing_crds",
            Error::Tls { .. } => "tls",
        }
    }
}
