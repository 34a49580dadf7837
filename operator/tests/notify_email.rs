#![allow(clippy::unwrap_used)]
//! The `email` receiver against a real SMTP server: aiosmtpd (`.ci/tools/smtp.sh`) started by
//! each test from `tests/fixtures/smtp/server.py` on 127.0.0.1 with a throwaway CA. The server
//! writes what it received, the TLS state and the login, and Python's e-mail parser checks the
//! headers; the tests read that back.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::DateTime;
use driftless_crds::drift_report::{DriftStatus, TargetKind};
use driftless_crds::notification_policy::Transition;
use driftless_crds::time::time;
use driftless_operator::notify::email::{self, message, Config};
use driftless_operator::notify::payload::Message;
use serde_json::Value;

const USER: &str = "driftless-bot";
const PASSWORD: &str = "s3cret-Pa55word";

fn python() -> PathBuf {
    let tools = std::env::var_os("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/driftless/tools")
        });
    tools.join("smtp/bin/python")
}

/// Whether aiosmtpd and openssl are there; prints the skip line CI counts when not.
fn tools_or_skip(test: &str) -> bool {
    let python = python();
    let aiosmtpd = Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .output()
        .is_ok_and(|o| o.status.success());
    let openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(aiosmtpd && openssl) {
        // Straight to stderr, past the harness's capture: CI counts the line as a skip.
        let line = format!(
            "skipped: {test}: aiosmtpd (in {}) or openssl is missing: run .ci/tools/smtp.sh\n",
            python.display()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
    aiosmtpd && openssl
}

/// A running aiosmtpd, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(mode: &str, auth: bool) -> Self {
        Self::start_with(mode, auth, None)
    }

    fn start_with(mode: &str, auth: bool, only_mechanism: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp/server.py");
        let mut command = Command::new(python());
        command.arg(&script).arg(dir.path()).arg(mode);
        if auth {
            command.args([USER, PASSWORD]);
            command.args(only_mechanism);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("READY ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP server did not start: {line:?}"));
        Self { child, port, dir }
    }

    /// The receiver's configuration for this server, with `extra` Secret keys.
    fn config(&self, extra: &[(&str, &str)]) -> Config {
        Config::from_keys("mail", &self.keys(extra)).unwrap()
    }

    fn keys(&self, extra: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        let mut keys: BTreeMap<String, Vec<u8>> = [
            ("host", "127.0.0.1".to_owned()),
            ("port", self.port.to_string()),
            ("from", "Driftless <driftless@example.com>".to_owned()),
            (
                "to",
                "ops@example.com, On Call <oncall@example.org>".to_owned(),
            ),
            (
                "ca.crt",
                std::fs::read_to_string(self.dir.path().join("ca.crt")).unwrap(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_bytes()))
        .collect();
        for (k, v) in extra {
            keys.insert((*k).to_owned(), v.as_bytes().to_vec());
        }
        keys
    }

    fn messages(&self) -> Vec<Value> {
        let dir = self.dir.path().join("messages");
        let mut out = Vec::new();
        for n in 1.. {
            match std::fs::read_to_string(dir.join(format!("{n}.json"))) {
                Ok(text) => out.push(serde_json::from_str(&text).unwrap()),
                Err(_) => break,
            }
        }
        out
    }

    fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("journal.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

fn transition(report: &str, target: &str, to: DriftStatus, error: Option<&str>) -> Transition {
    Transition {
        report: report.into(),
        kind: TargetKind::Stack,
        target: target.into(),
        from: Some(DriftStatus::InSync),
        to,
        checked_at: time(DateTime::from_timestamp(1_796_396_400, 0).unwrap()),
        added: 1,
        changed: 2,
        removed: 0,
        revision: Some("0123abc".into()),
        error: error.map(str::to_owned),
    }
}

fn events() -> Vec<Transition> {
    vec![
        transition("infra-net", "infra/net", DriftStatus::Drifted, None),
        // The soft line break of this line puts `.hidden` at the start of a body line: the
        // dot must survive SMTP's dot stuffing.
        transition(
            "infra-long",
            &format!("infra/{}.hidden", "x".repeat(67)),
            DriftStatus::Drifted,
            None,
        ),
        transition(
            "infra-db",
            "infra/db",
            DriftStatus::Error,
            Some("plan failed:\n.terraform.lock.hcl is stale"),
        ),
    ]
}

fn message(events: &[Transition]) -> Message<'_> {
    Message {
        namespace: "team-a",
        policy: "oncall",
        id: "5d2b7f1e-8c4a-4f0e-9a63-2b1c0d9e8f7a-3",
        sequence: 3,
        events,
        rollouts: &[],
        omitted: 0,
        max_listed: 50,
        dashboard_url: Some("https://driftless.example.com"),
    }
}

fn header<'a>(received: &'a Value, name: &str) -> &'a str {
    received["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == name)
        .and_then(|h| h[1].as_str())
        .unwrap_or_else(|| panic!("no {name} header in {received}"))
}

#[tokio::test]
async fn starttls_with_auth_delivers_the_group_with_a_stable_message_id() {
    if !tools_or_skip("starttls_with_auth_delivers_the_group_with_a_stable_message_id") {
        return;
    }
    let server = Server::start("starttls", true);
    let config = server.config(&[("username", USER), ("password", PASSWORD)]);
    let e = events();
    let m = message(&e);
    let date = DateTime::from_timestamp(1_796_396_430, 0).unwrap();
    email::send(&config, "mail", &m, date).await.unwrap();
    // A second attempt of the same group (an operator restarted before recording the first).
    email::send(&config, "mail", &m, date).await.unwrap();

    let received = server.messages();
    assert_eq!(received.len(), 2, "{received:?}");
    let first = &received[0];
    assert_eq!(first["starttls"], true, "{first}");
    assert!(
        first["tls_version"]
            .as_str()
            .is_some_and(|v| v == "TLSv1.3" || v == "TLSv1.2"),
        "{first}"
    );
    assert_eq!(first["login"], USER);
    assert_eq!(first["mail_from"], "driftless@example.com");
    assert_eq!(
        first["rcpt_tos"],
        serde_json::json!(["ops@example.com", "oncall@example.org"])
    );
    assert_eq!(first["defects"], serde_json::json!([]), "{first}");
    let id = "<5d2b7f1e-8c4a-4f0e-9a63-2b1c0d9e8f7a-3.mail@example.com>";
    assert_eq!(header(first, "Message-ID"), id);
    assert_eq!(header(&received[1], "Message-ID"), id);
    assert_eq!(
        header(first, "Subject"),
        "Driftless team-a: 2 drifted, 1 failed"
    );
    assert_eq!(header(first, "Date"), "Fri, 04 Dec 2026 15:00:30 +0000");
    assert_eq!(header(first, "From"), "Driftless <driftless@example.com>");
    assert_eq!(
        header(first, "To"),
        "ops@example.com, On Call <oncall@example.org>"
    );
    assert_eq!(header(first, "Auto-Submitted"), "auto-generated");
    // The decoded body is the text the operator wrote, dots and all (in CRLF lines).
    let body = first["body"].as_str().unwrap().replace("\r\n", "\n");
    assert_eq!(body, message::body(&m), "{body}");
    assert!(body.contains("    .terraform.lock.hcl is stale\n"));
    assert!(body.contains("https://driftless.example.com/namespaces/team-a/driftreports/infra-db"));
    let raw = first["raw"].as_str().unwrap();
    assert!(raw.contains("=\r\n.hidden (stack)"), "{raw}");
    for line in raw.split("\r\n") {
        assert!(line.len() <= 78, "line over 78 characters: {line:?}");
    }
    // STARTTLS came before the login, and the login before the mail.
    let journal = server.journal();
    let at = |prefix: &str| {
        journal
            .iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {journal:?}"))
    };
    assert!(
        at("STARTTLS") < at("AUTH PLAIN ok tls=TLSv1"),
        "{journal:?}"
    );
    assert!(at("AUTH PLAIN ok") < at("MAIL driftless@example.com tls=TLSv1"));
}

#[tokio::test]
async fn server_without_starttls_is_refused_before_any_mail() {
    if !tools_or_skip("server_without_starttls_is_refused_before_any_mail") {
        return;
    }
    let server = Server::start("plain", false);
    let config = server.config(&[("username", USER), ("password", PASSWORD)]);
    let e = events();
    let err = email::send(&config, "mail", &message(&e), chrono::Utc::now())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!(
            "email receiver mail: SMTP server 127.0.0.1:{} does not offer STARTTLS; not sending in clear text (set tls: tls for a server that takes TLS from the start)",
            server.port
        )
    );
    assert!(server.messages().is_empty());
    // Neither the login nor the envelope went over the plain connection.
    let journal = server.journal();
    assert_eq!(journal, ["CONNECT"], "{journal:?}");
}

