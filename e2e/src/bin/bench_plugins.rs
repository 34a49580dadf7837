//! `make bench-plugins`: what a WebAssembly plugin costs against the built-in equivalent, in one
//! run, with the example plugins that `plugins/build.sh` builds (docs/plugins.md).
//!
//! - **Log filter**: the same input (`BENCH_EVENTS` lines, default 200,000; every tenth holds
//!   `DEBUG`, none holds an e-mail address, so dropping is the only thing the plugin does)
//!   through two `driftless logs` processes, one after the other: the built-in
//!   `exclude: {field: message, pattern: DEBUG}`, then the `redact` plugin with
//!   `{drop: DEBUG}`. File source from the beginning, raw file sink; a run ends when the sink
//!   holds every expected byte, and both outputs must hold exactly the non-`DEBUG` lines.
//!   Figures: events delivered, CPU seconds of the process (user + system, /proc/PID/stat),
//!   input events per CPU second, peak RSS, and the ratio plugin / built-in.
//! - **Task call overhead**: `BENCH_TASKS` tasks (default 200) as `motd` plugin tasks and as
//!   built-in `file` tasks with the same paths and content, each on its own `--root`: the first
//!   (converging) `driftless apply`, then `BENCH_RUNS` converged runs (default 5; the mean CPU
//!   gets below the 10 ms steps `/usr/bin/time` prints), each checked with `--output json` to
//!   report every task unchanged. Figures: CPU per run and per task, and the plugin's overhead
//!   per task ((plugin − built-in) / tasks).
//!
//! Compiling: the plugins get a fresh `--plugin-cache`; `driftless plugins validate` compiles
//! each module once before anything is measured (its CPU is printed: the cold-cache cost), so
//! every measured process loads the machine code from the cache. The output says, per
//! measured run, whether the cache held the module before it and whether the run wrote to it.
//!
//! `DRIFTLESS_BIN` overrides the agent binary (default `target/release/driftless`);
//! `BENCH_KEEP=1` keeps the work directory. The toolchains for `plugins/build.sh` are installed
//! by `.ci/tools/plugins.sh`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use driftless_e2e::procs::{cpu_seconds, env_count, proc_mb, time_fields, Process};
use driftless_e2e::repo_root;
use serde_json::Value;

/// Tasks in one ApplyPolicy at most (`spec.tasks` has `maxItems: 2000`).
const PER_POLICY: usize = 2000;

const LINE_INFO: &str =
    "2024-05-01T10:00:00.000Z INFO request served path=/api/v1/items status=200 bytes=5123 took=12ms";
const LINE_DEBUG: &str =
    "2024-05-01T10:00:00.000Z DEBUG cache lookup key=items/42 hit=true took=1ms";

/// One run's wall seconds, CPU seconds (user + system) and peak RSS (MiB).
#[derive(Clone, Copy, Default)]
struct Run {
    wall: f64,
    cpu: f64,
    rss: f64,
}

