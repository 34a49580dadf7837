//! `dmi`: `node_dmi_info` from `/sys/class/dmi/id`, as node_exporter 1.5 exports it. Like
//! node_exporter, the files are read once, when the collector is made (DMI does not change while
//! the machine runs), so a scrape costs nothing. A file that is missing or unreadable (the
//! serial numbers are root's) leaves its label out; a host without DMI exports nothing.

use std::path::Path;

use super::kfiles::{failed, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// `(label, file)`, in label order.
const FIELDS: &[(&str, &str)] = &[
    ("bios_date", "bios_date"),
    ("bios_release", "bios_release"),
    ("bios_vendor", "bios_vendor"),
    ("bios_version", "bios_version"),
    ("board_asset_tag", "board_asset_tag"),
    ("board_name", "board_name"),
    ("board_serial", "board_serial"),
    ("board_vendor", "board_vendor"),
    ("board_version", "board_version"),
    ("chassis_asset_tag", "chassis_asset_tag"),
    ("chassis_serial", "chassis_serial"),
    ("chassis_vendor", "chassis_vendor"),
    ("chassis_version", "chassis_version"),
    ("product_family", "product_family"),
    ("product_name", "product_name"),
    ("product_serial", "product_serial"),
    ("product_sku", "product_sku"),
    ("product_uuid", "product_uuid"),
    ("product_version", "product_version"),
    ("system_vendor", "sys_vendor"),
];

const HELP: &str = "A metric with a constant '1' value labeled by bios_date, bios_release, bios_vendor, bios_version, board_asset_tag, board_name, board_serial, board_vendor, board_version, chassis_asset_tag, chassis_serial, chassis_vendor, chassis_version, product_family, product_name, product_serial, product_sku, product_uuid, product_version, system_vendor if provided by DMI.";

/// The collector: what was read when it was made.
pub struct Dmi {
    info: Result<Option<Vec<(&'static str, String)>>, String>,
}

/// Reads the labels below `dir`; `None` without DMI.
fn read_labels(dir: &Path) -> Result<Option<Vec<(&'static str, String)>>, CollectError> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let mut labels = Vec::new();
    for (label, file) in FIELDS {
        let path = dir.join(file);
        match sys_read(&path) {
            Ok(v) => labels.push((*label, v)),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
                ) => {}
            Err(e) => return Err(failed(&path, e)),
        }
    }
    Ok(Some(labels))
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    let info = read_labels(&settings.paths.sys.join("class/dmi/id")).map_err(|e| e.to_string());
    Ok(Box::new(Dmi { info }))
}

impl Collector for Dmi {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        match &self.info {
            Err(e) => Err(CollectError::Failed(e.clone())),
            Ok(None) => Err(CollectError::NoData("no /sys/class/dmi/id".into())),
            Ok(Some(labels)) => {
                let mut family = Family::new("node_dmi_info", HELP, Kind::Gauge);
                family.push(labels.clone(), 1.0);
                out.push(family);
                Ok(())
            }
        }
    }
}
