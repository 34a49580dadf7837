//! The container images, built from `operator/Dockerfile` and `node-agent/Dockerfile` and run
//! the way the chart runs them: the agent as the chart's default DaemonSet does without
//! `agent.apply.enabled` (user 65532:65532 with the supplementary group 4, `adm`, no
//! capabilities, no privilege escalation, a read-only root filesystem, a state directory owned
//! by that user and a read-only host tree at `/host`); the operator with no cluster to talk to.
//!
//! Needs a Docker engine; with none, the tests print `skipped: no docker: ...`. The base image
//! `debian:bookworm-slim` is built from the machine's Debian mirror by `.ci/base-image.sh` (no
//! registry needed; run `.ci/install-tools.sh` first for debootstrap). Release binaries are
//! taken from `target/release`, and built there when missing.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const AGENT_IMAGE: &str = "driftless/agent:test";
const OPERATOR_IMAGE: &str = "driftless/operator:test";

/// Exit code of `.ci/base-image.sh` when there is no usable Docker engine.
const NO_DOCKER: i32 = 3;

/// User and group the chart's DaemonSet runs the agent as (`agent.securityContext`), and its
/// supplementary group (4, `adm` on Debian and Ubuntu: the group of the host's logs).
const AGENT_UID: u32 = 65532;
const AGENT_GID: u32 = 65532;
const AGENT_SUPPLEMENTARY_GID: u32 = 4;

/// The fixture host's os-release PRETTY_NAME and MemTotal, looked for in `driftless facts`.
const PRETTY_NAME: &str = "Driftless Fixture Linux 9.9 (Test)";
const MEM_TOTAL_KB: u64 = 8_167_848;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent directory")
        .to_path_buf()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("running {cmd:?}: {err}"))
}

fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args).current_dir(repo_root()))
}

/// Runs `docker args` and panics with its output unless it exits 0.
fn docker_ok(args: &[&str]) -> Output {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Whether the images could be built, or why the tests are skipped.
enum Images {
    Ready,
    Skipped(String),
}

/// Base image, release binaries and both images, prepared once for all tests of this file.
/// Errors are returned rather than panicked so that every test reports them.
fn images() -> &'static Result<Images, String> {
    static IMAGES: OnceLock<Result<Images, String>> = OnceLock::new();
    IMAGES.get_or_init(prepare)
}

/// The images, or `None` after printing the skip reason. Panics when preparing them failed.
fn images_or_skip() -> Option<()> {
    match images() {
        Ok(Images::Ready) => Some(()),
        Ok(Images::Skipped(reason)) => {
            // Straight to stderr, past the test harness's capture: CI counts these lines as skips.
            let line = format!("skipped: image test: {reason}\n");
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            None
        }
        Err(err) => panic!("{err}"),
    }
}

fn prepare() -> Result<Images, String> {
    let root = repo_root();
    let base = Command::new("bash")
        .arg(root.join(".ci/base-image.sh"))
        .current_dir(&root)
        .output()
        .map_err(|err| format!("running .ci/base-image.sh: {err}"))?;
    match base.status.code() {
        Some(0) => {}
        Some(NO_DOCKER) => {
            return Ok(Images::Skipped(format!(
                "no docker: {}",
                text(&base.stderr).trim()
            )))
        }
        _ => {
            return Err(format!(
                ".ci/base-image.sh failed ({}); run .ci/install-tools.sh first if debootstrap \
                 is missing:\n{}",
                base.status,
                tail(&text(&base.stderr), 40)
            ))
        }
    }

    let release = root.join("target/release");
    let binaries = ["driftless", "driftless-operator"];
    if binaries.iter().any(|b| !release.join(b).is_file()) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let build = Command::new(cargo)
            .args([
                "build",
                "--release",
                "-p",
                "driftless-agent",
                "-p",
                "driftless-operator",
            ])
            .current_dir(&root)
            .output()
            .map_err(|err| format!("running cargo build --release: {err}"))?;
        if !build.status.success() {
            return Err(format!(
                "cargo build --release failed:\n{}",
                tail(&text(&build.stderr), 40)
            ));
        }
    }

    for (dockerfile, tag) in [
        ("node-agent/Dockerfile", AGENT_IMAGE),
        ("operator/Dockerfile", OPERATOR_IMAGE),
    ] {
        let out = docker(&["build", "-f", dockerfile, "-t", tag, "."]);
        if !out.status.success() {
            return Err(format!(
                "docker build -f {dockerfile} failed:\n{}{}",
                tail(&text(&out.stdout), 20),
                tail(&text(&out.stderr), 20)
            ));
        }
    }
    Ok(Images::Ready)
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Removes the container when dropped, whether the test passed or panicked.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A unique container name, so that parallel runs and leftovers never collide.
fn container_name(what: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("driftless-e2e-{what}-{}-{nanos}", std::process::id())
}

