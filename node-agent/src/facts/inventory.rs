//! The facts inventory printed by `driftless facts` and available to templates as `facts`.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::HostPaths;

/// What the host is.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Inventory {
    /// Host name (`/etc/hostname`, else the kernel's).
    pub hostname: String,
    /// Operating system, from `/etc/os-release`.
    pub os: Os,
    /// Kernel.
    pub kernel: Kernel,
    /// CPUs.
    pub cpu: Cpu,
    /// Memory, in bytes.
    pub memory: Memory,
    /// Seconds since boot.
    pub uptime_seconds: Option<f64>,
}

/// Operating system facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Os {
    /// `ID` (`debian`).
    pub id: String,
    /// Family: `ID_LIKE`'s first word, else `ID` (`debian` for Ubuntu).
    pub family: String,
    /// `VERSION_ID`.
    pub version: String,
    /// `PRETTY_NAME`.
    pub pretty_name: String,
    /// Every `os-release` field.
    pub release: BTreeMap<String, String>,
}

/// Kernel facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Kernel {
    /// `/proc/sys/kernel/ostype` (`Linux`).
    pub name: String,
    /// `/proc/sys/kernel/osrelease`.
    pub release: String,
    /// `/proc/sys/kernel/version`.
    pub version: String,
}

/// CPU facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Cpu {
    /// Logical CPUs in `/proc/cpuinfo`.
    pub count: usize,
    /// The first `model name`.
    pub model: String,
}

/// Memory facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Memory {
    /// `MemTotal`.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`.
    pub available_bytes: Option<u64>,
    /// `SwapTotal`.
    pub swap_total_bytes: Option<u64>,
}

/// Reads the inventory. Missing files leave their facts empty: a fact that cannot be read is
/// absent, not an error.
pub fn gather(paths: &HostPaths) -> Inventory {
    let read = |path: std::path::PathBuf| {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let release = parse_os_release(&read(paths.host("/etc/os-release")));
    let field = |key: &str| release.get(key).cloned().unwrap_or_default();
    let id = field("ID");
    let family = release
        .get("ID_LIKE")
        .and_then(|like| like.split_whitespace().next())
        .map(str::to_owned)
        .unwrap_or_else(|| id.clone());
    let mut hostname = read(paths.host("/etc/hostname"));
    if hostname.is_empty() {
        hostname = read(paths.proc("sys/kernel/hostname"));
    }
    let meminfo = parse_meminfo(&read(paths.proc("meminfo")));
    let cpuinfo = read(paths.proc("cpuinfo"));
    Inventory {
        hostname,
        os: Os {
            family,
            version: field("VERSION_ID"),
            pretty_name: field("PRETTY_NAME"),
            id,
            release,
        },
        kernel: Kernel {
            name: read(paths.proc("sys/kernel/ostype")),
            release: read(paths.proc("sys/kernel/osrelease")),
            version: read(paths.proc("sys/kernel/version")),
        },
        cpu: Cpu {
            count: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count(),
            model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default(),
        },
        memory: Memory {
            total_bytes: meminfo.get("MemTotal").copied(),
            available_bytes: meminfo.get("MemAvailable").copied(),
            swap_total_bytes: meminfo.get("SwapTotal").copied(),
        },
        uptime_seconds: read(paths.proc("uptime"))
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok()),
    }
}

/// `KEY=value` lines of `os-release(5)`, quotes removed.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_owned(), v.to_owned())
        })
        .collect()
}

/// `/proc/meminfo` in bytes (`kB` values multiplied by 1024).
pub fn parse_meminfo(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(':')?;
            let mut parts = rest.split_whitespace();
            let value: u64 = parts.next()?.parse().ok()?;
            let bytes = match parts.next() {
                Some("kB") => value * 1024,
                _ => value,
            };
            Some((key.to_owned(), bytes))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_from_a_fixture_tree() {
        let root = tempfile::tempdir().unwrap();
        let put = |path: &str, text: &str| {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        put(
            "etc/os-release",
            "PRETTY_NAME=\"Ubuntu 24.04 LTS\"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID=\"24.04\"\n",
        );
        put("etc/hostname", "node-1\n");
        put(
            "proc/meminfo",
            "MemTotal:       16318480 kB\nMemAvailable:    8000000 kB\nHugePages_Total:       0\n",
        );
        put(
            "proc/cpuinfo",
            "processor\t: 0\nmodel name\t: Test CPU\n\nprocessor\t: 1\nmodel name\t: Test CPU\n",
        );
        put("proc/sys/kernel/osrelease", "6.1.0-test\n");
        put("proc/uptime", "123.45 200.00\n");
        let facts = gather(&HostPaths::under(root.path()));
        assert_eq!(facts.hostname, "node-1");
        assert_eq!(facts.os.family, "debian");
        assert_eq!(facts.os.id, "ubuntu");
        assert_eq!(facts.os.pretty_name, "Ubuntu 24.04 LTS");
        assert_eq!(facts.kernel.release, "6.1.0-test");
        assert_eq!(facts.cpu.count, 2);
        assert_eq!(facts.cpu.model, "Test CPU");
        assert_eq!(facts.memory.total_bytes, Some(16318480 * 1024));
        assert_eq!(facts.uptime_seconds, Some(123.45));
    }

    #[test]
    fn missing_files_leave_facts_empty() {
        let root = tempfile::tempdir().unwrap();
        let facts = gather(&HostPaths::under(root.path()));
        assert_eq!(facts, Inventory::default());
    }
}
