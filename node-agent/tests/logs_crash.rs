//! Crash test: a writer produces a numbered stream at a high rate with rename and copytruncate
//! rotations while `driftless logs` is killed with SIGKILL 20 times at random moments and
//! restarted. Every number must arrive at least once, and each crash re-sends at most the events
//! that were in flight when it happened (`buffer.maxEvents`), whatever the kill interrupted — a
//! rename, a copytruncate, a checkpoint write. Two variants: a file sink and an HTTP sink.
#![allow(clippy::unwrap_used)]

mod logs_support;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logs_support::*;
use rand::Rng;

const CRASHES: usize = 20;
/// Events in flight at most (`buffer.maxEvents`), so also the most a crash can re-send.
const IN_FLIGHT: usize = 2000;
/// About one rotation a second at the writer's rate; ten generations are kept, so a rotated
/// file lives for seconds (logrotate keeps them for days) while the agent is down for
/// ~0.2 s per crash.
const LINES_PER_ROTATION: usize = 20_000;
const GENERATIONS: usize = 10;

/// Writes numbered lines into `dir/app.log`, rotating every `LINES_PER_ROTATION` lines,
/// alternately by rename (app.log → app.log.1 → ... → app.log.10, the oldest deleted) and by
/// copytruncate (app.log copied to app.log.1, then truncated).
fn writer(dir: std::path::PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicUsize>) {
    let path = dir.join("app.log");
    let open = || {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap()
    };
    let shift = || {
        let _ = std::fs::remove_file(dir.join(format!("app.log.{GENERATIONS}")));
        for n in (1..GENERATIONS).rev() {
            let _ = std::fs::rename(
                dir.join(format!("app.log.{n}")),
                dir.join(format!("app.log.{}", n + 1)),
            );
        }
    };
    let mut file = open();
    let mut n = 0usize;
    let mut rotations = 0usize;
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
            rotations += 1;
            shift();
            if rotations.is_multiple_of(2) {
                std::fs::rename(&path, dir.join("app.log.1")).unwrap();
                file = open();
            } else {
                std::fs::copy(&path, dir.join("app.log.1")).unwrap();
                file.set_len(0).unwrap();
            }
        }
        // ~20,000 lines (2 MB) a second.
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn crash_test(sink_yaml: &str, delivered: &dyn Fn() -> Vec<u32>, receiver: Option<&Receiver>) {
    let tree = Tree::new();
    tree.config(&format!(
        r#"apiVersion: driftless.dev/v1alpha1
kind: LogPipeline
metadata: {{name: crash}}
spec:
  sources:
    - name: app
      include: ["/var/log/app/app.log*"]
  buffer: {{maxEvents: {IN_FLIGHT}}}
  sinks:
{sink_yaml}
"#
    ));
    let _ = receiver;
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer_thread = {
        let (dir, stop, written) = (tree.path("root/var/log/app"), stop.clone(), written.clone());
        std::thread::spawn(move || writer(dir, stop, written))
    };
    let mut rng = rand::thread_rng();
    let mut agent = Agent::start(&tree, &[]);
    let started = Instant::now();
    for _ in 0..CRASHES {
        std::thread::sleep(Duration::from_millis(rng.gen_range(150..900)));
        agent.assert_running();
        agent.kill9();
        agent = Agent::start(&tree, &[]);
    }
    stop.store(true, Ordering::Relaxed);
    writer_thread.join().unwrap();
    let total = written.load(Ordering::Relaxed);
    // Waits as long as delivery makes progress, so a loaded machine only makes this slower.
    let mut counts = Vec::new();
    let mut complete = false;
    let mut delivered_so_far = 0usize;
    while !complete {
        complete = wait_for(Duration::from_secs(20), || {
            counts = delivered();
            counts.len() >= total && counts[..total].iter().all(|c| *c > 0)
        });
        let now_delivered: usize = counts.iter().map(|c| *c as usize).sum();
        if now_delivered == delivered_so_far {
            break;
        }
        delivered_so_far = now_delivered;
    }
    agent.assert_running();
    let missing: Vec<usize> = (0..total)
        .filter(|n| counts.get(*n).copied().unwrap_or(0) == 0)
        .collect();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &n in &missing {
        match ranges.last_mut() {
            Some((_, end)) if *end + 1 == n => *end = n,
            _ => ranges.push((n, n)),
        }
    }
    assert!(
        complete,
        "{} of {total} numbers missing (ranges: {:?}) after {:?}; agent log:\n{}",
        missing.len(),
        &ranges[..ranges.len().min(20)],
        started.elapsed(),
        agent
            .stderr()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let duplicates: usize = counts.iter().map(|c| c.saturating_sub(1) as usize).sum();
    assert!(
        duplicates <= CRASHES * IN_FLIGHT,
        "{duplicates} duplicates for {CRASHES} crashes exceed the events in flight \
         (buffer.maxEvents {IN_FLIGHT}) per crash"
    );
    eprintln!("{total} lines, {CRASHES} crashes, {duplicates} duplicates");
    agent.terminate();
}

#[test]
fn kill_9_twenty_times_file_sink_loses_nothing() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_path_buf();
    let sink = format!(
        "    - name: out\n      file: {{directory: {}, raw: true, maxBytes: 10000000000}}",
        dir.display()
    );
    let delivered = move || {
        let mut counts = Vec::new();
        let text = std::fs::read_to_string(dir.join("crash-app.log")).unwrap_or_default();
        count_numbers(text.lines(), &mut counts);
        counts
    };
    crash_test(&sink, &delivered, None);
}

#[test]
fn kill_9_twenty_times_http_sink_loses_nothing() {
    let receiver = Receiver::start();
    let sink = format!(
        "    - name: out\n      http: {{url: \"{}\", batch: {{maxAge: 100ms}}}}",
        receiver.url("/ingest")
    );
    let r = receiver.clone();
    let delivered = move || {
        let mut counts = Vec::new();
        let events = r.events();
        count_numbers(
            events.iter().filter_map(|e| e["message"].as_str()),
            &mut counts,
        );
        counts
    };
    crash_test(&sink, &delivered, Some(&receiver));
}
