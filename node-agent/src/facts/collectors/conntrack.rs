//! `conntrack`: the netfilter connection tracking table from
//! `/proc/sys/net/netfilter/nf_conntrack_{count,max}` and its statistics from
//! `/proc/net/stat/nf_conntrack` (hexadecimal, one line per CPU, summed), as node_exporter 1.5
//! exports them. Without the files (no `nf_conntrack` module) it is "no data"; what was read
//! before a missing file stays, as with node_exporter.

use std::path::{Path, PathBuf};

use super::kfiles::parse_u64;
use super::{read, CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Conntrack {
    netfilter: PathBuf,
    stat: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Conntrack {
        netfilter: settings.paths.proc.join("sys/net/netfilter"),
        stat: settings.paths.proc.join("net/stat/nf_conntrack"),
    }))
}

/// `(family suffix, column, help)` of the statistics node_exporter exports, by column of
/// `/proc/net/stat/nf_conntrack`.
const STATS: &[(&str, usize, &str)] = &[
    ("found", 2, "Number of searched entries which were successful."),
    ("invalid", 4, "Number of packets seen which can not be tracked."),
    (
        "ignore",
        5,
        "Number of packets seen which are already connected to a conntrack entry.",
    ),
    ("insert", 8, "Number of entries inserted into the list."),
    (
        "insert_failed",
        9,
        "Number of entries for which list insertion was attempted but failed.",
    ),
    ("drop", 10, "Number of packets dropped due to conntrack failure."),
    (
        "early_drop",
        11,
        "Number of dropped conntrack entries to make room for new ones, if maximum table size was reached.",
    ),
    (
        "search_restart",
        16,
        "Number of conntrack table lookups which had to be restarted due to hashtable resizes.",
    ),
];

/// Sums the per-CPU lines of `/proc/net/stat/nf_conntrack` (after its header), column by
/// column. A line with fewer than 17 columns or a value that is not hexadecimal is an error.
pub fn parse_stat(text: &str) -> Result<[u64; 17], CollectError> {
    let mut sums = [0u64; 17];
    for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 17 {
            return Err(CollectError::Failed(format!(
                "nf_conntrack: {} fields in {line:?}, want at least 17",
                fields.len()
            )));
        }
        for (sum, field) in sums.iter_mut().zip(&fields) {
            let v = parse_u64(field, 16).ok_or_else(|| {
                CollectError::Failed(format!("nf_conntrack: invalid value {field:?}"))
            })?;
            *sum = sum.wrapping_add(v);
        }
    }
    Ok(sums)
}

fn uint(path: &Path) -> Result<f64, CollectError> {
    let text = read(path)?;
    text.trim()
        .parse::<u64>()
        .map(|v| v as f64)
        .map_err(|e| CollectError::Failed(format!("{}: {e}", path.display())))
}

impl Collector for Conntrack {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        out.push(Family::single(
            "node_nf_conntrack_entries",
            "Number of currently allocated flow entries for connection tracking.",
            Kind::Gauge,
            uint(&self.netfilter.join("nf_conntrack_count"))?,
        ));
        out.push(Family::single(
            "node_nf_conntrack_entries_limit",
            "Maximum size of connection tracking table.",
            Kind::Gauge,
            uint(&self.netfilter.join("nf_conntrack_max"))?,
        ));
        let sums = parse_stat(&read(&self.stat)?)?;
        for (name, column, help) in STATS {
            out.push(Family::single(
                format!("node_nf_conntrack_stat_{name}"),
                *help,
                Kind::Gauge,
                sums[*column] as f64,
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_cpus_and_rejects_short_lines() {
        let header = "entries clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error expect_new expect_create expect_delete search_restart\n";
        let row = "00000060 0 0000000a 0 1 2 0 0 3 4 5 6 0 0 0 0 ff\n";
        let sums = parse_stat(&format!("{header}{row}{row}")).expect("parse");
        assert_eq!((sums[2], sums[11], sums[16]), (20, 12, 510));
        assert!(parse_stat(&format!("{header}1 2 3\n")).is_err());
        assert!(parse_stat(&format!("{header}{}", row.replace("ff", "zz"))).is_err());
    }
}
