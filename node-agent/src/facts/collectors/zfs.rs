//! `zfs`: OpenZFS kstats from `/proc/spl/kstat/zfs`, as node_exporter reads them: every
//! `uint64` kstat of `arcstats`, `abdstats`, `dbuf_stats`, `dmu_tx`, `dnodestats`, `fm`,
//! `vdev_cache_stats`, `vdev_mirror_stats`, `xuio_stats`, `zfetchstats` and `zil` as
//! `node_zfs_<group>_<name>` (untyped, help = the kstat's path), per pool the `io` kstats
//! (`node_zfs_zpool_*{zpool}`), per dataset the `objset-*` kstats
//! (`node_zfs_zpool_dataset_*{dataset,zpool}`) and the pool state. A host without the ZFS
//! module is "no data" and costs one failed `open`.

use std::path::{Path, PathBuf};

use super::kfiles::{failed, glob_names, parse_u64};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Zfs {
    base: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Zfs {
        base: settings.paths.proc("spl/kstat/zfs"),
    }))
}

/// (family group, kstat file).
const GROUPS: [(&str, &str); 11] = [
    ("zfs_abd", "abdstats"),
    ("zfs_arc", "arcstats"),
    ("zfs_dbuf", "dbuf_stats"),
    ("zfs_dmu_tx", "dmu_tx"),
    ("zfs_dnode", "dnodestats"),
    ("zfs_fm", "fm"),
    ("zfs_vdev_cache", "vdev_cache_stats"),
    ("zfs_vdev_mirror", "vdev_mirror_stats"),
    ("zfs_xuio", "xuio_stats"),
    ("zfs_zfetch", "zfetchstats"),
    ("zfs_zil", "zil"),
];

const POOL_STATES: [&str; 6] = [
    "online", "degraded", "faulted", "offline", "removed", "unavail",
];

/// The kstat type of `uint64` values, the only ones exported.
const KSTAT_UINT64: &str = "4";

/// A metric name from a kstat path: the part after the last `.`, `-` as `_`. `None` when the
/// result is not a valid metric name (node_exporter would stop on it).
fn metric_name(prefix: &str, key: &str) -> Option<String> {
    let last = key.rsplit('.').next().unwrap_or(key).replace('-', "_");
    let valid = !last.is_empty()
        && last
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
    valid.then(|| format!("node_{prefix}_{last}"))
}

/// The `name type data` rows of a named kstat: (name, value) of the `uint64` ones. Fails when
/// there is no header or a `uint64` value does not parse.
pub fn parse_named(text: &str) -> Result<Vec<(&str, u64)>, String> {
    let mut started = false;
    let mut rows = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        if let [name, kind, value, ..] = parts.as_slice() {
            if *kind == KSTAT_UINT64 {
                let v = parse_u64(value, 10).ok_or_else(|| {
                    format!("could not parse expected integer value for {name:?}")
                })?;
                rows.push((*name, v));
            }
        }
    }
    if !started {
        return Err("did not parse a single metric".into());
    }
    Ok(rows)
}

/// The pool `io` kstat: the header row starting with `nread` (12 or more columns) and every
/// row after it, as (column, value).
pub fn parse_io(text: &str) -> Result<Vec<(&str, u64)>, String> {
    let mut header: Option<Vec<&str>> = None;
    let mut rows = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let Some(columns) = &header else {
            if parts.len() >= 12 && parts.first() == Some(&"nread") {
                header = Some(parts);
            }
            continue;
        };
        for (i, column) in columns.iter().enumerate() {
            let value = parts.get(i).and_then(|v| parse_u64(v, 10));
            rows.push((
                *column,
                value.ok_or_else(|| {
                    format!("could not parse expected integer value for {column:?}")
                })?,
            ));
        }
    }
    Ok(rows)
}

impl Zfs {
    fn group(&self, prefix: &str, file: &str, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let path = self.base.join(file);
        // Newer and older modules have different kstats: a missing one is skipped.
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        for (name, value) in parse_named(&text).map_err(|e| failed(&path, e))? {
            let key = format!("kstat.zfs.misc.{file}.{name}");
            if let Some(metric) = metric_name(prefix, &key) {
                out.push(Family::single(metric, key, Kind::Untyped, value as f64));
            }
        }
        Ok(())
    }

    /// Per pool directory: its `io`, `objset-*` and `state` kstat files.
    fn pool_files(&self) -> Vec<(String, Vec<String>)> {
        glob_names(&self.base)
            .into_iter()
            .filter_map(|pool| {
                let files = glob_names(&self.base.join(&pool));
                let wanted: Vec<String> = files
                    .into_iter()
                    .filter(|f| f == "io" || f == "state" || f.starts_with("objset-"))
                    .collect();
                (!wanted.is_empty()).then_some((pool, wanted))
            })
            .collect()
    }