/// A fake host root: what `driftless facts` and the log pipeline read below `--root`.
fn fixture_host() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = [
        (
            "etc/os-release",
            format!(
                "PRETTY_NAME=\"{PRETTY_NAME}\"\nNAME=\"Driftless Fixture Linux\"\n\
                 VERSION_ID=\"9.9\"\nVERSION=\"9.9 (Test)\"\nID=fixture\nID_LIKE=debian\n"
            ),
        ),
        ("etc/hostname", "fixture-node-1\n".to_owned()),
        (
            "proc/meminfo",
            format!(
                "MemTotal:       {MEM_TOTAL_KB} kB\nMemFree:         1234560 kB\n\
                 MemAvailable:    4567890 kB\nBuffers:          123456 kB\n\
                 Cached:          2345678 kB\nSwapTotal:       2097148 kB\n\
                 SwapFree:        2097148 kB\n"
            ),
        ),
        ("proc/loadavg", "0.42 0.35 0.30 1/234 5678\n".to_owned()),
        (
            "proc/sys/kernel/osrelease",
            "6.1.0-99-fixture-amd64\n".to_owned(),
        ),
        (
            "var/log/app.log",
            "2025-05-20T10:00:00Z level=info msg=\"started\"\n\
             2025-05-20T10:00:01Z level=warn msg=\"disk 81% full\"\n"
                .to_owned(),
        ),
    ];
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir fixture");
        std::fs::write(&path, content).expect("write fixture file");
    }
    // The agent runs as user 65532 without capabilities: the tree must be world-readable, like
    // a real host's /etc and /proc, whichever user owns the fixture files.
    make_world_readable(dir.path());
    dir
}

fn make_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = if path.is_dir() { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("read fixture dir") {
            make_world_readable(&entry.expect("dir entry").path());
        }
    }
}

/// `docker run` arguments of the hardened agent: what the chart's default DaemonSet grants
/// (`agent-daemonset.yaml` without `agent.apply.enabled`): runAsUser/runAsGroup 65532,
/// supplementalGroups [4], capabilities drop ALL, allowPrivilegeEscalation false,
/// readOnlyRootFilesystem, an emptyDir at /tmp and the state hostPath at /var/lib/driftless.
fn hardened_agent_args(host: &Path) -> Vec<String> {
    let root = repo_root();
    [
        "--user".to_owned(),
        format!("{AGENT_UID}:{AGENT_GID}"),
        "--group-add".to_owned(),
        AGENT_SUPPLEMENTARY_GID.to_string(),
        "--read-only".to_owned(),
        "--cap-drop".to_owned(),
        "ALL".to_owned(),
        "--security-opt".to_owned(),
        "no-new-privileges".to_owned(),
        "--tmpfs".to_owned(),
        "/tmp".to_owned(),
        // The DaemonSet mounts a hostPath here, which its init container gives to the agent's
        // user; a tmpfs owned by that user stands in for it.
        "--tmpfs".to_owned(),
        format!("/var/lib/driftless:uid={AGENT_UID},gid={AGENT_GID},mode=0700"),
        "--env-file".to_owned(),
    ]
    .into_iter()
    .chain([
        root.join("config/examples/standalone.env")
            .display()
            .to_string(),
        "-v".to_owned(),
        format!("{}:/host:ro", host.display()),
        "-v".to_owned(),
        format!(
            "{}:/etc/driftless/config:ro",
            root.join("config/examples/standalone").display()
        ),
    ])
    .collect()
}

#[test]
fn images_answer_help() {
    let Some(()) = images_or_skip() else { return };
    for image in [AGENT_IMAGE, OPERATOR_IMAGE] {
        let out = docker_ok(&["run", "--rm", image, "--help"]);
        let help = text(&out.stdout);
        assert!(
            help.contains("Usage"),
            "{image} --help prints usage: {help}"
        );
    }
    let inspect = docker_ok(&[
        "image",
        "inspect",
        "--format",
        "{{.Config.User}}",
        OPERATOR_IMAGE,
    ]);
    assert_eq!(
        text(&inspect.stdout).trim(),
        "65532:65532",
        "operator runs non-root"
    );
}

#[test]
fn agent_image_validates_and_reads_facts_unprivileged() {
    let Some(()) = images_or_skip() else { return };
    let host = fixture_host();
    let hardened = hardened_agent_args(host.path());
    let hardened: Vec<&str> = hardened.iter().map(String::as_str).collect();

    let mut validate = vec!["run", "--rm"];
    validate.extend(&hardened);
    validate.extend([AGENT_IMAGE, "validate", "--config", "/etc/driftless/config"]);
    docker_ok(&validate);

    let mut facts = vec!["run", "--rm"];
    facts.extend(&hardened);
    facts.extend([AGENT_IMAGE, "facts", "--root", "/host"]);
    let out = docker_ok(&facts);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("facts prints JSON ({err}): {}", text(&out.stdout)));
    assert!(
        contains_string(&json, PRETTY_NAME),
        "facts show the host's os-release PRETTY_NAME: {json}"
    );
    assert!(
        contains_number(&json, MEM_TOTAL_KB * 1024) || contains_number(&json, MEM_TOTAL_KB),
        "facts show the host's MemTotal: {json}"
    );
}

