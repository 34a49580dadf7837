//! File identity and rotation through the real binary: inode reuse, identical files,
//! truncation, deletion while open, readFrom End with restarts, and reload without loss or
//! re-sending.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::io::Write;
use std::time::Duration;

use logs_support::*;

fn config(tree: &Tree, extra_source: &str, transforms: &str) {
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: f}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
{extra_source}
{transforms}
  sinks:
    - name: out
      file: {{directory: {}, raw: true}}
"#,
        tree.path("out").display()
    ));
}

fn out_lines(tree: &Tree) -> Vec<String> {
    std::fs::read_to_string(tree.path("out/f-app.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn append(tree: &Tree, file: &str, lines: &[String]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(tree.path(&format!("root/var/log/app/{file}")))
        .unwrap();
    f.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
}

fn lines(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| format!("{prefix} line {i:04} with enough text to fill a fingerprint"))
        .collect()
}

fn wait_lines(tree: &Tree, agent: &Agent, n: usize) -> Vec<String> {
    let ok = wait_for(Duration::from_secs(20), || out_lines(tree).len() >= n);
    let got = out_lines(tree);
    assert!(
        ok,
        "expected {n} lines, got {}: {:?}\n{}",
        got.len(),
        got.last(),
        agent.stderr()
    );
    got
}

#[test]
fn same_inode_new_content_is_a_new_file_and_identical_files_are_both_read() {
    let tree = Tree::new();
    config(&tree, "", "");
    append(&tree, "a.log", &lines("old", 0..50));
    let mut agent = Agent::start(&tree, &[]);
    wait_lines(&tree, &agent, 50);
    agent.terminate();
    // While stopped: the same inode gets other, longer content (what inode reuse looks like
    // to a tailer that only compares inode and size).
    let path = tree.path("root/var/log/app/a.log");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    append(&tree, "a.log", &lines("new", 0..80));
    // And two files with identical bytes.
    append(&tree, "twin1.log", &lines("twin", 0..10));
    append(&tree, "twin2.log", &lines("twin", 0..10));
    let mut agent = Agent::start(&tree, &[]);
    let got = wait_lines(&tree, &agent, 50 + 80 + 20);
    std::thread::sleep(Duration::from_millis(500));
    agent.assert_running();
    let got_now = out_lines(&tree);
    assert_eq!(got_now.len(), got.len(), "nothing more than expected");
    assert_eq!(
        got.iter().filter(|l| l.starts_with("new")).count(),
        80,
        "the new content is read from its start"
    );
    assert_eq!(
        got.iter().filter(|l| l.starts_with("old")).count(),
        50,
        "old content not re-sent"
    );
    assert_eq!(
        got.iter().filter(|l| l.starts_with("twin")).count(),
        20,
        "identical files are two files"
    );
    agent.terminate();
}

#[test]
fn truncation_and_deletion_while_open() {
    let tree = Tree::new();
    config(&tree, "", "");
    let mut agent = Agent::start(&tree, &[]);
    append(&tree, "a.log", &lines("first", 0..30));
    wait_lines(&tree, &agent, 30);
    // Truncate in place (no copy) and write again.
    let path = tree.path("root/var/log/app/a.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&tree, "a.log", &lines("second", 0..5));
    wait_lines(&tree, &agent, 35);
    // Keep a descriptor, write, delete right away: the lines still arrive.
    let del = tree.path("root/var/log/app/gone.log");
    let mut f = std::fs::File::create(&del).unwrap();
    f.write_all(b"prelude line so the file is discovered before it goes\n")
        .unwrap();
    wait_lines(&tree, &agent, 36);
    f.write_all((lines("deleted", 0..20).join("\n") + "\n").as_bytes())
        .unwrap();
    std::fs::remove_file(&del).unwrap();
    let got = wait_lines(&tree, &agent, 56);
    assert_eq!(got.iter().filter(|l| l.starts_with("second")).count(), 5);
    assert_eq!(got.iter().filter(|l| l.starts_with("deleted")).count(), 20);
    agent.assert_running();
    agent.terminate();
}

#[test]
fn read_from_end_then_restart_resumes_and_reload_neither_loses_nor_resends() {
    let tree = Tree::new();
    append(&tree, "x.log", &lines("before", 0..10));
    config(&tree, "", "");
    let end_config = |tree: &Tree| {
        let text = std::fs::read_to_string(tree.path("config/logs.yaml")).unwrap();
        std::fs::write(
            tree.path("config/logs.yaml"),
            text.replace(
                "      include: [/var/log/app/*.log]",
                "      include: [/var/log/app/*.log]\n      readFrom: End",
            ),
        )
        .unwrap();
    };
    end_config(&tree);
    let mut agent = Agent::start(&tree, &[]);
    std::thread::sleep(Duration::from_millis(800));
    append(&tree, "x.log", &lines("after", 0..10));
    wait_lines(&tree, &agent, 10);
    agent.terminate();
    // Written while stopped: read on restart (the checkpoint wins over readFrom).
    append(&tree, "x.log", &lines("down", 0..10));
    let mut agent = Agent::start(&tree, &[]);
    wait_lines(&tree, &agent, 20);
    // Reload with a changed pipeline (a transform added) between two writes.
    let text = std::fs::read_to_string(tree.path("config/logs.yaml")).unwrap();
    std::fs::write(
        tree.path("config/logs.yaml"),
        text.replace(
            "  sinks:",
            "  transforms:\n    - exclude: {field: message, pattern: '^skip'}\n  sinks:",
        ),
    )
    .unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &agent.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    append(&tree, "x.log", &lines("reloaded", 0..10));
    append(&tree, "x.log", &lines("skip", 0..10));
    let got = wait_lines(&tree, &agent, 30);
    std::thread::sleep(Duration::from_millis(500));
    let got_now = out_lines(&tree);
    agent.assert_running();
    assert_eq!(got_now.len(), got.len());
    assert_eq!(
        got.iter().filter(|l| l.starts_with("before")).count(),
        0,
        "readFrom End skips what was there"
    );
    for prefix in ["after", "down", "reloaded"] {
        assert_eq!(
            got.iter().filter(|l| l.starts_with(prefix)).count(),
            10,
            "{prefix}: exactly once"
        );
    }
    assert_eq!(
        got.iter().filter(|l| l.starts_with("skip")).count(),
        0,
        "the reloaded transform applies"
    );
    assert!(agent.stderr().contains("configuration reloaded"));
    agent.terminate();
}
