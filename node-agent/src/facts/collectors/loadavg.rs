//! `loadavg`: `node_load1`, `node_load5`, `node_load15` from `/proc/loadavg`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Loadavg {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Loadavg {
        paths: settings.paths.clone(),
    }))
}

impl Collector for Loadavg {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("loadavg"))?;
        let values: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .map(|v| v.parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|e| CollectError::Failed(format!("parsing /proc/loadavg: {e}")))?;
        if values.len() != 3 {
            return Err(CollectError::Failed("short /proc/loadavg".into()));
        }
        for (i, minutes) in ["1", "5", "15"].iter().enumerate() {
            out.push(Family::single(
                format!("node_load{minutes}"),
                format!("{minutes}m load average."),
                Kind::Gauge,
                values[i],
            ));
        }
        Ok(())
    }
}
