//! `selinux`: whether SELinux is enabled and its configured and current modes, as node_exporter
//! 1.5 exports them.
//!
//! SELinux counts as enabled when its filesystem answers at `SYS/fs/selinux/enforce` (the
//! kernel's current mode: 1 enforcing, 0 permissive); the configured mode is `SELINUX=` of
//! `ROOT/etc/selinux/config` (1 enforcing, 0 permissive, -1 disabled or missing). Without
//! SELinux only `node_selinux_enabled 0` is exported, as node_exporter does: "disabled" is an
//! answer dashboards show.

use std::path::PathBuf;

use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Selinux {
    enforce: PathBuf,
    config: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Selinux {
        enforce: settings.paths.sys.join("fs/selinux/enforce"),
        config: settings.paths.host("/etc/selinux/config"),
    }))
}

/// The configured mode: 1 enforcing, 0 permissive, -1 otherwise (go-selinux's
/// `DefaultEnforceMode`).
fn config_mode(text: &str) -> f64 {
    let value = text.lines().find_map(|line| {
        let (key, value) = line.trim().split_once('=')?;
        (key.trim() == "SELINUX").then(|| value.trim().trim_matches('"').to_owned())
    });
    match value.as_deref() {
        Some("enforcing") => 1.0,
        Some("permissive") => 0.0,
        _ => -1.0,
    }
}

impl Collector for Selinux {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let current = std::fs::read_to_string(&self.enforce)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok());
        let Some(current) = current else {
            out.push(Family::single(
                "node_selinux_enabled",
                "SELinux is enabled, 1 is true, 0 is false",
                Kind::Gauge,
                0.0,
            ));
            return Ok(());
        };
        out.push(Family::single(
            "node_selinux_enabled",
            "SELinux is enabled, 1 is true, 0 is false",
            Kind::Gauge,
            1.0,
        ));
        let config = std::fs::read_to_string(&self.config).unwrap_or_default();
        out.push(Family::single(
            "node_selinux_config_mode",
            "Configured SELinux enforcement mode",
            Kind::Gauge,
            config_mode(&config),
        ));
        out.push(Family::single(
            "node_selinux_current_mode",
            "Current SELinux enforcement mode",
            Kind::Gauge,
            if current == 1 { 1.0 } else { 0.0 },
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_read_from_the_config() {
        assert_eq!(
            config_mode("# c\nSELINUX=enforcing\nSELINUXTYPE=targeted\n"),
            1.0
        );
        assert_eq!(config_mode("SELINUX = \"permissive\"\n"), 0.0);
        assert_eq!(config_mode("SELINUX=disabled\n"), -1.0);
        assert_eq!(config_mode(""), -1.0);
    }
}
