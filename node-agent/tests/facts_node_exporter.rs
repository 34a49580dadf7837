//! Side by side with Debian's `prometheus-node-exporter` on this host: for every family both
//! expose, the type and label names are the same, and stable values agree (memory size,
//! filesystem sizes, CPU counters within a scrape's drift). Also checks the agent's whole
//! `/metrics` with promtool, gzip, and concurrent scrapes.
//!
//! Needs `.ci/tools/facts.sh` (node_exporter and promtool).
#![allow(clippy::unwrap_used)]

mod process_support;

use process_support::{free_port, promtool_check, Killed};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";

/// The collectors both sides run (node_exporter's `cpufreq` is part of our `cpu`).
const COLLECTORS: &[&str] = &[
    "cpu",
    "cpufreq",
    "meminfo",
    "loadavg",
    "filesystem",
    "diskstats",
    "netdev",
    "stat",
    "vmstat",
    "pressure",
    "uname",
    "os",
    "time",
    "filefd",
    "sockstat",
    "bcache",
    "bonding",
    "btrfs",
    "edac",
    "fibrechannel",
    "infiniband",
    "ipvs",
    "mdadm",
    "nfs",
    "nfsd",
    "nvme",
    "tapestats",
    "xfs",
    "zfs",
    "netstat",
    "entropy",
    "conntrack",
    "arp",
    "softnet",
    "schedstat",
    "udp_queues",
    "thermal_zone",
    "netclass",
    "dmi",
    "textfile",
    "timex",
    "hwmon",
    "rapl",
    "selinux",
    "powersupplyclass",
];

/// The fixture directory of good and malformed `*.prom` files both sides read.
fn textfile_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/facts/textfile/var/lib/node-exporter")
}

/// node_exporter families we do not produce, and why.
const NOT_CLAIMED: &[&str] = &[
    // node_exporter's own build, not the host's.
    "node_exporter_build_info",
];

/// Our exposition without the labels node_exporter added after Debian's 1.5: `rotational` of
/// `node_disk_info` (1.9). Label names are sorted, so it is always followed by `serial`.
fn without_newer_labels(text: &str) -> String {
    text.lines()
        .map(|line| {
            if line.starts_with("node_disk_info{") {
                line.replace("rotational=\"0\",", "")
                    .replace("rotational=\"1\",", "")
            } else {
                line.to_owned()
            }
        })
        .fold(String::new(), |mut out, line| {
            out.push_str(&line);
            out.push('\n');
            out
        })
}

/// GET with optional extra header; returns (status line + headers, body bytes).
fn get(port: u16, path: &str, header: &str) -> Option<(String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Some((head, body))
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

fn wait_for(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if get(port, "/metrics", "").is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing answered on port {port}");
}

#[derive(Default, Debug)]
struct Exposition {
    types: BTreeMap<String, String>,
    helps: BTreeMap<String, String>,
    /// family → label-name sets seen.
    labels: BTreeMap<String, BTreeSet<Vec<String>>>,
    /// series (`name{labels}`) → value.
    values: BTreeMap<String, f64>,
}

fn parse(text: &str) -> Exposition {
    let mut e = Exposition::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            e.helps.insert(name.into(), help.into());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            e.types.insert(name.into(), kind.into());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let name = series.split('{').next().unwrap().to_owned();
        let mut names = Vec::new();
        if let Some(labels) = series.split_once('{').map(|(_, l)| l.trim_end_matches('}')) {
            // Label names: text before each `="`, at the start or after `",`.
            let mut rest = labels;
            while let Some((label, after)) = rest.split_once("=\"") {
                names.push(label.trim_start_matches(',').to_owned());
                // Skip the value, honouring escapes.
                let mut chars = after.char_indices();
                let mut end = after.len();
                while let Some((i, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        end = i + 1;
                        break;
                    }
                }
                rest = &after[end..];
            }
        }
        names.sort();
        e.labels.entry(name).or_default().insert(names);
        e.values.insert(series.to_owned(), value.parse().unwrap());
    }
    e
}

