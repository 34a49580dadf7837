//! CI's closing line says exactly what ran.
//!
//! A test that cannot run here (no `KUBECONFIG`, no sshd, no Prometheus, ...) returns early and
//! writes one line `skipped: <test>: <reason>` straight to stderr; `.ci/test.sh` moves every
//! such line from "passed" to "skipped". Two things can break that: the counting itself, and a
//! skip message the harness swallows (`eprintln!`/`println!` output is captured for a passing
//! test, so a skip announced that way is counted as a pass). Both are checked here.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use driftless_e2e::repo_root;

/// The `awk` program of `.ci/test.sh`, run on a log as `cargo test` writes it.
fn closing_line(log: &str) -> String {
    let script = std::fs::read_to_string(repo_root().join(".ci/test.sh")).unwrap();
    let start = script.find("awk '").expect(".ci/test.sh runs awk") + "awk '".len();
    let end = start + script[start..].find('\'').expect("the awk program ends");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    std::fs::write(&path, log).unwrap();
    let out = Command::new("awk")
        .arg(&script[start..end])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn closing_line_moves_skip_lines_from_passed_to_skipped() {
    let log = "\
running 3 tests
skipped: needs_a_cluster: KUBECONFIG is not set
test needs_a_cluster ... ok
test real_one ... ok
test slow_one ... ignored
test result: ok. 2 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 2 tests
skipped: ssh_clone_checks_known_hosts: /usr/sbin/sshd is missing
test ssh_clone_checks_known_hosts ... ok
test broken ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s
";
    assert_eq!(closing_line(log), "tests: 1 passed, 1 failed, 3 skipped");
}

/// Every `.rs` file under the workspace's crates, `target/` excluded.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// A skip announced through the captured macros never reaches the closing line.
#[test]
fn no_test_announces_a_skip_through_captured_output() {
    let root = repo_root();
    let mut files = Vec::new();
    for krate in ["crds", "node-agent", "operator", "e2e"] {
        sources(&root.join(krate), &mut files);
    }
    assert!(files.len() > 50, "found only {} sources", files.len());
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let lower = line.to_lowercase();
            let captured = ["eprintln!(", "println!(", "eprint!(", "print!("]
                .iter()
                .any(|m| lower.contains(m));
            if captured && lower.contains("\"skip") {
                offenders.push(format!(
                    "{}:{}: {}",
                    file.strip_prefix(&root).unwrap_or(file).display(),
                    n + 1,
                    line.trim()
                ));
            }
        }
    }
    // The benchmark binaries print their skip on stdout on purpose: they are not tests.
    offenders.retain(|o| !o.starts_with("e2e/src/bin/"));
    assert!(
        offenders.is_empty(),
        "skips the harness captures (write `skipped: <test>: <reason>` straight to stderr):\n{}",
        offenders.join("\n")
    );
}
