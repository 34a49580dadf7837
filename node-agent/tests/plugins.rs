//! WebAssembly plugins through the real `driftless` binary: the example plugins (C, Zig, Rust,
//! built by plugins/build.sh) as a task type, template filters, facts and a log transform, and
//! hostile modules — an infinite loop, a memory bomb, a read outside the grant, a socket, a
//! digest that does not match, a module that is not WebAssembly — each stopped or refused with
//! a named error while the agent stays up and its other pipelines deliver.
#![allow(clippy::unwrap_used)]

mod apply_support;
mod logs_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use apply_support::{statuses, task, Host};
use logs_support::{wait_for, Agent, Tree};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

/// The example plugins, built once per test binary; `None` (with a skip line) when a toolchain
/// is missing.
fn examples(test: &str) -> Option<&'static Path> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("example-plugins");
        let run = Command::new(repo().join("plugins/build.sh"))
            .arg(&out)
            .output()
            .map_err(|e| e.to_string())?;
        if run.status.success() {
            Ok(out)
        } else {
            Err(String::from_utf8_lossy(&run.stderr).replace('\n', " "))
        }
    });
    match built {
        Ok(dir) => Some(dir),
        Err(why) => {
            // Straight to stderr (past the harness's capture): CI counts the line as a skip.
            let line = format!("skipped: {test}: the example plugins do not build here: {why}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            None
        }
    }
}

