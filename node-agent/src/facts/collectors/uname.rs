//! `uname`: `node_uname_info`, read from the host's procfs (`/proc/sys/kernel/*`) so it reports
//! the host in a container and can be tested on a fixture tree.

use super::{CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Uname {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Uname {
        paths: settings.paths.clone(),
    }))
}

impl Collector for Uname {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let read = |name: &str| {
            std::fs::read_to_string(self.paths.proc(format!("sys/kernel/{name}")))
                .map(|s| s.trim_end_matches('\n').to_owned())
        };
        let release = read("osrelease").map_err(|e| {
            CollectError::Failed(format!("reading /proc/sys/kernel/osrelease: {e}"))
        })?;
        let mut info = Family::new(
            "node_uname_info",
            "Labeled system information as provided by the uname system call.",
            Kind::Gauge,
        );
        info.push(
            vec![
                (
                    "domainname",
                    read("domainname").unwrap_or_else(|_| "(none)".into()),
                ),
                ("machine", std::env::consts::ARCH.to_owned()),
                ("nodename", read("hostname").unwrap_or_default()),
                ("release", release),
                ("sysname", read("ostype").unwrap_or_else(|_| "Linux".into())),
                ("version", read("version").unwrap_or_default()),
            ],
            1.0,
        );
        out.push(info);
        Ok(())
    }
}
