//! The `s3` sink: each batch one object `PREFIX/HOST/YYYY-MM-DD/BATCH.jsonl` of JSON lines,
//! written with `rust-s3`. The key is derived from the spooled batch's name, so a batch sent
//! again after a lost acknowledgement overwrites the same object instead of duplicating it.

use driftless_crds::common::S3Target;
use driftless_crds::secret::Lookup;
use s3::Bucket;

use super::expand_field;
use crate::audit::AuditError;
use crate::s3::OpenError;

/// A bucket and key prefix.
#[derive(Debug)]
pub struct S3Sink {
    name: String,
    bucket: Box<Bucket>,
    prefix: String,
    host: String,
}

/// The object key for a batch. Batch names start with the Unix time in nanoseconds, which
/// gives the date.
pub fn object_key(prefix: &str, host: &str, batch: &str) -> String {
    let nanos: i64 = batch
        .split('-')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_default();
    let date = chrono::DateTime::from_timestamp_nanos(nanos).format("%Y-%m-%d");
    let prefix = prefix.trim_matches('/');
    let name = format!("{host}/{date}/{batch}.jsonl");
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

impl S3Sink {
    /// The sink for a configuration; credentials from `${secret:...}` or the ambient ones.
    pub fn new(
        name: &str,
        t: &S3Target,
        host: &str,
        lookup: &dyn Lookup,
    ) -> Result<Self, AuditError> {
        let bad =
            |what: &str, e: String| AuditError::Config(format!("audit sink {name}: {what}: {e}"));
        let bucket = crate::s3::open(t, |field, text| {
            expand_field(name, field, text, lookup).map(|e| e.value)
        })
        .map_err(|e| match e {
            OpenError::Expand(e) => e,
            OpenError::Invalid { field, reason } => bad(field, reason),
        })?;
        Ok(Self {
            name: name.to_owned(),
            bucket,
            prefix: t.prefix.clone(),
            host: host.to_owned(),
        })
    }

    /// PUTs the batch.
    pub async fn deliver(&self, batch: &str, body: &str) -> Result<(), AuditError> {
        let key = object_key(&self.prefix, &self.host, batch);
        self.bucket
            .put_object_with_content_type(&key, body.as_bytes(), "application/x-ndjson")
            .await
            .map_err(|e| AuditError::Send {
                sink: self.name.clone(),
                message: format!("PUT {key}: {e}"),
            })?;
        tracing::debug!(sink = %self.name, key, "audit batch written");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_dated_and_stable() {
        // 2026-11-22T03:00:00Z in nanoseconds.
        let batch = "1795316400000000000-42-0";
        assert_eq!(
            object_key("audit/", "node-1", batch),
            "audit/node-1/2026-11-22/1795316400000000000-42-0.jsonl"
        );
        assert_eq!(
            object_key("", "node-1", batch),
            "node-1/2026-11-22/1795316400000000000-42-0.jsonl"
        );
    }
}
