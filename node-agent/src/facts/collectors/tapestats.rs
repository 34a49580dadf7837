//! `tapestats`: SCSI tape drive statistics from `/sys/class/scsi_tape/stN/stats`, as
//! node_exporter reads them (only `st[0-9]+`, not the `nst*`/`st*a` aliases of one drive). A
//! drive whose statistics cannot be read or parsed fails the collector and nothing is exported.

use std::path::{Path, PathBuf};

use super::kfiles::{dir_names, failed, families, not_found, parse_u64_prefixed, sys_read};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Tapestats {
    class: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Tapestats {
        class: settings.paths.sys.join("class/scsi_tape"),
    }))
}

/// (file in `stats/`, family, help, kind, scale).
const FIELDS: &[(&str, &str, &str, Kind, f64)] = &[
    ("in_flight", "node_tape_io_now", "The number of I/Os currently outstanding to this device.", Kind::Gauge, 1.0),
    ("io_ns", "node_tape_io_time_seconds_total", "The amount of time spent waiting for all I/O to complete (including read and write). This includes tape movement commands such as seeking between file or set marks and implicit tape movement such as when rewind on close tape devices are used.", Kind::Counter, 1e-9),
    ("other_cnt", "node_tape_io_others_total", "The number of I/Os issued to the tape drive other than read or write commands. The time taken to complete these commands uses the following calculation io_time_seconds_total-read_time_seconds_total-write_time_seconds_total", Kind::Counter, 1.0),
    ("read_byte_cnt", "node_tape_read_bytes_total", "The number of bytes read from the tape drive.", Kind::Counter, 1.0),
    ("read_cnt", "node_tape_reads_completed_total", "The number of read requests issued to the tape drive.", Kind::Counter, 1.0),
    ("read_ns", "node_tape_read_time_seconds_total", "The amount of time spent waiting for read requests to complete.", Kind::Counter, 1e-9),
    ("resid_cnt", "node_tape_residual_total", "The number of times during a read or write we found the residual amount to be non-zero. This should mean that a program is issuing a read larger thean the block size on tape. For write not all data made it to tape.", Kind::Counter, 1.0),
    ("write_byte_cnt", "node_tape_written_bytes_total", "The number of bytes written to the tape drive.", Kind::Counter, 1.0),
    ("write_cnt", "node_tape_writes_completed_total", "The number of write requests issued to the tape drive.", Kind::Counter, 1.0),
    ("write_ns", "node_tape_write_time_seconds_total", "The amount of time spent waiting for write requests to complete.", Kind::Counter, 1e-9),
];

/// Whether a name is `st` and digits.
fn is_tape(name: &str) -> bool {
    name.strip_prefix("st")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The counters of one drive, in [`FIELDS`] order (0 where a file is absent).
fn counters(stats: &Path) -> Result<[u64; 10], CollectError> {
    let mut values = [0u64; 10];
    let names = dir_names(stats).map_err(|e| {
        if not_found(&e) {
            CollectError::NoData(format!("{} not found", stats.display()))
        } else {
            failed(stats, e)
        }
    })?;
    for name in names {
        let path = stats.join(&name);
        let text = sys_read(&path).map_err(|e| failed(&path, e))?;
        if let Some(i) = FIELDS.iter().position(|f| f.0 == name) {
            let value = parse_u64_prefixed(&text)
                .ok_or_else(|| failed(&path, format!("{text:?} is not an unsigned integer")))?;
            if let Some(slot) = values.get_mut(i) {
                *slot = value;
            }
        }
    }
    Ok(values)
}

impl Collector for Tapestats {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let names = dir_names(&self.class).map_err(|e| {
            if not_found(&e) {
                CollectError::NoData(format!("{} not found", self.class.display()))
            } else {
                failed(&self.class, e)
            }
        })?;
        let mut drives = Vec::new();
        for name in names.into_iter().filter(|n| is_tape(n)) {
            let values = counters(&self.class.join(&name).join("stats"))?;
            drives.push((name, values));
        }
        let rows: Vec<(&str, &str, Kind)> = FIELDS.iter().map(|f| (f.1, f.2, f.3)).collect();
        let mut f = families(&rows);
        for (name, values) in drives {
            for ((family, field), value) in f.iter_mut().zip(FIELDS).zip(values) {
                family.push(vec![("device", name.clone())], value as f64 * field.4);
            }
        }
        out.extend(f);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_st_and_digits_are_drives() {
        assert!(is_tape("st0") && is_tape("st12"));
        assert!(!is_tape("nst0") && !is_tape("st0a") && !is_tape("st") && !is_tape("st0l"));
    }
}
