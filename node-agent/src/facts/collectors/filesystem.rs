//! `filesystem`: size, free and available space and inodes of mounted filesystems, from the
//! host's mount table (`/proc/1/mounts`, else `/proc/mounts`) and `statvfs(3)` below the root.
//!
//! Mount points, filesystem types and devices are filtered with node_exporter's default
//! exclude patterns unless the FactsPolicy sets its own.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::{CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Filesystem {
    paths: HostPaths,
    mount_points_exclude: Option<regex::Regex>,
    mount_points_include: Option<regex::Regex>,
    fs_types_exclude: Option<regex::Regex>,
    devices_exclude: Option<regex::Regex>,
    /// Network mount points whose last `statvfs` has not returned yet.
    stuck: std::sync::Arc<std::sync::Mutex<BTreeSet<String>>>,
}

/// Filesystem types whose `statvfs` can hang on an unreachable server; they are stat'ed on a
/// helper thread with [`MOUNT_TIMEOUT`].
const NETWORK_FS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ceph",
    "glusterfs",
    "9p",
    "afs",
];

/// How long a network filesystem's `statvfs` may take (node_exporter's `mount-timeout`).
pub const MOUNT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let o = &settings.collectors.filesystem;
    Ok(Box::new(Filesystem {
        paths: settings.paths.clone(),
        mount_points_exclude: super::regex("filesystem", Some(&o.mount_points_exclude))?,
        mount_points_include: super::regex("filesystem", o.mount_points_include.as_deref())?,
        fs_types_exclude: super::regex("filesystem", Some(&o.fs_types_exclude))?,
        devices_exclude: super::regex("filesystem", o.devices_exclude.as_deref())?,
        stuck: Default::default(),
    }))
}

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Device (`/dev/sda1`, `tmpfs`).
    pub device: String,
    /// Mount point, octal escapes decoded.
    pub mount_point: String,
    /// Filesystem type.
    pub fs_type: String,
    /// Mount options.
    pub options: String,
}

/// Decodes the octal escapes of `/proc/mounts` (`\040` is a space): the same rule as fstab.
pub use crate::apply::backends::mount::unescape;

