//! The collector registry: one module per collector, each with a name, whether it runs by
//! default, and a factory. Families and labels are node_exporter's where it has the same family.
//!
//! Guarantees: a collector that fails reports `node_scrape_collector_success{collector} 0` and
//! its error is logged; the other collectors and the endpoint are unaffected. "No data" (a
//! missing optional file such as `/proc/pressure`) counts as success with no samples.

use std::collections::BTreeSet;
use std::time::Instant;

use driftless_crds::facts_policy::{Collectors, CustomFact};

use crate::host::HostPaths;
use crate::metrics::{encode_families, Family, Kind};

mod kfiles;

pub mod arp;
pub mod bcache;
pub mod bonding;
pub mod btrfs;
pub mod command;
pub mod conntrack;
pub mod cpu;
pub mod diskstats;
pub mod dmi;
pub mod edac;
pub mod entropy;
pub mod fibrechannel;
pub mod file;
pub mod filefd;
pub mod filesystem;
pub mod hwmon;
pub mod infiniband;
pub mod ipvs;
pub mod loadavg;
pub mod mdadm;
pub mod meminfo;
pub mod netclass;
pub mod netdev;
pub mod netstat;
pub mod nfs;
pub mod nfsd;
pub mod nvme;
pub mod os;
pub mod plugin;
pub mod powersupplyclass;
pub mod pressure;
pub mod rapl;
pub mod schedstat;
pub mod selinux;
pub mod sockstat;
pub mod softnet;
pub mod stat;
pub mod tapestats;
pub mod textfile;
pub mod thermal_zone;
pub mod time;
pub mod timex;
pub mod udp_queues;
pub mod uname;
pub mod vmstat;
pub mod watchdog;
pub mod xfs;
pub mod zfs;

/// Why a collector produced nothing.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The data does not exist on this host (not a failure).
    #[error("no data: {0}")]
    NoData(String),
    /// The collector failed.
    #[error("{0}")]
    Failed(String),
    /// The collector's options are invalid.
    #[error("collector {collector}: {problem}")]
    Config {
        /// Collector name.
        collector: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// What a collector's factory gets.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the host is.
    pub paths: HostPaths,
    /// Options of the built-in collectors (FactsPolicy `spec.collectors`).
    pub collectors: Collectors,
    /// Custom facts (FactsPolicy `spec.facts`).
    pub facts: Vec<CustomFact>,
    /// How long command facts are cached (the FactsPolicy `interval`).
    pub interval: std::time::Duration,
    /// Collector options given as flags.
    pub flags: FlagOptions,
}

/// Collector options given as node_exporter's flags, used beside the FactsPolicy's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlagOptions {
    /// `--collector.textfile.directory` (repeatable): read as given, not below the host root,
    /// in addition to the policy's `spec.collectors.textfile.directories`.
    pub textfile_directories: Vec<std::path::PathBuf>,
    /// `--collector.netclass.ignored-devices`: replaces the policy's `netclass.ignoredDevices`.
    pub netclass_ignored_devices: Option<String>,
    /// `--collector.netdev.device-include`: replaces the policy's `netdev.devicesInclude`.
    pub netdev_device_include: Option<String>,
    /// `--collector.netdev.device-exclude`: replaces the policy's `netdev.devicesExclude`.
    pub netdev_device_exclude: Option<String>,
    /// `--collector.filesystem.mount-points-exclude`: replaces the policy's
    /// `filesystem.mountPointsExclude`.
    pub filesystem_mount_points_exclude: Option<String>,
    /// `--collector.diskstats.device-exclude`: replaces the policy's
    /// `diskstats.devicesExclude`.
    pub diskstats_device_exclude: Option<String>,
}

impl Settings {
    /// The settings with the option flags in place of the policy's values they replace.
    pub fn with_flags(&self) -> Settings {
        let mut s = self.clone();
        let f = &self.flags;
        let c = &mut s.collectors;
        if let Some(v) = &f.netclass_ignored_devices {
            c.netclass.ignored_devices = Some(v.clone());
        }
        if let Some(v) = &f.netdev_device_include {
            c.netdev.devices_include = Some(v.clone());
        }
        if let Some(v) = &f.netdev_device_exclude {
            c.netdev.devices_exclude = Some(v.clone());
        }
        if let Some(v) = &f.filesystem_mount_points_exclude {
            c.filesystem.mount_points_exclude = v.clone();
        }
        if let Some(v) = &f.diskstats_device_exclude {
            c.diskstats.devices_exclude = Some(v.clone());
        }
        s
    }
}

impl Settings {
    /// Defaults below a host root.
    pub fn new(paths: HostPaths) -> Self {
        Self {
            paths,
            collectors: Collectors::default(),
            facts: Vec::new(),
            interval: std::time::Duration::from_secs(60),
            flags: FlagOptions::default(),
        }
    }
}

