//! The audit trail against real destinations: a local directory, an HTTP receiver started here
//! (which can be told to fail), and moto's S3 server. Records are spooled first and only
//! removed once a sink acknowledged them; a failed sink gets them on a later flush.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use driftless_agent::apply::report::{ApplyReport, PolicyReport, Sealed, Status, TaskReport};
use driftless_agent::audit::{AuditKey, AuditRecord, Auditor, RecordContext};
use driftless_crds::apply_policy::{ApplyMode, AuditConfig};
use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::secret::{MapLookup, Redactor, SecretString};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn report(tasks: &[&str]) -> ApplyReport {
    let tasks = tasks
        .iter()
        .map(|name| {
            let mut t = TaskReport::new(name, "file", Status::Changed);
            t.resource = format!("file:/etc/{name}");
            t.change = Some(ChangeType::Changed);
            t.attributes = vec![AttributeChange {
                path: "content".into(),
                before: Some("password=hunter2".into()),
                after: Some("password=swordfish".into()),
            }];
            t.diff = Some("-password=hunter2\n+password=swordfish\n".into());
            t.sealed = Sealed {
                before: Some(SecretString::new("content=password=hunter2\n")),
                after: Some(SecretString::new("content=password=swordfish\n")),
            };
            t
        })
        .collect();
    ApplyReport {
        dry_run: false,
        policies: vec![PolicyReport {
            policy: "base".into(),
            origin: "base.yaml".into(),
            mode: ApplyMode::Enforce,
            check_only: false,
            tasks,
        }],
    }
}

fn records(tasks: &[&str]) -> Vec<AuditRecord> {
    let keys = tempfile::tempdir().unwrap();
    let mut ctx = RecordContext {
        host: "node-a".into(),
        key: Some(AuditKey::load_or_create(keys.path()).unwrap()),
        ..RecordContext::default()
    };
    ctx.revisions
        .insert("base".into(), ("rev-1".into(), Some(3)));
    let redactor = Redactor::new([SecretString::new("hunter2"), SecretString::new("swordfish")]);
    AuditRecord::from_report(&report(tasks), &ctx, &redactor)
}

fn config(yaml: &str) -> AuditConfig {
    serde_saphyr::from_str(yaml).unwrap()
}

fn lookup() -> MapLookup {
    let mut l = MapLookup::default();
    l.secrets
        .insert("TOKEN".into(), SecretString::new("s3cr3t-token"));
    l.secrets.insert("S3_KEY".into(), SecretString::new("test"));
    l.secrets
        .insert("S3_SECRET".into(), SecretString::new("testsecret"));
    l
}

fn spooled(spool: &Path) -> usize {
    fn count(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            count(&p)
                        } else {
                            usize::from(p.extension().is_some_and(|x| x == "jsonl"))
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    count(spool)
}

#[test]
fn directory_sink_gets_redacted_json_lines_and_rotates() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let out = tmp.path().join("audit");
    let cfg = config(&format!(
        "sinks:\n  - name: local\n    directory: {{path: {}, maxBytes: 2000, maxFiles: 2}}\n",
        out.display()
    ));
    let auditor = Auditor::new(&spool, "base", "node-a", &cfg, &lookup()).unwrap();
    auditor.record(&records(&["motd", "issue"])).unwrap();
    assert_eq!(spooled(&spool), 1, "one batch spooled before delivery");
    let flushed = auditor.flush_blocking();
    assert_eq!((flushed.delivered, flushed.pending), (1, 0), "{flushed:?}");
    assert_eq!(spooled(&spool), 0);
    let text = std::fs::read_to_string(out.join("audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["task"], "motd");
    assert_eq!(lines[0]["policy"], "base");
    assert_eq!(lines[0]["revision"], "rev-1");
    assert_eq!(lines[0]["generation"], 3);
    assert_eq!(lines[0]["host"], "node-a");
    assert_eq!(lines[0]["resource"], "file:/etc/motd");
    assert_eq!(lines[0]["beforeHmacSha256"].as_str().unwrap().len(), 64);
    assert_ne!(lines[0]["beforeHmacSha256"], lines[0]["afterHmacSha256"]);
    assert!(
        !text.contains("hunter2") && !text.contains("swordfish"),
        "{text}"
    );
    assert!(text.contains("password=<redacted>"));
    // Rotation by size keeps maxFiles old files.
    for _ in 0..6 {
        auditor.record(&records(&["a", "b", "c"])).unwrap();
        auditor.flush_blocking();
    }
    assert!(out.join("audit.jsonl.1").exists());
    assert!(out.join("audit.jsonl.2").exists());
    assert!(!out.join("audit.jsonl.3").exists());
}

/// An HTTP receiver that can be told to fail.
struct Receiver {
    port: u16,
    fail: Arc<AtomicBool>,
    attempts: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    fn start() -> Self {
        use axum::extract::State;
        use axum::http::{HeaderMap, StatusCode};
        type Shared = (
            Arc<AtomicBool>,
            Arc<AtomicUsize>,
            Arc<Mutex<Vec<(String, serde_json::Value)>>>,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let fail = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(AtomicUsize::new(0));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let state: Shared = (fail.clone(), attempts.clone(), bodies.clone());
        let app = axum::Router::new()
            .route(
                "/audit",
                axum::routing::post(
                    |State((fail, attempts, bodies)): State<Shared>,
                     headers: HeaderMap,
                     body: String| async move {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        if fail.load(Ordering::SeqCst) {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let auth = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        let json = serde_json::from_str(&body).unwrap_or_default();
                        bodies.lock().unwrap().push((auth, json));
                        StatusCode::NO_CONTENT
                    },
                ),
            )
            .with_state(state);
        let port = free_port();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        rt.spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            fail,
            attempts,
            bodies,
            _rt: rt,
        }
    }
}

#[test]
fn http_sink_retries_then_keeps_records_for_a_later_run() {
    let receiver = Receiver::start();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let cfg = config(&format!(
        "sinks:\n  - name: collector\n    http:\n      url: http://127.0.0.1:{}/audit\n      headers: {{Authorization: \"Bearer ${{secret:TOKEN}}\"}}\n",
        receiver.port
    ));
    let auditor = Auditor::new(&spool, "base", "node-a", &cfg, &lookup()).unwrap();

    // The receiver fails: three attempts, then the batch stays spooled.
    receiver.fail.store(true, Ordering::SeqCst);
    auditor.record(&records(&["first"])).unwrap();
    let failed = auditor.flush_blocking();
    assert_eq!((failed.delivered, failed.pending), (0, 1), "{failed:?}");
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 3);
    assert!(failed.errors[0].contains("HTTP 503"), "{failed:?}");
    assert!(!failed.errors[0].contains("s3cr3t"));
    assert_eq!(spooled(&spool), 1);

    // A later run: its own records and the old ones are delivered, oldest first.
    receiver.fail.store(false, Ordering::SeqCst);
    auditor.record(&records(&["second", "third"])).unwrap();
    let ok = auditor.flush_blocking();
    assert_eq!((ok.delivered, ok.pending), (2, 0), "{ok:?}");
    assert_eq!(spooled(&spool), 0);
    let bodies = receiver.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0].0, "Bearer s3cr3t-token");
    let tasks: Vec<String> = bodies
        .iter()
        .flat_map(|(_, b)| b.as_array().unwrap().clone())
        .map(|r| r["task"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(tasks, ["first", "second", "third"]);

    // A receiver that is not there at all: the record is kept too.
    let gone = config(&format!(
        "sinks:\n  - name: nowhere\n    http: {{url: \"http://127.0.0.1:{}/audit\"}}\n",
        free_port()
    ));
    let auditor = Auditor::new(&spool, "other", "node-a", &gone, &lookup()).unwrap();
    auditor.record(&records(&["lost?"])).unwrap();
    assert_eq!(auditor.flush_blocking().pending, 1);
    assert_eq!(spooled(&spool), 1);
}

fn tools_root() -> PathBuf {
    std::env::var_os("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/driftless/tools")
        })
}