fn start_node_exporter() -> (Killed, u16) {
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing; run .ci/tools/facts.sh"
    );
    let port = free_port();
    let mut cmd = Command::new(NODE_EXPORTER);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--collector.disable-defaults")
        .arg("--web.disable-exporter-metrics")
        .arg(format!(
            "--collector.textfile.directory={}",
            textfile_dir().display()
        ));
    for c in COLLECTORS {
        cmd.arg(format!("--collector.{c}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_for(port);
    (child, port)
}

fn start_agent() -> (Killed, u16, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["agent", "--config"])
        .arg(config.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--collector.textfile.directory")
        .arg(textfile_dir())
        .env_remove("DRIFTLESS_ROOT")
        .env("DRIFTLESS_ENV_FILE", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_for(port);
    (child, port, config)
}

#[test]
fn families_types_labels_and_values_match_node_exporter() {
    let (_ne, ne_port) = start_node_exporter();
    let (_agent, port, _config) = start_agent();
    let theirs_text = String::from_utf8(get(ne_port, "/metrics", "").unwrap().1).unwrap();
    let ours_text = String::from_utf8(get(port, "/metrics", "").unwrap().1).unwrap();
    assert!(ours_text.contains("node_disk_info{") && ours_text.contains("rotational=\""));
    let theirs = parse(&theirs_text);
    let ours = parse(&without_newer_labels(&ours_text));

    let mut compared = 0;
    for (family, kind) in &theirs.types {
        if !family.starts_with("node_")
            || NOT_CLAIMED.contains(&family.as_str())
            || !theirs.labels.contains_key(family)
        {
            continue;
        }
        let our_kind = ours.types.get(family);
        assert_eq!(
            our_kind,
            Some(kind),
            "{family}: type differs or family missing"
        );
        assert_eq!(
            ours.labels.get(family),
            theirs.labels.get(family),
            "{family}: label names differ"
        );
        compared += 1;
    }
    assert!(compared > 100, "only {compared} families compared");

    let value = |e: &Exposition, series: &str| {
        *e.values
            .get(series)
            .unwrap_or_else(|| panic!("{series} missing"))
    };
    assert_eq!(
        value(&ours, "node_memory_MemTotal_bytes"),
        value(&theirs, "node_memory_MemTotal_bytes")
    );
    assert_eq!(
        value(&ours, "node_filefd_maximum"),
        value(&theirs, "node_filefd_maximum")
    );
    assert!(
        (value(&ours, "node_boot_time_seconds") - value(&theirs, "node_boot_time_seconds")).abs()
            <= 1.0
    );
    let mut filesystems = 0;
    for (series, v) in &theirs.values {
        if series.starts_with("node_filesystem_size_bytes{")
            || series.starts_with("node_filesystem_files{")
            || series.starts_with("node_filesystem_readonly{")
        {
            assert_eq!(ours.values.get(series), Some(v), "{series}");
            filesystems += 1;
        }
        if series.starts_with("node_cpu_seconds_total{") {
            let ours = value(&ours, series);
            // Both scrapes ran within a second: a CPU cannot have spent more than ~1 s more.
            assert!((ours - v).abs() <= 2.0, "{series}: ours {ours}, theirs {v}");
        }
        if series.starts_with("node_uname_info{")
            || series.starts_with("node_os_info{")
            || series.starts_with("node_time_clocksource_")
            || series.starts_with("node_disk_info{")
            || series.starts_with("node_network_receive_bytes_total{")
            || series.starts_with("node_network_receive_nohandler_total{")
            || series.starts_with("node_cpu_scaling_frequency_hertz{")
            || series.starts_with("node_cpu_frequency_max_hertz{")
            || series.starts_with("node_disk_filesystem_info{")
            || series.starts_with("node_network_info{")
            || series.starts_with("node_network_up{")
            || series.starts_with("node_network_mtu_bytes{")
            || series.starts_with("node_timex_")
            || series.starts_with("node_selinux_")
        {
            assert!(
                ours.values.contains_key(series),
                "{series} missing from ours"
            );
        }
    }
    assert!(filesystems > 0, "no filesystems compared");
    // The clock discipline does not move between two scrapes a moment apart.
    for series in [
        "node_timex_tick_seconds",
        "node_timex_sync_status",
        "node_timex_loop_time_constant",
        "node_timex_tai_offset_seconds",
    ] {
        assert_eq!(
            ours.values.get(series),
            theirs.values.get(series),
            "{series}"
        );
    }
}

/// The synthetic edge tree (`tests/fixtures/facts/edge`): cpufreq files for two CPUs and a udev
/// database for three disks, data this host may not have. node_exporter reads the same tree
/// (`--path.procfs`, `--path.sysfs`, `--path.udev.data`); every series of the compared families
/// must be there on both sides with the same value.
#[test]
fn synthetic_tree_cpufreq_and_udev_match_node_exporter() {
    let edge = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts/edge");
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing; run .ci/tools/facts.sh"
    );
    let port = free_port();
    let child = Command::new(NODE_EXPORTER)
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--path.procfs={}", edge.join("proc").display()))
        .arg(format!("--path.sysfs={}", edge.join("sys").display()))
        .arg(format!(
            "--path.udev.data={}",
            edge.join("run/udev/data").display()
        ))
        .args([
            "--collector.disable-defaults",
            "--web.disable-exporter-metrics",
            "--collector.cpufreq",
            "--collector.diskstats",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ne = Killed(child);
    wait_for(port);
    let theirs_text = String::from_utf8(get(port, "/metrics", "").unwrap().1).unwrap();
    assert!(
        theirs_text.contains("node_scrape_collector_success{collector=\"cpufreq\"} 1"),
        "node_exporter could not read the fixture's cpufreq files:\n{theirs_text}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "facts",
            "--format",
            "prometheus",
            "--collector.disable-defaults",
            "--collector.cpu",
            "--collector.diskstats",
            "--root",
        ])
        .arg(&edge)
        .env_remove("DRIFTLESS_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success());
    let ours = parse(&without_newer_labels(
        &String::from_utf8(out.stdout).unwrap(),
    ));
    let theirs = parse(&theirs_text);
    let compared_families = [
        "node_cpu_frequency_hertz",
        "node_cpu_frequency_max_hertz",
        "node_cpu_frequency_min_hertz",
        "node_cpu_scaling_frequency_hertz",
        "node_cpu_scaling_frequency_max_hertz",
        "node_cpu_scaling_frequency_min_hertz",
        "node_disk_info",
        "node_disk_filesystem_info",
        "node_disk_device_mapper_info",
        "node_disk_ata_rotation_rate_rpm",
        "node_disk_ata_write_cache",
        "node_disk_ata_write_cache_enabled",
        "node_disk_reads_completed_total",
        "node_disk_read_bytes_total",
        "node_disk_io_time_weighted_seconds_total",
    ];
    for family in compared_families {
        assert_eq!(
            ours.types.get(family),
            theirs.types.get(family),
            "{family}: type differs or family missing"
        );
        assert!(theirs.types.contains_key(family), "{family}: not in theirs");
        assert_eq!(
            ours.labels.get(family),
            theirs.labels.get(family),
            "{family}: label names differ"
        );
        let series = |e: &Exposition| -> BTreeMap<String, f64> {
            e.values
                .iter()
                .filter(|(s, _)| s.split('{').next() == Some(family))
                .map(|(s, v)| (s.clone(), *v))
                .collect()
        };
        assert_eq!(series(&ours), series(&theirs), "{family}: series differ");
    }
    // Not in node_exporter 1.5 (added in later releases): the governors.
    assert_eq!(
        ours.values
            .get("node_cpu_scaling_governor{cpu=\"0\",governor=\"powersave\"}"),
        Some(&1.0)
    );
}

#[test]
fn agent_metrics_pass_promtool_gzip_and_concurrent_scrapes() {
    let (_agent, port, _config) = start_agent();
    let (head, body) = get(port, "/metrics", "").unwrap();
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains("driftless_build_info{version="));
    assert!(text.contains("node_scrape_collector_success{collector=\"cpu\"} 1\n"));
    promtool_check(&text);

    let (head, body) = get(port, "/metrics", "Accept-Encoding: gzip\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert!(unzipped.contains("node_memory_MemTotal_bytes"));
    promtool_check(&unzipped);

    // Eight scrapes at once all get a complete exposition.
    let handles: Vec<_> = (0..8)
        .map(|_| std::thread::spawn(move || get(port, "/metrics", "").unwrap().1))
        .collect();
    for h in handles {
        let body = String::from_utf8(h.join().unwrap()).unwrap();
        assert!(body.contains("node_load1 ") && body.contains("driftless_config_reloads_total"));
    }
}

/// The collectors of node_exporter's storage, fabric and RPC statistics.
const STORAGE_COLLECTORS: &[&str] = &[
    "bcache",
    "bonding",
    "btrfs",
    "edac",
    "fibrechannel",
    "infiniband",
    "ipvs",
    "mdadm",
    "nfs",
    "nfsd",
    "nvme",
    "tapestats",
    "xfs",
    "zfs",
];

/// Runs node_exporter (those collectors only) and the agent's one-shot scrape on a fixture tree.
fn both_on_tree(tree: &std::path::Path) -> (String, String) {
    both_on_tree_with(tree, STORAGE_COLLECTORS)
}

/// Runs node_exporter and the agent's one-shot scrape, both with only `collectors`, on a tree.
fn both_on_tree_with(tree: &std::path::Path, collectors: &[&str]) -> (String, String) {
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing; run .ci/tools/facts.sh"
    );
    let port = free_port();
    let mut cmd = Command::new(NODE_EXPORTER);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--path.procfs={}", tree.join("proc").display()))
        .arg(format!("--path.sysfs={}", tree.join("sys").display()))
        .arg(format!("--path.rootfs={}", tree.display()))
        .args([
            "--collector.disable-defaults",
            "--web.disable-exporter-metrics",
        ]);
    let mut ours = Command::new(env!("CARGO_BIN_EXE_driftless"));
    ours.args([
        "facts",
        "--format",
        "prometheus",
        "--collector.disable-defaults",
    ]);
    for c in collectors {
        cmd.arg(format!("--collector.{c}"));
        ours.arg(format!("--collector.{c}"));
    }
    let _ne = Killed(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port);
    let theirs = String::from_utf8(get(port, "/metrics", "").unwrap().1).unwrap();
    let out = ours
        .arg("--root")
        .arg(tree)
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ROOT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), theirs)
}

/// Every `node_*` family node_exporter exports from the tree: same help, type, label names, and
/// exactly the same series with the same values. Returns how many series were compared.
fn assert_same_series(ours: &Exposition, theirs: &Exposition) -> usize {
    let mut compared = 0;
    for (family, kind) in &theirs.types {
        if !family.starts_with("node_")
            || family.starts_with("node_scrape_collector_")
            || NOT_CLAIMED.contains(&family.as_str())
        {
            continue;
        }
        assert_eq!(
            ours.types.get(family),
            Some(kind),
            "{family}: type differs or family missing"
        );
        assert_eq!(
            ours.helps.get(family),
            theirs.helps.get(family),
            "{family}: help differs"
        );
        assert_eq!(
            ours.labels.get(family),
            theirs.labels.get(family),
            "{family}: label names differ"
        );
        let series = |e: &Exposition| -> BTreeMap<String, f64> {
            e.values
                .iter()
                .filter(|(s, _)| s.split('{').next() == Some(family.as_str()))
                .map(|(s, v)| (s.clone(), *v))
                .collect()
        };
        let (a, b) = (series(ours), series(theirs));
        assert_eq!(a, b, "{family}: series differ");
        compared += b.len();
    }
    compared
}

fn success(e: &Exposition, collector: &str) -> f64 {
    let series = format!("node_scrape_collector_success{{collector=\"{collector}\"}}");
    *e.values
        .get(&series)
        .unwrap_or_else(|| panic!("{series} missing"))
}

/// The synthetic storage tree (`tests/fixtures/facts/storage`, written by `make_storage.py`):
/// bcache, bonding, btrfs, EDAC, Fibre Channel, InfiniBand, IPVS, md, NFS client and server,
/// NVMe, tape, XFS and ZFS data this host does not have. node_exporter 1.5 reads the same tree;
/// every family it exports must be ours too, series for series, value for value.
#[test]
fn synthetic_storage_tree_matches_node_exporter() {
    let tree =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts/storage");
    let (ours_text, theirs_text) = both_on_tree(&tree);
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    for c in STORAGE_COLLECTORS {
        assert_eq!(
            success(&theirs, c),
            1.0,
            "node_exporter's {c} failed on the fixture:\n{theirs_text}"
        );
        assert_eq!(
            success(&ours, c),
            1.0,
            "our {c} failed on the fixture:\n{ours_text}"
        );
    }
    let compared = assert_same_series(&ours, &theirs);
    assert!(compared > 600, "only {compared} series compared");
    // Nothing of ours that node_exporter does not have.
    for family in ours.types.keys() {
        assert!(theirs.types.contains_key(family), "{family}: only ours");
    }
}

/// The edge tree (`tests/fixtures/facts/storage-edge`): missing and unreadable files, values
/// that do not parse, odd names. Where node_exporter exports anything, ours is the same; where a
/// collector fails or finds nothing, both say so.
#[test]
fn synthetic_storage_edge_tree_matches_node_exporter() {
    let tree =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts/storage-edge");
    let (ours_text, theirs_text) = both_on_tree(&tree);
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    let compared = assert_same_series(&ours, &theirs);
    assert!(compared > 30, "only {compared} series compared");
    // (collector, ours, node_exporter's): "no data" is success for us and 0 for node_exporter.
    let expected = [
        ("bcache", 0.0, 0.0),
        ("bonding", 1.0, 0.0),
        ("btrfs", 1.0, 1.0),
        ("edac", 0.0, 0.0),
        ("fibrechannel", 1.0, 0.0),
        ("infiniband", 1.0, 1.0),
        ("ipvs", 0.0, 0.0),
        ("mdadm", 0.0, 0.0),
        // Lines of newer kernels: skipped by us, fatal for node_exporter 1.5.
        ("nfs", 1.0, 0.0),
        ("nfsd", 1.0, 0.0),
        ("nvme", 1.0, 0.0),
        ("tapestats", 1.0, 1.0),
        ("xfs", 0.0, 0.0),
        ("zfs", 1.0, 1.0),
    ];
    for (c, our_success, their_success) in expected {
        assert_eq!(success(&ours, c), our_success, "our {c}:\n{ours_text}");
        assert_eq!(
            success(&theirs, c),
            their_success,
            "node_exporter's {c}:\n{theirs_text}"
        );
    }
    // What a failed collector read before it failed stays, on both sides.
    assert!(theirs
        .values
        .contains_key("node_edac_correctable_errors_total{controller=\"0\"}"));
    assert!(theirs.values.contains_key("node_ipvs_connections_total"));
    // Ours beyond node_exporter's: only the NFS families it gave up on.
    for family in ours.types.keys() {
        assert!(
            theirs.types.contains_key(family) || family.starts_with("node_nfs"),
            "{family}: only ours"
        );
    }
    assert!(ours
        .values
        .contains_key("node_nfsd_requests_total{method=\"Access\",proto=\"4\"}"));
}

/// The network statistics trees (`tests/fixtures/facts/net`, recorded from this kind of host,
/// and `net-edge`: no `snmp6`, no entropy files, a counter at
/// 2^64-1): every family node_exporter exports from them is ours, series for series.
#[test]
fn network_statistics_trees_match_node_exporter() {
    const NET: &[&str] = &[
        "netstat",
        "entropy",
        "conntrack",
        "arp",
        "softnet",
        "schedstat",
        "udp_queues",
        "thermal_zone",
        "netclass",
        "dmi",
    ];
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts");
    let (ours_text, theirs_text) = both_on_tree_with(&fixtures.join("net"), NET);
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    for c in NET {
        assert_eq!(success(&theirs, c), 1.0, "{c}:\n{theirs_text}");
        assert_eq!(success(&ours, c), 1.0, "{c}:\n{ours_text}");
    }
    let compared = assert_same_series(&ours, &theirs);
    assert!(compared > 30, "only {compared} series compared");
    for family in ours.types.keys() {
        assert!(theirs.types.contains_key(family), "{family}: only ours");
    }
    let (ours_text, theirs_text) = both_on_tree_with(&fixtures.join("net-edge"), NET);
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    assert_eq!(success(&ours, "netstat"), 1.0, "{ours_text}");
    assert_eq!(success(&theirs, "netstat"), 1.0, "{theirs_text}");
    // node_exporter fails without the entropy files; for us that is a host without them.
    assert_eq!(success(&ours, "entropy"), 1.0, "{ours_text}");
    assert!(!ours_text.contains("node_entropy_"));
    assert_eq!(success(&ours, "conntrack"), 1.0, "{ours_text}");
    assert!(!ours_text.contains("node_nf_conntrack"));
    // A thermal zone without its policy: both fail.
    assert_eq!(success(&ours, "thermal_zone"), 0.0, "{ours_text}");
    assert_eq!(success(&theirs, "thermal_zone"), 0.0, "{theirs_text}");
    // A softnet_stat line with too few columns: both fail.
    assert_eq!(success(&ours, "softnet"), 0.0, "{ours_text}");
    assert_eq!(success(&theirs, "softnet"), 0.0, "{theirs_text}");
    assert!(assert_same_series(&ours, &theirs) >= 5);
}

/// The textfile collector on the fixture directory (`fixtures/facts/textfile/var/lib/node-exporter`:
/// counters, gauges, a histogram without its `+Inf` bucket, a summary, escapes, padded label
/// sets, two files sharing a family without HELP, a file whose HELP conflicts, a directory
/// named `dir.prom`, and files that fail: no final newline, a timestamp, a TYPE after a sample).
/// Every family node_exporter 1.5 exports from it is ours, same help, type, series and values,
/// mtimes included.
#[test]
fn textfile_directory_matches_node_exporter() {
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing; run .ci/tools/facts.sh"
    );
    let dir = textfile_dir();
    let port = free_port();
    let _ne = Killed(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--collector.textfile.directory={}", dir.display()))
            .args([
                "--collector.disable-defaults",
                "--web.disable-exporter-metrics",
                "--collector.textfile",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(port);
    let theirs_text = String::from_utf8(get(port, "/metrics", "").unwrap().1).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "facts",
            "--format",
            "prometheus",
            "--collector.disable-defaults",
            "--collector.textfile",
            "--collector.textfile.directory",
        ])
        .arg(&dir)
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ROOT")
        .output()
        .unwrap();
    assert!(out.status.success());
    let ours_text = String::from_utf8(out.stdout).unwrap();
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    let mut compared = 0;
    for (family, kind) in &theirs.types {
        // promhttp's own error counter appears because node_exporter's registry refused the
        // conflicting families, as ours leaves them out.
        if family.starts_with("node_scrape_collector_")
            || family.starts_with("promhttp_")
            || NOT_CLAIMED.contains(&family.as_str())
        {
            continue;
        }
        assert_eq!(
            ours.types.get(family),
            Some(kind),
            "{family}: type\n{ours_text}"
        );
        assert_eq!(
            ours.helps.get(family),
            theirs.helps.get(family),
            "{family}: help"
        );
        let series = |e: &Exposition| -> BTreeMap<String, f64> {
            e.values
                .iter()
                .filter(|(s, _)| {
                    let name = s.split('{').next().unwrap_or("");
                    name == family
                        || ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|x| name.strip_suffix(x) == Some(family.as_str()))
                })
                .map(|(s, v)| (s.clone(), *v))
                .collect()
        };
        let (a, b) = (series(&ours), series(&theirs));
        assert_eq!(a, b, "{family}: series differ");
        compared += b.len();
    }
    assert!(
        compared >= 25,
        "only {compared} series compared:\n{theirs_text}"
    );
    assert_eq!(theirs.values.get("node_textfile_scrape_error"), Some(&1.0));
    for family in ours.types.keys() {
        assert!(
            theirs.types.contains_key(family) || family.starts_with("node_scrape_collector_"),
            "{family}: only ours"
        );
    }
}

