//! `entropy`: the kernel's random pool from `/proc/sys/kernel/random/entropy_avail` and
//! `poolsize`, as node_exporter exports them. A missing file is "no data"; a value that is not
//! a number fails the collector.

use std::path::{Path, PathBuf};

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Entropy {
    random: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Entropy {
        random: settings.paths.proc.join("sys/kernel/random"),
    }))
}

fn number(path: &Path) -> Result<f64, CollectError> {
    let text = read(path)?;
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|e| CollectError::Failed(format!("{}: {e}", path.display())))
}

impl Collector for Entropy {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let available = number(&self.random.join("entropy_avail"))?;
        let pool = number(&self.random.join("poolsize"))?;
        out.push(Family::single(
            "node_entropy_available_bits",
            "Bits of available entropy.",
            Kind::Gauge,
            available,
        ));
        out.push(Family::single(
            "node_entropy_pool_size_bits",
            "Bits of entropy pool.",
            Kind::Gauge,
            pool,
        ));
        Ok(())
    }
}
