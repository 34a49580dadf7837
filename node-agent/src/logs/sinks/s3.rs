//! The `s3` sink: each batch one object `PREFIX/NODE/YYYY-MM-DD/HHMMSSmmm-SEQ.log.gz` of JSON
//! lines (gzipped unless `gzip: false`, then `.log`), written with `rust-s3`. A batch is
//! acknowledged when the PUT succeeded.

use std::io::Write as _;

use driftless_crds::log_pipeline::S3Sink as S3SinkConfig;
use flate2::write::GzEncoder;
use flate2::Compression;
use s3::Bucket;

use super::SinkContext;
use crate::logs::{Event, LogError};
use crate::s3::OpenError;

/// Batch and bucket.
#[derive(Debug)]
pub struct S3Sink {
    name: String,
    bucket: Box<Bucket>,
    prefix: String,
    node: String,
    gzip: bool,
    body: Vec<u8>,
    seq: u64,
}

/// The key of an object: `PREFIX/NODE/DATE/TIME-SEQ.log[.gz]`.
pub fn object_key(
    prefix: &str,
    node: &str,
    at: chrono::DateTime<chrono::Utc>,
    seq: u64,
    gzip: bool,
) -> String {
    let prefix = prefix.trim_matches('/');
    let name = format!(
        "{}/{}-{seq:06}.log{}",
        at.format("%Y-%m-%d"),
        at.format("%H%M%S%3f"),
        if gzip { ".gz" } else { "" }
    );
    if prefix.is_empty() {
        format!("{node}/{name}")
    } else {
        format!("{prefix}/{node}/{name}")
    }
}

impl S3Sink {
    /// A sink from its configuration; credentials from `${secret:...}` references or, when
    /// unset, the ambient ones.
    pub fn new(name: &str, config: &S3SinkConfig, ctx: &SinkContext<'_>) -> Result<Self, LogError> {
        let t = &config.target;
        let bad = |what: &str, e: String| LogError::Config(format!("sink {name}: {what}: {e}"));
        let bucket = crate::s3::open(t, |field, text| {
            ctx.expand(&format!("sink {name}: {field}"), text)
                .map(|v| v.expose().to_owned())
        })
        .map_err(|e| match e {
            OpenError::Expand(e) => e,
            OpenError::Invalid { field, reason } => bad(field, reason),
        })?;
        Ok(Self {
            name: name.to_owned(),
            bucket,
            prefix: t.prefix.clone(),
            node: ctx.node.to_owned(),
            gzip: config.gzip,
            body: Vec::new(),
            seq: 0,
        })
    }

    pub(super) fn add(&mut self, event: &Event) {
        event.write_json_line(&mut self.body);
    }

    pub(super) fn clear(&mut self) {
        self.body.clear();
    }

    pub(super) async fn send(&mut self) -> Result<(), LogError> {
        let fail = |message: String, retryable: bool| LogError::Send {
            sink: self.name.clone(),
            message,
            retryable,
        };
        self.seq += 1;
        let key = object_key(
            &self.prefix,
            &self.node,
            chrono::Utc::now(),
            self.seq,
            self.gzip,
        );
        let (body, content_type) = if self.gzip {
            let mut gz = GzEncoder::new(
                Vec::with_capacity(self.body.len() / 4),
                Compression::default(),
            );
            gz.write_all(&self.body)
                .map_err(|e| fail(format!("gzip: {e}"), false))?;
            (
                gz.finish().map_err(|e| fail(format!("gzip: {e}"), false))?,
                "application/gzip",
            )
        } else {
            (self.body.clone(), "application/x-ndjson")
        };
        self.bucket
            .put_object_with_content_type(&key, &body, content_type)
            .await
            .map_err(|e| fail(format!("PUT {key}: {e}"), true))?;
        tracing::debug!(sink = %self.name, key, bytes = body.len(), "object written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn keys() {
        let at = chrono::Utc.with_ymd_and_hms(2024, 5, 1, 13, 4, 5).unwrap();
        assert_eq!(
            object_key("logs/", "node-1", at, 7, true),
            "logs/node-1/2024-05-01/130405000-000007.log.gz"
        );
        assert_eq!(
            object_key("", "n", at, 1, false),
            "n/2024-05-01/130405000-000001.log"
        );
    }
}
