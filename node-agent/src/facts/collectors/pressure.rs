//! `pressure`: pressure stall information from `/proc/pressure/{cpu,io,memory}`. A kernel
//! without PSI is "no data", not a failure.

use super::{CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Pressure {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Pressure {
        paths: settings.paths.clone(),
    }))
}

/// `total=` of the `some` or `full` line, in seconds.
pub fn total_seconds(text: &str, kind: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(kind))?
        .split_whitespace()
        .find_map(|f| f.strip_prefix("total="))?
        .parse::<f64>()
        .ok()
        .map(|us| us / 1e6)
}

impl Collector for Pressure {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let resources: [(&str, &str, Option<&str>); 3] = [
            (
                "cpu",
                "Total time in seconds that processes have waited for CPU time",
                None,
            ),
            (
                "io",
                "Total time in seconds that processes have waited due to IO congestion",
                Some("Total time in seconds no process could make progress due to IO congestion"),
            ),
            (
                "memory",
                "Total time in seconds that processes have waited for memory",
                Some(
                    "Total time in seconds no process could make progress due to memory congestion",
                ),
            ),
        ];
        let mut any = false;
        for (resource, waiting_help, stalled_help) in resources {
            let path = self.paths.proc(format!("pressure/{resource}"));
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                // PSI compiled in but disabled (`psi=0`) reads as EOPNOTSUPP.
                Err(e) if e.raw_os_error() == Some(95) => continue,
                Err(e) => {
                    return Err(CollectError::Failed(format!(
                        "reading {}: {e}",
                        path.display()
                    )))
                }
            };
            any = true;
            if let Some(v) = total_seconds(&text, "some") {
                out.push(Family::single(
                    format!("node_pressure_{resource}_waiting_seconds_total"),
                    waiting_help,
                    Kind::Counter,
                    v,
                ));
            }
            if let (Some(help), Some(v)) = (stalled_help, total_seconds(&text, "full")) {
                out.push(Family::single(
                    format!("node_pressure_{resource}_stalled_seconds_total"),
                    help,
                    Kind::Counter,
                    v,
                ));
            }
        }
        if !any {
            return Err(CollectError::NoData(
                "no /proc/pressure (kernel without PSI)".into(),
            ));
        }
        Ok(())
    }
}
