//! `make bench-logs`: Driftless's log pipeline against rsyslog on this machine, in one run.
//!
//! Scenarios (same input file for both tools):
//! - plain lines, file → file (Driftless `raw: true` file sink; rsyslog imfile → omfile `%msg%`);
//! - JSON lines parsed, file → file (Driftless `format: json` → JSON file sink; rsyslog imfile →
//!   mmjsonparse → omfile `%$!all-json%`);
//! - plain lines, file → TCP (Driftless syslog sink, octet-counted; rsyslog omfwd octet-counted)
//!   to a receiver in this process that counts bytes.
//!
//! Figures: MiB/s per core (input MiB / CPU seconds of the tool), CPU seconds per GB, wall
//! MiB/s, peak RSS (VmHWM), and Driftless's idle RSS. `BENCH_MB` sets the input size (default 100).
//! Needs `target/release/driftless` and `rsyslogd` (`.ci/tools/logs.sh`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

const LINE_PLAIN: &str =
    "2024-05-01T10:00:00.000Z INFO request served path=/api/v1/items status=200 bytes=5123 took=12ms";

struct Figures {
    wall: f64,
    cpu: f64,
    peak_rss_kib: u64,
}

fn ticks_per_second() -> f64 {
    // Linux's USER_HZ is 100 on every architecture we run on.
    100.0
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let stime: f64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (utime + stime) / ticks_per_second()
}

fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until `progress()` reaches `target`, or stops moving for 3 s; the time of the last
/// change is the end.
fn measure(child: &mut Child, target: u64, progress: &dyn Fn() -> u64) -> anyhow::Result<Figures> {
    let pid = child.id();
    let start = Instant::now();
    let mut last = 0;
    let mut last_change = start;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(Some(status)) = child.try_wait() {
            bail!("process exited early: {status}");
        }
        let now = progress();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        if now >= target || last_change.elapsed() > Duration::from_secs(3) {
            break;
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("no completion after 600 s");
        }
    }
    let figures = Figures {
        wall: last_change.duration_since(start).as_secs_f64(),
        cpu: cpu_seconds(pid),
        peak_rss_kib: status_kib(pid, "VmHWM:"),
    };
    if target != u64::MAX && last < target * 95 / 100 {
        bail!("only {last} of {target} bytes arrived");
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(figures)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn tcp_receiver() -> anyhow::Result<(u16, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    c.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok((port, count))
}

fn driftless(
    bin: &Path,
    dir: &Path,
    name: &str,
    source: &str,
    sink: &str,
) -> anyhow::Result<Child> {
    let config = dir.join(format!("{name}-config"));
    let root = dir.join(format!("{name}-root"));
    std::fs::create_dir_all(&config)?;
    std::fs::create_dir_all(root.join("var/log"))?;
    std::fs::write(
        config.join("logs.yaml"),
        format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {name}}}\nspec:\n  sources:\n{source}\n  sinks:\n{sink}\n"
        ),
    )?;
    Ok(Command::new(bin)
        .args(["--log-level", "warn", "logs", "--config"])
        .arg(&config)
        .arg("--root")
        .arg(&root)
        .arg("--state-dir")
        .arg(dir.join(format!("{name}-state")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn rsyslog(dir: &Path, name: &str, input: &Path, ruleset: &str) -> anyhow::Result<Child> {
    let work = dir.join(format!("{name}-work"));
    std::fs::create_dir_all(&work)?;
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            r#"global(workDirectory="{work}" maxMessageSize="64k")
module(load="imfile")
module(load="mmjsonparse")
template(name="msg" type="string" string="%msg%\n")
template(name="json" type="string" string="%$!all-json%\n")
input(type="imfile" file="{input}" tag="bench" ruleset="r" freshStartTail="off")
ruleset(name="r") {{
{ruleset}
}}
"#,
            work = work.display(),
            input = input.display()
        ),
    )?;
    let bin = ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("rsyslogd is not installed: run .ci/tools/logs.sh")?;
    Ok(Command::new(bin)
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(dir.join(format!("{name}.pid")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn write_input(path: &Path, mib: u64, json: bool) -> anyhow::Result<u64> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut written = 0u64;
    let mut n = 0u64;
    while written < mib << 20 {
        let line = if json {
            format!(
                "{{\"time\":\"2024-05-01T10:00:00.000Z\",\"level\":\"info\",\"seq\":{n},\"path\":\"/api/v1/items\",\"status\":200,\"took_ms\":12}}\n"
            )
        } else {
            format!("{LINE_PLAIN} seq={n:010}\n")
        };
        file.write_all(line.as_bytes())?;
        written += line.len() as u64;
        n += 1;
    }
    file.flush()?;
    Ok(written)
}

fn report(label: &str, bytes: u64, f: &Figures) -> f64 {
    let mib = bytes as f64 / (1 << 20) as f64;
    let per_core = mib / f.cpu.max(0.001);
    println!(
        "{label:<34} {:>9.1} MiB/s/core {:>8.1} MiB/s wall {:>7.2} CPU s/GB {:>8.1} MiB peak RSS",
        per_core,
        mib / f.wall.max(0.001),
        f.cpu / (bytes as f64 / 1e9),
        f.peak_rss_kib as f64 / 1024.0
    );
    per_core
}

fn main() -> anyhow::Result<()> {
    let mib: u64 = std::env::var("BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = repo.join("target/release/driftless");
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p driftless-agent",
            bin.display()
        );
    }
    let tmp = tempfile_dir()?;
    let dir = tmp.as_path();
    println!(
        "input: {mib} MiB per scenario; figures per tool process (MiB/s per core = MiB / CPU s)\n"
    );

    // Idle RSS.
    let mut idle = driftless(
        &bin,
        dir,
        "idle",
        "    - name: app\n      include: [/var/log/app/*.log]",
        &format!(
            "    - name: out\n      file: {{directory: {}}}",
            dir.join("idle-out").display()
        ),
    )?;
    std::thread::sleep(Duration::from_secs(3));
    let idle_rss = status_kib(idle.id(), "VmRSS:");
    let _ = idle.kill();
    let _ = idle.wait();

    let mut ratios = Vec::new();
    for (scenario, json, tcp) in [
        ("plain file→file", false, false),
        ("json file→file", true, false),
        ("plain file→tcp", false, true),
    ] {
        let slug = scenario.replace(['→', ' '], "-");
        // Driftless.
        let name = format!(
            "d{}",
            slug.replace("file", "f")
                .replace("plain", "p")
                .replace("json", "j")
                .replace("tcp", "t")
                .replace('-', "")
        );
        let root = dir.join(format!("{name}-root"));
        std::fs::create_dir_all(root.join("var/log"))?;
        let input = root.join("var/log/bench.log");
        let bytes = write_input(&input, mib, json)?;
        let out_dir = dir.join(format!("{name}-out"));
        let format = if json { "\n      format: json" } else { "" };
        let (port, count) = tcp_receiver()?;
        let sink = if tcp {
            format!(
                "    - name: out\n      syslog: {{address: \"127.0.0.1:{port}\", protocol: tcp}}"
            )
        } else {
            format!(
                "    - name: out\n      file: {{directory: {}, raw: {}, maxBytes: 100000000000}}",
                out_dir.display(),
                !json
            )
        };
        let mut child = driftless(
            &bin,
            dir,
            &name,
            &format!("    - name: app\n      include: [/var/log/bench.log]{format}"),
            &sink,
        )?;
        let out_file = out_dir.join(format!("{name}-app.log"));
        // JSON output differs in size from the input: wait for it to stop growing instead.
        let target = if json { u64::MAX } else { bytes };
        let d = if tcp {
            let c = count.clone();
            measure(&mut child, bytes, &move || c.load(Ordering::Relaxed))?
        } else {
            measure(&mut child, target, &|| file_size(&out_file))?
        };
        if json {
            check_lines(&out_file, bytes / 120)?;
        }
        // rsyslog on a copy of the same input.
        let rname = format!("r{name}");
        let rinput = dir.join(format!("{rname}.in"));
        std::fs::rename(&input, &rinput)?;
        let rout = dir.join(format!("{rname}.out"));
        let (rport, rcount) = tcp_receiver()?;
        let ruleset = match (json, tcp) {
            (false, false) => format!(r#"action(type="omfile" file="{}" template="msg")"#, rout.display()),
            (true, _) => format!(
                "action(type=\"mmjsonparse\" cookie=\"\")\naction(type=\"omfile\" file=\"{}\" template=\"json\")",
                rout.display()
            ),
            (false, true) => format!(
                r#"action(type="omfwd" target="127.0.0.1" port="{rport}" protocol="tcp" tcp_framing="octet-counted")"#
            ),
        };
        let mut child = rsyslog(dir, &rname, &rinput, &ruleset)?;
        let r = if tcp {
            let c = rcount.clone();
            measure(&mut child, bytes, &move || c.load(Ordering::Relaxed))?
        } else {
            measure(&mut child, target, &|| file_size(&rout))?
        };
        if json {
            check_lines(&rout, bytes / 120)?;
        }
        println!("{scenario}:");
        let dp = report("  driftless", bytes, &d);
        let rp = report("  rsyslog", bytes, &r);
        println!(
            "  ratio (driftless / rsyslog, per core): {:.2}x\n",
            dp / rp.max(0.001)
        );
        ratios.push((scenario, dp / rp.max(0.001), dp));
        let _ = std::fs::remove_file(&rinput);
        let _ = std::fs::remove_dir_all(&out_dir);
        let _ = std::fs::remove_file(&rout);
    }
    println!(
        "driftless idle RSS: {:.1} MiB (goal < 20 MiB)",
        idle_rss as f64 / 1024.0
    );
    for (scenario, ratio, per_core) in ratios {
        println!("{scenario}: {ratio:.2}x rsyslog (goal >= 2x), {per_core:.0} MiB/s per core");
    }
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Fails unless the output has at least `min` lines.
fn check_lines(path: &Path, min: u64) -> anyhow::Result<()> {
    let text = std::fs::read(path)?;
    let lines = text.iter().filter(|b| **b == b'\n').count() as u64;
    if lines < min {
        bail!("{}: {lines} lines, expected at least {min}", path.display());
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("bench-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
