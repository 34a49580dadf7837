//! The syslog sink over TLS (RFC 5425) against a real rsyslogd with the GnuTLS driver that
//! requires a client certificate: every line arrives intact and in order; a server whose
//! certificate the configured CA did not sign is refused with a clear error and gets nothing.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::time::Duration;

use logs_support::*;

fn write_lines(tree: &Tree, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(tree.path("root/var/log/app/a.log"), text).unwrap();
}

#[test]
fn syslog_tls_with_client_certificate_reaches_rsyslog_line_by_line() {
    let tree = Tree::new();
    let pki = Pki::make(tree.dir.path());
    let rsyslog = RsyslogTls::start(tree.dir.path(), &pki);
    // The client key comes from a secret (here the process environment) as PEM text; the CA
    // and client certificate are files.
    let key = std::fs::read_to_string(pki.path("client.key")).unwrap();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: tls}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  secrets: [{{name: SYSLOG_CLIENT_KEY}}]
  sinks:
    - name: secure
      syslog:
        address: "127.0.0.1:{port}"
        protocol: tls
        format: rfc5424
        appName: dltls
        caFile: "{ca}"
        certFile: "{cert}"
        keyFile: "${{secret:SYSLOG_CLIENT_KEY}}"
        serverName: localhost
"#,
        port = rsyslog.port,
        ca = pki.path("ca.pem"),
        cert = pki.path("client.pem"),
    ));
    let lines: Vec<String> = (0..2000).map(numbered).collect();
    write_lines(&tree, &lines);
    let mut agent = Agent::start(&tree, &[("SYSLOG_CLIENT_KEY", key.as_str())]);
    let done = wait_for(Duration::from_secs(30), || rsyslog.lines().len() >= 2000);
    agent.assert_running();
    let got = rsyslog.lines();
    assert!(
        done,
        "rsyslog got {} lines over TLS; agent:\n{}\nrsyslog:\n{}",
        got.len(),
        agent.stderr(),
        rsyslog.stderr()
    );
    let mine: Vec<&str> = got
        .iter()
        .filter_map(|l| l.strip_prefix("dltls|"))
        .map(str::trim)
        .collect();
    assert_eq!(mine.len(), 2000, "every line once, nothing else: {got:?}");
    for (i, line) in mine.iter().enumerate() {
        assert_eq!(*line, numbered(i), "line {i} in order and intact");
    }
    // More lines on the same connection.
    let more: Vec<String> = (0..2500).map(numbered).collect();
    write_lines(&tree, &more);
    assert!(
        wait_for(Duration::from_secs(30), || rsyslog.lines().len() >= 2500),
        "appended lines: {}",
        agent.stderr()
    );
    agent.terminate();
    let log = agent.stderr();
    assert!(
        !log.contains("PRIVATE KEY"),
        "the key never reaches the log"
    );
}

#[test]
fn syslog_tls_refuses_a_server_certificate_the_ca_did_not_sign() {
    let tree = Tree::new();
    let pki = Pki::make(tree.dir.path());
    let rsyslog = RsyslogTls::start(tree.dir.path(), &pki);
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: untrusted}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  sinks:
    - name: secure
      syslog:
        address: "127.0.0.1:{port}"
        protocol: tls
        caFile: "{ca}"
        certFile: "{cert}"
        keyFile: "{key}"
"#,
        port = rsyslog.port,
        ca = pki.path("other-ca.pem"),
        cert = pki.path("client.pem"),
        key = pki.path("client.key"),
    ));
    write_lines(&tree, &(0..50).map(numbered).collect::<Vec<_>>());
    let mut agent = Agent::start(&tree, &[]);
    let refused = wait_for(Duration::from_secs(20), || {
        agent.stderr().contains("invalid peer certificate")
    });
    agent.assert_running();
    let log = agent.stderr();
    assert!(refused, "no certificate error in the agent log:\n{log}");
    let line = log
        .lines()
        .find(|l| l.contains("invalid peer certificate"))
        .unwrap();
    assert!(
        line.contains("secure")
            && line.contains(&format!("tls 127.0.0.1:{}", rsyslog.port))
            && line.contains("UnknownIssuer"),
        "the error names the sink, the address and the reason: {line}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        rsyslog.lines().is_empty(),
        "nothing is sent to an untrusted server: {:?}",
        rsyslog.lines()
    );
    agent.terminate();
}