/// What a custom facts collector ran last: when, the families, and the failures.
pub type CachedRun = Option<(Instant, Vec<Family>, Vec<String>)>;

/// The custom facts collectors' cache: `refresh` runs when the last run is older than
/// `interval` (so a scrape does not run every command or plugin again); the families go to
/// `out` and the failures, joined, become the collector's error.
pub fn cached_update(
    cache: &std::sync::Mutex<CachedRun>,
    interval: std::time::Duration,
    out: &mut Vec<Family>,
    refresh: impl FnOnce() -> Result<(Vec<Family>, Vec<String>), CollectError>,
) -> Result<(), CollectError> {
    let mut cache = cache
        .lock()
        .map_err(|_| CollectError::Failed("cache poisoned".into()))?;
    let fresh = cache
        .as_ref()
        .is_some_and(|(at, _, _)| at.elapsed() < interval);
    if !fresh {
        let (families, failed) = refresh()?;
        *cache = Some((Instant::now(), families, failed));
    }
    let Some((_, families, failed)) = cache.as_ref() else {
        return Ok(());
    };
    out.extend(families.iter().cloned());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(CollectError::Failed(failed.join("; ")))
    }
}

/// A collector: appends families on every scrape.
pub trait Collector: Send + Sync {
    /// Reads the host and appends families.
    fn update(&self, out: &mut Vec<Family>) -> Result<(), CollectError>;
}

/// Makes a collector from the settings.
pub type Factory = fn(&Settings) -> Result<Box<dyn Collector>, CollectError>;

/// A registry entry.
pub struct CollectorInfo {
    /// Name, as in `--collector.NAME` and FactsPolicy `spec.collectors`.
    pub name: &'static str,
    /// Whether it runs unless disabled.
    pub default_enabled: bool,
    /// Makes it.
    pub factory: Factory,
}

/// Every collector, in the order they run.
pub const REGISTRY: &[CollectorInfo] = &[
    CollectorInfo {
        name: "arp",
        default_enabled: true,
        factory: arp::new,
    },
    CollectorInfo {
        name: "bcache",
        default_enabled: true,
        factory: bcache::new,
    },
    CollectorInfo {
        name: "bonding",
        default_enabled: true,
        factory: bonding::new,
    },
    CollectorInfo {
        name: "btrfs",
        default_enabled: true,
        factory: btrfs::new,
    },
    CollectorInfo {
        name: "conntrack",
        default_enabled: true,
        factory: conntrack::new,
    },
    CollectorInfo {
        name: "cpu",
        default_enabled: true,
        factory: cpu::new,
    },
    CollectorInfo {
        name: "diskstats",
        default_enabled: true,
        factory: diskstats::new,
    },
    CollectorInfo {
        name: "dmi",
        default_enabled: true,
        factory: dmi::new,
    },
    CollectorInfo {
        name: "edac",
        default_enabled: true,
        factory: edac::new,
    },
    CollectorInfo {
        name: "entropy",
        default_enabled: true,
        factory: entropy::new,
    },
    CollectorInfo {
        name: "fibrechannel",
        default_enabled: true,
        factory: fibrechannel::new,
    },
    CollectorInfo {
        name: "hwmon",
        default_enabled: true,
        factory: hwmon::new,
    },
    CollectorInfo {
        name: "filefd",
        default_enabled: true,
        factory: filefd::new,
    },
    CollectorInfo {
        name: "filesystem",
        default_enabled: true,
        factory: filesystem::new,
    },
    CollectorInfo {
        name: "infiniband",
        default_enabled: true,
        factory: infiniband::new,
    },
    CollectorInfo {
        name: "ipvs",
        default_enabled: true,
        factory: ipvs::new,
    },
    CollectorInfo {
        name: "loadavg",
        default_enabled: true,
        factory: loadavg::new,
    },
    CollectorInfo {
        name: "mdadm",
        default_enabled: true,
        factory: mdadm::new,
    },
    CollectorInfo {
        name: "meminfo",
        default_enabled: true,
        factory: meminfo::new,
    },
    CollectorInfo {
        name: "netclass",
        default_enabled: true,
        factory: netclass::new,
    },
    CollectorInfo {
        name: "netdev",
        default_enabled: true,
        factory: netdev::new,
    },
    CollectorInfo {
        name: "netstat",
        default_enabled: true,
        factory: netstat::new,
    },
    CollectorInfo {
        name: "nfs",
        default_enabled: true,
        factory: nfs::new,
    },
    CollectorInfo {
        name: "nfsd",
        default_enabled: true,
        factory: nfsd::new,
    },
    CollectorInfo {
        name: "nvme",
        default_enabled: true,
        factory: nvme::new,
    },
    CollectorInfo {
        name: "os",
        default_enabled: true,
        factory: os::new,
    },
    CollectorInfo {
        name: "powersupplyclass",
        default_enabled: true,
        factory: powersupplyclass::new,
    },
    CollectorInfo {
        name: "pressure",
        default_enabled: true,
        factory: pressure::new,
    },
    CollectorInfo {
        name: "rapl",
        default_enabled: true,
        factory: rapl::new,
    },
    CollectorInfo {
        name: "schedstat",
        default_enabled: true,
        factory: schedstat::new,
    },
    CollectorInfo {
        name: "selinux",
        default_enabled: true,
        factory: selinux::new,
    },
    CollectorInfo {
        name: "sockstat",
        default_enabled: true,
        factory: sockstat::new,
    },
    CollectorInfo {
        name: "softnet",
        default_enabled: true,
        factory: softnet::new,
    },
    CollectorInfo {
        name: "stat",
        default_enabled: true,
        factory: stat::new,
    },
    CollectorInfo {
        name: "tapestats",
        default_enabled: true,
        factory: tapestats::new,
    },
    CollectorInfo {
        name: "thermal_zone",
        default_enabled: true,
        factory: thermal_zone::new,
    },
    CollectorInfo {
        name: "time",
        default_enabled: true,
        factory: time::new,
    },
    CollectorInfo {
        name: "timex",
        default_enabled: true,
        factory: timex::new,
    },
    CollectorInfo {
        name: "udp_queues",
        default_enabled: true,
        factory: udp_queues::new,
    },
    CollectorInfo {
        name: "uname",
        default_enabled: true,
        factory: uname::new,
    },
    CollectorInfo {
        name: "vmstat",
        default_enabled: true,
        factory: vmstat::new,
    },
    CollectorInfo {
        name: "watchdog",
        default_enabled: true,
        factory: watchdog::new,
    },
    CollectorInfo {
        name: "xfs",
        default_enabled: true,
        factory: xfs::new,
    },
    CollectorInfo {
        name: "zfs",
        default_enabled: true,
        factory: zfs::new,
    },
    // After the others: it leaves out families they export.
    CollectorInfo {
        name: "textfile",
        default_enabled: true,
        factory: textfile::new,
    },
    CollectorInfo {
        name: "command",
        default_enabled: true,
        factory: command::new,
    },
    CollectorInfo {
        name: "file",
        default_enabled: true,
        factory: file::new,
    },
    CollectorInfo {
        name: "plugin",
        default_enabled: true,
        factory: plugin::new,
    },
];