fn sha256(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A plugin directory holding copies of the named example plugins.
fn plugin_dir(examples: &Path, names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        std::fs::copy(
            examples.join(format!("{name}.wasm")),
            dir.path().join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    dir
}

/// `driftless ARGS --plugin-dir P --plugin-cache C`: exit code, standard output and error.
fn driftless(args: &[&str], plugins: &Path, cache: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(args)
        .args(plugin_args(plugins, cache))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn plugin_args<'a>(plugins: &'a Path, cache: &'a Path) -> [&'a str; 4] {
    [
        "--plugin-dir",
        plugins.to_str().unwrap(),
        "--plugin-cache",
        cache.to_str().unwrap(),
    ]
}

#[test]
fn apply_runs_a_rust_task_plugin_and_c_template_filters() {
    let Some(examples) = examples("apply_runs_a_rust_task_plugin_and_c_template_filters") else {
        return;
    };
    let plugins = plugin_dir(examples, &["motd", "redact"]);
    let cache = tempfile::tempdir().unwrap();
    let host = Host::new();
    // A module that loops forever as a task: stopped by its fuel, failing only its task.
    std::fs::write(
        plugins.path().join("spin.wasm"),
        wat_plugin("spin", "task", "(loop $l (br $l)) (i64.const 0)", ""),
    )
    .unwrap();
    host.policy(
        "plugins.yaml",
        &format!(
            r#"
apiVersion: driftless.dev/v1alpha1
kind: ApplyPolicy
metadata: {{name: plugins}}
spec:
  templateFilters:
    - name: redact
  tasks:
    - name: motd
      plugin:
        name: motd
        sha256: "sha256:{}"
        config: {{path: /etc/motd, text: "Welcome to web1\n"}}
        grants: {{write: [/etc]}}
    - name: contact
      file:
        path: /etc/contact
        template: "{{{{ 'mail ann@example.com' | redact_email }}}}\n"
    - name: runaway
      ignoreErrors: true
      plugin: {{name: spin, fuel: 1000000}}
    - name: after
      file: {{path: /etc/after, content: "still applied\n"}}
"#,
            sha256(&plugins.path().join("motd.wasm"))
        ),
    );
    let pa = plugin_args(plugins.path(), cache.path());

    // Dry run: the plugin plans (its grant read-only), nothing is written.
    let mut args = vec!["--dry-run"];
    args.extend_from_slice(&pa);
    let (_, report) = host.apply(&args);
    assert_eq!(task(&report, "motd")["status"], "changed", "{report:#}");
    assert!(!host.path("/etc/motd").exists());

    let (_, report) = host.apply(&pa);
    let s = statuses(&report);
    assert_eq!(
        s,
        [
            ("motd".to_string(), "changed".to_string()),
            ("contact".into(), "changed".into()),
            ("runaway".into(), "failed".into()),
            ("after".into(), "changed".into()),
        ],
        "{report:#}"
    );
    let runaway = task(&report, "runaway")["message"].as_str().unwrap();
    assert!(
        runaway.contains("plugin spin: driftless_task_plan: stopped: it ran out of fuel (1000000 units per call)"),
        "{runaway}"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/motd")).unwrap(),
        "Welcome to web1\n"
    );
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/contact")).unwrap(),
        "mail <email>\n"
    );

    // Idempotent: the second run changes nothing, and the compiled code came from the cache.
    let (_, report) = host.apply(&pa);
    assert_eq!(task(&report, "motd")["status"], "unchanged", "{report:#}");
    assert!(std::fs::read_dir(cache.path()).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "cwasm")));

    // Drift: changed behind the agent's back, reported by the plugin's plan.
    std::fs::write(host.path("/etc/motd"), "edited\n").unwrap();
    let mut args = vec!["drift", "check", "--output", "json"];
    args.extend_from_slice(&pa);
    let (_, stdout, stderr) = host.run(&args);
    assert!(stdout.contains("motd:/etc/motd"), "{stdout}\n{stderr}");

    // A pinned digest that does not match refuses the plugin before anything is applied.
    let policy = std::fs::read_to_string(host.config.path().join("plugins.yaml")).unwrap();
    let wrong = "0".repeat(64);
    host.policy(
        "plugins.yaml",
        &policy.replace(&sha256(&plugins.path().join("motd.wasm")), &wrong),
    );
    std::fs::remove_file(host.path("/etc/after")).unwrap();
    let mut args = vec!["apply"];
    args.extend_from_slice(&pa);
    let (code, _, stderr) = host.run(&args);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "ApplyPolicy/plugins: spec.tasks[0].plugin: plugin motd: {} has sha256 ",
            plugins.path().join("motd.wasm").display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("the policy pins {wrong}; refusing to run it")),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert!(!host.path("/etc/after").exists());
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/motd")).unwrap(),
        "edited\n"
    );

    // A configuration the plugin's schema refuses: reported before anything is applied.
    host.policy(
        "plugins.yaml",
        &policy.replace(r#"text: "Welcome to web1\n""#, "colour: blue"),
    );
    let mut args = vec!["apply"];
    args.extend_from_slice(&pa);
    let (code, _, stderr) = host.run(&args);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("ApplyPolicy/plugins: spec.tasks[0].plugin: plugin motd: config.text: is required; config.colour: unknown field; expected one of: path, text"),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was applied"), "{stderr}");
    assert!(!host.path("/etc/after").exists());
}

#[test]
fn facts_come_from_a_zig_plugin_reading_only_its_grant() {
    let Some(examples) = examples("facts_come_from_a_zig_plugin_reading_only_its_grant") else {
        return;
    };
    let plugins = plugin_dir(examples, &["release"]);
    let cache = tempfile::tempdir().unwrap();
    let host = Host::new();
    std::fs::create_dir_all(host.path("/etc/app")).unwrap();
    std::fs::write(
        host.path("/etc/app/release"),
        "VERSION=2.1\nCHANNEL=\"stable\"\n",
    )
    .unwrap();
    let policy = |path: &str| {
        format!(
            r#"
apiVersion: driftless.dev/v1alpha1
kind: FactsPolicy
metadata: {{name: facts}}
spec:
  facts:
    - name: release
      plugin:
        name: release
        config: {{path: {path}}}
        grants: {{read: [/etc/app]}}
"#
        )
    };
    host.policy("facts.yaml", &policy("/etc/app/release"));
    let pa = plugin_args(plugins.path(), cache.path());
    let mut args = vec![
        "facts",
        "--format",
        "prometheus",
        "--collector.disable-defaults",
        "--collector.plugin",
    ];
    args.extend_from_slice(&pa);
    let (code, stdout, stderr) = host.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("app_release_info{version=\"2.1\"} 1"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(
            r#"driftless_fact_info{name="release",key="release.CHANNEL",value="stable"} 1"#
        ),
        "{stdout}"
    );

    // Outside the grant: the plugin cannot open it; the fact fails, named, the scrape goes on.
    host.policy("facts.yaml", &policy("/etc/passwd"));
    let (code, stdout, stderr) = host.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.contains("root:x:0"), "{stdout}");
    assert!(
        stdout.contains(r#"node_scrape_collector_success{collector="plugin"} 0"#),
        "{stdout}"
    );
}

