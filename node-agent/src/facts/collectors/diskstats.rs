//! `diskstats`: block device I/O counters from `/proc/diskstats` and `node_disk_info`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// node_exporter's default `--collector.diskstats.device-exclude`.
pub const DEFAULT_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// The collector.
pub struct Diskstats {
    paths: HostPaths,
    include: Option<regex::Regex>,
    exclude: Option<regex::Regex>,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let o = &settings.collectors.diskstats;
    let exclude = o
        .devices_exclude
        .as_deref()
        .unwrap_or(DEFAULT_DEVICE_EXCLUDE);
    Ok(Box::new(Diskstats {
        paths: settings.paths.clone(),
        include: super::regex("diskstats", o.devices_include.as_deref())?,
        exclude: super::regex("diskstats", Some(exclude))?,
    }))
}

/// (column after the device name, name, help, kind, scale). A scale below 1 is applied as a
/// division (`ms / 1000`), as node_exporter does, so `9 ms` is `0.009`, not `0.009000000000000001`.
const FIELDS: &[(usize, &str, &str, Kind, f64)] = &[
    (
        0,
        "node_disk_reads_completed_total",
        "The total number of reads completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        1,
        "node_disk_reads_merged_total",
        "The total number of reads merged.",
        Kind::Counter,
        1.0,
    ),
    (
        2,
        "node_disk_read_bytes_total",
        "The total number of bytes read successfully.",
        Kind::Counter,
        512.0,
    ),
    (
        3,
        "node_disk_read_time_seconds_total",
        "The total number of seconds spent by all reads.",
        Kind::Counter,
        0.001,
    ),
    (
        4,
        "node_disk_writes_completed_total",
        "The total number of writes completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        5,
        "node_disk_writes_merged_total",
        "The number of writes merged.",
        Kind::Counter,
        1.0,
    ),
    (
        6,
        "node_disk_written_bytes_total",
        "The total number of bytes written successfully.",
        Kind::Counter,
        512.0,
    ),
    (
        7,
        "node_disk_write_time_seconds_total",
        "This is the total number of seconds spent by all writes.",
        Kind::Counter,
        0.001,
    ),
    (
        8,
        "node_disk_io_now",
        "The number of I/Os currently in progress.",
        Kind::Gauge,
        1.0,
    ),
    (
        9,
        "node_disk_io_time_seconds_total",
        "Total seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        10,
        "node_disk_io_time_weighted_seconds_total",
        "The weighted # of seconds spent doing I/Os.",
        Kind::Counter,
        0.001,
    ),
    (
        11,
        "node_disk_discards_completed_total",
        "The total number of discards completed successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        12,
        "node_disk_discards_merged_total",
        "The total number of discards merged.",
        Kind::Counter,
        1.0,
    ),
    (
        13,
        "node_disk_discarded_sectors_total",
        "The total number of sectors discarded successfully.",
        Kind::Counter,
        1.0,
    ),
    (
        14,
        "node_disk_discard_time_seconds_total",
        "This is the total number of seconds spent by all discards.",
        Kind::Counter,
        0.001,
    ),
    (
        15,
        "node_disk_flush_requests_total",
        "The total number of flush requests completed successfully",
        Kind::Counter,
        1.0,
    ),
    (
        16,
        "node_disk_flush_requests_time_seconds_total",
        "This is the total number of seconds spent by all flush requests.",
        Kind::Counter,
        0.001,
    ),
];

impl Collector for Diskstats {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("diskstats"))?;
        let mut families: Vec<Family> = FIELDS
            .iter()
            .map(|(_, name, help, kind, _)| Family::new(*name, *help, *kind))
            .collect();
        let mut info = Family::new(
            "node_disk_info",
            "Info of /sys/block/<block_device>.",
            Kind::Gauge,
        );
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 14 {
                continue;
            }
            let device = f[2];
            if self.include.as_ref().is_some_and(|r| !r.is_match(device))
                || self.exclude.as_ref().is_some_and(|r| r.is_match(device))
            {
                continue;
            }
            for (family, (column, _, _, _, scale)) in families.iter_mut().zip(FIELDS) {
                if let Some(v) = f.get(3 + column).and_then(|v| v.parse::<f64>().ok()) {
                    let v = if *scale < 1.0 {
                        v / (1.0 / scale).round()
                    } else {
                        v * scale
                    };
                    family.push(vec![("device", device.to_owned())], v);
                }
            }
            let attr = |name: &str| {
                std::fs::read_to_string(
                    self.paths.sys.join(format!("block/{device}/device/{name}")),
                )
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
            };
            info.push(
                vec![
                    ("device", device.to_owned()),
                    ("major", f[0].to_owned()),
                    ("minor", f[1].to_owned()),
                    ("model", attr("model")),
                    ("path", String::new()),
                    ("revision", attr("rev")),
                    ("serial", attr("serial")),
                    ("wwn", attr("wwid")),
                ],
                1.0,
            );
        }
        out.extend(families);
        out.push(info);
        Ok(())
    }
}
