//! Where the host is: every component reads and writes the host through [`HostPaths`], so it can
//! run against `/` on a plain host, `/host` in a DaemonSet, or a fixture tree in tests.

use std::path::{Path, PathBuf};

/// The host's root filesystem, procfs and sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    /// Root of the host filesystem (`/`, or `/host` in a DaemonSet).
    pub root: PathBuf,
    /// The host's procfs (`ROOT/proc` unless set apart).
    pub proc: PathBuf,
    /// The host's sysfs (`ROOT/sys` unless set apart).
    pub sys: PathBuf,
}

impl HostPaths {
    /// Paths below one root: `ROOT/proc`, `ROOT/sys`.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            proc: root.join("proc"),
            sys: root.join("sys"),
            root,
        }
    }

    /// A host path (`/etc/os-release`) as seen from here (`ROOT/etc/os-release`).
    ///
    /// Caveat: this is lexical only; code that writes must also refuse symlinks that leave the
    /// root.
    pub fn host(&self, path: impl AsRef<Path>) -> PathBuf {
        let relative = path.as_ref().strip_prefix("/").unwrap_or(path.as_ref());
        self.root.join(relative)
    }

    /// A path below procfs (`meminfo` → `PROC/meminfo`).
    pub fn proc(&self, path: impl AsRef<Path>) -> PathBuf {
        self.proc.join(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_paths_are_root_relative() {
        let paths = HostPaths::under("/host");
        assert_eq!(paths.host("/etc/motd"), Path::new("/host/etc/motd"));
        assert_eq!(paths.host("etc/motd"), Path::new("/host/etc/motd"));
        assert_eq!(paths.proc("meminfo"), Path::new("/host/proc/meminfo"));
        assert_eq!(paths.sys, Path::new("/host/sys"));
    }
}