/// A plugin in WebAssembly text: a manifest for `kind`, `driftless_alloc` handing out a fixed
/// buffer, and an entry point for the kind with `body` (which sees the input as `(param i32
/// i32)` and returns an `i64`). `imports` and `data` go in front.
fn wat_plugin(name: &str, kind: &str, body: &str, imports: &str) -> Vec<u8> {
    wat_plugin_with(name, kind, body, imports, "")
}

/// [`wat_plugin`] with `data` at offset 5120 and `{"facts":{"pong":true}}` at 6144.
fn wat_plugin_with(name: &str, kind: &str, body: &str, imports: &str, data: &str) -> Vec<u8> {
    let manifest = format!(r#"{{"name":"{name}","version":"1.0.0","abi":1,"kinds":["{kind}"]}}"#);
    let escaped = manifest.replace('"', "\\\"");
    let entries = match kind {
        "task" => vec!["driftless_task_plan", "driftless_task_apply"],
        "log" => vec!["driftless_log"],
        _ => vec!["driftless_facts"],
    };
    let funcs: String = entries
        .iter()
        .map(|e| format!("(func (export \"{e}\") (param i32 i32) (result i64) {body})\n"))
        .collect();
    let text = format!(
        r#"(module
  {imports}
  (memory (export "memory") 2)
  (data (i32.const 1024) "{escaped}")
  (data (i32.const 2048) "{{\"error\":\"could not open it\"}}")
  (data (i32.const 3072) "../../etc/shadow")
  (data (i32.const 5120) "{data}")
  (data (i32.const 6144) "{{\"facts\":{{\"pong\":true}}}}")
  (func (export "driftless_alloc") (param i32) (result i32) (i32.const 8192))
  (func (export "driftless_manifest") (result i64)
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {len})))
  {funcs}
)"#,
        len = manifest.len()
    );
    wat::parse_str(&text).unwrap()
}

