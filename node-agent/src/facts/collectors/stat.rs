//! `stat`: context switches, interrupts, forks, boot time and process counts from `/proc/stat`.

use super::{read, CollectError, Collector, Settings};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Stat {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Stat {
        paths: settings.paths.clone(),
    }))
}

impl Collector for Stat {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("stat"))?;
        let mut found = false;
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let key = fields.next().unwrap_or("");
            let value = || {
                line.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            };
            let (name, help, kind) = match key {
                "intr" => (
                    "node_intr_total",
                    "Total number of interrupts serviced.",
                    Kind::Counter,
                ),
                "ctxt" => (
                    "node_context_switches_total",
                    "Total number of context switches.",
                    Kind::Counter,
                ),
                "btime" => (
                    "node_boot_time_seconds",
                    "Node boot time, in unixtime.",
                    Kind::Gauge,
                ),
                "processes" => ("node_forks_total", "Total number of forks.", Kind::Counter),
                "procs_running" => (
                    "node_procs_running",
                    "Number of processes in runnable state.",
                    Kind::Gauge,
                ),
                "procs_blocked" => (
                    "node_procs_blocked",
                    "Number of processes blocked waiting for I/O to complete.",
                    Kind::Gauge,
                ),
                _ => continue,
            };
            if let Some(v) = value() {
                out.push(Family::single(name, help, kind, v));
                found = true;
            }
        }
        if !found {
            return Err(CollectError::Failed("no counters in /proc/stat".into()));
        }
        Ok(())
    }
}
