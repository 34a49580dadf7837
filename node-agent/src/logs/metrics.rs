//! Internal metrics of the log pipelines, in the Prometheus text format, for the agent's
//! `/metrics`.
//!
//! Families (all prefixed `driftless_logs_`): `events_read_total`, `bytes_read_total`
//! {pipeline, source}; `lag_bytes` {pipeline, source} (bytes behind the end of the files);
//! `events_sent_total`, `bytes_sent_total`, `retries_total` {pipeline, sink};
//! `errors_total` {pipeline, kind}; `buffer_events`, `buffer_bytes`, `buffer_max_events`,
//! `buffer_max_bytes` {pipeline}.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    /// Source name.
    pub name: String,
    /// Events read.
    pub events: AtomicU64,
    /// Bytes read.
    pub bytes: AtomicU64,
    /// Bytes behind the end of the files.
    pub lag: AtomicU64,
}

/// Counters of one sink.
#[derive(Debug, Default)]
pub struct SinkMetrics {
    /// Sink name.
    pub name: String,
    /// Events acknowledged.
    pub events: AtomicU64,
    /// Bytes acknowledged (before compression).
    pub bytes: AtomicU64,
    /// Failed attempts that were retried.
    pub retries: AtomicU64,
}

/// Counters of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    /// Pipeline name.
    pub pipeline: String,
    /// Per source.
    pub sources: Vec<SourceMetrics>,
    /// Per sink.
    pub sinks: Vec<SinkMetrics>,
    /// Errors by kind.
    pub errors: Mutex<BTreeMap<&'static str, u64>>,
    /// Events in flight.
    pub buffer_events: AtomicU64,
    /// Bytes in flight.
    pub buffer_bytes: AtomicU64,
    /// Limit on events in flight.
    pub buffer_max_events: AtomicU64,
    /// Limit on bytes in flight.
    pub buffer_max_bytes: AtomicU64,
}