#[test]
fn log_plugins_transform_and_hostile_ones_are_stopped_while_other_pipelines_deliver() {
    let Some(examples) = examples(
        "log_plugins_transform_and_hostile_ones_are_stopped_while_other_pipelines_deliver",
    ) else {
        return;
    };
    let plugins = plugin_dir(examples, &["redact"]);
    let dir = plugins.path();
    let cache = tempfile::tempdir().unwrap();
    let hostile = [
        ("spin", "(loop $l (br $l)) (i64.const 0)", ""),
        (
            "bomb",
            "(loop $l (drop (memory.grow (i32.const 16))) (br $l)) (i64.const 0)",
            "",
        ),
        (
            "snoop",
            // path_open(preopen 3, "../../etc/shadow", read) and, were it to succeed, fd_read.
            "(if (i32.eqz (call $open (i32.const 3) (i32.const 0) (i32.const 3072) (i32.const 16) \
               (i32.const 0) (i64.const 2) (i64.const 0) (i32.const 0) (i32.const 4096))) \
               (then (unreachable))) \
             (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 29))",
            r#"(import "wasi_snapshot_preview1" "path_open" (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#,
        ),
        (
            "netcat",
            "(i64.const 0)",
            r#"(import "wasi_snapshot_preview1" "sock_open" (func $sock (param i32 i32 i32) (result i32)))"#,
        ),
    ];
    for (name, body, imports) in hostile {
        std::fs::write(
            dir.join(format!("{name}.wasm")),
            wat_plugin(name, "log", body, imports),
        )
        .unwrap();
    }
    std::fs::write(dir.join("garbage.wasm"), b"#!/bin/sh\necho not a module\n").unwrap();
    // A copy of a valid plugin used with a pin it does not match.
    std::fs::copy(examples.join("redact.wasm"), dir.join("tampered.wasm")).unwrap();

    let tree = Tree::new();
    std::fs::create_dir_all(tree.path("root/etc")).unwrap();
    std::fs::write(tree.path("root/etc/shadow"), "root:SECRET-HASH:1::::::\n").unwrap();
    let pipeline = |name: &str, transform: &str| {
        format!(
            r#"---
apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: {name}}}
spec:
  sources:
    - name: app
      include: [/var/log/app/{name}.log]
      readFrom: Beginning
  transforms: {transform}
  sinks:
    - name: out
      file: {{directory: {out}}}
"#,
            out = tree.path("out").display()
        )
    };
    let mut config = String::new();
    config += &pipeline("good", "[]");
    config += &pipeline(
        "redacted",
        "[{plugin: {name: redact, config: {drop: DEBUG}}}]",
    );
    config += &pipeline("spin", "[{plugin: {name: spin, fuel: 100000}}]");
    config += &pipeline("bomb", "[{plugin: {name: bomb, memoryMiB: 8}}]");
    config += &pipeline(
        "snoop",
        "[{plugin: {name: snoop, grants: {read: [/var/log/app]}}}]",
    );
    config += &pipeline("netcat", "[{plugin: {name: netcat}}]");
    config += &pipeline("garbage", "[{plugin: {name: garbage}}]");
    config += &pipeline(
        "tampered",
        &format!(
            "[{{plugin: {{name: tampered, sha256: \"{}\"}}}}]",
            "1".repeat(64)
        ),
    );
    tree.config(&config);
    let lines = "DEBUG noisy detail\nlogin by ann@example.com ok\nplain line\n";
    for name in [
        "good", "redacted", "spin", "bomb", "snoop", "netcat", "garbage", "tampered",
    ] {
        std::fs::write(tree.path(&format!("root/var/log/app/{name}.log")), lines).unwrap();
    }
    // The agent: pipelines whose plugin is refused are reported, the others run.
    let log = tree.path("agent.log");
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args([
            "--log-format",
            "text",
            "agent",
            "--standalone",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--config")
        .arg(tree.path("config"))
        .arg("--root")
        .arg(tree.path("root"))
        .arg("--state-dir")
        .arg(tree.path("state"))
        .arg("--audit-spool")
        .arg(tree.path("state/audit"))
        .env("DRIFTLESS_PLUGIN_DIR", dir)
        .env("DRIFTLESS_PLUGIN_CACHE", cache.path())
        .env("DRIFTLESS_LOGS_SCAN_MS", "100")
        .env_remove("DRIFTLESS_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Agent { child, log };
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(tree.path(&format!("out/{name}-app.log")))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let delivered = wait_for(Duration::from_secs(30), || {
        ["good", "redacted", "spin", "bomb", "snoop"]
            .iter()
            .all(|n| read(n).len() >= if *n == "redacted" { 2 } else { 3 })
    });
    agent.assert_running();
    let stderr = agent.stderr();
    assert!(delivered, "{stderr}");

    let messages = |name: &str| -> Vec<String> {
        read(name)
            .iter()
            .map(|e| e["message"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(messages("good").len(), 3);
    assert_eq!(
        messages("redacted"),
        ["login by <email> ok", "plain line"],
        "{:?}",
        read("redacted")
    );
    // Hostile plugins: every line delivered unchanged, marked with why the plugin failed.
    for (name, why) in [
        ("spin", "plugin spin: driftless_log: stopped: it ran out of fuel (100000 units per call)"),
        ("bomb", "plugin bomb: driftless_log: stopped: it asked for"),
        ("snoop", "plugin snoop: driftless_log: could not open it (the sandbox refused: ../../etc/shadow: outside the granted directories)"),
    ] {
        let events = read(name);
        assert_eq!(events.len(), 3, "{name}: {events:?}");
        for e in &events {
            let error = e["plugin_error"].as_str().unwrap_or_default();
            assert!(error.starts_with(why), "{name}: {error}");
            assert!(!e.to_string().contains("SECRET-HASH"));
        }
    }
    assert!(read("bomb")[0]["plugin_error"]
        .as_str()
        .unwrap()
        .contains("more than its limit of 8 MiB"));
    // Refused before running: named in the agent's log, their pipelines not started.
    for (name, why) in [
        ("netcat", "imports wasi_snapshot_preview1.sock_open, which plugins are not given: they get WASI preview 1 and driftless.tcp_connect only (a connection comes from driftless.tcp_connect, to a granted endpoint)"),
        ("garbage", "not a valid plugin: not a WebAssembly module"),
        ("tampered", &format!("the policy pins {}; refusing to run it", "1".repeat(64))),
    ] {
        assert!(stderr.contains(why), "{name}: {why}\n{stderr}");
        assert!(read(name).is_empty(), "{name}");
    }

    // Still alive and delivering: a new line in the good pipeline arrives.
    std::fs::OpenOptions::new()
        .append(true)
        .open(tree.path("root/var/log/app/good.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"after the storm\n"))
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || read("good").len() == 4));
    agent.assert_running();
}

#[test]
fn plugins_cli_lists_validates_and_installs_by_digest() {
    let Some(examples) = examples("plugins_cli_lists_validates_and_installs_by_digest") else {
        return;
    };
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let all: Vec<&str> = ["plugins"].iter().chain(args).copied().collect();
        driftless(&all, plugins.path(), cache.path())
    };
    let redact = examples.join("redact.wasm");
    let digest = sha256(&redact);
    // A wrong digest installs nothing.
    let (code, _, stderr) = run(&[
        "install",
        redact.to_str().unwrap(),
        "--sha256",
        &"2".repeat(64),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("has sha256 {digest}")), "{stderr}");
    assert!(!plugins.path().join("redact.wasm").exists());
    for name in ["redact", "release", "motd"] {
        let file = examples.join(format!("{name}.wasm"));
        let (code, stdout, stderr) = run(&[
            "install",
            &format!("file://{}", file.display()),
            "--sha256",
            &format!("sha256:{}", sha256(&file)),
        ]);
        assert_eq!(code, 0, "{stderr}");
        assert!(
            stdout.starts_with(&format!("installed plugin {name} 1.0.0")),
            "{stdout}"
        );
    }
    let (code, stdout, _) = run(&["list", "--json"]);
    assert_eq!(code, 0);
    let rows: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["motd", "redact", "release"]);
    assert_eq!(rows[1]["kinds"], serde_json::json!(["log", "filter"]));
    assert_eq!(rows[1]["sha256"], digest);

    // validate: a configuration against the plugin's schema.
    let config = plugins.path().join("config.yaml");
    std::fs::write(&config, "path: /etc/motd\n").unwrap();
    let (code, _, stderr) = run(&["validate", "motd", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("config.text"), "{stderr}");
    std::fs::write(&config, "path: /etc/motd\ntext: hi\n").unwrap();
    let (code, stdout, stderr) = run(&["validate", "motd", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("plugin motd 1.0.0 (task)"), "{stdout}");

    // A module that is not a plugin makes `list` fail, naming it.
    std::fs::write(plugins.path().join("broken.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let (code, stdout, _) = run(&["list"]);
    assert_eq!(code, 1);
    assert!(stdout.contains("broken.wasm  (error:"), "{stdout}");
    assert!(
        stdout.contains("does not export a 32-bit `memory`"),
        "{stdout}"
    );
}

#[test]
fn network_reaches_only_granted_endpoints() {
    // A plugin connects with driftless.tcp_connect, sends "ping", expects "pong".
    let granted = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let granted_at = granted.local_addr().unwrap().to_string();
    let other_at = other.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in granted.incoming() {
            let mut stream = stream.unwrap();
            let mut ping = [0u8; 4];
            std::io::Read::read_exact(&mut stream, &mut ping).unwrap();
            assert_eq!(&ping, b"ping");
            std::io::Write::write_all(&mut stream, b"pong").unwrap();
        }
    });
    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // (call connect (ptr 5120, len, out 4096)); then fd_write "ping" and fd_read 4 bytes.
    let body = |len: usize| {
        format!(
            "(if (call $connect (i32.const 5120) (i32.const {len}) (i32.const 4096)) \
               (then (return (i64.or (i64.shl (i64.const 2048) (i64.const 32)) (i64.const 29))))) \
             (i32.store (i32.const 4100) (i32.const 4112)) (i32.store (i32.const 4104) (i32.const 4)) \
             (i32.store (i32.const 4112) (i32.const 0x676e6970)) \
             (drop (call $write (i32.load (i32.const 4096)) (i32.const 4100) (i32.const 1) (i32.const 4120))) \
             (i32.store (i32.const 4112) (i32.const 0)) \
             (drop (call $read (i32.load (i32.const 4096)) (i32.const 4100) (i32.const 1) (i32.const 4120))) \
             (if (i32.ne (i32.load (i32.const 4112)) (i32.const 0x676e6f70)) (then (unreachable))) \
             (i64.or (i64.shl (i64.const 6144) (i64.const 32)) (i64.const 23))"
        )
    };
    let imports = r#"(import "driftless" "tcp_connect" (func $connect (param i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))"#;
    std::fs::write(
        plugins.path().join("pinger.wasm"),
        wat_plugin_with(
            "pinger",
            "facts",
            &body(granted_at.len()),
            imports,
            &granted_at,
        ),
    )
    .unwrap();
    std::fs::write(
        plugins.path().join("sneak.wasm"),
        wat_plugin_with("sneak", "facts", &body(other_at.len()), imports, &other_at),
    )
    .unwrap();
    let host = Host::new();
    host.policy(
        "facts.yaml",
        &format!(
            r#"
apiVersion: driftless.dev/v1alpha1
kind: FactsPolicy
metadata: {{name: facts}}
spec:
  facts:
    - name: pinger
      plugin: {{name: pinger, grants: {{network: ["{granted_at}"]}}}}
    - name: sneak
      plugin: {{name: sneak, grants: {{network: ["{granted_at}"]}}}}
"#
        ),
    );
    let mut args = vec![
        "facts",
        "--format",
        "prometheus",
        "--collector.disable-defaults",
        "--collector.plugin",
    ];
    args.extend_from_slice(&plugin_args(plugins.path(), cache.path()));
    let (code, stdout, stderr) = host.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains(r#"driftless_fact_info{name="pinger",key="pong",value="true"} 1"#),
        "{stdout}\n{stderr}"
    );
    assert!(!stdout.contains(r#"name="sneak""#), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "sneak: plugin sneak: driftless_facts: could not open it (the sandbox refused: connecting to {other_at}: not granted)"
        )),
        "{stderr}"
    );
}

/// `curl ARGS`, its standard output; panics with its error output when it fails.
fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .arg("-sSf")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Pushes a blob to a registry (POST then PUT); its digest.
fn push_blob(registry: &str, repo: &str, file: &Path) -> String {
    let digest = format!("sha256:{}", sha256(file));
    let headers = curl(&[
        "-X",
        "POST",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &format!("{registry}/v2/{repo}/blobs/uploads/"),
    ]);
    let location = headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Location: ")
                .or(l.strip_prefix("location: "))
        })
        .unwrap()
        .trim()
        .to_owned();
    let location = if location.starts_with('/') {
        format!("{registry}{location}")
    } else {
        location
    };
    let sep = if location.contains('?') { '&' } else { '?' };
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]);
    digest
}