/// Parses a mount table.
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            Some(Mount {
                device: unescape(f.next()?),
                mount_point: unescape(f.next()?),
                fs_type: f.next()?.to_owned(),
                options: f.next().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

impl Filesystem {
    fn mounts(&self) -> Result<Vec<Mount>, CollectError> {
        let text = std::fs::read_to_string(self.paths.proc("1/mounts"))
            .or_else(|_| std::fs::read_to_string(self.paths.proc("mounts")))
            .map_err(|e| CollectError::Failed(format!("reading the mount table: {e}")))?;
        Ok(parse_mounts(&text))
    }

    /// Whether a mount is reported.
    pub fn wanted(&self, m: &Mount) -> bool {
        let matches = |r: &Option<regex::Regex>, s: &str| r.as_ref().is_some_and(|r| r.is_match(s));
        if let Some(include) = &self.mount_points_include {
            if !include.is_match(&m.mount_point) {
                return false;
            }
        } else if matches(&self.mount_points_exclude, &m.mount_point) {
            return false;
        }
        !matches(&self.fs_types_exclude, &m.fs_type) && !matches(&self.devices_exclude, &m.device)
    }

    fn stat_path(&self, mount_point: &str) -> PathBuf {
        self.paths.host(mount_point)
    }

    /// `statvfs`, on a helper thread with a timeout for network filesystems. A mount point whose
    /// earlier call has not returned is not tried again until it does.
    fn statvfs(&self, m: &Mount) -> Result<rustix::fs::StatVfs, String> {
        let path = self.stat_path(&m.mount_point);
        let network = NETWORK_FS.contains(&m.fs_type.as_str()) || m.fs_type.starts_with("fuse.");
        if !network {
            return rustix::fs::statvfs(&path).map_err(|e| e.to_string());
        }
        let key = m.mount_point.clone();
        {
            let mut stuck = self.stuck.lock().map_err(|_| "lock poisoned".to_owned())?;
            if stuck.contains(&key) {
                return Err("an earlier statvfs has not returned".into());
            }
            stuck.insert(key.clone());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let stuck = self.stuck.clone();
        std::thread::spawn(move || {
            let result = rustix::fs::statvfs(&path);
            if let Ok(mut s) = stuck.lock() {
                s.remove(&key);
            }
            let _ = tx.send(result);
        });
        match rx.recv_timeout(MOUNT_TIMEOUT) {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => {
                tracing::warn!(mountpoint = %m.mount_point, "statvfs timed out; mount may be hung");
                Err("timed out".into())
            }
        }
    }
}

impl Collector for Filesystem {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let new = |name: &str, help: &str| Family::new(name, help, Kind::Gauge);
        let mut size = new("node_filesystem_size_bytes", "Filesystem size in bytes.");
        let mut free = new(
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
        );
        let mut avail = new(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
        );
        let mut files = new("node_filesystem_files", "Filesystem total file nodes.");
        let mut files_free = new(
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
        );
        let mut readonly = new("node_filesystem_readonly", "Filesystem read-only status.");
        let mut device_error = new(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
        );
        let mut seen = BTreeSet::new();
        for m in self.mounts()? {
            if !self.wanted(&m) || !seen.insert((m.device.clone(), m.mount_point.clone())) {
                continue;
            }
            let labels = || {
                vec![
                    ("device", m.device.clone()),
                    ("fstype", m.fs_type.clone()),
                    ("mountpoint", m.mount_point.clone()),
                ]
            };
            let ro = m.options.split(',').any(|o| o == "ro");
            match self.statvfs(&m) {
                Ok(s) => {
                    let unit = s.f_frsize as f64;
                    size.push(labels(), s.f_blocks as f64 * unit);
                    free.push(labels(), s.f_bfree as f64 * unit);
                    avail.push(labels(), s.f_bavail as f64 * unit);
                    files.push(labels(), s.f_files as f64);
                    files_free.push(labels(), s.f_ffree as f64);
                    readonly.push(labels(), f64::from(u8::from(ro)));
                    device_error.push(labels(), 0.0);
                }
                Err(error) => {
                    tracing::debug!(mountpoint = %m.mount_point, %error, "statvfs failed");
                    device_error.push(labels(), 1.0);
                }
            }
        }
        out.extend([avail, device_error, files, files_free, free, readonly, size]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape(r"/mnt/my\040disk"), "/mnt/my disk");
        assert_eq!(unescape(r"/a\011b\134c"), "/a\tb\\c");
        assert_eq!(unescape(r"/trailing\04"), r"/trailing\04");
        assert_eq!(unescape(r"\"), r"\");
    }

    #[test]
    fn default_excludes_match_node_exporter() {
        let settings = Settings::new(HostPaths::under("/"));
        let o = &settings.collectors.filesystem;
        let c = Filesystem {
            paths: settings.paths.clone(),
            mount_points_exclude: super::super::regex("f", Some(&o.mount_points_exclude)).unwrap(),
            mount_points_include: None,
            fs_types_exclude: super::super::regex("f", Some(&o.fs_types_exclude)).unwrap(),
            devices_exclude: None,
            stuck: Default::default(),
        };
        let m = |mp: &str, fs: &str| Mount {
            device: "d".into(),
            mount_point: mp.into(),
            fs_type: fs.into(),
            options: "rw".into(),
        };
        assert!(c.wanted(&m("/", "ext4")));
        assert!(c.wanted(&m("/mnt/my disk", "ext4")));
        assert!(!c.wanted(&m("/proc", "proc")));
        assert!(!c.wanted(&m("/dev/shm", "tmpfs")));
        assert!(!c.wanted(&m("/data", "overlay")));
        assert!(!c.wanted(&m("/var/lib/docker/overlay2/x", "ext4")));
    }
}