#[tokio::test]
async fn wrong_password_names_the_reply_and_not_the_password() {
    if !tools_or_skip("wrong_password_names_the_reply_and_not_the_password") {
        return;
    }
    let server = Server::start("starttls", true);
    let wrong = "wrong-Pa55word-xyz";
    let config = server.config(&[("username", USER), ("password", wrong)]);
    let e = events();
    let err = email::send(&config, "mail", &message(&e), chrono::Utc::now())
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!(
            "email receiver mail: SMTP server 127.0.0.1:{}: AUTH PLAIN answered 535 ",
            server.port
        )),
        "{err}"
    );
    assert!(!err.contains(wrong), "{err}");
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn auth_login_when_plain_is_not_offered() {
    if !tools_or_skip("auth_login_when_plain_is_not_offered") {
        return;
    }
    let server = Server::start_with("starttls", true, Some("LOGIN"));
    let config = server.config(&[("username", USER), ("password", PASSWORD)]);
    let e = events();
    email::send(&config, "mail", &message(&e), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(server.messages().len(), 1);
    assert_eq!(server.messages()[0]["login"], USER);
    let journal = server.journal();
    assert!(
        journal
            .iter()
            .any(|l| l.starts_with("AUTH LOGIN ok tls=TLSv1")),
        "{journal:?}"
    );
}

#[tokio::test]
async fn implicit_tls_delivers() {
    if !tools_or_skip("implicit_tls_delivers") {
        return;
    }
    let server = Server::start("tls", true);
    let config = server.config(&[("tls", "tls"), ("username", USER), ("password", PASSWORD)]);
    let e = events();
    email::send(&config, "mail", &message(&e), chrono::Utc::now())
        .await
        .unwrap();
    let received = server.messages();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0]["starttls"], false);
    assert!(received[0]["tls_version"].is_string(), "{}", received[0]);
    assert_eq!(received[0]["login"], USER);
}

