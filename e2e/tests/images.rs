//! The container images, built from `operator/Dockerfile` and `node-agent/Dockerfile` and run
//! the way the chart runs them: the agent as the chart's default DaemonSet does without
//! `agent.apply.enabled` (user 65532:65532 with the supplementary group 4, `adm`, no
//! capabilities, no privilege escalation, a read-only root filesystem, a state directory owned
//! by that user and a read-only host tree at `/host`); the operator with no cluster to talk to.
//!
//! Needs a Docker engine; with none, the tests print `skipped: no docker: ...`. The base image
//! `debian:bookworm-slim` is built from the machine's Debian mirror by `.ci/base-image.sh` (no
//! registry needed; run `.ci/install-tools.sh` first for debootstrap). The images ship the
//! statically linked release binaries of `.ci/build-release.sh`
//! (`target/<arch>-unknown-linux-gnu/release`, below `CARGO_TARGET_DIR` when set), which the
//! tests build with that script when they are missing.
//!
//! The scan runner is the operator binary, copied by the scan Job's init container into the
//! user's IaC image; `runner_starts_in_a_musl_image_without_glibc` runs a real scan that way in
//! an Alpine-like image with musl and no glibc (Debian's `musl` and `busybox-static`, installed
//! by `.ci/tools/musl.sh`; Terraform from `.ci/tools/terraform.sh`).

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

    let release = release_dir();
    let binaries = ["driftless", "driftless-operator"];
    if binaries.iter().any(|b| !release.join(b).is_file()) {
        let build = Command::new("bash")
            .arg(root.join(".ci/build-release.sh"))
            .current_dir(&root)
            .output()
            .map_err(|err| format!("running .ci/build-release.sh: {err}"))?;
        if !build.status.success() {
            return Err(format!(
                ".ci/build-release.sh failed:\n{}",
                tail(&text(&build.stderr), 40)
            ));
        }
    }
    // The binaries may live outside the repository (CARGO_TARGET_DIR): the images are built
    // from a context holding just them, with the Dockerfiles' BIN pointing there.
    let context = tempfile::tempdir().map_err(|err| format!("temp dir: {err}"))?;
    std::fs::create_dir(context.path().join("bin")).map_err(|err| format!("mkdir: {err}"))?;
    for binary in binaries {
        let (from, to) = (
            release.join(binary),
            context.path().join("bin").join(binary),
        );
        std::fs::copy(&from, &to)
            .map_err(|err| format!("copying {} to {}: {err}", from.display(), to.display()))?;
    }
    let context_arg = context.path().display().to_string();
    for (dockerfile, tag) in [
        ("node-agent/Dockerfile", AGENT_IMAGE),
        ("operator/Dockerfile", OPERATOR_IMAGE),
    ] {
        let dockerfile_arg = root.join(dockerfile).display().to_string();
        let out = docker(&[
            "build",
            "-f",
            &dockerfile_arg,
            "--build-arg",
            "BIN=bin",
            "-t",
            tag,
            &context_arg,
        ]);
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

/// Where `.ci/build-release.sh` puts the statically linked release binaries.
fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join(format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
        .join("release")
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

/// The Alpine-like image of `runner_starts_in_a_musl_image_without_glibc`.
const MUSL_IMAGE: &str = "driftless/musl-fixture:test";

/// Busybox applets linked into the musl image's `/bin` (Alpine's image has these and more).
const APPLETS: [&str; 12] = [
    "sh", "ash", "cp", "cat", "ls", "mkdir", "rm", "env", "id", "echo", "true", "uname",
];

/// The Terraform tools of `.ci/tools/terraform.sh`: the binary (resolved from its symlink) and
/// the directory of the null provider's filesystem mirror.
fn terraform_tools() -> (PathBuf, PathBuf) {
    let root = std::env::var_os("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/driftless/tools")
        });
    let bin = root.join("terraform/bin/terraform");
    let providers = root.join("terraform/providers");
    let bin = std::fs::canonicalize(&bin).unwrap_or_else(|err| {
        panic!(
            "Terraform 1.0.3 is missing at {} ({err}): run .ci/tools/terraform.sh",
            bin.display()
        )
    });
    assert!(
        providers.is_dir(),
        "the null provider mirror {} is missing: run .ci/tools/terraform.sh",
        providers.display()
    );
    (bin, providers)
}

