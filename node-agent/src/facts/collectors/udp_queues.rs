//! `udp_queues`: bytes queued in UDP sockets, summed over `/proc/net/udp` and `/proc/net/udp6`
//! (the `tx_queue:rx_queue` column), as node_exporter 1.5 exports them. A missing file leaves
//! its `ip` out; both missing is "no data"; a line that does not parse fails the collector.

use std::path::{Path, PathBuf};

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct UdpQueues {
    udp: PathBuf,
    udp6: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let net = settings.paths.proc.join("net");
    Ok(Box::new(UdpQueues {
        udp: net.join("udp"),
        udp6: net.join("udp6"),
    }))
}

fn bad(line: &str) -> CollectError {
    CollectError::Failed(format!("udp_queues: cannot parse socket line {line:?}"))
}

fn hex_address(field: &str) -> bool {
    field.split_once(':').is_some_and(|(ip, port)| {
        !ip.is_empty()
            && ip.bytes().all(|b| b.is_ascii_hexdigit())
            && u16::from_str_radix(port, 16).is_ok()
    })
}

/// `(tx, rx)` bytes summed over the socket lines after the header. A line needs ten columns,
/// hexadecimal addresses and queues, and decimal `uid` and `inode`, as node_exporter reads it.
pub fn parse(text: &str) -> Result<(u64, u64), CollectError> {
    let (mut tx, mut rx) = (0u64, 0u64);
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || !hex_address(f[1]) || !hex_address(f[2]) {
            return Err(bad(line));
        }
        u64::from_str_radix(f[3], 16).map_err(|_| bad(line))?;
        let (t, r) = f[4].split_once(':').ok_or_else(|| bad(line))?;
        let t = u64::from_str_radix(t, 16).map_err(|_| bad(line))?;
        let r = u64::from_str_radix(r, 16).map_err(|_| bad(line))?;
        f[7].parse::<u64>().map_err(|_| bad(line))?;
        f[9].parse::<u64>().map_err(|_| bad(line))?;
        tx = tx.wrapping_add(t);
        rx = rx.wrapping_add(r);
    }
    Ok((tx, rx))
}

fn summary(path: &Path) -> Result<Option<(u64, u64)>, CollectError> {
    match read(path) {
        Ok(text) => parse(&text).map(Some),
        Err(CollectError::NoData(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

impl Collector for UdpQueues {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut family = Family::new(
            "node_udp_queues",
            "Number of allocated memory in the kernel for UDP datagrams in bytes.",
            Kind::Gauge,
        );
        let mut found = false;
        for (ip, path) in [("v4", &self.udp), ("v6", &self.udp6)] {
            let result = summary(path);
            let Some((tx, rx)) = (match result {
                Ok(s) => s,
                Err(e) => {
                    out.push(family);
                    return Err(e);
                }
            }) else {
                continue;
            };
            found = true;
            family.push(
                vec![("ip", ip.to_owned()), ("queue", "tx".to_owned())],
                tx as f64,
            );
            family.push(
                vec![("ip", ip.to_owned()), ("queue", "rx".to_owned())],
                rx as f64,
            );
        }
        out.push(family);
        if found {
            Ok(())
        } else {
            Err(CollectError::NoData("no /proc/net/udp or udp6".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_queues_and_rejects_bad_lines() {
        let header = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
        let a = "  1: 0100007F:0035 00000000:0000 07 00000010:00000200 00:00000000 00000000   101        0 1234 2 0000000000000000 0\n";
        let b = "  2: 00000000:0044 00000000:0000 07 00000001:00000002 00:00000000 00000000     0        0 99 2 0000000000000000 0\n";
        assert_eq!(parse(&format!("{header}{a}{b}")).expect("parse"), (17, 514));
        assert_eq!(parse(header).expect("empty"), (0, 0));
        assert!(parse(&format!("{header}  1: 0100007F:0035 00000000:0000 07\n")).is_err());
        assert!(parse(&format!("{header}{}", a.replace("00000010:", "zz:"))).is_err());
    }
}