fn contains_string(value: &serde_json::Value, needle: &str) -> bool {
    match value {
        serde_json::Value::String(s) => s == needle,
        serde_json::Value::Array(items) => items.iter().any(|v| contains_string(v, needle)),
        serde_json::Value::Object(map) => map.values().any(|v| contains_string(v, needle)),
        _ => false,
    }
}

fn contains_number(value: &serde_json::Value, needle: u64) -> bool {
    match value {
        serde_json::Value::Number(n) => n.as_u64() == Some(needle),
        serde_json::Value::Array(items) => items.iter().any(|v| contains_number(v, needle)),
        serde_json::Value::Object(map) => map.values().any(|v| contains_number(v, needle)),
        _ => false,
    }
}

/// `GET path` over HTTP/1.0; the status code and body, or `None` when nothing answers yet.
fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

#[test]
fn agent_image_serves_healthz_unprivileged() {
    let Some(()) = images_or_skip() else { return };
    let host = fixture_host();
    let name = container_name("agent");
    let hardened = hardened_agent_args(host.path());
    let mut args = vec!["run", "-d", "--name", &name, "-p", "127.0.0.1::9779"];
    args.extend(hardened.iter().map(String::as_str));
    args.extend([
        AGENT_IMAGE,
        "agent",
        // The chart's ConfigMap mode; cluster mode is chosen only in a pod without --config.
        "--standalone",
        "--config",
        "/etc/driftless/config",
        "--root",
        "/host",
        "--listen",
        "0.0.0.0:9779",
    ]);
    docker_ok(&args);
    let _guard = Container(name.clone());

    let port = docker_ok(&["port", &name, "9779/tcp"]);
    let port = text(&port.stdout);
    let addr = port
        .lines()
        .find(|line| line.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no 127.0.0.1 port for 9779: {port}"))
        .trim()
        .to_owned();

    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        if let Some(answer) = http_get(&addr, "/healthz") {
            break answer;
        }
        let running = docker_ok(&["inspect", "--format", "{{.State.Running}}", &name]);
        if text(&running.stdout).trim() != "true" || Instant::now() > deadline {
            let logs = docker(&["logs", &name]);
            panic!(
                "the agent did not answer /healthz on {addr} within 20 s (running: {}); logs:\n{}{}",
                text(&running.stdout).trim(),
                text(&logs.stdout),
                text(&logs.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(answer.0, 200, "/healthz status, body {:?}", answer.1);
    assert_eq!(answer.1.trim(), "ok");

    // The agent process runs as the chart's user and groups with no capabilities at all.
    let status = docker_ok(&["exec", &name, "cat", "/proc/1/status"]);
    let status = text(&status.stdout);
    let field = |key: &str| -> Vec<String> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in /proc/1/status:\n{status}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    let uid = AGENT_UID.to_string();
    let gid = AGENT_GID.to_string();
    assert!(
        field("Uid:").iter().all(|id| *id == uid),
        "the agent runs as uid {uid}:\n{status}"
    );
    assert!(
        field("Gid:").iter().all(|id| *id == gid),
        "the agent runs as gid {gid}:\n{status}"
    );
    assert!(
        field("Groups:").contains(&AGENT_SUPPLEMENTARY_GID.to_string()),
        "the agent has the supplementary group {AGENT_SUPPLEMENTARY_GID}:\n{status}"
    );
    for caps in ["CapPrm:", "CapEff:", "CapBnd:"] {
        assert!(
            field(caps)
                .iter()
                .all(|c| c.trim_start_matches('0').is_empty()),
            "the agent has no capabilities ({caps}):\n{status}"
        );
    }
    assert_eq!(field("NoNewPrivs:"), ["1"], "no privilege escalation");

    let logs = docker_ok(&["logs", &name]);
    let logs = format!("{}{}", text(&logs.stdout), text(&logs.stderr));
    assert!(
        !logs.contains(r#""level":"ERROR""#),
        "the agent logged errors on a valid host and config:\n{logs}"
    );
}

#[test]
fn operator_image_without_a_cluster_fails_clearly() {
    let Some(()) = images_or_skip() else { return };
    let name = container_name("operator");
    let _guard = Container(name.clone());
    let mut child = Command::new("docker")
        .args([
            "run",
            "--name",
            &name,
            "-e",
            "KUBECONFIG=/nonexistent/kubeconfig",
            OPERATOR_IMAGE,
            "run",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start docker run");
    // It must give up on its own rather than wait for a cluster that never comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for docker run").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the operator kept running for 60 s with no cluster");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("docker run output");
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the operator must fail without a cluster; stderr: {stderr}"
    );
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("kubeconfig") || lower.contains("cluster"),
        "the error names the kubeconfig or the cluster: {stderr}"
    );
}
