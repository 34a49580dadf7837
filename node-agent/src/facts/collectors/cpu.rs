//! `cpu`: seconds each CPU spent in each mode (`/proc/stat`), and the frequency where cpufreq
//! exposes it (`/sys/devices/system/cpu/cpuN/cpufreq`).

use super::{read, CollectError, Collector, Settings, USER_HZ};
use crate::host::HostPaths;
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Cpu {
    paths: HostPaths,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Cpu {
        paths: settings.paths.clone(),
    }))
}

/// Modes in `/proc/stat` column order, and the ones node_exporter reports.
const MODES: [&str; 8] = [
    "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
];

impl Collector for Cpu {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let text = read(&self.paths.proc("stat"))?;
        let mut seconds = Family::new(
            "node_cpu_seconds_total",
            "Seconds the CPUs spent in each mode.",
            Kind::Counter,
        );
        let mut guest = Family::new(
            "node_cpu_guest_seconds_total",
            "Seconds the CPUs spent in guests (VMs) for each mode.",
            Kind::Counter,
        );
        let mut cpus = Vec::new();
        for line in text.lines() {
            let mut fields = line.split_whitespace();
            let Some(cpu) = fields.next().and_then(|f| f.strip_prefix("cpu")) else {
                continue;
            };
            if cpu.is_empty() {
                continue;
            }
            let values: Vec<f64> = fields
                .map(|v| v.parse::<f64>().unwrap_or(0.0) / USER_HZ)
                .collect();
            // Sorted by mode name, as node_exporter writes them.
            let mut modes: Vec<(&str, f64)> = MODES
                .iter()
                .zip(values.iter())
                .map(|(m, v)| (*m, *v))
                .collect();
            modes.sort_by(|a, b| a.0.cmp(b.0));
            for (mode, value) in modes {
                seconds.push(
                    vec![("cpu", cpu.to_owned()), ("mode", mode.to_owned())],
                    value,
                );
            }
            if values.len() >= 10 {
                guest.push(
                    vec![("cpu", cpu.to_owned()), ("mode", "nice".into())],
                    values[9],
                );
                guest.push(
                    vec![("cpu", cpu.to_owned()), ("mode", "user".into())],
                    values[8],
                );
            }
            cpus.push(cpu.to_owned());
        }
        if seconds.samples.is_empty() {
            return Err(CollectError::Failed("no cpuN lines in /proc/stat".into()));
        }
        out.push(seconds);
        out.push(guest);
        let mut current = Family::new(
            "node_cpu_frequency_hertz",
            "Current CPU thread frequency in hertz.",
            Kind::Gauge,
        );
        let mut scaling = Family::new(
            "node_cpu_scaling_frequency_hertz",
            "Current scaled CPU thread frequency in hertz.",
            Kind::Gauge,
        );
        for cpu in &cpus {
            let dir = self
                .paths
                .sys
                .join(format!("devices/system/cpu/cpu{cpu}/cpufreq"));
            let khz = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
            };
            if let Some(v) = khz("cpuinfo_cur_freq") {
                current.push(vec![("cpu", cpu.clone())], v * 1000.0);
            }
            if let Some(v) = khz("scaling_cur_freq") {
                scaling.push(vec![("cpu", cpu.clone())], v * 1000.0);
            }
        }
        out.push(current);
        out.push(scaling);
        Ok(())
    }
}
