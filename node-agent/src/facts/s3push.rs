//! Periodic snapshots of facts and metric values, gzipped JSON, pushed to
//! `s3://BUCKET/PREFIX/NODE/TIMESTAMP.json.gz` (FactsPolicy `spec.export.s3`).
//!
//! Guarantees: memory stays bounded while S3 is unreachable: at most `max_pending` snapshots
//! wait (the oldest is dropped first, counted in `driftless_facts_s3_dropped_snapshots_total`);
//! each upload is retried with capped exponential backoff; snapshots go out oldest first.
//! Caveats: pending snapshots live in memory only; a restart loses them.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use driftless_crds::common::S3Target;
use driftless_crds::secret::{expand, Lookup};
use s3::Bucket;
use serde::Serialize;

use super::inventory::Inventory;
use crate::metrics::{self, Family, Kind, MetricsSource};
use crate::s3::OpenError;

/// Why a pusher could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// A field is invalid or a secret is missing.
    #[error("export.s3.{field}: {reason}")]
    Config {
        /// Field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// One sample in a snapshot.
#[derive(Debug, Serialize)]
pub struct SnapshotSample<'a> {
    /// Labels.
    pub labels: BTreeMap<&'a str, &'a str>,
    /// Value.
    pub value: f64,
}

/// What is pushed.
#[derive(Debug, Serialize)]
pub struct Snapshot<'a> {
    /// Node name.
    pub node: &'a str,
    /// RFC 3339 time of the snapshot.
    pub timestamp: String,
    /// The facts inventory.
    pub facts: &'a Inventory,
    /// Metric values by sample name (the family name; with `_bucket`, `_sum` or `_count` for
    /// histograms and summaries).
    pub metrics: BTreeMap<std::borrow::Cow<'a, str>, Vec<SnapshotSample<'a>>>,
}

/// A gzipped JSON snapshot.
pub fn encode(
    node: &str,
    time: chrono::DateTime<chrono::Utc>,
    facts: &Inventory,
    families: &[Family],
) -> Vec<u8> {
    let mut metrics: BTreeMap<std::borrow::Cow<str>, Vec<SnapshotSample>> = BTreeMap::new();
    for family in families {
        for s in &family.samples {
            let name = if s.suffix.is_empty() {
                std::borrow::Cow::Borrowed(family.name.as_str())
            } else {
                std::borrow::Cow::Owned(format!("{}{}", family.name, s.suffix))
            };
            metrics.entry(name).or_default().push(SnapshotSample {
                labels: s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect(),
                value: s.value,
            });
        }
    }
    let snapshot = Snapshot {
        node,
        timestamp: time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        facts,
        metrics,
    };
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Serialising into and compressing a Vec cannot fail.
    let _ = serde_json::to_writer(&mut gz, &snapshot);
    let _ = gz.flush();
    gz.finish().unwrap_or_default()
}

/// `PREFIX/NODE/20261122T040000Z.json.gz`.
pub fn object_key(prefix: &str, node: &str, time: chrono::DateTime<chrono::Utc>) -> String {
    let stamp = time.format("%Y%m%dT%H%M%SZ");
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        format!("{node}/{stamp}.json.gz")
    } else {
        format!("{prefix}/{node}/{stamp}.json.gz")
    }
}

/// Snapshots waiting for upload, bounded: adding to a full queue drops the oldest.
#[derive(Debug)]
pub struct Pending {
    max: usize,
    items: VecDeque<(String, Vec<u8>)>,
}

impl Pending {
    /// A queue of at most `max` snapshots (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            items: VecDeque::new(),
        }
    }

    /// Adds a snapshot; returns how many old ones were dropped to make room.
    pub fn push(&mut self, key: String, body: Vec<u8>) -> usize {
        let mut dropped = 0;
        while self.items.len() >= self.max {
            self.items.pop_front();
            dropped += 1;
        }
        self.items.push_back((key, body));
        dropped
    }

    /// Waiting snapshots.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Uploads snapshots to one bucket.
