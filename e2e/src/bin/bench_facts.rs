//! `make bench-facts`: our `/metrics` against Debian's `prometheus-node-exporter`, each with its
//! full default set of collectors (and its own `process_*` metrics), on this machine, in one run. Prints CPU time per scrape, p50/p99
//! scrape latency under `wrk` at 1 and 4 connections, RSS after 1,000 scrapes, and ratios.
//!
//! Needs `.ci/tools/facts.sh` (node_exporter, wrk) and a release build of the agent
//! (`cargo build --release -p driftless-agent`; `DRIFTLESS_BIN` overrides the path).

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

const NODE_EXPORTER: &str = "/usr/bin/prometheus-node-exporter";
const SCRAPES: usize = 1000;
const WRK_SECONDS: u32 = 10;

struct Server {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn scrape(port: u16) -> anyhow::Result<usize> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    if !body.starts_with(b"HTTP/1.1 200") {
        bail!("scrape of port {port} failed");
    }
    Ok(body.len())
}

fn wait_up(port: u16) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if scrape(port).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing answered on port {port}")
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(") ").context("bad stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// A `/proc/PID/status` memory field (`VmRSS:`, `RssAnon:`) in MB.
fn rss_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .context("no VmRSS")?
        .split_whitespace()
        .next()
        .context("no VmRSS value")?
        .parse()?;
    Ok(kb / 1024.0)
}

/// (p50, p99) in milliseconds from `wrk --latency`.
fn wrk(port: u16, connections: u32) -> anyhow::Result<(f64, f64, f64)> {
    let out = Command::new("wrk")
        .args([
            "-t",
            &connections.min(2).to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{WRK_SECONDS}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}/metrics"),
        ])
        .output()
        .context("running wrk; run .ci/tools/facts.sh")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let ms = |v: &str| -> Option<f64> {
        let (n, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
        let n: f64 = n.parse().ok()?;
        Some(match unit {
            "us" => n / 1000.0,
            "ms" => n,
            "s" => n * 1000.0,
            _ => return None,
        })
    };
    let pct = |p: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(ms)
    };
    let rps = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    match (pct("50%"), pct("99%")) {
        (Some(a), Some(b)) => Ok((a, b, rps)),
        _ => bail!("could not read wrk output:\n{text}"),
    }
}

struct Figures {
    cpu_ms_per_scrape: f64,
    rss_mb: f64,
    anon_mb: f64,
    bytes: usize,
    wrk: Vec<(u32, f64, f64, f64)>,
}

fn measure(server: &Server) -> anyhow::Result<Figures> {
    let pid = server.child.id();
    for _ in 0..20 {
        scrape(server.port)?;
    }
    let before = cpu_seconds(pid)?;
    let mut bytes = 0;
    for _ in 0..SCRAPES {
        bytes = scrape(server.port)?;
    }
    let cpu = cpu_seconds(pid)? - before;
    let rss = rss_mb(pid, "VmRSS:")?;
    let anon = rss_mb(pid, "RssAnon:")?;
    let mut wrk_figures = Vec::new();
    for connections in [1, 4] {
        let (p50, p99, rps) = wrk(server.port, connections)?;
        wrk_figures.push((connections, p50, p99, rps));
    }
    println!("{}: done", server.name);
    Ok(Figures {
        cpu_ms_per_scrape: cpu * 1000.0 / SCRAPES as f64,
        rss_mb: rss,
        anon_mb: anon,
        bytes,
        wrk: wrk_figures,
    })
}

fn main() -> anyhow::Result<()> {
    let ours_bin =
        std::env::var("DRIFTLESS_BIN").unwrap_or_else(|_| "target/release/driftless".into());
    if !std::path::Path::new(&ours_bin).exists() {
        bail!("{ours_bin} missing: cargo build --release -p driftless-agent");
    }
    if !std::path::Path::new(NODE_EXPORTER).exists() {
        bail!("{NODE_EXPORTER} missing: run .ci/tools/facts.sh");
    }
    let config = std::env::temp_dir().join(format!("bench-facts-{}", std::process::id()));
    std::fs::create_dir_all(&config)?;

    let port = free_port()?;
    let mut cmd = Command::new(NODE_EXPORTER);
    cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
    let theirs = Server {
        name: "node_exporter",
        child: cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?,
        port,
    };
    wait_up(theirs.port)?;
    let port = free_port()?;
    let ours = Server {
        name: "driftless",
        child: Command::new(&ours_bin)
            .args(["agent", "--config"])
            .arg(&config)
            .args([
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--log-level",
                "warn",
            ])
            .env("DRIFTLESS_ENV_FILE", "/dev/null")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
        port,
    };
    wait_up(ours.port)?;

    let t = measure(&theirs)?;
    let o = measure(&ours)?;
    let _ = std::fs::remove_dir_all(&config);

    println!();
    println!(
        "{:<34} {:>14} {:>14} {:>8}",
        "", "driftless", "node_exporter", "ratio"
    );
    let row = |name: &str, a: f64, b: f64| {
        println!("{name:<34} {a:>14.3} {b:>14.3} {:>7.2}x", a / b);
    };
    row(
        "CPU ms per scrape",
        o.cpu_ms_per_scrape,
        t.cpu_ms_per_scrape,
    );
    row(
        &format!("RSS MB after {SCRAPES} scrapes"),
        o.rss_mb,
        t.rss_mb,
    );
    row("  of which anonymous (RssAnon) MB", o.anon_mb, t.anon_mb);
    row("exposition bytes", o.bytes as f64, t.bytes as f64);
    for (a, b) in o.wrk.iter().zip(&t.wrk) {
        row(&format!("p50 ms, wrk {} conn", a.0), a.1, b.1);
        row(&format!("p99 ms, wrk {} conn", a.0), a.2, b.2);
        row(&format!("requests/s, wrk {} conn", a.0), a.3, b.3);
    }
    println!();
    println!(
        "goals: CPU <= 0.5x: {}; RSS <= 10 MB: {}; p99 no worse: {}",
        o.cpu_ms_per_scrape <= 0.5 * t.cpu_ms_per_scrape,
        o.rss_mb <= 10.0,
        o.wrk.iter().zip(&t.wrk).all(|(a, b)| a.2 <= b.2)
    );
    Ok(())
}