/// The program interpreter (`PT_INTERP`) a 64-bit little-endian ELF file asks for: `None` for a
/// statically linked program (or a file that is not an ELF program at all).
fn elf_interpreter(path: &Path) -> Option<String> {
    let bytes =
        std::fs::read(path).unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    if !bytes.starts_with(b"\x7fELF") {
        return None;
    }
    assert_eq!(
        bytes.get(4..6),
        Some(&[2u8, 1][..]),
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let field = |offset: usize, len: usize| -> usize {
        let mut le = [0u8; 8];
        le[..len].copy_from_slice(
            bytes
                .get(offset..offset + len)
                .unwrap_or_else(|| panic!("{}: truncated ELF header", path.display())),
        );
        usize::try_from(u64::from_le_bytes(le)).expect("offset fits usize")
    };
    let (phoff, phentsize, phnum) = (field(0x20, 8), field(0x36, 2), field(0x38, 2));
    (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&header| field(header, 4) == 3) // PT_INTERP
        .map(|header| {
            let (offset, size) = (field(header + 8, 8), field(header + 32, 8));
            text(&bytes[offset..offset + size])
                .trim_end_matches('\0')
                .to_owned()
        })
}

/// An Alpine-like root filesystem with musl and no glibc, from the machine's Debian packages
/// `musl` (the libc, which is also its loader) and `busybox-static` (`/bin/sh`, `cp`, ...):
/// `/lib/ld-musl-<arch>.so.1`, `/bin/busybox` with applet links, `/etc/passwd` with the scan
/// pods' user 65532, `/etc/hosts`, `/tmp`. Panics when a file in it is glibc or a program asks
/// for any loader but musl's.
fn musl_rootfs(dir: &Path) {
    use std::os::unix::fs::{symlink, PermissionsExt as _};
    let arch = std::env::consts::ARCH;
    let loader = format!("ld-musl-{arch}.so.1");
    let musl = std::fs::canonicalize(Path::new("/lib").join(&loader)).unwrap_or_else(|err| {
        panic!("/lib/{loader} is missing ({err}): run .ci/tools/musl.sh (Debian's musl)")
    });
    let busybox = Path::new("/bin/busybox");
    assert!(
        busybox.is_file() && elf_interpreter(busybox).is_none(),
        "/bin/busybox is missing or not static: run .ci/tools/musl.sh (Debian's busybox-static)"
    );
    for sub in [
        "bin",
        "lib",
        "etc",
        "tmp",
        "usr/bin",
        "usr/local/bin",
        "root",
    ] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir rootfs");
    }
    std::fs::copy(&musl, dir.join("lib").join(&loader)).expect("copy the musl libc");
    symlink(&loader, dir.join(format!("lib/libc.musl-{arch}.so.1"))).expect("symlink libc");
    std::fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", dir.join("bin").join(applet)).expect("symlink applet");
    }
    let files = [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/sbin/nologin\n\
             nonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n",
        ),
        ("etc/group", "root:x:0:root\nnobody:x:65534:\nnonroot:x:65532:\n"),
        ("etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost\n"),
        (
            "etc/os-release",
            "NAME=\"Driftless musl fixture\"\nID=musl-fixture\nPRETTY_NAME=\"Driftless musl fixture\"\n",
        ),
    ];
    for (path, content) in files {
        std::fs::write(dir.join(path), content).expect("write rootfs file");
    }
    std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod /tmp");

    // No glibc anywhere: no glibc library or loader, and no program that asks for a loader
    // other than musl's.
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).expect("read rootfs") {
            let path = entry.expect("rootfs entry").path();
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            assert!(
                !(name.starts_with("libc.so") || name.starts_with("ld-linux")),
                "glibc in the musl rootfs: {}",
                path.display()
            );
            let meta = std::fs::symlink_metadata(&path).expect("stat rootfs entry");
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                if let Some(interp) = elf_interpreter(&path) {
                    assert_eq!(interp, format!("/lib/{loader}"), "{}", path.display());
                }
            }
        }
    }
}

/// Builds the musl image: the root filesystem as a tar stream into `docker import`.
fn import_musl_image(rootfs: &Path) {
    let mut tar = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(rootfs)
        .args(["-cf", "-", "."])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start tar");
    let stream = tar.stdout.take().expect("tar stdout");
    let import = Command::new("docker")
        .args([
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            r#"CMD ["/bin/sh"]"#,
            "-",
            MUSL_IMAGE,
        ])
        .stdin(stream)
        .output()
        .expect("run docker import");
    let tar = tar.wait().expect("wait for tar");
    assert!(tar.success(), "tar of the musl rootfs failed: {tar}");
    assert!(
        import.status.success(),
        "docker import failed: {}",
        text(&import.stderr)
    );
}

