//! `hwmon`: hardware sensors of `/sys/class/hwmon` (temperatures, fans, voltages, currents,
//! power, energy, humidity, alarms), as node_exporter 1.5 exports them.
//!
//! Each `hwmonN` directory (and its `device` directory) holds files named
//! `<type><number>_<property>`; the chip label is derived from the device's resolved sysfs path
//! (`platform_coretemp_0`), else the `name` file, else the `hwmonN` directory name. A chip whose
//! directory cannot be listed fails the collector after the other chips are exported, as in
//! node_exporter; a file that cannot be read or does not hold a number is left out. A host
//! without the class exports nothing.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The sensor types node_exporter reads.
const SENSOR_TYPES: &[&str] = &[
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// The collector.
pub struct Hwmon {
    class: PathBuf,
    file_name: regex::Regex,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let file_name = regex::Regex::new(r"^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$")
        .map_err(|e| CollectError::Failed(e.to_string()))?;
    Ok(Box::new(Hwmon {
        class: settings.paths.sys.join("class/hwmon"),
        file_name,
    }))
}

/// Sensor (`temp1`) → property (`input`, `` for the bare file) → raw value.
type SensorData = BTreeMap<String, BTreeMap<String, String>>;

/// Lower case, `[^a-z0-9:_]` replaced with `_`, `_` trimmed at both ends.
fn clean(name: &str) -> String {
    let replaced: String = name
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == ':' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    replaced.trim_matches('_').to_owned()
}

/// One `read(2)` of at most 128 bytes, newlines trimmed (some drivers answer `EAGAIN` forever
/// to a read loop).
fn sys_read(path: &Path) -> Option<String> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut buf = [0u8; 128];
    let n = file.read(&mut buf).ok()?;
    Some(
        String::from_utf8_lossy(buf.get(..n)?)
            .trim_matches('\n')
            .to_owned(),
    )
}

/// Go's `strconv.ParseFloat` for sysfs values: a plain decimal number.
fn parse_float(s: &str) -> Option<f64> {
    super::textfile::parse_float(s)
}

impl Hwmon {
    /// `(type, number, property)` of a sensor file name.
    fn explode<'a>(&self, name: &'a str) -> Option<(&'a str, u64, &'a str)> {
        let caps = self.file_name.captures(name)?;
        let kind = caps.name("type").map_or("", |m| m.as_str());
        let id = caps.name("id").map_or("", |m| m.as_str());
        let number = if id.is_empty() { 0 } else { id.parse().ok()? };
        let property = caps.name("property").map_or("", |m| m.as_str());
        Some((kind, number, property))
    }

    fn collect_sensor_data(&self, dir: &Path, data: &mut SensorData) -> std::io::Result<()> {
        for name in super::kfiles::dir_names(dir)? {
            let Some((kind, number, property)) = self.explode(&name) else {
                continue;
            };
            if !SENSOR_TYPES.contains(&kind) {
                continue;
            }
            if let Some(value) = sys_read(&dir.join(&name)) {
                data.entry(format!("{kind}{number}"))
                    .or_default()
                    .insert(property.to_owned(), value);
            }
        }
        Ok(())
    }

    fn update_chip(&self, dir: &Path, out: &mut Families) -> Result<(), CollectError> {
        let chip = chip_name(dir)?;
        let mut data = SensorData::new();
        self.collect_sensor_data(dir, &mut data)
            .map_err(|e| CollectError::Failed(format!("{}: {e}", dir.display())))?;
        let device = dir.join("device");
        if std::fs::metadata(&device).is_ok() {
            self.collect_sensor_data(&device, &mut data)
                .map_err(|e| CollectError::Failed(format!("{}: {e}", device.display())))?;
        }
        if let Some(human) = std::fs::read(dir.join("name"))
            .ok()
            .map(|raw| clean(&String::from_utf8_lossy(&raw)))
            .filter(|n| !n.is_empty())
        {
            out.push(
                "node_hwmon_chip_names",
                "Annotation metric for human-readable chip names",
                Kind::Gauge,
                vec![("chip", chip.clone()), ("chip_name", human)],
                1.0,
            );
        }
        for (sensor, props) in &data {
            let kind = self.explode(sensor).map_or("", |(k, _, _)| k);
            self.sensor(&chip, sensor, kind, props, out);
        }
        Ok(())
    }

    fn sensor(
        &self,
        chip: &str,
        sensor: &str,
        kind: &str,
        props: &BTreeMap<String, String>,
        out: &mut Families,
    ) {
        let labels = || vec![("chip", chip.to_owned()), ("sensor", sensor.to_owned())];
        if let Some(label) = props.get("label") {
            out.push(
                "node_hwmon_sensor_label",
                "Label for given chip and sensor",
                Kind::Gauge,
                vec![
                    ("chip", chip.to_owned()),
                    ("label", label.clone()),
                    ("sensor", sensor.to_owned()),
                ],
                1.0,
            );
        }
        let bare = props.get("").map(String::as_str);
        match kind {
            "beep_enable" => {
                let on = f64::from(u8::from(bare == Some("1")));
                out.push(
                    "node_hwmon_beep_enabled",
                    "Hardware beep enabled",
                    Kind::Gauge,
                    labels(),
                    on,
                );
                return;
            }
            "vrm" => {
                if let Some(v) = bare.and_then(parse_float) {
                    out.push(
                        "node_hwmon_voltage_regulator_version",
                        "Hardware voltage regulator",
                        Kind::Gauge,
                        labels(),
                        v,
                    );
                }
                return;
            }
            "update_interval" => {
                if let Some(v) = bare.and_then(parse_float) {
                    out.push(
                        "node_hwmon_update_interval_seconds",
                        "Hardware monitor update interval",
                        Kind::Gauge,
                        labels(),
                        v * 0.001,
                    );
                }
                return;
            }
            _ => {}
        }
        let prefix = format!("node_hwmon_{kind}");
        for (element, value) in props {
            if element == "label" {
                continue;
            }
            let name = if element == "input" {
                if bare.is_some() {
                    format!("{prefix}_input")
                } else {
                    prefix.clone()
                }
            } else if element.is_empty() {
                prefix.clone()
            } else {
                format!("{prefix}_{}", clean(element))
            };
            let Some(v) = parse_float(value) else {
                continue;
            };
            let (name, help, kind_of, value) = element_metric(kind, element, name, v);
            out.push(&name, &help, kind_of, labels(), value);
        }
    }
}

