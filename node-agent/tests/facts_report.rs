//! Threshold breaches in the node's report (a DriftReport for the node): the running agent's
//! `/report` lists a breach while the condition holds and moves it to the history once it clears,
//! next to `driftless_threshold_breached` on `/metrics`; `driftless facts --format report`
//! evaluates a configuration's thresholds once.
#![allow(clippy::unwrap_used)]

mod process_support;

use process_support::{free_port, Killed};

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

fn policy(dir: &Path, fact_file: &str) {
    std::fs::write(
        dir.join("facts.yaml"),
        format!(
            r#"apiVersion: driftless.dev/v1alpha1
kind: FactsPolicy
metadata:
  name: node-health
spec:
  interval: 1s
  facts:
    - name: queue
      file:
        path: {fact_file}
  thresholds:
    - name: queue-long
      metric: driftless_fact
      labels: {{ name: queue }}
      comparison: GreaterThan
      value: 10
      severity: Critical
    - name: load-high
      metric: node_load1
      comparison: GreaterThan
      value: 1000000
"#
        ),
    )
    .unwrap();
}

/// Polls `/report` until `check` accepts it.
fn wait_report(
    port: u16,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = serde_json::Value::Null;
    while Instant::now() < deadline {
        if let Some((head, body)) = get(port, "/report") {
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            assert!(head.contains("application/json"), "{head}");
            last = serde_json::from_str(&body).unwrap();
            if check(&last) {
                return last;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what}: last report {last:#}");
}

fn metrics(port: u16) -> String {
    get(port, "/metrics").unwrap().1
}

#[test]
fn agent_report_lists_breaches_and_their_clearing() {
    let root = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("queue"), "3\n").unwrap();
    policy(config.path(), "/queue");
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["agent", "--config"])
        .arg(config.path())
        .arg("--root")
        .arg(root.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DRIFTLESS_ENV_FILE", "/dev/null")
        .env("NODE_NAME", "worker-7")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Killed(child);

    let report = wait_report(port, "in sync at first", |r| {
        r["status"]["summary"]["status"] == "InSync"
    });
    assert_eq!(report["apiVersion"], "driftless.dev/v1alpha1");
    assert_eq!(report["kind"], "DriftReport");
    assert_eq!(report["metadata"]["name"], "node-worker-7");
    assert_eq!(report["spec"]["target"]["kind"], "Node");
    assert_eq!(report["spec"]["target"]["node"], "worker-7");
    assert!(report["status"].get("items").is_none(), "{report:#}");

    // The fact goes above the threshold: breached in the report and on /metrics.
    std::fs::write(root.path().join("queue"), "25\n").unwrap();
    let report = wait_report(port, "breach listed", |r| {
        r["status"]["summary"]["status"] == "Drifted"
    });
    let status = &report["status"];
    assert_eq!(status["summary"]["changed"], 1, "{report:#}");
    let item = &status["items"][0];
    assert_eq!(item["address"], "threshold:queue-long");
    assert_eq!(item["domain"], "threshold");
    assert_eq!(item["source"], "node-health/queue-long");
    assert_eq!(item["change"], "changed");
    assert_eq!(
        item["attributes"][0],
        serde_json::json!({
            "path": "driftless_fact{name=~\"queue\"}",
            "before": "25",
            "after": "<= 10",
        })
    );
    assert_eq!(item["attributes"][1]["path"], "severity");
    assert_eq!(item["attributes"][1]["before"], "critical");
    assert_eq!(status["history"][0]["status"], "InSync");
    let text = metrics(port);
    assert!(
        text.contains("driftless_threshold_breached{policy=\"node-health\",threshold=\"queue-long\",severity=\"critical\"} 1\n"),
        "{text}"
    );
    assert!(text.contains(
        "driftless_threshold_breached{policy=\"node-health\",threshold=\"load-high\",severity=\"warning\"} 0\n"
    ));

    // Back below: cleared, and the breach is in the history.
    std::fs::write(root.path().join("queue"), "4\n").unwrap();
    let report = wait_report(port, "breach cleared", |r| {
        r["status"]["summary"]["status"] == "InSync"
    });
    let status = &report["status"];
    assert!(status.get("items").is_none(), "{report:#}");
    assert_eq!(status["history"][0]["status"], "Drifted");
    assert_eq!(status["history"][0]["changed"], 1);
    assert_eq!(status["history"][1]["status"], "InSync");
    assert!(metrics(port).contains(
        "driftless_threshold_breached{policy=\"node-health\",threshold=\"queue-long\",severity=\"critical\"} 0\n"
    ));
}

#[test]
fn facts_report_evaluates_thresholds_once() {
    let root = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("queue"), "42\n").unwrap();
    policy(config.path(), "/queue");
    // `for` does not apply to one evaluation.
    let yaml = std::fs::read_to_string(config.path().join("facts.yaml"))
        .unwrap()
        .replace(
            "      severity: Critical\n",
            "      severity: Critical\n      for: 10m\n",
        );
    std::fs::write(config.path().join("facts.yaml"), yaml).unwrap();
    let run = |root: &Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
            .args(["facts", "--format", "report", "--config"])
            .arg(config.path())
            .arg("--root")
            .arg(root)
            .env("NODE_NAME", "cli-node")
            .env("DRIFTLESS_ENV_FILE", "/dev/null")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let report = run(root.path());
    assert_eq!(report["metadata"]["name"], "node-cli-node");
    assert_eq!(report["status"]["summary"]["status"], "Drifted");
    let items = report["status"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{report:#}");
    assert_eq!(items[0]["address"], "threshold:queue-long");
    assert_eq!(items[0]["attributes"][0]["before"], "42");

    std::fs::write(root.path().join("queue"), "1\n").unwrap();
    let report = run(root.path());
    assert_eq!(report["status"]["summary"]["status"], "InSync");
    assert!(report["status"].get("items").is_none());

    // A configuration problem is an error naming the file.
    std::fs::write(
        config.path().join("facts.yaml"),
        "apiVersion: driftless.dev/v1alpha1\nkind: FactsPolicy\nmetadata:\n  name: x\nspec:\n  thresholds:\n    - name: t\n      metric: m\n      comparison: Sideways\n      value: 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["facts", "--format", "report", "--config"])
        .arg(config.path())
        .env("DRIFTLESS_ENV_FILE", "/dev/null")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("facts.yaml"), "{stderr}");
}
