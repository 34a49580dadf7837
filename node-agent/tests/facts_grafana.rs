//! The "Node Exporter Full" Grafana dashboard works on the agent: Debian's `prometheus` scrapes
//! the real agent's `/metrics` every second, and the PromQL its panels use (CPU busy, load,
//! memory, filesystems, disk and network I/O, TCP retransmits, clock sync, entropy, file
//! descriptors, uptime, context switches, page faults, sockets, the agent's own memory, ...)
//! each returns at least one series through `/api/v1/query`.
//!
//! Needs `.ci/tools/facts.sh` (Debian's `prometheus`); skipped without it.
#![allow(clippy::unwrap_used)]

mod process_support;

use process_support::{free_port, Killed};

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Panel queries of "Node Exporter Full" (grafana.com dashboard 1860), with `$node` and
/// `$job` dropped and `$__rate_interval` set to 5 s (five scrapes at 1 s).
const QUERIES: &[&str] = &[
    // Quick CPU / Mem / Disk
    r#"sum by (instance) (rate(node_cpu_seconds_total{mode!="idle"}[5s]))"#,
    r#"100 * (1 - avg by (instance) (rate(node_cpu_seconds_total{mode="idle"}[5s])))"#,
    "count(count(node_cpu_seconds_total) by (cpu))",
    "node_load1",
    "node_load5",
    "node_load15",
    "100 - (node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes * 100)",
    "node_memory_MemTotal_bytes - node_memory_MemFree_bytes - (node_memory_Cached_bytes + node_memory_Buffers_bytes + node_memory_SReclaimable_bytes)",
    "node_memory_SwapTotal_bytes",
    r#"100 - ((node_filesystem_avail_bytes{fstype!="rootfs"} * 100) / node_filesystem_size_bytes{fstype!="rootfs"})"#,
    "node_filesystem_readonly",
    "node_time_seconds - node_boot_time_seconds",
    // Disk, network
    "rate(node_disk_read_bytes_total[5s])",
    "rate(node_disk_written_bytes_total[5s])",
    "rate(node_disk_io_time_seconds_total[5s])",
    "rate(node_network_receive_bytes_total[5s]) * 8",
    "rate(node_network_transmit_bytes_total[5s]) * 8",
    "rate(node_network_receive_errs_total[5s])",
    "node_network_up",
    "rate(node_netstat_Tcp_RetransSegs[5s])",
    "node_netstat_Tcp_CurrEstab",
    "node_sockstat_TCP_alloc",
    "node_sockstat_sockets_used",
    "node_nf_conntrack_entries",
    // System
    "rate(node_context_switches_total[5s])",
    "rate(node_intr_total[5s])",
    "rate(node_forks_total[5s])",
    "node_procs_running",
    "rate(node_vmstat_pgfault[5s])",
    "rate(node_vmstat_pgmajfault[5s])",
    "node_timex_sync_status",
    "node_timex_offset_seconds",
    "node_entropy_available_bits",
    "node_filefd_allocated",
    "node_filefd_maximum",
    "node_boot_time_seconds",
    "node_uname_info",
    "node_textfile_scrape_error",
    "node_scrape_collector_success",
    "process_resident_memory_bytes",
    "rate(process_cpu_seconds_total[5s])",
];

/// A GET on 127.0.0.1:`port`: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let status = raw.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((status, body))
}

fn dechunk(mut data: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = data.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        data = rest[size..].trim_start_matches("\r\n");
    }
    out
}

/// Percent-encodes a query string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The series an instant query returns (`data.result`), or why there are none.
fn query(port: u16, promql: &str) -> Result<usize, String> {
    let path = format!("/api/v1/query?query={}", encode(promql));
    let (status, body) = get(port, &path).ok_or("no answer")?;
    let json: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
    if json["status"] != "success" {
        return Err(format!("HTTP {status}: {body}"));
    }
    match &json["data"]["result"] {
        serde_json::Value::Array(series) => Ok(series.len()),
        // A scalar: one value.
        serde_json::Value::Null => Err(format!("no result: {body}")),
        _ => Ok(1),
    }
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_agent(config: &Path) -> (Killed, u16) {
    let port = free_port();
    let textfiles = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/facts/textfile/var/lib/node-exporter");
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["agent", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--collector.textfile.directory")
        .arg(textfiles)
        .env_remove("DRIFTLESS_ROOT")
        .env("DRIFTLESS_ENV_FILE", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_until("the agent", Duration::from_secs(20), || {
        get(port, "/metrics").is_some_and(|(s, _)| s == 200)
    });
    (child, port)
}

fn start_prometheus(binary: &Path, dir: &Path, target: u16) -> (Killed, u16) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
        ),
    )
    .unwrap();
    let child = Command::new(binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    wait_until("prometheus", Duration::from_secs(20), || {
        get(port, "/-/ready").is_some_and(|(s, _)| s == 200)
    });
    (child, port)
}

#[test]
fn node_exporter_full_dashboard_queries_return_series() {
    let binary = Path::new("/usr/bin/prometheus");
    if !binary.exists() {
        // Straight to stderr (past the harness's capture): CI counts the line as a skip.
        let line = "skipped: node_exporter_full_dashboard_queries_return_series: /usr/bin/prometheus is missing (run .ci/tools/facts.sh)\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    let (_agent, agent_port) = start_agent(&config);
    let (_prometheus, port) = start_prometheus(binary, dir.path(), agent_port);
    // Enough scrapes for every 5 s rate to have two samples, with a margin.
    wait_until("five good scrapes", Duration::from_secs(20), || {
        query(port, r#"sum_over_time(up{job="node"}[10s]) >= 5"#).is_ok_and(|n| n == 1)
    });
    let failed: Vec<String> = QUERIES
        .iter()
        .filter_map(|q| match query(port, q) {
            Ok(n) if n >= 1 => None,
            Ok(n) => Some(format!("{q}: {n} series")),
            Err(e) => Some(format!("{q}: {e}")),
        })
        .collect();
    assert!(
        failed.is_empty(),
        "queries without a series:\n{}",
        failed.join("\n")
    );
}
