//! `infiniband`: InfiniBand devices in `/sys/class/infiniband`, as node_exporter reads them:
//! `node_infiniband_info` per device, port state, physical state and rate, and the port
//! counters of `counters/` and the legacy `counters_ext/`. The data counters (`port_rcv_data`,
//! `port_xmit_data` and their `_64` forms) count 4-byte words and are multiplied by 4. Counters a
//! driver cannot read (`N/A (no PMA)`, permission, unsupported) are left out. Every device is
//! read before anything is exported: a missing file makes the collector "no data", any other
//! problem fails it.

use std::collections::BTreeMap;
use std::path::Path;

use super::kfiles::{
    dir_entries, dir_names, failed, not_found, parse_u64, parse_u64_prefixed, sys_read, unsupported,
};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Infiniband {
    class: std::path::PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Infiniband {
        class: settings.paths.sys.join("class/infiniband"),
    }))
}

/// (directory, file, family without `node_infiniband_`, help, multiplier).
const COUNTERS: &[(&str, &str, &str, &str, u64)] = &[
    ("counters_ext", "port_multicast_rcv_packets", "legacy_multicast_packets_received_total", "Number of multicast packets received", 1),
    ("counters_ext", "port_multicast_xmit_packets", "legacy_multicast_packets_transmitted_total", "Number of multicast packets transmitted", 1),
    ("counters_ext", "port_rcv_data_64", "legacy_data_received_bytes_total", "Number of data octets received on all links", 4),
    ("counters_ext", "port_rcv_packets_64", "legacy_packets_received_total", "Number of data packets received on all links", 1),
    ("counters_ext", "port_unicast_rcv_packets", "legacy_unicast_packets_received_total", "Number of unicast packets received", 1),
    ("counters_ext", "port_unicast_xmit_packets", "legacy_unicast_packets_transmitted_total", "Number of unicast packets transmitted", 1),
    ("counters_ext", "port_xmit_data_64", "legacy_data_transmitted_bytes_total", "Number of data octets transmitted on all links", 4),
    ("counters_ext", "port_xmit_packets_64", "legacy_packets_transmitted_total", "Number of data packets received on all links", 1),
    ("counters", "excessive_buffer_overrun_errors", "excessive_buffer_overrun_errors_total", "Number of times that OverrunErrors consecutive flow control update periods occurred, each having at least one overrun error.", 1),
    ("counters", "link_downed", "link_downed_total", "Number of times the link failed to recover from an error state and went down", 1),
    ("counters", "link_error_recovery", "link_error_recovery_total", "Number of times the link successfully recovered from an error state", 1),
    ("counters", "local_link_integrity_errors", "local_link_integrity_errors_total", "Number of times that the count of local physical errors exceeded the threshold specified by LocalPhyErrors.", 1),
    ("counters", "multicast_rcv_packets", "multicast_packets_received_total", "Number of multicast packets received (including errors)", 1),
    ("counters", "multicast_xmit_packets", "multicast_packets_transmitted_total", "Number of multicast packets transmitted (including errors)", 1),
    ("counters", "port_rcv_constraint_errors", "port_constraint_errors_received_total", "Number of packets received on the switch physical port that are discarded", 1),
    ("counters", "port_xmit_constraint_errors", "port_constraint_errors_transmitted_total", "Number of packets not transmitted from the switch physical port", 1),
    ("counters", "port_rcv_data", "port_data_received_bytes_total", "Number of data octets received on all links", 4),
    ("counters", "port_xmit_data", "port_data_transmitted_bytes_total", "Number of data octets transmitted on all links", 4),
    ("counters", "port_rcv_discards", "port_discards_received_total", "Number of inbound packets discarded by the port because the port is down or congested", 1),
    ("counters", "port_xmit_discards", "port_discards_transmitted_total", "Number of outbound packets discarded by the port because the port is down or congested", 1),
    ("counters", "port_rcv_errors", "port_errors_received_total", "Number of packets containing an error that were received on this port", 1),
    ("counters", "port_rcv_packets", "port_packets_received_total", "Number of packets received on all VLs by this port (including errors)", 1),
    ("counters", "port_xmit_packets", "port_packets_transmitted_total", "Number of packets transmitted on all VLs from this port (including errors)", 1),
    ("counters", "port_xmit_wait", "port_transmit_wait_total", "Number of ticks during which the port had data to transmit but no data was sent during the entire tick", 1),
    ("counters", "unicast_rcv_packets", "unicast_packets_received_total", "Number of unicast packets received (including errors)", 1),
    ("counters", "unicast_xmit_packets", "unicast_packets_transmitted_total", "Number of unicast packets transmitted (including errors)", 1),
    ("counters", "port_rcv_remote_physical_errors", "port_receive_remote_physical_errors_total", "Number of packets marked with the EBP (End of Bad Packet) delimiter received on the port.", 1),
    ("counters", "port_rcv_switch_relay_errors", "port_receive_switch_relay_errors_total", "Number of packets that could not be forwarded by the switch.", 1),
    ("counters", "symbol_error", "symbol_error_total", "Number of minor link errors detected on one or more physical lanes.", 1),
    ("counters", "VL15_dropped", "vl15_dropped_total", "Number of incoming VL15 packets dropped due to resource limitations.", 1),
];

