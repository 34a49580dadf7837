//! `diskstats`: block device I/O counters from `/proc/diskstats`, and what udev knows about each
//! device (`ROOT/run/udev/data/b<major>:<minor>`, as node_exporter reads it) and whether it
//! spins (`SYS/block/DEV/queue/rotational`):
//! `node_disk_info`, `node_disk_filesystem_info`, `node_disk_device_mapper_info` and the
//! `node_disk_ata_*` gauges. Without a udev database the info labels are empty, as there.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// node_exporter's default `--collector.diskstats.device-exclude`.
pub const DEFAULT_DEVICE_EXCLUDE: &str = r"^(ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// The collector.
pub struct Diskstats {
    paths: HostPaths,
    udev: std::path::PathBuf,
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
        udev: settings.paths.host("/run/udev/data"),
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

impl Diskstats {
    /// `node_disk_info`'s `rotational` label: `"1"` when `SYS/block/DEV/queue/rotational` reads
    /// 1, else `"0"` (also when it is missing or does not parse), as node_exporter 1.9+ has it.
    fn rotational(&self, device: &str) -> &'static str {
        let path = self
            .paths
            .sys
            .join("block")
            .join(device)
            .join("queue/rotational");
        let value = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| super::kfiles::parse_u64(s.trim(), 10));
        if value == Some(1) {
            "1"
        } else {
            "0"
        }
    }
}

impl Collector for Diskstats {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("diskstats"))?;
        let mut families: Vec<Family> = FIELDS
            .iter()
            .map(|(_, name, help, kind, _)| Family::new(*name, *help, *kind))
            .collect();
        let mut extra = UdevFamilies::new();
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
            let udev = Udev::read(&self.udev.join(format!("b{}:{}", f[0], f[1])));
            let rotational = self.rotational(device);
            udev.push_families(device, f[0], f[1], rotational, &mut extra);
        }
        out.extend(families);
        out.extend(extra.into_families());
        Ok(())
    }
}

/// The `E:KEY=VALUE` device properties of one udev database entry.
#[derive(Debug, Default)]
struct Udev(Vec<(String, String)>);

impl Udev {
    /// Reads an entry; a missing or unreadable one has no properties.
    fn read(path: &std::path::Path) -> Self {
        let Ok(text) = std::fs::read_to_string(path) else {
            return Self::default();
        };
        Self::parse(&text)
    }

    fn parse(text: &str) -> Self {
        Self(
            text.lines()
                .filter_map(|l| l.strip_prefix("E:"))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> &str {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// The serial printed on the disk's label where udev has it (`SCSI_IDENT_SERIAL`), else
    /// `ID_SERIAL_SHORT`, else `ID_SERIAL` (virtio disks), as node_exporter 1.10+ picks it.
    fn serial(&self) -> String {
        ["SCSI_IDENT_SERIAL", "ID_SERIAL_SHORT", "ID_SERIAL"]
            .iter()
            .map(|key| self.get(key))
            .find(|v| !v.is_empty())
            .unwrap_or("")
            .to_owned()
    }

    fn push_families(
        &self,
        device: &str,
        major: &str,
        minor: &str,
        rotational: &str,
        out: &mut UdevFamilies,
    ) {
        let own = |key: &str| self.get(key).to_owned();
        out.info.push(
            vec![
                ("device", device.to_owned()),
                ("major", major.to_owned()),
                ("minor", minor.to_owned()),
                ("model", own("ID_MODEL")),
                ("path", own("ID_PATH")),
                ("revision", own("ID_REVISION")),
                ("rotational", rotational.to_owned()),
                ("serial", self.serial()),
                ("wwn", own("ID_WWN")),
            ],
            1.0,
        );
        if !self.get("ID_FS_TYPE").is_empty() {
            out.filesystem.push(
                vec![
                    ("device", device.to_owned()),
                    ("type", own("ID_FS_TYPE")),
                    ("usage", own("ID_FS_USAGE")),
                    ("uuid", own("ID_FS_UUID")),
                    ("version", own("ID_FS_VERSION")),
                ],
                1.0,
            );
        }
        if !self.get("DM_NAME").is_empty() {
            out.device_mapper.push(
                vec![
                    ("device", device.to_owned()),
                    ("lv_layer", own("DM_LV_LAYER")),
                    ("lv_name", own("DM_LV_NAME")),
                    ("name", own("DM_NAME")),
                    ("uuid", own("DM_UUID")),
                    ("vg_name", own("DM_VG_NAME")),
                ],
                1.0,
            );
        }
        if !self.get("ID_ATA").is_empty() {
            for (family, (key, _, _)) in out.ata.iter_mut().zip(ATA) {
                if let Some(v) = self
                    .0
                    .iter()
                    .rev()
                    .find(|(k, _)| k == key)
                    .and_then(|(_, v)| v.parse::<f64>().ok())
                {
                    family.push(vec![("device", device.to_owned())], v);
                }
            }
        }
    }
}

/// The udev ATA properties node_exporter exports: `(property, name, help)`.
const ATA: [(&str, &str, &str); 3] = [
    (
        "ID_ATA_ROTATION_RATE_RPM",
        "node_disk_ata_rotation_rate_rpm",
        "ATA disk rotation rate in RPMs (0 for SSDs).",
    ),
    (
        "ID_ATA_WRITE_CACHE",
        "node_disk_ata_write_cache",
        "ATA disk has a write cache.",
    ),
    (
        "ID_ATA_WRITE_CACHE_ENABLED",
        "node_disk_ata_write_cache_enabled",
        "ATA disk has its write cache enabled.",
    ),
];

/// The families built from udev properties.
struct UdevFamilies {
    info: Family,
    filesystem: Family,
    device_mapper: Family,
    ata: Vec<Family>,
}

impl UdevFamilies {
    fn new() -> Self {
        Self {
            info: Family::new(
                "node_disk_info",
                "Info of /sys/block/<block_device>.",
                Kind::Gauge,
            ),
            filesystem: Family::new(
                "node_disk_filesystem_info",
                "Info about disk filesystem.",
                Kind::Gauge,
            ),
            device_mapper: Family::new(
                "node_disk_device_mapper_info",
                "Info about disk device mapper.",
                Kind::Gauge,
            ),
            ata: ATA
                .iter()
                .map(|(_, name, help)| Family::new(*name, *help, Kind::Gauge))
                .collect(),
        }
    }

    fn into_families(self) -> Vec<Family> {
        let mut out = self.ata;
        out.push(self.device_mapper);
        out.push(self.filesystem);
        out.push(self.info);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udev_properties_are_the_e_lines() {
        let udev = Udev::parse(
            "S:disk/by-id/x\nE:ID_MODEL=QEMU HARDDISK\nE:ID_PATH=pci-0000:00:05.0\nE:EMPTY=\nG:systemd\nE:ID_MODEL=later wins\n",
        );
        assert_eq!(udev.get("ID_MODEL"), "later wins");
        assert_eq!(udev.get("ID_PATH"), "pci-0000:00:05.0");
        assert_eq!(udev.get("EMPTY"), "");
        assert_eq!(udev.get("S"), "");
        assert_eq!(udev.get("missing"), "");
    }
}
