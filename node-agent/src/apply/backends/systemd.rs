//! systemd units: enablement through `systemctl --root=ROOT` (works offline on any root with
//! unit files), running state through the live service manager.
//!
//! Guarantees: enabling and disabling never need a running systemd. Starting, stopping,
//! restarting, reloading and `daemon-reload` are done only when the root is `/` and PID 1 is
//! systemd; otherwise they fail with a message that says why.

use std::path::Path;

use super::{is_live_root, BackendError, Cmd};
use crate::host::HostPaths;

/// `NAME` → `NAME.service`; names with a unit suffix are kept.
pub fn unit_name(name: &str) -> String {
    const SUFFIXES: [&str; 11] = [
        ".service",
        ".socket",
        ".timer",
        ".target",
        ".mount",
        ".automount",
        ".path",
        ".slice",
        ".scope",
        ".swap",
        ".device",
    ];
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        name.to_owned()
    } else {
        format!("{name}.service")
    }
}

/// Enablement as `systemctl is-enabled` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enablement {
    /// `enabled`, `enabled-runtime`, `alias`, `linked`...: starts at boot.
    Enabled(String),
    /// `disabled`: installed, not enabled.
    Disabled,
    /// `static`, `indirect`, `generated`, `transient`: cannot be enabled or disabled.
    Fixed(String),
    /// `masked`: cannot be started at all.
    Masked,
    /// No such unit file.
    NotFound,
}

/// Parses `systemctl is-enabled` output (it exits non-zero for everything but enabled).
pub fn parse_is_enabled(stdout: &str, stderr: &str) -> Result<Enablement, BackendError> {
    let word = stdout.lines().next().unwrap_or("").trim();
    Ok(match word {
        "enabled" | "enabled-runtime" | "alias" | "linked" | "linked-runtime" => {
            Enablement::Enabled(word.to_owned())
        }
        "disabled" => Enablement::Disabled,
        "static" | "indirect" | "generated" | "transient" => Enablement::Fixed(word.to_owned()),
        "masked" | "masked-runtime" => Enablement::Masked,
        "" if stderr.contains("No such file") || stderr.contains("not found") => {
            Enablement::NotFound
        }
        _ => {
            return Err(BackendError::Parse(format!(
                "unexpected `systemctl is-enabled` output {word:?} {}",
                stderr.trim()
            )))
        }
    })
}

/// Whether PID 1 is systemd (as `sd_booted(3)` decides).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// systemctl for one host root.
#[derive(Clone, Debug)]
pub struct Systemd {
    paths: HostPaths,
}

impl Systemd {
    /// The back-end for a host root.
    pub fn new(paths: &HostPaths) -> Self {
        Self {
            paths: paths.clone(),
        }
    }

    /// Whether the live service manager can be used: the root is `/` and PID 1 is systemd.
    pub fn live(&self) -> bool {
        is_live_root(&self.paths) && systemd_running()
    }

    /// `systemctl` for unit-file operations: offline with `--root` unless the live manager
    /// is usable (so it also sees runtime units and reloads itself).
    pub fn unit_file_command(&self, verb: &str, unit: &str) -> Cmd {
        let cmd = Cmd::new("systemctl");
        let cmd = if self.live() {
            cmd
        } else {
            cmd.arg(format!("--root={}", self.paths.root.display()))
        };
        cmd.args([verb, unit])
    }

    /// The unit's enablement.
    pub fn is_enabled(&self, unit: &str) -> Result<Enablement, BackendError> {
        let out = self.unit_file_command("is-enabled", unit).output()?;
        parse_is_enabled(&out.stdout, &out.stderr)
    }

    /// Enables or disables the unit.
    pub fn set_enabled(&self, unit: &str, enabled: bool) -> Result<(), BackendError> {
        let verb = if enabled { "enable" } else { "disable" };
        self.unit_file_command(verb, unit).run().map(|_| ())
    }

    fn require_live(&self, what: &str) -> Result<(), BackendError> {
        if !is_live_root(&self.paths) {
            return Err(BackendError::NeedsLiveRoot {
                what: what.to_owned(),
                root: self.paths.root.display().to_string(),
            });
        }
        if !systemd_running() {
            return Err(BackendError::Invalid(format!(
                "{what} needs a running systemd, and PID 1 is not systemd here"
            )));
        }
        Ok(())
    }

    /// Whether the unit is active (`systemctl is-active`).
    pub fn is_active(&self, unit: &str) -> Result<bool, BackendError> {
        self.require_live(&format!("checking whether {unit} runs"))?;
        let out = Cmd::new("systemctl").args(["is-active", unit]).output()?;
        Ok(out.stdout.trim() == "active" || out.stdout.trim() == "reloading")
    }

    /// `systemctl start|stop|restart|reload UNIT`.
    pub fn control(&self, verb: &str, unit: &str) -> Result<(), BackendError> {
        self.require_live(&format!("{verb} {unit}"))?;
        Cmd::new("systemctl").args([verb, unit]).run().map(|_| ())
    }

    /// `systemctl daemon-reload` (only on the live system; a no-op offline, where systemctl
    /// reads unit files afresh on every call).
    pub fn daemon_reload(&self) -> Result<bool, BackendError> {
        if !self.live() {
            return Ok(false);
        }
        Cmd::new("systemctl")
            .arg("daemon-reload")
            .run()
            .map(|_| true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names_get_a_suffix() {
        assert_eq!(unit_name("nginx"), "nginx.service");
        assert_eq!(unit_name("fstrim.timer"), "fstrim.timer");
        assert_eq!(unit_name("docker.socket"), "docker.socket");
        assert_eq!(unit_name("my.app"), "my.app.service");
    }

    #[test]
    fn parses_is_enabled() {
        assert_eq!(
            parse_is_enabled("enabled\n", "").unwrap(),
            Enablement::Enabled("enabled".into())
        );
        assert_eq!(
            parse_is_enabled("disabled\n", "").unwrap(),
            Enablement::Disabled
        );
        assert_eq!(
            parse_is_enabled("static\n", "").unwrap(),
            Enablement::Fixed("static".into())
        );
        assert_eq!(
            parse_is_enabled("masked\n", "").unwrap(),
            Enablement::Masked
        );
        assert_eq!(
            parse_is_enabled(
                "",
                "Failed to get unit file state for nope.service: No such file or directory"
            )
            .unwrap(),
            Enablement::NotFound
        );
        assert!(parse_is_enabled("", "Access denied").is_err());
    }

    #[test]
    fn offline_commands_use_the_root() {
        let sd = Systemd::new(&HostPaths::under("/host"));
        assert!(!sd.live());
        assert_eq!(
            sd.unit_file_command("enable", "nginx.service").to_string(),
            "systemctl --root=/host enable nginx.service"
        );
        let err = sd
            .control("start", "nginx.service")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "start nginx.service needs the live system: it is only done with --root / (the root is /host)"
        );
    }
}
