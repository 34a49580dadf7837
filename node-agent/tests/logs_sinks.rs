//! Sinks against real receivers: the file sink (with parsers and transforms), rsyslogd over UDP
//! and TCP, moto's S3 server, and an HTTP receiver (ndjson, Elasticsearch bulk, Loki push).
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::io::Read;
use std::time::Duration;

use logs_support::*;

fn write_lines(tree: &Tree, file: &str, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(tree.path(&format!("root/var/log/app/{file}")), text).unwrap();
}

#[test]
fn file_sink_parses_joins_transforms_and_names_container_logs() {
    let tree = Tree::new();
    let out = tree.path("out");
    std::fs::create_dir_all(tree.path("root/var/log/containers")).unwrap();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: t}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
      exclude: ["skip-*"]
      format: json
    - name: java
      include: [/var/log/app/*.trace]
      multiline: {{startPattern: '^\d{{4}}-', timeout: 200ms}}
    - name: k8s
      kubernetes: true
  transforms:
    - exclude: {{field: level, pattern: '^debug$'}}
    - redact: {{fields: [msg], patterns: ['token=\S+']}}
    - addFields: {{env: test}}
  sinks:
    - name: local
      file: {{directory: {out}, maxBytes: 2000, maxFiles: 2}}
"#,
        out = out.display()
    ));
    write_lines(
        &tree,
        "a.log",
        &[
            r#"{"level":"info","msg":"hello token=abc"}"#.into(),
            r#"{"level":"debug","msg":"dropped"}"#.into(),
            "not json".into(),
        ],
    );
    write_lines(&tree, "skip-me.log", &[r#"{"msg":"never"}"#.into()]);
    write_lines(
        &tree,
        "x.trace",
        &[
            "2024-01-01 boom".into(),
            "  at a()".into(),
            "  at b()".into(),
            "2024-01-01 next".into(),
        ],
    );
    std::fs::write(
        tree.path("root/var/log/containers/web-1_shop_nginx-0123abcd.log"),
        "2024-05-01T10:00:00Z stdout P hel\n2024-05-01T10:00:00Z stdout F lo\n",
    )
    .unwrap();
    let mut agent = Agent::start(&tree, &[]);
    let read = |name: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    assert!(
        wait_for(Duration::from_secs(20), || read("t-app.log").len() == 2
            && read("t-java.log").len() == 2
            && read("t-k8s.log").len() == 1),
        "events not written: {}",
        agent.stderr()
    );
    agent.assert_running();
    let app = read("t-app.log");
    assert_eq!(app[0]["msg"], "hello <redacted>");
    assert_eq!(app[0]["env"], "test");
    assert_eq!(app[0]["source"], "app");
    assert_eq!(app[0]["file"], "/var/log/app/a.log");
    assert_eq!(app[1]["message"], "not json");
    assert!(app[1]["error"].as_str().unwrap().starts_with("json:"));
    let java = read("t-java.log");
    assert_eq!(java[0]["message"], "2024-01-01 boom\n  at a()\n  at b()");
    assert_eq!(java[1]["message"], "2024-01-01 next");
    let k8s = read("t-k8s.log");
    assert_eq!(k8s[0]["message"], "hello");
    assert_eq!(k8s[0]["namespace"], "shop");
    assert_eq!(k8s[0]["pod"], "web-1");
    assert_eq!(k8s[0]["container"], "nginx");
    assert_eq!(k8s[0]["stream"], "stdout");
    // Rotation by size: append until the 2000-byte file rotates.
    let mut lines = Vec::new();
    for i in 0..40 {
        lines.push(format!(r#"{{"level":"info","msg":"line {i}"}}"#));
    }
    std::fs::OpenOptions::new()
        .append(true)
        .open(tree.path("root/var/log/app/a.log"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, (lines.join("\n") + "\n").as_bytes()))
        .unwrap();
    assert!(wait_for(Duration::from_secs(20), || out
        .join("t-app.log.1")
        .exists()));
    let all: usize = ["t-app.log", "t-app.log.1", "t-app.log.2"]
        .iter()
        .map(|f| read(f).len())
        .sum();
    assert!(
        (10..=42).contains(&all),
        "rotated files keep the newest events ({all})"
    );
    assert!(!out.join("t-app.log.3").exists(), "maxFiles: 2");
    agent.terminate();
}

#[test]
fn syslog_udp_and_tcp_reach_rsyslog_line_by_line() {
    let tree = Tree::new();
    let rsyslog = Rsyslog::start(tree.dir.path());
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: sys}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  sinks:
    - name: tcp
      syslog: {{address: "127.0.0.1:{tcp}", protocol: tcp, format: rfc5424, appName: dltcp, facility: local3}}
    - name: udp
      syslog: {{address: "127.0.0.1:{udp}", protocol: udp, format: rfc3164, appName: dludp}}
"#,
        tcp = rsyslog.tcp,
        udp = rsyslog.udp
    ));
    let lines: Vec<String> = (0..200).map(numbered).collect();
    write_lines(&tree, "a.log", &lines);
    let mut agent = Agent::start(&tree, &[]);
    let done = wait_for(Duration::from_secs(30), || rsyslog.lines().len() >= 400);
    agent.assert_running();
    let got = rsyslog.lines();
    assert!(
        done,
        "rsyslog got {} lines; agent: {}",
        got.len(),
        agent.stderr()
    );
    for app in ["dltcp", "dludp"] {
        let mine: Vec<&str> = got
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{app}|")))
            .map(str::trim)
            .collect();
        assert_eq!(mine.len(), 200, "{app}: {mine:?}");
        for (i, line) in mine.iter().enumerate() {
            assert_eq!(*line, numbered(i), "{app} line {i} in order and intact");
        }
    }
    agent.terminate();
}

#[test]
fn s3_objects_are_gzipped_batches_under_prefix_node_date() {
    let tree = Tree::new();
    let moto = Moto::start();
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let credentials =
        s3::creds::Credentials::new(Some("test"), Some("testsecret"), None, None, None).unwrap();
    let region = s3::Region::Custom {
        region: "us-east-1".into(),
        endpoint: endpoint.clone(),
    };
    // moto takes an unsigned PUT; rust-s3's create sends a location constraint moto refuses.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", moto.port)).unwrap();
        s.write_all(b"PUT /logs HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    std::fs::write(tree.path("env"), "S3_KEY=test\nS3_SECRET=testsecret\n").unwrap();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: s3p}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  secrets: [{{name: S3_KEY}}, {{name: S3_SECRET}}]
  sinks:
    - name: archive
      s3:
        target: {{bucket: logs, prefix: nodes, endpoint: "{endpoint}", pathStyle: true,
                  accessKeyId: "${{secret:S3_KEY}}", secretAccessKey: "${{secret:S3_SECRET}}"}}
        batch: {{maxEvents: 300, maxAge: 1s}}
"#
    ));
    let lines: Vec<String> = (0..1000).map(numbered).collect();
    write_lines(&tree, "a.log", &lines);
    let env_file = tree.path("env");
    let mut agent = Agent::start(&tree, &[("DRIFTLESS_ENV_FILE", env_file.to_str().unwrap())]);
    let bucket = s3::Bucket::new("logs", region, credentials)
        .unwrap()
        .with_path_style();
    let fetch = || -> Vec<(String, String)> {
        rt.block_on(async {
            let mut objects = Vec::new();
            for page in bucket.list("nodes/".into(), None).await.unwrap() {
                for object in page.contents {
                    let data = bucket.get_object(&object.key).await.unwrap();
                    let mut text = String::new();
                    flate2::read::GzDecoder::new(data.as_slice())
                        .read_to_string(&mut text)
                        .unwrap();
                    objects.push((object.key, text));
                }
            }
            objects
        })
    };
    let mut objects = Vec::new();
    let done = wait_for(Duration::from_secs(30), || {
        objects = fetch();
        objects
            .iter()
            .map(|(_, t)| t.lines().count())
            .sum::<usize>()
            >= 1000
    });
    agent.assert_running();
    assert!(
        done,
        "objects: {:?}; agent: {}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>(),
        agent.stderr()
    );
    assert!(
        objects.len() >= 4,
        "batches of at most 300 events: {}",
        objects.len()
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let mut counts = Vec::new();
    for (key, text) in &objects {
        assert!(
            key.starts_with(&format!("nodes/test-node/{today}/")),
            "{key}"
        );
        assert!(key.ends_with(".log.gz"), "{key}");
        assert!(text.lines().count() <= 300);
        let messages: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        count_numbers(messages.iter().map(String::as_str), &mut counts);
    }
    assert_eq!(counts.len(), 1000);
    assert!(counts.iter().all(|c| *c == 1), "each line exactly once");
    agent.terminate();
}

#[test]
fn http_ndjson_bulk_and_loki_with_secret_header_and_gzip() {
    let tree = Tree::new();
    let receiver = Receiver::start();
    std::fs::write(tree.path("env"), "TOKEN=s3cr3t-value\n").unwrap();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: web}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
      format: logfmt
  secrets: [{{name: TOKEN}}]
  sinks:
    - name: nd
      http:
        url: "{nd}"
        gzip: true
        headers: {{Authorization: "Bearer ${{secret:TOKEN}}"}}
        batch: {{maxAge: 200ms}}
    - name: es
      http: {{url: "{es}", encoding: elasticsearchBulk, index: app-logs, batch: {{maxAge: 200ms}}}}
    - name: loki
      http: {{url: "{loki}", encoding: lokiPush, labels: {{job: driftless, level: "{{{{level}}}}"}}, batch: {{maxAge: 200ms}}}}
"#,
        nd = receiver.url("/ingest"),
        es = receiver.url("/_bulk"),
        loki = receiver.url("/loki/api/v1/push"),
    ));
    let lines: Vec<String> = (0..50)
        .map(|i| {
            format!(
                "level={} msg=\"event {i}\"",
                if i % 2 == 0 { "info" } else { "warn" }
            )
        })
        .collect();
    write_lines(&tree, "a.log", &lines);
    let env_file = tree.path("env");
    let mut agent = Agent::start(&tree, &[("DRIFTLESS_ENV_FILE", env_file.to_str().unwrap())]);
    let count = |path: &str| -> usize {
        receiver
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .map(|r| {
                let body: String = String::from_utf8_lossy(&r.body).into_owned();
                if path.contains("loki") {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    v["streams"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s["values"].as_array().unwrap().len())
                        .sum()
                } else if path.ends_with("_bulk") {
                    body.lines().count() / 2
                } else {
                    body.lines().count()
                }
            })
            .sum()
    };
    let done = wait_for(Duration::from_secs(20), || {
        count("/ingest") >= 50 && count("/_bulk") >= 50 && count("/loki/api/v1/push") >= 50
    });
    agent.assert_running();
    assert!(done, "agent: {}", agent.stderr());
    let requests = receiver.requests.lock().unwrap().clone();
    for r in &requests {
        match r.path.as_str() {
            "/ingest" => {
                assert!(r.gzipped);
                assert_eq!(r.header("authorization"), Some("Bearer s3cr3t-value"));
                let first: serde_json::Value =
                    serde_json::from_str(String::from_utf8_lossy(&r.body).lines().next().unwrap())
                        .unwrap();
                assert!(first["msg"].as_str().unwrap().starts_with("event "));
            }
            "/_bulk" => {
                let body = String::from_utf8_lossy(&r.body).into_owned();
                let mut lines = body.lines();
                let action: serde_json::Value =
                    serde_json::from_str(lines.next().unwrap()).unwrap();
                assert_eq!(action["index"]["_index"], "app-logs");
                let doc: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
                assert!(doc["level"].is_string());
                assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
            }
            _ => {
                let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
                for stream in v["streams"].as_array().unwrap() {
                    assert_eq!(stream["stream"]["job"], "driftless");
                    let level = stream["stream"]["level"].as_str().unwrap();
                    assert!(level == "info" || level == "warn");
                    for value in stream["values"].as_array().unwrap() {
                        assert!(
                            value[0].as_str().unwrap().parse::<u128>().is_ok(),
                            "ns timestamp"
                        );
                        let event: serde_json::Value =
                            serde_json::from_str(value[1].as_str().unwrap()).unwrap();
                        assert_eq!(event["level"], level);
                    }
                }
            }
        }
    }
    assert!(
        !agent.stderr().contains("s3cr3t-value"),
        "secrets never logged"
    );
    agent.terminate();
}
