//! The log pipeline: tail files, parse and transform every line, forward events to sinks at
//! least once.
//!
//! One [`pipeline::Pipeline`] per `LogPipeline` resource runs on its own thread:
//! [`sources::file`] reads complete lines (rotation, truncation and inode reuse aware),
//! [`parsers`] turn them into events, [`transforms`] change them in order, [`sinks`] batch and
//! send them, and [`checkpoint`] records read offsets only once every sink acknowledged the
//! events below them.
//!
//! Guarantees: at-least-once delivery across crashes and restarts (a crash re-sends at most the
//! batches in flight); memory is bounded by the pipeline's `buffer` (a full buffer pauses
//! reading). With `buffer.diskPath`, lines read but not yet delivered are kept in [`disk`] and
//! survive a restart even when their source file is gone. Caveats: lines written to a file that
//! is deleted, or rotated out of the globs and deleted, before the agent read them are lost; UDP
//! syslog has no acknowledgement.

pub mod buffer;
pub mod checkpoint;
pub mod disk;
pub mod metrics;
pub mod parsers;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod transforms;

use std::sync::Arc;

use serde_json::{Map, Value};

/// The fields of one event.
pub type Fields = Map<String, Value>;

/// One log event: the fields a parser produced plus `message`, `source`, `file` and
/// `timestamp`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Event {
    /// Name of the source the event came from (also its `source` field).
    pub source: Arc<str>,
    /// The raw line (or joined lines) as read; file sinks with `raw: true` write this.
    pub raw: String,
    /// Fields.
    pub fields: Fields,
}

impl Event {
    /// Bytes this event counts for in buffers and metrics (the raw line plus a newline).
    pub fn size(&self) -> usize {
        self.raw.len() + 1
    }

    /// A string field, if present and a string.
    pub fn str_field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).and_then(Value::as_str)
    }

    /// The event as one JSON object.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.fields).unwrap_or_else(|_| "{}".to_owned())
    }

    /// Appends the event as one JSON line.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        if serde_json::to_writer(&mut *out, &self.fields).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.push(b'\n');
    }
}

/// Errors of the log pipeline.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A configuration value that cannot be used (bad regex, glob, URL, secret).
    #[error("{0}")]
    Config(String),
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A sink could not deliver a batch.
    #[error("sink {sink}: {message}")]
    Send {
        /// Sink name.
        sink: String,
        /// What went wrong (never contains secrets).
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
}

impl LogError {
    /// A short label for the `kind` label of the error counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            LogError::Config(_) => "config",
            LogError::Io { .. } => "io",
            LogError::Send { .. } => "send",
        }
    }

    pub(crate) fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        LogError::Io {
            path: path.as_ref().display().to_string(),
            source,
        }
    }
}
