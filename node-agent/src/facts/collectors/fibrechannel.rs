//! `fibrechannel`: Fibre Channel host adapters in `/sys/class/fc_host`, as node_exporter reads
//! them: `node_fibrechannel_info` with the port's attributes, and the `statistics/` counters. A
//! counter reading all ones (`0xffffffffffffffff`) is one the HBA firmware does not implement
//! and is left out. Every host is read before anything is exported: an unreadable attribute
//! fails the collector and exports nothing.

use std::path::{Path, PathBuf};

use super::kfiles::{
    dir_entries, dir_names, failed, families, not_found, parse_u64_prefixed, sys_read, unsupported,
};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Fibrechannel {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Fibrechannel {
        class: settings.paths.sys.join("class/fc_host"),
    }))
}

/// Host attributes, in the info family's label order (`fc_host` goes between `fabric_name` and
/// `port_id`); `true` drops a `0x` prefix.
const ATTRIBUTES: [(&str, bool); 10] = [
    ("dev_loss_tmo", false),
    ("fabric_name", true),
    ("port_id", true),
    ("port_name", true),
    ("port_state", false),
    ("port_type", false),
    ("speed", false),
    ("supported_classes", false),
    ("supported_speeds", false),
    ("symbolic_name", false),
];

/// (file in `statistics/`, family, help).
const COUNTERS: [(&str, &str, &str); 14] = [
    (
        "dumped_frames",
        "node_fibrechannel_dumped_frames_total",
        "Number of dumped frames",
    ),
    (
        "error_frames",
        "node_fibrechannel_error_frames_total",
        "Number of errors in frames",
    ),
    (
        "invalid_crc_count",
        "node_fibrechannel_invalid_crc_total",
        "Invalid Cyclic Redundancy Check count",
    ),
    (
        "rx_frames",
        "node_fibrechannel_rx_frames_total",
        "Number of frames received",
    ),
    (
        "rx_words",
        "node_fibrechannel_rx_words_total",
        "Number of words received by host port",
    ),
    (
        "tx_frames",
        "node_fibrechannel_tx_frames_total",
        "Number of frames transmitted by host port",
    ),
    (
        "tx_words",
        "node_fibrechannel_tx_words_total",
        "Number of words transmitted by host port",
    ),
    (
        "seconds_since_last_reset",
        "node_fibrechannel_seconds_since_last_reset_total",
        "Number of seconds since last host port reset",
    ),
    (
        "invalid_tx_word_count",
        "node_fibrechannel_invalid_tx_words_total",
        "Number of invalid words transmitted by host port",
    ),
    (
        "link_failure_count",
        "node_fibrechannel_link_failure_total",
        "Number of times the host port link has failed",
    ),
    (
        "loss_of_sync_count",
        "node_fibrechannel_loss_of_sync_total",
        "Number of failures on either bit or transmission word boundaries",
    ),
    (
        "loss_of_signal_count",
        "node_fibrechannel_loss_of_signal_total",
        "Number of times signal has been lost",
    ),
    (
        "nos_count",
        "node_fibrechannel_nos_total",
        "Number Not_Operational Primitive Sequence received by host port",
    ),
    (
        "fcp_packet_aborts",
        "node_fibrechannel_fcp_packet_aborts_total",
        "Number of aborted packets",
    ),
];

/// One host: its info labels and counters in [`COUNTERS`] order.
struct Host {
    labels: Vec<(&'static str, String)>,
    counters: [u64; 14],
}

fn read_host(dir: &Path, name: &str) -> Result<Host, CollectError> {
    let mut labels = Vec::with_capacity(11);
    for (file, strip) in ATTRIBUTES {
        if file == "port_id" {
            labels.push(("fc_host", name.to_owned()));
        }
        let path = dir.join(file);
        let mut value = sys_read(&path).map_err(|e| failed(&path, e))?;
        if strip && value.len() > 2 {
            value = value.get(2..).unwrap_or_default().to_owned();
        }
        labels.push((file, value));
    }
    // Read (and required) by node_exporter, though not exported.
    let path = dir.join("node_name");
    sys_read(&path).map_err(|e| failed(&path, e))?;
    Ok(Host {
        labels,
        counters: statistics(&dir.join("statistics"))?,
    })
}

fn statistics(dir: &Path) -> Result<[u64; 14], CollectError> {
    let mut counters = [0u64; 14];
    let entries = dir_entries(dir).map_err(|e| {
        if not_found(&e) {
            CollectError::NoData(format!("{} not found", dir.display()))
        } else {
            failed(dir, e)
        }
    })?;
    for (name, kind) in entries {
        if !kind.is_file() || name == "reset_statistics" {
            continue;
        }
        let path = dir.join(&name);
        let text = match sys_read(&path) {
            Ok(text) => text,
            // Write-only and unsupported attributes.
            Err(e) if not_found(&e) || unsupported(&e) => continue,
            Err(e) => return Err(failed(&path, e)),
        };
        if let Some(i) = COUNTERS.iter().position(|c| c.0 == name) {
            let value = parse_u64_prefixed(&text)
                .ok_or_else(|| failed(&path, format!("{text:?} is not an unsigned integer")))?;
            if let Some(slot) = counters.get_mut(i) {
                *slot = value;
            }
        }
    }
    Ok(counters)
}

impl Collector for Fibrechannel {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let names = dir_names(&self.class).map_err(|e| {
            if not_found(&e) {
                CollectError::NoData(format!("{} not found", self.class.display()))
            } else {
                failed(&self.class, e)
            }
        })?;
        let mut hosts = Vec::with_capacity(names.len());
        for name in names {
            let host = read_host(&self.class.join(&name), &name)?;
            hosts.push((name, host));
        }
        let mut info = Family::new(
            "node_fibrechannel_info",
            "Non-numeric data from /sys/class/fc_host/<host>, value is always 1.",
            Kind::Gauge,
        );
        let rows: Vec<(&str, &str, Kind)> =
            COUNTERS.iter().map(|c| (c.1, c.2, Kind::Counter)).collect();
        let mut counters = families(&rows);
        for (name, host) in hosts {
            info.push(host.labels, 1.0);
            for (family, value) in counters.iter_mut().zip(host.counters) {
                // All ones: not implemented by the HBA firmware.
                if value != u64::MAX {
                    family.push(vec![("fc_host", name.clone())], value as f64);
                }
            }
        }
        out.push(info);
        out.extend(counters);
        Ok(())
    }
}
