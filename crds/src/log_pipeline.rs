//! `LogPipeline`: tail files, parse and transform lines, forward them to sinks at least once.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    duration, unique_named_list, Batch, Condition, Duration, Headers, LabelSelector, S3Target,
    SecretVar,
};
use crate::one_of;

/// Tail, transform and forward logs on every node the selector matches.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "LogPipeline tails files on matching nodes, parses and transforms each line, and forwards events to sinks at least once.",
    version = "v1alpha1",
    kind = "LogPipeline",
    shortname = "lp",
    category = "driftless",
    status = "LogPipelineStatus",
    printcolumn = r#"{"name":"SOURCES","type":"integer","jsonPath":".status.sources"}"#,
    printcolumn = r#"{"name":"SINKS","type":"integer","jsonPath":".status.sinks"}"#,
    printcolumn = r#"{"name":"TARGETED","type":"integer","jsonPath":".status.targeted"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogPipelineSpec {
    /// Nodes this pipeline runs on. Empty selects every node. Ignored on standalone hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// What to read.
    #[schemars(schema_with = "sources_schema")]
    pub sources: Vec<LogSource>,
    /// Changes applied to every event, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub transforms: Vec<Transform>,
    /// Where events go; every event goes to each sink.
    #[schemars(schema_with = "sinks_schema")]
    pub sinks: Vec<Sink>,
    /// In-flight limits; a full buffer pauses reading instead of growing memory.
    #[serde(default)]
    pub buffer: BufferConfig,
    /// Secrets available as `${secret:NAME}` in sink credentials and headers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "secret_vars_schema")]
    pub secrets: Vec<SecretVar>,
}

fn sources_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = unique_named_list::<LogSource>(gen, 32);
    schema.insert("minItems".into(), 1.into());
    schema
}

fn sinks_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = unique_named_list::<Sink>(gen, 16);
    schema.insert("minItems".into(), 1.into());
    schema
}

fn secret_vars_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<SecretVar>(gen, 256)
}

/// Files to tail.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("self.kubernetes || size(self.include) > 0").message("include must list at least one glob unless kubernetes is true"))]
#[x_kube(validation = Rule::new("(self.format == 'regex') == has(self.regex)").message("regex must be set exactly when format is regex"))]
pub struct LogSource {
    /// Name, unique in the pipeline; the `source` field of every event and a metric label.
    #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// Glob patterns of files to read (`/var/log/app/*.log`, `**` allowed); re-scanned for new
    /// files.
    #[serde(default)]
    #[schemars(length(max = 64))]
    pub include: Vec<String>,
    /// Glob patterns of files to skip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<String>,
    /// Shorthand for container logs: reads `/var/log/containers/*.log` with the `cri` format and
    /// adds `namespace`, `pod` and `container` fields taken from the file name.
    #[serde(default)]
    pub kubernetes: bool,
    /// Where to start in a file seen for the first time. Files with a checkpoint always resume
    /// from it.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How each line is parsed.
    #[serde(default)]
    pub format: LogFormat,
    /// Options of the `regex` format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<RegexParser>,
    /// Join several physical lines into one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiline: Option<Multiline>,
    /// Bytes at the start of a file used, with device and inode, to recognise it after rotation
    /// and inode reuse.
    #[serde(default = "default_fingerprint_bytes")]
    #[schemars(range(min = 16, max = 4096))]
    pub fingerprint_bytes: u32,
}

fn default_fingerprint_bytes() -> u32 {
    256
}

/// Where to start reading a new file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ReadFrom {
    /// The first byte: nothing already in the file is missed.
    #[default]
    Beginning,
    /// The current end: only lines written from now on.
    End,
}

/// The line formats (parsers). A line that fails to parse is kept raw with an `error` field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum LogFormat {
    /// The line as it is, in the `message` field.
    #[default]
    Plain,
    /// Container runtime (CRI) log lines; `P` partial lines are reassembled.
    Cri,
    /// One JSON object per line; its fields become event fields.
    Json,
    /// `key=value` pairs.
    Logfmt,
    /// A regular expression with named captures (`regex.pattern`).
    Regex,
    /// Syslog lines, RFC 3164 or RFC 5424 (detected per line).
    Syslog,
}