/// What a timed command printed.
struct Output {
    run: Run,
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `command` under `/usr/bin/time -f "TIME %e %U %S %M"`, keeping its output.
fn timed(command: &Command) -> anyhow::Result<Output> {
    let mut time = Command::new("/usr/bin/time");
    time.args(["-f", "TIME %e %U %S %M", "--"])
        .arg(command.get_program())
        .args(command.get_args());
    for (k, v) in command.get_envs() {
        if let Some(v) = v {
            time.env(k, v);
        }
    }
    let out = time
        .output()
        .context("cannot run /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let fields = time_fields(&stderr)?;
    let [wall, user, system, kib] = fields[..] else {
        bail!("unexpected timing fields {fields:?}");
    };
    Ok(Output {
        run: Run {
            wall,
            cpu: user + system,
            rss: kib / 1024.0,
        },
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: stderr
            .lines()
            .filter(|l| !l.starts_with("TIME ") && !l.starts_with("Command exited"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// The last `n` lines of a text.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The hex SHA-256 of a file (`sha256sum`): the plugin cache names compiled code after it.
fn sha256(path: &Path) -> anyhow::Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("cannot run sha256sum")?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("sha256sum {}: no digest", path.display()))
}

/// The compiled-code cache as seen around one measured run.
struct Cache {
    dir: PathBuf,
}

impl Cache {
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cwasm"))
            .collect();
        names.sort();
        names
    }

    /// Whether the cache holds compiled code of the module with digest `sha`.
    fn holds(&self, sha: &str) -> bool {
        self.files().iter().any(|n| n.starts_with(sha))
    }

    /// Runs `body` and says whether the cache held `sha` before it and whether it wrote to it.
    fn around<T>(
        &self,
        sha: &str,
        body: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<(T, String)> {
        let before = self.files();
        let warm = self.holds(sha);
        let value = body()?;
        let wrote = self.files() != before;
        let state = match (warm, wrote) {
            (true, false) => "warm",
            (true, true) => "warm, wrote",
            (false, true) => "cold, compiled",
            (false, false) => "cold, not cached",
        };
        Ok((value, state.to_owned()))
    }
}

/// Everything the driftless commands share.
struct Agent {
    bin: PathBuf,
    plugin_dir: PathBuf,
    cache: Cache,
}

impl Agent {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.args([
            "--log-format",
            "text",
            "--log-level",
            "warn",
            "--plugin-dir",
        ])
        .arg(&self.plugin_dir)
        .arg("--plugin-cache")
        .arg(&self.cache.dir);
        c
    }
}

/// Builds the example plugins into `out` with `plugins/build.sh`.
fn build_plugins(out: &Path) -> anyhow::Result<f64> {
    let script = repo_root().join("plugins/build.sh");
    let start = Instant::now();
    let built = Command::new(&script)
        .arg(out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !built.status.success() {
        bail!(
            "plugins/build.sh {} failed ({}); the toolchains come from .ci/tools/plugins.sh:\n{}",
            out.display(),
            built.status,
            tail(&String::from_utf8_lossy(&built.stderr), 20)
        );
    }
    for name in ["redact", "motd"] {
        let wasm = out.join(format!("{name}.wasm"));
        if !wasm.exists() {
            bail!(
                "plugins/build.sh succeeded but {} is missing",
                wasm.display()
            );
        }
    }
    Ok(start.elapsed().as_secs_f64())
}

/// `driftless plugins validate NAME`: compiles the module into the cache when it is not there.
fn validate(agent: &Agent, name: &str) -> anyhow::Result<Run> {
    let mut c = agent.command();
    c.args(["plugins", "validate", name]);
    let out = timed(&c)?;
    if !out.success {
        bail!(
            "driftless plugins validate {name} failed:\n{}{}",
            out.stdout,
            tail(&out.stderr, 20)
        );
    }
    Ok(out.run)
}

// ---------------------------------------------------------------------------------------------
// Log filter

/// Writes `events` lines, every tenth a `DEBUG` line; returns the bytes and line count of the
/// lines that must come out (the others).
fn write_input(path: &Path, events: usize) -> anyhow::Result<(u64, u64)> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let (mut kept_bytes, mut kept) = (0u64, 0u64);
    for n in 0..events {
        let line = if n % 10 == 0 {
            format!("{LINE_DEBUG} seq={n:010}\n")
        } else {
            format!("{LINE_INFO} seq={n:010}\n")
        };
        if n % 10 != 0 {
            kept_bytes += line.len() as u64;
            kept += 1;
        }
        file.write_all(line.as_bytes())?;
    }
    file.flush()?;
    Ok((kept_bytes, kept))
}

struct LogFigures {
    delivered: u64,
    wall: f64,
    cpu: f64,
    rss: f64,
}

/// Runs one `driftless logs` process with `transform` until its raw file sink holds
/// `expect_bytes`, then checks that it holds exactly `expect_lines` lines and no `DEBUG` one.
fn log_run(
    agent: &Agent,
    work: &Path,
    root: &Path,
    name: &str,
    transform: &str,
    expect_bytes: u64,
    expect_lines: u64,
) -> anyhow::Result<LogFigures> {
    let config = work.join(format!("{name}-config"));
    let out_dir = work.join(format!("{name}-out"));
    std::fs::create_dir_all(&config)?;
    std::fs::write(
        config.join("logs.yaml"),
        format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: LogPipeline\nmetadata: {{name: {name}}}\nspec:\n  sources:\n    - name: app\n      include: [/var/log/bench.log]\n      readFrom: Beginning\n  transforms:\n    - {transform}\n  sinks:\n    - name: out\n      file: {{directory: {}, raw: true, maxBytes: 100000000000}}\n",
            out_dir.display()
        ),
    )?;
    let log = work.join(format!("{name}.log"));
    let mut command = agent.command();
    command
        .args(["logs", "--config"])
        .arg(&config)
        .arg("--root")
        .arg(root)
        .arg("--state-dir")
        .arg(work.join(format!("{name}-state")))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let mut process = Process {
        child: command.spawn().context("starting driftless logs")?,
        log: log.clone(),
    };
    let pid = process.child.id();
    let out_file = out_dir.join(format!("{name}-app.log"));
    let size = || std::fs::metadata(&out_file).map(|m| m.len()).unwrap_or(0);
    let agent_log = || tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20);

    // Ends when the sink holds every expected byte; fails when it stops growing for 10 s.
    let start = Instant::now();
    let (mut last, mut last_change) = (0, start);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if let Ok(Some(status)) = process.child.try_wait() {
            bail!(
                "{name}: driftless logs exited early ({status}); its log:\n{}",
                agent_log()
            );
        }
        let now = size();
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        if now >= expect_bytes {
            break;
        }
        if last_change.elapsed() > Duration::from_secs(10) {
            bail!(
                "{name}: the sink stopped at {now} of {expect_bytes} bytes; the agent's log:\n{}",
                agent_log()
            );
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("{name}: no completion after 600 s");
        }
    }
    let figures = LogFigures {
        delivered: 0,
        wall: last_change.duration_since(start).as_secs_f64(),
        cpu: cpu_seconds(pid).context("no /proc/PID/stat for driftless logs")?,
        rss: proc_mb(pid, "VmHWM:").unwrap_or(0.0),
    };
    // Anything more than expected would show up now.
    std::thread::sleep(Duration::from_millis(300));
    process.kill();
    let text = std::fs::read_to_string(&out_file)?;
    let delivered = text.lines().count() as u64;
    let debug = text.lines().filter(|l| l.contains("DEBUG")).count();
    if delivered != expect_lines || debug != 0 {
        bail!(
            "{name}: {delivered} lines delivered, {debug} of them DEBUG; expected {expect_lines} and none (a failing plugin passes events on unchanged); the agent's log:\n{}",
            agent_log()
        );
    }
    let _ = std::fs::remove_dir_all(&out_dir);
    Ok(LogFigures {
        delivered,
        ..figures
    })
}

// ---------------------------------------------------------------------------------------------
// Task call overhead

/// The configuration: `tasks` tasks, `task(i)` each, in one file per ApplyPolicy of at most
/// [`PER_POLICY`] tasks.
fn write_policies(dir: &Path, tasks: usize, task: impl Fn(usize) -> String) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (n, first) in (0..tasks).step_by(PER_POLICY).enumerate() {
        let mut out = format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata: {{name: bench-{n}}}\nspec:\n  tasks:\n"
        );
        for i in first..(first + PER_POLICY).min(tasks) {
            let _ = writeln!(out, "    - name: t{i}\n      {}", task(i));
        }
        std::fs::write(dir.join(format!("policy-{n:02}.yaml")), out)?;
    }
    Ok(())
}

