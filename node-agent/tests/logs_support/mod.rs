//! Shared pieces of the `logs_*` integration tests: the agent binary, an HTTP receiver, a
//! private rsyslogd, the moto S3 server, and a numbered-line writer.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The directory tools are installed into.
pub fn tools_root() -> PathBuf {
    std::env::var_os("DRIFTLESS_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/driftless/tools")
        })
}

/// A temporary tree: `root/` (the host root), `config/`, `state/`, `out/`.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["root/var/log/app", "config", "state", "out"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    /// Writes `config/logs.yaml`.
    pub fn config(&self, yaml: &str) {
        std::fs::write(self.path("config/logs.yaml"), yaml).unwrap();
    }
}

/// `driftless logs` running on a tree.
pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(tree: &Tree, env: &[(&str, &str)]) -> Self {
        let log = tree.path("agent.log");
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_driftless"));
        cmd.args([
            "--log-format",
            "text",
            "--log-level",
            "info",
            "logs",
            "--config",
        ])
        .arg(tree.path("config"))
        .arg("--root")
        .arg(tree.path("root"))
        .arg("--state-dir")
        .arg(tree.path("state"))
        .env("DRIFTLESS_LOGS_SCAN_MS", "100")
        .env("NODE_NAME", "test-node")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self { child, log }
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
    }

    /// VmRSS in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("agent exited with {status}:\n{}", self.stderr());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits until `f` holds or the timeout passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Receiver modes.
pub const OK: u8 = 0;
pub const FAIL: u8 = 1;
pub const STALL: u8 = 2;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// The body, gunzipped when it was gzipped.
    pub body: Vec<u8>,
    pub gzipped: bool,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An HTTP/1.1 receiver that records accepted bodies and can be told to fail (503) or stall.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub mode: Arc<AtomicU8>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    pub refused: Arc<AtomicUsize>,
}

