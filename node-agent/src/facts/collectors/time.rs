//! `time`: the system clock, the local time zone offset, and the clock sources from sysfs.

use super::{CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Time {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Time {
        paths: settings.paths.clone(),
    }))
}

impl Collector for Time {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        out.push(Family::single(
            "node_time_seconds",
            "System time in seconds since epoch (1970).",
            Kind::Gauge,
            now,
        ));
        let offset = chrono::Local::now().offset().local_minus_utc();
        let zone = if offset == 0 {
            "UTC".to_owned()
        } else {
            let sign = if offset < 0 { '-' } else { '+' };
            let a = offset.abs();
            format!("{sign}{:02}{:02}", a / 3600, (a % 3600) / 60)
        };
        let mut tz = Family::new(
            "node_time_zone_offset_seconds",
            "System time zone offset in seconds.",
            Kind::Gauge,
        );
        tz.push(vec![("time_zone", zone)], f64::from(offset));
        out.push(tz);
        let mut available = Family::new(
            "node_time_clocksource_available_info",
            "Available clocksources read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        );
        let mut current = Family::new(
            "node_time_clocksource_current_info",
            "Current clocksource read from '/sys/devices/system/clocksource'.",
            Kind::Gauge,
        );
        let dir = self.paths.sys.join("devices/system/clocksource");
        let mut devices: Vec<String> = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .filter_map(|n| n.strip_prefix("clocksource").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        devices.sort();
        for device in devices {
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(format!("clocksource{device}/{f}")))
                    .unwrap_or_default()
            };
            for source in read("available_clocksource").split_whitespace() {
                available.push(
                    vec![
                        ("clocksource", source.to_owned()),
                        ("device", device.clone()),
                    ],
                    1.0,
                );
            }
            for source in read("current_clocksource").split_whitespace() {
                current.push(
                    vec![
                        ("clocksource", source.to_owned()),
                        ("device", device.clone()),
                    ],
                    1.0,
                );
            }
        }
        out.push(available);
        out.push(current);
        Ok(())
    }
}
