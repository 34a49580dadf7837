//! `watchdog`: the hardware and software watchdogs of `/sys/class/watchdog/NAME`, as
//! node_exporter 1.7+ exports them. Each numeric attribute a watchdog has becomes a gauge
//! `node_watchdog_<attribute>{name}`; its text attributes become labels of
//! `node_watchdog_info`, empty when the file is missing.
//!
//! As there: a missing attribute is skipped; a host without the class, or one whose class or
//! attributes cannot be read for lack of permission, is "no data"; any other read error, or a
//! numeric attribute that is not an integer (Go's `ParseInt(s, 0, 64)`: `0x`, `0o`, `0b` and
//! leading-`0` prefixes), fails the collector before any watchdog is exported.

use std::io;
use std::path::{Path, PathBuf};

use super::kfiles::{dir_names, failed, not_found, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// Numeric attributes: file, family, help, in the order node_exporter's output sorts them.
const GAUGES: [(&str, &str, &str); 7] = [
    (
        "access_cs0",
        "node_watchdog_access_cs0",
        "Value of /sys/class/watchdog/<watchdog>/access_cs0",
    ),
    (
        "bootstatus",
        "node_watchdog_bootstatus",
        "Value of /sys/class/watchdog/<watchdog>/bootstatus",
    ),
    (
        "fw_version",
        "node_watchdog_fw_version",
        "Value of /sys/class/watchdog/<watchdog>/fw_version",
    ),
    (
        "nowayout",
        "node_watchdog_nowayout",
        "Value of /sys/class/watchdog/<watchdog>/nowayout",
    ),
    (
        "pretimeout",
        "node_watchdog_pretimeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/pretimeout",
    ),
    (
        "timeleft",
        "node_watchdog_timeleft_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeleft",
    ),
    (
        "timeout",
        "node_watchdog_timeout_seconds",
        "Value of /sys/class/watchdog/<watchdog>/timeout",
    ),
];

/// Text attributes, which are also the info labels (besides `name`), in label order.
const TEXTS: [&str; 5] = [
    "identity",
    "options",
    "pretimeout_governor",
    "state",
    "status",
];

/// The collector.
pub struct Watchdog {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Watchdog {
        class: settings.paths.sys.join("class/watchdog"),
    }))
}

/// One watchdog's attributes: the numbers by [`GAUGES`] index, the texts by [`TEXTS`] index.
struct Device {
    name: String,
    numbers: [Option<i64>; GAUGES.len()],
    texts: [String; TEXTS.len()],
}

/// A read error: permission problems are "no data", as node_exporter treats them.
fn read_error(path: &Path, e: &io::Error) -> CollectError {
    if e.kind() == io::ErrorKind::PermissionDenied {
        CollectError::NoData(format!("{}: {e}", path.display()))
    } else {
        failed(path, e)
    }
}

/// An attribute's trimmed text, `None` when the file does not exist.
fn attribute(path: &Path) -> Result<Option<String>, CollectError> {
    match sys_read(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(read_error(path, &e)),
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then a base prefix or decimal digits,
/// with `_` allowed between digits (and after the prefix) only when there is a prefix.
fn parse_i64(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, s.get(1..)?),
        b'+' => (false, s.get(1..)?),
        _ => (false, s),
    };
    let lower = digits.get(..2).map(str::to_ascii_lowercase);
    let (radix, body, prefixed) = match lower.as_deref() {
        Some("0x") => (16, digits.get(2..)?, true),
        Some("0o") => (8, digits.get(2..)?, true),
        Some("0b") => (2, digits.get(2..)?, true),
        _ if digits.len() > 1 && digits.starts_with('0') => (8, digits.get(1..)?, true),
        _ => (10, digits, false),
    };
    let body = if prefixed && body.contains('_') {
        // The prefix counts as a digit: `0x_1` is fine, `0x1_` and `0x1__0` are not.
        let ok = !body.ends_with('_') && !body.contains("__");
        ok.then(|| body.replace('_', ""))?
    } else {
        body.to_owned()
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let magnitude = i128::from(u64::from_str_radix(&body, radix).ok()?);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

fn read_device(dir: &Path, name: String) -> Result<Device, CollectError> {
    let mut device = Device {
        name,
        numbers: [None; GAUGES.len()],
        texts: Default::default(),
    };
    for (i, (file, _, _)) in GAUGES.iter().enumerate() {
        let path = dir.join(file);
        if let Some(text) = attribute(&path)? {
            let value = parse_i64(&text)
                .ok_or_else(|| failed(&path, format!("{text:?} is not an integer")))?;
            device.numbers[i] = Some(value);
        }
    }
    for (i, file) in TEXTS.iter().enumerate() {
        if let Some(text) = attribute(&dir.join(file))? {
            device.texts[i] = text;
        }
    }
    Ok(device)
}

impl Watchdog {
    fn devices(&self) -> Result<Vec<Device>, CollectError> {
        let names = match dir_names(&self.class) {
            Ok(names) => names,
            Err(e) if not_found(&e) => {
                return Err(CollectError::NoData(format!(
                    "{} not found",
                    self.class.display()
                )))
            }
            Err(e) => return Err(read_error(&self.class, &e)),
        };
        names
            .into_iter()
            .map(|name| read_device(&self.class.join(&name), name))
            .collect()
    }
}

impl Collector for Watchdog {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let devices = self.devices()?;
        for (i, (_, family, help)) in GAUGES.iter().enumerate() {
            let mut f = Family::new(*family, *help, Kind::Gauge);
            for d in &devices {
                if let Some(v) = d.numbers[i] {
                    f.push(vec![("name", d.name.clone())], v as f64);
                }
            }
            out.push(f);
        }
        let mut info = Family::new(
            "node_watchdog_info",
            "Info of /sys/class/watchdog/<watchdog>",
            Kind::Gauge,
        );
        for d in devices {
            let [identity, options, governor, state, status] = d.texts;
            info.push(
                vec![
                    ("identity", identity),
                    ("name", d.name),
                    ("options", options),
                    ("pretimeout_governor", governor),
                    ("state", state),
                    ("status", status),
                ],
                1.0,
            );
        }
        out.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_i64;

    #[test]
    fn integers_follow_go_parse_int_base_0() {
        assert_eq!(parse_i64("60"), Some(60));
        assert_eq!(parse_i64("-1"), Some(-1));
        assert_eq!(parse_i64("+7"), Some(7));
        assert_eq!(parse_i64("0x8380"), Some(0x8380));
        assert_eq!(parse_i64("010"), Some(8));
        assert_eq!(parse_i64("0b101"), Some(5));
        assert_eq!(parse_i64("0x_1_0"), Some(16));
        assert_eq!(parse_i64("0"), Some(0));
        assert_eq!(parse_i64("1_0"), None);
        assert_eq!(parse_i64(""), None);
        assert_eq!(parse_i64("-"), None);
        assert_eq!(parse_i64("12a"), None);
        assert_eq!(parse_i64("9223372036854775808"), None);
        assert_eq!(parse_i64("-9223372036854775808"), Some(i64::MIN));
    }
}
