//! `xfs`: per-filesystem XFS statistics from `/sys/fs/xfs/DEVICE/stats/stats`, parsed as
//! node_exporter's procfs library does (the host-wide `/sys/fs/xfs/stats` is not a device and
//! is not exported). A host without mounted XFS exports nothing; a file that does not parse
//! fails the collector and nothing is exported.

use std::path::PathBuf;

use super::kfiles::{failed, glob_names};
use super::{CollectError, Collector, Settings};
use crate::metrics::{Family, Kind};

/// The collector.
pub struct Xfs {
    dir: PathBuf,
}

/// Factory.
pub fn new(settings: &Settings) -> Result<Box<dyn Collector>, CollectError> {
    Ok(Box::new(Xfs {
        dir: settings.paths.sys.join("fs/xfs"),
    }))
}

/// Lines whose value count procfs checks, with the counts it accepts.
const COUNTS: &[(&str, &[usize])] = &[
    ("extent_alloc", &[4]),
    ("abt", &[4]),
    ("blk_map", &[7]),
    ("bmbt", &[4]),
    ("dir", &[4]),
    ("trans", &[3]),
    ("ig", &[7]),
    ("log", &[5]),
    ("push_ail", &[10]),
    ("xstrat", &[2]),
    ("rw", &[2]),
    ("attr", &[4]),
    ("icluster", &[3]),
    ("vnodes", &[7, 8]),
    ("buf", &[9]),
    ("abtb2", &[15]),
    ("abtc2", &[15]),
    ("bmbt2", &[15]),
    ("ibt2", &[15]),
    ("qm", &[8, 9]),
    ("debug", &[1]),
    ("xpc", &[3]),
];

/// (line, index, family without `node_xfs_`, help). `rw` lists writes before reads.
const FIELDS: &[(&str, usize, &str, &str)] = &[
    ("extent_alloc", 0, "extent_allocation_extents_allocated_total", "Number of extents allocated for a filesystem."),
    ("extent_alloc", 1, "extent_allocation_blocks_allocated_total", "Number of blocks allocated for a filesystem."),
    ("extent_alloc", 2, "extent_allocation_extents_freed_total", "Number of extents freed for a filesystem."),
    ("extent_alloc", 3, "extent_allocation_blocks_freed_total", "Number of blocks freed for a filesystem."),
    ("abt", 0, "allocation_btree_lookups_total", "Number of allocation B-tree lookups for a filesystem."),
    ("abt", 1, "allocation_btree_compares_total", "Number of allocation B-tree compares for a filesystem."),
    ("abt", 2, "allocation_btree_records_inserted_total", "Number of allocation B-tree records inserted for a filesystem."),
    ("abt", 3, "allocation_btree_records_deleted_total", "Number of allocation B-tree records deleted for a filesystem."),
    ("blk_map", 0, "block_mapping_reads_total", "Number of block map for read operations for a filesystem."),
    ("blk_map", 1, "block_mapping_writes_total", "Number of block map for write operations for a filesystem."),
    ("blk_map", 2, "block_mapping_unmaps_total", "Number of block unmaps (deletes) for a filesystem."),
    ("blk_map", 3, "block_mapping_extent_list_insertions_total", "Number of extent list insertions for a filesystem."),
    ("blk_map", 4, "block_mapping_extent_list_deletions_total", "Number of extent list deletions for a filesystem."),
    ("blk_map", 5, "block_mapping_extent_list_lookups_total", "Number of extent list lookups for a filesystem."),
    ("blk_map", 6, "block_mapping_extent_list_compares_total", "Number of extent list compares for a filesystem."),
    ("bmbt", 0, "block_map_btree_lookups_total", "Number of block map B-tree lookups for a filesystem."),
    ("bmbt", 1, "block_map_btree_compares_total", "Number of block map B-tree compares for a filesystem."),
    ("bmbt", 2, "block_map_btree_records_inserted_total", "Number of block map B-tree records inserted for a filesystem."),
    ("bmbt", 3, "block_map_btree_records_deleted_total", "Number of block map B-tree records deleted for a filesystem."),
    ("dir", 0, "directory_operation_lookup_total", "Number of file name directory lookups which miss the operating systems directory name lookup cache."),
    ("dir", 1, "directory_operation_create_total", "Number of times a new directory entry was created for a filesystem."),
    ("dir", 2, "directory_operation_remove_total", "Number of times an existing directory entry was created for a filesystem."),
    ("dir", 3, "directory_operation_getdents_total", "Number of times the directory getdents operation was performed for a filesystem."),
    ("ig", 0, "inode_operation_attempts_total", "Number of times the OS looked for an XFS inode in the inode cache."),
    ("ig", 1, "inode_operation_found_total", "Number of times the OS looked for and found an XFS inode in the inode cache."),
    ("ig", 2, "inode_operation_recycled_total", "Number of times the OS found an XFS inode in the cache, but could not use it as it was being recycled."),
    ("ig", 3, "inode_operation_missed_total", "Number of times the OS looked for an XFS inode in the cache, but did not find it."),
    ("ig", 4, "inode_operation_duplicates_total", "Number of times the OS tried to add a missing XFS inode to the inode cache, but found it had already been added by another process."),
    ("ig", 5, "inode_operation_reclaims_total", "Number of times the OS reclaimed an XFS inode from the inode cache to free memory for another purpose."),
    ("ig", 6, "inode_operation_attribute_changes_total", "Number of times the OS explicitly changed the attributes of an XFS inode."),
    ("rw", 1, "read_calls_total", "Number of read(2) system calls made to files in a filesystem."),
    ("rw", 0, "write_calls_total", "Number of write(2) system calls made to files in a filesystem."),
    ("vnodes", 0, "vnode_active_total", "Number of vnodes not on free lists for a filesystem."),
    ("vnodes", 1, "vnode_allocate_total", "Number of times vn_alloc called for a filesystem."),
    ("vnodes", 2, "vnode_get_total", "Number of times vn_get called for a filesystem."),
    ("vnodes", 3, "vnode_hold_total", "Number of times vn_hold called for a filesystem."),
    ("vnodes", 4, "vnode_release_total", "Number of times vn_rele called for a filesystem."),
    ("vnodes", 5, "vnode_reclaim_total", "Number of times vn_reclaim called for a filesystem."),
    ("vnodes", 6, "vnode_remove_total", "Number of times vn_remove called for a filesystem."),
];

