//! The agent's HTTP endpoints: `/healthz` and `/metrics`.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::config::Config;

/// Label set of metrics per resource kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Resource kind.
    pub kind: String,
}

/// Label set of reload outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success` or `failure`.
    pub result: String,
}

/// The agent's own metrics.
pub struct Metrics {
    registry: Registry,
    resources: Family<KindLabels, Gauge>,
    reloads: Family<ResultLabels, Counter>,
    last_reload_success: Gauge,
    last_reload_timestamp: Gauge,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("driftless");
        registry.register(
            "build",
            "Driftless agent build information",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        let resources = Family::<KindLabels, Gauge>::default();
        registry.register(
            "config_resources",
            "Resources in the loaded configuration, by kind",
            resources.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration loads, by result",
            reloads.clone(),
        );
        let last_reload_success = Gauge::default();
        registry.register(
            "config_last_reload_successful",
            "Whether the last configuration load succeeded (1) or was refused (0)",
            last_reload_success.clone(),
        );
        let last_reload_timestamp = Gauge::default();
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            last_reload_timestamp.clone(),
        );
        Self {
            registry,
            resources,
            reloads,
            last_reload_success,
            last_reload_timestamp,
        }
    }

    /// Records a configuration load.
    pub fn config_loaded(&self, outcome: Result<&Config, ()>) {
        let result = if outcome.is_ok() {
            "success"
        } else {
            "failure"
        };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
        self.last_reload_success.set(i64::from(outcome.is_ok()));
        if let Ok(config) = outcome {
            for (kind, count) in config.counts() {
                self.resources
                    .get_or_create(&KindLabels { kind: kind.into() })
                    .set(count as i64);
            }
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default();
            self.last_reload_timestamp.set(now);
        }
    }

    /// The exposition in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// State shared by the handlers.
pub struct AppState {
    /// Metrics.
    pub metrics: Metrics,
    /// The configuration currently in force.
    pub config: Mutex<Config>,
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
