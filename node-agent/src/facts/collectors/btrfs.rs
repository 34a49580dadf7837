//! `btrfs`: Btrfs filesystems in `/sys/fs/btrfs/UUID/`, as node_exporter reads them from sysfs:
//! `node_btrfs_info{label,uuid}`, the global reserve, space reserved, used and allocated per
//! block group type and profile with the profile's allocation ratio, and the size of each
//! device.
//!
//! Caveat: node_exporter also asks a mounted filesystem for per-device statistics over btrfs
//! ioctls (`node_btrfs_device_errors_total`, `node_btrfs_device_unused_bytes`, and a
//! `btrfs_dev_uuid` label on `node_btrfs_device_size_bytes`). The agent does not (it makes no
//! ioctls), so it exports node_exporter's sysfs fallback, which node_exporter itself uses when
//! the mount point cannot be opened.
//!
//! Reading follows procfs's quirks so values agree: a missing file is 0 (or an empty label);
//! an unreadable one fails the collector unless a later block group type reads cleanly (procfs
//! keeps only the last error of its reader).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::kfiles::{glob_names, not_found, parse_u64, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Btrfs {
    dir: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Btrfs {
        dir: settings.paths.sys.join("fs/btrfs"),
    }))
}

/// Reads files below one directory, remembering the last error as procfs's reader does.
struct Reader {
    path: PathBuf,
    err: Option<String>,
}

impl Reader {
    fn new(path: PathBuf) -> Self {
        Self { path, err: None }
    }

    /// A trimmed attribute; missing is empty.
    fn text(&mut self, name: &str) -> String {
        let path = self.path.join(name);
        match sys_read(&path) {
            Ok(text) => text,
            Err(e) => {
                if !not_found(&e) {
                    self.err = Some(format!("{}: {e}", path.display()));
                }
                String::new()
            }
        }
    }

    /// A number; 0 when missing, unparsable, or after an error.
    fn number(&mut self, name: &str) -> u64 {
        let text = self.text(name);
        if self.err.is_some() {
            return 0;
        }
        parse_u64(&text, 10).unwrap_or_default()
    }

    /// Names in a subdirectory (and whether each is a directory); an error when unlistable.
    fn list(&mut self, name: &str) -> Vec<(String, bool)> {
        let path = self.path.join(name);
        match super::kfiles::dir_entries(&path) {
            Ok(entries) => entries.into_iter().map(|(n, t)| (n, t.is_dir())).collect(),
            Err(e) => {
                self.err = Some(format!("{}: {e}", path.display()));
                Vec::new()
            }
        }
    }
}

/// One block group type (`data`, `metadata`, `system`).
struct Allocation {
    reserved: u64,
    /// Profile (`single`, `dup`, `raid1`, ...) → (used, total, ratio).
    layouts: BTreeMap<String, (u64, u64, f64)>,
}

/// How many bytes a profile stores per byte of data.
fn ratio(profile: &str, devices: usize) -> f64 {
    let n = devices as f64;
    match profile {
        "single" | "raid0" => 1.0,
        "dup" | "raid1" | "raid10" => 2.0,
        "raid5" => n / (n - 1.0),
        "raid6" => n / (n - 2.0),
        _ => 0.0,
    }
}

/// Reads an allocation directory; returns it and the reader's final error.
fn allocation(dir: PathBuf, devices: usize) -> (Allocation, Option<String>) {
    let mut r = Reader::new(dir);
    for file in ["bytes_may_use", "bytes_pinned", "bytes_readonly"] {
        r.number(file);
    }
    let reserved = r.number("bytes_reserved");
    for file in [
        "bytes_used",
        "disk_used",
        "disk_total",
        "flags",
        "total_bytes",
        "total_bytes_pinned",
    ] {
        r.number(file);
    }
    let mut layouts = BTreeMap::new();
    for (name, is_dir) in r.list("") {
        if is_dir {
            let total = r.number(&format!("{name}/total_bytes"));
            let used = r.number(&format!("{name}/used_bytes"));
            let ratio = ratio(&name, devices);
            layouts.insert(name, (used, total, ratio));
        }
    }
    (Allocation { reserved, layouts }, r.err)
}

