//! Facts snapshots pushed to a real S3-compatible server (moto, installed by `.ci/tools/s3.sh`),
//! including an outage: snapshots wait in a bounded queue, the oldest are dropped and counted,
//! and the rest go out once the server is back.
#![allow(clippy::unwrap_used)]

mod process_support;

use process_support::{free_port, Killed};

use std::io::Read as _;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driftless_agent::facts::inventory::Inventory;
use driftless_agent::facts::s3push::Pusher;
use driftless_agent::metrics::{Family, Kind, MetricsSource};
use driftless_crds::common::S3Target;
use driftless_crds::secret::{MapLookup, SecretString};

fn moto(port: u16) -> Killed {
    let tools = std::env::var("DRIFTLESS_TOOLS")
        .unwrap_or_else(|_| format!("{}/.cache/driftless/tools", std::env::var("HOME").unwrap()));
    let server = format!("{tools}/s3/bin/moto_server");
    assert!(
        std::path::Path::new(&server).exists(),
        "{server} missing; run .ci/tools/s3.sh"
    );
    let child = Command::new(server)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Killed(child)
}

fn target(port: u16) -> S3Target {
    serde_json::from_value(serde_json::json!({
        "bucket": "facts-bucket",
        "prefix": "fleet/facts",
        "endpoint": format!("http://127.0.0.1:{port}"),
        "region": "us-east-1",
        "pathStyle": true,
        "accessKeyId": "${secret:ak}",
        "secretAccessKey": "${secret:sk}",
    }))
    .unwrap()
}

fn lookup() -> MapLookup {
    let mut l = MapLookup::default();
    l.secrets.insert("ak".into(), SecretString::new("testing"));
    l.secrets
        .insert("sk".into(), SecretString::new("testing-secret"));
    l
}

/// Creates the bucket with a plain `PUT /bucket` (moto accepts unsigned requests).
fn create_bucket(port: u16) {
    use std::io::Write as _;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "PUT /facts-bucket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

async fn objects(port: u16) -> Vec<(String, Vec<u8>)> {
    let region = s3::Region::Custom {
        region: "us-east-1".into(),
        endpoint: format!("http://127.0.0.1:{port}"),
    };
    let creds =
        s3::creds::Credentials::new(Some("testing"), Some("testing-secret"), None, None, None)
            .unwrap();
    let bucket = s3::Bucket::new("facts-bucket", region, creds)
        .unwrap()
        .with_path_style();
    let mut out = Vec::new();
    for page in bucket.list("fleet/".into(), None).await.unwrap() {
        for o in page.contents {
            let body = bucket.get_object(&o.key).await.unwrap().bytes().to_vec();
            out.push((o.key, body));
        }
    }
    out.sort();
    out
}

fn families(load: f64) -> Vec<Family> {
    vec![Family::single(
        "node_load1",
        "1m load average.",
        Kind::Gauge,
        load,
    )]
}

fn at(second: u32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone as _;
    chrono::Utc
        .with_ymd_and_hms(2026, 11, 22, 4, 0, second)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_reach_s3_and_survive_an_outage_within_bounds() {
    let port = free_port();
    let mut pusher = Pusher::new(&target(port), &lookup(), "node-a", 3).unwrap();
    pusher.attempts = 2;
    pusher.backoff = Duration::from_millis(20);
    let facts = Inventory {
        hostname: "node-a".into(),
        ..Default::default()
    };

    // S3 is down: five snapshots, at most three wait, two are dropped and counted.
    for i in 0..5 {
        pusher.enqueue(at(i), &facts, &families(f64::from(i)));
        assert_eq!(pusher.flush().await, 0);
    }
    assert_eq!(pusher.pending(), 3);
    assert_eq!(pusher.dropped(), 2);
    let mut text = String::new();
    pusher.encode(&mut text);
    assert!(
        text.contains("driftless_facts_s3_dropped_snapshots_total 2\n"),
        "{text}"
    );
    assert!(
        text.contains("driftless_facts_s3_pending_snapshots 3\n"),
        "{text}"
    );

    // S3 comes back: the waiting snapshots go out, oldest first.
    let _moto = moto(port);
    create_bucket(port);
    assert_eq!(pusher.flush().await, 3);
    assert_eq!(pusher.pending(), 0);
    let stored = objects(port).await;
    let keys: Vec<&str> = stored.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "fleet/facts/node-a/20261122T040002Z.json.gz",
            "fleet/facts/node-a/20261122T040003Z.json.gz",
            "fleet/facts/node-a/20261122T040004Z.json.gz"
        ]
    );
    let mut json = String::new();
    flate2::read::GzDecoder::new(&stored[2].1[..])
        .read_to_string(&mut json)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["node"], "node-a");
    assert_eq!(v["facts"]["hostname"], "node-a");
    assert_eq!(v["metrics"]["node_load1"][0]["value"], 4.0);
    let mut text = String::new();
    pusher.encode(&mut text);
    assert!(
        text.contains("driftless_facts_s3_pushes_total{result=\"success\"} 3\n"),
        "{text}"
    );
}
