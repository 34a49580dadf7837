//! `arp`: ARP table entries per device from `/proc/net/arp`, as node_exporter 1.5 counts them.
//! A line with fewer than six columns fails the collector; a missing file is "no data".

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Arp {
    arp: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Arp {
        arp: settings.paths.proc.join("net/arp"),
    }))
}

/// Entries per device (the sixth column); the header line (`IP address ...`) is skipped.
pub fn parse(text: &str) -> Result<BTreeMap<String, u32>, CollectError> {
    let mut entries = BTreeMap::new();
    for line in text.lines() {
        let columns: Vec<&str> = line.split_whitespace().collect();
        let Some(device) = columns.get(5) else {
            return Err(CollectError::Failed(
                "arp: unexpected ARP table format".into(),
            ));
        };
        if columns.first() != Some(&"IP") {
            *entries.entry((*device).to_owned()).or_insert(0) += 1;
        }
    }
    Ok(entries)
}

impl Collector for Arp {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let entries = parse(&read(&self.arp)?)?;
        let mut family = Family::new("node_arp_entries", "ARP entries by device", Kind::Gauge);
        for (device, n) in entries {
            family.push(vec![("device", device)], f64::from(n));
        }
        out.push(family);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_device_and_rejects_short_lines() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device\n\
                    192.0.2.1        0x1         0x2         02:fc:00:00:00:05     *        eth0\n\
                    192.0.2.2        0x1         0x2         02:fc:00:00:00:06     *        eth0\n\
                    10.0.0.1         0x1         0x0         00:00:00:00:00:00     *        br-x.1\n";
        let entries = parse(text).expect("parse");
        assert_eq!(entries["eth0"], 2);
        assert_eq!(entries["br-x.1"], 1);
        assert!(parse("1 2 3\n").is_err());
    }
}