#[tokio::test]
async fn certificate_of_an_unknown_ca_is_refused() {
    if !tools_or_skip("certificate_of_an_unknown_ca_is_refused") {
        return;
    }
    let server = Server::start("starttls", false);
    let mut keys = server.keys(&[]);
    // The public roots only: the test CA is not among them.
    keys.remove("ca.crt");
    let config = Config::from_keys("mail", &keys).unwrap();
    let e = events();
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        email::send(&config, "mail", &message(&e), chrono::Utc::now()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        err.contains("TLS handshake failed") && err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(server.messages().is_empty());
    assert!(!server.journal().iter().any(|l| l.starts_with("MAIL")));
}

/// A server that answers `STARTTLS` with its 220 and, in the same packet, a forged reply meant
/// to be read as if it came over TLS: the client must refuse it, not read it.
#[tokio::test]
async fn bytes_ahead_of_the_tls_handshake_are_refused() {
    use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = tokio::io::BufReader::new(stream);
        let mut commands = Vec::new();
        stream
            .get_mut()
            .write_all(b"220 fake ESMTP\r\n")
            .await
            .unwrap();
        let mut line = String::new();
        while stream.read_line(&mut line).await.unwrap() > 0 {
            commands.push(line.trim_end().to_owned());
            let answer: &[u8] = if line.starts_with("EHLO") {
                b"250-fake\r\n250 STARTTLS\r\n"
            } else if line.starts_with("STARTTLS") {
                b"220 go ahead\r\n250 forged\r\n"
            } else {
                b"221 bye\r\n"
            };
            stream.get_mut().write_all(answer).await.unwrap();
            line.clear();
        }
        commands
    });
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in [
        ("host", "127.0.0.1".to_owned()),
        ("port", port.to_string()),
        ("from", "driftless@example.com".to_owned()),
        ("to", "ops@example.com".to_owned()),
    ] {
        keys.insert(k.to_owned(), v.into_bytes());
    }
    let config = Config::from_keys("mail", &keys).unwrap();
    let e = events();
    let err = email::send(&config, "mail", &message(&e), chrono::Utc::now())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        format!("email receiver mail: SMTP server 127.0.0.1:{port} sent data ahead of the TLS handshake; refusing it")
    );
    let commands = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(commands, ["EHLO [127.0.0.1]", "STARTTLS"]);
}
