//! Golden tests of the node collectors on fixture trees: a recorded copy of a real machine's
//! `/proc`, `/sys` and `/etc` (`fixtures/facts/host`, made by `fixtures/facts/record.sh`) and
//! synthetic edge cases (`fixtures/facts/edge`: 64 CPUs, mount points with `\040` and other
//! escapes, a missing mount point, no PSI, no sockstat6). The exposition is compared with
//! `fixtures/facts/<tree>.prom`; values that depend on the test machine or the clock are masked.
//!
//! The storage, fabric and RPC collectors have their own synthetic trees (`fixtures/facts/storage`
//! and `storage-edge`, written by `fixtures/facts/make_storage.py`).
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
    // The fixture files' mtimes are the checkout's.
    "node_textfile_mtime_seconds",
];

fn mask(exposition: &str) -> String {
    // Paths in labels (RAPL zones) are the checkout's.
    let exposition = exposition.replace(&fixtures().display().to_string(), "FIXTURES");
    exposition
        .lines()
        .map(|line| {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            // The kernel clock discipline (`adjtimex`) is the test machine's.
            let masked = MASKED.contains(&name) || name.starts_with("node_timex_");
            if !line.starts_with('#') && masked {
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

/// The flags that run only the storage, fabric and RPC collectors.
const STORAGE: &[&str] = &[
    "--collector.disable-defaults",
    "--collector.bcache",
    "--collector.bonding",
    "--collector.btrfs",
    "--collector.edac",
    "--collector.fibrechannel",
    "--collector.infiniband",
    "--collector.ipvs",
    "--collector.mdadm",
    "--collector.nfs",
    "--collector.nfsd",
    "--collector.nvme",
    "--collector.tapestats",
    "--collector.xfs",
    "--collector.zfs",
];

#[test]
fn storage_tree_matches_golden() {
    golden("storage", STORAGE);
}

#[test]
fn storage_edge_tree_matches_golden() {
    golden("storage-edge", STORAGE);
}

#[test]
fn storage_tree_is_what_a_user_expects() {
    let text = scrape(&fixtures().join("storage"), STORAGE);
    let has = |line: &str| {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?}:\n{text}"
        )
    };
    // bcache's human-readable units: 1.1G dirty, -59.7k proportional term.
    has("node_bcache_dirty_data_bytes{backing_device=\"bdev0\",uuid=\"5c2f4d3e-7d8a-4a3b-9d6c-0e1f2a3b4c5d\"} 1178599424");
    has("node_bcache_writeback_rate_proportional_term{backing_device=\"bdev0\",uuid=\"5c2f4d3e-7d8a-4a3b-9d6c-0e1f2a3b4c5d\"} -61116");
    has("node_bonding_active{master=\"bond0\"} 1");
    has("node_bonding_slaves{master=\"bond1\"} 2");
    // Device sizes are 512-byte sectors; raid5 on three devices stores 1.5 bytes per byte.
    has("node_btrfs_device_size_bytes{device=\"loop0\",uuid=\"0abb23a9-9b4b-4d7c-8fbd-2aa3c5a1f1d4\"} 10737418240");
    has("node_btrfs_allocation_ratio{block_group_type=\"data\",mode=\"raid5\",uuid=\"7f07c59f-6136-449c-ab87-e1cf2328731b\"} 1.5");
    has("node_btrfs_info{label=\"\",uuid=\"7f07c59f-6136-449c-ab87-e1cf2328731b\"} 1");
    has("node_edac_csrow_correctable_errors_total{controller=\"1\",csrow=\"unknown\"} 6");
    assert!(!text.contains("controller=\"power\""));
    // Unimplemented FC counters (all ones) are left out; 0x prefixes are dropped.
    assert!(!text.contains("node_fibrechannel_dumped_frames_total"));
    has("node_fibrechannel_nos_total{fc_host=\"host0\"} 18");
    assert!(text.contains("fabric_name=\"0\",fc_host=\"host0\",port_id=\"000002\""));
    // InfiniBand data counters count 4-byte words; N/A counters are left out.
    has("node_infiniband_port_data_received_bytes_total{device=\"mlx4_0\",port=\"1\"} 8884894436");
    has("node_infiniband_rate_bytes_per_second{device=\"mlx4_0\",port=\"1\"} 5000000000");
    assert!(!text.contains("node_infiniband_link_downed_total{device=\"mlx4_0\",port=\"2\"}"));
    has("node_infiniband_vl15_dropped_total{device=\"mlx4_0\",port=\"2\"} 0");
    // IPVS: one real server behind two listings of one service is summed; IPv4-mapped IPv6
    // addresses print as IPv4.
    has("node_ipvs_backend_weight{local_address=\"192.168.0.57\",local_mark=\"\",local_port=\"3306\",proto=\"TCP\",remote_address=\"192.168.50.21\",remote_port=\"3306\"} 150");
    assert!(text.contains("remote_address=\"10.0.0.1\",remote_port=\"53\"} 3\n"));
    has("node_ipvs_backend_connections_active{local_address=\"\",local_mark=\"10001000\",local_port=\"0\",proto=\"FWM\",remote_address=\"192.168.50.26\",remote_port=\"3306\"} 0");
    has("node_md_state{device=\"md6\",state=\"recovering\"} 1");
    has("node_md_blocks_synced{device=\"md6\"} 16775552");
    has("node_md_blocks_synced{device=\"md8\"} 0");
    has("node_md_state{device=\"md9\",state=\"check\"} 1");
    has("node_md_disks{device=\"md3\",state=\"spare\"} 1");
    has("node_md_disks_required{device=\"md10\"} 2");
    has("node_nfs_requests_total{method=\"Root\",proto=\"2\"} 0");
    has("node_nfsd_server_threads 8");
    has("node_nvme_info{device=\"nvme1\",firmware_revision=\"GPJ99E5Q\",model=\"WD \\\"Black\\\" SN850X\\\\2TB\",serial=\"22444M800123\",state=\"resetting\"} 1");
    // Tape aliases (nst0, st0a) are the same drive.
    assert!(!text.contains("device=\"nst0\"") && !text.contains("device=\"st0a\""));
    has("node_tape_io_time_seconds_total{device=\"st1\"} 18494.02217544");
    has("node_xfs_read_calls_total{device=\"dm-0\"} 80103");
    assert!(!text.contains("node_xfs_read_calls_total{device=\"stats\"}"));
    has("node_zfs_arc_hits 8772612");
    has("node_zfs_fm_erpt_dropped 18");
    has("node_zfs_zpool_dataset_writes{dataset=\"poolz1/a_b\",zpool=\"poolz1\"} 4");
    has("node_zfs_zpool_state{state=\"degraded\",zpool=\"poolz1\"} 1");
    assert!(!text.contains("arc_raw_size"));
}

/// A host without any of these (the recorded machine has no bcache, bonding, md, NFS, ...):
/// every collector succeeds and exports nothing.
#[test]
fn absent_subsystems_export_nothing() {
    let text = scrape(&fixtures().join("edge"), STORAGE);
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            line.starts_with("node_scrape_collector_"),
            "unexpected {line}"
        );
        if line.starts_with("node_scrape_collector_success") {
            assert!(line.ends_with(" 1"), "{line}");
        }
    }
    assert_eq!(text.matches("node_scrape_collector_success{").count(), 14);
}

