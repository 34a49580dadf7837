//! Shared by the `apply_*` tests: a temporary host root, a configuration directory, and the
//! real `driftless` binary.
// Each test file uses a different subset of these helpers.
#![allow(clippy::unwrap_used, dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A temporary host root with `/etc/passwd` and `/etc/group`, and a config directory.
pub struct Host {
    pub root: tempfile::TempDir,
    pub config: tempfile::TempDir,
    pub secrets: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/cron.d")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(root.path().join("etc/group"), "root:x:0:\nstaff:x:1001:\n").unwrap();
        std::fs::write(root.path().join("etc/hostname"), "web1\n").unwrap();
        Self {
            root,
            config: tempfile::tempdir().unwrap(),
            secrets: tempfile::tempdir().unwrap(),
        }
    }

    /// Writes a policy file into the config directory.
    pub fn policy(&self, name: &str, yaml: &str) {
        std::fs::write(self.config.path().join(name), yaml).unwrap();
    }

    /// Writes the env file with secrets.
    pub fn env(&self, text: &str) {
        std::fs::write(self.secrets.path().join("env"), text).unwrap();
    }

    pub fn path(&self, host: &str) -> PathBuf {
        self.root.path().join(host.trim_start_matches('/'))
    }

    /// Runs `driftless ARGS --config C --env-file E --root R`; returns (exit code, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let env = self.secrets.path().join("env");
        if !env.exists() {
            std::fs::write(&env, "").unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(args)
            .arg("--config")
            .arg(self.config.path())
            .arg("--env-file")
            .arg(&env)
            .arg("--root")
            .arg(self.root.path())
            .env_remove("DRIFTLESS_CONFIG")
            .env_remove("DRIFTLESS_ENV_FILE")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `apply --output json [extra]`, parsed; panics with the output if it is not JSON.
    pub fn apply(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["apply", "--output", "json"];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = self.run(&args);
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr: {stderr}"));
        (code, json)
    }

    /// Every regular file and symlink below the root with its content (or link target), mode,
    /// uid and gid: a snapshot to compare runs byte for byte.
    pub fn snapshot(&self) -> BTreeMap<PathBuf, (Vec<u8>, u32, u32, u32)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.root.path().to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(self.root.path()).unwrap().to_path_buf();
                let content = if meta.file_type().is_symlink() {
                    std::fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else if meta.is_dir() {
                    stack.push(path.clone());
                    Vec::new()
                } else {
                    std::fs::read(&path).unwrap()
                };
                out.insert(rel, (content, meta.mode(), meta.uid(), meta.gid()));
            }
        }
        out
    }

    /// Copies `/bin/sh` and the libraries it needs into the root, so commands can run below it
    /// through chroot.
    pub fn install_shell(&self) {
        let sh = std::fs::canonicalize("/bin/sh").unwrap();
        let mut files = vec![sh.clone()];
        let ldd = Command::new("ldd")
            .arg(&sh)
            .output()
            .expect("ldd is needed to copy /bin/sh into a test root");
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            for word in line.split_whitespace() {
                if word.starts_with('/') {
                    files.push(PathBuf::from(word));
                }
            }
        }
        for f in files {
            let dest = self.path(f.to_str().unwrap());
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            std::fs::copy(&f, &dest).unwrap();
        }
        let bin = self.path("/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let target = self.path(sh.to_str().unwrap());
        if target != bin.join("sh") {
            std::fs::copy(&target, bin.join("sh")).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `(task, status)` for every task of the report, in order.
pub fn statuses(report: &Value) -> Vec<(String, String)> {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tasks"].as_array().unwrap().iter())
        .map(|t| {
            (
                t["task"].as_str().unwrap().to_owned(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The task report of one task.
pub fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["tasks"].as_array().unwrap().iter())
        .find(|t| t["task"] == name)
        .unwrap_or_else(|| panic!("no task {name} in {report}"))
}

pub fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

pub fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// Applies twice and asserts: the first run changed every task and succeeded, the second is
/// all `unchanged` and left every byte, mode and owner as the first did. Returns the first
/// report.
pub fn assert_idempotent(host: &Host) -> Value {
    let (code, first) = host.apply(&[]);
    assert_eq!(code, 0, "first apply failed: {first:#}");
    for (task, status) in statuses(&first) {
        assert_eq!(status, "changed", "first run, task {task}: {first:#}");
    }
    let after_first = host.snapshot();
    let (code, second) = host.apply(&[]);
    assert_eq!(code, 0, "second apply failed: {second:#}");
    for (task, status) in statuses(&second) {
        assert_eq!(status, "unchanged", "second run, task {task}: {second:#}");
    }
    assert_eq!(
        host.snapshot(),
        after_first,
        "the second run changed the root"
    );
    first
}

pub const HEADER: &str =
    "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: test\nspec:\n";
