//! The agent's HTTP endpoints: `/healthz`, `/metrics` and `/report` (the node's DriftReport as
//! JSON: breached FactsPolicy thresholds and the history of breaches and clearings).
//!
//! `/metrics` serves the Prometheus text format 0.0.4 (what node_exporter serves): the node
//! collectors' families, the agent's own `driftless_*` metrics, and every registered
//! [`MetricsSource`]. Scrapes that arrive while a collection is running share its result
//! (single-flight), the body is gzipped when the client accepts it, and a failing collector only
//! shows as `node_scrape_collector_success{collector="..."} 0`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::facts::Scraper;
use crate::metrics::{self, Kind, MetricsSource};

/// The agent's own metrics (`driftless_build_info`, `driftless_config_*`, `process_*`).
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<AgentCounters>,
}

#[derive(Default)]
struct AgentCounters {
    resources: BTreeMap<String, usize>,
    reload_success: u64,
    reload_failure: u64,
    last_reload_success: bool,
    last_reload_timestamp: u64,
}

impl Metrics {
    /// No loads recorded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a configuration load.
    pub fn config_loaded(&self, outcome: Result<&Config, ()>) {
        let Ok(mut m) = self.inner.lock() else { return };
        m.last_reload_success = outcome.is_ok();
        match outcome {
            Ok(config) => {
                m.reload_success += 1;
                for (kind, count) in config.counts() {
                    m.resources.insert(kind.to_string(), count);
                }
                m.last_reload_timestamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or_default();
            }
            Err(()) => m.reload_failure += 1,
        }
    }

    /// The exposition of the agent's own metrics in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        MetricsSource::encode(self, &mut out);
        out
    }
}

impl MetricsSource for Metrics {
    fn encode(&self, out: &mut String) {
        let Ok(m) = self.inner.lock() else { return };
        metrics::write_family_header(
            out,
            "driftless_build_info",
            "Driftless agent build information",
            Kind::Gauge,
        );
        metrics::write_sample(
            out,
            "driftless_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        if !m.resources.is_empty() {
            metrics::write_family_header(
                out,
                "driftless_config_resources",
                "Resources in the loaded configuration, by kind",
                Kind::Gauge,
            );
            for (kind, count) in &m.resources {
                metrics::write_sample(
                    out,
                    "driftless_config_resources",
                    &[("kind", kind)],
                    *count as f64,
                );
            }
        }
        metrics::write_family_header(
            out,
            "driftless_config_reloads_total",
            "Configuration loads, by result",
            Kind::Counter,
        );
        for (result, n) in [("failure", m.reload_failure), ("success", m.reload_success)] {
            metrics::write_sample(
                out,
                "driftless_config_reloads_total",
                &[("result", result)],
                n as f64,
            );
        }
        metrics::write_family_header(
            out,
            "driftless_config_last_reload_successful",
            "Whether the last configuration load succeeded (1) or was refused (0)",
            Kind::Gauge,
        );
        metrics::write_sample(
            out,
            "driftless_config_last_reload_successful",
            &[],
            f64::from(u8::from(m.last_reload_success)),
        );
        metrics::write_family_header(
            out,
            "driftless_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            Kind::Gauge,
        );
        metrics::write_sample(
            out,
            "driftless_config_last_reload_success_timestamp_seconds",
            &[],
            m.last_reload_timestamp as f64,
        );
        drop(m);
        crate::process::encode(out);
    }
}

/// State shared by the handlers.
pub struct AppState {
    /// The agent's own metrics.
    pub metrics: Metrics,
    /// The configuration currently in force.
    pub config: Mutex<Config>,
    /// Node collectors run on every scrape (none when facts are off).
    pub scraper: RwLock<Option<Arc<Scraper>>>,
    facts: RwLock<Option<Arc<crate::facts::runtime::Facts>>>,
    node_status: RwLock<Option<Arc<crate::status::SharedStatus>>>,
    sources: RwLock<Vec<Arc<dyn MetricsSource>>>,
    flight: tokio::sync::Mutex<Option<Arc<Exposition>>>,
    completed: AtomicU64,
    collector: Mutex<Option<std::sync::mpsc::Sender<CollectJob>>>,
}

/// A collection for the collector thread: the state to collect and where the text goes.
type CollectJob = (Arc<AppState>, tokio::sync::oneshot::Sender<String>);

/// One collected exposition, shared by the scrapes that waited for it.
pub struct Exposition {
    /// The text.
    pub text: String,
    gzip: std::sync::OnceLock<Vec<u8>>,
}

impl AppState {
    /// State with the agent's metrics and the configuration in force; no scraper or sources yet.
    pub fn new(metrics: Metrics, config: Config) -> Self {
        Self {
            metrics,
            config: Mutex::new(config),
            scraper: RwLock::new(None),
            facts: RwLock::new(None),
            node_status: RwLock::new(None),
            sources: RwLock::new(Vec::new()),
            flight: tokio::sync::Mutex::new(None),
            completed: AtomicU64::new(0),
            collector: Mutex::new(None),
        }
    }

    /// Adds families to `/metrics` (the log pipeline's metrics, thresholds, ...).
    pub fn add_source(&self, source: Arc<dyn MetricsSource>) {
        if let Ok(mut sources) = self.sources.write() {
            sources.push(source);
        }
    }