/// The flags that run only the network statistics collectors.
const NET: &[&str] = &[
    "--collector.disable-defaults",
    "--collector.netstat",
    "--collector.entropy",
    "--collector.conntrack",
    "--collector.arp",
    "--collector.softnet",
    "--collector.schedstat",
    "--collector.udp_queues",
    "--collector.thermal_zone",
    "--collector.netclass",
    "--collector.dmi",
];

#[test]
fn network_statistics_trees_match_golden() {
    golden("net", NET);
    golden("net-edge", NET);
    let text = scrape(&fixtures().join("net-edge"), NET);
    // Only the default fields; the IPv4 statistics without snmp6; no entropy without its files.
    assert!(
        text.contains("node_netstat_TcpExt_ListenDrops 18446744073709552000\n"),
        "{text}"
    );
    assert!(text.contains("node_netstat_UdpLite_InErrors 4\n"), "{text}");
    assert!(text.contains("node_netstat_Ip_Forwarding 2\n"), "{text}");
    assert!(!text.contains("DefaultTTL") && !text.contains("MPTcpExt"));
    assert!(!text.contains("node_entropy_"));
    assert!(text.contains("node_scrape_collector_success{collector=\"entropy\"} 1\n"));
    // A line with too few columns fails softnet (as node_exporter), the others go on.
    assert!(text.contains("node_scrape_collector_success{collector=\"softnet\"} 0\n"));
    assert!(!text.contains("node_softnet_"));
    // A thermal zone without its policy fails the collector before any zone, as node_exporter.
    assert!(text.contains("node_scrape_collector_success{collector=\"thermal_zone\"} 0\n"));
    assert!(!text.contains("node_thermal_zone_temp") && !text.contains("node_cooling_device"));
    // Without IPv6 only the v4 queues.
    assert!(
        text.contains("node_udp_queues{ip=\"v4\",queue=\"tx\"} 0\n"),
        "{text}"
    );
    assert!(!text.contains("ip=\"v6\""));
    // Without the nf_conntrack module: nothing, and success.
    assert!(!text.contains("node_nf_conntrack"));
    assert!(text.contains("node_scrape_collector_success{collector=\"conntrack\"} 1\n"));
    // An empty ARP table: an empty family, nothing exported.
    assert!(!text.contains("node_arp_entries"));
    // Per-CPU statistics are summed.
    let text = scrape(&fixtures().join("net"), NET);
    assert!(
        text.contains("node_nf_conntrack_stat_found 4114\n"),
        "{text}"
    );
    assert!(
        text.contains("node_nf_conntrack_stat_search_restart 257\n"),
        "{text}"
    );
}