/// One port: state, physical state, rate in bytes/s, counters in [`COUNTERS`] order.
struct Port {
    state: u32,
    phys_state: u32,
    rate: u64,
    counters: Vec<Option<u64>>,
}

/// One device: board id, firmware version, HCA type, ports by number.
struct Device {
    name: String,
    board_id: String,
    fw_ver: String,
    hca_type: String,
    ports: BTreeMap<u32, Port>,
}

/// "No data" for a missing path, failure otherwise.
fn io(path: &Path, e: std::io::Error) -> CollectError {
    if not_found(&e) {
        CollectError::NoData(format!("{} not found", path.display()))
    } else {
        failed(path, e)
    }
}

/// `"4: ACTIVE"` → 4.
pub fn parse_state(text: &str) -> Option<u32> {
    let (id, _name) = text.split_once(':')?;
    if _name.contains(':') {
        return None;
    }
    parse_u64(id.trim(), 10).and_then(|v| u32::try_from(v).ok())
}

/// `"100 Gb/sec (4X EDR)"` → 12,500,000,000 bytes/s (the number is read as a 32-bit float, as
/// node_exporter does).
pub fn parse_rate(text: &str) -> Option<u64> {
    let (number, _) = text.split_once(' ')?;
    let gbits = number.trim().parse::<f32>().ok()?;
    if !gbits.is_finite() {
        return None;
    }
    Some((f64::from(gbits) * 125_000_000.0) as u64)
}

fn read_counters(port: &Path, counters: &mut [Option<u64>]) -> Result<(), CollectError> {
    for dir in ["counters", "counters_ext"] {
        let path = port.join(dir);
        let entries = match dir_entries(&path) {
            Ok(entries) => entries,
            Err(e) if dir == "counters_ext" && not_found(&e) => continue,
            Err(e) => return Err(io(&path, e)),
        };
        for (name, _) in entries.into_iter().filter(|(_, k)| k.is_file()) {
            let file = path.join(&name);
            let text = match sys_read(&file) {
                Ok(text) => text,
                Err(e)
                    if not_found(&e)
                        || unsupported(&e)
                        || e.kind() == std::io::ErrorKind::PermissionDenied =>
                {
                    continue
                }
                Err(e) => return Err(failed(&file, e)),
            };
            let Some(i) = COUNTERS.iter().position(|c| c.0 == dir && c.1 == name) else {
                continue;
            };
            match parse_u64_prefixed(&text) {
                Some(v) => counters[i] = Some(v.wrapping_mul(COUNTERS[i].4)),
                // Drivers without a performance management agent.
                None if text.contains("N/A (no PMA)") => {}
                None => {
                    return Err(failed(
                        &file,
                        format!("{text:?} is not an unsigned integer"),
                    ))
                }
            }
        }
    }
    Ok(())
}