impl PipelineMetrics {
    /// Counters for a pipeline with these sources and sinks.
    pub fn new(pipeline: &str, sources: &[String], sinks: &[String]) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            sources: sources
                .iter()
                .map(|name| SourceMetrics {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect(),
            sinks: sinks
                .iter()
                .map(|name| SinkMetrics {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// Counts an error of a kind (`read`, `send`, `checkpoint`, `rejected`, ...).
    pub fn error(&self, kind: &'static str) {
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }
}

/// Every running pipeline's counters; what `/metrics` encodes.
#[derive(Debug, Default, Clone)]
pub struct LogMetrics {
    pipelines: Arc<Mutex<BTreeMap<String, Arc<PipelineMetrics>>>>,
}

fn load(v: &AtomicU64) -> f64 {
    v.load(Ordering::Relaxed) as f64
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl LogMetrics {
    /// Registers (or replaces, on reload) a pipeline's counters.
    pub fn register(&self, metrics: Arc<PipelineMetrics>) {
        if let Ok(mut map) = self.pipelines.lock() {
            map.insert(metrics.pipeline.clone(), metrics);
        }
    }

    /// Forgets a pipeline that was removed.
    pub fn unregister(&self, pipeline: &str) {
        if let Ok(mut map) = self.pipelines.lock() {
            map.remove(pipeline);
        }
    }

    /// Appends every family in the Prometheus text format.
    pub fn encode(&self, out: &mut String) {
        let Ok(map) = self.pipelines.lock() else {
            return;
        };
        let pipelines: Vec<Arc<PipelineMetrics>> = map.values().cloned().collect();
        drop(map);
        type Getter = fn(&SourceMetrics) -> f64;
        let source_families: [(&str, &str, &str, Getter); 3] = [
            (
                "events_read_total",
                "counter",
                "Events read from files.",
                |s| load(&s.events),
            ),
            (
                "bytes_read_total",
                "counter",
                "Bytes read from files.",
                |s| load(&s.bytes),
            ),
            (
                "lag_bytes",
                "gauge",
                "Bytes behind the end of the files being read.",
                |s| load(&s.lag),
            ),
        ];
        for (name, kind, help, get) in source_families {
            header(out, name, help, kind);
            for p in &pipelines {
                for s in &p.sources {
                    let _ = writeln!(
                        out,
                        "driftless_logs_{name}{{pipeline=\"{}\",source=\"{}\"}} {}",
                        escape(&p.pipeline),
                        escape(&s.name),
                        get(s)
                    );
                }
            }
        }
        type SinkGetter = fn(&SinkMetrics) -> f64;
        let sink_families: [(&str, &str, &str, SinkGetter); 3] = [
            (
                "events_sent_total",
                "counter",
                "Events acknowledged by sinks.",
                |s| load(&s.events),
            ),
            (
                "bytes_sent_total",
                "counter",
                "Bytes acknowledged by sinks, before compression.",
                |s| load(&s.bytes),
            ),
            (
                "retries_total",
                "counter",
                "Failed sends that were retried.",
                |s| load(&s.retries),
            ),
        ];
        for (name, kind, help, get) in sink_families {
            header(out, name, help, kind);
            for p in &pipelines {
                for s in &p.sinks {
                    let _ = writeln!(
                        out,
                        "driftless_logs_{name}{{pipeline=\"{}\",sink=\"{}\"}} {}",
                        escape(&p.pipeline),
                        escape(&s.name),
                        get(s)
                    );
                }
            }
        }
        header(out, "errors_total", "Errors by kind.", "counter");
        for p in &pipelines {
            if let Ok(errors) = p.errors.lock() {
                for (kind, n) in errors.iter() {
                    let _ = writeln!(
                        out,
                        "driftless_logs_errors_total{{pipeline=\"{}\",kind=\"{kind}\"}} {n}",
                        escape(&p.pipeline)
                    );
                }
            }
        }
        type PipeGetter = fn(&PipelineMetrics) -> f64;
        let gauges: [(&str, &str, PipeGetter); 4] = [
            (
                "buffer_events",
                "Events read but not yet acknowledged by every sink.",
                |p| load(&p.buffer_events),
            ),
            (
                "buffer_bytes",
                "Bytes read but not yet acknowledged by every sink.",
                |p| load(&p.buffer_bytes),
            ),
            (
                "buffer_max_events",
                "Limit on buffer_events; reading pauses at it.",
                |p| load(&p.buffer_max_events),
            ),
            (
                "buffer_max_bytes",
                "Limit on buffer_bytes; reading pauses at it.",
                |p| load(&p.buffer_max_bytes),
            ),
        ];
        for (name, help, get) in gauges {
            header(out, name, help, "gauge");
            for p in &pipelines {
                let _ = writeln!(
                    out,
                    "driftless_logs_{name}{{pipeline=\"{}\"}} {}",
                    escape(&p.pipeline),
                    get(p)
                );
            }
        }
    }
}

impl crate::metrics::MetricsSource for LogMetrics {
    fn encode(&self, out: &mut String) {
        LogMetrics::encode(self, out);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP driftless_logs_{name} {help}");
    let _ = writeln!(out, "# TYPE driftless_logs_{name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_family_with_labels() {
        let metrics = LogMetrics::default();
        let p = Arc::new(PipelineMetrics::new(
            "web",
            &["app".into()],
            &["out".into()],
        ));
        p.sources[0].events.store(3, Ordering::Relaxed);
        p.sinks[0].retries.store(2, Ordering::Relaxed);
        p.error("send");
        metrics.register(p);
        let mut out = String::new();
        metrics.encode(&mut out);
        assert!(
            out.contains("driftless_logs_events_read_total{pipeline=\"web\",source=\"app\"} 3\n")
        );
        assert!(out.contains("driftless_logs_retries_total{pipeline=\"web\",sink=\"out\"} 2\n"));
        assert!(out.contains("driftless_logs_errors_total{pipeline=\"web\",kind=\"send\"} 1\n"));
        assert!(out.contains("# TYPE driftless_logs_lag_bytes gauge\n"));
        metrics.unregister("web");
        let mut out = String::new();
        metrics.encode(&mut out);
        assert!(!out.contains("pipeline=\"web\""));
    }
}