fn content(i: usize) -> String {
    format!("bench {i}\\n")
}

struct ApplyFigures {
    first: Run,
    first_cache: String,
    noop: Run,
    noop_cache: String,
}

/// The statuses of every task of an `apply --output json` report; fails on a task that failed,
/// naming it and its message.
fn statuses(name: &str, out: &Output) -> anyhow::Result<Vec<String>> {
    let report: Value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "{name}: apply printed no JSON report (exit {}); stderr:\n{}",
            if out.success { "0" } else { "non-zero" },
            tail(&out.stderr, 20)
        )
    })?;
    let mut statuses = Vec::new();
    let mut failed = Vec::new();
    for policy in report["policies"].as_array().into_iter().flatten() {
        for task in policy["tasks"].as_array().into_iter().flatten() {
            let status = task["status"].as_str().unwrap_or("?").to_owned();
            if status == "failed" && failed.len() < 5 {
                failed.push(format!(
                    "  {}: {}",
                    task["task"].as_str().unwrap_or("?"),
                    task["message"].as_str().unwrap_or("(no message)")
                ));
            }
            statuses.push(status);
        }
    }
    if !failed.is_empty() || !out.success {
        bail!(
            "{name}: apply failed; first failed tasks:\n{}\nstderr:\n{}",
            failed.join("\n"),
            tail(&out.stderr, 20)
        );
    }
    Ok(statuses)
}

fn expect_all(
    name: &str,
    run: &str,
    statuses: &[String],
    want: &str,
    tasks: usize,
) -> anyhow::Result<()> {
    let matching = statuses.iter().filter(|s| *s == want).count();
    if statuses.len() != tasks || matching != tasks {
        let other = statuses
            .iter()
            .find(|s| *s != want)
            .map_or("", String::as_str);
        bail!(
            "{name}: the {run} run reported {} tasks, {matching} {want} (expected {tasks}, all {want}; one was {other:?})",
            statuses.len()
        );
    }
    Ok(())
}

