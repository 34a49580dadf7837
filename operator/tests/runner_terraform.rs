#![allow(clippy::unwrap_used)]
//! The scan runner end to end with the real Terraform 1.0.3 binary (`.ci/tools/terraform.sh`)
//! on real git repositories served over `file://`, `git daemon` and smart HTTP with token
//! auth (`git http-backend` behind a small server written here that checks `Authorization`).
//! Most stacks use only built-in Terraform features (local backend, `terraform_remote_state`,
//! outputs); drift is created by editing the remote state file the stacks read. Managed
//! resources come from the null provider installed offline by the same script.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use driftless_crds::drift_report::{ChangeType, DriftReport, DriftStatus};
use driftless_crds::secret::SecretString;
use driftless_operator::repo::RepoCache;
use driftless_operator::runner::git::Credentials;

/// How long the operator's repository cache may take per fetch in these tests.
const CACHE_TIMEOUT: Duration = Duration::from_secs(60);
/// The local git and GitHub API servers of these tests speak plain HTTP: a lab.
const INSECURE: &str = "--allow-insecure-credentials";

fn terraform() -> PathBuf {
    let root = std::env::var("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/driftless/tools")
        });
    let bin = root.join("terraform/bin/terraform");
    assert!(
        bin.exists(),
        "Terraform 1.0.3 is missing at {}: run .ci/tools/terraform.sh",
        bin.display()
    );
    bin
}

/// The Terraform CLI configuration of `.ci/tools/terraform.sh`: installs the null provider
/// from the local filesystem mirror, nothing from the network.
fn cli_config() -> PathBuf {
    let rc = terraform().with_file_name("..").join("terraformrc");
    assert!(
        rc.exists(),
        "{} is missing: run .ci/tools/terraform.sh",
        rc.display()
    );
    rc
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A remote state file (what another stack would have written) with `vpc_id` and a
/// sensitive `db_password`.
fn net_state(vpc: &str, serial: u32) -> String {
    serde_json::json!({
        "version": 4, "terraform_version": "1.0.3", "serial": serial,
        "lineage": "7d1b5b1e-0000-4000-8000-000000000001",
        "outputs": {
            "vpc_id": {"value": vpc, "type": "string"},
            "db_password": {"value": "hunter2-sensitive", "type": "string", "sensitive": true}
        },
        "resources": []
    })
    .to_string()
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    states: PathBuf,
}

impl Fixture {
    /// A repository with stacks `live/app` (reads the net state) and `live/db` (plain outputs),
    /// both applied (with Terraform directly) so that they start in sync.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let repo = root.join("repo");
        let states = root.join("states");
        std::fs::create_dir_all(&repo).unwrap();
        std::fs::create_dir_all(&states).unwrap();
        write(&states.join("net.tfstate"), &net_state("vpc-1", 1));
        let s = states.display();
        write(
            &repo.join("live/app/main.tf"),
            &format!(
                r#"terraform {{
  backend "local" {{ path = "{s}/app.tfstate" }}
}}
data "terraform_remote_state" "net" {{
  backend = "local"
  config  = {{ path = "{s}/net.tfstate" }}
}}
output "vpc" {{ value = data.terraform_remote_state.net.outputs.vpc_id }}
output "db_password" {{
  value     = data.terraform_remote_state.net.outputs.db_password
  sensitive = true
}}
"#
            ),
        );
        write(
            &repo.join("live/db/main.tf"),
            &format!(
                "terraform {{\n  backend \"local\" {{ path = \"{s}/db.tfstate\" }}\n}}\noutput \"name\" {{ value = \"db-1\" }}\noutput \"tags\" {{ value = {{ env = \"prod\", team = \"data\" }} }}\n"
            ),
        );
        write(&repo.join("modules/README.md"), "not a stack\n");
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "stacks"]);
        let f = Fixture {
            _dir: dir,
            root,
            repo,
            states,
        };
        for stack in ["live/app", "live/db"] {
            f.apply(stack);
        }
        f
    }

    /// `terraform apply` in a scratch copy of a stack: sets up the "real" state.
    fn apply(&self, stack: &str) {
        let work = self.root.join("apply").join(stack);
        std::fs::create_dir_all(&work).unwrap();
        std::fs::copy(self.repo.join(stack).join("main.tf"), work.join("main.tf")).unwrap();
        for args in [
            &["init", "-input=false"][..],
            &["apply", "-input=false", "-auto-approve"][..],
        ] {
            let out = Command::new(terraform())
                .args(args)
                .current_dir(&work)
                .env("TF_IN_AUTOMATION", "1")
                .env("TF_CLI_CONFIG_FILE", cli_config())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn commit(&self, path: &str, text: &str) -> String {
        write(&self.repo.join(path), text);
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "-m", path]);
        git(&self.repo, &["rev-parse", "HEAD"])
    }

    fn scan_file(&self, url: &str, extra: &str) -> PathBuf {
        let path = self.root.join("scan.yaml");
        write(
            &path,
            &format!(
                "apiVersion: driftless.dev/v1alpha1\nkind: DriftScan\nmetadata:\n  name: infra\n  namespace: team-a\nspec:\n  source:\n    git:\n      url: {url}\n      discover: [\"live/*\"]\n{extra}"
            ),
        );
        path
    }

    fn out_dir(&self) -> PathBuf {
        self.root.join("reports")
    }

    fn runner(&self, scan: &Path, run: &str, extra: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_driftless-operator"))
            .args(["scan-runner", "--scan-file"])
            .arg(scan)
            .args(["--run-id", run, "--output-dir"])
            .arg(self.out_dir())
            .arg("--binary")
            .arg(terraform())
            .args(extra)
            .env("DRIFTLESS_LOG", "info")
            .env("TF_CLI_CONFIG_FILE", cli_config())
            .output()
            .unwrap();
        eprintln!(
            "runner {run}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn report(&self, name: &str) -> DriftReport {
        let text = std::fs::read_to_string(self.out_dir().join(format!("{name}.yaml"))).unwrap();
        serde_json::from_value(driftless_crds::yaml::parse_yaml(&text).unwrap().remove(0)).unwrap()
    }
}

