//! `bcache`: block-cache statistics from `/sys/fs/bcache/UUID/` (cache set), its `bdevN`
//! backing devices and `cacheN` cache devices, as node_exporter reads them (without the
//! expensive `priority_stats`). Values keep bcache's human-readable units (`1.5M` is
//! 1,572,864; the fraction digit counts 1/10.24 as the kernel prints it). A missing counter file
//! reads as 0; a cache set with an unreadable file or a backing device without
//! `writeback_rate_debug` fails the collector, and nothing is exported.

use std::path::{Path, PathBuf};

use super::kfiles::{failed, glob_names};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Bcache {
    dir: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Bcache {
        dir: settings.paths.sys.join("fs/bcache"),
    }))
}

/// bcache's `bch_hprint` number: an integer, or `INT.FRAC` with FRAC in 1/10.24 steps.
fn pseudo_float(s: &str) -> Option<f64> {
    let mut parts = s.split('.');
    let int: f64 = parts.next()?.parse().ok()?;
    match parts.next() {
        None => Some(int),
        Some(frac) => Some(int + frac.parse::<f64>().ok()? / 10.24),
    }
}

/// A human-readable size (`12.3M`, `4k`, `512`) as a number.
pub fn dehumanize(s: &str) -> Option<u64> {
    let last = *s.as_bytes().last()?;
    if last > b'9' {
        let shift = match last {
            b'k' => 10,
            b'M' => 20,
            b'G' => 30,
            b'T' => 40,
            b'P' => 50,
            b'E' => 60,
            // Z and Y do not fit; node_exporter's unknown suffixes count as 0.
            b'Z' => 70,
            b'Y' => 80,
            _ => -1,
        };
        let mantissa = pseudo_float(s.get(..s.len() - 1)?)?;
        let multiplier = if shift < 0 { 0.0 } else { 2f64.powi(shift) };
        Some((mantissa * multiplier) as u64)
    } else {
        Some(s.parse::<f64>().ok()? as u64)
    }
}

/// A signed human-readable size (`-1.2k`).
pub fn dehumanize_signed(s: &str) -> Option<i64> {
    match s.strip_prefix('-') {
        Some(rest) => Some((dehumanize(rest)? as i64).wrapping_neg()),
        None => Some(dehumanize(s)? as i64),
    }
}

/// Reads one value file below a cache set: missing is 0, the last byte (the newline) is
/// dropped as the kernel always writes one.
fn value(path: &Path) -> Result<u64, CollectError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(failed(path, e)),
    };
    let trimmed = text.get(..text.len().saturating_sub(1)).unwrap_or_default();
    dehumanize(trimmed).ok_or_else(|| failed(path, format!("{trimmed:?} is not a bcache number")))
}

/// Period statistics files and their families.
const PERIOD: [(&str, &str, &str); 7] = [
    (
        "bypassed",
        "node_bcache_bypassed_bytes_total",
        "Amount of IO (both reads and writes) that has bypassed the cache.",
    ),
    (
        "cache_hits",
        "node_bcache_cache_hits_total",
        "Hits counted per individual IO as bcache sees them.",
    ),
    (
        "cache_misses",
        "node_bcache_cache_misses_total",
        "Misses counted per individual IO as bcache sees them.",
    ),
    (
        "cache_bypass_hits",
        "node_bcache_cache_bypass_hits_total",
        "Hits for IO intended to skip the cache.",
    ),
    (
        "cache_bypass_misses",
        "node_bcache_cache_bypass_misses_total",
        "Misses for IO intended to skip the cache.",
    ),
    (
        "cache_miss_collisions",
        "node_bcache_cache_miss_collisions_total",
        "Instances where data insertion from cache miss raced with write (data already present).",
    ),
    (
        "cache_readaheads",
        "node_bcache_cache_readaheads_total",
        "Count of times readahead occurred.",
    ),
];

