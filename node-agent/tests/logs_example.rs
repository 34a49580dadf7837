//! The standalone example pipeline forwards with `driftless logs`, and `driftless agent` runs
//! pipelines too and shows their metrics on `/metrics`.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use logs_support::*;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn example_pipeline_forwards_syslog_and_app_logs() {
    let tree = Tree::new();
    // The example's file sink writes to this agent-local directory (not below --root).
    let out = Path::new("/tmp/driftless-example/logs");
    for f in ["host-logs-syslog.log", "host-logs-apps.log"] {
        let _ = std::fs::remove_file(out.join(f));
    }
    std::fs::write(
        tree.path("root/var/log/syslog"),
        "Nov  2 10:00:00 web1 old[1]: before start\n",
    )
    .unwrap();
    std::fs::write(
        tree.path("root/var/log/app/api.log"),
        "{\"level\":\"info\",\"msg\":\"login password=hunter2\"}\n{\"level\":\"warn\",\n\"msg\":\"split\"}\n{\"level\":\"info\",\"msg\":\"last\"}\n",
    )
    .unwrap();
    std::fs::write(tree.path("root/var/log/app/old.log.gz"), "not read").unwrap();
    let log = std::fs::File::create(tree.path("agent.log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["--log-format", "text", "logs", "--config"])
        .arg(repo().join("config/examples/standalone"))
        .arg("--env-file")
        .arg(repo().join("config/examples/standalone.env"))
        .arg("--root")
        .arg(tree.path("root"))
        .arg("--state-dir")
        .arg(tree.path("state"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut syslog = std::fs::OpenOptions::new()
        .append(true)
        .open(tree.path("root/var/log/syslog"))
        .unwrap();
    syslog
        .write_all(b"Nov  2 10:00:01 web1 sshd[42]: Accepted publickey for ann\n")
        .unwrap();
    let read = |f: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(f))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let ok = wait_for(Duration::from_secs(20), || {
        read("host-logs-syslog.log").len() == 1 && read("host-logs-apps.log").len() >= 2
    });
    let stderr = std::fs::read_to_string(tree.path("agent.log")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "example output missing; agent:\n{stderr}");
    let sys = read("host-logs-syslog.log");
    assert_eq!(sys[0]["app"], "sshd", "readFrom End: only the new line");
    assert_eq!(sys[0]["message"], "Accepted publickey for ann");
    assert_eq!(sys[0]["environment"], "lab");
    let apps = read("host-logs-apps.log");
    // The example redacts `message` (the default field); this JSON event has `msg`, which is
    // kept as written.
    assert_eq!(apps[0]["msg"], "login password=hunter2");
    // The event split over two lines is joined (startPattern `^{`) and parses.
    assert_eq!(apps[1]["level"], "warn");
    assert_eq!(apps[1]["msg"], "split");
    assert!(apps.iter().all(|e| e["file"] != "/var/log/app/old.log.gz"));
}

#[test]
fn agent_runs_pipelines_and_serves_their_metrics() {
    let tree = Tree::new();
    let receiver = Receiver::start();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: agentp}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  sinks:
    - name: web
      http: {{url: "{}", batch: {{maxAge: 100ms}}}}
"#,
        receiver.url("/in")
    ));
    std::fs::write(
        tree.path("root/var/log/app/a.log"),
        (0..25).map(|i| numbered(i) + "\n").collect::<String>(),
    )
    .unwrap();
    let port = free_port();
    let mut child = spawn_agent(&tree, port);
    let delivered = wait_for(Duration::from_secs(20), || receiver.events().len() >= 25);
    let mut metrics = String::new();
    let scraped = wait_for(Duration::from_secs(10), || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return false;
        };
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .unwrap();
        metrics.clear();
        s.read_to_string(&mut metrics).unwrap();
        metrics.contains("driftless_logs_events_sent_total{pipeline=\"agentp\",sink=\"web\"} 25")
    });
    let stderr = std::fs::read_to_string(tree.path("agent.log")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(delivered, "agent did not forward; log:\n{stderr}");
    assert!(scraped, "metrics:\n{metrics}\nlog:\n{stderr}");
    assert!(
        metrics.contains("driftless_logs_events_read_total{pipeline=\"agentp\",source=\"app\"} 25")
    );
    assert!(metrics.contains("driftless_logs_lag_bytes{pipeline=\"agentp\",source=\"app\"} 0"));
    assert!(metrics.contains("# TYPE driftless_logs_buffer_events gauge"));
    assert!(tree.path("state/logs/checkpoints/agentp.json").exists());
}