/// Name, help, type and value of one element of a sensor, with node_exporter's units.
fn element_metric(kind: &str, element: &str, name: String, v: f64) -> (String, String, Kind, f64) {
    let g = Kind::Gauge;
    match (kind, element) {
        (_, "fault" | "alarm") => (name, format!("Hardware sensor {element} status ({kind})"), g, v),
        (_, "beep") => (format!("{name}_enabled"), "Hardware monitor sensor has beeping enabled".into(), g, v),
        ("in" | "cpu", _) => (format!("{name}_volts"), format!("Hardware monitor for voltage ({element})"), g, v * 0.001),
        ("temp", e) if e != "type" => {
            let e = if e.is_empty() { "input" } else { e };
            (format!("{name}_celsius"), format!("Hardware monitor for temperature ({e})"), g, v * 0.001)
        }
        ("curr", _) => (format!("{name}_amps"), format!("Hardware monitor for current ({element})"), g, v * 0.001),
        ("energy", _) => (
            format!("{name}_joule_total"),
            format!("Hardware monitor for joules used so far ({element})"),
            Kind::Counter,
            v / 1_000_000.0,
        ),
        ("power", "accuracy") => (name, "Hardware monitor power meter accuracy, as a ratio".into(), g, v / 1_000_000.0),
        ("power", "average_interval" | "average_interval_min" | "average_interval_max") => (
            format!("{name}_seconds"),
            format!("Hardware monitor power usage update interval ({element})"),
            g,
            v * 0.001,
        ),
        ("power", _) => (format!("{name}_watt"), format!("Hardware monitor for power usage in watts ({element})"), g, v / 1_000_000.0),
        ("humidity", _) => (
            name,
            format!("Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"),
            g,
            v / 1_000_000.0,
        ),
        ("fan", "input" | "min" | "max" | "target") => (
            format!("{name}_rpm"),
            format!("Hardware monitor for fan revolutions per minute ({element})"),
            g,
            v,
        ),
        _ => (name, format!("Hardware monitor {kind} element {element}"), g, v),
    }
}

/// The `chip` label: `<device type>_<device name>` of the resolved `device` link, else the
/// `name` file, else the resolved directory's name.
fn chip_name(dir: &Path) -> Result<String, CollectError> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let name = device
            .file_name()
            .map(|n| clean(&n.to_string_lossy()))
            .unwrap_or_default();
        let kind = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean(&n.to_string_lossy()))
            .unwrap_or_default();
        if !kind.is_empty() && !name.is_empty() {
            return Ok(format!("{kind}_{name}"));
        }
        if !name.is_empty() {
            return Ok(name);
        }
    }
    if let Ok(raw) = std::fs::read(dir.join("name")) {
        let name = clean(&String::from_utf8_lossy(&raw));
        if !name.is_empty() {
            return Ok(name);
        }
    }
    let real = std::fs::canonicalize(dir)
        .map_err(|e| CollectError::Failed(format!("{}: {e}", dir.display())))?;
    let name = real
        .file_name()
        .map(|n| clean(&n.to_string_lossy()))
        .unwrap_or_default();
    if name.is_empty() {
        return Err(CollectError::Failed(format!(
            "could not derive a monitoring name for {}",
            dir.display()
        )));
    }
    Ok(name)
}

/// Families by name; a sample whose family was first made with another help or type, or whose
/// labels are already there (two chips with one name), is left out, as node_exporter's registry
/// leaves it out.
#[derive(Default)]
struct Families {
    by_name: BTreeMap<String, Family>,
    seen: std::collections::HashSet<(String, Vec<(&'static str, String)>)>,
}

impl Families {
    fn push(
        &mut self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) {
        let family = self
            .by_name
            .entry(name.to_owned())
            .or_insert_with(|| Family::new(name, help, kind));
        if family.help != help || family.kind != kind {
            return;
        }
        if self.seen.insert((name.to_owned(), labels.clone())) {
            family.push(labels, value);
        }
    }
}

impl Collector for Hwmon {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let names = match super::kfiles::dir_names(&self.class) {
            Ok(names) => names,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CollectError::NoData(format!(
                    "{} not found",
                    self.class.display()
                )))
            }
            Err(e) => {
                return Err(CollectError::Failed(format!(
                    "{}: {e}",
                    self.class.display()
                )))
            }
        };
        let mut families = Families::default();
        let mut result = Ok(());
        for name in names {
            let dir = self.class.join(&name);
            // Links are followed; what is not a directory is not a chip.
            if !std::fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if let Err(e) = self.update_chip(&dir, &mut families) {
                result = Err(e);
            }
        }
        out.extend(families.by_name.into_values());
        result
    }
}
