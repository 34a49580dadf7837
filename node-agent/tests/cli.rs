//! The `driftless` binary as a user runs it: real processes, files, signals and HTTP.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn driftless() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_driftless"));
    // A developer's own ~/.config must not leak into the tests.
    command
        .env("HOME", "/nonexistent")
        .env_remove("XDG_CONFIG_HOME");
    command
}

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/standalone")
}

fn example_env() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/examples/standalone.env")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn validate_accepts_the_example() {
    let output = driftless()
        .args(["validate", "--config"])
        .arg(example())
        .arg("--env-file")
        .arg(example_env())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.ends_with(
            "5 resources valid (ApplyPolicy 2, DriftScan 1, FactsPolicy 1, LogPipeline 1)\n"
        ),
        "{stdout}"
    );
}

#[test]
fn validate_prints_every_problem_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata: {name: Bad_Name}\n\
         spec:\n  mode: Sometimes\n  tasks:\n    - name: t\n      file: {path: /x, mode: 644}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("broken.yml"), "kind: [unclosed\n").unwrap();
    let output = driftless()
        .args(["validate", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let prefix = dir.path().display().to_string();
    let expected = [
        format!("{prefix}: bad.yaml: ApplyPolicy/Bad_Name: metadata.name: \"Bad_Name\" is not a valid name: lower-case letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"),
        format!("{prefix}: bad.yaml: ApplyPolicy/Bad_Name: spec.mode: \"Sometimes\" is not one of \"Enforce\", \"Audit\""),
        format!("{prefix}: bad.yaml: ApplyPolicy/Bad_Name: spec.tasks[0].file.mode: expected string, got integer 644"),
    ];
    assert_eq!(
        &lines[..3],
        expected.each_ref().map(String::as_str),
        "{stderr}"
    );
    assert!(
        lines[3].starts_with(&format!("{prefix}: broken.yml: invalid YAML: ")),
        "{stderr}"
    );
    assert_eq!(
        lines[4],
        format!("{prefix}: 4 problems found; nothing was applied")
    );
    assert!(output.stdout.is_empty());
}

#[test]
fn agent_serves_health_and_metrics_and_keeps_the_last_good_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    copy_dir(&example(), &config);
    let port = free_port();
    let log = dir.path().join("agent.log");
    let child = driftless()
        .args(["agent", "--config"])
        .arg(&config)
        .arg("--env-file")
        .arg(example_env())
        .args(["--root", "/", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut agent = Running(child);

    wait_for("/healthz", || {
        get(port, "/healthz") == Some((200, "ok\n".into()))
    });
    let (status, metrics) = get(port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("driftless_config_resources{kind=\"ApplyPolicy\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftless_config_last_reload_successful 1\n"),
        "{metrics}"
    );

    // An invalid configuration is refused on reload; the last good one stays in force.
    std::fs::write(
        config.join("broken.yaml"),
        "apiVersion: driftless.dev/v1alpha1\nkind: Nope\n",
    )
    .unwrap();
    signal(&agent.0, "HUP");
    wait_for("the refused reload", || {
        get(port, "/metrics")
            .is_some_and(|(_, m)| m.contains("driftless_config_last_reload_successful 0\n"))
    });
    let (_, metrics) = get(port, "/metrics").unwrap();
    assert!(
        metrics.contains("driftless_config_resources{kind=\"ApplyPolicy\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("driftless_config_reloads_total{result=\"failure\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(get(port, "/healthz").map(|r| r.0), Some(200));

    signal(&agent.0, "TERM");
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "{status:?}");

    // Every log line is a JSON object with a level and a message.
    let text = std::fs::read_to_string(&log).unwrap();
    let mut refused = false;
    for line in text.lines() {
        let event: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            event["level"].is_string() && event["message"].is_string(),
            "{line}"
        );
        refused |= event["message"] == "invalid configuration refused; keeping the last good one";
    }
    assert!(refused, "{text}");
}

#[test]
fn agent_refuses_to_start_on_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("x.yaml"),
        "apiVersion: driftless.dev/v1alpha1\nkind: Nope\n",
    )
    .unwrap();
    let output = driftless()
        .args(["agent", "--listen", "127.0.0.1:0", "--config"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("1 problem in the configuration; run `driftless validate"),
        "{stderr}"
    );
}
