//! `make bench-apply`: the same host policy — 1,000 templated files, 100 `lineInFile`, 50
//! persisted sysctl values — applied by Driftless (`driftless apply`), by `ansible-playbook -c
//! local` (Debian `ansible-core`) and by `cf-agent` (Debian `cfengine3`), each on its own
//! temporary root. Times the first run (everything changes) and the second (nothing changes)
//! and their peak RSS (`/usr/bin/time`), then `driftless drift check` on the converged root
//! (the same loading and checks as the no-op run), then prints ratios.
//!
//! Equivalences: Ansible uses `copy` with templated inline content in a loop (faster than one
//! task per file) and, since `ansible.posix.sysctl` is not in ansible-core and would touch the
//! live kernel, `lineinfile` on the sysctl.d file; CFEngine uses `files` promises with
//! `edit_line` bundles (`insert_lines`, `delete_lines` for the regexp part).
//!
//! Scale with `BENCH_FILES`, `BENCH_LINES`, `BENCH_SYSCTLS` (defaults 1000, 100, 50);
//! `DRIFTLESS_BIN` overrides the agent binary (default `target/release/driftless`);
//! `BENCH_PEERS` picks the peers (comma-separated, default `ansible-playbook,cf-agent`: on a
//! loaded machine Ansible's two runs take most of an hour).
//! Peers are installed by `.ci/tools/apply.sh bench`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use driftless_e2e::procs::{env_count, time_fields};

struct Scale {
    files: usize,
    lines: usize,
    sysctls: usize,
}

fn driftless_policy(s: &Scale) -> String {
    let mut out = String::from(
        "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata: {name: bench}\nspec:\n  vars: {prefix: bench}\n  tasks:\n",
    );
    for i in 1..=s.files {
        let _ = writeln!(
            out,
            "    - name: file-{i}\n      file: {{path: /etc/app/conf-{i}.conf, mode: \"0644\", template: \"name={{{{ vars.prefix }}}}-{i}\\nindex={i}\\n\"}}"
        );
    }
    for k in 1..=s.lines {
        let _ = writeln!(
            out,
            "    - name: line-{k}\n      lineInFile: {{path: /etc/app/lines.conf, regexp: \"^key{k}=\", line: \"key{k}=value{k}\", create: true}}"
        );
    }
    for n in 1..=s.sysctls {
        let _ = writeln!(
            out,
            "    - name: sysctl-{n}\n      sysctl: {{name: net.bench.p{n}, value: \"{n}\", live: false, file: /etc/sysctl.d/99-bench.conf}}"
        );
    }
    out
}

fn ansible_playbook(s: &Scale, root: &Path) -> String {
    format!(
        r#"- hosts: localhost
  connection: local
  gather_facts: false
  vars: {{root: "{root}", prefix: bench}}
  tasks:
    - name: files
      ansible.builtin.copy:
        dest: "{{{{ root }}}}/etc/app/conf-{{{{ item }}}}.conf"
        content: "name={{{{ prefix }}}}-{{{{ item }}}}\nindex={{{{ item }}}}\n"
        mode: "0644"
      loop: "{{{{ range(1, {files}) | list }}}}"
    - name: lines
      ansible.builtin.lineinfile:
        path: "{{{{ root }}}}/etc/app/lines.conf"
        regexp: "^key{{{{ item }}}}="
        line: "key{{{{ item }}}}=value{{{{ item }}}}"
        create: true
        mode: "0644"
      loop: "{{{{ range(1, {lines}) | list }}}}"
    - name: sysctl
      ansible.builtin.lineinfile:
        path: "{{{{ root }}}}/etc/sysctl.d/99-bench.conf"
        regexp: "^net\\.bench\\.p{{{{ item }}}}\\s*="
        line: "net.bench.p{{{{ item }}}} = {{{{ item }}}}"
        create: true
        mode: "0644"
      loop: "{{{{ range(1, {sysctls}) | list }}}}"
"#,
        root = root.display(),
        files = s.files + 1,
        lines = s.lines + 1,
        sysctls = s.sysctls + 1,
    )
}

