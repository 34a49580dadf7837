//! `powersupplyclass`: batteries, mains adapters and USB supplies of `/sys/class/power_supply`,
//! as node_exporter 1.5 exports them (`node_power_supply_*{power_supply}` and
//! `node_power_supply_info`).
//!
//! As in node_exporter (procfs 0.8), every regular file of every supply is read first: a file
//! the driver refuses (`EINVAL`, `EOPNOTSUPP`) or that vanished is skipped, but any other read
//! error or a numeric attribute that is not an integer fails the collector before anything is
//! exported. A host without the class exports nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::kfiles::{dir_entries, parse_u64_prefixed};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// `(file, metric suffix, divisor)` of the numeric attributes node_exporter exports.
const NUMERIC: &[(&str, &str, f64)] = &[
    ("authentic", "authentic", 1.0),
    ("calibrate", "calibrate", 1.0),
    ("capacity", "capacity", 1.0),
    ("capacity_alert_max", "capacity_alert_max", 1.0),
    ("capacity_alert_min", "capacity_alert_min", 1.0),
    ("cycle_count", "cyclecount", 1.0),
    ("online", "online", 1.0),
    ("present", "present", 1.0),
    ("time_to_empty_now", "time_to_empty_seconds", 1.0),
    ("time_to_full_now", "time_to_full_seconds", 1.0),
    ("current_boot", "current_boot", 1e6),
    ("current_max", "current_max", 1e6),
    ("current_now", "current_ampere", 1e6),
    ("energy_empty", "energy_empty", 1e6),
    ("energy_empty_design", "energy_empty_design", 1e6),
    ("energy_full", "energy_full", 1e6),
    ("energy_full_design", "energy_full_design", 1e6),
    ("energy_now", "energy_watthour", 1e6),
    ("voltage_boot", "voltage_boot", 1e6),
    ("voltage_max", "voltage_max", 1e6),
    ("voltage_max_design", "voltage_max_design", 1e6),
    ("voltage_min", "voltage_min", 1e6),
    ("voltage_min_design", "voltage_min_design", 1e6),
    ("voltage_now", "voltage_volt", 1e6),
    ("voltage_ocv", "voltage_ocv", 1e6),
    ("charge_control_limit", "charge_control_limit", 1e6),
    ("charge_control_limit_max", "charge_control_limit_max", 1e6),
    ("charge_counter", "charge_counter", 1e6),
    ("charge_empty", "charge_empty", 1e6),
    ("charge_empty_design", "charge_empty_design", 1e6),
    ("charge_full", "charge_full", 1e6),
    ("charge_full_design", "charge_full_design", 1e6),
    ("charge_now", "charge_ampere", 1e6),
    ("charge_term_current", "charge_term_current", 1e6),
    ("constant_charge_current", "constant_charge_current", 1e6),
    (
        "constant_charge_current_max",
        "constant_charge_current_max",
        1e6,
    ),
    ("constant_charge_voltage", "constant_charge_voltage", 1e6),
    (
        "constant_charge_voltage_max",
        "constant_charge_voltage_max",
        1e6,
    ),
    ("precharge_current", "precharge_current", 1e6),
    ("input_current_limit", "input_current_limit", 1e6),
    ("power_now", "power_watt", 1e6),
    ("temp", "temp_celsius", 10.0),
    ("temp_alert_max", "temp_alert_max_celsius", 10.0),
    ("temp_alert_min", "temp_alert_min_celsius", 10.0),
    ("temp_ambient", "temp_ambient_celsius", 10.0),
    ("temp_ambient_max", "temp_ambient_max_celsius", 10.0),
    ("temp_ambient_min", "temp_ambient_min_celsius", 10.0),
    ("temp_max", "temp_max_celsius", 10.0),
    ("temp_min", "temp_min_celsius", 10.0),
];

/// Numeric attributes procfs parses but node_exporter does not export.
const PARSED_ONLY: &[&str] = &[
    "charge_avg",
    "current_avg",
    "energy_avg",
    "power_avg",
    "time_to_empty_avg",
    "time_to_full_avg",
    "voltage_avg",
];

