//! The audit trail: one [`AuditRecord`] per change an apply made, delivered to the sinks of the
//! policy's `spec.audit`.
//!
//! Guarantees:
//! - Delivery never blocks or undoes an apply. [`Auditor::record`] only writes the records to a
//!   local spool directory (default [`DEFAULT_SPOOL`]), one batch file per sink;
//!   [`Auditor::flush`] then sends each sink's batches in order and removes a batch only after
//!   that sink acknowledged it. A batch a sink did not take stays spooled and is sent by a later
//!   run (at-least-once; records carry a unique `id` for de-duplication).
//! - Records are redacted before they are spooled: secrets never reach the disk or a sink.
//! - Their digests are keyed with the host's [`AuditKey`], kept in the spool root.
//!
//! Layout: `SPOOL/POLICY/SINK/BATCH.jsonl`, `BATCH` = `UNIXNANOS-PID-SEQ` (sorts by time).

pub mod key;
pub mod record;
pub mod sinks;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use driftless_crds::apply_policy::AuditConfig;
use driftless_crds::secret::Lookup;

pub use key::AuditKey;
pub use record::{AuditRecord, RecordContext};
use sinks::Sink;

/// Where records wait for delivery unless configured otherwise.
pub const DEFAULT_SPOOL: &str = "/var/lib/driftless/audit-spool";

/// What went wrong in the audit trail.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A spool or sink file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A sink's configuration cannot be used.
    #[error("{0}")]
    Config(String),
    /// A sink did not take a batch.
    #[error("audit sink {sink}: {message}")]
    Send {
        /// Sink name.
        sink: String,
        /// Why.
        message: String,
    },
}

impl AuditError {
    /// An I/O error on a path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        AuditError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What a flush did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlushReport {
    /// Batches delivered and removed from the spool.
    pub delivered: usize,
    /// Batches still spooled (a sink failed; they go out on a later run).
    pub pending: usize,
    /// One message per sink that failed.
    pub errors: Vec<String>,
}

static BATCH_SEQ: AtomicU64 = AtomicU64::new(0);

/// Records and delivers one policy's audit trail.
#[derive(Debug)]
pub struct Auditor {
    spool: PathBuf,
    sinks: Vec<(String, Sink)>,
}

impl Auditor {
    /// An auditor for one policy: its spool is `spool_root/POLICY`, its sinks those of
    /// `config` (secrets in their fields resolved through `lookup`).
    pub fn new(
        spool_root: &Path,
        policy: &str,
        host: &str,
        config: &AuditConfig,
        lookup: &dyn Lookup,
    ) -> Result<Self, AuditError> {
        let sinks = config
            .sinks
            .iter()
            .map(|s| Ok((s.name.clone(), Sink::new(s, host, lookup)?)))
            .collect::<Result<Vec<_>, AuditError>>()?;
        Ok(Self {
            spool: spool_root.join(safe_name(policy)),
            sinks,
        })
    }

    fn sink_dir(&self, sink: &str) -> PathBuf {
        self.spool.join(safe_name(sink))
    }

    /// Spools the records as one batch per sink. Nothing is sent yet.
    pub fn record(&self, records: &[AuditRecord]) -> Result<(), AuditError> {
        if records.is_empty() {
            return Ok(());
        }
        let body: String = records.iter().map(AuditRecord::json_line).collect();
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let batch = format!(
            "{nanos:020}-{}-{}",
            std::process::id(),
            BATCH_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        for (name, _) in &self.sinks {
            let dir = self.sink_dir(name);
            std::fs::create_dir_all(&dir).map_err(|e| AuditError::io(&dir, e))?;
            let tmp = dir.join(format!(".{batch}.tmp"));
            let path = dir.join(format!("{batch}.jsonl"));
            write_synced(&tmp, &body)?;
            std::fs::rename(&tmp, &path).map_err(|e| AuditError::io(&path, e))?;
        }
        Ok(())
    }

    /// The batches waiting for `sink`, oldest first.
    pub fn pending(&self, sink: &str) -> Result<Vec<PathBuf>, AuditError> {
        let dir = self.sink_dir(sink);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AuditError::io(&dir, e)),
        };
        let mut batches: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
            .collect();
        batches.sort();
        Ok(batches)
    }

    /// Sends every spooled batch to its sink, oldest first, removing each one the sink
    /// acknowledged. A sink that fails keeps its remaining batches for a later run; other
    /// sinks go on.
    pub async fn flush(&self) -> FlushReport {
        let mut report = FlushReport::default();
        for (name, sink) in &self.sinks {
            let batches = match self.pending(name) {
                Ok(b) => b,
                Err(e) => {
                    report.errors.push(e.to_string());
                    continue;
                }
            };
            let mut failed = false;
            for path in batches {
                if failed {
                    report.pending += 1;
                    continue;
                }
                let batch = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let result = match std::fs::read_to_string(&path) {
                    Ok(body) => sink.deliver(&batch, &body).await,
                    Err(e) => Err(AuditError::io(&path, e)),
                };
                match result.and_then(|()| {
                    std::fs::remove_file(&path).map_err(|e| AuditError::io(&path, e))
                }) {
                    Ok(()) => report.delivered += 1,
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %e, "audit delivery failed; records stay spooled");
                        report.errors.push(e.to_string());
                        report.pending += 1;
                        failed = true;
                    }
                }
            }
        }
        report
    }

    /// [`Auditor::flush`] from synchronous code (on its own thread and runtime, so it also
    /// works when called from inside another runtime).
    pub fn flush_blocking(&self) -> FlushReport {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(self.flush()),
                        Err(e) => FlushReport {
                            errors: vec![format!("cannot start the audit runtime: {e}")],
                            ..FlushReport::default()
                        },
                    }
                })
                .join()
                .unwrap_or_else(|_| FlushReport {
                    errors: vec!["audit delivery panicked".into()],
                    ..FlushReport::default()
                })
        })
    }
}