fn cfengine_policy(s: &Scale, root: &Path) -> String {
    format!(
        r#"body common control {{ bundlesequence => {{ "main" }}; }}
body edit_defaults empty {{ empty_file_before_editing => "true"; edit_backup => "false"; }}
body edit_defaults keep {{ edit_backup => "false"; }}
body perms m644 {{ mode => "0644"; rxdirs => "false"; }}
bundle agent main
{{
  vars:
    "root" string => "{root}";
    "prefix" string => "bench";
    "i" slist => expandrange("[1-{files}]", 1);
    "k" slist => expandrange("[1-{lines}]", 1);
    "s" slist => expandrange("[1-{sysctls}]", 1);
  files:
    "$(root)/etc/app/conf-$(i).conf"
      create => "true", perms => m644, edit_defaults => empty, edit_line => content("$(prefix)", "$(i)");
    "$(root)/etc/app/lines.conf"
      create => "true", perms => m644, edit_defaults => keep, edit_line => line("$(k)");
    "$(root)/etc/sysctl.d/99-bench.conf"
      create => "true", perms => m644, edit_defaults => keep, edit_line => sysctl("$(s)");
}}
bundle edit_line content(prefix, i) {{ insert_lines: "name=$(prefix)-$(i)"; "index=$(i)"; }}
bundle edit_line line(k) {{ delete_lines: "key$(k)=(?!value$(k)$).*"; insert_lines: "key$(k)=value$(k)"; }}
bundle edit_line sysctl(s) {{ delete_lines: "net\.bench\.p$(s)\s*=(?!\s*$(s)$).*"; insert_lines: "net.bench.p$(s) = $(s)"; }}
"#,
        root = root.display(),
        files = s.files,
        lines = s.lines,
        sysctls = s.sysctls,
    )
}

/// One run's wall seconds, CPU seconds (user + system, which a busy machine disturbs less than
/// wall time) and peak RSS (MiB), from `/usr/bin/time`.
#[derive(Clone, Copy)]
struct Run {
    wall: f64,
    cpu: f64,
    rss: f64,
}

/// Times one run with `/usr/bin/time -f "TIME %e %U %S %M"`.
fn timed(command: &mut Command) -> anyhow::Result<Run> {
    let program = format!("{command:?}");
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
        .with_context(|| "cannot run /usr/bin/time (apt-get install time)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!(
            "{program} failed: {}",
            stderr.lines().rev().take(10).collect::<Vec<_>>().join("\n")
        );
    }
    let fields = time_fields(&stderr)?;
    let [wall, user, system, kib] = fields[..] else {
        bail!("unexpected timing fields {fields:?}");
    };
    Ok(Run {
        wall,
        cpu: user + system,
        rss: kib / 1024.0,
    })
}

struct Figures {
    name: &'static str,
    first: Run,
    second: Run,
}

fn fresh_root(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let root = work.join(name);
    std::fs::create_dir_all(root.join("etc/app"))?;
    std::fs::create_dir_all(root.join("etc/sysctl.d"))?;
    Ok(root)
}

