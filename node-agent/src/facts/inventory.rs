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
    /// Network interfaces and their addresses.
    pub network: Vec<Nic>,
    /// Block devices (whole disks; loop and ram devices left out).
    pub disks: Vec<Disk>,
    /// Mounted filesystems (node_exporter's default excludes applied).
    pub filesystems: Vec<Filesystem>,
    /// Package manager whose database was read (`dpkg`, `apk`, `rpm`), empty if none.
    pub package_manager: String,
    /// Installed packages, sorted by name.
    pub packages: Vec<Package>,
}

/// A network interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Nic {
    /// Name (`eth0`).
    pub name: String,
    /// MAC address.
    pub mac: String,
    /// MTU.
    pub mtu: Option<u32>,
    /// `operstate` (`up`, `down`, `unknown`).
    pub state: String,
    /// Addresses in CIDR notation (IPv4 from `/proc/net/fib_trie`, IPv6 from
    /// `/proc/net/if_inet6`).
    pub addresses: Vec<String>,
}

/// A block device.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Disk {
    /// Kernel name (`sda`, `nvme0n1`).
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Whether it is a spinning disk.
    pub rotational: bool,
    /// Model, when the device reports one.
    pub model: String,
}

/// A mounted filesystem.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Filesystem {
    /// Device.
    pub device: String,
    /// Mount point.
    pub mount_point: String,
    /// Type.
    pub fs_type: String,
    /// Size in bytes (absent when it cannot be stat'ed).
    pub size_bytes: Option<u64>,
    /// Bytes available to unprivileged users.
    pub avail_bytes: Option<u64>,
}

/// An installed package.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Package {
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub arch: String,
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

fn read_trimmed(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Only the host name, OS and kernel: a few small files, for what the agent logs when it starts.
pub fn identity(paths: &HostPaths) -> Inventory {
    let read = read_trimmed;
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
        ..Inventory::default()
    }
}

/// Reads the inventory. Missing files leave their facts empty: a fact that cannot be read is
/// absent, not an error.
pub fn gather(paths: &HostPaths) -> Inventory {
    let read = read_trimmed;
    let Inventory {
        hostname,
        os,
        kernel,
        ..
    } = identity(paths);
    let meminfo = parse_meminfo(&read(paths.proc("meminfo")));
    let cpuinfo = read(paths.proc("cpuinfo"));
    Inventory {
        hostname,
        os,
        kernel,
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
        network: network(paths),
        disks: disks(paths),
        filesystems: filesystems(paths),
        package_manager: String::new(),
        packages: Vec::new(),
    }
    .with_packages(paths)
}

impl Inventory {
    fn with_packages(mut self, paths: &HostPaths) -> Self {
        if let Some((manager, packages)) = packages(paths) {
            self.package_manager = manager.to_owned();
            self.packages = packages;
        }
        self
    }
}

/// Interfaces from sysfs with their addresses.
fn network(paths: &HostPaths) -> Vec<Nic> {
    let class = paths.sys.join("class/net");
    let mut names: Vec<String> = std::fs::read_dir(&class)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        // No sysfs: the interface names from /proc/net/dev.
        names = std::fs::read_to_string(paths.proc("net/dev"))
            .unwrap_or_default()
            .lines()
            .skip(2)
            .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_owned()))
            .collect();
    }
    names.sort();
    let v4 = ipv4_addresses(
        &std::fs::read_to_string(paths.proc("net/fib_trie")).unwrap_or_default(),
        &std::fs::read_to_string(paths.proc("net/route")).unwrap_or_default(),
    );
    let v6 =
        ipv6_addresses(&std::fs::read_to_string(paths.proc("net/if_inet6")).unwrap_or_default());
    names
        .into_iter()
        .map(|name| {
            let attr = |a: &str| {
                std::fs::read_to_string(class.join(&name).join(a))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_default()
            };
            let addresses = v4
                .iter()
                .chain(v6.iter())
                .filter(|(iface, _)| *iface == name)
                .map(|(_, a)| a.clone())
                .collect();
            Nic {
                mac: attr("address"),
                mtu: attr("mtu").parse().ok(),
                state: attr("operstate"),
                addresses,
                name,
            }
        })
        .collect()
}

