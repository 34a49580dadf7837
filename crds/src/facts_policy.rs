//! `FactsPolicy`: which node facts and metrics to collect, thresholds on them, and where to export.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    duration, unique_named_list, Condition, Duration, LabelSelector, S3Target, SecretVar,
};
use crate::one_of;

/// Node facts and metrics: collectors, custom facts, thresholds and exports.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "driftless.dev",
    doc = "FactsPolicy selects the node facts and metrics collected on matching nodes, thresholds on them, and where they are exported.",
    version = "v1alpha1",
    kind = "FactsPolicy",
    shortname = "fp",
    category = "driftless",
    status = "FactsPolicyStatus",
    printcolumn = r#"{"name":"INTERVAL","type":"string","jsonPath":".spec.interval"}"#,
    printcolumn = r#"{"name":"TARGETED","type":"integer","jsonPath":".status.targeted"}"#,
    printcolumn = r#"{"name":"BREACHED","type":"integer","jsonPath":".status.breached"}"#,
    printcolumn = r#"{"name":"READY","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"AGE","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FactsPolicySpec {
    /// Nodes this policy applies to. Empty selects every node. Ignored on standalone hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,
    /// How often facts are gathered and thresholds evaluated.
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Which built-in collectors run, and their options.
    #[serde(default)]
    pub collectors: Collectors,
    /// Custom facts from commands and files, exported as `driftless_fact` metrics and in the
    /// facts inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "facts_schema")]
    pub facts: Vec<CustomFact>,
    /// Alert-like conditions on metric values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "thresholds_schema")]
    pub thresholds: Vec<Threshold>,
    /// Where facts and metrics go.
    #[serde(default)]
    pub export: Export,
    /// Secrets available as `${secret:NAME}` (for example in S3 credentials).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "secret_vars_schema")]
    pub secrets: Vec<SecretVar>,
}

fn default_interval() -> Duration {
    duration("60s")
}

fn facts_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<CustomFact>(gen, 128)
}

fn thresholds_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<Threshold>(gen, 256)
}

fn secret_vars_schema(gen: &mut schemars::SchemaGenerator) -> schemars::Schema {
    unique_named_list::<SecretVar>(gen, 256)
}

/// The built-in collectors, named as node_exporter names them.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum CollectorName {
    /// Per-CPU seconds in each mode, and frequency where available.
    Cpu,
    /// `/proc/meminfo`.
    Meminfo,
    /// Load averages.
    Loadavg,
    /// Filesystem sizes and free space.
    Filesystem,
    /// Block device I/O statistics.
    Diskstats,
    /// Network interface statistics.
    Netdev,
    /// Context switches, interrupts, forks, boot time.
    Stat,
    /// `/proc/vmstat`.
    Vmstat,
    /// Pressure stall information (PSI).
    Pressure,
    /// Kernel name and version (`node_uname_info`).
    Uname,
    /// OS release (`node_os_info`).
    Os,
    /// The system clock.
    Time,
    /// Allocated file descriptors.
    Filefd,
    /// Socket statistics.
    Sockstat,
    /// bcache cache sets, backing and cache devices.
    Bcache,
    /// Bonding interfaces: configured and active slaves.
    Bonding,
    /// Btrfs space allocation and devices.
    Btrfs,
    /// EDAC memory controller error counters.
    Edac,
    /// Fibre Channel host adapters.
    Fibrechannel,
    /// InfiniBand devices and port counters.
    Infiniband,
    /// IP Virtual Server totals and backends.
    Ipvs,
    /// Linux software RAID (md) arrays.
    Mdadm,
    /// NFS client RPC statistics.
    Nfs,
    /// NFS server statistics.
    Nfsd,
    /// NVMe controllers (`node_nvme_info`).
    Nvme,
    /// SCSI tape drive statistics.
    Tapestats,
    /// XFS per-filesystem statistics.
    Xfs,
    /// OpenZFS kstats and pool state.
    Zfs,
    /// TCP/IP statistics from `/proc/net/netstat`, `snmp` and `snmp6`.
    Netstat,
    /// Kernel entropy pool.
    Entropy,
    /// Netfilter connection tracking.
    Conntrack,
    /// ARP table entries per interface.
    Arp,
    /// Per-CPU network softirq statistics.
    Softnet,
    /// Scheduler statistics per CPU.
    Schedstat,
    /// Bytes queued in UDP sockets.
    #[serde(rename = "udp_queues")]
    UdpQueues,
    /// Thermal zone temperatures and cooling devices.
    #[serde(rename = "thermal_zone")]
    ThermalZone,
    /// Network interface properties from `/sys/class/net`.
    Netclass,
    /// DMI (SMBIOS) identity of the machine.
    Dmi,
    /// Metrics other programs write into `*.prom` files.
    Textfile,
    /// The kernel clock discipline (`adjtimex`).
    Timex,
    /// Hardware sensors of `/sys/class/hwmon`.
    Hwmon,
    /// Intel RAPL energy counters.
    Rapl,
    /// SELinux state.
    Selinux,
    /// Batteries and power adapters.
    Powersupplyclass,
    /// Watchdog timers of `/sys/class/watchdog`.
    Watchdog,
}