pub struct Pusher {
    bucket: Box<Bucket>,
    prefix: String,
    node: String,
    pending: Mutex<Pending>,
    /// Attempts per upload before it waits for the next push.
    pub attempts: u32,
    /// First retry delay; doubled per attempt, capped at 30 s.
    pub backoff: Duration,
    pushed: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl Pusher {
    /// A pusher for the policy's S3 target; `${secret:...}` references resolve through `lookup`.
    pub fn new(
        target: &S3Target,
        lookup: &dyn Lookup,
        node: &str,
        max_pending: usize,
    ) -> Result<Self, PushError> {
        let bucket = crate::s3::open(target, |field, text| {
            expand(text, lookup)
                .map(|e| e.value)
                .map_err(|e| PushError::Config {
                    field,
                    reason: e.to_string(),
                })
        })
        .map_err(|e| match e {
            OpenError::Expand(e) => e,
            OpenError::Invalid { field, reason } => PushError::Config { field, reason },
        })?;
        Ok(Self {
            bucket,
            prefix: target.prefix.clone(),
            node: node.to_owned(),
            pending: Mutex::new(Pending::new(max_pending)),
            attempts: 3,
            backoff: Duration::from_millis(500),
            pushed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a snapshot taken at `time`.
    pub fn enqueue(
        &self,
        time: chrono::DateTime<chrono::Utc>,
        facts: &Inventory,
        families: &[Family],
    ) {
        let body = encode(&self.node, time, facts, families);
        let key = object_key(&self.prefix, &self.node, time);
        if let Ok(mut pending) = self.pending.lock() {
            let dropped = pending.push(key, body);
            if dropped > 0 {
                self.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
                tracing::warn!(
                    dropped,
                    "S3 unreachable; dropped the oldest facts snapshots"
                );
            }
        }
    }

    /// Snapshots waiting.
    pub fn pending(&self) -> usize {
        self.pending.lock().map(|p| p.len()).unwrap_or_default()
    }

    /// Snapshots dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Uploads waiting snapshots oldest first, retrying each; stops at the first one that still
    /// fails (it stays queued). Returns how many were uploaded.
    pub async fn flush(&self) -> usize {
        let mut sent = 0;
        loop {
            let next = self
                .pending
                .lock()
                .ok()
                .and_then(|p| p.items.front().cloned());
            let Some((key, body)) = next else { break };
            let backoff = crate::backoff::Backoff {
                base: self.backoff,
                max: Duration::from_secs(30),
            };
            let mut ok = false;
            for attempt in 1..=self.attempts.max(1) {
                match self
                    .bucket
                    .put_object_with_content_type(&key, &body, "application/gzip")
                    .await
                {
                    Ok(_) => {
                        ok = true;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(key, attempt, %error, "facts snapshot upload failed");
                        if attempt < self.attempts {
                            tokio::time::sleep(backoff.delay(attempt - 1)).await;
                        }
                    }
                }
            }
            if !ok {
                self.failed.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if let Ok(mut pending) = self.pending.lock() {
                if pending.items.front().is_some_and(|(k, _)| *k == key) {
                    pending.items.pop_front();
                }
            }
            self.pushed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(key, bytes = body.len(), "facts snapshot uploaded");
            sent += 1;
        }
        sent
    }
}

impl MetricsSource for Pusher {
    fn encode(&self, out: &mut String) {
        let mut pushes = Family::new(
            "driftless_facts_s3_pushes_total",
            "Facts snapshot uploads to S3, by result (a failure is counted once its retries are spent).",
            Kind::Counter,
        );
        pushes.push(
            vec![("result", "failure".into())],
            self.failed.load(Ordering::Relaxed) as f64,
        );
        pushes.push(
            vec![("result", "success".into())],
            self.pushed.load(Ordering::Relaxed) as f64,
        );
        let families = [
            pushes,
            Family::single(
                "driftless_facts_s3_pending_snapshots",
                "Facts snapshots waiting for upload to S3.",
                Kind::Gauge,
                self.pending() as f64,
            ),
            Family::single(
                "driftless_facts_s3_dropped_snapshots_total",
                "Facts snapshots dropped because too many were waiting for S3.",
                Kind::Counter,
                self.dropped() as f64,
            ),
        ];
        metrics::encode_families(&families, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    #[test]
    fn keys_and_bounded_queue() {
        let t = chrono::Utc.with_ymd_and_hms(2026, 11, 22, 4, 5, 6).unwrap();
        assert_eq!(
            object_key("/facts/", "n1", t),
            "facts/n1/20261122T040506Z.json.gz"
        );
        assert_eq!(object_key("", "n1", t), "n1/20261122T040506Z.json.gz");
        let mut q = Pending::new(2);
        assert_eq!(q.push("a".into(), vec![]), 0);
        assert_eq!(q.push("b".into(), vec![]), 0);
        assert_eq!(q.push("c".into(), vec![]), 1);
        assert_eq!(
            q.items.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
    }

    #[test]
    fn snapshot_is_gzipped_json() {
        use std::io::Read as _;
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let mut f = Family::new("node_load1", "h", Kind::Gauge);
        f.push(vec![], 0.5);
        let body = encode("n1", t, &Inventory::default(), &[f]);
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["node"], "n1");
        assert_eq!(v["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(v["metrics"]["node_load1"][0]["value"], 0.5);
    }
}