/// Options of the `regex` format.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegexParser {
    /// A regular expression with named captures, which become fields.
    #[schemars(length(min = 1))]
    pub pattern: String,
}

/// Joining lines into events: either a new event starts at lines matching `startPattern`, or
/// lines matching `continuationPattern` belong to the previous event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.startPattern) != has(self.continuationPattern)").message("exactly one of startPattern and continuationPattern must be set"))]
pub struct Multiline {
    /// A line matching this regular expression starts a new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_pattern: Option<String>,
    /// A line matching this regular expression continues the previous event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuation_pattern: Option<String>,
    /// Most lines in one event.
    #[serde(default = "default_multiline_lines")]
    #[schemars(range(min = 1))]
    pub max_lines: u32,
    /// Most bytes in one event.
    #[serde(default = "default_multiline_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u32,
    /// Emit a pending event after this long without a new line.
    #[serde(default = "default_multiline_timeout")]
    pub timeout: Duration,
}

fn default_multiline_lines() -> u32 {
    500
}
fn default_multiline_bytes() -> u32 {
    1 << 20
}
fn default_multiline_timeout() -> Duration {
    duration("1s")
}

/// A regular expression over one field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldMatch {
    /// Field name (`message` for the line).
    pub field: String,
    /// Regular expression; an event matches when it matches somewhere in the field.
    pub pattern: String,
}

/// Redaction of sensitive text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Redact {
    /// Fields to scan (`message` when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Regular expressions whose matches are replaced.
    #[schemars(length(min = 1))]
    pub patterns: Vec<String>,
    /// The replacement text.
    #[serde(default = "default_replacement")]
    pub replacement: String,
}

fn default_replacement() -> String {
    "<redacted>".into()
}

one_of! {
    /// One transform step.
    pub struct Transform (TransformFields) {
    }
    /// The kind of transform: exactly one.
    pub kind: TransformKind ("transform") {
        /// Keep only events whose field matches.
        "include" include => Include(FieldMatch),
        /// Drop events whose field matches.
        "exclude" exclude => Exclude(FieldMatch),
        /// Add (or overwrite) fields with fixed values.
        "addFields" add_fields => AddFields(BTreeMap<String, String>),
        /// Remove fields.
        "dropFields" drop_fields => DropFields(Vec<String>),
        /// Rename fields: `{from: to}`.
        "renameFields" rename_fields => RenameFields(BTreeMap<String, String>),
        /// Replace sensitive text.
        "redact" redact => Redact(Redact),
        /// A WebAssembly plugin: event in, zero or more events out.
        "plugin" plugin => Plugin(crate::plugin::PluginUse),
    }
}

one_of! {
    /// One destination for events.
    pub struct Sink (SinkFields) {
        /// Name, unique in the pipeline; a metric label.
        #[schemars(regex(pattern = r"^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$"), length(max = 63))]
        pub name: String,
    }
    /// The kind of sink: exactly one.
    pub kind: SinkKind ("sink kind") {
        /// Files in a local directory.
        "file" file => File(FileSink),
        /// Gzipped objects in an S3 bucket.
        "s3" s3 => S3(S3Sink),
        /// A syslog server.
        "syslog" syslog => Syslog(SyslogSink),
        /// An HTTP endpoint: JSON lines, Elasticsearch bulk or Loki push.
        "http" http => Http(HttpSink),
    }
}

/// Events as JSON lines in files, one per pipeline and source, rotated by size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileSink {
    /// Directory for the files.
    pub directory: String,
    /// Rotate a file past this size.
    #[serde(default = "default_file_bytes")]
    pub max_bytes: u64,
    /// Keep this many rotated files per source.
    #[serde(default = "default_file_count")]
    pub max_files: u32,
    /// Write the raw line instead of the JSON event.
    #[serde(default)]
    pub raw: bool,
}

fn default_file_bytes() -> u64 {
    100 << 20
}
fn default_file_count() -> u32 {
    5
}

