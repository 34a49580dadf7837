//! `make bench-validate`: `driftless validate` on a configuration of 10,000 tasks (five
//! ApplyPolicies of 2,000 tasks, the most one policy may hold: templated files, inline files,
//! `lineInFile`, `blockInFile`, `sysctl`, directories and services), beside CFEngine's own
//! validator, `cf-promises`, on the same number of `files` promises.
//!
//! Each tool runs `BENCH_RUNS` times (default 5) under `/usr/bin/time`, which reads the child's
//! resource usage (`wait4`'s rusage); the figures are the median wall time and the mean CPU time
//! (user + system — a busy machine disturbs it less than wall time; averaging over the runs
//! gets below the 10 ms steps `/usr/bin/time` prints). The goal: 10,000 tasks in < 100 ms CPU.
//!
//! `BENCH_TASKS` sets the number of tasks; `DRIFTLESS_BIN` the agent binary (default
//! `target/release/driftless`); `BENCH_KEEP=1` keeps the work directory (to profile the same
//! configuration). The peer is installed by `.ci/tools/apply.sh bench`; without it
//! the comparison is skipped and said so.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _};
use driftless_e2e::procs::{env_count, time_fields};

/// Tasks in one ApplyPolicy at most (`spec.tasks` has `maxItems: 2000`).
const PER_POLICY: usize = 2000;

/// One task of the mix; `i` numbers it across the whole configuration.
fn task(out: &mut String, i: usize) {
    let _ = match i % 20 {
        0..=13 => writeln!(
            out,
            "    - name: file-{i}\n      file: {{path: /etc/app/conf-{i}.conf, mode: \"0644\", template: \"name={{{{ vars.prefix }}}}-{i}\\nindex={i}\\n\"}}"
        ),
        14 => writeln!(
            out,
            "    - name: inline-{i}\n      file: {{path: /etc/app/inline-{i}.conf, content: \"index={i}\\n\", owner: root}}"
        ),
        15 => writeln!(
            out,
            "    - name: line-{i}\n      lineInFile: {{path: /etc/app/lines.conf, regexp: \"^key{i}=\", line: \"key{i}=value{i}\", create: true}}"
        ),
        16 => writeln!(
            out,
            "    - name: block-{i}\n      blockInFile: {{path: /etc/app/blocks.conf, block: \"k{i}=v{i}\\n\", marker: \"# {{mark}} block {i}\"}}"
        ),
        17 => writeln!(
            out,
            "    - name: sysctl-{i}\n      sysctl: {{name: net.bench.p{i}, value: \"{i}\", live: false, file: /etc/sysctl.d/99-bench.conf}}"
        ),
        18 => writeln!(
            out,
            "    - name: dir-{i}\n      directory: {{path: /srv/app-{i}, mode: \"0755\"}}"
        ),
        _ => writeln!(
            out,
            "    - name: service-{i}\n      service: {{name: app-{i}.service, enabled: true}}\n      when: facts.os.family == \"debian\""
        ),
    };
}

/// The configuration: one file per policy of at most [`PER_POLICY`] tasks.
fn driftless_config(dir: &Path, tasks: usize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (n, start) in (0..tasks).step_by(PER_POLICY).enumerate() {
        let mut out = format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata: {{name: bench-{n}}}\nspec:\n  vars: {{prefix: bench}}\n  tasks:\n"
        );
        for i in start..(start + PER_POLICY).min(tasks) {
            task(&mut out, i);
        }
        std::fs::write(dir.join(format!("policy-{n:02}.yaml")), out)?;
    }
    Ok(())
}

/// The same number of promises for `cf-promises`: one `files` promise per task, each with its
/// own content (CFEngine has no per-promise templates; `edit_line` bundles stand in).
fn cfengine_policy(tasks: usize) -> String {
    let mut out = String::from(
        "body common control { bundlesequence => { \"main\" }; }\n\
         body perms m644 { mode => \"0644\"; }\n\
         body edit_defaults empty { empty_file_before_editing => \"true\"; edit_backup => \"false\"; }\n\
         bundle edit_line content(prefix, i) { insert_lines: \"name=$(prefix)-$(i)\"; \"index=$(i)\"; }\n\
         bundle agent main\n{\n  vars:\n    \"prefix\" string => \"bench\";\n  files:\n",
    );
    for i in 0..tasks {
        let _ = writeln!(
            out,
            "    \"/etc/app/conf-{i}.conf\" create => \"true\", perms => m644, edit_defaults => empty, edit_line => content(\"$(prefix)\", \"{i}\");"
        );
    }
    out.push_str("}\n");
    out
}