/// One filesystem as sysfs shows it.
struct Filesystem {
    uuid: String,
    label: String,
    global_rsv_size: u64,
    allocations: [(&'static str, Allocation); 3],
    /// Device name → size in bytes.
    devices: BTreeMap<String, u64>,
}

fn read_filesystem(dir: &Path) -> Result<Filesystem, CollectError> {
    let mut r = Reader::new(dir.to_path_buf());
    let mut devices = BTreeMap::new();
    for (name, _) in r.list("devices") {
        let size = r.number(&format!("devices/{name}/size"));
        devices.insert(name, size.wrapping_mul(512));
    }
    let label = r.text("label");
    let mut uuid = r.text("metadata_uuid");
    r.list("features");
    for file in [
        "clone_alignment",
        "nodesize",
        "quota_override",
        "sectorsize",
    ] {
        r.number(file);
    }
    r.number("allocation/global_rsv_reserved");
    let global_rsv_size = r.number("allocation/global_rsv_size");
    let mut read = |kind: &'static str| {
        let (a, err) = allocation(dir.join("allocation").join(kind), devices.len());
        // procfs replaces its error with the block group reader's, cleared or not.
        r.err = err;
        (kind, a)
    };
    let allocations = [read("data"), read("metadata"), read("system")];
    if let Some(err) = r.err {
        return Err(CollectError::Failed(err));
    }
    if uuid.is_empty() {
        uuid = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
    }
    Ok(Filesystem {
        uuid,
        label,
        global_rsv_size,
        allocations,
        devices,
    })
}

fn export(filesystems: Vec<Filesystem>, out: &mut Vec<Family>) {
    let gauge = |name: &str, help: &str| Family::new(name, help, Kind::Gauge);
    let mut info = gauge("node_btrfs_info", "Filesystem information");
    let mut rsv = gauge(
        "node_btrfs_global_rsv_size_bytes",
        "Size of global reserve.",
    );
    let mut reserved = gauge(
        "node_btrfs_reserved_bytes",
        "Amount of space reserved for a data type",
    );
    let mut used = gauge(
        "node_btrfs_used_bytes",
        "Amount of used space by a layout/data type",
    );
    let mut size = gauge(
        "node_btrfs_size_bytes",
        "Amount of space allocated for a layout/data type",
    );
    let mut ratio = gauge(
        "node_btrfs_allocation_ratio",
        "Data allocation ratio for a layout/data type",
    );
    let mut device = gauge(
        "node_btrfs_device_size_bytes",
        "Size of a device that is part of the filesystem.",
    );
    for fs in filesystems {
        let uuid = || ("uuid", fs.uuid.clone());
        info.push(vec![("label", fs.label.clone()), uuid()], 1.0);
        rsv.push(vec![uuid()], fs.global_rsv_size as f64);
        for (kind, a) in &fs.allocations {
            let group = || ("block_group_type", (*kind).to_owned());
            reserved.push(vec![group(), uuid()], a.reserved as f64);
            for (mode, (u, total, r)) in &a.layouts {
                let labels = || vec![group(), ("mode", mode.clone()), uuid()];
                used.push(labels(), *u as f64);
                size.push(labels(), *total as f64);
                ratio.push(labels(), *r);
            }
        }
        for (name, bytes) in &fs.devices {
            device.push(vec![("device", name.clone()), uuid()], *bytes as f64);
        }
    }
    out.extend([info, rsv, reserved, used, size, ratio, device]);
}

impl Collector for Btrfs {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut filesystems = Vec::new();
        for name in glob_names(&self.dir)
            .into_iter()
            .filter(|n| n.contains('-'))
        {
            filesystems.push(read_filesystem(&self.dir.join(name))?);
        }
        if !filesystems.is_empty() {
            export(filesystems, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_follow_the_profile() {
        assert_eq!(ratio("raid1", 2), 2.0);
        assert_eq!(ratio("raid5", 3), 1.5);
        assert_eq!(ratio("raid6", 4), 2.0);
        assert_eq!(ratio("raid1c3", 3), 0.0);
        assert!(ratio("raid5", 1).is_infinite());
    }
}
