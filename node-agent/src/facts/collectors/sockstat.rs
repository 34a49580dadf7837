//! `sockstat`: socket counts from `/proc/net/sockstat` and `/proc/net/sockstat6`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Sockstat {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Sockstat {
        paths: settings.paths.clone(),
    }))
}

/// Appends the families of one sockstat file.
pub fn parse(text: &str, page_size: f64, out: &mut Vec<Family>) {
    for line in text.lines() {
        let Some((protocol, rest)) = line.split_once(':') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for pair in fields.chunks(2) {
            let [state, value] = pair else { continue };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if protocol == "sockets" {
                if *state == "used" {
                    out.push(Family::single(
                        "node_sockstat_sockets_used",
                        "Number of IPv4 sockets in use.",
                        Kind::Gauge,
                        value,
                    ));
                }
                continue;
            }
            out.push(Family::single(
                format!("node_sockstat_{protocol}_{state}"),
                format!("Number of {protocol} sockets in state {state}."),
                Kind::Gauge,
                value,
            ));
            if *state == "mem" {
                out.push(Family::single(
                    format!("node_sockstat_{protocol}_mem_bytes"),
                    format!("Number of {protocol} sockets in state mem_bytes."),
                    Kind::Gauge,
                    value * page_size,
                ));
            }
        }
    }
}

impl Collector for Sockstat {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let page_size = rustix::param::page_size() as f64;
        let v4 = read(&self.paths.proc("net/sockstat"))?;
        parse(&v4, page_size, out);
        match read(&self.paths.proc("net/sockstat6")) {
            Ok(v6) => parse(&v6, page_size, out),
            Err(CollectError::NoData(_)) => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
