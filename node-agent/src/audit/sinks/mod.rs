//! Where audit records go: one module per sink kind. A sink takes one spooled batch (JSON
//! lines) at a time and returns only once the destination acknowledged it.

pub mod directory;
pub mod http;
pub mod s3;

use driftless_crds::apply_policy::{AuditSink, AuditSinkKind};
use driftless_crds::secret::{expand, Expanded, Lookup};

use super::AuditError;

/// A configured sink.
#[derive(Debug)]
pub enum Sink {
    /// JSON lines in a local directory.
    Directory(directory::DirectorySink),
    /// JSON POSTs.
    Http(http::HttpSink),
    /// Objects in a bucket.
    S3(s3::S3Sink),
}

/// Substitutes `${secret:...}`/`${env:...}` in a sink field.
pub(crate) fn expand_field(
    sink: &str,
    field: &str,
    value: &str,
    lookup: &dyn Lookup,
) -> Result<Expanded, AuditError> {
    expand(value, lookup)
        .map_err(|e| AuditError::Config(format!("audit sink {sink}: {field}: {e}")))
}

impl Sink {
    /// A sink from its configuration, secrets resolved.
    pub fn new(config: &AuditSink, host: &str, lookup: &dyn Lookup) -> Result<Self, AuditError> {
        Ok(match &config.kind {
            AuditSinkKind::Directory(c) => Sink::Directory(directory::DirectorySink::new(c)),
            AuditSinkKind::Http(c) => Sink::Http(http::HttpSink::new(&config.name, c, lookup)?),
            AuditSinkKind::S3(c) => Sink::S3(s3::S3Sink::new(&config.name, c, host, lookup)?),
        })
    }

    /// Delivers one batch: `batch` is its stable name (the same on every retry), `body` its
    /// JSON lines.
    pub async fn deliver(&self, batch: &str, body: &str) -> Result<(), AuditError> {
        match self {
            Sink::Directory(s) => s.deliver(body),
            Sink::Http(s) => s.deliver(body).await,
            Sink::S3(s) => s.deliver(batch, body).await,
        }
    }
}