/// The node's name in records: `NODE_NAME` (set in the DaemonSet), else the kernel's host name.
pub fn host_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| "localhost".into())
}

/// A standalone policy's revision: the first 12 hex digits of the SHA-256 of its spec.
pub fn spec_revision(spec: &driftless_crds::apply_policy::ApplyPolicySpec) -> String {
    use sha2::{Digest, Sha256};
    let json = serde_json::to_vec(spec).unwrap_or_default();
    hex::encode(Sha256::digest(&json))[..12].to_owned()
}

/// Records an apply's changes for every policy that has `spec.audit`, then delivers whatever
/// is spooled for those policies (this run's records and any a sink did not take before).
/// Never fails: problems are logged and returned as messages, and the apply stands.
pub fn deliver(
    report: &crate::apply::report::ApplyReport,
    config: &crate::config::Config,
    lookup: &dyn Lookup,
    spool_root: &Path,
) -> Vec<String> {
    use driftless_crds::resource::Resource;
    use driftless_crds::secret::Redactor;
    let host = host_name();
    let mut problems = Vec::new();
    let audited = config
        .resources
        .iter()
        .any(|l| matches!(&l.resource, Resource::ApplyPolicy(p) if p.spec.audit.is_some()));
    let key = if audited && report.policies.iter().any(|p| !p.check_only) {
        AuditKey::load_or_create(spool_root)
            .map_err(|e| {
                problems.push(format!(
                    "cannot use the audit key: {e}; records are written without digests"
                ))
            })
            .ok()
    } else {
        None
    };
    for loaded in &config.resources {
        let Resource::ApplyPolicy(policy) = &loaded.resource else {
            continue;
        };
        let Some(audit) = &policy.spec.audit else {
            continue;
        };
        let name = policy.metadata.name.clone().unwrap_or_default();
        let mut ctx = RecordContext {
            host: host.clone(),
            key: key.clone(),
            ..RecordContext::default()
        };
        ctx.revisions.insert(
            name.clone(),
            (spec_revision(&policy.spec), policy.metadata.generation),
        );
        let redactor = Redactor::new(
            policy
                .spec
                .secrets
                .iter()
                .filter_map(|s| lookup.secret(&s.name)),
        );
        let mine = crate::apply::report::ApplyReport {
            dry_run: report.dry_run,
            policies: report
                .policies
                .iter()
                .filter(|p| p.policy == name)
                .cloned()
                .collect(),
        };
        let records = AuditRecord::from_report(&mine, &ctx, &redactor);
        let auditor = match Auditor::new(spool_root, &name, &host, audit, lookup) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("policy {name}: {e}"));
                continue;
            }
        };
        if let Err(e) = auditor.record(&records) {
            problems.push(format!("policy {name}: cannot spool audit records: {e}"));
        }
        let flushed = auditor.flush_blocking();
        problems.extend(flushed.errors.iter().map(|e| {
            format!(
                "policy {name}: {e} ({} batch(es) kept for a later run)",
                flushed.pending
            )
        }));
    }
    problems
}

/// A policy or sink name as a single path component.
fn safe_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() || cleaned.chars().all(|c| c == '.') {
        "_".into()
    } else {
        cleaned
    }
}

fn write_synced(path: &Path, body: &str) -> Result<(), AuditError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| AuditError::io(path, e))?;
    file.write_all(body.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| AuditError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_one_component() {
        assert_eq!(safe_name("base"), "base");
        assert_eq!(safe_name("../etc"), ".._etc");
        assert_eq!(safe_name(".."), "_");
        assert_eq!(safe_name("a/b c"), "a_b_c");
    }
}