#[test]
fn file_url_plans_detect_drift_and_keep_history() {
    let f = Fixture::new();
    let url = format!("file://{}", f.repo.display());
    let artifacts = f.root.join("artifacts");
    let scan = f.scan_file(&url, "  artifacts:\n    volumeClaim: plans\n");
    let artifacts_arg = artifacts.display().to_string();
    let art = ["--artifacts-dir", artifacts_arg.as_str()];

    // Discovery: the two stack directories, not `modules/` (no .tf files).
    let out = f.runner(&scan, "d", &["--discover"]);
    assert!(out.status.success());
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(found["stacks"], serde_json::json!(["live/app", "live/db"]));
    let head = git(&f.repo, &["rev-parse", "HEAD"]);
    assert_eq!(found["commit"], serde_json::json!(head));

    // Run 1: everything as applied → in sync.
    let out = f.runner(&scan, "run-1", &art);
    assert!(out.status.success());
    for name in ["infra-live-app", "infra-live-db"] {
        let r = f.report(name);
        let s = r.status.as_ref().unwrap().summary.as_ref().unwrap();
        assert_eq!(s.status, DriftStatus::InSync, "{name}");
        assert_eq!(s.commit.as_deref(), Some(head.as_str()));
        assert_eq!(s.run.as_deref(), Some("run-1"));
    }
    let app = f.report("infra-live-app");
    assert_eq!(app.spec.target.name, "infra/live/app");
    assert_eq!(app.metadata.namespace.as_deref(), Some("team-a"));

    // Someone changes the network: the app stack drifts, the db stack does not.
    write(&f.states.join("net.tfstate"), &net_state("vpc-2", 2));
    let out = f.runner(&scan, "run-2", &art);
    assert!(out.status.success());
    let app = f.report("infra-live-app");
    let st = app.status.unwrap();
    let s = st.summary.as_ref().unwrap();
    assert_eq!(
        (s.status, s.added, s.changed, s.removed),
        (DriftStatus::Drifted, 0, 1, 0)
    );
    assert_eq!(st.items.len(), 1);
    let item = &st.items[0];
    assert_eq!(
        (item.address.as_str(), item.domain.as_str(), item.change),
        ("output.vpc", "output", ChangeType::Changed)
    );
    assert_eq!(item.attributes[0].before.as_deref(), Some("vpc-1"));
    assert_eq!(item.attributes[0].after.as_deref(), Some("vpc-2"));
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.history[0].run.as_deref(), Some("run-1"));
    assert_eq!(
        f.report("infra-live-db")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
    // The full plan went to the volume, redacted: the sensitive value is not in it.
    let link = st.artifact.as_ref().unwrap();
    assert_eq!(
        link.plan_json,
        "pvc://plans/infra/infra-live-app/run-2/plan.json"
    );
    let json =
        std::fs::read_to_string(artifacts.join("infra/infra-live-app/run-2/plan.json")).unwrap();
    assert!(
        json.contains("vpc-2") && json.contains("<redacted>"),
        "{json}"
    );
    assert!(
        !json.contains("hunter2-sensitive"),
        "sensitive value stored in the artifact"
    );
    let text =
        std::fs::read_to_string(artifacts.join("infra/infra-live-app/run-2/plan.txt")).unwrap();
    assert!(text.contains("vpc-2"), "{text}");
    // The report holds the same redacted text (the dashboard shows it).
    assert_eq!(st.plan_text.as_deref(), Some(text.as_str()));
    let reports = std::fs::read_to_string(f.out_dir().join("infra-live-app.yaml")).unwrap();
    assert!(!reports.contains("hunter2-sensitive"));

    // A code change at a new commit: db drifts (added attribute, changed value); the run is
    // pinned to the commit given.
    let before = head;
    let new = f.commit(
        "live/db/main.tf",
        &std::fs::read_to_string(f.repo.join("live/db/main.tf"))
            .unwrap()
            .replace("db-1", "db-2")
            .replace("team = \"data\"", "team = \"data\", tier = \"gold\""),
    );
    let out = f.runner(&scan, "run-3", &["--commit", &new, "--stack", "live/db"]);
    assert!(out.status.success());
    let db = f.report("infra-live-db").status.unwrap();
    let s = db.summary.as_ref().unwrap();
    assert_eq!((s.status, s.changed), (DriftStatus::Drifted, 2));
    assert_eq!(s.commit.as_deref(), Some(new.as_str()));
    let tags = db
        .items
        .iter()
        .find(|i| i.address == "output.tags")
        .unwrap();
    assert_eq!(tags.attributes.len(), 1);
    assert_eq!(tags.attributes[0].path, "tier");
    assert_eq!(tags.attributes[0].after.as_deref(), Some("gold"));
    // The old commit is still in sync.
    let out = f.runner(&scan, "run-4", &["--commit", &before, "--stack", "live/db"]);
    assert!(out.status.success());
    let db = f.report("infra-live-db").status.unwrap();
    assert_eq!(db.summary.unwrap().status, DriftStatus::InSync);
    assert_eq!(db.history.len(), 3);
}