/// The textfile tree (`fixtures/facts/textfile`): the FactsPolicy of `textfile-config` reads
/// `/var/lib/node-exporter` (good files, and malformed ones: no final newline, a timestamp, a
/// `TYPE` after a sample; a directory named `*.prom`), `/var/lib/edge/*` (a glob: a reserved
/// label name, families the agent exports itself, a histogram collision, odd file names) and a
/// directory that does not exist, below the tree as the host root.
const TEXTFILE: &[&str] = &[
    "--collector.disable-defaults",
    "--collector.textfile",
    "--collector.loadavg",
];

fn textfile_args(config: &Path) -> Vec<&str> {
    let mut args = vec!["--config", config.to_str().unwrap()];
    args.extend(TEXTFILE);
    args
}

#[test]
fn textfile_tree_matches_golden() {
    let config = fixtures().join("textfile-config");
    golden("textfile", &textfile_args(&config));
}

#[test]
fn textfile_tree_is_what_a_user_expects() {
    let config = fixtures().join("textfile-config");
    let text = scrape(&fixtures().join("textfile"), &textfile_args(&config));
    let has = |line: &str| {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?}:\n{text}"
        )
    };
    // Good files, with types, help texts, escapes, padded label sets and a histogram whose +Inf
    // bucket is added.
    has("# HELP app_jobs_total Jobs run by app.");
    has("app_jobs_total{priority=\"\",queue=\"default\"} 42");
    has("app_latency_seconds_bucket{le=\"1000\"} 20");
    has("app_latency_seconds_bucket{le=\"+Inf\"} 20");
    has("# HELP app_rpc_seconds RPC latency\\nin seconds.");
    has("app_rpc_seconds{method=\"get\",quantile=\"0.99\"} 0.2");
    has("node_backup_last_success_timestamp_seconds{path=\"/srv/a \\\"quoted\\\" \\\\ dir\"} 1700000000");
    has("app_temperature_celsius -3.5");
    has("unicode_label{city=\"Zürich\"} 1");
    has("spaced_name 1");
    has("second_dir 2");
    // No HELP: the files it was read from; the second file's duplicate series is left out.
    has("# HELP cron_last_run_seconds Metric read from /var/lib/node-exporter/cron-a.prom, /var/lib/node-exporter/cron-b.prom");
    has("cron_last_run_seconds{job=\"a\"} 100");
    assert!(!text.contains(" 999\n"));
    // Another help for a family read before: left out, the rest of that file is kept.
    assert!(!text.contains("queue=\"other\""));
    has("conflict_ok 1");
    // Families of the agent's own collectors are not taken over; a histogram's `_count` is not
    // redefined by another file.
    has("node_load1 12.5");
    assert!(!text.contains(" 99\n"));
    has("edge_hist_count 1");
    assert!(!text.contains("edge_hist_count 5"));
    // Bad files are skipped whole and reported.
    for bad in [
        "malformed_metric",
        "stamped_metric",
        "late_type",
        "reserved_label",
        "not_read",
    ] {
        assert!(!text.contains(bad), "{bad}:\n{text}");
    }
    has("node_textfile_scrape_error 1");
    for file in [
        "/var/lib/node-exporter/app.prom",
        "/var/lib/node-exporter/empty.prom",
        "/var/lib/edge/one/with space.prom",
        "/var/lib/edge/two/two.prom",
    ] {
        assert!(
            text.contains(&format!("node_textfile_mtime_seconds{{file=\"{file}\"}} ")),
            "{file}:\n{text}"
        );
    }
    // A directory named `*.prom` reads as an empty file, as in node_exporter.
    has("# HELP edge_ok Metric read from /var/lib/edge/one/takeover.prom");
    assert!(text.contains("node_textfile_mtime_seconds{file=\"/var/lib/node-exporter/dir.prom\"}"));
    assert!(!text.contains("inside_dir"));
    for file in ["malformed.prom", "stamped.prom", "reserved.prom"] {
        assert!(!text.contains(&format!("{file}\"}}")), "{file}:\n{text}");
    }
    // Without a directory nothing is exported, not even the error gauge.
    let text = scrape(&fixtures().join("textfile"), TEXTFILE);
    assert!(!text.contains("node_textfile"), "{text}");
    assert!(text.contains("node_scrape_collector_success{collector=\"textfile\"} 1\n"));
}

