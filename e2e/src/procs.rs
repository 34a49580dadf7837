//! Real Driftless processes for the cluster tests: the binaries (built on demand), free ports,
//! node agents on temporary host roots, and operators. Every process is killed when its handle
//! is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::{repo_root, Scope};

/// Builds `bin` of `package` (debug) and returns its path.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    let root = repo_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", package, "--bin", bin])
        .current_dir(&root)
        .status()
        .expect("cargo build");
    assert!(status.success(), "cargo build -p {package} failed");
    target.join("debug").join(bin)
}

/// Binary `name` as a benchmark's make target builds it: the release build, or the debug
/// build when there is none.
pub fn built_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let release = target.join("release").join(name);
    if release.exists() {
        release
    } else {
        target.join("debug").join(name)
    }
}

/// Linux `USER_HZ`: the unit of utime and stime in /proc/<pid>/stat.
const USER_HZ: f64 = 100.0;

/// User + system CPU seconds of a process.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// A port nothing listens on, on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A `kB` field of /proc/<pid>/status (`VmHWM`, `VmRSS`, ...), in MB.
pub fn proc_mb(pid: u32, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib as f64 / 1024.0)
}

/// A child process killed when dropped.
pub struct Process {
    /// The process.
    pub child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Process {
    /// Kills it now (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One agent: its node, host root and HTTP port.
pub struct Agent {
    /// Its `NODE_NAME`.
    pub node: String,
    /// Its host root (`--root`).
    pub root: PathBuf,
    /// Its `/metrics` port.
    pub port: u16,
    /// The process.
    pub process: Process,
}

/// Starts `driftless agent --kubernetes` for `node` on a new root under `dir`, reporting to the
/// scope's namespace. `kubeconfig` overrides `KUBECONFIG`.
pub fn start_agent(
    bin: &Path,
    scope: &Scope,
    node: &str,
    dir: &Path,
    kubeconfig: Option<&Path>,
) -> anyhow::Result<Agent> {
    start_agent_with(bin, scope, node, dir, kubeconfig, &[])
}

/// [`start_agent`] with more environment variables for the agent.
pub fn start_agent_with(
    bin: &Path,
    scope: &Scope,
    node: &str,
    dir: &Path,
    kubeconfig: Option<&Path>,
    env: &[(&str, &Path)],
) -> anyhow::Result<Agent> {
    let root = dir.join(node).join("root");
    let state = dir.join(node).join("state");
    for d in [root.join("etc"), root.join("var/log"), state.clone()] {
        std::fs::create_dir_all(&d)?;
    }
    let port = free_port();
    let log = dir.join(format!("{node}.log"));
    let mut command = Command::new(bin);
    command
        .args(["--log-format", "text", "agent", "--kubernetes", "--root"])
        .arg(&root)
        .arg("--state-dir")
        .arg(&state)
        .arg("--audit-spool")
        .arg(state.join("audit"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("NODE_NAME", node)
        .env("POD_NAMESPACE", &scope.namespace)
        .env("DRIFTLESS_REPORT_INTERVAL_SECONDS", "10")
        .env("DRIFTLESS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    if let Some(k) = kubeconfig {
        command.env("KUBECONFIG", k);
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().context("starting driftless agent")?;
    Ok(Agent {
        node: node.to_owned(),
        root,
        port,
        process: Process { child, log },
    })
}

/// Starts `driftless-operator run` in the scope's namespace as `identity`, without leader
/// election; its log is `dir/<identity>.log`.
pub fn start_operator(
    bin: &Path,
    scope: &Scope,
    dir: &Path,
    identity: &str,
) -> anyhow::Result<Process> {
    let log = dir.join(format!("{identity}.log"));
    let child = Command::new(bin)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--namespace",
            &scope.namespace,
            "--identity",
            identity,
            "--runner-image",
            "driftless/operator:e2e",
            "--no-leader-election",
        ])
        .env("DRIFTLESS_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .context("starting driftless-operator")?;
    Ok(Process { child, log })
}

/// Prints the last 40 lines of every `*.log` in `dir` (for a failed test).
pub fn print_logs(dir: &Path) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("--- {}:", path.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A benchmark's numeric setting from the environment variable `name`, or `default` when it is
/// unset or not a number.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The numbers of the last `TIME ...` line a benchmark's `/usr/bin/time -f "TIME %e %U %S ..."`
/// printed to standard error: wall, user and system seconds and whatever else the format asked.
pub fn time_fields(stderr: &str) -> anyhow::Result<Vec<f64>> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("TIME "))
        .context("no timing line from /usr/bin/time")?;
    line.split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("unexpected timing line {line:?}"))
}
