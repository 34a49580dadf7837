//! Reading kernel files the way node_exporter's procfs/sysfs libraries do, shared by the
//! collectors of storage, network-fabric and RPC statistics: one short `read(2)` for sysfs
//! attributes, Go's `ParseUint` number rules, sorted directory listings, and the mapping of I/O
//! errors onto [`CollectError`] (a missing file is "no data", anything else a failure).

use std::io::{self, Read as _};
use std::path::Path;

use super::CollectError;
use crate::metrics::{Family, Kind};

/// Reads a sysfs attribute with one `read(2)` of at most 128 bytes and trims white space
/// (procfs `SysReadFile`: some drivers answer `EAGAIN` forever to a read loop).
pub(crate) fn sys_read(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut buf = [0u8; 128];
    let n = file.read(&mut buf)?;
    let bytes = buf.get(..n).unwrap_or_default();
    Ok(String::from_utf8_lossy(bytes).trim().to_owned())
}

/// Go's `strconv.ParseUint(s, radix, 64)`: digits only, no sign, no white space.
pub(crate) fn parse_u64(s: &str, radix: u32) -> Option<u64> {
    if s.is_empty() || s.starts_with('+') {
        return None;
    }
    u64::from_str_radix(s, radix).ok()
}

/// Go's `strconv.ParseUint(s, 0, 64)`: the base follows the prefix (`0x` hex, `0o` or a
/// leading `0` octal, `0b` binary), as sysfs counters of Fibre Channel and InfiniBand need.
pub(crate) fn parse_u64_prefixed(s: &str) -> Option<u64> {
    let lower = s.get(..2).map(str::to_ascii_lowercase);
    match lower.as_deref() {
        Some("0x") => parse_u64(s.get(2..)?, 16),
        Some("0o") => parse_u64(s.get(2..)?, 8),
        Some("0b") => parse_u64(s.get(2..)?, 2),
        _ if s.len() > 1 && s.starts_with('0') => parse_u64(s.get(1..)?, 8),
        _ => parse_u64(s, 10),
    }
}

/// Names in a directory, sorted (Go's `filepath.Glob` order); names that are not UTF-8 are
/// passed lossily.
pub(crate) fn dir_names(path: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(path)? {
        names.push(entry?.file_name().to_string_lossy().into_owned());
    }
    names.sort_unstable();
    Ok(names)
}

/// Names in a directory as Go's `filepath.Glob` sees them: sorted, and none when the directory
/// cannot be listed (a glob never fails on I/O).
pub(crate) fn glob_names(path: &Path) -> Vec<String> {
    dir_names(path).unwrap_or_default()
}

/// Entries of a directory with whether each is a regular file (not following symlinks), sorted.
pub(crate) fn dir_entries(path: &Path) -> io::Result<Vec<(String, std::fs::FileType)>> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        entries.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.file_type()?,
        ));
    }
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Whether an I/O error means the file is not there.
pub(crate) fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// Whether an I/O error is one of the "this attribute cannot be read" answers sysfs gives for
/// write-only or unsupported attributes (`EOPNOTSUPP`, `EINVAL`).
pub(crate) fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(95) | Some(22))
}

/// The collector error for an I/O error on `path`: missing is "no data", the rest failures.
pub(crate) fn io_error(path: &Path, e: &io::Error) -> CollectError {
    if not_found(e) {
        CollectError::NoData(format!("{} not found", path.display()))
    } else {
        CollectError::Failed(format!("reading {}: {e}", path.display()))
    }
}

/// A failure to read `path`, whatever the error.
pub(crate) fn failed(path: &Path, e: impl std::fmt::Display) -> CollectError {
    CollectError::Failed(format!("{}: {e}", path.display()))
}

/// Reads a file whose whole content is one decimal number (node_exporter's
/// `readUintFromFile`).
pub(crate) fn read_uint(path: &Path) -> Result<u64, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|e| failed(path, e))?;
    parse_u64(text.trim(), 10).ok_or_else(|| failed(path, "not an unsigned integer"))
}

/// Empty families, one per `(name, help, kind)` row, in the same order.
pub(crate) fn families(rows: &[(&str, &str, Kind)]) -> Vec<Family> {
    rows.iter()
        .map(|(name, help, kind)| Family::new(*name, *help, *kind))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_follow_go_parse_uint() {
        assert_eq!(parse_u64("42", 10), Some(42));
        assert_eq!(parse_u64("+42", 10), None);
        assert_eq!(parse_u64(" 42", 10), None);
        assert_eq!(parse_u64("", 10), None);
        assert_eq!(parse_u64_prefixed("0x1A"), Some(26));
        assert_eq!(parse_u64_prefixed("0XfF"), Some(255));
        assert_eq!(parse_u64_prefixed("017"), Some(15));
        assert_eq!(parse_u64_prefixed("0"), Some(0));
        assert_eq!(parse_u64_prefixed("0b101"), Some(5));
        assert_eq!(parse_u64_prefixed("0xffffffffffffffff"), Some(u64::MAX));
        assert_eq!(parse_u64_prefixed("N/A (no PMA)"), None);
        assert_eq!(parse_u64_prefixed("0x"), None);
        assert_eq!(parse_u64_prefixed("09"), None);
    }

    #[test]
    fn sys_read_reads_one_short_chunk_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attr");
        std::fs::write(&path, format!("  {}\n", "x".repeat(200))).unwrap();
        let text = sys_read(&path).unwrap();
        assert_eq!(text.len(), 126);
        assert!(not_found(&sys_read(&dir.path().join("nope")).unwrap_err()));
        // A directory cannot be read: a failure, not "no data".
        let e = sys_read(dir.path()).unwrap_err();
        assert!(!not_found(&e));
    }
}