/// The synthetic sensors tree (`fixtures/facts/sensors`, written by `make_sensors.sh`; this
/// machine has no hwmon, RAPL or SELinux to record): hwmon chips named by device, name file or
/// directory, sensors in the device directory, a duplicate chip, values that are not numbers and
/// a sensor file that is a directory; RAPL zones with repeated names; SELinux enforcing;
/// power supplies; a full watchdog and one without attributes.
const SENSORS: &[&str] = &[
    "--collector.disable-defaults",
    "--collector.hwmon",
    "--collector.rapl",
    "--collector.selinux",
    "--collector.powersupplyclass",
    "--collector.watchdog",
];

#[test]
fn sensors_tree_matches_golden() {
    golden("sensors", SENSORS);
}

#[test]
fn sensors_tree_is_what_a_user_expects() {
    let text = scrape(&fixtures().join("sensors"), SENSORS);
    let has = |line: &str| {
        assert!(
            text.contains(&format!("{line}\n")),
            "missing {line:?}:\n{text}"
        )
    };
    has("node_hwmon_temp_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"} 55");
    has("node_hwmon_temp_celsius{chip=\"acpitz\",sensor=\"temp1\"} 27.8");
    has("node_hwmon_temp_celsius{chip=\"hwmon5\",sensor=\"temp1\"} -5");
    has("node_hwmon_sensor_label{chip=\"platform_coretemp_0\",label=\"Core 0 \\\"hot\\\"\",sensor=\"temp2\"} 1");
    has("node_hwmon_chip_names{chip=\"platform_nct6775_656\",chip_name=\"nct6775\"} 1");
    has("node_hwmon_fan_rpm{chip=\"platform_nct6775_656\",sensor=\"fan1\"} 1200");
    has("node_hwmon_in_volts{chip=\"platform_nct6775_656\",sensor=\"in0\"} 1.08");
    has("node_hwmon_power_average_watt{chip=\"platform_nct6775_656\",sensor=\"power1\"} 15.25");
    has("node_hwmon_energy_joule_total{chip=\"platform_nct6775_656\",sensor=\"energy1\"} 123.456789");
    has("node_hwmon_humidity{chip=\"platform_nct6775_656\",sensor=\"humidity1\"} 45.5");
    // Read from the device directory.
    has("node_hwmon_voltage_regulator_version{chip=\"platform_nct6775_656\",sensor=\"vrm0\"} 10");
    // The second directory of one device: its duplicate series is left out, its new one kept.
    assert!(!text.contains("sensor=\"temp1\"} 56\n"), "{text}");
    has("node_hwmon_temp_celsius{chip=\"platform_coretemp_0\",sensor=\"temp4\"} 44");
    // Not numbers, a directory, a name without a number: nothing.
    assert!(!text.contains("sensor=\"temp3\"") && !text.contains("sensor=\"temp9\""));
    assert!(!text.contains("temp_offset"));
    // A bare value with another help than the family's: left out.
    assert!(
        !text.contains("node_hwmon_in_volts{chip=\"hwmon5\""),
        "{text}"
    );
    has("node_hwmon_in_input_volts{chip=\"hwmon5\",sensor=\"in1\"} 0.9500000000000001");
    has("node_scrape_collector_success{collector=\"hwmon\"} 1");
    // RAPL: numbered packages, a repeated name indexed by its count.
    let rapl = fixtures().join("sensors/sys/class/powercap");
    let rapl = rapl.display();
    has(&format!(
        "node_rapl_package_joules_total{{index=\"1\",path=\"{rapl}/intel-rapl:1\"}} 20136.725044"
    ));
    has(&format!(
        "node_rapl_dram_joules_total{{index=\"1\",path=\"{rapl}/intel-rapl:1:0\"}} 2965.343418"
    ));
    has("node_selinux_enabled 1");
    has("node_selinux_config_mode 0");
    has("node_selinux_current_mode 1");
    // Power supplies: units of µWh, µW, µV and tenths of °C; text attributes as info labels.
    has("node_power_supply_energy_watthour{power_supply=\"BAT0\"} 41.23");
    has("node_power_supply_temp_celsius{power_supply=\"BAT0\"} 31.5");
    has("node_power_supply_cyclecount{power_supply=\"BAT0\"} 123");
    has("node_power_supply_info{power_supply=\"AC\",type=\"Mains\"} 1");
    assert!(text.contains("serial_number=\"1234\""));
    // Without any of it (the edge tree): hwmon and rapl export nothing, SELinux says disabled.
    let text = scrape(&fixtures().join("edge"), SENSORS);
    assert!(
        !text.contains("node_hwmon")
            && !text.contains("node_rapl")
            && !text.contains("node_power_supply"),
        "{text}"
    );
    assert!(text.contains("node_selinux_enabled 0\n"));
    assert!(text.contains("node_scrape_collector_success{collector=\"hwmon\"} 1\n"));
    assert!(text.contains("node_scrape_collector_success{collector=\"rapl\"} 1\n"));
}