/// `(interface, address/prefix)` for the local IPv4 addresses in `fib_trie`, each assigned to
/// the interface of the most specific route in `/proc/net/route` that contains it.
pub fn ipv4_addresses(fib_trie: &str, route: &str) -> Vec<(String, String)> {
    // (iface, destination, mask), host byte order.
    let routes: Vec<(String, u32, u32)> = route
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
            Some((f.first()?.to_string(), hex(f.get(1)?)?, hex(f.get(7)?)?))
        })
        .collect();
    let mut locals = std::collections::BTreeSet::new();
    let mut last: Option<&str> = None;
    for line in fib_trie.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if t.starts_with("/32 host LOCAL") {
            if let Some(addr) = last {
                locals.insert(addr.to_owned());
            }
        } else if t.split('.').count() == 4 && !t.contains(' ') {
            last = Some(t);
        } else if let Some((addr, _)) = t.split_once(' ') {
            if addr.split('.').count() == 4 {
                last = Some(addr);
            }
        }
    }
    let mut out = Vec::new();
    for addr in locals {
        let Ok(ip) = addr.parse::<std::net::Ipv4Addr>() else {
            continue;
        };
        let ip = u32::from(ip);
        if ip >> 24 == 127 {
            out.push(("lo".to_owned(), format!("{addr}/8")));
            continue;
        }
        let best = routes
            .iter()
            .filter(|(_, dest, mask)| *mask != 0 && ip & mask == *dest)
            .max_by_key(|(_, _, mask)| mask.count_ones());
        if let Some((iface, _, mask)) = best {
            out.push((iface.clone(), format!("{addr}/{}", mask.count_ones())));
        }
    }
    out
}

/// `(interface, address/prefix)` from `/proc/net/if_inet6`.
pub fn ipv6_addresses(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = f.first()?;
            if hex.len() != 32 {
                return None;
            }
            let mut bytes = [0u8; 16];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
            }
            let prefix = u8::from_str_radix(f.get(2)?, 16).ok()?;
            Some((
                f.get(5)?.to_string(),
                format!("{}/{prefix}", std::net::Ipv6Addr::from(bytes)),
            ))
        })
        .collect()
}

