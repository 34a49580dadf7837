//! `driftless apply` writes one audit record per change to the policy's sinks; a sink that is
//! down neither fails nor blocks the apply, and its records stay spooled.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn apply(config: &Path, root: &Path, spool: &Path, env: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_driftless"))
        .args(["--log-format", "text", "apply", "--config"])
        .arg(config)
        .arg("--root")
        .arg(root)
        .arg("--audit-spool")
        .arg(spool)
        .arg("--env-file")
        .arg(env)
        .output()
        .unwrap()
}

fn spooled(spool: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(policies) = std::fs::read_dir(spool) else {
        return out;
    };
    for policy in policies.flatten().filter(|p| p.path().is_dir()) {
        for sink in std::fs::read_dir(policy.path()).unwrap().flatten() {
            for batch in std::fs::read_dir(sink.path()).unwrap().flatten() {
                out.push(format!(
                    "{}/{}",
                    sink.file_name().to_string_lossy(),
                    batch.file_name().to_string_lossy()
                ));
            }
        }
    }
    out
}

#[test]
fn apply_records_changes_and_keeps_undelivered_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let root = tmp.path().join("root");
    let spool = tmp.path().join("spool");
    let trail = tmp.path().join("trail");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let env = tmp.path().join("env");
    std::fs::write(&env, "MOTD_SECRET=opensesame\n").unwrap();
    std::fs::write(
        config.join("base.yaml"),
        format!(
            r#"apiVersion: driftless.dev/v1alpha1
kind: ApplyPolicy
metadata: {{name: base}}
spec:
  secrets: [{{name: MOTD_SECRET}}]
  tasks:
    - name: motd
      file: {{path: /etc/motd, content: "welcome ${{secret:MOTD_SECRET}}\n"}}
    - name: issue
      file: {{path: /etc/issue, content: "Debian\n"}}
  audit:
    sinks:
      - name: local
        directory: {{path: {trail}}}
      - name: down
        http: {{url: "http://127.0.0.1:{port}/audit"}}
"#,
            trail = trail.display(),
            port = free_port()
        ),
    )
    .unwrap();

    let first = apply(&config, &root, &spool, &env);
    assert!(
        first.status.success(),
        "an audit sink that is down does not fail the apply: {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "welcome opensesame\n"
    );
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("audit: policy base: audit sink down"),
        "{stderr}"
    );
    let text = std::fs::read_to_string(trail.join("audit.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["task"], "motd");
    assert_eq!(records[0]["policy"], "base");
    assert_eq!(records[0]["revision"].as_str().unwrap().len(), 12);
    assert_eq!(records[0]["change"], "added");
    assert!(records[0]["afterHmacSha256"].is_string());
    assert!(!text.contains("opensesame"), "{text}");
    // The unreachable sink's batch waits; the directory's was delivered and removed.
    let waiting = spooled(&spool);
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert!(waiting[0].starts_with("down/"));

    // Second run: nothing changes, so no new record; the old batch is still waiting.
    let second = apply(&config, &root, &spool, &env);
    assert!(second.status.success());
    let again = std::fs::read_to_string(trail.join("audit.jsonl")).unwrap();
    assert_eq!(again, text);
    assert_eq!(spooled(&spool), waiting);
}

/// HMAC-SHA256 in hex, computed here from the definition so the test does not trust the code
/// under test.
fn hmac_sha256(key: &[u8], message: &str) -> String {
    use sha2::{Digest, Sha256};
    let block = |pad: u8| {
        let mut b = [pad; 64];
        for (i, k) in key.iter().enumerate() {
            b[i] ^= k;
        }
        b
    };
    let inner = Sha256::new()
        .chain_update(block(0x36))
        .chain_update(message.as_bytes())
        .finalize();
    hex::encode(
        Sha256::new()
            .chain_update(block(0x5c))
            .chain_update(inner)
            .finalize(),
    )
}

#[test]
fn a_secret_bearing_change_is_recorded_with_keyed_digests_and_a_readable_diff() {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    let root = tmp.path().join("root");
    let spool = tmp.path().join("spool");
    let trail = tmp.path().join("trail");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let env = tmp.path().join("env");
    // A low-entropy secret: an unkeyed digest of the file would let anyone guess it.
    std::fs::write(&env, "DB_PASSWORD=hunter2\n").unwrap();
    let live = "port=1\npassword=hunter2\nuser=app\n";
    let desired = "port=2\npassword=hunter2\nuser=app\n";
    std::fs::write(root.join("etc/app.conf"), live).unwrap();
    std::fs::write(
        config.join("app.yaml"),
        format!(
            "apiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata: {{name: app}}\nspec:\n  secrets: [{{name: DB_PASSWORD}}]\n  tasks:\n    - name: conf\n      file:\n        path: /etc/app.conf\n        content: |\n          port=2\n          password=${{secret:DB_PASSWORD}}\n          user=app\n  audit:\n    sinks:\n      - name: local\n        directory: {{path: {}}}\n",
            trail.display()
        ),
    )
    .unwrap();
    let out = apply(&config, &root, &spool, &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/app.conf")).unwrap(),
        desired
    );

    let text = std::fs::read_to_string(trail.join("audit.jsonl")).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let record: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        record["diff"],
        "--- /etc/app.conf (live)\n+++ /etc/app.conf (desired)\n@@ -1,3 +1,3 @@\n-port=1\n+port=2\n password=<redacted>\n user=app\n"
    );
    let before = record["beforeHmacSha256"].as_str().unwrap();
    let after = record["afterHmacSha256"].as_str().unwrap();
    assert_ne!(before, after, "{record}");

    // The key sits with the spool, private, and reproduces both digests from the real files.
    let key_path = spool.join(".hmac-key");
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let key = hex::decode(std::fs::read_to_string(&key_path).unwrap().trim()).unwrap();
    assert_eq!(key.len(), 32);
    let canonical = |content: &str| {
        format!(
            "content=sha256:{}\n",
            hex::encode(Sha256::digest(content.as_bytes()))
        )
    };
    assert_eq!(before, hmac_sha256(&key, &canonical(live)));
    assert_eq!(after, hmac_sha256(&key, &canonical(desired)));
    assert_eq!(
        record["hmacKeyId"].as_str().unwrap(),
        &hex::encode(Sha256::digest(&key))[..16]
    );
    // Without the key the guess does not match: the digest is not a plain SHA-256.
    assert_ne!(
        before,
        hex::encode(Sha256::digest(canonical(live).as_bytes()))
    );
}
