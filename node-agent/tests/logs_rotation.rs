//! Rotation while the agent is down: a file renamed (logrotate `create` mode), renamed twice,
//! renamed to a dated name, compressed, or copied and truncated between a `kill -9` and the
//! restart. The unread tail of the checkpointed file is read from its rotated name; what cannot
//! be read (compressed) is reported in the log and in `errors_total{kind="rotated_unread"}`.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::io::Write;
use std::time::Duration;

use logs_support::*;

const PIPELINE: &str = "rot";

fn config(tree: &Tree) {
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: {PIPELINE}}}
spec:
  sources:
    - name: app
      include: [/var/log/app.log]
      readFrom: Beginning
  sinks:
    - name: out
      file: {{directory: {}, raw: true}}
"#,
        tree.path("out").display()
    ));
    std::fs::create_dir_all(tree.path("root/var/log")).unwrap();
}

fn log_path(tree: &Tree, name: &str) -> std::path::PathBuf {
    tree.path(&format!("root/var/log/{name}"))
}

/// Appends the numbered lines `range` to `/var/log/<name>`.
fn append(tree: &Tree, name: &str, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(tree, name))
        .unwrap();
    let mut text = String::new();
    for n in range {
        text.push_str(&numbered(n));
        text.push('\n');
    }
    f.write_all(text.as_bytes()).unwrap();
}

fn rename(tree: &Tree, from: &str, to: &str) {
    std::fs::rename(log_path(tree, from), log_path(tree, to)).unwrap();
}

fn counts(tree: &Tree) -> Vec<u32> {
    let text =
        std::fs::read_to_string(tree.path(&format!("out/{PIPELINE}-app.log"))).unwrap_or_default();
    let mut counts = Vec::new();
    count_numbers(text.lines(), &mut counts);
    counts
}

/// The checkpointed offset of `/var/log/app.log`, if any.
fn checkpointed(tree: &Tree) -> Option<u64> {
    let text =
        std::fs::read_to_string(tree.path(&format!("state/logs/checkpoints/{PIPELINE}.json")))
            .ok()?;
    let cp: serde_json::Value = serde_json::from_str(&text).ok()?;
    cp["sources"]["app"]
        .as_array()?
        .iter()
        .find(|e| e["path"] == "/var/log/app.log")?["offset"]
        .as_u64()
}

/// Starts the agent, waits until the first `n` lines were delivered and checkpointed, kills it.
fn read_then_kill(tree: &Tree, n: usize) {
    let mut agent = Agent::start(tree, &[]);
    let size = std::fs::metadata(log_path(tree, "app.log")).unwrap().len();
    let ok = wait_for(Duration::from_secs(20), || {
        counts(tree).iter().filter(|c| **c > 0).count() >= n && checkpointed(tree) == Some(size)
    });
    assert!(ok, "first {n} lines not checkpointed\n{}", agent.stderr());
    agent.kill9();
}

/// Restarts the agent and waits until every number in `0..total` except `lost` arrived.
fn restart_and_expect(tree: &Tree, total: usize, lost: std::ops::Range<usize>) -> Agent {
    let mut agent = Agent::start(tree, &[]);
    let expected = |n: &usize| !lost.contains(n);
    let mut got = Vec::new();
    let ok = wait_for(Duration::from_secs(20), || {
        got = counts(tree);
        (0..total)
            .filter(expected)
            .all(|n| got.get(n).copied().unwrap_or(0) > 0)
    });
    let missing: Vec<usize> = (0..total)
        .filter(expected)
        .filter(|n| got.get(*n).copied().unwrap_or(0) == 0)
        .collect();
    assert!(
        ok,
        "{} of {total} lines missing (first {:?}, last {:?})\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        agent.stderr()
    );
    // Let a wrong late read show up before checking duplicates.
    std::thread::sleep(Duration::from_millis(500));
    let got = counts(tree);
    let duplicates: u32 = got.iter().map(|c| c.saturating_sub(1)).sum();
    assert_eq!(duplicates, 0, "duplicates after a checkpointed kill");
    assert!(got.len() <= total, "unexpected numbers: {}", got.len());
    agent.assert_running();
    agent
}

#[test]
fn renamed_while_down_its_tail_is_read_from_the_new_name() {
    let tree = Tree::new();
    config(&tree);
    append(&tree, "app.log", 0..1000);
    read_then_kill(&tree, 1000);
    append(&tree, "app.log", 1000..1500);
    rename(&tree, "app.log", "app.log.1");
    append(&tree, "app.log", 1500..1600);
    let mut agent = restart_and_expect(&tree, 1600, 0..0);
    agent.terminate();
}

