//! apt/dpkg: Debian and Ubuntu.
//!
//! The installed version and hold state come from `dpkg-query --admindir=ROOT/var/lib/dpkg -W`;
//! installs and removals go through `apt-get`, which below a root other than `/` is pointed at
//! the root's own configuration, package lists and dpkg database (`-o Dir=ROOT`) and runs dpkg
//! with `--root=ROOT --force-script-chrootless` (maintainer scripts run outside a chroot, as
//! mmdebstrap's chrootless mode does). A pinned version is held with `dpkg --set-selections`.
//! Tested against real dpkg and apt in temporary roots (`tests/system_package.rs`).

use std::path::PathBuf;

use super::{is_live_root, BackendError, Cmd, PackageBackend, PackageState};
use crate::host::HostPaths;

/// The apt/dpkg back-end for one root.
#[derive(Clone, Debug)]
pub struct Apt {
    root: PathBuf,
    live: bool,
}

impl Apt {
    /// The back-end for a host root.
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            root: paths.root.clone(),
            live: is_live_root(paths),
        }
    }

    fn admindir(&self) -> String {
        self.root.join("var/lib/dpkg").display().to_string()
    }

    /// `apt-get` with the options that confine it to the root.
    pub fn apt_get(&self) -> Cmd {
        let mut cmd = Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-y"]);
        if !self.live {
            let root = self.root.display().to_string();
            cmd = cmd.args([
                "-o".to_owned(),
                format!("Dir={root}"),
                "-o".to_owned(),
                format!("Dir::State::status={root}/var/lib/dpkg/status"),
                "-o".to_owned(),
                "APT::Sandbox::User=root".to_owned(),
                "-o".to_owned(),
                "DPkg::Options::=--force-not-root".to_owned(),
                "-o".to_owned(),
                "DPkg::Options::=--force-script-chrootless".to_owned(),
                "-o".to_owned(),
                format!("DPkg::Options::=--root={root}"),
                "-o".to_owned(),
                format!("DPkg::Options::=--log={root}/var/log/dpkg.log"),
            ]);
        }
        cmd
    }

    /// `dpkg` confined to the root.
    pub fn dpkg(&self) -> Cmd {
        let cmd = Cmd::new("dpkg");
        if self.live {
            cmd
        } else {
            cmd.args([
                format!("--root={}", self.root.display()),
                format!("--admindir={}", self.admindir()),
                "--force-not-root".to_owned(),
                "--force-script-chrootless".to_owned(),
            ])
        }
    }

    /// The query command for one package.
    pub fn query_command(&self, package: &str) -> Cmd {
        Cmd::new("dpkg-query").args([
            format!("--admindir={}", self.admindir()),
            "-W".to_owned(),
            "-f=${Package}\\t${Version}\\t${Status}\\n".to_owned(),
            package.to_owned(),
        ])
    }

    /// The install command.
    pub fn install_command(&self, package: &str, version: Option<&str>) -> Cmd {
        let spec = match version {
            Some(v) => format!("{package}={v}"),
            None => package.to_owned(),
        };
        self.apt_get().args([
            "install",
            "--allow-downgrades",
            "--allow-change-held-packages",
            "--no-install-recommends",
            &spec,
        ])
    }
}

/// Parses `dpkg-query -W -f='${Package}\t${Version}\t${Status}\n'` output for one package.
/// A package dpkg knows but that is not installed (removed, config-files only) has no version.
pub fn parse_query(output: &str, package: &str) -> Result<PackageState, BackendError> {
    for line in output.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        let [name, version, status] = fields[..] else {
            return Err(BackendError::Parse(format!(
                "unexpected dpkg-query line {line:?}"
            )));
        };
        // Multi-arch packages print `name` for each architecture; any installed one counts.
        if name != package && !name.starts_with(&format!("{package}:")) {
            continue;
        }
        let words: Vec<&str> = status.split_whitespace().collect();
        let [want, _flag, state] = words[..] else {
            return Err(BackendError::Parse(format!(
                "unexpected dpkg status {status:?} for {package}"
            )));
        };
        if matches!(state, "installed" | "half-configured" | "unpacked") {
            return Ok(PackageState {
                version: Some(version.to_owned()),
                held: want == "hold",
            });
        }
    }
    Ok(PackageState::default())
}

impl PackageBackend for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn query(&self, package: &str) -> Result<PackageState, BackendError> {
        let cmd = self.query_command(package);
        let out = cmd.output()?;
        match out.code {
            Some(0) => parse_query(&out.stdout, package),
            // Exit 1: no package of that name in the database.
            Some(1) if out.stderr.contains("no packages found") => Ok(PackageState::default()),
            _ => Err(cmd.failed(&out)),
        }
    }

    fn install(&self, package: &str, version: Option<&str>) -> Result<(), BackendError> {
        let cmd = self.install_command(package, version);
        if cmd.run().is_ok() {
            return Ok(());
        }
        // Package lists may be missing or stale: refresh them once and retry.
        self.apt_get().arg("update").run()?;
        cmd.run().map(|_| ())
    }

    fn remove(&self, package: &str) -> Result<(), BackendError> {
        self.apt_get()
            .args(["remove", "--allow-change-held-packages", package])
            .run()
            .map(|_| ())
    }

    fn set_held(&self, package: &str, _version: &str, held: bool) -> Result<(), BackendError> {
        let selection = if held { "hold" } else { "install" };
        self.dpkg()
            .arg("--set-selections")
            .stdin(format!("{package} {selection}\n"))
            .run()
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_installed_held_and_removed() {
        let out = "hello\t2.10-3\tinstall ok installed\n";
        let state = parse_query(out, "hello").unwrap();
        assert_eq!(state.version.as_deref(), Some("2.10-3"));
        assert!(!state.held);
        let held = parse_query("hello\t1:2.0\thold ok installed\n", "hello").unwrap();
        assert!(held.held);
        assert_eq!(held.version.as_deref(), Some("1:2.0"));
        let removed = parse_query("hello\t\tdeinstall ok config-files\n", "hello").unwrap();
        assert_eq!(removed, PackageState::default());
        let multiarch = parse_query("libc6:amd64\t2.36\tinstall ok installed\n", "libc6").unwrap();
        assert_eq!(multiarch.version.as_deref(), Some("2.36"));
        assert!(parse_query("garbage", "hello").is_err());
    }

    #[test]
    fn commands_are_confined_to_the_root() {
        let apt = Apt::new(&HostPaths::under("/host"));
        let install = apt.install_command("nginx", Some("1.22"));
        let line = install.to_string();
        assert!(line.starts_with("apt-get -q -y -o Dir=/host "), "{line}");
        assert!(line.contains("DPkg::Options::=--root=/host"));
        assert!(line.ends_with("install --allow-downgrades --allow-change-held-packages --no-install-recommends nginx=1.22"));
        assert_eq!(
            apt.query_command("nginx").args[0],
            "--admindir=/host/var/lib/dpkg"
        );
        let live = Apt::new(&HostPaths::under("/"));
        assert_eq!(
            live.install_command("nginx", None).to_string(),
            "apt-get -q -y install --allow-downgrades --allow-change-held-packages --no-install-recommends nginx"
        );
        assert_eq!(live.dpkg().to_string(), "dpkg");
    }
}
