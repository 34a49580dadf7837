//! The operator's HTTP endpoints: `/healthz`, `/readyz` and `/metrics`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// The peer address of a connection, plain or TLS (`into_make_service_with_connect_info`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

impl Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<axum::serve::IncomingStream<'_, crate::tls::TlsListener>> for ClientAddr {
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::TlsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// State shared by the handlers.
pub struct HttpState {
    /// The operator's metrics.
    pub registry: Registry,
    /// Set once the preflight checks passed and the operator is serving.
    pub ready: AtomicBool,
}

impl HttpState {
    /// A registry with the build info metric (`driftless_operator_build_info`). The registry
    /// has no prefix: components register under `sub_registry_with_prefix("driftless")`.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        registry.register(
            "driftless_operator_build",
            "Driftless operator build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Self {
            registry,
            ready: AtomicBool::new(false),
        }
    }
}

impl Default for HttpState {
    fn default() -> Self {
        Self::new()
    }
}

/// The router.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn readyz(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn metrics(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::metrics::ScanMetrics;

    #[test]
    fn metric_names_carry_one_prefix() {
        let mut state = HttpState::new();
        let scan = ScanMetrics::register(state.registry.sub_registry_with_prefix("driftless"));
        scan.queue_depth.set(2);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &state.registry).unwrap();
        assert!(
            out.contains(&format!(
                r#"driftless_operator_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            )),
            "{out}"
        );
        assert!(out.contains("\ndriftless_scan_queue_depth 2"), "{out}");
    }
}