#[test]
fn rotated_twice_while_down_both_files_are_read() {
    let tree = Tree::new();
    config(&tree);
    append(&tree, "app.log", 0..1000);
    read_then_kill(&tree, 1000);
    append(&tree, "app.log", 1000..1500);
    rename(&tree, "app.log", "app.log.1");
    append(&tree, "app.log", 1500..1600);
    std::thread::sleep(Duration::from_millis(20));
    rename(&tree, "app.log.1", "app.log.2");
    rename(&tree, "app.log", "app.log.1");
    append(&tree, "app.log", 1600..1700);
    let mut agent = restart_and_expect(&tree, 1700, 0..0);
    agent.terminate();
}

#[test]
fn dated_rotation_name_while_down() {
    let tree = Tree::new();
    config(&tree);
    append(&tree, "app.log", 0..1000);
    read_then_kill(&tree, 1000);
    append(&tree, "app.log", 1000..1500);
    rename(&tree, "app.log", "app.log-20261204");
    append(&tree, "app.log", 1500..1600);
    let mut agent = restart_and_expect(&tree, 1600, 0..0);
    agent.terminate();
}

#[test]
fn copytruncate_while_down_keeps_working() {
    let tree = Tree::new();
    config(&tree);
    append(&tree, "app.log", 0..1000);
    read_then_kill(&tree, 1000);
    append(&tree, "app.log", 1000..1500);
    std::fs::copy(log_path(&tree, "app.log"), log_path(&tree, "app.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log_path(&tree, "app.log"))
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&tree, "app.log", 1500..1600);
    let mut agent = restart_and_expect(&tree, 1600, 0..0);
    agent.terminate();
}

#[test]
fn compressed_while_down_is_reported() {
    let tree = Tree::new();
    config(&tree);
    append(&tree, "app.log", 0..1000);
    read_then_kill(&tree, 1000);
    let before = std::fs::metadata(log_path(&tree, "app.log")).unwrap().len();
    append(&tree, "app.log", 1000..1500);
    let size = std::fs::metadata(log_path(&tree, "app.log")).unwrap().len();
    rename(&tree, "app.log", "app.log.1");
    run(std::process::Command::new("gzip").arg(log_path(&tree, "app.log.1")));
    append(&tree, "app.log", 1500..1600);
    let mut agent = restart_and_expect(&tree, 1600, 1000..1500);
    let unread = size - before;
    let ok = wait_for(Duration::from_secs(5), || {
        agent
            .stderr()
            .lines()
            .any(|l| l.contains("app.log.1.gz") && l.contains(&format!("unread_bytes={unread}")))
    });
    assert!(ok, "no report of {unread} unread bytes\n{}", agent.stderr());
    agent.terminate();
}

/// Randomized: a writer at ~20,000 lines/s renames `app.log` to `app.log.1` (older generations
/// shifted, none deleted) every `LINES_PER_ROTATION` lines while the agent, which tails only
/// `/var/log/app.log`, is killed with SIGKILL 15 times at random moments and restarted after a
/// random pause. Nothing is deleted, so the verdict does not depend on the machine's speed:
/// every line must arrive, duplicates at most one batch (`maxEvents`) per crash.
#[test]
fn kill_9_fifteen_times_with_rename_rotations_loses_nothing() {
    use rand::Rng;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    const CRASHES: usize = 15;
    const BATCH: usize = 2000;
    const LINES_PER_ROTATION: usize = 5000;
    let tree = Tree::new();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: {PIPELINE}}}
spec:
  sources:
    - name: app
      include: [/var/log/app.log]
  buffer: {{maxEvents: {BATCH}}}
  sinks:
    - name: out
      file: {{directory: {}, raw: true, maxBytes: 10000000000}}