struct Moto(Child);

impl Moto {
    fn start(port: u16) -> Self {
        let bin = tools_root().join("s3/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run .ci/tools/apply.sh (or .ci/tools/s3.sh)",
            bin.display()
        );
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "moto did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // Create the bucket with a plain unsigned PUT (moto accepts it).
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"PUT /audit HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        Moto(child)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn s3_sink_writes_objects_to_moto_and_catches_up_after_an_outage() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let cfg = config(&format!(
        "sinks:\n  - name: archive\n    s3: {{bucket: audit, prefix: trail, endpoint: \"{endpoint}\", pathStyle: true, accessKeyId: \"${{secret:S3_KEY}}\", secretAccessKey: \"${{secret:S3_SECRET}}\"}}\n"
    ));
    let auditor = Auditor::new(&spool, "base", "node-a", &cfg, &lookup()).unwrap();

    // S3 is down: the apply's records wait in the spool.
    auditor.record(&records(&["during-outage"])).unwrap();
    let down = auditor.flush_blocking();
    assert_eq!((down.delivered, down.pending), (0, 1), "{down:?}");

    let _moto = Moto::start(port);
    auditor.record(&records(&["after"])).unwrap();
    let up = auditor.flush_blocking();
    assert_eq!((up.delivered, up.pending), (2, 0), "{up:?}");
    assert_eq!(spooled(&spool), 0);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let credentials =
        s3::creds::Credentials::new(Some("test"), Some("testsecret"), None, None, None).unwrap();
    let region = s3::Region::Custom {
        region: "us-east-1".into(),
        endpoint,
    };
    let bucket = s3::Bucket::new("audit", region, credentials)
        .unwrap()
        .with_path_style();
    let objects: Vec<(String, String)> = rt.block_on(async {
        let mut out = Vec::new();
        for page in bucket.list("trail/".into(), None).await.unwrap() {
            for object in page.contents {
                let data = bucket.get_object(&object.key).await.unwrap();
                out.push((object.key, String::from_utf8(data.to_vec()).unwrap()));
            }
        }
        out
    });
    assert_eq!(objects.len(), 2, "{objects:?}");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for (key, _) in &objects {
        assert!(
            key.starts_with(&format!("trail/node-a/{today}/")) && key.ends_with(".jsonl"),
            "{key}"
        );
    }
    let tasks: Vec<String> = objects
        .iter()
        .flat_map(|(_, text)| text.lines().map(str::to_owned).collect::<Vec<_>>())
        .map(|line| {
            let record: AuditRecord = serde_json::from_str(&line).unwrap();
            assert!(!line.contains("hunter2"));
            record.task
        })
        .collect();
    assert_eq!(tasks, ["during-outage", "after"]);
}