/// The agent's `process_*` families against node_exporter's own (client_golang's process
/// collector): the same families, types and help texts; and values that are the agent
/// process's, as `/proc/PID` shows it from outside.
#[test]
fn process_metrics_match_client_golang() {
    assert!(
        std::path::Path::new(NODE_EXPORTER).exists(),
        "{NODE_EXPORTER} missing; run .ci/tools/facts.sh"
    );
    let ne_port = free_port();
    let _ne = Killed(
        Command::new(NODE_EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{ne_port}"))
            .arg("--collector.disable-defaults")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (agent, port, _config) = start_agent();
    wait_for(ne_port);
    let theirs = parse(&String::from_utf8(get(ne_port, "/metrics", "").unwrap().1).unwrap());
    let ours_text = String::from_utf8(get(port, "/metrics", "").unwrap().1).unwrap();
    let ours = parse(&ours_text);
    let families: Vec<&String> = theirs
        .types
        .keys()
        .filter(|f| f.starts_with("process_"))
        .collect();
    assert!(families.len() >= 7, "{families:?}");
    for family in &families {
        assert_eq!(
            ours.types.get(*family),
            theirs.types.get(*family),
            "{family}"
        );
        assert_eq!(
            ours.helps.get(*family),
            theirs.helps.get(*family),
            "{family}"
        );
    }
    for family in ours.types.keys().filter(|f| f.starts_with("process_")) {
        assert!(theirs.types.contains_key(family), "{family}: only ours");
    }
    let pid = agent.0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |key: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
            .unwrap()
            * 1024.0
    };
    let value = |name: &str| *ours.values.get(name).unwrap_or_else(|| panic!("{name}"));
    // Resident memory moves a little between the scrape and this read.
    let rss = value("process_resident_memory_bytes");
    assert!(
        (rss - kb("VmRSS:")).abs() < 0.5 * rss,
        "{rss} vs {}",
        kb("VmRSS:")
    );
    assert!(rss < 64e6, "{rss}");
    let vsize = value("process_virtual_memory_bytes");
    assert!(
        (vsize - kb("VmSize:")).abs() < 0.1 * vsize,
        "{vsize} vs {}",
        kb("VmSize:")
    );
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    assert!((value("process_open_fds") - fds).abs() <= 3.0, "{fds}");
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let soft: f64 = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(value("process_max_fds"), soft);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let started = value("process_start_time_seconds");
    assert!(
        started <= now + 1.0 && started > now - 120.0,
        "{started} vs {now}"
    );
    assert!(value("process_cpu_seconds_total") >= 0.0);
}

/// The synthetic sensors tree (`tests/fixtures/facts/sensors`): every hwmon and RAPL family
/// node_exporter 1.5 exports from it is ours, same help, type, series and values. (Its SELinux
/// collector reads the machine, not the tree; the host test compares it.)
#[test]
fn sensors_tree_matches_node_exporter() {
    let tree =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts/sensors");
    let (ours_text, theirs_text) = both_on_tree_with(&tree, &["hwmon", "rapl", "powersupplyclass"]);
    promtool_check(&ours_text);
    let (ours, theirs) = (parse(&ours_text), parse(&theirs_text));
    for c in ["hwmon", "rapl", "powersupplyclass"] {
        assert_eq!(success(&theirs, c), 1.0, "{c}:\n{theirs_text}");
        assert_eq!(success(&ours, c), 1.0, "{c}:\n{ours_text}");
    }
    let compared = assert_same_series(&ours, &theirs);
    assert!(compared >= 45, "only {compared} series compared");
    for family in ours.types.keys() {
        assert!(theirs.types.contains_key(family), "{family}: only ours");
    }
}