fn read_port(dir: &Path) -> Result<Port, CollectError> {
    let state = |file: &str| -> Result<u32, CollectError> {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
        parse_state(&text).ok_or_else(|| failed(&path, format!("{text:?} is not \"ID: NAME\"")))
    };
    let rate_path = dir.join("rate");
    let rate_text = std::fs::read_to_string(&rate_path).map_err(|e| io(&rate_path, e))?;
    let mut port = Port {
        state: state("state")?,
        phys_state: state("phys_state")?,
        rate: parse_rate(&rate_text)
            .ok_or_else(|| failed(&rate_path, format!("{rate_text:?} is not a rate")))?,
        counters: vec![None; COUNTERS.len()],
    };
    read_counters(dir, &mut port.counters)?;
    Ok(port)
}

fn read_device(dir: &Path, name: String) -> Result<Device, CollectError> {
    let attribute = |file: &str| -> Result<String, CollectError> {
        let path = dir.join(file);
        match sys_read(&path) {
            Ok(v) => Ok(v),
            // Not every driver has an HCA type.
            Err(e) if file == "hca_type" && not_found(&e) => Ok(String::new()),
            Err(e) => Err(io(&path, e)),
        }
    };
    let mut device = Device {
        board_id: attribute("board_id")?,
        fw_ver: attribute("fw_ver")?,
        hca_type: attribute("hca_type")?,
        name,
        ports: BTreeMap::new(),
    };
    let ports = dir.join("ports");
    for port in dir_names(&ports).map_err(|e| io(&ports, e))? {
        let number = parse_u64(&port, 10)
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| failed(&ports, format!("port {port:?} is not a number")))?;
        device.ports.insert(number, read_port(&ports.join(&port))?);
    }
    Ok(device)
}

fn export(devices: Vec<Device>, out: &mut Vec<Family>) {
    let mut info = Family::new(
        "node_infiniband_info",
        "Non-numeric data from /sys/class/infiniband/<device>, value is always 1.",
        Kind::Gauge,
    );
    let mut state = Family::new("node_infiniband_state_id", "State of the InfiniBand port (0: no change, 1: down, 2: init, 3: armed, 4: active, 5: act defer)", Kind::Gauge);
    let mut phys = Family::new("node_infiniband_physical_state_id", "Physical state of the InfiniBand port (0: no change, 1: sleep, 2: polling, 3: disable, 4: shift, 5: link up, 6: link error recover, 7: phytest)", Kind::Gauge);
    let mut rate = Family::new(
        "node_infiniband_rate_bytes_per_second",
        "Maximum signal transfer rate",
        Kind::Gauge,
    );
    let mut counters: Vec<Family> = COUNTERS
        .iter()
        .map(|c| Family::new(format!("node_infiniband_{}", c.2), c.3, Kind::Counter))
        .collect();
    for device in devices {
        info.push(
            vec![
                ("board_id", device.board_id),
                ("device", device.name.clone()),
                ("firmware_version", device.fw_ver),
                ("hca_type", device.hca_type),
            ],
            1.0,
        );
        for (number, port) in device.ports {
            let labels = || {
                vec![
                    ("device", device.name.clone()),
                    ("port", number.to_string()),
                ]
            };
            state.push(labels(), f64::from(port.state));
            phys.push(labels(), f64::from(port.phys_state));
            rate.push(labels(), port.rate as f64);
            for (family, value) in counters.iter_mut().zip(port.counters) {
                if let Some(v) = value {
                    family.push(labels(), v as f64);
                }
            }
        }
    }
    out.extend([info, state, phys, rate]);
    out.extend(counters);
}

impl Collector for Infiniband {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let names = dir_names(&self.class).map_err(|e| io(&self.class, e))?;
        let mut devices = Vec::with_capacity(names.len());
        for name in names {
            let dir = self.class.join(&name);
            devices.push(read_device(&dir, name)?);
        }
        export(devices, out);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_rates_parse_as_node_exporter() {
        assert_eq!(parse_state("4: ACTIVE\n"), Some(4));
        assert_eq!(parse_state("5: LinkUp"), Some(5));
        assert_eq!(parse_state("ACTIVE"), None);
        assert_eq!(parse_state("4: A: B"), None);
        assert_eq!(parse_rate("100 Gb/sec (4X EDR)\n"), Some(12_500_000_000));
        assert_eq!(parse_rate("2.5 Gb/sec (1X SDR)"), Some(312_500_000));
        assert_eq!(parse_rate("56 Gb/sec (4X FDR)"), Some(7_000_000_000));
        assert_eq!(parse_rate("fast"), None);
    }
}
