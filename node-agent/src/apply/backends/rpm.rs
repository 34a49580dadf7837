//! dnf/rpm: Fedora, RHEL and derivatives.
//!
//! Unit-tested on command construction and output parsing only: the test machines are Debian
//! and have no rpm database to install into. Installed versions come from
//! `rpm --root ROOT -q --qf ...`; installs and removals use `dnf --installroot ROOT`; a pinned
//! version is held with the `versionlock` plugin, whose list file is read directly.

use std::path::PathBuf;

use super::{is_live_root, read_optional, BackendError, Cmd, PackageBackend, PackageState};
use crate::host::HostPaths;

/// The dnf/rpm back-end for one root.
#[derive(Clone, Debug)]
pub struct Dnf {
    root: PathBuf,
    live: bool,
}

impl Dnf {
    /// The back-end for a host root.
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            root: paths.root.clone(),
            live: is_live_root(paths),
        }
    }

    fn dnf(&self) -> Cmd {
        let cmd = Cmd::new("dnf").args(["-y", "-q"]);
        if self.live {
            cmd
        } else {
            cmd.arg(format!("--installroot={}", self.root.display()))
        }
    }

    /// The query command.
    pub fn query_command(&self, package: &str) -> Cmd {
        Cmd::new("rpm").args([
            format!("--root={}", self.root.display()),
            "-q".to_owned(),
            "--qf".to_owned(),
            "%{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n".to_owned(),
            package.to_owned(),
        ])
    }

    /// The install command (`NAME-VERSION` when pinned; downgrades when needed).
    pub fn install_command(&self, package: &str, version: Option<&str>, installed: bool) -> Cmd {
        let spec = match version {
            Some(v) => format!("{package}-{}", strip_zero_epoch(v)),
            None => package.to_owned(),
        };
        // `dnf install` refuses to go to an older version; `distro-sync` of the exact NEVRA
        // moves either way.
        let verb = if installed && version.is_some() {
            "distro-sync"
        } else {
            "install"
        };
        self.dnf().args([verb, &spec])
    }

    /// The remove command.
    pub fn remove_command(&self, package: &str) -> Cmd {
        self.dnf().args(["remove", package])
    }

    /// The versionlock command.
    pub fn lock_command(&self, package: &str, version: &str, held: bool) -> Cmd {
        if held {
            self.dnf().args([
                "versionlock".to_owned(),
                "add".to_owned(),
                format!("{package}-{}", strip_zero_epoch(version)),
            ])
        } else {
            self.dnf().args(["versionlock", "delete", package])
        }
    }
}

/// `0:1.2-3` → `1.2-3`: dnf takes versions without the zero epoch.
fn strip_zero_epoch(version: &str) -> &str {
    version.strip_prefix("0:").unwrap_or(version)
}

/// Parses `rpm -q --qf '%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\n'`. The zero epoch is
/// dropped so versions read as users write them.
pub fn parse_query(output: &str, package: &str) -> Result<Option<String>, BackendError> {
    let mut found = None;
    for line in output.lines() {
        if line.contains("is not installed") {
            return Ok(None);
        }
        let (name, version) = line
            .split_once('\t')
            .ok_or_else(|| BackendError::Parse(format!("unexpected rpm line {line:?}")))?;
        if name == package {
            // Several installed versions (kernels): the last is the newest rpm reports.
            found = Some(strip_zero_epoch(version).to_owned());
        }
    }
    Ok(found)
}

/// Whether the versionlock list (`/etc/dnf/plugins/versionlock.list`) holds `package`.
/// Entries look like `nginx-1:1.24.0-1.fc39.*` or `nginx-0:1.24.0-1.fc39.x86_64`.
pub fn is_locked(list: &str, package: &str) -> bool {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .any(|entry| {
            entry
                .strip_prefix(package)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
}

impl PackageBackend for Dnf {
    fn name(&self) -> &'static str {
        "dnf"
    }

    fn query(&self, package: &str) -> Result<PackageState, BackendError> {
        let cmd = self.query_command(package);
        let out = cmd.output()?;
        let version = match out.code {
            Some(0) | Some(1) => parse_query(&out.stdout, package)?,
            _ => return Err(cmd.failed(&out)),
        };
        let list = read_optional(&self.root.join("etc/dnf/plugins/versionlock.list"))?;
        Ok(PackageState {
            version,
            held: list.is_some_and(|l| is_locked(&l, package)),
        })
    }

    fn install(&self, package: &str, version: Option<&str>) -> Result<(), BackendError> {
        let installed = self.query(package)?.version.is_some();
        self.install_command(package, version, installed)
            .run()
            .map(|_| ())
    }

    fn remove(&self, package: &str) -> Result<(), BackendError> {
        self.remove_command(package).run().map(|_| ())
    }

    fn set_held(&self, package: &str, version: &str, held: bool) -> Result<(), BackendError> {
        self.lock_command(package, version, held).run().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rpm_query() {
        let out = "nginx\t1:1.24.0-1.fc39\n";
        assert_eq!(
            parse_query(out, "nginx").unwrap().as_deref(),
            Some("1:1.24.0-1.fc39")
        );
        assert_eq!(
            parse_query("bash\t0:5.2.15-5.fc39\n", "bash")
                .unwrap()
                .as_deref(),
            Some("5.2.15-5.fc39")
        );
        assert_eq!(
            parse_query("package nope is not installed\n", "nope").unwrap(),
            None
        );
        let kernels = "kernel\t0:6.5.6-300.fc39\nkernel\t0:6.6.2-201.fc39\n";
        assert_eq!(
            parse_query(kernels, "kernel").unwrap().as_deref(),
            Some("6.6.2-201.fc39")
        );
        assert!(parse_query("garbage", "x").is_err());
    }

    #[test]
    fn reads_versionlock_entries() {
        let list = "# comment\nnginx-1:1.24.0-1.fc39.*\nnginx-module-njs-0:1.0-1.*\n";
        assert!(is_locked(list, "nginx"));
        assert!(is_locked(list, "nginx-module-njs"));
        assert!(!is_locked(list, "nginx-module"));
        assert!(!is_locked("!nginx-1:1.0-1.*\n", "nginx"));
    }

    #[test]
    fn builds_commands() {
        let dnf = Dnf::new(&HostPaths::under("/host"));
        assert_eq!(
            dnf.install_command("nginx", Some("0:1.24.0-1.fc39"), false)
                .to_string(),
            "dnf -y -q --installroot=/host install nginx-1.24.0-1.fc39"
        );
        assert_eq!(
            dnf.install_command("nginx", Some("1.22.0-1"), true)
                .to_string(),
            "dnf -y -q --installroot=/host distro-sync nginx-1.22.0-1"
        );
        assert_eq!(
            dnf.remove_command("nginx").to_string(),
            "dnf -y -q --installroot=/host remove nginx"
        );
        assert_eq!(
            dnf.lock_command("nginx", "1.2-3", true).to_string(),
            "dnf -y -q --installroot=/host versionlock add nginx-1.2-3"
        );
        assert_eq!(
            dnf.query_command("nginx").to_string(),
            "rpm --root=/host -q --qf %{NAME}\\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\\n nginx"
        );
        let live = Dnf::new(&HostPaths::under("/"));
        assert_eq!(live.remove_command("x").to_string(), "dnf -y -q remove x");
    }
}
