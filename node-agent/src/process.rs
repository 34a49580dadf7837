//! The agent's own `process_*` metrics, the families every Prometheus exporter serves (those of
//! client_golang's process collector on Linux, with its names, help texts and units), read from
//! the agent's `/proc/self` on every scrape.
//!
//! Guarantees: a file that cannot be read leaves out the families it feeds, never the others.
//! Assumptions: `/proc` is the agent's own procfs (in a DaemonSet the container's, not the
//! host's `/host/proc`), and clock ticks are 100 per second, as client_golang assumes.

use std::path::Path;

use crate::metrics::{self, Kind};

/// The families written here; the textfile collector does not let a file take them over.
pub const FAMILIES: &[&str] = &[
    "process_cpu_seconds_total",
    "process_max_fds",
    "process_open_fds",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_virtual_memory_bytes",
    "process_virtual_memory_max_bytes",
];

/// Clock ticks per second (`USER_HZ`).
const USER_HZ: f64 = 100.0;

/// What `/proc/self` says about the process.
#[derive(Debug, Default, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU seconds.
    pub cpu_seconds: Option<f64>,
    /// Soft limit of open files.
    pub max_fds: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// Resident set size in bytes.
    pub resident_bytes: Option<f64>,
    /// Start time, seconds since the epoch.
    pub start_time: Option<f64>,
    /// Virtual memory size in bytes.
    pub virtual_bytes: Option<f64>,
    /// Soft limit of the address space in bytes (2^64 for unlimited, as client_golang).
    pub virtual_max_bytes: Option<f64>,
}

impl ProcessStats {
    /// Reads `PROC/self/{stat,limits,fd}` and the boot time from `PROC/stat`.
    pub fn read(proc: &Path, page_size: u64) -> Self {
        let mut stats = Self::default();
        let own = proc.join("self");
        if let Ok(stat) = std::fs::read_to_string(own.join("stat")) {
            // Fields after the command name, which may hold spaces and parentheses.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            let field = |n: usize| -> Option<f64> {
                // `n` is the 1-based field number of proc(5); the list starts at field 3.
                fields
                    .get(n.checked_sub(3)?)?
                    .parse::<u64>()
                    .ok()
                    .map(|v| v as f64)
            };
            if let (Some(utime), Some(stime)) = (field(14), field(15)) {
                stats.cpu_seconds = Some((utime + stime) / USER_HZ);
            }
            stats.virtual_bytes = field(23);
            stats.resident_bytes = field(24).map(|pages| pages * page_size as f64);
            let boot = std::fs::read_to_string(proc.join("stat"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("btime "))
                        .and_then(|v| v.trim().parse::<u64>().ok())
                });
            if let (Some(boot), Some(start)) = (boot, field(22)) {
                stats.start_time = Some(boot as f64 + start / USER_HZ);
            }
        }
        if let Ok(limits) = std::fs::read_to_string(own.join("limits")) {
            stats.max_fds = soft_limit(&limits, "Max open files");
            stats.virtual_max_bytes = soft_limit(&limits, "Max address space");
        }
        if let Ok(entries) = std::fs::read_dir(own.join("fd")) {
            stats.open_fds = Some(entries.count() as f64);
        }
        stats
    }

    /// Writes the families that have a value.
    pub fn encode(&self, out: &mut String) {
        let families = [
            (
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Kind::Counter,
                self.cpu_seconds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Kind::Gauge,
                self.max_fds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                Kind::Gauge,
                self.open_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Kind::Gauge,
                self.resident_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Kind::Gauge,
                self.start_time,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Kind::Gauge,
                self.virtual_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                Kind::Gauge,
                self.virtual_max_bytes,
            ),
        ];
        for (name, help, kind, value) in families {
            if let Some(value) = value {
                metrics::write_family_header(out, name, help, kind);
                metrics::write_sample(out, name, &[], value);
            }
        }
    }
}

/// The soft limit of a `/proc/PID/limits` row; `unlimited` is 2^64 - 1 as procfs reads it.
fn soft_limit(limits: &str, row: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with(row))?;
    let soft = line[row.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        return Some(u64::MAX as f64);
    }
    soft.parse::<u64>().ok().map(|v| v as f64)
}

/// The agent's own metrics, from `/proc/self`.
pub fn encode(out: &mut String) {
    ProcessStats::read(Path::new("/proc"), rustix::param::page_size() as u64).encode(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_recorded_process() {
        let proc = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/process/proc");
        let stats = ProcessStats::read(&proc, 4096);
        let mut out = String::new();
        stats.encode(&mut out);
        let golden = proc.with_file_name("process.prom");
        if std::env::var_os("DRIFTLESS_BLESS").is_some() {
            std::fs::write(&golden, &out).unwrap();
        }
        assert_eq!(out, std::fs::read_to_string(&golden).unwrap());
        // (utime 183 + stime 42) ticks; rss 2300 pages; btime + starttime 5012 ticks.
        assert_eq!(stats.cpu_seconds, Some(2.25));
        assert_eq!(stats.resident_bytes, Some(2300.0 * 4096.0));
        assert_eq!(stats.start_time, Some(1764835200.0 + 50.12));
        assert_eq!(stats.max_fds, Some(20000.0));
        assert_eq!(stats.virtual_max_bytes, Some(u64::MAX as f64));
        assert_eq!(stats.open_fds, Some(4.0));
    }

    #[test]
    fn missing_files_leave_out_their_families() {
        let dir = tempfile::tempdir().unwrap();
        let stats = ProcessStats::read(dir.path(), 4096);
        assert_eq!(stats, ProcessStats::default());
        let mut out = String::new();
        stats.encode(&mut out);
        assert_eq!(out, "");
    }

    #[test]
    fn this_process_has_plausible_values() {
        let mut out = String::new();
        encode(&mut out);
        for name in FAMILIES {
            assert!(out.contains(&format!("# TYPE {name} ")), "{name}:\n{out}");
        }
        let stats = ProcessStats::read(Path::new("/proc"), rustix::param::page_size() as u64);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = stats.start_time.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 3600.0,
            "{start} vs {now}"
        );
        assert!(stats.resident_bytes.unwrap() > 1e5);
        assert!(stats.open_fds.unwrap() >= 3.0);
    }
}
