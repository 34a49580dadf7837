//! Shared by tests that start processes and servers: a child killed on drop, a free port, and
//! `promtool check metrics`.
// Each test file uses a different subset of these helpers.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::Write as _;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) when the test ends, passing or not.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `promtool check metrics` on an exposition: its exit code and every non-empty line it
/// printed (each one a problem).
pub fn promtool(exposition: &str) -> (Option<i32>, Vec<String>) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool not found ({e}); run .ci/tools/facts.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect();
    (out.status.code(), lines)
}

/// Asserts that promtool accepts a node exposition: it must parse, and the only lint findings
/// allowed are node_exporter's own camelCase `node_memory_*` and `node_netstat_*` names and its
/// `node_entropy_*_bits` units, which dashboards depend on.
pub fn promtool_check(exposition: &str) {
    let (code, lines) = promtool(exposition);
    let problems: Vec<&String> = lines
        .iter()
        .filter(|l| {
            let camel = (l.starts_with("node_memory_") || l.starts_with("node_netstat_"))
                && l.contains("camelCase");
            let bits = l.starts_with("node_entropy_") && l.contains("instead of \"bits\"");
            !(camel || bits)
        })
        .collect();
    assert!(
        matches!(code, Some(0) | Some(3)) && problems.is_empty(),
        "promtool check metrics failed ({code:?}): {problems:#?}"
    );
}