/// Batches as gzipped objects `PREFIX/NODE/DATE/TIME-SEQ.log.gz`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Sink {
    /// The bucket and how to reach it.
    pub target: S3Target,
    /// Compress objects with gzip.
    #[serde(default = "yes")]
    pub gzip: bool,
    /// When a batch is sent.
    #[serde(default)]
    pub batch: Batch,
}

fn yes() -> bool {
    true
}

/// Syslog transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SyslogProtocol {
    /// UDP datagrams (lossy by nature: no acknowledgement).
    Udp,
    /// TCP with octet-counted framing (RFC 6587).
    #[default]
    Tcp,
    /// TLS over TCP (RFC 5425).
    Tls,
}

/// Syslog message format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum SyslogFormat {
    /// RFC 5424.
    #[default]
    Rfc5424,
    /// RFC 3164 (BSD).
    Rfc3164,
}

/// Events to a syslog server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SyslogSink {
    /// `host:port` of the server.
    pub address: String,
    /// Transport.
    #[serde(default)]
    pub protocol: SyslogProtocol,
    /// Message format.
    #[serde(default)]
    pub format: SyslogFormat,
    /// Facility name (`user`, `daemon`, `local0` ... `local7`).
    #[serde(default = "default_facility")]
    pub facility: String,
    /// APP-NAME / TAG; the event's `app` field wins when present.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// PEM file of CA certificates to trust (`tls` only); the system roots when unset. May be
    /// the PEM text itself, e.g. `${secret:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// PEM file of the client certificate chain for mutual TLS (`tls` only; needs `keyFile`).
    /// May be the PEM text itself, e.g. `${secret:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file of the client private key (`tls` only; needs `certFile`). May be the PEM text
    /// itself, usually `${secret:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
    /// Name the server certificate must be valid for (`tls` only); the host of `address` when
    /// unset. The certificate is always verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

fn default_facility() -> String {
    "user".into()
}
fn default_app_name() -> String {
    "driftless".into()
}

/// HTTP body encodings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HttpEncoding {
    /// Newline-delimited JSON events.
    #[default]
    Ndjson,
    /// Elasticsearch `_bulk` API (index actions).
    ElasticsearchBulk,
    /// Grafana Loki push API (JSON).
    LokiPush,
}

/// Events to an HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSink {
    /// Endpoint URL (for Elasticsearch, the `_bulk` URL; for Loki, `/loki/api/v1/push`).
    pub url: String,
    /// Body encoding.
    #[serde(default)]
    pub encoding: HttpEncoding,
    /// Extra headers, such as `Authorization: Bearer ${secret:TOKEN}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: Headers,
    /// Compress bodies with gzip (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// Elasticsearch index name (`elasticsearchBulk`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<String>,
    /// Loki stream labels (`lokiPush`); values may name event fields as `{{field}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// When a batch is sent.
    #[serde(default)]
    pub batch: Batch,
    /// Time allowed for one request.
    #[serde(default = "default_http_timeout")]
    pub timeout: Duration,
}

fn default_http_timeout() -> Duration {
    duration("30s")
}

/// In-flight limits of a pipeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BufferConfig {
    /// Most events in flight between reading and acknowledgement.
    #[serde(default = "default_buffer_events")]
    #[schemars(range(min = 1))]
    pub max_events: u64,
    /// Most bytes in flight between reading and acknowledgement.
    #[serde(default = "default_buffer_bytes")]
    #[schemars(range(min = 1024))]
    pub max_bytes: u64,
    /// Keep unacknowledged batches in this directory so they survive a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_path: Option<String>,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_events: default_buffer_events(),
            max_bytes: default_buffer_bytes(),
            disk_path: None,
        }
    }
}

fn default_buffer_events() -> u64 {
    50_000
}
fn default_buffer_bytes() -> u64 {
    16 << 20
}

/// Observed state of a LogPipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogPipelineStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Number of sources.
    #[serde(default)]
    pub sources: i32,
    /// Number of sinks.
    #[serde(default)]
    pub sinks: i32,
    /// Nodes the selector matches.
    #[serde(default)]
    pub targeted: i32,
    /// `Ready` (and kstatus's `Reconciling`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