/// Parses one stats file into the exported values, in [`FIELDS`] order (0 for absent lines).
/// Every value is a 32-bit counter except `xpc`'s 64-bit byte counts.
pub fn parse(text: &str) -> Result<Vec<u32>, String> {
    let mut values = vec![0u32; FIELDS.len()];
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let Some(label) = parts.next() else { continue };
        let raw: Vec<&str> = parts.collect();
        if raw.is_empty() {
            continue;
        }
        let numbers: Vec<u64> = if label == "xpc" {
            raw.iter()
                .map(|v| super::kfiles::parse_u64(v, 10))
                .collect::<Option<_>>()
        } else {
            raw.iter()
                .map(|v| super::kfiles::parse_u64(v, 10).filter(|n| u32::try_from(*n).is_ok()))
                .collect::<Option<_>>()
        }
        .ok_or_else(|| format!("line {label}: values out of range: {line:?}"))?;
        if let Some((_, counts)) = COUNTS.iter().find(|(l, _)| *l == label) {
            if !counts.contains(&numbers.len()) {
                return Err(format!(
                    "incorrect number of values for XFS {label} stats: {}",
                    numbers.len()
                ));
            }
        }
        for (slot, (_, index, _, _)) in values.iter_mut().zip(FIELDS).filter(|(_, f)| f.0 == label)
        {
            *slot = numbers
                .get(*index)
                .and_then(|n| u32::try_from(*n).ok())
                .unwrap_or_default();
        }
    }
    Ok(values)
}

impl Collector for Xfs {
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError> {
        let mut devices = Vec::new();
        for name in glob_names(&self.dir) {
            let path = self.dir.join(&name).join("stats/stats");
            if std::fs::symlink_metadata(&path).is_err() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|e| failed(&path, e))?;
            devices.push((name, parse(&text).map_err(|e| failed(&path, e))?));
        }
        if devices.is_empty() {
            return Ok(());
        }
        let mut families: Vec<Family> = FIELDS
            .iter()
            .map(|f| Family::new(format!("node_xfs_{}", f.2), f.3, Kind::Counter))
            .collect();
        for (name, values) in devices {
            for (family, value) in families.iter_mut().zip(values) {
                family.push(vec![("device", name.clone())], f64::from(value));
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
    fn values_are_checked_like_procfs() {
        let v = parse(
            "extent_alloc 1 2 3 4\nrw 7 9\nvnodes 1 2 3 4 5 6 7\nxpc 99999999999 0 0\nrmapbt 0 0\n",
        )
        .unwrap();
        assert_eq!(v[0], 1);
        let read = FIELDS
            .iter()
            .position(|f| f.2 == "read_calls_total")
            .unwrap();
        assert_eq!(v[read], 9);
        assert!(parse("extent_alloc 1 2 3\n").is_err());
        assert!(parse("abt 1 2 3 4294967296\n").is_err());
        assert!(parse("unknown 4294967296\n").is_err());
        assert!(parse("vnodes 1 2 3 4 5 6 7 8 9\n").is_err());
    }
}
