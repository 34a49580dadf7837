//! The log pipeline's metrics on the agent's `/metrics` pass `promtool check metrics` (Debian's
//! `prometheus` package, installed by `.ci/tools/facts.sh`) with pipelines running: counters of
//! events and bytes read and sent, errors by kind, retries, buffer fill and lag.
#![allow(clippy::unwrap_used)]

mod logs_support;
mod process_support;

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::Duration;

use logs_support::*;

fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
}

/// Every line promtool prints is a problem; exit status 0 with no output is a pass.
fn promtool_problems(exposition: &str) -> Vec<String> {
    let (code, mut problems) = process_support::promtool(exposition);
    if code != Some(0) {
        problems.push(format!("promtool exited with {code:?}"));
    }
    problems
}

#[test]
fn logs_metrics_pass_promtool_with_pipelines_running() {
    let tree = Tree::new();
    let ok = Receiver::start();
    let failing = Receiver::start();
    failing.mode.store(FAIL, Ordering::SeqCst);
    let out = tree.path("out");
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: good}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
    - name: json
      include: [/var/log/app/*.json]
      format: json
  sinks:
    - name: web
      http: {{url: "{ok}", batch: {{maxAge: 100ms}}}}
    - name: files
      file: {{directory: "{out}"}}
---
apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: stuck}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  buffer: {{maxEvents: 100, maxBytes: 65536}}
  sinks:
    - name: down
      http: {{url: "{failing}", batch: {{maxAge: 100ms}}}}
"#,
        ok = ok.url("/in"),
        failing = failing.url("/in"),
        out = out.display()
    ));
    std::fs::write(
        tree.path("root/var/log/app/a.log"),
        (0..500).map(|i| numbered(i) + "\n").collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        tree.path("root/var/log/app/b.json"),
        "{\"level\":\"info\",\"msg\":\"ok\"}\nnot json\n",
    )
    .unwrap();
    let port = free_port();
    let mut child = spawn_agent(&tree, port);
    let mut metrics = String::new();
    let ready = wait_for(Duration::from_secs(30), || {
        metrics = scrape(port).unwrap_or_default();
        metrics.contains(r#"driftless_logs_events_sent_total{pipeline="good",sink="web"} 502"#)
            && metrics.contains(r#"driftless_logs_retries_total{pipeline="stuck",sink="down"}"#)
            && !metrics.contains(r#"driftless_logs_retries_total{pipeline="stuck",sink="down"} 0"#)
    });
    let stderr = std::fs::read_to_string(tree.path("agent.log")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "metrics:\n{metrics}\nlog:\n{stderr}");
    for family in [
        "driftless_logs_events_read_total",
        "driftless_logs_bytes_read_total",
        "driftless_logs_events_sent_total",
        "driftless_logs_bytes_sent_total",
        "driftless_logs_errors_total",
        "driftless_logs_retries_total",
        "driftless_logs_buffer_events",
        "driftless_logs_lag_bytes",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family}"))
                || metrics.contains(&format!("# TYPE {}", family.trim_end_matches("_total"))),
            "{family} missing:\n{metrics}"
        );
    }
    let problems = promtool_problems(&metrics);
    assert!(
        problems.is_empty(),
        "promtool check metrics: {problems:#?}\nexposition:\n{metrics}"
    );
    // The check can fail: a malformed family is reported.
    let broken =
        format!("{metrics}# TYPE driftless_logs_broken counter\ndriftless_logs_broken 1\n");
    assert!(!promtool_problems(&broken).is_empty());
}
