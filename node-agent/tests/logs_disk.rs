//! The on-disk buffer (`buffer.diskPath`): lines read while the HTTP receiver refuses are kept on
//! disk, so after `kill -9`, deletion of the source file and a restart, every line still reaches
//! the receiver once it accepts again. A corrupt chunk file is reported, set aside, and does not
//! stop the pipeline.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use logs_support::*;

fn chunk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
                .collect()
        })
        .unwrap_or_default()
}

fn checkpoint_offset(tree: &Tree) -> u64 {
    let Ok(text) = std::fs::read_to_string(tree.path("state/logs/checkpoints/disk.json")) else {
        return 0;
    };
    let cp: serde_json::Value = serde_json::from_str(&text).unwrap();
    cp["sources"]["app"]
        .as_array()
        .map(|files| files.iter().map(|f| f["offset"].as_u64().unwrap()).sum())
        .unwrap_or(0)
}

#[test]
fn buffered_lines_survive_kill_source_deletion_and_restart() {
    let tree = Tree::new();
    let receiver = Receiver::start();
    receiver.mode.store(FAIL, Ordering::SeqCst);
    let buffer_dir = tree.path("diskbuf");
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: disk}}
spec:
  sources:
    - name: app
      include: [/var/log/app/*.log]
  buffer: {{maxEvents: 50000, maxBytes: 8388608, diskPath: "{dir}"}}
  sinks:
    - name: out
      http: {{url: "{url}", batch: {{maxEvents: 10000, maxBytes: 4194304, maxAge: 300ms}}}}
"#,
        dir = buffer_dir.display(),
        url = receiver.url("/ingest")
    ));
    let total = 6000;
    let mut text = String::new();
    for n in 0..total {
        text.push_str(&numbered(n));
        text.push('\n');
    }
    let source = tree.path("root/var/log/app/app.log");
    std::fs::write(&source, &text).unwrap();
    let mut agent = Agent::start(&tree, &[]);
    // Every line is read and stored: the checkpoint covers the whole file although nothing
    // was delivered.
    let stored = wait_for(Duration::from_secs(30), || {
        checkpoint_offset(&tree) == text.len() as u64
    });
    agent.assert_running();
    assert!(
        stored,
        "checkpoint offset {} of {}; agent:\n{}",
        checkpoint_offset(&tree),
        text.len(),
        agent.stderr()
    );
    assert!(
        receiver.events().is_empty(),
        "the receiver refused everything"
    );
    assert!(
        wait_for(Duration::from_secs(10), || receiver
            .refused
            .load(Ordering::SeqCst)
            >= 1),
        "the agent tried to send"
    );
    let chunks = chunk_files(&buffer_dir.join("disk"));
    assert!(!chunks.is_empty(), "chunks are on disk");
    agent.kill9();

    // The source is gone, and a damaged chunk (a partial write) is in the buffer.
    std::fs::remove_file(&source).unwrap();
    let damaged = buffer_dir.join("disk/00000000000000099999.chunk");
    assert!(!damaged.exists());
    std::fs::write(&damaged, b"DLBUF1 3 400 0badf00d\n{\"s\":\"app\"").unwrap();

    let mut agent = Agent::start(&tree, &[]);
    std::thread::sleep(Duration::from_secs(1));
    agent.assert_running();
    receiver.mode.store(OK, Ordering::SeqCst);
    let mut counts = Vec::new();
    let done = wait_for(Duration::from_secs(30), || {
        counts.clear();
        let events = receiver.events();
        count_numbers(
            events.iter().filter_map(|e| e["message"].as_str()),
            &mut counts,
        );
        counts.len() >= total && counts[..total].iter().all(|c| *c > 0)
    });
    let missing = (0..total)
        .filter(|i| counts.get(*i).copied().unwrap_or(0) == 0)
        .count();
    assert!(
        done,
        "{missing} of {total} lines missing after the restart; agent:\n{}",
        agent.stderr()
    );
    let dups: u32 = counts.iter().map(|c| c.saturating_sub(1)).sum();
    assert_eq!(
        dups, 0,
        "no line was delivered before the restart, so none twice"
    );
    let log = agent.stderr();
    assert!(
        log.contains("corrupt disk buffer chunk") && log.contains("partial file"),
        "the damaged chunk is reported:\n{log}"
    );
    assert!(damaged.with_extension("corrupt").exists(), "set aside");
    // Delivered chunks leave the buffer.
    assert!(
        wait_for(Duration::from_secs(10), || chunk_files(
            &buffer_dir.join("disk")
        )
        .is_empty()),
        "chunks left: {:?}",
        chunk_files(&buffer_dir.join("disk"))
    );
    // New lines still flow.
    std::fs::write(
        tree.path("root/var/log/app/new.log"),
        format!("{}\n", numbered(total)),
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(20), || {
        receiver.events().iter().any(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("seq={total:08}")))
        })
    }));
    agent.terminate();
}
