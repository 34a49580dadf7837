//! Mounts: the `/etc/fstab` entry (edited in place, every other line and comment kept) and
//! the mounted state from the mount table; `mount` / `umount` on the live system only.

use super::{is_live_root, read_optional, require_live_root, BackendError, Cmd};
use crate::host::HostPaths;

/// One fstab entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FstabEntry {
    /// What is mounted (`/dev/sdb1`, `UUID=...`, `server:/export`).
    pub device: String,
    /// Mount point.
    pub path: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount options.
    pub options: String,
    /// Dump field.
    pub dump: u8,
    /// Pass field.
    pub pass: u8,
}

impl FstabEntry {
    /// The entry as an fstab line (spaces escaped as `\040`).
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            escape(&self.device),
            escape(&self.path),
            self.fstype,
            self.options,
            self.dump,
            self.pass
        )
    }
}

/// fstab and mount tables escape space, tab, newline and backslash as octal.
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape`] (any `\NNN` octal escape).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(value) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<FstabEntry> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    let fields: Vec<&str> = trimmed.split_whitespace().collect();
    if fields.len() < 2 {
        return None;
    }
    Some(FstabEntry {
        device: unescape(fields[0]),
        path: unescape(fields[1]),
        fstype: fields.get(2).copied().unwrap_or("auto").to_owned(),
        options: fields.get(3).copied().unwrap_or("defaults").to_owned(),
        dump: fields.get(4).and_then(|f| f.parse().ok()).unwrap_or(0),
        pass: fields.get(5).and_then(|f| f.parse().ok()).unwrap_or(0),
    })
}

fn same_path(a: &str, b: &str) -> bool {
    let trim = |p: &str| -> String {
        let t = p.trim_end_matches('/');
        if t.is_empty() {
            "/".into()
        } else {
            t.into()
        }
    };
    trim(a) == trim(b)
}

/// The fstab entry for a mount point (the last one, as `mount` uses it).
pub fn find_entry(fstab: &str, path: &str) -> Option<FstabEntry> {
    fstab
        .lines()
        .filter_map(parse_line)
        .rfind(|e| same_path(&e.path, path))
}

/// The fstab with `entry` for its mount point: the first existing line for that mount point
/// is replaced, later duplicates dropped, or the line appended. Comments and other lines stay.
pub fn set_entry(fstab: &str, entry: &FstabEntry) -> String {
    let mut out = Vec::new();
    let mut placed = false;
    for line in fstab.lines() {
        if parse_line(line).is_some_and(|e| same_path(&e.path, &entry.path)) {
            if !placed {
                out.push(entry.line());
                placed = true;
            }
        } else {
            out.push(line.to_owned());
        }
    }
    if !placed {
        out.push(entry.line());
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The fstab without any entry for `path`.
pub fn remove_entry(fstab: &str, path: &str) -> String {
    let kept: Vec<&str> = fstab
        .lines()
        .filter(|line| !parse_line(line).is_some_and(|e| same_path(&e.path, path)))
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    let mut text = kept.join("\n");
    text.push('\n');
    text
}

/// Whether a mount table (`/proc/self/mountinfo` or `/proc/mounts` format) has `path` mounted.
pub fn is_mounted(table: &str, path: &str) -> bool {
    table.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mount_point = if line.contains(" - ") {
            fields.get(4)
        } else {
            fields.get(1)
        };
        mount_point.is_some_and(|m| same_path(&unescape(m), path))
    })
}

/// Reads the host's mount table: the agent's own on `/`, PID 1's below another root (the
/// host's mount namespace when the host's procfs is mounted there), `PROC/mounts` otherwise.
pub fn mount_table(paths: &HostPaths) -> Result<String, BackendError> {
    let candidates = if is_live_root(paths) {
        vec![paths.proc("self/mountinfo"), paths.proc("mounts")]
    } else {
        vec![paths.proc("1/mountinfo"), paths.proc("mounts")]
    };
    for path in &candidates {
        if let Some(text) = read_optional(path)? {
            return Ok(text);
        }
    }
    Err(BackendError::Invalid(format!(
        "no mount table at {}: cannot tell what is mounted",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    )))
}

/// Mounts (from fstab) or unmounts `path` on the live system.
pub fn set_mounted(paths: &HostPaths, path: &str, mounted: bool) -> Result<(), BackendError> {
    let verb = if mounted { "mounting" } else { "unmounting" };
    require_live_root(paths, &format!("{verb} {path}"))?;
    let cmd = if mounted {
        Cmd::new("mount").arg(path)
    } else {
        Cmd::new("umount").arg(path)
    };
    cmd.run().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FSTAB: &str = "# /etc/fstab: static file system information.\n#\nUUID=abcd / ext4 errors=remount-ro 0 1\n\n# data disk\n/dev/sdb1 /srv/data xfs noatime 0 2\ntmpfs /tmp tmpfs defaults 0 0\n";

    fn nfs() -> FstabEntry {
        FstabEntry {
            device: "nas:/export/media files".into(),
            path: "/mnt/media files".into(),
            fstype: "nfs".into(),
            options: "ro,soft".into(),
            dump: 0,
            pass: 0,
        }
    }

    #[test]
    fn escapes_round_trip() {
        assert_eq!(escape("/mnt/media files"), "/mnt/media\\040files");
        assert_eq!(unescape("/mnt/media\\040files"), "/mnt/media files");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\04"), "end\\04");
        assert_eq!(unescape(&escape("tab\there\\x")), "tab\there\\x");
    }

    #[test]
    fn finds_and_replaces_entries_keeping_comments() {
        let found = find_entry(FSTAB, "/srv/data/").unwrap();
        assert_eq!(found.device, "/dev/sdb1");
        assert_eq!(found.options, "noatime");
        assert_eq!(found.pass, 2);
        let mut changed = found.clone();
        changed.options = "noatime,nodev".into();
        let edited = set_entry(FSTAB, &changed);
        assert_eq!(
            edited,
            FSTAB.replace(
                "/dev/sdb1 /srv/data xfs noatime 0 2",
                "/dev/sdb1 /srv/data xfs noatime,nodev 0 2"
            )
        );
        let added = set_entry(FSTAB, &nfs());
        assert!(added.starts_with(FSTAB));
        assert!(
            added.ends_with("nas:/export/media\\040files /mnt/media\\040files nfs ro,soft 0 0\n")
        );
        assert_eq!(find_entry(&added, "/mnt/media files"), Some(nfs()));
        assert_eq!(set_entry(&added, &nfs()), added);
        assert_eq!(remove_entry(&added, "/mnt/media files"), FSTAB);
        assert_eq!(remove_entry(FSTAB, "/nowhere"), FSTAB);
    }

    #[test]
    fn reads_both_mount_table_formats() {
        let mountinfo = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n40 22 0:35 / /mnt/media\\040files rw - nfs nas:/x rw\n";
        assert!(is_mounted(mountinfo, "/"));
        assert!(is_mounted(mountinfo, "/mnt/media files"));
        assert!(!is_mounted(mountinfo, "/mnt"));
        let mounts = "/dev/sda1 / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n";
        assert!(is_mounted(mounts, "/run"));
        assert!(!is_mounted(mounts, "/srv"));
    }
}