"#,
        tree.path("out").display()
    ));
    let dir = tree.path("root/var/log");
    std::fs::create_dir_all(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        std::thread::spawn(move || {
            let path = dir.join("app.log");
            let open = || {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .unwrap()
            };
            let mut file = open();
            let (mut n, mut generations) = (0usize, 0usize);
            let mut buf = String::new();
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                for _ in 0..200 {
                    buf.push_str(&numbered(n));
                    buf.push('\n');
                    n += 1;
                }
                file.write_all(buf.as_bytes()).unwrap();
                written.store(n, Ordering::Relaxed);
                if n.is_multiple_of(LINES_PER_ROTATION) {
                    for g in (1..=generations).rev() {
                        std::fs::rename(
                            dir.join(format!("app.log.{g}")),
                            dir.join(format!("app.log.{}", g + 1)),
                        )
                        .unwrap();
                    }
                    generations += 1;
                    std::fs::rename(&path, dir.join("app.log.1")).unwrap();
                    file = open();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut rng = rand::thread_rng();
    let mut agent = Agent::start(&tree, &[]);
    for _ in 0..CRASHES {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        agent.assert_running();
        agent.kill9();
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..400)));
        agent = Agent::start(&tree, &[]);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = written.load(Ordering::Relaxed);
    let mut got = Vec::new();
    let complete = wait_for(Duration::from_secs(120), || {
        got = counts(&tree);
        got.len() >= total && got[..total].iter().all(|c| *c > 0)
    });
    let missing: Vec<usize> = (0..total)
        .filter(|n| got.get(*n).copied().unwrap_or(0) == 0)
        .collect();
    assert!(
        complete,
        "{} of {total} lines missing (first {:?}, last {:?})\n{}",
        missing.len(),
        missing.first(),
        missing.last(),
        agent.stderr()
    );
    let duplicates: usize = got.iter().map(|c| c.saturating_sub(1) as usize).sum();
    assert!(
        duplicates <= CRASHES * BATCH,
        "{duplicates} duplicates for {CRASHES} crashes exceed one batch ({BATCH}) per crash"
    );
    let recovered = agent
        .stderr()
        .lines()
        .filter(|l| l.contains("rotated while the agent was down"))
        .count();
    eprintln!(
        "{total} lines, {CRASHES} crashes, {duplicates} duplicates, {recovered} rotated files read after a restart"
    );
    agent.assert_running();
    agent.terminate();
}

fn http_config(tree: &Tree, receiver: &Receiver, transforms: &str) {
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: {PIPELINE}}}
spec:
  sources:
    - name: app
      include: [/var/log/app.log]
  buffer: {{maxEvents: 100}}
{transforms}
  sinks:
    - name: out
      http: {{url: "{}", batch: {{maxAge: 100ms}}}}
"#,
        receiver.url("/ingest")
    ));
    std::fs::create_dir_all(tree.path("root/var/log")).unwrap();
}

fn received(receiver: &Receiver) -> Vec<u32> {
    let mut counts = Vec::new();
    let events = receiver.events();
    count_numbers(
        events.iter().filter_map(|e| e["message"].as_str()),
        &mut counts,
    );
    counts
}

fn wait_received(receiver: &Receiver, agent: &Agent, total: usize) {
    let mut got = Vec::new();
    let ok = wait_for(Duration::from_secs(30), || {
        got = received(receiver);
        got.len() >= total && got[..total].iter().all(|c| *c > 0)
    });
    let missing = (0..total)
        .filter(|n| got.get(*n).copied().unwrap_or(0) == 0)
        .count();
    assert!(ok, "{missing} of {total} lines missing\n{}", agent.stderr());
}

/// The sink refuses (no disk buffer, 100 events in flight at most) while the file is renamed
/// and a new one written: the renamed file stays open until read, so nothing is lost.
#[test]
fn renamed_while_the_sink_is_down_loses_nothing() {
    let tree = Tree::new();
    let receiver = Receiver::start();
    http_config(&tree, &receiver, "");
    append(&tree, "app.log", 0..1000);
    let mut agent = Agent::start(&tree, &[]);
    wait_received(&receiver, &agent, 1000);
    receiver
        .mode
        .store(FAIL, std::sync::atomic::Ordering::SeqCst);
    append(&tree, "app.log", 1000..1500);
    rename(&tree, "app.log", "app.log.1");
    append(&tree, "app.log", 1500..1600);
    // Longer than a file that left the globs is kept open when idle at its end.
    std::thread::sleep(Duration::from_secs(7));
    receiver.mode.store(OK, std::sync::atomic::Ordering::SeqCst);
    wait_received(&receiver, &agent, 1600);
    agent.assert_running();
    agent.terminate();
}

/// The file is renamed while the sink refuses, then the pipeline is reloaded (its config
/// changed, SIGHUP): the new pipeline finds the renamed file from the checkpoint.
#[test]
fn renamed_then_reloaded_loses_nothing() {
    let tree = Tree::new();
    let receiver = Receiver::start();
    http_config(&tree, &receiver, "");
    append(&tree, "app.log", 0..1000);
    let mut agent = Agent::start(&tree, &[]);
    wait_received(&receiver, &agent, 1000);
    receiver
        .mode
        .store(FAIL, std::sync::atomic::Ordering::SeqCst);
    append(&tree, "app.log", 1000..1500);
    rename(&tree, "app.log", "app.log.1");
    append(&tree, "app.log", 1500..1600);
    std::thread::sleep(Duration::from_millis(500));
    http_config(
        &tree,
        &receiver,
        "  transforms:\n    - exclude: {field: message, pattern: '^never'}",
    );
    std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    let reloaded = wait_for(Duration::from_secs(20), || {
        agent.stderr().contains("configuration reloaded")
    });
    assert!(reloaded, "not reloaded\n{}", agent.stderr());
    receiver.mode.store(OK, std::sync::atomic::Ordering::SeqCst);
    wait_received(&receiver, &agent, 1600);
    assert!(
        agent
            .stderr()
            .contains("reading the rest of a file rotated while the agent was down"),
        "the reloaded pipeline did not look for the renamed file\n{}",
        agent.stderr()
    );
    agent.assert_running();
    agent.terminate();
}
