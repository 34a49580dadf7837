//! The scan runner refuses to send credentials where the operator would not: it checks the
//! DriftScan it reads again (it may have changed since the Job was created). A real TCP
//! listener on 127.0.0.1 stands in for the attacker's server.
#![allow(clippy::unwrap_used)]

use std::io::Read as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A listener recording what every connection sends, until the test ends.
fn listener() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = Vec::new();
            let _ = (&conn).take(64 * 1024).read_to_end(&mut buf);
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf).into_owned());
        }
    });
    (port, seen)
}

fn runner(dir: &Path, url: &str, credentials: &str, extra: &[&str]) -> Output {
    let scan = dir.join("scan.yaml");
    std::fs::write(
        &scan,
        format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: DriftScan\nmetadata:\n  name: infra\n  namespace: team-a\nspec:\n  source:\n    git:\n      url: {url}\n      stacks: [live]\n      credentials:\n{credentials}"
        ),
    )
    .unwrap();
    let secrets = dir.join("secrets");
    for (name, key, value) in [
        ("other", "token", "s3cr3t-token"),
        ("app", "private-key", "not-a-key"),
    ] {
        std::fs::create_dir_all(secrets.join(name)).unwrap();
        std::fs::write(secrets.join(name).join(key), value).unwrap();
    }
    Command::new(env!("CARGO_BIN_EXE_driftless-operator"))
        .args(["--git-server-timeout", "2", "scan-runner", "--scan-file"])
        .arg(&scan)
        .arg("--secrets-dir")
        .arg(&secrets)
        .arg("--output-dir")
        .arg(dir.join("out"))
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn no_token_or_jwt_goes_to_a_plain_http_url() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = listener();
    let https = "        https:\n          name: other\n";
    let out = runner(
        dir.path(),
        &format!("http://127.0.0.1:{port}/repo.git"),
        https,
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("spec.source.git.url")
            && stderr.contains(&format!("127.0.0.1:{port}/repo.git"))
            && stderr.contains("credentials are never sent over plain http://"),
        "{stderr}"
    );
    let app = format!(
        "        githubApp:\n          secretRef: {{name: app}}\n          appId: 1\n          installationId: 2\n          apiUrl: http://127.0.0.1:{port}/api\n"
    );
    let out = runner(dir.path(), "https://github.com/o/r.git", &app, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("githubApp.apiUrl") && stderr.contains("never sent over plain http://"),
        "{stderr}"
    );
    // Not on the allow-list: refused before anything is sent.
    let out = runner(
        dir.path(),
        &format!("https://127.0.0.1:{port}/repo.git"),
        https,
        &["--allowed-git-host", "github.com"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("not one of the allowed Git hosts"),
        "{stderr}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let got = seen.lock().unwrap().clone();
    assert!(got.is_empty(), "the listener was reached: {got:?}");

    // The lab opt-in does reach the listener: the refusals above are what kept it silent.
    let _ = runner(
        dir.path(),
        &format!("http://127.0.0.1:{port}/repo.git"),
        https,
        &["--allow-insecure-credentials"],
    );
    std::thread::sleep(Duration::from_millis(700));
    let got = seen.lock().unwrap().clone();
    assert!(
        got.iter().any(|r| r.starts_with("GET /repo.git/info/refs")),
        "{got:?}"
    );
}