fn disks(paths: &HostPaths) -> Vec<Disk> {
    let block = paths.sys.join("block");
    let mut out: Vec<Disk> = std::fs::read_dir(&block)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                .filter(|n| !(n.starts_with("loop") || n.starts_with("ram")))
                .map(|name| {
                    let attr = |a: &str| {
                        std::fs::read_to_string(block.join(&name).join(a))
                            .map(|s| s.trim().to_owned())
                            .unwrap_or_default()
                    };
                    Disk {
                        size_bytes: attr("size").parse::<u64>().unwrap_or(0) * 512,
                        rotational: attr("queue/rotational") == "1",
                        model: attr("device/model"),
                        name,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn filesystems(paths: &HostPaths) -> Vec<Filesystem> {
    use crate::facts::collectors::filesystem::parse_mounts;
    let defaults = driftless_crds::facts_policy::FilesystemOptions::default();
    let (Ok(mp), Ok(fs)) = (
        regex::Regex::new(&defaults.mount_points_exclude),
        regex::Regex::new(&defaults.fs_types_exclude),
    ) else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(paths.proc("1/mounts"))
        .or_else(|_| std::fs::read_to_string(paths.proc("mounts")))
        .unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    parse_mounts(&text)
        .into_iter()
        .filter(|m| !mp.is_match(&m.mount_point) && !fs.is_match(&m.fs_type))
        .filter(|m| seen.insert(m.mount_point.clone()))
        .map(|m| {
            let stat = rustix::fs::statvfs(paths.host(&m.mount_point)).ok();
            Filesystem {
                size_bytes: stat.as_ref().map(|s| s.f_blocks * s.f_frsize),
                avail_bytes: stat.as_ref().map(|s| s.f_bavail * s.f_frsize),
                device: m.device,
                mount_point: m.mount_point,
                fs_type: m.fs_type,
            }
        })
        .collect()
}

/// Installed packages from the dpkg status file, the apk database, or `rpm -qa --root`.
fn packages(paths: &HostPaths) -> Option<(&'static str, Vec<Package>)> {
    if let Ok(text) = std::fs::read_to_string(paths.host("/var/lib/dpkg/status")) {
        return Some(("dpkg", parse_dpkg_status(&text)));
    }
    if let Ok(text) = std::fs::read_to_string(paths.host("/lib/apk/db/installed")) {
        return Some(("apk", parse_apk_installed(&text)));
    }
    let rpmdb = ["/var/lib/rpm", "/usr/lib/sysimage/rpm"]
        .iter()
        .any(|d| paths.host(d).is_dir());
    if rpmdb {
        let out = std::process::Command::new("rpm")
            .arg("--root")
            .arg(&paths.root)
            .args([
                "-qa",
                "--qf",
                "%{NAME}\t%{EPOCHNUM}:%{VERSION}-%{RELEASE}\t%{ARCH}\n",
            ])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut list: Vec<Package> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\t');
                let name = f.next()?.to_owned();
                let version = f.next()?.trim_start_matches("0:").to_owned();
                Some(Package {
                    name,
                    version,
                    arch: f.next().unwrap_or("").to_owned(),
                })
            })
            .collect();
        list.sort();
        return Some(("rpm", list));
    }
    None
}

/// Installed packages of a dpkg status file (`Status: install ok installed` only).
pub fn parse_dpkg_status(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = Package::default();
        let mut installed = false;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                p.name = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Version: ") {
                p.version = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Architecture: ") {
                p.arch = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("Status: ") {
                installed = v.trim().ends_with(" installed");
            }
        }
        if installed && !p.name.is_empty() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Installed packages of an apk database (`P:`, `V:`, `A:` lines).
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut p = Package::default();
        for line in stanza.lines() {
            match line.split_once(':') {
                Some(("P", v)) => p.name = v.to_owned(),
                Some(("V", v)) => p.version = v.to_owned(),
                Some(("A", v)) => p.arch = v.to_owned(),
                _ => {}
            }
        }
        if !p.name.is_empty() {
            out.push(p);
        }
    }
    out.sort();
    out
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
    fn packages_from_dpkg_and_apk() {
        let dpkg = "Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.15-2+b2\n\n\
                    Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                    Package: adduser\nStatus: install ok installed\nArchitecture: all\nVersion: 3.134\n";
        let p = parse_dpkg_status(dpkg);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "adduser");
        assert_eq!(p[1].version, "5.2.15-2+b2");
        let apk = "C:Q1abc\nP:musl\nV:1.2.4-r2\nA:x86_64\n\nP:busybox\nV:1.36.1-r5\nA:x86_64\n";
        let p = parse_apk_installed(apk);
        assert_eq!(p[0].name, "busybox");
        assert_eq!(p[1].version, "1.2.4-r2");
    }

    #[test]
    fn addresses_from_procfs() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n\
                    +-- 192.168.0.0/24 2 0 2\n        |-- 192.168.0.17\n           /32 host LOCAL\n\
                    Local:\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert_eq!(
            ipv4_addresses(trie, route),
            [
                ("lo".to_owned(), "127.0.0.1/8".to_owned()),
                ("eth0".to_owned(), "192.168.0.17/24".to_owned())
            ]
        );
        let v6 = "fe800000000000000000000000000001 02 40 20 80     eth0\n";
        assert_eq!(
            ipv6_addresses(v6),
            [("eth0".to_owned(), "fe80::1/64".to_owned())]
        );
    }

    #[test]
    fn missing_files_leave_facts_empty() {
        let root = tempfile::tempdir().unwrap();
        let facts = gather(&HostPaths::under(root.path()));
        assert_eq!(facts, Inventory::default());
    }
}
