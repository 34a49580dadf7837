//! `netclass`: properties of every interface in `/sys/class/net`, as node_exporter 1.5 exports
//! them: `node_network_info` (address, broadcast, duplex, operstate, ifalias),
//! `node_network_up`, and one `node_network_<property>` family per numeric attribute the
//! interface has. An attribute the kernel refuses to read (`EINVAL` for the speed of a link
//! that is down, `EOPNOTSUPP`) or a missing or unreadable one is left out; one that is not a
//! number is 0, as node_exporter 1.5 parses it; any other read error fails the collector. Entries of the class that are files
//! (`bonding_masters`) are not interfaces. A host without the class exports nothing.

use std::path::{Path, PathBuf};

use super::kfiles::{dir_entries, failed, parse_u64_prefixed, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Netclass {
    class: PathBuf,
    /// `ignoredDevices` / `--collector.netclass.ignored-devices`.
    ignored: Option<regex::Regex>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Netclass {
        class: settings.paths.sys.join("class/net"),
        ignored: super::regex(
            "netclass",
            settings.collectors.netclass.ignored_devices.as_deref(),
        )?,
    }))
}

/// `(family suffix, attribute file, kind)` of the numeric properties, in node_exporter's order.
const NUMERIC: &[(&str, &str, Kind)] = &[
    ("address_assign_type", "addr_assign_type", Kind::Gauge),
    ("carrier", "carrier", Kind::Gauge),
    ("carrier_changes_total", "carrier_changes", Kind::Counter),
    (
        "carrier_up_changes_total",
        "carrier_up_count",
        Kind::Counter,
    ),
    (
        "carrier_down_changes_total",
        "carrier_down_count",
        Kind::Counter,
    ),
    ("device_id", "dev_id", Kind::Gauge),
    ("dormant", "dormant", Kind::Gauge),
    ("flags", "flags", Kind::Gauge),
    ("iface_id", "ifindex", Kind::Gauge),
    ("iface_link", "iflink", Kind::Gauge),
    ("iface_link_mode", "link_mode", Kind::Gauge),
    ("mtu_bytes", "mtu", Kind::Gauge),
    ("name_assign_type", "name_assign_type", Kind::Gauge),
    ("net_dev_group", "netdev_group", Kind::Gauge),
    ("speed_bytes", "speed", Kind::Gauge),
    ("transmit_queue_length", "tx_queue_len", Kind::Gauge),
    ("protocol_type", "type", Kind::Gauge),
];

/// Go's `strconv.ParseInt(s, 0, 64)`.
pub fn parse_i64(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let v = parse_u64_prefixed(digits)?;
    if negative {
        0i64.checked_sub_unsigned(v)
    } else {
        i64::try_from(v).ok()
    }
}

/// An attribute's text; `None` when node_exporter leaves it out (missing, unreadable,
/// `EINVAL`, `EOPNOTSUPP`).
fn attribute(dir: &Path, name: &str) -> Result<Option<String>, CollectError> {
    let path = dir.join(name);
    match sys_read(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) || matches!(e.raw_os_error(), Some(22 | 95)) =>
        {
            Ok(None)
        }
        Err(e) => Err(failed(&path, e)),
    }
}

/// One interface's properties.
#[derive(Debug, Default)]
struct Iface {
    name: String,
    text: [String; 5],
    numbers: Vec<Option<i64>>,
}

const TEXT: [&str; 5] = ["address", "broadcast", "duplex", "ifalias", "operstate"];

fn iface(dir: &Path, name: &str) -> Result<Iface, CollectError> {
    let mut out = Iface {
        name: name.to_owned(),
        ..Default::default()
    };
    for (slot, file) in out.text.iter_mut().zip(TEXT) {
        *slot = attribute(dir, file)?.unwrap_or_default();
    }
    for (_, file, _) in NUMERIC {
        out.numbers
            .push(attribute(dir, file)?.map(|s| parse_i64(&s).unwrap_or(0)));
    }
    Ok(out)
}

impl Collector for Netclass {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let entries = match dir_entries(&self.class) {
            Ok(e) => e,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) =>
            {
                return Err(CollectError::NoData(format!(
                    "{}: {e}",
                    self.class.display()
                )))
            }
            Err(e) => return Err(failed(&self.class, e)),
        };
        let mut ifaces = Vec::new();
        for (name, kind) in entries {
            if kind.is_file() || self.ignored.as_ref().is_some_and(|r| r.is_match(&name)) {
                continue;
            }
            ifaces.push(iface(&self.class.join(&name), &name)?);
        }
        let mut up = Family::new(
            "node_network_up",
            "Value is 1 if operstate is 'up', 0 otherwise.",
            Kind::Gauge,
        );
        let mut info = Family::new(
            "node_network_info",
            "Non-numeric data from /sys/class/net/<iface>, value is always 1.",
            Kind::Gauge,
        );
        let mut numeric: Vec<Family> = NUMERIC
            .iter()
            .map(|(suffix, _, kind)| {
                Family::new(
                    format!("node_network_{suffix}"),
                    format!("Network device property: {suffix}"),
                    *kind,
                )
            })
            .collect();
        for i in ifaces {
            let [address, broadcast, duplex, ifalias, operstate] = i.text;
            up.push(
                vec![("device", i.name.clone())],
                f64::from(u8::from(operstate == "up")),
            );
            info.push(
                vec![
                    ("address", address),
                    ("broadcast", broadcast),
                    ("device", i.name.clone()),
                    ("duplex", duplex),
                    ("ifalias", ifalias),
                    ("operstate", operstate),
                ],
                1.0,
            );
            for ((family, value), (suffix, _, _)) in numeric.iter_mut().zip(&i.numbers).zip(NUMERIC)
            {
                let Some(v) = value else { continue };
                let v = if *suffix == "speed_bytes" {
                    v.saturating_mul(1000 * 1000) / 8
                } else {
                    *v
                };
                family.push(vec![("device", i.name.clone())], v as f64);
            }
        }
        out.push(up);
        out.push(info);
        out.extend(numeric);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_go_parse_int_base_0() {
        assert_eq!(parse_i64("0x1003"), Some(4099));
        assert_eq!(parse_i64("-1"), Some(-1));
        assert_eq!(parse_i64("010"), Some(8));
        assert_eq!(parse_i64("1500"), Some(1500));
        assert_eq!(parse_i64("9223372036854775808"), None);
        assert_eq!(parse_i64("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64("up"), None);
    }
}