/// node_exporter's regular-expression flags replace the FactsPolicy's (or the default) options.
#[test]
fn option_flags_filter_devices_and_mount_points() {
    let edge = fixtures().join("edge");
    let text = scrape(
        &edge,
        &[
            "--collector.diskstats.device-exclude",
            "^sda$",
            "--collector.filesystem.mount-points-exclude",
            "^/mnt/",
            "--collector.netdev.device-exclude",
            "^bond",
        ],
    );
    // Partitions and loop devices come back once the default exclude is replaced.
    assert!(!text.contains("node_disk_reads_completed_total{device=\"sda\"}"));
    assert!(text.contains("device=\"sda1\""), "{text}");
    assert!(!text.contains("mountpoint=\"/mnt/my disk\""));
    assert!(text.contains("mountpoint=\"/missing\""));
    assert!(!text.contains("node_network_receive_bytes_total{device=\"bond0.100\"}"));
    let text = scrape(
        &edge,
        &[
            "--collector.netdev.device-include",
            "^bond",
            "--collector.disable-defaults",
            "--collector.netdev",
        ],
    );
    assert!(text.contains("node_network_receive_bytes_total{device=\"bond0.100\"}"));
    assert_eq!(
        text.matches("node_network_receive_bytes_total{").count(),
        1,
        "{text}"
    );
    let net = fixtures().join("net");
    let all = scrape(
        &net,
        &["--collector.disable-defaults", "--collector.netclass"],
    );
    assert!(
        all.contains("node_network_up{device=\"br-lan.10\"}"),
        "{all}"
    );
    let text = scrape(
        &net,
        &[
            "--collector.disable-defaults",
            "--collector.netclass",
            "--collector.netclass.ignored-devices",
            "^br-",
        ],
    );
    assert!(!text.contains("br-lan.10") && text.contains("node_network_up{"));
    // A bad expression is refused with the collector's name.
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "facts",
            "--format",
            "prometheus",
            "--collector.netdev.device-exclude",
            "(",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("netdev"));
}