#[test]
fn plugins_come_from_an_oci_registry_by_digest() {
    let test = "plugins_come_from_an_oci_registry_by_digest";
    let Some(examples) = examples(test) else {
        return;
    };
    let registry_bin = Path::new("/usr/bin/docker-registry");
    if !registry_bin.exists() {
        let line = format!(
            "skipped: {test}: /usr/bin/docker-registry is missing (run .ci/tools/plugins.sh)\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = logs_support::free_port();
    std::fs::write(
        dir.path().join("config.yml"),
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _registry = Kill(
        Command::new(registry_bin)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let registry = format!("http://127.0.0.1:{port}");
    assert!(wait_for(Duration::from_secs(20), || Command::new("curl")
        .args(["-sf", "-o", "/dev/null", &format!("{registry}/v2/")])
        .status()
        .is_ok_and(|s| s.success())));
    // The module as an OCI artifact: an empty config and one WebAssembly layer.
    let module = examples.join("redact.wasm");
    let config = dir.path().join("config.json");
    std::fs::write(&config, "{}").unwrap();
    let layer = push_blob(&registry, "plugins/redact", &module);
    let config_digest = push_blob(&registry, "plugins/redact", &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2},
        "layers": [{"mediaType": "application/vnd.wasm.content.layer.v1+wasm", "digest": layer,
                    "size": std::fs::metadata(&module).unwrap().len()}],
    });
    curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest.to_string(),
        &format!("{registry}/v2/plugins/redact/manifests/1.0.0"),
    ]);

    let plugins = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let reference = format!("oci+http://127.0.0.1:{port}/plugins/redact:1.0.0");
    let run = |args: &[&str]| driftless(args, plugins.path(), cache.path());
    // A pin the module does not match: nothing installed.
    let (code, _, stderr) = run(&[
        "plugins",
        "install",
        &reference,
        "--sha256",
        &"3".repeat(64),
    ]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("has sha256 {}", &layer["sha256:".len()..])),
        "{stderr}"
    );
    assert!(!plugins.path().join("redact.wasm").exists());
    let (code, stdout, stderr) = run(&["plugins", "install", &reference, "--sha256", &layer]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("installed plugin redact 1.0.0 (log, filter)"),
        "{stdout}"
    );
    assert_eq!(sha256(&plugins.path().join("redact.wasm")), sha256(&module));

    // A policy that names the reference downloads it when the plugin directory lacks it.
    std::fs::remove_file(plugins.path().join("redact.wasm")).unwrap();
    let host = Host::new();
    host.policy(
        "filters.yaml",
        &format!(
            r#"
apiVersion: driftless.dev/v1alpha1
kind: ApplyPolicy
metadata: {{name: filters}}
spec:
  templateFilters:
    - {{name: redact, url: "{reference}", sha256: "{layer}"}}
  tasks:
    - name: contact
      file: {{path: /etc/contact, template: "{{{{ 'ann@example.com' | redact_email }}}}\n"}}
"#
        ),
    );
    let mut args = vec!["apply"];
    args.extend_from_slice(&plugin_args(plugins.path(), cache.path()));
    let (code, _, stderr) = host.run(&args);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::read_to_string(host.path("/etc/contact")).unwrap(),
        "<email>\n"
    );
    assert!(plugins.path().join("redact.wasm").exists());
}
