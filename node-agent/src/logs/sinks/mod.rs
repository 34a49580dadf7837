//! Sinks: one module per kind. Each batches encoded events and sends a batch as a whole; a
//! batch counts as delivered only when `send` returned `Ok` (the acknowledgement checkpoints
//! wait for).

pub mod file;
pub mod http;
pub mod s3;
pub mod syslog;

use std::time::{Duration, Instant};

use driftless_crds::common::Batch;
use driftless_crds::log_pipeline::{Sink, SinkKind};
use driftless_crds::secret::{expand, Lookup, SecretString};

use super::{Event, LogError};

/// What sinks need to know about where they run.
pub struct SinkContext<'a> {
    /// Pipeline name.
    pub pipeline: &'a str,
    /// Node name (`NODE_NAME`, else the host name).
    pub node: &'a str,
    /// Resolves `${env:...}` and `${secret:...}`.
    pub lookup: &'a dyn Lookup,
}

impl SinkContext<'_> {
    /// Expands references in a value; the result is secret when any reference was.
    pub fn expand(&self, what: &str, text: &str) -> Result<SecretString, LogError> {
        expand(text, self.lookup)
            .map(|e| SecretString::new(e.value))
            .map_err(|e| LogError::Config(format!("{what}: {e}")))
    }
}

/// The encoder and transport of one sink kind.
#[derive(Debug)]
pub enum Transport {
    /// Files.
    File(file::FileSink),
    /// HTTP.
    Http(http::HttpSink),
    /// S3.
    S3(s3::S3Sink),
    /// Syslog.
    Syslog(syslog::SyslogSink),
}

impl Transport {
    fn add(&mut self, event: &Event) {
        match self {
            Transport::File(s) => s.add(event),
            Transport::Http(s) => s.add(event),
            Transport::S3(s) => s.add(event),
            Transport::Syslog(s) => s.add(event),
        }
    }

    async fn send(&mut self) -> Result<(), LogError> {
        match self {
            Transport::File(s) => s.send(),
            Transport::Http(s) => s.send().await,
            Transport::S3(s) => s.send().await,
            Transport::Syslog(s) => s.send().await,
        }
    }

    fn clear(&mut self) {
        match self {
            Transport::File(s) => s.clear(),
            Transport::Http(s) => s.clear(),
            Transport::S3(s) => s.clear(),
            Transport::Syslog(s) => s.clear(),
        }
    }
}

/// A sink with its batch: which chunks it holds, and when the batch is due.
#[derive(Debug)]
pub struct SinkState {
    /// Sink name.
    pub name: String,
    /// Encoder and transport.
    pub transport: Transport,
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
    /// Events in the batch.
    pub events: usize,
    /// Bytes in the batch (before encoding).
    pub bytes: usize,
    started: Option<Instant>,
    /// First chunk with events in the batch.
    first_seq: Option<u64>,
    /// Every chunk up to this one has been added.
    last_seq: u64,
}

impl SinkState {
    /// Builds a sink from its configuration.
    pub fn new(sink: &Sink, ctx: &SinkContext<'_>) -> Result<Self, LogError> {
        let default_batch = Batch::default();
        let (transport, batch) = match &sink.kind {
            SinkKind::File(c) => (
                Transport::File(file::FileSink::new(c, ctx.pipeline)?),
                Batch {
                    max_age: driftless_crds::common::Duration::parse("200ms")
                        .unwrap_or(default_batch.max_age.clone()),
                    ..default_batch
                },
            ),
            SinkKind::Http(c) => (
                Transport::Http(http::HttpSink::new(&sink.name, c, ctx)?),
                c.batch.clone(),
            ),
            SinkKind::S3(c) => (
                Transport::S3(s3::S3Sink::new(&sink.name, c, ctx)?),
                c.batch.clone(),
            ),
            SinkKind::Syslog(c) => (
                Transport::Syslog(syslog::SyslogSink::new(&sink.name, c, ctx)?),
                Batch {
                    max_age: driftless_crds::common::Duration::parse("200ms")
                        .unwrap_or(default_batch.max_age.clone()),
                    ..default_batch
                },
            ),
        };
        Ok(Self {
            name: sink.name.clone(),
            transport,
            max_events: (batch.max_events as usize).max(1),
            max_bytes: (batch.max_bytes as usize).max(1),
            max_age: batch.max_age.get(),
            events: 0,
            bytes: 0,
            started: None,
            first_seq: None,
            last_seq: 0,
        })
    }

    /// Adds the events of chunk `seq`.
    pub fn add(&mut self, seq: u64, events: &[Event], now: Instant) {
        if !events.is_empty() {
            if self.first_seq.is_none() {
                self.first_seq = Some(seq);
                self.started = Some(now);
            }
            for event in events {
                self.transport.add(event);
                self.events += 1;
                self.bytes += event.size();
            }
        }
        self.last_seq = seq;
    }

    /// Events and bytes the batch can still take before it is full.
    pub fn room(&self) -> (usize, usize) {
        (
            self.max_events.saturating_sub(self.events),
            self.max_bytes.saturating_sub(self.bytes),
        )
    }

    /// Whether the batch should be sent now.
    pub fn due(&self, now: Instant) -> bool {
        self.events > 0
            && (self.events >= self.max_events
                || self.bytes >= self.max_bytes
                || self
                    .started
                    .is_some_and(|s| now.duration_since(s) >= self.max_age))
    }

    /// When the batch becomes due by age.
    pub fn deadline(&self) -> Option<Instant> {
        self.started.map(|s| s + self.max_age)
    }

    /// Every chunk up to this sequence number is delivered by this sink.
    pub fn acked(&self) -> u64 {
        match self.first_seq {
            Some(first) => first - 1,
            None => self.last_seq,
        }
    }

    /// Sends the batch once.
    pub async fn send(&mut self) -> Result<(), LogError> {
        self.transport.send().await
    }

    /// Forgets the batch after it was delivered (or dropped).
    pub fn delivered(&mut self) {
        self.transport.clear();
        self.events = 0;
        self.bytes = 0;
        self.started = None;
        self.first_seq = None;
    }
}

/// The node name events are labelled with: `NODE_NAME`, else the host name.
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "localhost".into())
}