/// Which collectors run. Every collector is on unless listed in `disable`; `enable`, when set,
/// replaces the default set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Collectors {
    /// Run exactly these collectors (the default set when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enable: Vec<CollectorName>,
    /// Do not run these collectors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable: Vec<CollectorName>,
    /// Options of the `filesystem` collector.
    #[serde(default)]
    pub filesystem: FilesystemOptions,
    /// Options of the `netdev` collector.
    #[serde(default)]
    pub netdev: DeviceFilter,
    /// Options of the `diskstats` collector.
    #[serde(default)]
    pub diskstats: DeviceFilter,
    /// Options of the `textfile` collector.
    #[serde(default)]
    pub textfile: TextfileOptions,
    /// Options of the `netclass` collector.
    #[serde(default)]
    pub netclass: NetclassOptions,
}

/// Options of the `netclass` collector (node_exporter's flag of the same name).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetclassOptions {
    /// Regular expression of interfaces to leave out (none when unset, node_exporter's `^$`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored_devices: Option<String>,
}

/// Options of the `textfile` collector (node_exporter's `--collector.textfile.directory`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TextfileOptions {
    /// Directories whose `*.prom` files (Prometheus text format) are exported on every scrape:
    /// absolute host paths, read below the host root; an entry may be a glob pattern (`*`,
    /// `?`, `[...]`) matching several directories. Empty: the collector exports nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub directories: Vec<String>,
}

/// Options of the `filesystem` collector (node_exporter's flags of the same names).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilesystemOptions {
    /// Regular expression of mount points to leave out.
    #[serde(default = "default_mount_points_exclude")]
    pub mount_points_exclude: String,
    /// Regular expression of filesystem types to leave out.
    #[serde(default = "default_fs_types_exclude")]
    pub fs_types_exclude: String,
    /// Regular expression of mount points to keep (all when empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_points_include: Option<String>,
    /// Regular expression of devices to leave out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_exclude: Option<String>,
}

impl Default for FilesystemOptions {
    fn default() -> Self {
        Self {
            mount_points_exclude: default_mount_points_exclude(),
            fs_types_exclude: default_fs_types_exclude(),
            mount_points_include: None,
            devices_exclude: None,
        }
    }
}

/// node_exporter's default for `--collector.filesystem.mount-points-exclude`.
fn default_mount_points_exclude() -> String {
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
        .into()
}

/// node_exporter's default for `--collector.filesystem.fs-types-exclude`.
fn default_fs_types_exclude() -> String {
    "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs|squashfs|sysfs|tracefs)$".into()
}

/// Include and exclude regular expressions over device names.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceFilter {
    /// Keep only devices matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_include: Option<String>,
    /// Leave out devices matching this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices_exclude: Option<String>,
}

