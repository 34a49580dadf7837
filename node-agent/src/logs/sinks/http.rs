//! The `http` sink: newline-delimited JSON, Elasticsearch `_bulk`, or Loki push JSON, optionally
//! gzipped, with headers whose values may hold `${secret:...}` references.
//!
//! A batch is acknowledged on a 2xx answer (for Elasticsearch also without `"errors": true`).
//! 408, 429 and 5xx answers and transport errors are retried; other answers are rejections.

use std::collections::BTreeMap;
use std::io::Write as _;

use driftless_crds::log_pipeline::{HttpEncoding, HttpSink as HttpSinkConfig};
use driftless_crds::secret::SecretString;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde_json::Value;

use super::SinkContext;
use crate::logs::{Event, LogError};

/// Batch and client.
#[derive(Debug)]
pub struct HttpSink {
    name: String,
    url: String,
    encoding: HttpEncoding,
    headers: Vec<(String, SecretString)>,
    gzip: bool,
    index: String,
    labels: Vec<(String, String)>,
    client: reqwest::Client,
    body: Vec<u8>,
    streams: BTreeMap<String, Vec<(String, String)>>,
}

impl HttpSink {
    /// A sink from its configuration.
    pub fn new(
        name: &str,
        config: &HttpSinkConfig,
        ctx: &SinkContext<'_>,
    ) -> Result<Self, LogError> {
        let url = ctx.expand(&format!("sink {name}: url"), &config.url)?;
        reqwest::Url::parse(url.expose())
            .map_err(|e| LogError::Config(format!("sink {name}: url: {e}")))?;
        let mut headers = Vec::new();
        for (key, value) in &config.headers {
            headers.push((
                key.clone(),
                ctx.expand(&format!("sink {name}: headers.{key}"), value)?,
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.timeout.get())
            .build()
            .map_err(|e| LogError::Config(format!("sink {name}: http client: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            url: url.expose().to_owned(),
            encoding: config.encoding,
            headers,
            gzip: config.gzip,
            index: config.index.clone().unwrap_or_else(|| "logs".into()),
            labels: config
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            client,
            body: Vec::new(),
            streams: BTreeMap::new(),
        })
    }

    pub(super) fn add(&mut self, event: &Event) {
        match self.encoding {
            HttpEncoding::Ndjson => event.write_json_line(&mut self.body),
            HttpEncoding::ElasticsearchBulk => {
                let action = serde_json::json!({"index": {"_index": self.index}});
                self.body.extend_from_slice(action.to_string().as_bytes());
                self.body.push(b'\n');
                event.write_json_line(&mut self.body);
            }
            HttpEncoding::LokiPush => {
                let labels = loki_labels(&self.labels, event);
                let ts = chrono::Utc::now()
                    .timestamp_nanos_opt()
                    .unwrap_or_default()
                    .to_string();
                self.streams
                    .entry(labels)
                    .or_default()
                    .push((ts, event.to_json()));
            }
        }
    }

    pub(super) fn clear(&mut self) {
        self.body.clear();
        self.streams.clear();
    }

    fn encode(&self) -> Vec<u8> {
        match self.encoding {
            HttpEncoding::LokiPush => {
                let streams: Vec<Value> = self
                    .streams
                    .iter()
                    .map(|(labels, values)| {
                        let stream: Value = serde_json::from_str(labels).unwrap_or(Value::Null);
                        serde_json::json!({"stream": stream, "values": values})
                    })
                    .collect();
                serde_json::to_vec(&serde_json::json!({ "streams": streams })).unwrap_or_default()
            }
            _ => self.body.clone(),
        }
    }

    pub(super) async fn send(&mut self) -> Result<(), LogError> {
        let fail = |message: String, retryable: bool| LogError::Send {
            sink: self.name.clone(),
            message,
            retryable,
        };
        let mut body = self.encode();
        let content_type = match self.encoding {
            HttpEncoding::Ndjson | HttpEncoding::ElasticsearchBulk => "application/x-ndjson",
            HttpEncoding::LokiPush => "application/json",
        };
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", content_type);
        if self.gzip {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(&body)
                .map_err(|e| fail(format!("gzip: {e}"), false))?;
            body = gz.finish().map_err(|e| fail(format!("gzip: {e}"), false))?;
            request = request.header("content-encoding", "gzip");
        }
        for (key, value) in &self.headers {
            request = request.header(key.as_str(), value.expose());
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| fail(format!("request failed: {}", without_url(&e)), true))?;
        let status = response.status();
        if status.is_success() {
            if self.encoding == HttpEncoding::ElasticsearchBulk {
                let text = response.text().await.unwrap_or_default();
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    if v.get("errors").and_then(Value::as_bool) == Some(true) {
                        return Err(fail("bulk response reports item errors".into(), true));
                    }
                }
            }
            return Ok(());
        }
        let retryable =
            status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408;
        Err(fail(format!("HTTP {status}"), retryable))
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // The URL may carry credentials; the error's own text is enough.
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "<url>");
    }
    text
}

/// The Loki stream labels of an event as a JSON object string; `{{field}}` in a value is
/// replaced by the event's field.
pub fn loki_labels(labels: &[(String, String)], event: &Event) -> String {
    let mut map = serde_json::Map::new();
    if labels.is_empty() {
        map.insert("source".into(), Value::String(event.source.to_string()));
    }
    for (key, template) in labels {
        let mut value = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find("{{") {
            value.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            match after.find("}}") {
                Some(close) => {
                    let field = after[..close].trim();
                    match event.fields.get(field) {
                        Some(Value::String(s)) => value.push_str(s),
                        Some(other) => value.push_str(&other.to_string()),
                        None => {}
                    }
                    rest = &after[close + 2..];
                }
                None => {
                    value.push_str(&rest[open..]);
                    rest = "";
                }
            }
        }
        value.push_str(rest);
        map.insert(key.clone(), Value::String(value));
    }
    Value::Object(map).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loki_labels_from_fields() {
        let mut fields = crate::logs::Fields::new();
        fields.insert("namespace".into(), "shop".into());
        let event = Event {
            source: "k8s".into(),
            raw: String::new(),
            fields,
        };
        let labels = vec![
            ("ns".to_owned(), "{{namespace}}".to_owned()),
            ("job".to_owned(), "driftless-{{ missing }}x".to_owned()),
        ];
        assert_eq!(
            loki_labels(&labels, &event),
            r#"{"job":"driftless-x","ns":"shop"}"#
        );
        assert_eq!(loki_labels(&[], &event), r#"{"source":"k8s"}"#);
    }
}