#[test]
fn failures_are_reported_and_exit_non_zero() {
    let f = Fixture::new();
    f.commit(
        "live/ext/main.tf",
        "data \"external\" \"x\" {\n  program = [\"sh\", \"-c\", \"touch /tmp/pwned\"]\n}\n",
    );
    f.commit(
        "live/broken/main.tf",
        "output \"x\" {\n  value = postgres://admin:pa55word@db/x\n}\n",
    );
    // A "/*" inside a string does not hide the block from the check.
    f.commit(
        "live/hidden/main.tf",
        "locals { open = \"/*\" }\ndata \"external\" \"x\" {\n  program = [\"sh\"]\n}\nlocals { close = \"*/\" }\n",
    );
    let url = format!("file://{}", f.repo.display());
    let scan = f.scan_file(&url, "  plan:\n    blockExternalData: true\n");
    let out = f.runner(&scan, "r1", &[]);
    assert!(!out.status.success(), "a failed stack must fail the run");
    let ext = f.report("infra-live-ext").status.unwrap();
    assert_eq!(ext.summary.unwrap().status, DriftStatus::Error);
    assert!(ext.error.unwrap().contains("external"));
    let broken = f.report("infra-live-broken").status.unwrap();
    assert_eq!(broken.summary.unwrap().status, DriftStatus::Error);
    let err = broken.error.unwrap();
    assert!(!err.contains("pa55word"), "{err}");
    // The check parses the stack before init: a file it cannot parse names file and position.
    assert!(
        err.starts_with(
            "spec.plan.blockExternalData: live/broken/main.tf does not parse: line 2, column "
        ),
        "{err}"
    );
    let hidden = f.report("infra-live-hidden").status.unwrap();
    assert_eq!(hidden.summary.unwrap().status, DriftStatus::Error);
    assert!(
        hidden
            .error
            .unwrap()
            .contains("stack uses data \"external\" (live/hidden/main.tf)"),
        "a \"/*\" in a string must not hide the block"
    );
    // The others were still planned.
    assert_eq!(
        f.report("infra-live-app")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
    // A stack outside the repository is refused.
    let out = f.runner(&scan, "r2", &["--stack", "../states"]);
    assert!(!out.status.success());
    // refreshOnly and lock flags are accepted by the real binary.
    let scan = f.scan_file(&url, "  plan:\n    refreshOnly: true\n    lock: true\n");
    let out = f.runner(&scan, "r3", &["--stack", "live/app"]);
    assert!(out.status.success());
    // A bad scan file is refused naming the file and the field, with nothing planned.
    for (extra, expected) in [
        ("  plan:\n    refreshOnly: maybe\n", "spec.plan.refreshOnly"),
        (
            "---\nkind: DriftScan\n",
            "expected one YAML document (a DriftScan), found 2",
        ),
        ("  plan: [\n", "invalid YAML"),
    ] {
        let scan = f.scan_file(&url, extra);
        let out = f.runner(&scan, "r4", &["--stack", "live/app"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?}");
        assert!(
            stderr.contains("scan.yaml") && stderr.contains(expected),
            "{extra:?}: {stderr}"
        );
    }
}

/// Managed resources of a real provider (null 2.1.2 from the local mirror): actions map to
/// added / changed (replace) / removed, and `refreshOnly` reports code changes as no drift.
#[test]
fn null_provider_resources_and_refresh_only() {
    let f = Fixture::new();
    let s = f.states.display().to_string();
    let stack = |web: &str, extra: &str| {
        format!(
            r#"terraform {{
  required_providers {{
    null = {{ source = "hashicorp/null", version = "2.1.2" }}
  }}
  backend "local" {{ path = "{s}/web.tfstate" }}
}}
resource "null_resource" "web" {{
  triggers = {{ version = "{web}" }}
}}
{extra}"#
        )
    };
    f.commit(
        "live/web/main.tf",
        &stack("1", "resource \"null_resource\" \"old\" {}\n"),
    );
    f.apply("live/web");
    // The code moves on: web's trigger changes, old is dropped, new is added.
    f.commit(
        "live/web/main.tf",
        &stack("2", "resource \"null_resource\" \"new\" {}\n"),
    );
    let url = format!("file://{}", f.repo.display());
    // Scans live/web with `extra` DriftScan spec lines: its status and (status, counts).
    let scan_web = |run: &str, extra: &str| {
        let out = f.runner(&f.scan_file(&url, extra), run, &["--stack", "live/web"]);
        assert!(out.status.success());
        let st = f.report("infra-live-web").status.unwrap();
        let sum = st.summary.clone().unwrap();
        let counts = (sum.status, sum.added, sum.changed, sum.removed);
        (st, counts)
    };
    let (st, counts) = scan_web("r1", "");
    assert_eq!(counts, (DriftStatus::Drifted, 1, 1, 1), "{:?}", st.items);
    let item = |address: &str| {
        st.items
            .iter()
            .find(|i| i.address == address)
            .unwrap_or_else(|| panic!("{address} missing: {:?}", st.items))
    };
    let web = item("null_resource.web");
    assert_eq!((web.change, web.replace), (ChangeType::Changed, true));
    let version = web
        .attributes
        .iter()
        .find(|a| a.path == "triggers.version")
        .unwrap();
    assert_eq!(
        (version.before.as_deref(), version.after.as_deref()),
        (Some("1"), Some("2"))
    );
    assert_eq!(item("null_resource.new").change, ChangeType::Added);
    assert_eq!(item("null_resource.old").change, ChangeType::Removed);

    // refreshOnly: the real objects still match the state, so code changes are not drift.
    let (st, counts) = scan_web("r2", "  plan:\n    refreshOnly: true\n");
    assert_eq!(counts, (DriftStatus::InSync, 0, 0, 0), "{:?}", st.items);
    assert!(st.items.is_empty(), "{:?}", st.items);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `git-daemon` program itself: `git daemon` runs it as a child that killing `git` would
/// leave behind.
fn git_daemon() -> std::path::PathBuf {
    let out = Command::new("git").arg("--exec-path").output().unwrap();
    std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join("git-daemon")
}

#[test]
fn git_daemon_clone() {
    let f = Fixture::new();
    let base = f.root.clone();
    let port = free_port();
    let _daemon = Kill(
        Command::new(git_daemon())
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .arg(&base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let scan = f.scan_file(&format!("git://127.0.0.1:{port}/repo"), "");
    let out = f.runner(&scan, "r1", &[]);
    assert!(out.status.success());
    assert_eq!(
        f.report("infra-live-db")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
}

/// A git server that accepts connections and never answers: the clone gives up after
/// `DRIFTLESS_GIT_SERVER_TIMEOUT` seconds of silence instead of waiting for TCP to drop.
#[test]
fn a_silent_git_server_times_out() {
    let f = Fixture::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    for url in [
        format!("git://127.0.0.1:{port}/repo"),
        format!("http://127.0.0.1:{port}/repo.git"),
    ] {
        let scan = f.scan_file(&url, "");
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_driftless-operator"))
            .args(["scan-runner", "--scan-file"])
            .arg(&scan)
            .args(["--run-id", "r1", "--output-dir"])
            .arg(f.out_dir())
            .arg("--binary")
            .arg(terraform())
            .env("DRIFTLESS_GIT_SERVER_TIMEOUT", "2")
            .output()
            .unwrap();
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: {stderr}");
        assert!(took < Duration::from_secs(20), "{url}: took {took:?}");
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}")),
            "{url}: {stderr}"
        );
    }
    // A bad value is refused before anything runs, naming the variable.
    let out = Command::new(env!("CARGO_BIN_EXE_driftless-operator"))
        .arg("crds")
        .env("DRIFTLESS_GIT_SERVER_TIMEOUT", "soon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid value 'soon' for '--git-server-timeout <SECONDS>'"),
        "{stderr}"
    );
}

/// A smart-HTTP git server: `git http-backend` as CGI behind basic auth with `user:token`.
fn http_git_server(
    project_root: PathBuf,
    user: &'static str,
    token: &'static str,
) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let refused = Arc::new(AtomicUsize::new(0));
    let refused2 = refused.clone();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"))
    );
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (root, expected, refused) =
                (project_root.clone(), expected.clone(), refused2.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, &root, &expected, &refused);
            });
        }
    });
    (port, refused)
}