/// node_exporter's watchdog test, series for series, plus the cases its fixture lacks.
#[test]
fn watchdog_is_what_node_exporter_exports() {
    let text = scrape(&fixtures().join("sensors"), SENSORS);
    let expected = [
        "# HELP node_watchdog_access_cs0 Value of /sys/class/watchdog/<watchdog>/access_cs0",
        "# TYPE node_watchdog_access_cs0 gauge",
        "node_watchdog_access_cs0{name=\"watchdog0\"} 0",
        "# HELP node_watchdog_bootstatus Value of /sys/class/watchdog/<watchdog>/bootstatus",
        "# TYPE node_watchdog_bootstatus gauge",
        "node_watchdog_bootstatus{name=\"watchdog0\"} 1",
        "# HELP node_watchdog_fw_version Value of /sys/class/watchdog/<watchdog>/fw_version",
        "# TYPE node_watchdog_fw_version gauge",
        "node_watchdog_fw_version{name=\"watchdog0\"} 2",
        "# HELP node_watchdog_nowayout Value of /sys/class/watchdog/<watchdog>/nowayout",
        "# TYPE node_watchdog_nowayout gauge",
        "node_watchdog_nowayout{name=\"watchdog0\"} 0",
        "# HELP node_watchdog_pretimeout_seconds Value of /sys/class/watchdog/<watchdog>/pretimeout",
        "# TYPE node_watchdog_pretimeout_seconds gauge",
        "node_watchdog_pretimeout_seconds{name=\"watchdog0\"} 120",
        "# HELP node_watchdog_timeleft_seconds Value of /sys/class/watchdog/<watchdog>/timeleft",
        "# TYPE node_watchdog_timeleft_seconds gauge",
        "node_watchdog_timeleft_seconds{name=\"watchdog0\"} 300",
        "# HELP node_watchdog_timeout_seconds Value of /sys/class/watchdog/<watchdog>/timeout",
        "# TYPE node_watchdog_timeout_seconds gauge",
        "node_watchdog_timeout_seconds{name=\"watchdog0\"} 60",
        "# HELP node_watchdog_info Info of /sys/class/watchdog/<watchdog>",
        "# TYPE node_watchdog_info gauge",
        "node_watchdog_info{identity=\"Software Watchdog\",name=\"watchdog0\",options=\"0x8380\",pretimeout_governor=\"noop\",state=\"active\",status=\"0x8000\"} 1",
        "node_watchdog_info{identity=\"\",name=\"watchdog1\",options=\"\",pretimeout_governor=\"\",state=\"\",status=\"\"} 1",
    ];
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("node_watchdog_"))
        .collect();
    assert_eq!(ours, expected, "{text}");
    assert!(text.contains("node_scrape_collector_success{collector=\"watchdog\"} 1\n"));

    let only = ["--collector.disable-defaults", "--collector.watchdog"];
    let watchdog = |root: &Path| {
        let text = scrape(root, &only);
        let series = text
            .lines()
            .filter(|l| l.starts_with("node_watchdog_"))
            .count();
        let success = text.contains("node_scrape_collector_success{collector=\"watchdog\"} 1\n");
        (series, success, text)
    };
    let tmp = tempfile::tempdir().unwrap();
    let class = tmp.path().join("sys/class/watchdog");
    // No class, an empty class: nothing, and not a failure.
    let (series, success, text) = watchdog(tmp.path());
    assert!(series == 0 && success, "{text}");
    std::fs::create_dir_all(&class).unwrap();
    let (series, success, text) = watchdog(tmp.path());
    assert!(series == 0 && success, "{text}");
    // Hexadecimal and octal numbers as Go's ParseInt(s, 0, 64) reads them; missing files left out.
    let wd = class.join("watchdog0");
    std::fs::create_dir_all(&wd).unwrap();
    std::fs::write(wd.join("timeout"), "0x3c\n").unwrap();
    std::fs::write(wd.join("bootstatus"), "010\n").unwrap();
    let (series, success, text) = watchdog(tmp.path());
    assert!(series == 3 && success, "{text}");
    assert!(text.contains("node_watchdog_timeout_seconds{name=\"watchdog0\"} 60\n"));
    assert!(text.contains("node_watchdog_bootstatus{name=\"watchdog0\"} 8\n"));
    // A number that is not one, an attribute that cannot be read (a directory): the collector
    // fails and exports no watchdog, as node_exporter's does.
    std::fs::write(wd.join("timeleft"), "soon\n").unwrap();
    let (series, success, text) = watchdog(tmp.path());
    assert!(series == 0 && !success, "{text}");
    std::fs::remove_file(wd.join("timeleft")).unwrap();
    std::fs::create_dir(wd.join("timeleft")).unwrap();
    let (series, success, text) = watchdog(tmp.path());
    assert!(series == 0 && !success, "{text}");
}