    fn pools(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let pools = self.pool_files();
        let files = |pick: fn(&str) -> bool| {
            pools.iter().flat_map(move |(pool, files)| {
                files
                    .iter()
                    .filter(move |f| pick(f))
                    .map(move |f| (pool, self.base.join(pool).join(f)))
            })
        };
        let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| failed(path, e));
        for (pool, path) in files(|f| f == "io") {
            for (column, value) in parse_io(&read(&path)?).map_err(|e| failed(&path, e))? {
                let key = format!("kstat.zfs.misc.io.{column}");
                if let Some(metric) = metric_name("zfs_zpool", &key) {
                    let mut family = Family::new(metric, key, Kind::Untyped);
                    family.push(vec![("zpool", pool.clone())], value as f64);
                    out.push(family);
                }
            }
        }
        for (pool, path) in files(|f| f.starts_with("objset-")) {
            let text = read(&path)?;
            for (named, name, value) in parse_objset(&text).map_err(|e| failed(&path, e))? {
                let key = format!("kstat.zfs.misc.objset.{name}");
                if let Some(metric) = metric_name("zfs_zpool_dataset", &key) {
                    // Rows before `dataset_name` have neither dataset nor pool.
                    let (dataset, zpool) = match named {
                        Some(dataset) => (dataset.to_owned(), pool.clone()),
                        None => (String::new(), String::new()),
                    };
                    let mut family = Family::new(metric, key, Kind::Untyped);
                    family.push(vec![("dataset", dataset), ("zpool", zpool)], value as f64);
                    out.push(family);
                }
            }
        }
        let mut state = Family::new("node_zfs_zpool_state", "kstat.zfs.misc.state", Kind::Gauge);
        for (pool, path) in files(|f| f == "state") {
            let text = read(&path)?;
            let actual = text.lines().next().unwrap_or_default().to_lowercase();
            for name in POOL_STATES {
                let on = f64::from(u8::from(actual == name));
                state.push(
                    vec![("state", name.to_owned()), ("zpool", pool.clone())],
                    on,
                );
            }
        }
        out.push(state);
        Ok(())
    }
}

/// A row of an `objset-*` kstat: the dataset named so far, the kstat name, its value.
pub type ObjsetRow<'a> = (Option<&'a str>, &'a str, u64);

/// The `uint64` rows of an `objset-*` kstat.
pub fn parse_objset(text: &str) -> Result<Vec<ObjsetRow<'_>>, String> {
    let mut dataset = None;
    let mut started = false;
    let mut rows = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        if !started {
            started = parts == ["name", "type", "data"];
            continue;
        }
        match parts.as_slice() {
            ["dataset_name", _, name, ..] => dataset = Some(*name),
            [name, kind, value, ..] if *kind == KSTAT_UINT64 => {
                let v = parse_u64(value, 10).ok_or_else(|| {
                    format!("could not parse expected integer value for {name:?}")
                })?;
                rows.push((dataset, *name, v));
            }
            _ => {}
        }
    }
    if !started {
        return Err("did not parse a single metric".into());
    }
    Ok(rows)
}

impl Collector for Zfs {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        if std::fs::metadata(&self.base).is_err() {
            return Err(CollectError::NoData(format!(
                "{} not found (no ZFS)",
                self.base.display()
            )));
        }
        for (prefix, file) in GROUPS {
            self.group(prefix, file, out)?;
        }
        self.pools(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstats_parse_like_node_exporter() {
        let text = "13 1 0x01 7 2160 5214446918 32231003044788\nname                            type data\n\
hits                            4    8772612\nc_min                           4    33554432\n\
arc_no_grow                     1    0\nweird                           4    x\n";
        assert!(parse_named(text).is_err());
        let fixed = text.replace("4    x", "7    x");
        let rows = parse_named(&fixed).unwrap();
        assert_eq!(rows, [("hits", 8772612), ("c_min", 33554432)]);
        assert!(parse_named("no header\n").is_err());
        let io = "12 3 0x00 1 80 2225326830828 32953476980628\n\
nread    nwritten reads    writes   wtime    wlentime wupdate  rtime    rlentime rupdate  wcnt     rcnt\n\
1884160  3206144  22       132      7155162  104112268 1423 15587812 28342524 1427 0 0\n";
        let rows = parse_io(io).unwrap();
        assert_eq!(rows.len(), 12);
        assert_eq!(rows[0], ("nread", 1884160));
        assert!(parse_io(&io.replace(" 0 0\n", "\n")).is_err());
        assert_eq!(
            metric_name("zfs_arc", "kstat.zfs.misc.arcstats.l2-size").as_deref(),
            Some("node_zfs_arc_l2_size")
        );
        assert_eq!(metric_name("zfs_arc", "kstat.zfs.misc.arcstats.a/b"), None);
    }
}