/// Looks a collector up by name.
pub fn info(name: &str) -> Option<&'static CollectorInfo> {
    REGISTRY.iter().find(|c| c.name == name)
}

/// Which collectors run: the policy's choice (`enable` replaces the default set, `disable`
/// removes), then the flags in order (`--collector.X` adds, `--no-collector.X` removes, and
/// `--collector.disable-defaults` starts from nothing). Unknown names are errors.
pub fn select(
    policy: Option<&Collectors>,
    disable_defaults: bool,
    flags: &[(String, bool)],
) -> Result<BTreeSet<&'static str>, CollectError> {
    let mut set: BTreeSet<&'static str> = if disable_defaults {
        BTreeSet::new()
    } else {
        REGISTRY
            .iter()
            .filter(|c| c.default_enabled)
            .map(|c| c.name)
            .collect()
    };
    if let Some(policy) = policy {
        let name = |c: &driftless_crds::facts_policy::CollectorName| -> Result<&'static str, CollectError> {
            let text = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            info(&text).map(|i| i.name).ok_or(CollectError::Config {
                collector: "registry",
                problem: format!("unknown collector {text:?}"),
            })
        };
        if !policy.enable.is_empty() {
            set = policy.enable.iter().map(name).collect::<Result<_, _>>()?;
            // Custom facts are not in the enum; they follow the policy's `facts` list.
            set.insert("command");
            set.insert("file");
            set.insert("plugin");
        }
        for c in &policy.disable {
            set.remove(name(c)?);
        }
    }
    for (flag, on) in flags {
        let Some(entry) = info(flag) else {
            return Err(CollectError::Config {
                collector: "registry",
                problem: format!(
                    "unknown collector {flag:?}; known: {}",
                    REGISTRY
                        .iter()
                        .map(|c| c.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        };
        if *on {
            set.insert(entry.name);
        } else {
            set.remove(entry.name);
        }
    }
    Ok(set)
}

/// The enabled collectors, ready to scrape.
pub struct Scraper {
    collectors: Vec<(&'static str, Box<dyn Collector>)>,
}

impl Scraper {
    /// Builds the named collectors (in registry order).
    pub fn new(
        settings: &Settings,
        enabled: &BTreeSet<&'static str>,
    ) -> Result<Self, CollectError> {
        let settings = &settings.with_flags();
        let mut collectors = Vec::new();
        for entry in REGISTRY.iter().filter(|c| enabled.contains(c.name)) {
            collectors.push((entry.name, (entry.factory)(settings)?));
        }
        Ok(Self { collectors })
    }

    /// Names of the collectors that run.
    pub fn names(&self) -> Vec<&'static str> {
        self.collectors.iter().map(|(n, _)| *n).collect()
    }

    /// Runs every collector and returns their families plus
    /// `node_scrape_collector_duration_seconds` and `node_scrape_collector_success`.
    pub fn scrape(&self) -> Vec<Family> {
        let mut out = Vec::with_capacity(256);
        let mut duration = Family::new(
            "node_scrape_collector_duration_seconds",
            "node_exporter: Duration of a collector scrape.",
            Kind::Gauge,
        );
        let mut success = Family::new(
            "node_scrape_collector_success",
            "node_exporter: Whether a collector succeeded.",
            Kind::Gauge,
        );
        for (name, collector) in &self.collectors {
            let start = Instant::now();
            // A panicking collector is a failed collector, not a failed scrape.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                collector.update(&mut out)
            }))
            .unwrap_or_else(|_| Err(CollectError::Failed("collector panicked".into())));
            let ok = match result {
                Ok(()) => true,
                Err(CollectError::NoData(why)) => {
                    tracing::debug!(collector = name, %why, "collector returned no data");
                    true
                }
                Err(error) => {
                    // What it produced before failing stays, as with node_exporter.
                    tracing::warn!(collector = name, %error, "collector failed");
                    false
                }
            };
            duration.push(
                vec![("collector", (*name).to_owned())],
                start.elapsed().as_secs_f64(),
            );
            success.push(
                vec![("collector", (*name).to_owned())],
                f64::from(u8::from(ok)),
            );
        }
        out.push(duration);
        out.push(success);
        out
    }

    /// Scrapes and writes the exposition.
    pub fn scrape_into(&self, out: &mut String) {
        encode_families(&self.scrape(), out);
    }
}