    /// Sets the facts runtime (thresholds, S3 push) and adds its metrics to `/metrics`.
    pub fn set_facts(&self, facts: Arc<crate::facts::runtime::Facts>) {
        self.add_source(facts.clone());
        if let Ok(mut current) = self.facts.write() {
            *current = Some(facts);
        }
    }

    /// Sets the node's status, served at `/report`.
    pub fn set_node_status(&self, status: Arc<crate::status::SharedStatus>) {
        if let Ok(mut current) = self.node_status.write() {
            *current = Some(status);
        }
    }

    /// The facts runtime, when set.
    pub fn facts(&self) -> Option<Arc<crate::facts::runtime::Facts>> {
        self.facts.read().ok().and_then(|f| f.clone())
    }

    /// Sets the node collectors run on every scrape.
    pub fn set_scraper(&self, scraper: Option<Arc<Scraper>>) {
        if let Ok(mut current) = self.scraper.write() {
            *current = scraper;
        }
    }

    /// Collects the whole exposition now (blocking file reads).
    pub fn collect_now(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        let scraper = self.scraper.read().ok().and_then(|s| s.clone());
        if let Some(scraper) = scraper {
            scraper.scrape_into(&mut out);
        }
        MetricsSource::encode(&self.metrics, &mut out);
        let sources: Vec<_> = self.sources.read().map(|s| s.clone()).unwrap_or_default();
        for source in sources {
            source.encode(&mut out);
        }
        out
    }

    /// The exposition, shared with every scrape that was waiting while it was collected:
    /// a scrape waits for a collection in flight instead of starting its own.
    pub async fn collect_shared(self: &Arc<Self>) -> Arc<Exposition> {
        let seen = self.completed.load(Ordering::Acquire);
        let mut slot = self.flight.lock().await;
        if self.completed.load(Ordering::Acquire) != seen {
            if let Some(done) = slot.as_ref() {
                return done.clone();
            }
        }
        let text = self.collect_on_thread().await;
        let exposition = Arc::new(Exposition {
            text,
            gzip: std::sync::OnceLock::new(),
        });
        *slot = Some(exposition.clone());
        self.completed.fetch_add(1, Ordering::AcqRel);
        exposition
    }
}

impl AppState {
    /// Runs [`Self::collect_now`] on the one long-lived collector thread (started on first use):
    /// collections are serialised by the single-flight lock anyway, and one thread keeps one
    /// stack and one allocator arena instead of whatever the blocking pool grows to.
    async fn collect_on_thread(self: &Arc<Self>) -> String {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = match self.collector.lock() {
            Ok(mut slot) => {
                if slot.is_none() {
                    let (jobs, queue) = std::sync::mpsc::channel::<CollectJob>();
                    let started =
                        std::thread::Builder::new()
                            .name("collector".into())
                            .spawn(move || {
                                for (state, reply) in queue {
                                    let _ = reply.send(state.collect_now());
                                }
                            });
                    if let Err(error) = started {
                        tracing::error!(%error, "cannot start the collector thread");
                    } else {
                        *slot = Some(jobs);
                    }
                }
                slot.as_ref()
                    .map(|jobs| jobs.send((self.clone(), tx)).is_ok())
                    .unwrap_or(false)
            }
            Err(_) => false,
        };
        if !sent {
            let state = self.clone();
            return tokio::task::spawn_blocking(move || state.collect_now())
                .await
                .unwrap_or_default();
        }
        rx.await.unwrap_or_else(|_| {
            tracing::error!("metrics collection failed");
            String::new()
        })
    }
}

impl Exposition {
    /// The text, gzipped (once per collection).
    pub fn gzipped(&self) -> &[u8] {
        self.gzip.get_or_init(|| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = encoder.write_all(self.text.as_bytes());
            encoder.finish().unwrap_or_default()
        })
    }
}

/// The router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(serve_metrics))
        .route("/report", get(serve_report))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .with_state(state)
}

/// Whether an `Accept-Encoding` header allows gzip.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let refused = it.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

async fn serve_report(State(state): State<Arc<AppState>>) -> Response {
    let status = state.node_status.read().ok().and_then(|s| s.clone());
    let report = match (status, state.facts()) {
        (Some(status), _) => status.report(),
        (None, Some(facts)) => facts.report(),
        (None, None) => {
            return (
                StatusCode::NOT_FOUND,
                "no node report: the agent is not running\n",
            )
                .into_response()
        }
    };
    match serde_json::to_string_pretty(&report) {
        Ok(mut json) => {
            json.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], json).into_response()
        }
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the report: {error}\n"),
        )
            .into_response(),
    }
}

async fn serve_metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let exposition = state.collect_shared().await;
    if accepts_gzip(&headers) {
        (
            [
                (header::CONTENT_TYPE, metrics::CONTENT_TYPE),
                (header::CONTENT_ENCODING, "gzip"),
            ],
            exposition.gzipped().to_vec(),
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            exposition.text.clone(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn gzip_is_used_only_when_accepted() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("br, gzip;q=0.5"),
        );
        assert!(accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("gzip;q=0"),
        );
        assert!(!accepts_gzip(&headers));
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        assert!(!accepts_gzip(&headers));
    }
}