fn serve(
    stream: TcpStream,
    root: &Path,
    expected: &str,
    refused: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h)?;
            let h = h.trim_end().to_owned();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if let Some(len) = header("content-length") {
            body.resize(len.parse().unwrap_or(0), 0);
            reader.read_exact(&mut body)?;
        } else if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            loop {
                let mut size = String::new();
                reader.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0; n + 2];
                reader.read_exact(&mut chunk)?;
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        }
        if header("authorization").as_deref() != Some(expected) {
            refused.fetch_add(1, Ordering::SeqCst);
            stream.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut cgi = Command::new("git")
            .arg("http-backend")
            .env_clear()
            .env("GIT_PROJECT_ROOT", root)
            .env("GIT_HTTP_EXPORT_ALL", "1")
            .env("REQUEST_METHOD", &method)
            .env("PATH_INFO", path)
            .env("QUERY_STRING", query)
            .env("CONTENT_TYPE", header("content-type").unwrap_or_default())
            .env("CONTENT_LENGTH", body.len().to_string())
            .env(
                "HTTP_CONTENT_ENCODING",
                header("content-encoding").unwrap_or_default(),
            )
            .env("GIT_PROTOCOL", header("git-protocol").unwrap_or_default())
            .env("REMOTE_USER", "git")
            .env("REMOTE_ADDR", "127.0.0.1")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        cgi.stdin.take().unwrap().write_all(&body)?;
        let out = cgi.wait_with_output()?;
        let split = out
            .stdout
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|p| (p, 4))
            .or_else(|| {
                out.stdout
                    .windows(2)
                    .position(|w| w == b"\n\n")
                    .map(|p| (p, 2))
            })
            .unwrap_or((out.stdout.len(), 0));
        let head = String::from_utf8_lossy(&out.stdout[..split.0]).into_owned();
        let content = &out.stdout[(split.0 + split.1).min(out.stdout.len())..];
        let mut status = "200 OK".to_owned();
        let mut response = String::new();
        for h in head.lines() {
            if let Some(s) = h.strip_prefix("Status:") {
                status = s.trim().to_owned();
            } else if !h.trim().is_empty() {
                response.push_str(h.trim_end());
                response.push_str("\r\n");
            }
        }
        stream.write_all(
            format!(
                "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\n\r\n",
                content.len()
            )
            .as_bytes(),
        )?;
        stream.write_all(content)?;
        stream.flush()?;
    }
}

