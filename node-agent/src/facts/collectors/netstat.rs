//! `netstat`: network statistics from `/proc/net/netstat`, `/proc/net/snmp` and
//! `/proc/net/snmp6`, as node_exporter 1.5 exports them: one untyped family
//! `node_netstat_<Protocol>_<Name>` per statistic that node_exporter's default
//! `--collector.netstat.fields` selects. A host without IPv6 (no `snmp6`) exports the IPv4
//! statistics only; a value that is not a number fails the collector.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Netstat {
    netstat: PathBuf,
    snmp: PathBuf,
    snmp6: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let net = settings.paths.proc.join("net");
    Ok(Box::new(Netstat {
        netstat: net.join("netstat"),
        snmp: net.join("snmp"),
        snmp6: net.join("snmp6"),
    }))
}

/// Statistics by protocol, then name, as text.
type Stats = BTreeMap<String, BTreeMap<String, String>>;

/// Parses `/proc/net/netstat` or `/proc/net/snmp`: pairs of lines `Proto: names...` and
/// `Proto: values...`. A pair whose counts differ is an error, as for node_exporter.
pub fn parse_pairs(text: &str, stats: &mut Stats) -> Result<(), CollectError> {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((proto, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        let names: Vec<&str> = names.split_whitespace().collect();
        let values: Vec<&str> = values.split_whitespace().collect();
        if names.len() != values.len() {
            return Err(CollectError::Failed(format!(
                "netstat: mismatch field count mapping {proto}"
            )));
        }
        let entry = stats.entry(proto.to_owned()).or_default();
        for (name, value) in names.into_iter().zip(values) {
            entry.insert(name.to_owned(), value.to_owned());
        }
    }
    Ok(())
}

/// Parses `/proc/net/snmp6`: `Ip6InReceives 12` lines; the protocol is the name up to and
/// including its first `6`. Lines without a `6` are skipped.
pub fn parse_snmp6(text: &str, stats: &mut Stats) {
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(stat), Some(value)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(six) = stat.find('6') else {
            continue;
        };
        let (proto, name) = stat.split_at(six + 1);
        stats
            .entry(proto.to_owned())
            .or_default()
            .insert(name.to_owned(), value.to_owned());
    }
}

/// Whether node_exporter's default `--collector.netstat.fields` selects `proto_name`:
/// `^(.*_(InErrors|InErrs)|Ip_Forwarding|Ip(6|Ext)_(InOctets|OutOctets)|Icmp6?_(InMsgs|OutMsgs)|TcpExt_(Listen.*|Syncookies.*|TCPSynRetrans|TCPTimeouts)|Tcp_(ActiveOpens|InSegs|OutSegs|OutRsts|PassiveOpens|RetransSegs|CurrEstab)|Udp6?_(InDatagrams|OutDatagrams|NoPorts|RcvbufErrors|SndbufErrors))$`.
pub fn selected(proto: &str, name: &str) -> bool {
    if name == "InErrors" || name == "InErrs" {
        return true;
    }
    match proto {
        "Ip" => name == "Forwarding",
        "Ip6" | "IpExt" => matches!(name, "InOctets" | "OutOctets"),
        "Icmp" | "Icmp6" => matches!(name, "InMsgs" | "OutMsgs"),
        "TcpExt" => {
            name.starts_with("Listen")
                || name.starts_with("Syncookies")
                || matches!(name, "TCPSynRetrans" | "TCPTimeouts")
        }
        "Tcp" => matches!(
            name,
            "ActiveOpens"
                | "InSegs"
                | "OutSegs"
                | "OutRsts"
                | "PassiveOpens"
                | "RetransSegs"
                | "CurrEstab"
        ),
        "Udp" | "Udp6" => matches!(
            name,
            "InDatagrams" | "OutDatagrams" | "NoPorts" | "RcvbufErrors" | "SndbufErrors"
        ),
        _ => false,
    }
}

/// The families of the selected statistics; a value that is not a number is an error.
pub fn families(stats: &Stats) -> Result<Vec<Family>, CollectError> {
    let mut out = Vec::new();
    for (proto, names) in stats {
        for (name, value) in names {
            if !selected(proto, name) {
                continue;
            }
            let v: f64 = value.parse().map_err(|_| {
                CollectError::Failed(format!("netstat: invalid value {value:?} of {proto}{name}"))
            })?;
            out.push(Family::single(
                format!("node_netstat_{proto}_{name}"),
                format!("Statistic {proto}{name}."),
                Kind::Untyped,
                v,
            ));
        }
    }
    Ok(out)
}

impl Collector for Netstat {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut stats = Stats::new();
        parse_pairs(&read(&self.netstat)?, &mut stats)?;
        parse_pairs(&read(&self.snmp)?, &mut stats)?;
        match read(&self.snmp6) {
            Ok(text) => parse_snmp6(&text, &mut stats),
            // IPv6 disabled: no file, nothing from it.
            Err(CollectError::NoData(_)) => {}
            Err(e) => return Err(e),
        }
        out.extend(families(&stats)?);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_snmp6_and_selects_defaults() {
        let mut stats = Stats::new();
        parse_pairs(
            "Tcp: RtoAlgorithm ActiveOpens InErrs\nTcp: 1 5 2\n",
            &mut stats,
        )
        .expect("pairs");
        assert!(parse_pairs("Udp: InDatagrams\nUdp: 1 2\n", &mut stats).is_err());
        parse_snmp6("Ip6InOctets 7\nUdpLite6InErrors 3\nnosix 1\n", &mut stats);
        assert_eq!(stats["Tcp"]["ActiveOpens"], "5");
        assert!(!stats.contains_key("Udp"));
        assert_eq!(stats["Ip6"]["InOctets"], "7");
        assert_eq!(stats["UdpLite6"]["InErrors"], "3");
        let names: Vec<String> = families(&stats)
            .expect("families")
            .iter()
            .map(|f| f.name.clone())
            .collect();
        assert_eq!(
            names,
            [
                "node_netstat_Ip6_InOctets",
                "node_netstat_Tcp_ActiveOpens",
                "node_netstat_Tcp_InErrs",
                "node_netstat_UdpLite6_InErrors"
            ]
        );
        stats
            .entry("Tcp".into())
            .or_default()
            .insert("CurrEstab".into(), "x".into());
        assert!(families(&stats).is_err());
    }
}
