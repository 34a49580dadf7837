//! apk: Alpine.
//!
//! Unit-tested on command construction and output parsing only: the test machines are Debian
//! and have no apk. The installed version is read from the apk database
//! (`ROOT/lib/apk/db/installed`); a pinned version is an `=` constraint in `ROOT/etc/apk/world`,
//! which `apk add NAME=VERSION` writes.

use std::path::PathBuf;

use super::{read_optional, BackendError, Cmd, PackageBackend, PackageState};
use crate::host::HostPaths;

/// The apk back-end for one root.
#[derive(Clone, Debug)]
pub struct Apk {
    root: PathBuf,
}

impl Apk {
    /// The back-end for a host root.
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            root: paths.root.clone(),
        }
    }

    fn apk(&self) -> Cmd {
        Cmd::new("apk").args([
            "--root".to_owned(),
            self.root.display().to_string(),
            "--no-progress".to_owned(),
        ])
    }

    /// The install command; a version pins the package in the world file.
    pub fn install_command(&self, package: &str, version: Option<&str>) -> Cmd {
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_owned(),
        };
        self.apk().args(["add", &spec])
    }

    /// The remove command.
    pub fn remove_command(&self, package: &str) -> Cmd {
        self.apk().args(["del", package])
    }
}

/// The installed version of `package` in an apk database (`P:` name and `V:` version lines,
/// one blank-line-separated stanza per package).
pub fn installed_version(db: &str, package: &str) -> Option<String> {
    let mut name = None;
    let mut version = None;
    for line in db.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if name == Some(package) {
                return version.map(str::to_owned);
            }
            name = None;
            version = None;
        } else if let Some(n) = line.strip_prefix("P:") {
            name = Some(n);
        } else if let Some(v) = line.strip_prefix("V:") {
            version = Some(v);
        }
    }
    None
}

/// Whether the world file pins `package` to an exact version (`name=version`).
pub fn is_pinned(world: &str, package: &str) -> bool {
    world.split_whitespace().any(|dep| {
        dep.strip_prefix(package)
            .is_some_and(|rest| rest.starts_with('=') && !rest.starts_with("=~"))
    })
}

impl PackageBackend for Apk {
    fn name(&self) -> &'static str {
        "apk"
    }

    fn query(&self, package: &str) -> Result<PackageState, BackendError> {
        let db = read_optional(&self.root.join("lib/apk/db/installed"))?.unwrap_or_default();
        let world = read_optional(&self.root.join("etc/apk/world"))?.unwrap_or_default();
        Ok(PackageState {
            version: installed_version(&db, package),
            held: is_pinned(&world, package),
        })
    }

    fn install(&self, package: &str, version: Option<&str>) -> Result<(), BackendError> {
        self.install_command(package, version).run().map(|_| ())
    }

    fn remove(&self, package: &str) -> Result<(), BackendError> {
        self.remove_command(package).run().map(|_| ())
    }

    fn set_held(&self, package: &str, version: &str, held: bool) -> Result<(), BackendError> {
        // `apk add NAME` replaces a pinned world entry with a plain one, `NAME=V` pins it.
        let version = held.then_some(version);
        self.install_command(package, version).run().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DB: &str =
        "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nC:Q1def=\nP:busybox\nV:1.36.1-r5\nA:x86_64\n";

    #[test]
    fn reads_installed_versions() {
        assert_eq!(installed_version(DB, "musl").as_deref(), Some("1.2.4-r2"));
        assert_eq!(
            installed_version(DB, "busybox").as_deref(),
            Some("1.36.1-r5")
        );
        assert_eq!(installed_version(DB, "bash"), None);
        assert_eq!(installed_version("", "musl"), None);
    }

    #[test]
    fn reads_pins_from_world() {
        let world = "alpine-base\nnginx=1.24.0-r6\nnginx-mod-http-lua\ncurl=~8.5\n";
        assert!(is_pinned(world, "nginx"));
        assert!(!is_pinned(world, "nginx-mod-http-lua"));
        assert!(!is_pinned(world, "curl"));
        assert!(!is_pinned(world, "alpine-base"));
    }

    #[test]
    fn builds_commands() {
        let apk = Apk::new(&HostPaths::under("/host"));
        assert_eq!(
            apk.install_command("nginx", Some("1.24.0-r6")).to_string(),
            "apk --root /host --no-progress add nginx=1.24.0-r6"
        );
        assert_eq!(
            apk.remove_command("nginx").to_string(),
            "apk --root /host --no-progress del nginx"
        );
    }
}
