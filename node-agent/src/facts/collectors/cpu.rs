//! `cpu`: seconds each CPU spent in each mode (`/proc/stat`), and node_exporter's `cpufreq`
//! families (frequencies, limits, governors) where `/sys/devices/system/cpu/cpuN/cpufreq` exists.

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
        out.extend(self.frequencies(&cpus));
        Ok(())
    }
}

/// node_exporter's `cpufreq` families: `(file in cpufreq/, name, help)`, values in kHz.
const FREQUENCIES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
];

impl Cpu {
    /// Frequencies and governors of the CPUs that have a `cpufreq` directory; a file that is
    /// missing or unreadable leaves its series out.
    fn frequencies(&self, cpus: &[String]) -> Vec<Family> {
        let mut families: Vec<Family> = FREQUENCIES
            .iter()
            .map(|(_, name, help)| Family::new(*name, *help, Kind::Gauge))
            .collect();
        let mut governor = Family::new(
            "node_cpu_scaling_governor",
            "Current enabled CPU frequency governor.",
            Kind::Gauge,
        );
        let cpufreq = self.paths.sys.join("devices/system/cpu");
        for cpu in cpus {
            let dir = cpufreq.join(format!("cpu{cpu}/cpufreq"));
            if !dir.is_dir() {
                continue;
            }
            let text = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .ok()
                    .map(|t| t.trim().to_owned())
            };
            for (family, (file, _, _)) in families.iter_mut().zip(FREQUENCIES) {
                if let Some(khz) = text(file).and_then(|t| t.parse::<f64>().ok()) {
                    family.push(vec![("cpu", cpu.clone())], khz * 1000.0);
                }
            }
            let current = text("scaling_governor").unwrap_or_default();
            if !current.is_empty() {
                let available = text("scaling_available_governors").unwrap_or_default();
                let mut names: Vec<&str> = available.split_whitespace().collect();
                if !names.contains(&current.as_str()) {
                    names.push(&current);
                }
                for name in names {
                    governor.push(
                        vec![("cpu", cpu.clone()), ("governor", name.to_owned())],
                        f64::from(u8::from(name == current)),
                    );
                }
            }
        }
        families.push(governor);
        families
    }
}
