//! Kernel parameters: the live value under `PROC/sys/...` and the persisted value in a
//! `sysctl.d` file.
//!
//! Values are compared as `sysctl` does: whitespace-separated fields, field by field, so
//! `4096 87380 6291456` equals `4096\t87380   6291456`. Editing a persisted file keeps every
//! other line and comment; the last assignment of a key is the one that counts (as
//! `systemd-sysctl` applies them), so that is the one read and replaced.

use std::path::PathBuf;

use super::{read_optional, BackendError};
use crate::host::HostPaths;

/// The path of a parameter below `PROC/sys`: dots become slashes unless the name is already
/// written with slashes (needed for names with dots in them, like `net/ipv4/conf/eth0.1/rp_filter`).
pub fn relative_path(name: &str) -> PathBuf {
    if name.contains('/') {
        PathBuf::from(name.trim_start_matches('/'))
    } else {
        PathBuf::from(name.replace('.', "/"))
    }
}

/// The name in dotted form, for matching keys written either way.
pub fn normalize(name: &str) -> String {
    if name.contains('/') {
        name.trim_start_matches('/').replace('/', ".")
    } else {
        name.to_owned()
    }
}

/// Whether two values are the same, field by field.
pub fn values_equal(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// One `key = value` line of a sysctl.d file, when the line is one.
fn assignment(line: &str) -> Option<(String, &str)> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
        return None;
    }
    let (key, value) = trimmed.split_once('=')?;
    let key = key.trim().trim_start_matches('-');
    Some((normalize(key), value.trim()))
}

/// The value a sysctl.d file gives `name` (its last assignment).
pub fn persisted_value(text: &str, name: &str) -> Option<String> {
    let name = normalize(name);
    text.lines()
        .filter_map(assignment)
        .rfind(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

/// The file with `name = value` as the effective assignment: the last existing assignment is
/// replaced in place, or the line is appended. Everything else is kept as it was.
pub fn set_persisted(text: &str, name: &str, value: &str) -> String {
    let key = normalize(name);
    let lines: Vec<&str> = text.lines().collect();
    let last = lines
        .iter()
        .rposition(|line| assignment(line).is_some_and(|(k, _)| k == key));
    let new_line = format!("{name} = {value}");
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    match last {
        Some(at) => out[at] = new_line,
        None => out.push(new_line),
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Reads the live value; `None` when the kernel has no such parameter.
pub fn read_live(paths: &HostPaths, name: &str) -> Result<Option<String>, BackendError> {
    let path = paths.proc.join("sys").join(relative_path(name));
    Ok(read_optional(&path)?.map(|v| v.trim_end_matches('\n').to_owned()))
}

/// Writes the live value.
pub fn write_live(paths: &HostPaths, name: &str, value: &str) -> Result<(), BackendError> {
    let path = paths.proc.join("sys").join(relative_path(name));
    if !path.exists() {
        return Err(BackendError::Invalid(format!(
            "the kernel has no parameter {name} ({} does not exist)",
            path.display()
        )));
    }
    std::fs::write(&path, format!("{value}\n")).map_err(|e| BackendError::io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_proc_paths() {
        assert_eq!(
            relative_path("net.ipv4.ip_forward"),
            PathBuf::from("net/ipv4/ip_forward")
        );
        assert_eq!(
            relative_path("net/ipv4/conf/eth0.1/rp_filter"),
            PathBuf::from("net/ipv4/conf/eth0.1/rp_filter")
        );
        assert_eq!(normalize("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
    }

    #[test]
    fn compares_fields() {
        assert!(values_equal(
            "4096 87380 6291456",
            "4096\t87380   6291456\n"
        ));
        assert!(!values_equal("4096 87380", "4096 87381"));
        assert!(!values_equal("1", "1 0"));
    }

    #[test]
    fn edits_keep_other_lines() {
        let text = "# tuned by hand\nvm.swappiness=10\n\nnet.ipv4.ip_forward = 0\n; old\n-net.ipv4.ip_forward=0\nkernel.pid_max = 65536\n";
        assert_eq!(
            persisted_value(text, "net.ipv4.ip_forward").as_deref(),
            Some("0")
        );
        assert_eq!(
            persisted_value(text, "vm.swappiness").as_deref(),
            Some("10")
        );
        assert_eq!(
            persisted_value(text, "net/ipv4/ip_forward").as_deref(),
            Some("0")
        );
        assert_eq!(persisted_value(text, "kernel.nope"), None);
        let edited = set_persisted(text, "net.ipv4.ip_forward", "1");
        assert_eq!(
            edited,
            "# tuned by hand\nvm.swappiness=10\n\nnet.ipv4.ip_forward = 0\n; old\nnet.ipv4.ip_forward = 1\nkernel.pid_max = 65536\n"
        );
        assert_eq!(
            persisted_value(&edited, "net.ipv4.ip_forward").as_deref(),
            Some("1")
        );
        assert_eq!(
            set_persisted("", "vm.swappiness", "1"),
            "vm.swappiness = 1\n"
        );
        assert_eq!(set_persisted("a = 1", "b", "2 3"), "a = 1\nb = 2 3\n");
    }

    #[test]
    fn live_values_under_proc() {
        let dir = tempfile::tempdir().unwrap();
        let paths = HostPaths::under(dir.path());
        std::fs::create_dir_all(dir.path().join("proc/sys/vm")).unwrap();
        std::fs::write(dir.path().join("proc/sys/vm/swappiness"), "60\n").unwrap();
        assert_eq!(
            read_live(&paths, "vm.swappiness").unwrap().as_deref(),
            Some("60")
        );
        write_live(&paths, "vm.swappiness", "10").unwrap();
        assert_eq!(
            read_live(&paths, "vm.swappiness").unwrap().as_deref(),
            Some("10")
        );
        assert_eq!(read_live(&paths, "vm.nope").unwrap(), None);
        let err = write_live(&paths, "vm.nope", "1").unwrap_err().to_string();
        assert!(
            err.starts_with("the kernel has no parameter vm.nope"),
            "{err}"
        );
    }
}
