//! `netdev`: network interface counters from `/proc/net/dev`, plus `rx_nohandler` from
//! `/sys/class/net/DEV/statistics` (node_exporter reads that counter over rtnetlink; sysfs holds
//! the same kernel counter and is readable from a DaemonSet through the host's `/sys`).

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Netdev {
    paths: HostPaths,
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let o = &settings.collectors.netdev;
    Ok(Box::new(Netdev {
        paths: settings.paths.clone(),
        include: super::regex("netdev", o.devices_include.as_deref())?,
        exclude: super::regex("netdev", o.devices_exclude.as_deref())?,
    }))
}

const RECEIVE: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "frame",
    "compressed",
    "multicast",
];
const TRANSMIT: [&str; 8] = [
    "bytes",
    "packets",
    "errs",
    "drop",
    "fifo",
    "colls",
    "carrier",
    "compressed",
];

impl Collector for Netdev {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("net/dev"))?;
        let names: Vec<String> = RECEIVE
            .iter()
            .map(|f| format!("receive_{f}"))
            .chain(TRANSMIT.iter().map(|f| format!("transmit_{f}")))
            .collect();
        let mut families: Vec<Family> = names
            .iter()
            .map(|n| {
                Family::new(
                    format!("node_network_{n}_total"),
                    format!("Network device statistic {n}."),
                    Kind::Counter,
                )
            })
            .collect();
        let mut nohandler = Family::new(
            "node_network_receive_nohandler_total",
            "Network device statistic receive_nohandler.",
            Kind::Counter,
        );
        for line in text.lines().skip(2) {
            let Some((device, rest)) = line.split_once(':') else {
                continue;
            };
            let device = device.trim();
            if self.include.as_ref().is_some_and(|r| !r.is_match(device))
                || self.exclude.as_ref().is_some_and(|r| r.is_match(device))
            {
                continue;
            }
            for (family, value) in families.iter_mut().zip(rest.split_whitespace()) {
                if let Ok(v) = value.parse::<f64>() {
                    family.push(vec![("device", device.to_owned())], v);
                }
            }
            let path = self
                .paths
                .sys
                .join("class/net")
                .join(device)
                .join("statistics/rx_nohandler");
            if let Some(v) = std::fs::read_to_string(path)
                .ok()
                .and_then(|t| t.trim().parse::<f64>().ok())
            {
                nohandler.push(vec![("device", device.to_owned())], v);
            }
        }
        families.push(nohandler);
        families.sort_by(|a, b| a.name.cmp(&b.name));
        out.extend(families);
        Ok(())
    }
}