fn check_same(a: &Path, b: &Path, s: &Scale) -> anyhow::Result<()> {
    for i in [1, s.files] {
        let rel = format!("etc/app/conf-{i}.conf");
        let (x, y) = (
            std::fs::read_to_string(a.join(&rel))?,
            std::fs::read_to_string(b.join(&rel))?,
        );
        if x != y {
            bail!("{rel} differs between {} and {}", a.display(), b.display());
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let scale = Scale {
        files: env_count("BENCH_FILES", 1000),
        lines: env_count("BENCH_LINES", 100),
        sysctls: env_count("BENCH_SYSCTLS", 50),
    };
    let bin = std::env::var("DRIFTLESS_BIN").unwrap_or_else(|_| "target/release/driftless".into());
    if !Path::new(&bin).exists() {
        bail!("{bin} is missing: cargo build --release -p driftless-agent");
    }
    let peers = std::env::var("BENCH_PEERS").unwrap_or_else(|_| "ansible-playbook,cf-agent".into());
    let peer = |name: &str| peers.split(',').any(|p| p.trim() == name);
    let tools = [
        ("ansible-playbook", "/usr/bin/ansible-playbook"),
        ("cf-agent", "/usr/bin/cf-agent"),
        ("time", "/usr/bin/time"),
    ];
    for (name, tool) in tools {
        if (name == "time" || peer(name)) && !Path::new(tool).exists() {
            bail!("{tool} is missing: run .ci/tools/apply.sh bench");
        }
    }
    let work = std::env::temp_dir().join(format!("bench-apply-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!(
        "policy: {} templated files, {} lineInFile, {} persisted sysctl (work dir {})",
        scale.files,
        scale.lines,
        scale.sysctls,
        work.display()
    );
    let mut figures = Vec::new();

    let config = work.join("driftless-config");
    std::fs::create_dir_all(&config)?;
    std::fs::write(config.join("bench.yaml"), driftless_policy(&scale))?;
    let d_root = fresh_root(&work, "root-driftless")?;
    let driftless = || {
        let mut c = Command::new(&bin);
        c.args([
            "--log-format",
            "text",
            "--log-level",
            "warn",
            "apply",
            "--config",
        ])
        .arg(&config)
        .arg("--root")
        .arg(&d_root)
        .arg("--audit-spool")
        .arg(work.join("spool"))
        .arg("--env-file")
        .arg("/dev/null");
        c
    };
    figures.push(Figures {
        name: "driftless",
        first: timed(&mut driftless())?,
        second: timed(&mut driftless())?,
    });
    // `drift check` on the converged host: the same loading and checks as the no-op run.
    let drift_check = timed(
        Command::new(&bin)
            .args([
                "--log-format",
                "text",
                "--log-level",
                "warn",
                "drift",
                "check",
            ])
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(&d_root)
            .arg("--env-file")
            .arg("/dev/null"),
    )?;

    if peer("ansible-playbook") {
        let a_root = fresh_root(&work, "root-ansible")?;
        let playbook = work.join("bench.yml");
        std::fs::write(&playbook, ansible_playbook(&scale, &a_root))?;
        let ansible = || {
            let mut c = Command::new("/usr/bin/ansible-playbook");
            c.args(["-i", "localhost,", "-c", "local"])
                .arg(&playbook)
                .env("ANSIBLE_LOCALHOST_WARNING", "false")
                .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
                .env("ANSIBLE_NOCOLOR", "true");
            c
        };
        figures.push(Figures {
            name: "ansible-playbook",
            first: timed(&mut ansible())?,
            second: timed(&mut ansible())?,
        });
        check_same(&d_root, &a_root, &scale)?;
    }

    if peer("cf-agent") {
        let c_root = fresh_root(&work, "root-cfengine")?;
        let policy = work.join("bench.cf");
        std::fs::write(&policy, cfengine_policy(&scale, &c_root))?;
        let cfengine = || {
            let mut c = Command::new("/usr/bin/cf-agent");
            c.args(["-K", "-f"]).arg(&policy);
            c
        };
        figures.push(Figures {
            name: "cf-agent",
            first: timed(&mut cfengine())?,
            second: timed(&mut cfengine())?,
        });
        check_same(&d_root, &c_root, &scale)?;
    }

    println!(
        "\n{:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "tool", "first s", "first cpu", "no-op s", "no-op cpu", "first MiB", "no-op MiB"
    );
    for f in &figures {
        println!(
            "{:<18} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>9.1} {:>9.1}",
            f.name,
            f.first.wall,
            f.first.cpu,
            f.second.wall,
            f.second.cpu,
            f.first.rss,
            f.second.rss
        );
    }
    println!(
        "{:<18} {:>10} {:>10} {:>10.2} {:>10.2} {:>9} {:>9.1}",
        "driftless drift", "", "", drift_check.wall, drift_check.cpu, "", drift_check.rss
    );
    let d = &figures[0];
    let ratio = |a: f64, b: f64| a / b.max(0.001);
    for peer in &figures[1..] {
        println!(
            "{} / driftless: first run {:.1}x (cpu {:.1}x), no-op run {:.1}x (cpu {:.1}x), peak RSS {:.1}x",
            peer.name,
            ratio(peer.first.wall, d.first.wall),
            ratio(peer.first.cpu, d.first.cpu),
            ratio(peer.second.wall, d.second.wall),
            ratio(peer.second.cpu, d.second.cpu),
            ratio(peer.first.rss.max(peer.second.rss), d.first.rss.max(d.second.rss))
        );
    }
    if let Some(cf) = figures.iter().find(|f| f.name == "cf-agent") {
        println!(
            "driftless / cf-agent: no-op cpu {:.2}x (goal <= 0.25, aim 0.1), first run cpu {:.2}x (goal <= 1)",
            ratio(d.second.cpu, cf.second.cpu),
            ratio(d.first.cpu, cf.first.cpu)
        );
    }
    println!(
        "goals: no-op >= 50x faster than ansible, <= 0.25x cf-agent's; peak RSS <= 16 MiB (driftless: {:.1} MiB)",
        d.first.rss.max(d.second.rss)
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