/// Cache-set files, families, help, kind and scale.
const SET: [(&str, &str, &str, Kind, f64); 10] = [
    ("average_key_size", "node_bcache_average_key_size_sectors", "Average data per key in the btree (sectors).", Kind::Gauge, 1.0),
    ("btree_cache_size", "node_bcache_btree_cache_size_bytes", "Amount of memory currently used by the btree cache.", Kind::Gauge, 1.0),
    ("cache_available_percent", "node_bcache_cache_available_percent", "Percentage of cache device without dirty data, usable for writeback (may contain clean cached data).", Kind::Gauge, 1.0),
    ("congested", "node_bcache_congested", "Congestion.", Kind::Gauge, 1.0),
    ("root_usage_percent", "node_bcache_root_usage_percent", "Percentage of the root btree node in use (tree depth increases if too high).", Kind::Gauge, 1.0),
    ("tree_depth", "node_bcache_tree_depth", "Depth of the btree.", Kind::Gauge, 1.0),
    ("internal/active_journal_entries", "node_bcache_active_journal_entries", "Number of journal entries that are newer than the index.", Kind::Gauge, 1.0),
    ("internal/btree_nodes", "node_bcache_btree_nodes", "Total nodes in the btree.", Kind::Gauge, 1.0),
    // node_exporter reads the microsecond file as nanoseconds; kept for compatibility.
    ("internal/btree_read_average_duration_us", "node_bcache_btree_read_average_duration_seconds", "Average btree read duration.", Kind::Gauge, 1e-9),
    ("internal/cache_read_races", "node_bcache_cache_read_races_total", "Counts instances where while data was being read from the cache, the bucket was reused and invalidated - i.e. where the pointer was stale after the read completed.", Kind::Counter, 1.0),
];

/// `writeback_rate_debug` families, help and line prefix.
const WRITEBACK: [(&str, &str, &str); 5] = [
    (
        "target:",
        "node_bcache_dirty_target_bytes",
        "Current dirty data target threshold for this backing device in bytes.",
    ),
    (
        "rate:",
        "node_bcache_writeback_rate",
        "Current writeback rate for this backing device in bytes.",
    ),
    (
        "proportional:",
        "node_bcache_writeback_rate_proportional_term",
        "Current result of proportional controller, part of writeback rate",
    ),
    (
        "integral:",
        "node_bcache_writeback_rate_integral_term",
        "Current result of integral controller, part of writeback rate",
    ),
    (
        "change:",
        "node_bcache_writeback_change",
        "Last writeback rate change step for this backing device.",
    ),
];

/// Cache device files and families.
const CACHE: [(&str, &str, &str, Kind); 3] = [
    (
        "io_errors",
        "node_bcache_io_errors",
        "Number of errors that have occurred, decayed by io_error_halflife.",
        Kind::Gauge,
    ),
    (
        "metadata_written",
        "node_bcache_metadata_written_bytes_total",
        "Sum of all non data writes (btree writes and all other metadata).",
        Kind::Counter,
    ),
    (
        "written",
        "node_bcache_written_bytes_total",
        "Sum of all data that has been written to the cache.",
        Kind::Counter,
    ),
];

/// The `writeback_rate_debug` values in [`WRITEBACK`] order (and `dirty:`/`next io:`, which
/// must parse but are not exported).
pub fn writeback(text: &str) -> Result<[f64; 5], String> {
    let mut values = [0.0; 5];
    for line in text.lines() {
        let Some(raw) = line.split_whitespace().last() else {
            continue;
        };
        let bad = || format!("bad value in {line:?}");
        if let Some(i) = WRITEBACK.iter().position(|w| line.starts_with(w.0)) {
            let raw = raw.strip_suffix("/sec").unwrap_or(raw);
            values[i] = if i <= 1 {
                dehumanize(raw).ok_or_else(bad)? as f64
            } else {
                dehumanize_signed(raw).ok_or_else(bad)? as f64
            };
        } else if line.starts_with("dirty:") {
            dehumanize(raw).ok_or_else(bad)?;
        } else if line.starts_with("next io:") {
            raw.strip_suffix("ms")
                .unwrap_or(raw)
                .parse::<i64>()
                .map_err(|_| bad())?;
        }
    }
    Ok(values)
}

