//! `ipvs`: IP Virtual Server totals from `/proc/net/ip_vs_stats` and per-backend connections
//! and weights from `/proc/net/ip_vs`, as node_exporter reads them. Backends that share every
//! label (the same real server behind one virtual service, listed twice) are summed. A host
//! without IPVS is "no data".

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::kfiles::{failed, io_error, parse_u64};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Ipvs {
    stats: PathBuf,
    backends: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Ipvs {
        stats: settings.paths.proc("net/ip_vs_stats"),
        backends: settings.paths.proc("net/ip_vs"),
    }))
}

const TOTALS: [(&str, &str); 5] = [
    (
        "node_ipvs_connections_total",
        "The total number of connections made.",
    ),
    (
        "node_ipvs_incoming_packets_total",
        "The total number of incoming packets.",
    ),
    (
        "node_ipvs_outgoing_packets_total",
        "The total number of outgoing packets.",
    ),
    (
        "node_ipvs_incoming_bytes_total",
        "The total amount of incoming data.",
    ),
    (
        "node_ipvs_outgoing_bytes_total",
        "The total amount of outgoing data.",
    ),
];

/// The five hexadecimal totals on the third line of `ip_vs_stats`.
pub fn parse_totals(text: &str) -> Result<[u64; 5], String> {
    let mut lines = text.splitn(4, '\n');
    let third = lines.nth(2);
    if third.is_none() || lines.next().is_none() {
        return Err("too short".into());
    }
    let fields: Vec<&str> = third.unwrap_or_default().split_whitespace().collect();
    if fields.len() != 5 {
        return Err("unexpected number of fields".into());
    }
    let mut totals = [0u64; 5];
    for (slot, field) in totals.iter_mut().zip(fields) {
        *slot = parse_u64(field, 16).ok_or_else(|| format!("{field:?} is not hexadecimal"))?;
    }
    Ok(totals)
}

/// `0A000001:0050` or `[2620:0000:...:0001]:0050` → (address as Go prints it, port).
pub fn parse_ip_port(s: &str) -> Result<(String, u16), String> {
    let ip = match s.len() {
        13 => {
            let hex = s.get(..8).ok_or("bad address")?;
            let n = parse_u64(hex, 16).ok_or_else(|| format!("bad address {hex:?}"))?;
            IpAddr::V4(Ipv4Addr::from(n as u32))
        }
        46 => {
            let text = s.get(1..40).ok_or("bad address")?;
            let v6: Ipv6Addr = text
                .parse()
                .map_err(|_| format!("invalid IPv6 address: {text}"))?;
            // Go prints IPv4-mapped addresses as plain IPv4.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return Err(format!("unexpected IP:Port: {s}")),
    };
    let port = s
        .get(s.len() - 4..)
        .and_then(|p| parse_u64(p, 16))
        .ok_or("bad port")?;
    let port = u16::try_from(port).map_err(|_| "bad port")?;
    Ok((ip.to_string(), port))
}

/// Backend label values in exposition order: local_address, local_mark, local_port, proto,
/// remote_address, remote_port.
type Key = [String; 6];

/// Sums (active, inactive, weight) per backend.
pub fn parse_backends(text: &str) -> Result<BTreeMap<Key, [u64; 3]>, String> {
    let mut sums: BTreeMap<Key, [u64; 3]> = BTreeMap::new();
    let (mut proto, mut mark, mut address, mut port) =
        (String::new(), String::new(), String::new(), 0u16);
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["IP", ..] | ["Prot", ..] | [_, "RemoteAddress:Port", ..] => {}
            [p @ ("TCP" | "UDP"), local, ..] => {
                proto = (*p).to_owned();
                mark.clear();
                (address, port) = parse_ip_port(local)?;
            }
            ["FWM", m, ..] => {
                proto = "FWM".to_owned();
                mark = (*m).to_owned();
                address.clear();
                port = 0;
            }
            ["->", remote, _, weight, active, inactive, ..] => {
                let (remote, remote_port) = parse_ip_port(remote)?;
                let number =
                    |s: &str| parse_u64(s, 10).ok_or_else(|| format!("{s:?} is not a number"));
                let (weight, active, inactive) =
                    (number(weight)?, number(active)?, number(inactive)?);
                let key = [
                    address.clone(),
                    mark.clone(),
                    port.to_string(),
                    proto.clone(),
                    remote,
                    remote_port.to_string(),
                ];
                let sum = sums.entry(key).or_default();
                sum[0] = sum[0].wrapping_add(active);
                sum[1] = sum[1].wrapping_add(inactive);
                sum[2] = sum[2].wrapping_add(weight);
            }
            _ => {}
        }
    }
    Ok(sums)
}

impl Collector for Ipvs {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = std::fs::read_to_string(&self.stats).map_err(|e| io_error(&self.stats, &e))?;
        let totals = parse_totals(&text).map_err(|e| failed(&self.stats, e))?;
        for ((name, help), value) in TOTALS.into_iter().zip(totals) {
            out.push(Family::single(name, help, Kind::Counter, value as f64));
        }
        let text =
            std::fs::read_to_string(&self.backends).map_err(|e| failed(&self.backends, e))?;
        let sums = parse_backends(&text).map_err(|e| failed(&self.backends, e))?;
        let mut families = [
            Family::new(
                "node_ipvs_backend_connections_active",
                "The current active connections by local and remote address.",
                Kind::Gauge,
            ),
            Family::new(
                "node_ipvs_backend_connections_inactive",
                "The current inactive connections by local and remote address.",
                Kind::Gauge,
            ),
            Family::new(
                "node_ipvs_backend_weight",
                "The current backend weight by local and remote address.",
                Kind::Gauge,
            ),
        ];
        const LABELS: [&str; 6] = [
            "local_address",
            "local_mark",
            "local_port",
            "proto",
            "remote_address",
            "remote_port",
        ];
        for (key, values) in sums {
            for (family, value) in families.iter_mut().zip(values) {
                let labels = LABELS.iter().copied().zip(key.iter().cloned()).collect();
                family.push(labels, value as f64);
            }
        }
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_printed_as_node_exporter_prints_them() {
        assert_eq!(
            parse_ip_port("C0A80016:0CEA").unwrap(),
            ("192.168.0.22".into(), 3306)
        );
        assert_eq!(
            parse_ip_port("[2620:0000:0000:0000:0000:0000:0000:0001]:0050").unwrap(),
            ("2620::1".into(), 80)
        );
        assert_eq!(
            parse_ip_port("[0000:0000:0000:0000:0000:ffff:0a00:0001]:0050").unwrap(),
            ("10.0.0.1".into(), 80)
        );
        assert!(parse_ip_port("C0A8001:0CEA").is_err());
        assert!(parse_ip_port("ZZA80016:0CEA").is_err());
    }

    #[test]
    fn totals_need_three_lines_of_five_fields() {
        let text = "       Total Incoming Outgoing         Incoming         Outgoing\n   \
                    Conns  Packets  Packets            Bytes            Bytes\n   \
                    23B6  2C1A2CE        0        1A4D5A2E1F        0\n\n";
        assert_eq!(
            parse_totals(text).unwrap(),
            [0x23B6, 0x2C1A2CE, 0, 0x1A4D5A2E1F, 0]
        );
        assert!(parse_totals("a\nb\n").is_err());
        assert!(parse_totals("a\nb\n1 2 3\n").is_err());
    }
}