fn apply_runs(
    agent: &Agent,
    work: &Path,
    name: &str,
    task: impl Fn(usize) -> String,
    tasks: usize,
    runs: usize,
    sha: Option<&str>,
) -> anyhow::Result<ApplyFigures> {
    let config = work.join(format!("{name}-config"));
    let root = work.join(format!("{name}-root"));
    write_policies(&config, tasks, task)?;
    std::fs::create_dir_all(root.join("etc/m"))?;
    let apply = || {
        let mut c = agent.command();
        c.args(["apply", "--output", "json", "--config"])
            .arg(&config)
            .arg("--root")
            .arg(&root)
            .arg("--audit-spool")
            .arg(work.join(format!("{name}-spool")))
            .arg("--env-file")
            .arg("/dev/null");
        c
    };
    let cached = |body: &mut dyn FnMut() -> anyhow::Result<Output>| match sha {
        Some(sha) => agent.cache.around(sha, body),
        None => body().map(|o| (o, "-".to_owned())),
    };
    let (first, first_cache) = cached(&mut || timed(&apply()))?;
    expect_all(name, "first", &statuses(name, &first)?, "changed", tasks)?;
    let mut noop = Run::default();
    let mut noop_cache = String::new();
    for _ in 0..runs {
        let (out, state) = cached(&mut || timed(&apply()))?;
        expect_all(
            name,
            "converged",
            &statuses(name, &out)?,
            "unchanged",
            tasks,
        )?;
        noop.wall += out.run.wall / runs as f64;
        noop.cpu += out.run.cpu / runs as f64;
        noop.rss = noop.rss.max(out.run.rss);
        if noop_cache.is_empty() || (state != "warm" && state != "-") {
            noop_cache = state;
        }
    }
    Ok(ApplyFigures {
        first: first.run,
        first_cache,
        noop,
        noop_cache,
    })
}

