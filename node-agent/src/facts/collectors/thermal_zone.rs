//! `thermal_zone`: temperatures of `/sys/class/thermal/thermal_zoneN` and throttle states of
//! `/sys/class/thermal/cooling_deviceN`, as node_exporter 1.5 exports them. As there, a zone
//! without `type`, `policy` or `temp` fails the collector before any zone is exported, and a
//! cooling device without `type`, `max_state` or `cur_state` fails it after the zones. A host
//! without the class exports nothing.

use std::path::{Path, PathBuf};

use super::kfiles::{failed, glob_names, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct ThermalZone {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(ThermalZone {
        class: settings.paths.sys.join("class/thermal"),
    }))
}

fn text(path: &Path) -> Result<String, CollectError> {
    sys_read(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| failed(path, e))
}

fn int(path: &Path) -> Result<i64, CollectError> {
    let s = text(path)?;
    s.parse::<i64>().map_err(|e| failed(path, e))
}

/// Entries of the class named `PREFIX...`, with the rest of the name, sorted.
fn entries(class: &Path, prefix: &str) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = glob_names(class)
        .into_iter()
        .filter_map(|n| {
            let rest = n.strip_prefix(prefix)?.to_owned();
            Some((class.join(&n), rest))
        })
        .collect();
    out.sort();
    out
}

impl Collector for ThermalZone {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut zones = Vec::new();
        for (dir, zone) in entries(&self.class, "thermal_zone") {
            let kind = text(&dir.join("type"))?;
            text(&dir.join("policy"))?;
            let temp = int(&dir.join("temp"))?;
            zones.push((zone, kind, temp));
        }
        let mut temp = Family::new(
            "node_thermal_zone_temp",
            "Zone temperature in Celsius",
            Kind::Gauge,
        );
        for (zone, kind, t) in zones {
            temp.push(vec![("type", kind), ("zone", zone)], t as f64 / 1000.0);
        }
        out.push(temp);
        let mut cur = Family::new(
            "node_cooling_device_cur_state",
            "Current throttle state of the cooling device",
            Kind::Gauge,
        );
        let mut max = Family::new(
            "node_cooling_device_max_state",
            "Maximum throttle state of the cooling device",
            Kind::Gauge,
        );
        let mut devices = Vec::new();
        let mut result = Ok(());
        for (dir, name) in entries(&self.class, "cooling_device") {
            let read = || -> Result<(String, i64, i64), CollectError> {
                Ok((
                    text(&dir.join("type"))?,
                    int(&dir.join("max_state"))?,
                    int(&dir.join("cur_state"))?,
                ))
            };
            match read() {
                Ok(d) => devices.push((name, d)),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            for (name, (kind, max_state, cur_state)) in devices {
                let labels = vec![("name", name), ("type", kind)];
                cur.push(labels.clone(), cur_state as f64);
                max.push(labels, max_state as f64);
            }
        }
        out.push(cur);
        out.push(max);
        result
    }
}
