//! Golden tests of the node collectors on fixture trees: a recorded copy of a real machine's
//! `/proc`, `/sys` and `/etc` (`fixtures/facts/host`, made by `fixtures/facts/record.sh`) and
//! synthetic edge cases (`fixtures/facts/edge`: 64 CPUs, mount points with `\040` and other
//! escapes, a missing mount point, no PSI, no sockstat6). The exposition is compared with
//! `fixtures/facts/<tree>.prom`; values that depend on the test machine or the clock are masked.
//!
//! Regenerate the golden files with `DRIFTLESS_BLESS=1 cargo test -p driftless-agent --test facts_golden`.
#![allow(clippy::unwrap_used)]

mod process_support;

use process_support::promtool_check;

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/facts")
}

/// Families whose values are the test machine's (statvfs of the fixture directories) or the
/// clock's.
const MASKED: &[&str] = &[
    "node_time_seconds",
    "node_scrape_collector_duration_seconds",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_size_bytes",
    "node_filesystem_files",
    "node_filesystem_files_free",
];

fn mask(exposition: &str) -> String {
    exposition
        .lines()
        .map(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if !line.starts_with('#') && MASKED.contains(&name) {
                let (series, _) = line.rsplit_once(' ').unwrap();
                format!("{series} MASKED\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect()
}

fn scrape(root: &Path, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["facts", "--format", "prometheus", "--root"])
        .arg(root)
        .args(extra)
        .env("TZ", "UTC")
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ROOT")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn golden(tree: &str, extra: &[&str]) {
    let exposition = scrape(&fixtures().join(tree), extra);
    promtool_check(&exposition);
    let masked = mask(&exposition);
    let path = fixtures().join(format!("{tree}.prom"));
    if std::env::var_os("DRIFTLESS_BLESS").is_some() {
        std::fs::write(&path, &masked).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; create it with DRIFTLESS_BLESS=1 cargo test -p driftless-agent --test facts_golden",
            path.display()
        )
    });
    if masked != expected {
        let diff = similar::TextDiff::from_lines(&expected, &masked)
            .unified_diff()
            .header("golden", "actual")
            .to_string();
        panic!(
            "{tree}: exposition differs from {}:\n{diff}",
            path.display()
        );
    }
}

#[test]
fn recorded_host_matches_golden() {
    golden("host", &[]);
}

#[test]
fn edge_cases_match_golden() {
    let config = fixtures().join("edge-config");
    golden("edge", &["--config", config.to_str().unwrap()]);
}

#[test]
fn edge_cases_are_what_a_user_expects() {
    let config = fixtures().join("edge-config");
    let text = scrape(
        &fixtures().join("edge"),
        &["--config", config.to_str().unwrap()],
    );
    // 64 CPUs × 8 modes.
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("node_cpu_seconds_total{"))
            .count(),
        64 * 8
    );
    assert!(text.contains("node_cpu_seconds_total{cpu=\"63\",mode=\"idle\"} 104.41\n"));
    // Escaped mount points are decoded, then escaped the Prometheus way.
    assert!(text.contains(
        "node_filesystem_readonly{device=\"/dev/sdb1\",fstype=\"xfs\",mountpoint=\"/mnt/my disk\"} 1\n"
    ));
    assert!(text.contains("mountpoint=\"/mnt/tab\tand\\\\backslash\""));
    assert!(text.contains("mountpoint=\"/mnt/quote\\\"d\""));
    // A mount point that cannot be stat'ed is a device error, not a failed scrape.
    assert!(text.contains(
        "node_filesystem_device_error{device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/missing\"} 1\n"
    ));
    assert!(!text.contains("mountpoint=\"/proc\""));
    assert!(!text.contains("fstype=\"overlay\""));
    // No PSI: no pressure families, and the collector still succeeded.
    assert!(!text.contains("node_pressure_"));
    assert!(text.contains("node_scrape_collector_success{collector=\"pressure\"} 1\n"));
    // Loop devices and partitions are left out as node_exporter does.
    assert!(text.contains("node_disk_reads_completed_total{device=\"sda\"} 100\n"));
    assert!(!text.contains("device=\"loop0\"") && !text.contains("device=\"sda1\""));
    assert!(text.contains("node_disk_read_bytes_total{device=\"sda\"} 409600\n"));
    assert!(text.contains("node_network_receive_bytes_total{device=\"bond0.100\"} 5000000000\n"));
    assert!(text.contains("node_memory_MemTotal_bytes 67108864000\n"));
    assert!(text.contains("node_memory_Active_anon_bytes 102400\n"));
    assert!(text.contains("node_memory_HugePages_Total 4\n"));
    assert!(text.contains("node_load1 12.5\n"));
    assert!(
        text.contains("node_os_version{id=\"ubuntu\",id_like=\"debian\",name=\"Ubuntu\"} 22.04\n")
    );
    assert!(text.contains("node_cpu_scaling_frequency_hertz{cpu=\"0\"} 2400000000\n"));
    assert!(text.contains("driftless_fact{name=\"answer\",key=\"\"} 42\n"));
    // A fact that cannot be read fails its collector, and only its collector.
    assert!(text.contains("node_scrape_collector_success{collector=\"file\"} 0\n"));
    assert!(text.contains("node_scrape_collector_success{collector=\"meminfo\"} 1\n"));
    assert!(text.contains("driftless_fact{name=\"release\",key=\"VERSION_ID\"} 22.04\n"));
    assert!(text.contains("driftless_fact_info{name=\"release\",key=\"ID\",value=\"ubuntu\"} 1\n"));
}

#[test]
fn collector_flags_select_collectors() {
    let edge = fixtures().join("edge");
    let text = scrape(
        &edge,
        &[
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.meminfo",
        ],
    );
    assert!(text.contains("node_load1 12.5\n"));
    assert!(text.contains("node_memory_MemTotal_bytes"));
    assert!(!text.contains("node_cpu_seconds_total"));
    let text = scrape(&edge, &["--no-collector.cpu"]);
    assert!(!text.contains("node_cpu_seconds_total") && text.contains("node_load1"));
    // Host paths can be set apart from the root.
    let text = scrape(
        Path::new("/nonexistent"),
        &[
            "--path.procfs",
            edge.join("proc").to_str().unwrap(),
            "--path.sysfs",
            edge.join("sys").to_str().unwrap(),
            "--collector.disable-defaults",
            "--collector.loadavg",
            "--collector.time",
        ],
    );
    assert!(text.contains("node_load1 12.5\n"));
    assert!(
        text.contains("node_time_clocksource_current_info{clocksource=\"tsc\",device=\"0\"} 1\n")
    );
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["facts", "--format", "prometheus", "--collector.nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
