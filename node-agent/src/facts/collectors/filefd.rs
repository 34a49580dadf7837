//! `filefd`: allocated and maximum file handles from `/proc/sys/fs/file-nr`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Filefd {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Filefd {
        paths: settings.paths.clone(),
    }))
}

impl Collector for Filefd {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("sys/fs/file-nr"))?;
        let fields: Vec<f64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        let [allocated, _, maximum] = fields[..] else {
            return Err(CollectError::Failed(format!(
                "/proc/sys/fs/file-nr: expected 3 numbers, got {text:?}"
            )));
        };
        out.push(Family::single(
            "node_filefd_allocated",
            "File descriptor statistics: allocated.",
            Kind::Gauge,
            allocated,
        ));
        out.push(Family::single(
            "node_filefd_maximum",
            "File descriptor statistics: maximum.",
            Kind::Gauge,
            maximum,
        ));
        Ok(())
    }
}