/// `node_disk_info` as current node_exporter (1.10+) builds it: `rotational` from
/// `/sys/block/DEV/queue/rotational` ("0" when missing or not a number), and the serial from
/// `SCSI_IDENT_SERIAL`, else `ID_SERIAL_SHORT`, else `ID_SERIAL`.
#[test]
fn disk_info_has_node_exporter_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let put = |path: &str, text: &str| {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let zeros = "0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0";
    put(
        "proc/diskstats",
        &format!(
            "   8 16 sdb {zeros}\n 252 16 vdb {zeros}\n   8 32 sdc {zeros}\n   8 48 sdd {zeros}\n"
        ),
    );
    put(
        "run/udev/data/b8:16",
        "E:SCSI_IDENT_SERIAL=ZA1B2C3D\nE:ID_SERIAL_SHORT=WD-123\nE:ID_SERIAL=WDC_WD40_WD-123\nE:ID_MODEL=WDC_WD40\n",
    );
    put("run/udev/data/b252:16", "E:ID_SERIAL=virtio-disk-7\n");
    put(
        "run/udev/data/b8:32",
        "E:SCSI_IDENT_SERIAL=\nE:ID_SERIAL_SHORT=S1\n",
    );
    put("sys/block/sdb/queue/rotational", "1\n");
    put("sys/block/vdb/queue/rotational", "0\n");
    put("sys/block/sdc/queue/rotational", "yes\n");
    let text = scrape(
        root,
        &["--collector.disable-defaults", "--collector.diskstats"],
    );
    promtool_check(&text);
    let info: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("node_disk_info{"))
        .collect();
    assert_eq!(
        info,
        [
            "node_disk_info{device=\"sdb\",major=\"8\",minor=\"16\",model=\"WDC_WD40\",path=\"\",revision=\"\",rotational=\"1\",serial=\"ZA1B2C3D\",wwn=\"\"} 1",
            "node_disk_info{device=\"vdb\",major=\"252\",minor=\"16\",model=\"\",path=\"\",revision=\"\",rotational=\"0\",serial=\"virtio-disk-7\",wwn=\"\"} 1",
            "node_disk_info{device=\"sdc\",major=\"8\",minor=\"32\",model=\"\",path=\"\",revision=\"\",rotational=\"0\",serial=\"S1\",wwn=\"\"} 1",
            "node_disk_info{device=\"sdd\",major=\"8\",minor=\"48\",model=\"\",path=\"\",revision=\"\",rotational=\"0\",serial=\"\",wwn=\"\"} 1",
        ],
        "{text}"
    );
}