fn check_same(a: &Path, b: &Path, tasks: usize) -> anyhow::Result<()> {
    for i in [0, tasks / 2, tasks - 1] {
        let rel = format!("etc/m/{i}");
        let x = std::fs::read_to_string(a.join(&rel))
            .with_context(|| format!("{}", a.join(&rel).display()))?;
        let y = std::fs::read_to_string(b.join(&rel))
            .with_context(|| format!("{}", b.join(&rel).display()))?;
        if x != y || x != format!("bench {i}\n") {
            bail!("{rel}: {x:?} in {}, {y:?} in {}", a.display(), b.display());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let events = env_count("BENCH_EVENTS", 200_000).max(10);
    let tasks = env_count("BENCH_TASKS", 200).max(1);
    let runs = env_count("BENCH_RUNS", 5).max(1);
    let bin = std::env::var_os("DRIFTLESS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/driftless"));
    if !bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p driftless-agent --bin driftless",
            bin.display()
        );
    }
    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is missing (apt-get install time)");
    }
    let work = std::env::temp_dir().join(format!("bench-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let plugin_dir = work.join("plugins");
    let build_s = build_plugins(&plugin_dir)?;
    let agent = Agent {
        bin,
        plugin_dir: plugin_dir.clone(),
        cache: Cache {
            dir: work.join("plugin-cache"),
        },
    };
    let redact_sha = sha256(&plugin_dir.join("redact.wasm"))?;
    let motd_sha = sha256(&plugin_dir.join("motd.wasm"))?;
    let size = |n: &str| {
        std::fs::metadata(plugin_dir.join(n))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    println!(
        "plugins: redact.wasm {} bytes (C), motd.wasm {} bytes (Rust), built by plugins/build.sh in {build_s:.1} s; work dir {}",
        size("redact.wasm"),
        size("motd.wasm"),
        work.display()
    );

    // Warm-up: compile each module into the fresh cache, then load it from there once.
    let mut warm_up = Vec::new();
    for (name, sha) in [("redact", &redact_sha), ("motd", &motd_sha)] {
        if agent.cache.holds(sha) {
            bail!(
                "the fresh plugin cache {} already holds {name}",
                agent.cache.dir.display()
            );
        }
        let cold = validate(&agent, name)?;
        if !agent.cache.holds(sha) {
            bail!(
                "driftless plugins validate {name} did not write compiled code to {}",
                agent.cache.dir.display()
            );
        }
        let warm = validate(&agent, name)?;
        warm_up.push((name, cold, warm));
    }
    println!("\nwarm-up: `driftless plugins validate NAME` with a fresh --plugin-cache (compiles), then again (loads from the cache)");
    println!(
        "{:<8} {:>14} {:>14} {:>14}",
        "plugin", "cold cpu s", "cold wall s", "cached cpu s"
    );
    for (name, cold, warm) in &warm_up {
        println!(
            "{name:<8} {:>14.2} {:>14.2} {:>14.2}",
            cold.cpu, cold.wall, warm.cpu
        );
    }

    // Log filter.
    let root = work.join("logs-root");
    std::fs::create_dir_all(root.join("var/log"))?;
    let (expect_bytes, expect_lines) = write_input(&root.join("var/log/bench.log"), events)?;
    let builtin = log_run(
        &agent,
        &work,
        &root,
        "builtin",
        "exclude: {field: message, pattern: DEBUG}",
        expect_bytes,
        expect_lines,
    )?;
    let (wasm, wasm_cache) = agent.cache.around(&redact_sha, || {
        log_run(
            &agent,
            &work,
            &root,
            "wasm",
            "plugin: {name: redact, config: {drop: DEBUG}}",
            expect_bytes,
            expect_lines,
        )
    })?;
    println!(
        "\nlog filter: {events} lines in, {} with DEBUG, {expect_lines} expected out; file source from the beginning → raw file sink, one process each",
        events as u64 - expect_lines
    );
    println!(
        "{:<34} {:>9} {:>8} {:>8} {:>15} {:>9} {:>18}",
        "transform", "delivered", "cpu s", "wall s", "in events/cpu s", "peak MiB", "plugin cache"
    );
    let per_cpu = |f: &LogFigures| events as f64 / f.cpu.max(0.01);
    for (label, f, cache) in [
        ("built-in exclude", &builtin, "-"),
        ("wasm redact {drop: DEBUG}", &wasm, wasm_cache.as_str()),
    ] {
        println!(
            "{label:<34} {:>9} {:>8.2} {:>8.2} {:>15.0} {:>9.1} {:>18}",
            f.delivered,
            f.cpu,
            f.wall,
            per_cpu(f),
            f.rss,
            cache
        );
    }
    println!(
        "ratio wasm / built-in (events per cpu s): {:.2}x; plugin cost {:.2} µs per event ((cpu difference) / {events} events)",
        per_cpu(&wasm) / per_cpu(&builtin),
        (wasm.cpu - builtin.cpu) * 1e6 / events as f64
    );

    // Task call overhead.
    let file_task = |i| format!("file: {{path: /etc/m/{i}, content: \"{}\"}}", content(i));
    let motd_task = |i| {
        format!(
            "plugin: {{name: motd, config: {{path: /etc/m/{i}, text: \"{}\"}}, grants: {{write: [/etc/m]}}}}",
            content(i)
        )
    };
    let file = apply_runs(&agent, &work, "file", file_task, tasks, runs, None)?;
    let motd = apply_runs(
        &agent,
        &work,
        "motd",
        motd_task,
        tasks,
        runs,
        Some(&motd_sha),
    )?;
    check_same(&work.join("file-root"), &work.join("motd-root"), tasks)?;
    println!(
        "\ntask call overhead: {tasks} tasks writing /etc/m/N; first run converges, then the mean of {runs} converged runs (all unchanged)"
    );
    println!(
        "{:<18} {:>11} {:>12} {:>11} {:>12} {:>15} {:>9} {:>18}",
        "tasks",
        "first cpu s",
        "first wall s",
        "no-op cpu s",
        "no-op wall s",
        "no-op µs/task",
        "peak MiB",
        "plugin cache"
    );
    for (label, f) in [("built-in file", &file), ("motd plugin", &motd)] {
        println!(
            "{label:<18} {:>11.2} {:>12.2} {:>11.3} {:>12.3} {:>15.0} {:>9.1} {:>18}",
            f.first.cpu,
            f.first.wall,
            f.noop.cpu,
            f.noop.wall,
            f.noop.cpu * 1e6 / tasks as f64,
            f.first.rss.max(f.noop.rss),
            if f.first_cache == f.noop_cache {
                f.first_cache.clone()
            } else {
                format!("{} / {}", f.first_cache, f.noop_cache)
            }
        );
    }
    println!(
        "plugin overhead per task: {:.0} µs in a converged run (plan), {:.0} µs in the first run (plan + apply)",
        (motd.noop.cpu - file.noop.cpu) * 1e6 / tasks as f64,
        (motd.first.cpu - file.first.cpu) * 1e6 / tasks as f64
    );
    println!(
        "plugin cache: \"warm\" = the cache held the module's compiled code before the run and the run wrote nothing to it"
    );

    if std::env::var_os("BENCH_KEEP").is_some() {
        println!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
