//! The `http` sink: each batch POSTed as a JSON array of records (`Content-Type:
//! application/json`), with the configured headers. Any 2xx answer acknowledges the batch;
//! failures are retried with capped exponential backoff and jitter, then left spooled.

use std::time::Duration;

use driftless_crds::apply_policy::AuditHttp;
use driftless_crds::secret::{Lookup, Redactor};

use super::expand_field;
use crate::audit::AuditError;

/// Attempts per delivery before the batch is left for a later run.
pub const ATTEMPTS: u32 = 3;

/// A JSON-POST endpoint.
#[derive(Debug)]
pub struct HttpSink {
    name: String,
    url: String,
    headers: Vec<(String, String)>,
    redactor: Redactor,
    client: reqwest::Client,
    backoff: Duration,
}

impl HttpSink {
    /// The sink for a configuration; header values may use `${secret:...}`.
    pub fn new(name: &str, config: &AuditHttp, lookup: &dyn Lookup) -> Result<Self, AuditError> {
        let url = expand_field(name, "url", &config.url, lookup)?;
        let mut secrets = url.secrets.clone();
        let mut headers = Vec::new();
        for (header, value) in &config.headers {
            let value = expand_field(name, &format!("headers.{header}"), value, lookup)?;
            secrets.extend(value.secrets.iter().cloned());
            headers.push((header.clone(), value.value));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| AuditError::Config(format!("audit sink {name}: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            url: url.value,
            headers,
            redactor: Redactor::new(secrets),
            client,
            backoff: Duration::from_millis(200),
        })
    }

    /// The JSON array body for a batch of JSON lines.
    pub fn body(lines: &str) -> Result<Vec<u8>, AuditError> {
        let records: Vec<serde_json::Value> = lines
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .map_err(|e| AuditError::Config(format!("spooled batch is not JSON lines: {e}")))?;
        serde_json::to_vec(&records)
            .map_err(|e| AuditError::Config(format!("cannot encode batch: {e}")))
    }

    async fn post(&self, body: &[u8]) -> Result<(), String> {
        let mut request = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.to_vec());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {status}"))
        }
    }

    /// POSTs the batch, retrying.
    pub async fn deliver(&self, lines: &str) -> Result<(), AuditError> {
        let body = Self::body(lines)?;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let backoff = crate::backoff::Backoff {
                    base: self.backoff,
                    max: Duration::from_secs(30),
                };
                tokio::time::sleep(backoff.delay(attempt - 1)).await;
            }
            match self.post(&body).await {
                Ok(()) => return Ok(()),
                Err(e) => last = self.redactor.redact(&e).into_owned(),
            }
        }
        Err(AuditError::Send {
            sink: self.name.clone(),
            message: format!(
                "POST {}: {last} (after {ATTEMPTS} attempts)",
                self.redactor.redact(&self.url)
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_json_array() {
        let body = HttpSink::body("{\"a\":1}\n\n{\"a\":2}\n").unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), "[{\"a\":1},{\"a\":2}]");
        assert!(HttpSink::body("not json\n").is_err());
    }
}