/// Samples of one cache set, as (family index into the collector's table, labels, value).
type Samples = Vec<(usize, Vec<(&'static str, String)>, f64)>;

/// Index of a family in the collector's table: SET, then dirty data, WRITEBACK, PERIOD, CACHE.
const DIRTY: usize = SET.len();
const WB: usize = DIRTY + 1;
const PER: usize = WB + WRITEBACK.len();
const CACHES: usize = PER + PERIOD.len();

fn read_set(dir: &Path, uuid: &str) -> Result<Samples, CollectError> {
    let mut samples = Samples::new();
    let set = || vec![("uuid", uuid.to_owned())];
    for (i, (file, _, _, _, scale)) in SET.iter().enumerate() {
        samples.push((i, set(), value(&dir.join(file))? as f64 * scale));
    }
    for period in ["stats_five_minute", "stats_total"] {
        for (file, _, _) in PERIOD {
            value(&dir.join(period).join(file))?;
        }
    }
    for bdev in glob_names(dir).into_iter().filter(|n| numbered(n, "bdev")) {
        let bdir = dir.join(&bdev);
        let labels = || vec![("backing_device", bdev.clone()), ("uuid", uuid.to_owned())];
        samples.push((DIRTY, labels(), value(&bdir.join("dirty_data"))? as f64));
        let path = bdir.join("writeback_rate_debug");
        let text = std::fs::read_to_string(&path).map_err(|e| failed(&path, e))?;
        for (i, v) in writeback(&text)
            .map_err(|e| failed(&path, e))?
            .into_iter()
            .enumerate()
        {
            samples.push((WB + i, labels(), v));
        }
        for file in PERIOD.iter().map(|p| p.0) {
            value(&bdir.join("stats_five_minute").join(file))?;
        }
        for (i, (file, _, _)) in PERIOD.iter().enumerate() {
            samples.push((
                PER + i,
                labels(),
                value(&bdir.join("stats_total").join(file))? as f64,
            ));
        }
    }
    for cache in glob_names(dir).into_iter().filter(|n| numbered(n, "cache")) {
        let labels = || vec![("cache_device", cache.clone()), ("uuid", uuid.to_owned())];
        for (i, (file, _, _, _)) in CACHE.iter().enumerate() {
            samples.push((
                CACHES + i,
                labels(),
                value(&dir.join(&cache).join(file))? as f64,
            ));
        }
    }
    Ok(samples)
}

/// Whether a name matches the glob `PREFIX[0-9]*`.
fn numbered(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|rest| rest.bytes().next())
        .is_some_and(|b| b.is_ascii_digit())
}

fn table() -> Vec<Family> {
    let mut table: Vec<Family> = SET.iter().map(|s| Family::new(s.1, s.2, s.3)).collect();
    table.push(Family::new(
        "node_bcache_dirty_data_bytes",
        "Amount of dirty data for this backing device in the cache.",
        Kind::Gauge,
    ));
    table.extend(WRITEBACK.iter().map(|w| Family::new(w.1, w.2, Kind::Gauge)));
    table.extend(PERIOD.iter().map(|p| Family::new(p.1, p.2, Kind::Counter)));
    table.extend(CACHE.iter().map(|c| Family::new(c.1, c.2, c.3)));
    table
}

impl Collector for Bcache {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let sets: Vec<String> = glob_names(&self.dir)
            .into_iter()
            .filter(|n| n.contains('-'))
            .collect();
        if sets.is_empty() {
            return Ok(());
        }
        let mut all = Vec::with_capacity(sets.len());
        for uuid in sets {
            all.push(read_set(&self.dir.join(&uuid), &uuid)?);
        }
        let mut families = table();
        for (i, labels, value) in all.into_iter().flatten() {
            if let Some(family) = families.get_mut(i) {
                family.push(labels, value);
            }
        }
        out.extend(families);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_readable_numbers() {
        assert_eq!(dehumanize("542"), Some(542));
        assert_eq!(dehumanize("1.5k"), Some(1524));
        assert_eq!(dehumanize("2.3M"), Some(2_404_352));
        assert_eq!(dehumanize("4k"), Some(4096));
        assert_eq!(dehumanize("1.5x"), Some(0));
        assert_eq!(dehumanize(""), None);
        assert_eq!(dehumanize(".5k"), None);
        assert_eq!(dehumanize_signed("-1.2k"), Some(-1224));
        let w = writeback("rate:\t\t1.1M/sec\ndirty:\t\t20.4G\ntarget:\t\t20.4G\nproportional:\t-59.7k\nintegral:\t-3.4M\nchange:\t\t0/sec\nnext io:\t-1ms\n").unwrap();
        assert_eq!(w[1], 1_150_976.0);
        assert_eq!(w[2], -61_116.0);
        assert!(writeback("rate:\t\tfast\n").is_err());
    }
}