/// A scan Job as the operator builds it, for one stack of a DriftScan whose IaC image is the
/// musl image and whose runner image is the operator image.
fn musl_scan_job(
    scan: &driftless_crds::drift_scan::DriftScan,
    commit: &str,
) -> k8s_openapi::api::batch::v1::Job {
    use driftless_operator::scan::controller::{build_job, JobDefaults};
    use driftless_operator::scan::queue::ScanKey;
    use driftless_operator::scan::scheduler::JobPlan;
    let plan = JobPlan {
        scan: ScanKey::new("team-a", "infra"),
        name: "infra-musl-1-00000001".into(),
        run: "musl-1".into(),
        commit: Some(commit.to_owned()),
        stacks: vec!["live/web".into()],
        image: MUSL_IMAGE.into(),
    };
    let defaults = JobDefaults {
        runner_image: OPERATOR_IMAGE.into(),
        ..Default::default()
    };
    build_job(scan, &plan, &defaults)
}

/// `docker run` arguments for one container of a scan pod, as a kubelet would run it: the pod's
/// user and group, the container's securityContext, its environment, and its volume mounts,
/// each `emptyDir` a host directory in `empty_dirs` shared by the pod's containers.
fn pod_container_args(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &k8s_openapi::api::core::v1::Container,
    empty_dirs: &std::collections::HashMap<String, PathBuf>,
) -> Vec<String> {
    let pod_sc = pod.security_context.as_ref().expect("pod securityContext");
    let uid = pod_sc.run_as_user.expect("runAsUser");
    let gid = pod_sc.run_as_group.expect("runAsGroup");
    let mut args = vec!["--user".to_owned(), format!("{uid}:{gid}")];
    let sc = container
        .security_context
        .as_ref()
        .expect("container securityContext");
    if sc.read_only_root_filesystem == Some(true) {
        args.push("--read-only".into());
    }
    if sc.allow_privilege_escalation == Some(false) {
        args.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for cap in sc
        .capabilities
        .as_ref()
        .and_then(|c| c.drop.clone())
        .unwrap_or_default()
    {
        args.extend(["--cap-drop".into(), cap]);
    }
    for var in container.env.iter().flatten() {
        let value = var.value.clone().expect("plain env values only");
        args.extend(["-e".into(), format!("{}={value}", var.name)]);
    }
    for mount in container.volume_mounts.iter().flatten() {
        let host = empty_dirs
            .get(&mount.name)
            .unwrap_or_else(|| panic!("volume {} is not an emptyDir", mount.name));
        args.extend([
            "-v".into(),
            format!("{}:{}", host.display(), mount.mount_path),
        ]);
    }
    args
}

/// The scan runner is the operator binary, which the scan Job's init container copies into the
/// user's IaC image. The images users name for Terraform, OpenTofu and Terragrunt are Alpine
/// (musl): the binary must start there. This runs the Job the operator builds in an Alpine-like
/// image with musl and no glibc at all: the init container (the operator image, the Job's own
/// command) copies the runner into the Job's `emptyDir`, then the scan container runs it as
/// uid 65532 with a read-only root filesystem and no network, planning a real stack of a local
/// git repository with Terraform 1.0.3 and the null provider. The debug build, which is
/// dynamically linked against glibc, is the control: it cannot even start there.
#[test]
fn runner_starts_in_a_musl_image_without_glibc() {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(()) = images_or_skip() else { return };
    let (terraform, providers) = terraform_tools();

    // The shipped binary is static: no program interpreter at all.
    let shipped = release_dir().join("driftless-operator");
    assert_eq!(
        elf_interpreter(&shipped),
        None,
        "{} must be statically linked (built by .ci/build-release.sh)",
        shipped.display()
    );

    let work = tempfile::tempdir().expect("temp dir");
    let rootfs = work.path().join("rootfs");
    musl_rootfs(&rootfs);
    import_musl_image(&rootfs);
    // The image's libc works: musl's loader runs and says what it is.
    let out = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        MUSL_IMAGE,
        &format!("/lib/ld-musl-{}.so.1", std::env::consts::ARCH),
    ]);
    assert!(
        text(&out.stderr).contains("musl libc"),
        "musl's loader in the image: {}",
        text(&out.stderr)
    );

    // A repository with one stack that plans one null_resource to add (no state yet).
    let repo = work.path().join("repo");
    std::fs::create_dir_all(repo.join("live/web")).expect("mkdir repo");
    std::fs::write(
        repo.join("live/web/main.tf"),
        "terraform {\n  required_providers {\n    null = { source = \"hashicorp/null\", version = \"2.1.2\" }\n  }\n}\n\
         resource \"null_resource\" \"web\" {\n  triggers = { version = \"1\" }\n}\n",
    )
    .expect("write main.tf");
    let git = |args: &[&str]| -> String {
        let out = run(Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(["-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(&repo));
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "web"]);
    let head = git(&["rev-parse", "HEAD"]);

    // The DriftScan, read by the runner from a file; its jobTemplate.env points Terraform at
    // the provider mirror, mounted where this CLI configuration says.
    let fixture = work.path().join("fixture");
    std::fs::create_dir_all(&fixture).expect("mkdir fixture");
    std::fs::write(
        fixture.join("terraformrc"),
        "provider_installation {\n  filesystem_mirror {\n    path    = \"/opt/terraform/providers\"\n    \
         include = [\"registry.terraform.io/hashicorp/null\"]\n  }\n  direct {\n    \
         exclude = [\"registry.terraform.io/hashicorp/null\"]\n  }\n}\n",
    )
    .expect("write terraformrc");
    let scan_yaml = format!(
        "apiVersion: driftless.dev/v1alpha1\nkind: DriftScan\nmetadata:\n  name: infra\n  \
         namespace: team-a\n  uid: u-1\nspec:\n  source:\n    git:\n      url: file:///git/repo\n      \
         stacks: [\"live/web\"]\n  jobTemplate:\n    image: {MUSL_IMAGE}\n    env:\n      \
         - name: TF_CLI_CONFIG_FILE\n        value: /fixture/terraformrc\n"
    );
    std::fs::write(fixture.join("scan.yaml"), &scan_yaml).expect("write scan.yaml");
    let scan: driftless_crds::drift_scan::DriftScan =
        serde_json::from_value(one_document(&scan_yaml)).expect("parse the DriftScan");
    // Directories the pod's user writes: the reports, and its own copy of the repository
    // (libgit2, like git, refuses a repository its user does not own).
    let [reports, git_dir] = ["reports", "git"].map(|name| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        dir
    });
    make_world_readable(&repo);
    make_world_readable(&fixture);
    let [repo_arg, git_arg] = [&repo, &git_dir].map(|d| d.display().to_string());
    let uid = driftless_operator::scan::controller::RUNNER_UID;
    docker_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        &format!("{uid}:{uid}"),
        "-v",
        &format!("{repo_arg}:/src:ro"),
        "-v",
        &format!("{git_arg}:/git"),
        MUSL_IMAGE,
        "cp",
        "-R",
        "/src",
        "/git/repo",
    ]);

    let job = musl_scan_job(&scan, &head);
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the Job has a pod spec");
    // Every emptyDir is a host directory, writable by all like the kubelet's.
    let mut empty_dirs = std::collections::HashMap::new();
    for volume in pod.volumes.iter().flatten() {
        assert!(volume.empty_dir.is_some(), "unexpected volume {volume:?}");
        let dir = work.path().join("volumes").join(&volume.name);
        std::fs::create_dir_all(&dir).expect("mkdir emptyDir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .expect("chmod emptyDir");
        empty_dirs.insert(volume.name.clone(), dir);
    }

    // The init container: the runner image copies the binary into the shared emptyDir.
    let init = &pod.init_containers.as_ref().expect("init containers")[0];
    let init_command = init.command.clone().expect("init command");
    let mut args = vec!["run".to_owned(), "--rm".to_owned()];
    args.extend(pod_container_args(pod, init, &empty_dirs));
    args.extend([
        "--entrypoint".to_owned(),
        init_command[0].clone(),
        init.image.clone().expect("init image"),
    ]);
    args.extend(init_command[1..].iter().cloned());
    docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());

    // The scan container: the musl image runs the Job's command, reading the DriftScan from
    // the file and writing reports to a directory instead of the API server.
    let main = &pod.containers[0];
    assert_eq!(main.image.as_deref(), Some(MUSL_IMAGE));
    let command = main.command.clone().expect("scan command");
    let mut runner_args = Vec::new();
    let mut words = command.iter();
    while let Some(word) = words.next() {
        if word == "--namespace" || word == "--scan" {
            words.next();
        } else {
            runner_args.push(word.clone());
        }
    }
    runner_args.extend(
        [
            "--scan-file",
            "/fixture/scan.yaml",
            "--output-dir",
            "/reports",
        ]
        .map(str::to_owned),
    );
    let scan_container = |binary_dir: Option<&Path>| -> Output {
        let mut args = vec![
            "run".to_owned(),
            "--rm".to_owned(),
            "--network".to_owned(),
            "none".to_owned(),
        ];
        let mut dirs = empty_dirs.clone();
        if let Some(dir) = binary_dir {
            dirs.insert("driftless-bin".into(), dir.to_path_buf());
        }
        args.extend(pod_container_args(pod, main, &dirs));
        for (host, container) in [
            (git_dir.as_path(), "/git"),
            (fixture.as_path(), "/fixture"),
            (providers.as_path(), "/opt/terraform/providers"),
            // Where the hashicorp/terraform image has it, on PATH.
            (terraform.as_path(), "/bin/terraform"),
        ] {
            args.extend([
                "-v".to_owned(),
                format!("{}:{container}:ro", host.display()),
            ]);
        }
        args.extend(["-v".to_owned(), format!("{}:/reports", reports.display())]);
        args.extend([
            "-e".to_owned(),
            "DRIFTLESS_LOG=info".to_owned(),
            MUSL_IMAGE.to_owned(),
        ]);
        args.extend(runner_args.iter().cloned());
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let out = scan_container(None);
    assert!(
        out.status.success(),
        "the runner in the musl image failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    let path = reports.join("infra-live-web.yaml");
    let report: driftless_crds::drift_report::DriftReport = serde_json::from_value(one_document(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("reading {}: {err}", path.display())),
    ))
    .unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()));
    let status = report.status.expect("report status");
    let summary = status.summary.clone().expect("report summary");
    assert_eq!(
        (
            summary.status,
            summary.added,
            summary.changed,
            summary.removed
        ),
        (driftless_crds::drift_report::DriftStatus::Drifted, 1, 0, 0),
        "{status:?}"
    );
    assert_eq!(summary.commit.as_deref(), Some(head.as_str()));
    assert_eq!(summary.run.as_deref(), Some("musl-1"));
    assert_eq!(status.error, None);
    let items: Vec<(&str, driftless_crds::drift_report::ChangeType)> = status
        .items
        .iter()
        .map(|i| (i.address.as_str(), i.change))
        .collect();
    assert_eq!(
        items,
        [(
            "null_resource.web",
            driftless_crds::drift_report::ChangeType::Added
        )]
    );

    // The control: the dynamically linked debug build asks for glibc's loader, which the
    // image does not have, so the same container cannot even start it.
    let dynamic = driftless_e2e::procs::binary("driftless-operator", "driftless-operator");
    let interpreter = elf_interpreter(&dynamic)
        .unwrap_or_else(|| panic!("{} is expected to be dynamically linked", dynamic.display()));
    assert!(
        interpreter.contains("ld-linux")
            && !rootfs.join(interpreter.trim_start_matches('/')).exists(),
        "the control asks for glibc's loader {interpreter}, which the image lacks"
    );
    let control_bin = work.path().join("control-bin");
    std::fs::create_dir_all(&control_bin).expect("mkdir control bin");
    std::fs::copy(&dynamic, control_bin.join("driftless-operator")).expect("copy the control");
    make_world_readable(&control_bin);
    std::fs::set_permissions(
        control_bin.join("driftless-operator"),
        std::fs::Permissions::from_mode(0o755),
    )
    .expect("chmod the control");
    let out = scan_container(Some(&control_bin));
    let stderr = text(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no such file or directory"),
        "the glibc-linked binary must fail to start in the musl image ({}): {stderr}",
        out.status
    );
}

/// The one YAML document of `text`.
fn one_document(text: &str) -> serde_json::Value {
    let mut docs = driftless_crds::yaml::parse_yaml(text).expect("valid YAML");
    assert_eq!(docs.len(), 1, "one YAML document");
    docs.remove(0)
}
