//! The task types of an ApplyPolicy. Each is idempotent: applying it twice changes nothing the
//! second time, and every run reports `unchanged`, `changed` or `failed` with a diff.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Presence;

/// Pattern for octal file modes such as `0644` or `2755`.
pub const MODE_PATTERN: &str = r"^0?[0-7]{3,4}$";

/// Manage one file: its content (inline, a template, or a copy of a source file), mode and owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("[has(self.content), has(self.template), has(self.source)].filter(x, x).size() <= 1").message("at most one of content, template and source may be set"))]
pub struct FileTask {
    /// Absolute path of the file on the host (below `--root`).
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// `present` writes the file; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
    /// Literal content. May use `${secret:NAME}`; secret-derived content is shown as
    /// `<redacted>` in diffs and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A Jinja template (minijinja) rendered with `facts` and `vars` in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Path of a file to copy, relative to the config directory on a standalone host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Octal permission bits, as a string: `"0644"`. Unset leaves the mode of an existing
    /// file alone and uses `0644` for a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[0-7]{3,4}$"))]
    pub mode: Option<String>,
    /// Owner, by user name or numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by group name or numeric gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Manage a directory and, optionally, the mode and owner of everything below it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectoryTask {
    /// Absolute path of the directory.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// `present` creates it (with parents); `absent` removes it and its content.
    #[serde(default)]
    pub state: Presence,
    /// Octal permission bits, as a string: `"0755"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^0?[0-7]{3,4}$"))]
    pub mode: Option<String>,
    /// Owner, by user name or numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group, by group name or numeric gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Apply `owner` and `group` (not `mode`) to everything below the directory too.
    #[serde(default)]
    pub recurse: bool,
}

/// Manage a symbolic link.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SymlinkTask {
    /// Absolute path of the link.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// What the link points to, written into the link as given.
    #[serde(default)]
    pub target: String,
    /// `present` creates or fixes the link; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
    /// Replace a regular file or directory that stands where the link should be.
    #[serde(default)]
    pub force: bool,
}

/// Ensure one line is present in (or absent from) a file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.insertAfter) && has(self.insertBefore))").message("insertAfter and insertBefore are mutually exclusive"))]
#[x_kube(validation = Rule::new("self.state == 'absent' ? (has(self.regexp) || has(self.line)) : has(self.line)").message("line is required unless state is absent with a regexp"))]
pub struct LineInFileTask {
    /// Absolute path of the file.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// The line to ensure. With `regexp`, the last matching line is replaced by it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<String>,
    /// A regular expression selecting the line to replace (present) or the lines to remove
    /// (absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<String>,
    /// `present` ensures the line; `absent` removes matching lines.
    #[serde(default)]
    pub state: Presence,
    /// Insert a new line after the last line matching this regular expression, or `EOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_after: Option<String>,
    /// Insert a new line before the last line matching this regular expression, or `BOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_before: Option<String>,
    /// Create the file when it does not exist.
    #[serde(default)]
    pub create: bool,
}

/// Manage a block of lines between two marker lines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!(has(self.insertAfter) && has(self.insertBefore))").message("insertAfter and insertBefore are mutually exclusive"))]
pub struct BlockInFileTask {
    /// Absolute path of the file.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// The lines between the markers.
    #[serde(default)]
    pub block: String,
    /// The marker line; `{mark}` becomes `markerBegin` or `markerEnd`.
    #[serde(default = "default_marker")]
    pub marker: String,
    /// Replaces `{mark}` in the opening marker.
    #[serde(default = "default_marker_begin")]
    pub marker_begin: String,
    /// Replaces `{mark}` in the closing marker.
    #[serde(default = "default_marker_end")]
    pub marker_end: String,
    /// `present` ensures the block; `absent` removes it with its markers.
    #[serde(default)]
    pub state: Presence,
    /// Insert a new block after the last line matching this regular expression, or `EOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_after: Option<String>,
    /// Insert a new block before the last line matching this regular expression, or `BOF`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insert_before: Option<String>,
    /// Create the file when it does not exist.
    #[serde(default)]
    pub create: bool,
}

fn default_marker() -> String {
    "# {mark} DRIFTLESS MANAGED BLOCK".into()
}
fn default_marker_begin() -> String {
    "BEGIN".into()
}
fn default_marker_end() -> String {
    "END".into()
}

/// Which package manager a `package` task uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PackageManager {
    /// Detect from the host: apt/dpkg, dnf/rpm or apk.
    #[default]
    Auto,
    /// Debian and Ubuntu.
    Apt,
    /// Fedora, RHEL and derivatives.
    Dnf,
    /// Alpine.
    Apk,
}

/// Install, pin or remove a package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("!has(self.version) || self.state != 'absent'").message("version cannot be set when state is absent"))]
pub struct PackageTask {
    /// Package name.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// `present` installs it; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
    /// Exact version to install (and keep). Unset accepts any installed version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Package manager; detected from the host when `auto`.
    #[serde(default)]
    pub manager: PackageManager,
}

/// Running state of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ServiceState {
    /// Running.
    Started,
    /// Not running.
    Stopped,
    /// Restarted every time the task runs; use it in handlers triggered by `notify`.
    Restarted,
    /// Reloaded every time the task runs; use it in handlers triggered by `notify`.
    Reloaded,
}

