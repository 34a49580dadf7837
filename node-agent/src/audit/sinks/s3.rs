//! The `s3` sink: each batch one object `PREFIX/HOST/YYYY-MM-DD/BATCH.jsonl` of JSON lines,
//! written with `rust-s3`. The key is derived from the spooled batch's name, so a batch sent
//! again after a lost acknowledgement overwrites the same object instead of duplicating it.

use driftless_crds::common::S3Target;
use driftless_crds::secret::Lookup;
use s3::creds::Credentials;
use s3::{Bucket, Region};

use super::expand_field;
use crate::audit::AuditError;

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
        let region_name = t.region.clone().unwrap_or_else(|| "us-east-1".into());
        let region = match &t.endpoint {
            Some(endpoint) => Region::Custom {
                region: region_name,
                endpoint: expand_field(name, "endpoint", endpoint, lookup)?.value,
            },
            None => region_name
                .parse()
                .map_err(|e| bad("region", format!("{e}")))?,
        };
        let credentials = match (&t.access_key_id, &t.secret_access_key) {
            (Some(id), Some(key)) => {
                let id = expand_field(name, "accessKeyId", id, lookup)?;
                let key = expand_field(name, "secretAccessKey", key, lookup)?;
                Credentials::new(Some(&id.value), Some(&key.value), None, None, None)
                    .map_err(|e| bad("credentials", e.to_string()))?
            }
            _ => Credentials::default().map_err(|e| bad("credentials", e.to_string()))?,
        };
        let mut bucket = Bucket::new(&t.bucket, region, credentials)
            .map_err(|e| bad("bucket", e.to_string()))?;
        if t.path_style {
            bucket = bucket.with_path_style();
        }
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