/// Text attributes, as labels of `node_power_supply_info`.
const TEXT: &[&str] = &[
    "capacity_level",
    "charge_type",
    "health",
    "manufacturer",
    "model_name",
    "serial_number",
    "status",
    "technology",
    "type",
    "usb_type",
    "scope",
];

/// The collector.
pub struct PowerSupplyClass {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(PowerSupplyClass {
        class: settings.paths.sys.join("class/power_supply"),
    }))
}

/// Go's `strconv.ParseInt(s, 0, 64)`.
fn parse_i64(s: &str) -> Option<i64> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    // Base 0 allows `_` between digits.
    let digits = digits.replace('_', "");
    let magnitude = i128::from(parse_u64_prefixed(&digits)?);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// One supply: numeric attributes by file name, text attributes by name.
type Supply = (BTreeMap<&'static str, i64>, BTreeMap<&'static str, String>);

fn read_supply(dir: &std::path::Path) -> Result<Supply, CollectError> {
    let failed = |e: String| CollectError::Failed(format!("{}: {e}", dir.display()));
    let mut numbers = BTreeMap::new();
    let mut texts = BTreeMap::new();
    for (name, kind) in dir_entries(dir).map_err(|e| failed(e.to_string()))? {
        if !kind.is_file() {
            continue;
        }
        let path = dir.join(&name);
        let value = match super::kfiles::sys_read(&path) {
            Ok(v) => v,
            Err(e) if super::kfiles::not_found(&e) || super::kfiles::unsupported(&e) => continue,
            Err(e) => return Err(failed(format!("{name}: {e}"))),
        };
        if let Some(&(file, _, _)) = NUMERIC.iter().find(|(f, _, _)| *f == name) {
            let v = parse_i64(&value)
                .ok_or_else(|| failed(format!("{name}: {value:?} is not an integer")))?;
            numbers.insert(file, v);
        } else if PARSED_ONLY.contains(&name.as_str()) {
            parse_i64(&value)
                .ok_or_else(|| failed(format!("{name}: {value:?} is not an integer")))?;
        } else if let Some(&key) = TEXT.iter().find(|k| **k == name) {
            texts.insert(key, value);
        }
    }
    Ok((numbers, texts))
}

impl Collector for PowerSupplyClass {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let entries = match dir_entries(&self.class) {
            Ok(e) => e,
            Err(e) if super::kfiles::not_found(&e) => {
                return Err(CollectError::NoData(format!(
                    "{}: {e}",
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
        let mut supplies = Vec::new();
        for (name, _) in entries {
            supplies.push((name.clone(), read_supply(&self.class.join(&name))?));
        }
        let mut families: BTreeMap<&str, Family> = BTreeMap::new();
        let mut info = Family::new(
            "node_power_supply_info",
            "info of /sys/class/power_supply/<power_supply>.",
            Kind::Gauge,
        );
        for (name, (numbers, texts)) in supplies {
            for &(file, suffix, divisor) in NUMERIC {
                if let Some(v) = numbers.get(file) {
                    families
                        .entry(suffix)
                        .or_insert_with(|| {
                            Family::new(
                                format!("node_power_supply_{suffix}"),
                                format!(
                                    "{suffix} value of /sys/class/power_supply/<power_supply>."
                                ),
                                Kind::Gauge,
                            )
                        })
                        .push(vec![("power_supply", name.clone())], *v as f64 / divisor);
                }
            }
            let mut labels: Vec<(&'static str, String)> = vec![("power_supply", name.clone())];
            for (key, value) in texts {
                if !value.is_empty() {
                    labels.push((key, value));
                }
            }
            labels.sort_by(|a, b| a.0.cmp(b.0));
            info.push(labels, 1.0);
        }
        out.extend(families.into_values());
        out.push(info);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_as_go_reads_them() {
        assert_eq!(parse_i64("42"), Some(42));
        assert_eq!(parse_i64("-250"), Some(-250));
        assert_eq!(parse_i64("0x10"), Some(16));
        assert_eq!(parse_i64("1_000"), Some(1000));
        assert_eq!(parse_i64("4.2"), None);
        assert_eq!(parse_i64("Full"), None);
    }
}
