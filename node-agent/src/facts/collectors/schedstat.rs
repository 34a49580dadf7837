//! `schedstat`: per-CPU scheduler statistics from `/proc/schedstat` (kernels with
//! `CONFIG_SCHEDSTATS`), as node_exporter 1.5 exports them: the `cpuN` lines' time spent
//! running and waiting (nanoseconds, exported in seconds) and timeslices. Other lines
//! (`version`, `timestamp`, `domainN`) are skipped; a kernel without the file is "no data".

use std::path::PathBuf;

use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Schedstat {
    path: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Schedstat {
        path: settings.paths.proc.join("schedstat"),
    }))
}

/// One CPU's line.
#[derive(Debug, PartialEq)]
pub struct CpuStat {
    /// The number after `cpu`.
    pub cpu: String,
    /// Nanoseconds spent running a process.
    pub running_ns: u64,
    /// Nanoseconds processes spent waiting for this CPU.
    pub waiting_ns: u64,
    /// Timeslices run.
    pub timeslices: u64,
}

/// The `cpuN` lines that have at least nine numbers after the name; the seventh to ninth are
/// running time, waiting time and timeslices. Other lines are skipped.
pub fn parse(text: &str) -> Vec<CpuStat> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let cpu = fields.next()?.strip_prefix("cpu")?;
            if cpu.is_empty() || !cpu.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let numbers: Vec<u64> = fields
                .take(9)
                .map(|f| f.parse::<u64>().ok())
                .collect::<Option<_>>()?;
            let [.., running_ns, waiting_ns, timeslices] = numbers[..] else {
                return None;
            };
            (numbers.len() == 9).then(|| CpuStat {
                cpu: cpu.to_owned(),
                running_ns,
                waiting_ns,
                timeslices,
            })
        })
        .collect()
}

impl Collector for Schedstat {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let stats = parse(&read(&self.path)?);
        let mut running = Family::new(
            "node_schedstat_running_seconds_total",
            "Number of seconds CPU spent running a process.",
            Kind::Counter,
        );
        let mut waiting = Family::new(
            "node_schedstat_waiting_seconds_total",
            "Number of seconds spent by processing waiting for this CPU.",
            Kind::Counter,
        );
        let mut timeslices = Family::new(
            "node_schedstat_timeslices_total",
            "Number of timeslices executed by CPU.",
            Kind::Counter,
        );
        for s in stats {
            running.push(vec![("cpu", s.cpu.clone())], s.running_ns as f64 / 1e9);
            waiting.push(vec![("cpu", s.cpu.clone())], s.waiting_ns as f64 / 1e9);
            timeslices.push(vec![("cpu", s.cpu)], s.timeslices as f64);
        }
        out.push(running);
        out.push(waiting);
        out.push(timeslices);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cpu_lines_only() {
        let text = "version 15\ntimestamp 4294858660\n\
                    cpu0 0 0 0 0 0 0 2587467442 1034617934 16183\n\
                    domain0 3 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n\
                    cpu1 0 0 0 0 0 0 1 2\n\
                    cpuX 0 0 0 0 0 0 1 2 3\n";
        assert_eq!(
            parse(text),
            [CpuStat {
                cpu: "0".into(),
                running_ns: 2587467442,
                waiting_ns: 1034617934,
                timeslices: 16183
            }]
        );
    }
}