#[test]
fn smart_http_with_token() {
    let f = Fixture::new();
    let (port, refused) = http_git_server(f.root.clone(), "ci-bot", "tok-3f9a1c2e8b7d");
    let url = format!("http://127.0.0.1:{port}/repo");
    let creds = "      credentials:\n        https:\n          name: git-token\n";
    // The `git:` mapping ends with the url; credentials go under it.
    let scan = f.scan_file(&url, "");
    let text = std::fs::read_to_string(&scan).unwrap().replace(
        "      discover: [\"live/*\"]\n",
        &format!("      discover: [\"live/*\"]\n{creds}"),
    );
    std::fs::write(&scan, text).unwrap();

    // Wrong token: the clone fails, nothing is reported, the token is not printed.
    let secrets = f.root.join("secrets");
    write(&secrets.join("git-token/token"), "wrong-token-value\n");
    write(&secrets.join("git-token/username"), "ci-bot");
    let sd = secrets.display().to_string();
    let out = f.runner(&scan, "r0", &["--secrets-dir", &sd, INSECURE]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("wrong-token-value"), "{stderr}");
    assert!(refused.load(Ordering::SeqCst) >= 1);
    assert!(!f.out_dir().join("infra-live-app.yaml").exists());

    // The operator's repository cache fetches with the same credentials: refused, then
    // fetched at the branch head.
    let cache_dir = f.root.join("cache");
    let cache = RepoCache::new(&cache_dir);
    let https = |token: &str| Credentials::Https {
        username: "ci-bot".into(),
        token: SecretString::new(token),
    };
    let err = cache
        .sync(
            &url,
            "HEAD",
            None,
            &https("wrong-token-value"),
            CACHE_TIMEOUT,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&url) && !err.contains("wrong-token-value"),
        "{err}"
    );
    let head = git(&f.repo, &["rev-parse", "HEAD"]);
    let fetched = cache
        .sync(
            &url,
            "HEAD",
            None,
            &https("tok-3f9a1c2e8b7d"),
            CACHE_TIMEOUT,
        )
        .unwrap();
    assert_eq!(fetched, head);

    // Right token.
    write(&secrets.join("git-token/token"), "tok-3f9a1c2e8b7d\n");
    let out = f.runner(&scan, "r1", &["--secrets-dir", &sd, INSECURE]);
    assert!(out.status.success());
    assert_eq!(
        f.report("infra-live-app")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
    assert_eq!(
        f.report("infra-live-db")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
}

/// Verifies an RS256 JWT with the `openssl` CLI against `public_key` (PEM file).
fn openssl_verify(jwt: &str, public_key: &Path, dir: &Path) -> bool {
    let parts: Vec<&str> = jwt.split('.').collect();
    if parts.len() != 3 {
        return false;
    }
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let Ok(sig) = b64.decode(parts[2]) else {
        return false;
    };
    let input = dir.join("jwt-input");
    let sig_file = dir.join("jwt-sig");
    std::fs::write(&input, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&sig_file, sig).unwrap();
    Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(&sig_file)
        .arg(&input)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A GitHub API stand-in: mints `token` for installation 42 when the App JWT verifies.
fn github_api(public_key: PathBuf, dir: PathBuf, token: &'static str) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let minted = Arc::new(AtomicUsize::new(0));
    let minted2 = minted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let mut auth = String::new();
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if lower.starts_with("authorization:") {
                    auth = h["authorization:".len()..].trim().to_owned();
                }
                if lower.starts_with("content-length:") {
                    len = h["content-length:".len()..].trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let jwt = auth.strip_prefix("Bearer ").unwrap_or("");
            let claims: serde_json::Value = jwt
                .split('.')
                .nth(1)
                .and_then(|c| {
                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(c)
                        .ok()
                })
                .and_then(|c| serde_json::from_slice(&c).ok())
                .unwrap_or_default();
            let ok = request.starts_with("POST /app/installations/42/access_tokens ")
                && claims["iss"] == "4242"
                && openssl_verify(jwt, &public_key, &dir);
            let response = if ok {
                minted2.fetch_add(1, Ordering::SeqCst);
                let body = format!(r#"{{"token":"{token}","expires_at":"2099-01-01T00:00:00Z"}}"#);
                format!("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
            } else {
                "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            stream.write_all(response.as_bytes()).unwrap();
        }
    });
    (port, minted)
}

#[test]
fn github_app_credentials() {
    let f = Fixture::new();
    let keys = f.root.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let key = keys.join("app.pem");
    let public = keys.join("app.pub.pem");
    // PKCS#1 ("BEGIN RSA PRIVATE KEY"), as GitHub hands out App keys.
    let gen = Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key)
        .arg("2048")
        .output()
        .expect("openssl CLI (Debian package openssl) is needed by this test");
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let pubout = Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(&public)
        .output()
        .unwrap();
    assert!(pubout.status.success());
    let token = "ghs_InstallationToken0123456789abcdefABCDEF";
    let (api_port, minted) = github_api(public, keys.clone(), token);
    let (git_port, _) = http_git_server(f.root.clone(), "x-access-token", token);
    let scan = f.scan_file(&format!("http://127.0.0.1:{git_port}/repo"), "");
    let creds = format!(
        "      credentials:\n        githubApp:\n          secretRef: {{name: app}}\n          appId: 4242\n          installationId: 42\n          apiUrl: http://127.0.0.1:{api_port}\n"
    );
    let text = std::fs::read_to_string(&scan).unwrap().replace(
        "      discover: [\"live/*\"]\n",
        &format!("      discover: [\"live/*\"]\n{creds}"),
    );
    std::fs::write(&scan, text).unwrap();
    let secrets = f.root.join("secrets");
    std::fs::create_dir_all(secrets.join("app")).unwrap();
    std::fs::copy(&key, secrets.join("app/private-key")).unwrap();
    let sd = secrets.display().to_string();
    let out = f.runner(&scan, "r1", &["--secrets-dir", &sd, INSECURE]);
    assert!(out.status.success());
    assert_eq!(minted.load(Ordering::SeqCst), 1);
    assert_eq!(
        f.report("infra-live-app")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status,
        DriftStatus::InSync
    );
    assert!(!String::from_utf8_lossy(&out.stderr).contains(token));

    // The operator's fetches reuse one token until shortly before it expires.
    let pem = std::fs::read_to_string(&key).unwrap();
    let api = format!("http://127.0.0.1:{api_port}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for _ in 0..3 {
        let got = rt
            .block_on(driftless_operator::runner::git::github_app_token(
                &api, 4242, 42, &pem,
            ))
            .unwrap();
        assert_eq!(got.expose(), token);
    }
    assert_eq!(
        minted.load(Ordering::SeqCst),
        2,
        "one mint for three fetches"
    );

    // PKCS#8 keys work too; a key the API does not know is refused.
    let pk8 = keys.join("other.pem");
    let gen = Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-out"])
        .arg(&pk8)
        .output()
        .unwrap();
    assert!(gen.status.success());
    std::fs::copy(&pk8, secrets.join("app/private-key")).unwrap();
    let out = f.runner(&scan, "r2", &["--secrets-dir", &sd, INSECURE]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
    assert_eq!(minted.load(Ordering::SeqCst), 2);
    // The cache is keyed by the private key: another key is not handed the cached token.
    let other = std::fs::read_to_string(&pk8).unwrap();
    let err = rt
        .block_on(driftless_operator::runner::git::github_app_token(
            &api, 4242, 42, &other,
        ))
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
}

/// One plain HTTP/1.1 request (moto does not check signatures); returns status and body.
fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn s3_artifacts() {
    let tools = std::env::var("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/driftless/tools")
        });
    let moto = tools.join("s3/bin/moto_server");
    assert!(
        moto.exists(),
        "moto_server missing at {}: run .ci/tools/s3.sh",
        moto.display()
    );
    let port = free_port();
    let _moto = Kill(
        Command::new(&moto)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let (status, _) = http(port, "PUT", "/plans");
    assert_eq!(status, 200);
    let f = Fixture::new();
    write(&f.states.join("net.tfstate"), &net_state("vpc-9", 2));
    let scan = f.scan_file(
        &format!("file://{}", f.repo.display()),
        &format!("  artifacts:\n    s3:\n      bucket: plans\n      prefix: drift\n      endpoint: http://127.0.0.1:{port}\n      pathStyle: true\n    credentialsSecret: {{name: s3}}\n"),
    );
    let secrets = f.root.join("secrets");
    write(
        &secrets.join("s3/AWS_ACCESS_KEY_ID"),
        "AKIAIOSFODNN7EXAMPLE",
    );
    write(
        &secrets.join("s3/AWS_SECRET_ACCESS_KEY"),
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    let sd = secrets.display().to_string();
    let out = f.runner(&scan, "r1", &["--secrets-dir", &sd, "--stack", "live/app"]);
    assert!(out.status.success());
    let st = f.report("infra-live-app").status.unwrap();
    assert_eq!(st.summary.as_ref().unwrap().status, DriftStatus::Drifted);
    let link = st.artifact.unwrap();
    assert_eq!(
        link.plan_json,
        "s3://plans/drift/infra/infra-live-app/r1/plan.json"
    );
    // Read back with a signed client (objects are private).
    let bucket = s3::Bucket::new(
        "plans",
        s3::Region::Custom {
            region: "us-east-1".into(),
            endpoint: format!("http://127.0.0.1:{port}"),
        },
        s3::creds::Credentials::new(
            Some("AKIAIOSFODNN7EXAMPLE"),
            Some("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
            None,
            None,
            None,
        )
        .unwrap(),
    )
    .unwrap()
    .with_path_style();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |key: &str| {
        rt.block_on(bucket.get_object(key))
            .unwrap()
            .to_string()
            .unwrap()
    };
    let body = get("drift/infra/infra-live-app/r1/plan.json");
    assert!(
        body.contains("\"format_version\"") && body.contains("vpc-9"),
        "{body}"
    );
    assert!(!body.contains("hunter2-sensitive"));
    let text = get("drift/infra/infra-live-app/r1/plan.txt");
    assert!(text.contains("vpc-9"), "{text}");
}

/// A real OpenSSH server (`.ci/tools/terraform.sh` installs Debian's openssh-server) on
/// 127.0.0.1 with a throwaway host key, letting in the current user with a key made here;
/// `git-upload-pack` runs over it like on any git host.
struct Sshd {
    _child: Kill,
    port: u16,
    user: String,
    host_key_pub: String,
    client_key: String,
    log: PathBuf,
}

fn keygen(path: &Path, kind: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", "", "-C", "driftless-test", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ssh-keygen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub")).unwrap()
}

/// Starts sshd, or says why it cannot run here.
fn start_sshd(dir: &Path) -> Result<Sshd, String> {
    let sshd = Path::new("/usr/sbin/sshd");
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout)
        .unwrap()
        .trim()
        .to_owned();
    let root = user == "root";
    if root && !Path::new("/run/sshd").is_dir() {
        // Privilege separation directory of Debian's sshd (normally made by its service unit).
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("creating /run/sshd: {e}"))?;
    }
    let ssh = dir.join("ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let host_key_pub = keygen(&ssh.join("host_ed25519"), "ed25519");
    let client_pub = keygen(&ssh.join("client_ed25519"), "ed25519");
    let client_key = std::fs::read_to_string(ssh.join("client_ed25519")).unwrap();
    write(&ssh.join("authorized_keys"), &client_pub);
    let port = free_port();
    let config = ssh.join("sshd_config");
    write(
        &config,
        &format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
             PermitRootLogin prohibit-password\nAllowUsers {user}\nLogLevel VERBOSE\n",
            d = ssh.display()
        ),
    );
    let check = Command::new(sshd)
        .args(["-t", "-f"])
        .arg(&config)
        .output()
        .unwrap();
    if !check.status.success() {
        return Err(format!(
            "sshd -t refused the test configuration: {}",
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    let log = ssh.join("sshd.log");
    let child = Command::new(sshd)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("starting sshd: {e}"))?;
    let child = Kill(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!(
                "sshd did not listen: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Sshd {
        _child: child,
        port,
        user,
        host_key_pub,
        client_key,
        log,
    })
}

#[test]
fn ssh_clone_checks_known_hosts() {
    if !Path::new("/usr/sbin/sshd").exists() {
        // Straight to stderr (past the harness's capture): CI counts the line as a skip.
        let line = "skipped: ssh_clone_checks_known_hosts: /usr/sbin/sshd is missing (run .ci/tools/terraform.sh)\n";
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
        return;
    }
    let f = Fixture::new();
    // sshd is here: failing to start it is a failure, not a skip.
    let sshd = start_sshd(&f.root).unwrap_or_else(|why| panic!("{why}"));
    let port = sshd.port;
    let url = format!("ssh://{}@127.0.0.1:{port}{}", sshd.user, f.repo.display());
    let scan = f.scan_file(&url, "");
    let text = std::fs::read_to_string(&scan).unwrap().replace(
        "      discover: [\"live/*\"]\n",
        "      discover: [\"live/*\"]\n      credentials:\n        ssh:\n          name: git-ssh\n",
    );
    std::fs::write(&scan, text).unwrap();
    let secrets = f.root.join("secrets");
    write(&secrets.join("git-ssh/ssh-privatekey"), &sshd.client_key);
    let sd = secrets.display().to_string();
    let args = ["--secrets-dir", sd.as_str(), "--stack", "live/db"];
    // `KIND BASE64` of the server's real host key.
    let mut parts = sshd.host_key_pub.split_whitespace();
    let (kind, blob) = (parts.next().unwrap(), parts.next().unwrap());
    let fp = String::from_utf8(
        Command::new("ssh-keygen")
            .arg("-lf")
            .arg(f.root.join("ssh/host_ed25519.pub"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fp = fp.split_whitespace().nth(1).unwrap().to_owned();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let known = |text: &str| write(&secrets.join("git-ssh/known_hosts"), text);
    let db_status = |f: &Fixture| {
        f.report("infra-live-db")
            .status
            .unwrap()
            .summary
            .unwrap()
            .status
    };

    // 1. Unknown host: known_hosts lists another host only → refused before authenticating.
    known(&format!("github.com {kind} {blob}\n"));
    let out = f.runner(&scan, "r0", &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("host key of [127.0.0.1]:{port}"))
            && stderr.contains("is not in the known_hosts")
            && stderr.contains(&fp),
        "{stderr}"
    );
    assert!(!stderr.contains("OPENSSH PRIVATE KEY"), "{stderr}");
    assert!(!f.out_dir().join("infra-live-db.yaml").exists());

    // 2. The right host with a different key (a man in the middle, or a rotated key) → refused.
    let other = keygen(&f.root.join("ssh/other_ed25519"), "ed25519");
    let other_blob = other.split_whitespace().nth(1).unwrap();
    known(&format!("[127.0.0.1]:{port} {kind} {other_blob}\n"));
    let out = f.runner(&scan, "r1", &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not in the known_hosts") && stderr.contains(&fp),
        "{stderr}"
    );
    assert!(!f.out_dir().join("infra-live-db.yaml").exists());

    // 3. A plain `[host]:port` entry with the real key → cloned and planned.
    known(&format!(
        "# test server\n[127.0.0.1]:{port} {kind} {other_blob}\n[127.0.0.1]:{port} {kind} {blob}\n"
    ));
    let out = f.runner(&scan, "r2", &args);
    assert!(
        out.status.success(),
        "sshd log:\n{}",
        std::fs::read_to_string(&sshd.log).unwrap_or_default()
    );
    assert_eq!(db_status(&f), DriftStatus::InSync);
    let head = git(&f.repo, &["rev-parse", "HEAD"]);
    let db = f.report("infra-live-db").status.unwrap();
    assert_eq!(db.summary.unwrap().commit.as_deref(), Some(head.as_str()));
    // The operator's repository cache: the same host-key check, then the same commit.
    let cache = RepoCache::new(f.root.join("cache"));
    let fetch = |known_hosts: String| {
        let creds = Credentials::Ssh {
            private_key: SecretString::new(sshd.client_key.clone()),
            known_hosts,
        };
        cache.sync(&url, "HEAD", None, &creds, CACHE_TIMEOUT)
    };
    let err = fetch(format!("github.com {kind} {blob}\n"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is not in the known_hosts") && err.contains(&fp),
        "{err}"
    );
    let fetched = fetch(format!("[127.0.0.1]:{port} {kind} {blob}\n")).unwrap();
    assert_eq!(fetched, head);

    // 4. The same entry hashed by `ssh-keygen -H` (what `HashKnownHosts yes` writes).
    let hashed = f.root.join("ssh/known_hosts_hashed");
    write(&hashed, &format!("[127.0.0.1]:{port} {kind} {blob}\n"));
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(out.status.success());
    let hashed_text = std::fs::read_to_string(&hashed).unwrap();
    assert!(
        hashed_text.starts_with("|1|") && !hashed_text.contains("127.0.0.1"),
        "{hashed_text}"
    );
    known(&hashed_text);
    let out = f.runner(&scan, "r3", &args);
    assert!(out.status.success());
    let db = f.report("infra-live-db").status.unwrap();
    assert_eq!(db.summary.as_ref().unwrap().run.as_deref(), Some("r3"));
    assert_eq!(db.history.len(), 1);
    // A hashed entry for another port does not match.
    let wrong = f.root.join("ssh/known_hosts_wrong_port");
    write(&wrong, &format!("[127.0.0.1]:{} {kind} {blob}\n", port ^ 1));
    Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&wrong)
        .output()
        .unwrap();
    known(&std::fs::read_to_string(&wrong).unwrap());
    let out = f.runner(&scan, "r4", &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the known_hosts"));

    // 4b. As OpenSSH reads known_hosts: a key marked `@revoked` is refused even where a plain
    // line lists it, and a `@cert-authority` key is not a host key. OpenSSH's own client, on
    // the same files, decides the same.
    let openssh_accepts = |text: &str| {
        let file = f.root.join("ssh/known_hosts_openssh");
        write(&file, text);
        let status = Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
            ])
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", file.display()))
            .arg("-i")
            .arg(f.root.join("ssh/client_ed25519"))
            .args([
                "-p",
                &port.to_string(),
                &format!("{}@127.0.0.1", sshd.user),
                "true",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        status.status.success()
    };
    let plain = format!("[127.0.0.1]:{port} {kind} {blob}\n");
    assert!(openssh_accepts(&plain), "OpenSSH refuses the plain entry");
    let revoked = format!("{plain}@revoked * {kind} {blob}\n");
    assert!(!openssh_accepts(&revoked), "OpenSSH accepts a revoked key");
    known(&revoked);
    let out = f.runner(&scan, "r4b", &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is marked @revoked in the known_hosts") && stderr.contains(&fp),
        "{stderr}"
    );
    let authority = format!("@cert-authority [127.0.0.1]:{port} {kind} {blob}\n");
    assert!(
        !openssh_accepts(&authority),
        "OpenSSH takes a CA key for a host key"
    );
    known(&authority);
    let out = f.runner(&scan, "r4c", &args);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not in the known_hosts"));
    let err = fetch(revoked.clone()).unwrap_err().to_string();
    assert!(err.contains("is marked @revoked"), "{err}");

    // 5. A key the server does not authorise: refused by sshd, a clear auth error.
    known(&hashed_text);
    let stranger = f.root.join("ssh/stranger_ed25519");
    keygen(&stranger, "ed25519");
    write(
        &secrets.join("git-ssh/ssh-privatekey"),
        &std::fs::read_to_string(&stranger).unwrap(),
    );
    let out = f.runner(&scan, "r5", &args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("OPENSSH PRIVATE KEY") && stderr.contains("error: "),
        "{stderr}"
    );
}

/// Terraform 1.0.3 writes the values of sensitive variables in the clear in the plan JSON
/// (`variables`, `configuration`), and a removed sensitive output only in `prior_state`: none of
/// them may reach the stored artifact.
#[test]
fn sensitive_values_never_reach_the_artifact() {
    let f = Fixture::new();
    let s = f.states.display().to_string();
    let stack = format!(
        r#"terraform {{
  backend "local" {{ path = "{s}/vars.tfstate" }}
}}
variable "api_token" {{
  type      = string
  sensitive = true
  default   = "tok-variable-secret-1234"
}}
variable "pin" {{
  type      = string
  sensitive = true
  default   = "7q!"
}}
variable "db_port" {{
  type      = number
  sensitive = true
  default   = 15432
}}
variable "public" {{
  type      = bool
  sensitive = true
  default   = true
}}
output "db_port_plus" {{
  value     = var.db_port + 1
  sensitive = true
}}
output "public_flag" {{
  value     = var.public
  sensitive = true
}}
output "token_len" {{ value = nonsensitive(length(var.api_token)) }}
output "pin_len" {{ value = nonsensitive(length(var.pin)) }}
output "old_secret" {{
  value     = "prior-state-only-secret"
  sensitive = true
}}
"#
    );
    f.commit("live/vars/main.tf", &stack);
    f.apply("live/vars");
    // The sensitive output leaves the code: it is now only in the state.
    f.commit(
        "live/vars/main.tf",
        &stack.replace(
            "output \"old_secret\" {\n  value     = \"prior-state-only-secret\"\n  sensitive = true\n}\n",
            "",
        ),
    );
    let artifacts = f.root.join("artifacts");
    let scan = f.scan_file(
        &format!("file://{}", f.repo.display()),
        "  artifacts:\n    volumeClaim: plans\n",
    );
    let a = artifacts.display().to_string();
    let out = f.runner(
        &scan,
        "r1",
        &["--artifacts-dir", &a, "--stack", "live/vars"],
    );
    assert!(out.status.success());
    let st = f.report("infra-live-vars").status.unwrap();
    let s = st.summary.as_ref().unwrap();
    assert_eq!(
        (s.status, s.removed),
        (DriftStatus::Drifted, 1),
        "{:?}",
        st.items
    );
    let item = &st.items[0];
    assert_eq!(
        (item.address.as_str(), item.change),
        ("output.old_secret", ChangeType::Removed)
    );
    assert_eq!(item.attributes[0].before.as_deref(), Some("<redacted>"));
    let json =
        std::fs::read_to_string(artifacts.join("infra/infra-live-vars/r1/plan.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["terraform_version"], "1.0.3");
    // What Terraform wrote there, redacted.
    assert_eq!(doc["variables"]["api_token"]["value"], "<redacted>");
    assert_eq!(doc["variables"]["pin"]["value"], "<redacted>");
    assert_eq!(
        doc["configuration"]["root_module"]["variables"]["api_token"]["default"],
        "<redacted>"
    );
    assert_eq!(doc["planned_values"]["outputs"]["token_len"]["value"], 24);
    for secret in [
        "tok-variable-secret-1234",
        "7q!",
        "prior-state-only-secret",
        "15432",
        "15433",
    ] {
        assert!(!json.contains(secret), "{secret} in the artifact: {json}");
    }
    // Numbers and booleans marked sensitive are redacted by structure.
    assert_eq!(doc["variables"]["db_port"]["value"], "<redacted>");
    assert_eq!(doc["variables"]["public"]["value"], "<redacted>");
    assert_eq!(
        doc["configuration"]["root_module"]["variables"]["public"]["default"],
        "<redacted>"
    );
    assert_eq!(
        doc["planned_values"]["outputs"]["public_flag"]["value"],
        "<redacted>"
    );
    assert_eq!(
        doc["prior_state"]["values"]["outputs"]["db_port_plus"]["value"],
        "<redacted>"
    );
    let text =
        std::fs::read_to_string(artifacts.join("infra/infra-live-vars/r1/plan.txt")).unwrap();
    for secret in ["tok-variable-secret-1234", "prior-state-only-secret"] {
        assert!(!text.contains(secret), "{secret} in the text plan: {text}");
    }
    let report = std::fs::read_to_string(f.out_dir().join("infra-live-vars.yaml")).unwrap();
    assert!(!report.contains("tok-variable") && !report.contains("prior-state-only"));
}