/// Manage a systemd unit: enabled at boot, running or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.enabled) || has(self.state)").message("set enabled, state or both"))]
pub struct ServiceTask {
    /// Unit name; `.service` is added when no suffix is given.
    #[schemars(length(min = 1, max = 256))]
    pub name: String,
    /// Enabled at boot (`systemctl enable`) or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Running state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ServiceState>,
    /// Run `systemctl daemon-reload` first.
    #[serde(default)]
    pub daemon_reload: bool,
}

/// Set a kernel parameter, live and persisted across reboots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SysctlTask {
    /// Parameter name, dotted: `net.ipv4.ip_forward`.
    #[schemars(
        regex(pattern = r"^[A-Za-z0-9_]+([./][A-Za-z0-9_*-]+)*$"),
        length(max = 256)
    )]
    pub name: String,
    /// Value, as `sysctl` prints it (whitespace-separated fields are compared field by field).
    pub value: String,
    /// Write the value to `file` so it survives a reboot.
    #[serde(default = "yes")]
    pub persist: bool,
    /// Where the persisted value is written.
    #[serde(default = "default_sysctl_file")]
    pub file: String,
    /// Set the live value too (in `/proc/sys`). Off for hosts where it is read-only.
    #[serde(default = "yes")]
    pub live: bool,
}

fn yes() -> bool {
    true
}
fn default_sysctl_file() -> String {
    "/etc/sysctl.d/99-driftless.conf".into()
}

/// Manage a local user account.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserTask {
    /// Login name.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_.-]*\$?$"), length(max = 32))]
    pub name: String,
    /// `present` creates or updates the account; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
    /// Numeric user id; picked from the free range when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Primary group, by name; a group of the user's name is created when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Supplementary groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Add `groups` to the user's existing groups instead of replacing them.
    #[serde(default)]
    pub append: bool,
    /// Login shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Home directory; `/home/NAME` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home: Option<String>,
    /// Create the home directory when it does not exist.
    #[serde(default)]
    pub create_home: bool,
    /// A system account (uid from the system range, no aging).
    #[serde(default)]
    pub system: bool,
    /// GECOS comment field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Password hash as `crypt(3)` writes it, only ever from `${secret:NAME}`; plain
    /// passwords are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
}

/// Manage a local group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupTask {
    /// Group name.
    #[schemars(regex(pattern = r"^[a-z_][a-z0-9_.-]*\$?$"), length(max = 32))]
    pub name: String,
    /// `present` creates or updates the group; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
    /// Numeric group id; picked from the free range when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// A system group (gid from the system range).
    #[serde(default)]
    pub system: bool,
}

/// Load (or unload) a kernel module and persist it in `/etc/modules-load.d`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KernelModuleTask {
    /// Module name, as `modprobe` takes it.
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"), length(max = 64))]
    pub name: String,
    /// `present` loads it; `absent` unloads it.
    #[serde(default)]
    pub state: Presence,
    /// Module parameters, persisted in `/etc/modprobe.d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<String>,
    /// Write `/etc/modules-load.d/NAME.conf` so it loads at boot.
    #[serde(default = "yes")]
    pub persist: bool,
}

/// The state of a mount.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum MountState {
    /// In fstab and mounted.
    #[default]
    Mounted,
    /// In fstab, not mounted.
    Unmounted,
    /// In fstab; mount state left alone.
    Present,
    /// Not in fstab and not mounted.
    Absent,
}

/// Manage an `/etc/fstab` entry and whether it is mounted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MountTask {
    /// Mount point.
    #[schemars(length(min = 1, max = 4096))]
    pub path: String,
    /// What to mount: a device, `UUID=...`, `LABEL=...`, or a remote path.
    #[serde(default)]
    pub device: String,
    /// Filesystem type.
    #[serde(default)]
    pub fstype: String,
    /// Mount options.
    #[serde(default = "default_mount_options")]
    pub options: String,
    /// The fstab dump field.
    #[serde(default)]
    pub dump: u8,
    /// The fstab pass field (fsck order).
    #[serde(default)]
    pub pass: u8,
    /// Desired state.
    #[serde(default)]
    pub state: MountState,
}

fn default_mount_options() -> String {
    "defaults".into()
}

/// A cron job, written as one file in `/etc/cron.d`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronTask {
    /// File name in `/etc/cron.d` (letters, digits, `-` and `_`, as cron requires).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]+$"), length(max = 128))]
    pub name: String,
    /// Five cron fields or a macro such as `@daily`.
    #[serde(default)]
    pub schedule: String,
    /// User the command runs as.
    #[serde(default = "default_cron_user")]
    pub user: String,
    /// The command line.
    #[serde(default)]
    pub command: String,
    /// Environment lines written above the job (`NAME=value`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// `present` writes the file; `absent` removes it.
    #[serde(default)]
    pub state: Presence,
}

fn default_cron_user() -> String {
    "root".into()
}

/// Run a command. Not idempotent by itself: it runs on every apply unless guarded by `creates`
/// or `unless`, and is reported as `changed` whenever it runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(validation = Rule::new("has(self.argv) != has(self.shell)").message("exactly one of argv and shell must be set"))]
pub struct CommandTask {
    /// Program and arguments, run without a shell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv: Option<Vec<String>>,
    /// A command line run with `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    /// Skip the command when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Skip the command when this shell command exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment variables; values may use `${secret:NAME}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}