/// Reads a file; a missing file is "no data".
pub(crate) fn read(path: &std::path::Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            CollectError::NoData(format!("{} not found", path.display()))
        }
        _ => CollectError::Failed(format!("reading {}: {e}", path.display())),
    })
}

/// Compiles an optional regular expression option.
pub(crate) fn regex(
    collector: &'static str,
    pattern: Option<&str>,
) -> Result<Option<regex::Regex>, CollectError> {
    pattern
        .filter(|p| !p.is_empty())
        .map(|p| {
            regex::Regex::new(p).map_err(|e| CollectError::Config {
                collector,
                problem: format!("bad regular expression {p:?}: {e}"),
            })
        })
        .transpose()
}

/// The user clock ticks per second node_exporter assumes (`USER_HZ`).
pub(crate) const USER_HZ: f64 = 100.0;

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::facts_policy::CollectorName;

    #[test]
    fn selection_follows_policy_then_flags() {
        let all = select(None, false, &[]).unwrap();
        assert_eq!(all.len(), REGISTRY.len());
        let policy = Collectors {
            disable: vec![CollectorName::Pressure],
            ..Default::default()
        };
        let set = select(Some(&policy), false, &[("vmstat".into(), false)]).unwrap();
        assert!(!set.contains("pressure") && !set.contains("vmstat") && set.contains("cpu"));
        let only = Collectors {
            enable: vec![CollectorName::Meminfo],
            ..Default::default()
        };
        let set = select(Some(&only), false, &[("pressure".into(), true)]).unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            ["command", "file", "meminfo", "plugin", "pressure"]
        );
        let set = select(None, true, &[("cpu".into(), true)]).unwrap();
        assert_eq!(set.into_iter().collect::<Vec<_>>(), ["cpu"]);
        assert!(select(None, false, &[("nope".into(), true)]).is_err());
    }

    /// Every built-in collector can be named in FactsPolicy `spec.collectors`, by the name of
    /// its `--collector.NAME` flag; only the custom facts collectors follow `spec.facts`.
    #[test]
    fn every_collector_is_nameable_in_the_policy() {
        for entry in REGISTRY {
            let parsed: Result<CollectorName, _> =
                serde_json::from_value(serde_json::Value::String(entry.name.into()));
            match entry.name {
                "command" | "file" | "plugin" => assert!(parsed.is_err(), "{}", entry.name),
                name => {
                    let only = Collectors {
                        enable: vec![parsed.unwrap_or_else(|e| panic!("{name}: {e}"))],
                        ..Default::default()
                    };
                    let set = select(Some(&only), false, &[]).unwrap();
                    assert!(set.contains(name), "{name}");
                }
            }
        }
    }
}