impl Receiver {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = Self {
            port,
            mode: Arc::new(AtomicU8::new(OK)),
            requests: Arc::new(Mutex::new(Vec::new())),
            refused: Arc::new(AtomicUsize::new(0)),
        };
        let server = r.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let server = server.clone();
                std::thread::spawn(move || server.serve(stream));
            }
        });
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn serve(&self, stream: TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = Vec::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 {
                    return;
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.push((k.trim().to_owned(), v.trim().to_owned()));
                }
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            match self.mode.load(Ordering::SeqCst) {
                STALL => {
                    std::thread::sleep(Duration::from_secs(3600));
                    return;
                }
                FAIL => {
                    self.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = writer.write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n",
                    );
                    continue;
                }
                _ => {}
            }
            let gzipped = headers
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("content-encoding") && v == "gzip");
            if gzipped {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .unwrap();
                body = out;
            }
            let answer = if path.ends_with("_bulk") {
                r#"{"took":1,"errors":false,"items":[]}"#
            } else {
                "{}"
            };
            self.requests.lock().unwrap().push(Request {
                path,
                headers,
                body,
                gzipped,
            });
            let _ = writer.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                )
                .as_bytes(),
            );
        }
    }

    /// Every ndjson line of every accepted body, as JSON.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| {
                String::from_utf8_lossy(&r.body)
                    .lines()
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_str(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// A private rsyslogd listening on UDP and TCP on 127.0.0.1, writing `%programname%|%msg%`
/// per line to `out`.
pub struct Rsyslog {
    pub child: Child,
    pub udp: u16,
    pub tcp: u16,
    pub out: PathBuf,
}

pub fn rsyslogd() -> PathBuf {
    for p in ["/usr/sbin/rsyslogd", "/sbin/rsyslogd"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("rsyslogd is not installed: run .ci/tools/logs.sh");
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Self {
        let bin = rsyslogd();
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let udp = free_port();
        let tcp = free_port();
        let out = dir.join("rsyslog-out.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}")
module(load="imudp")
module(load="imtcp")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="t" type="string" string="%programname%|%msg:::drop-last-lf%\n")
*.* action(type="omfile" file="{out}" template="t")
"#,
                work = work.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslog.stderr")).unwrap())
            .spawn()
            .unwrap();
        let ok = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", tcp)).is_ok()
        });
        assert!(
            ok,
            "rsyslogd did not start: {}",
            std::fs::read_to_string(dir.join("rsyslog.stderr")).unwrap_or_default()
        );
        Self {
            child,
            udp,
            tcp,
            out,
        }
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// moto's S3 server on a free port.
pub struct Moto {
    pub child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Self {
        let bin = tools_root().join("s3/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run .ci/tools/s3.sh (or .ci/tools/logs.sh)",
            bin.display()
        );
        let port = free_port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(Duration::from_secs(30), || TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()));
        Self { child, port }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Numbers found in lines of the form `... seq=NNNNNNNN ...`, with how often each was seen.
/// How many of the numbered lines `0..total` the receiver has not seen yet.
pub fn missing_numbers(receiver: &Receiver, total: usize) -> usize {
    let mut counts = Vec::new();
    let events = receiver.events();
    count_numbers(
        events.iter().filter_map(|e| e["message"].as_str()),
        &mut counts,
    );
    (0..total)
        .filter(|i| counts.get(*i).copied().unwrap_or(0) == 0)
        .count()
}

/// Starts `driftless agent` on the tree (config, root, state) listening on 127.0.0.1:PORT, its
/// stderr in `agent.log`.
pub fn spawn_agent(tree: &Tree, port: u16) -> Child {
    let log = std::fs::File::create(tree.path("agent.log")).unwrap();
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["--log-format", "text", "agent", "--config"])
        .arg(tree.path("config"))
        .arg("--root")
        .arg(tree.path("root"))
        .arg("--state-dir")
        .arg(tree.path("state"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

pub fn count_numbers<'a>(lines: impl Iterator<Item = &'a str>, counts: &mut Vec<u32>) {
    for line in lines {
        if let Some(pos) = line.find("seq=") {
            let digits: String = line[pos + 4..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                if n >= counts.len() {
                    counts.resize(n + 1, 0);
                }
                counts[n] += 1;
            }
        }
    }
}

/// The numbered line `n`.
pub fn numbered(n: usize) -> String {
    format!("seq={n:08} the quick brown fox jumps over the lazy dog; padding to about one hundred bytes")
}

/// Runs a command, panicking with its output when it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A test PKI made with the `openssl` CLI: a CA, a server certificate for `127.0.0.1` and
/// `localhost`, a client certificate, and an unrelated CA.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn make(dir: &Path) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |f: &str| dir.join(f);
        for ca in ["ca", "other-ca"] {
            run(Command::new("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .arg("-keyout")
                .arg(p(&format!("{ca}.key")))
                .arg("-out")
                .arg(p(&format!("{ca}.pem")))
                .args(["-subj", &format!("/CN=driftless test {ca}")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]));
        }
        for (name, ext) in [
            (
                "server",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
            ),
            (
                "client",
                "subjectAltName=DNS:client.test\nextendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n",
            ),
        ] {
            run(Command::new("openssl")
                .args(["req", "-newkey", "rsa:2048", "-nodes"])
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr")))
                .args(["-subj", &format!("/CN={name}")]));
            std::fs::write(p(&format!("{name}.ext")), ext).unwrap();
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(p("ca.pem"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.ext")))
                .arg("-out")
                .arg(p(&format!("{name}.pem"))));
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

/// A private rsyslogd receiving TLS (RFC 5425, GnuTLS driver) on 127.0.0.1 and requiring a
/// client certificate signed by the PKI's CA; writes `%programname%|%msg%` per line to `out`.
pub struct RsyslogTls {
    pub child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl RsyslogTls {
    pub fn start(dir: &Path, pki: &Pki) -> Self {
        let bin = rsyslogd();
        let dir = dir.join("rsyslog-tls");
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let port = free_port();
        let out = dir.join("out.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="t" type="string" string="%programname%|%msg:::drop-last-lf%\n")
*.* action(type="omfile" file="{out}" template="t")
"#,
                work = work.display(),
                ca = pki.path("ca.pem"),
                cert = pki.path("server.pem"),
                key = pki.path("server.key"),
                out = out.display()
            ),
        )
        .unwrap();
        let stderr = dir.join("stderr");
        let child = Command::new(bin)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let ok = wait_for(Duration::from_secs(10), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            ok,
            "rsyslogd (TLS) did not start (is rsyslog-gnutls installed? run .ci/tools/logs.sh): {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        Self { child, port, out }
    }

    pub fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.out.with_file_name("stderr")).unwrap_or_default()
    }
}

impl Drop for RsyslogTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
