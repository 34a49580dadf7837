//! `nvme`: one `node_nvme_info` per controller in `/sys/class/nvme` with its firmware revision,
//! model, serial number and state, as node_exporter reads them. A controller whose attribute is
//! missing makes the whole collector "no data" (node_exporter's behaviour); an unreadable one
//! fails it.

use std::path::PathBuf;

use super::kfiles::{dir_names, io_error, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Nvme {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Nvme {
        class: settings.paths.sys.join("class/nvme"),
    }))
}

/// The attributes, in label order after `device`.
const ATTRIBUTES: [(&str, &str); 4] = [
    ("firmware_rev", "firmware_revision"),
    ("model", "model"),
    ("serial", "serial"),
    ("state", "state"),
];

impl Collector for Nvme {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let devices = dir_names(&self.class).map_err(|e| io_error(&self.class, &e))?;
        let mut info = Family::new(
            "node_nvme_info",
            "Non-numeric data from /sys/class/nvme/<device>, value is always 1.",
            Kind::Gauge,
        );
        let mut samples = Vec::with_capacity(devices.len());
        for device in devices {
            let mut labels = Vec::with_capacity(5);
            labels.push(("device", device.clone()));
            for (file, label) in ATTRIBUTES {
                let path = self.class.join(&device).join(file);
                labels.push((label, sys_read(&path).map_err(|e| io_error(&path, &e))?));
            }
            samples.push(labels);
        }
        for labels in samples {
            info.push(labels, 1.0);
        }
        out.push(info);
        Ok(())
    }
}