/// One run: wall seconds and CPU seconds (user + system) of the child, from `/usr/bin/time`.
fn timed(program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<(f64, f64)> {
    let out = Command::new("/usr/bin/time")
        .args(["-f", "TIME %e %U %S", "--", program])
        .args(args)
        .env_remove("DRIFTLESS_CONFIG")
        .env_remove("DRIFTLESS_ENV_FILE")
        .output()
        .context("cannot run /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{program} failed:\n{}",
            stderr.lines().take(20).collect::<Vec<_>>().join("\n")
        );
    }
    let fields = time_fields(&stderr)?;
    let [wall, user, system] = fields[..] else {
        bail!("unexpected timing fields {fields:?}");
    };
    Ok((wall, user + system))
}

/// Median wall seconds and mean CPU seconds over `runs` runs.
fn measure(program: &str, args: &[&std::ffi::OsStr], runs: usize) -> anyhow::Result<(f64, f64)> {
    let mut walls = Vec::new();
    let mut cpu = 0.0;
    for _ in 0..runs {
        let (wall, c) = timed(program, args)?;
        walls.push(wall);
        cpu += c;
    }
    walls.sort_by(f64::total_cmp);
    Ok((walls[walls.len() / 2], cpu / runs as f64))
}

fn main() -> anyhow::Result<()> {
    let tasks = env_count("BENCH_TASKS", 10_000);
    let runs = env_count("BENCH_RUNS", 5).max(1);
    let bin = std::env::var("DRIFTLESS_BIN").unwrap_or_else(|_| "target/release/driftless".into());
    if !Path::new(&bin).exists() {
        bail!("{bin} is missing: cargo build --release -p driftless-agent");
    }
    if !Path::new("/usr/bin/time").exists() {
        bail!("/usr/bin/time is missing: run .ci/tools/apply.sh bench");
    }
    let work = std::env::temp_dir().join(format!("bench-validate-{}", std::process::id()));
    let config = work.join("config");
    driftless_config(&config, tasks)?;
    let env = work.join("empty.env");
    std::fs::write(&env, "")?;
    println!(
        "configuration: {tasks} tasks in {} ApplyPolicies ({runs} runs each; work dir {})",
        tasks.div_ceil(PER_POLICY),
        work.display()
    );

    let args = [
        "validate".as_ref(),
        "--config".as_ref(),
        config.as_os_str(),
        "--env-file".as_ref(),
        env.as_os_str(),
    ];
    let (wall, cpu) = measure(&bin, &args, runs)?;
    println!(
        "\n{:<22} {:>10} {:>10} {:>12}",
        "tool", "wall ms", "cpu ms", "tasks/s cpu"
    );
    let row = |name: &str, wall: f64, cpu: f64| {
        println!(
            "{name:<22} {:>10.1} {:>10.1} {:>12.0}",
            wall * 1000.0,
            cpu * 1000.0,
            tasks as f64 / cpu.max(0.0005)
        );
    };
    row("driftless validate", wall, cpu);

    let peer = "/usr/bin/cf-promises";
    if Path::new(peer).exists() {
        let policy = work.join("bench.cf");
        std::fs::write(&policy, cfengine_policy(tasks))?;
        let (p_wall, p_cpu) = measure(peer, &["-f".as_ref(), policy.as_os_str()], runs)?;
        row("cf-promises", p_wall, p_cpu);
        println!(
            "driftless / cf-promises: wall {:.2}x, cpu {:.2}x",
            wall / p_wall.max(0.0005),
            cpu / p_cpu.max(0.0005)
        );
    } else {
        println!("{peer} not installed (.ci/tools/apply.sh bench): peer comparison skipped");
    }
    println!(
        "goal: {tasks} tasks validated in < 100 ms CPU: {} ({:.1} ms)",
        if cpu < 0.1 { "met" } else { "NOT met" },
        cpu * 1000.0
    );
    if std::env::var_os("BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}