/// How a custom fact's output is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FactFormat {
    /// The trimmed text; a number becomes a metric value.
    #[default]
    Text,
    /// A JSON document; numeric leaves become metrics.
    Json,
    /// `KEY=value` lines, as in `/etc/os-release`.
    KeyValue,
}

one_of! {
    /// A fact read from a command or a file.
    pub struct CustomFact (CustomFactFields) {
        /// Name of the fact, unique in the list; `facts.custom.NAME` in templates.
        #[schemars(regex(pattern = r"^[a-z][a-z0-9_]*$"), length(max = 63))]
        pub name: String,
        /// How the output is read.
        #[serde(default)]
        pub format: FactFormat,
    }
    /// Where the fact comes from: exactly one.
    pub source: CustomFactSource ("fact source") {
        /// The output of a command.
        "command" command => Command(CommandFact),
        /// The content of a file.
        "file" file => File(FileFact),
        /// The facts and metric samples of a WebAssembly plugin (`format` does not apply).
        "plugin" plugin => Plugin(crate::plugin::PluginUse),
    }
}

/// A fact from a command's standard output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommandFact {
    /// Program and arguments, run without a shell.
    #[schemars(length(min = 1))]
    pub argv: Vec<String>,
    /// Time allowed; the fact is reported missing when it runs longer.
    #[serde(default = "default_fact_timeout")]
    pub timeout: Duration,
}

fn default_fact_timeout() -> Duration {
    duration("10s")
}

/// A fact from a file's content.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileFact {
    /// Absolute path, below the host root.
    pub path: String,
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Comparison {
    /// `>`
    GreaterThan,
    /// `>=`
    GreaterOrEqual,
    /// `<`
    LessThan,
    /// `<=`
    LessOrEqual,
    /// `==`
    Equal,
    /// `!=`
    NotEqual,
}

/// How bad a breached threshold is (ordered: `Info` < `Warning` < `Critical`).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    #[default]
    Warning,
    /// Needs attention now.
    Critical,
}

/// A condition on a metric that, held for `for`, counts as breached.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Threshold {
    /// Name, unique in the list; the `threshold` label of `driftless_threshold_breached`.
    #[schemars(regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]*$"), length(max = 63))]
    pub name: String,
    /// Metric name, such as `node_filesystem_avail_bytes`.
    #[schemars(regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"))]
    pub metric: String,
    /// Label matchers: each value is a regular expression the label must fully match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How the metric value is compared with `value`.
    pub comparison: Comparison,
    /// The value to compare with.
    pub value: f64,
    /// How long the condition must hold before it counts as breached.
    #[serde(default = "zero", rename = "for")]
    pub for_: Duration,
    /// Severity of a breach.
    #[serde(default)]
    pub severity: Severity,
}

fn zero() -> Duration {
    duration("0s")
}

/// Where facts and metrics go.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Export {
    /// Serve metrics on the agent's `/metrics` endpoint.
    #[serde(default = "yes")]
    pub prometheus: bool,
    /// Push gzipped JSON snapshots of facts and metric values to
    /// `s3://BUCKET/PREFIX/NODE/TIMESTAMP.json.gz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// How often a snapshot is pushed to `s3`.
    #[serde(default = "default_push_interval")]
    pub push_interval: Duration,
}

impl Default for Export {
    fn default() -> Self {
        Self {
            prometheus: true,
            s3: None,
            push_interval: default_push_interval(),
        }
    }
}

fn yes() -> bool {
    true
}

fn default_push_interval() -> Duration {
    duration("5m")
}

/// Observed state of a FactsPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactsPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Nodes the selector matches.
    #[serde(default)]
    pub targeted: i32,
    /// Nodes reporting facts for this generation.
    #[serde(default)]
    pub reporting: i32,
    /// Thresholds currently breached, summed over nodes.
    #[serde(default)]
    pub breached: i32,
    /// `Ready` (and kstatus's `Reconciling`, `Stalled`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
