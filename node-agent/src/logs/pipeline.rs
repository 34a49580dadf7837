//! A running pipeline and the set of them.
//!
//! Each pipeline runs on its own thread (file reads are blocking) with a single-threaded tokio
//! runtime for the network sinks. Its loop: scan globs when due, read a chunk of lines within the
//! room left in the in-flight buffer, transform, hand the chunk to every sink, send the batches
//! that are due (retrying with backoff), and once every sink acknowledged a chunk, commit its
//! offsets and write the checkpoint.
//!
//! With an on-disk buffer (`buffer.diskPath`) each chunk is stored on disk before its offsets
//! are checkpointed, removed once every sink acknowledged it, and chunks left by an earlier run
//! are sent again before anything new is read.
//!
//! Guarantees: a checkpoint never covers an event some sink has not acknowledged or that is not
//! in the on-disk buffer; a crash re-sends at most what was in flight (one batch per sink). While a sink is failing, reading
//! stops (the buffer cannot drain), so memory stays bounded. Reload stops the old pipeline after
//! a last attempt to deliver, writes its checkpoint, and starts the new one from it: acknowledged
//! data is never sent again, unacknowledged data is read again.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftless_crds::log_pipeline::{LogPipelineSpec, SinkKind};
use driftless_crds::secret::Lookup;

use super::buffer::InFlight;
use super::checkpoint::{self, Checkpoint};
use super::disk::{DiskBuffer, Stored};
use super::metrics::{LogMetrics, PipelineMetrics};
use super::sinks::{node_name, SinkContext, SinkState};
use super::sources::file::{Budget, FileSource};
use super::transforms::Transforms;
use super::LogError;
use crate::backoff::Backoff;
use crate::host::HostPaths;

/// Events read per step at most.
const CHUNK_EVENTS: usize = 8192;
/// Bytes read per step at most.
const CHUNK_BYTES: usize = 2 << 20;
/// Sleep between polls when there is nothing to read.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// Attempts at a batch the receiver rejects (4xx) before it is dropped and counted.
const MAX_REJECTIONS: u32 = 3;

/// One pipeline, ready to run.
pub struct Pipeline {
    name: String,
    sources: Vec<FileSource>,
    transforms: Transforms,
    sinks: Vec<SinkState>,
    inflight: InFlight,
    checkpoint_path: PathBuf,
    metrics: Arc<PipelineMetrics>,
    backoff: Backoff,
    disk: Option<DiskBuffer>,
    /// Chunks of an earlier run still in the on-disk buffer, sent before anything new is read.
    replay: VecDeque<Stored>,
}

impl Pipeline {
    /// Builds a pipeline: compiles its sources, transforms and sinks and loads its checkpoint
    /// from `state_dir`. Nothing runs yet.
    pub fn new(
        name: &str,
        spec: &LogPipelineSpec,
        host: &HostPaths,
        state_dir: &Path,
        lookup: &dyn Lookup,
    ) -> Result<Self, LogError> {
        let checkpoint_path = checkpoint::path_for(state_dir, name);
        let restored = match checkpoint::load(&checkpoint_path) {
            Ok(cp) => cp,
            Err(e) => {
                tracing::error!(pipeline = name, error = %e, "ignoring unreadable checkpoint; files are read per readFrom");
                None
            }
        };
        let mut sources = Vec::new();
        for source in &spec.sources {
            let entries = restored
                .as_ref()
                .and_then(|cp| cp.sources.get(&source.name).cloned());
            sources.push(FileSource::new(source, host.clone(), entries)?);
        }
        let node = node_name();
        let ctx = SinkContext {
            pipeline: name,
            node: &node,
            lookup,
        };
        let sinks = spec
            .sinks
            .iter()
            .map(|s| SinkState::new(s, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        let metrics = Arc::new(PipelineMetrics::new(
            name,
            &spec
                .sources
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
            &spec
                .sinks
                .iter()
                .map(|s| s.name.clone())
                .collect::<Vec<_>>(),
        ));
        metrics
            .buffer_max_events
            .store(spec.buffer.max_events, Ordering::Relaxed);
        metrics
            .buffer_max_bytes
            .store(spec.buffer.max_bytes, Ordering::Relaxed);
        let mut inflight = InFlight::new(
            spec.buffer.max_events as usize,
            spec.buffer.max_bytes as usize,
        );
        let mut replay = VecDeque::new();
        let disk = match &spec.buffer.disk_path {
            Some(dir) if !dir.is_empty() => {
                let disk = DiskBuffer::open(Path::new(dir), name)
                    .map_err(|e| LogError::Config(format!("pipeline {name}: {e}")))?;
                let (stored, problems) = disk.load().map_err(|e| {
                    LogError::Config(format!("pipeline {name}: buffer.diskPath: {e}"))
                })?;
                for problem in problems {
                    metrics.error("buffer");
                    tracing::error!(pipeline = name, problem = %problem, "disk buffer");
                }
                if let Some(last) = stored.iter().map(|s| s.seq).max() {
                    inflight.start_after(last);
                }
                if !stored.is_empty() {
                    tracing::info!(pipeline = name, chunks = stored.len(), events = stored.iter().map(|s| s.events.len()).sum::<usize>(), dir = %disk.dir().display(), "re-sending chunks from the disk buffer");
                }
                replay.extend(stored);
                Some(disk)
            }
            _ => None,
        };
        let transforms = Transforms::new(&spec.transforms, &host.root)?;
        // Nothing reads event fields: skip parsing (raw lines go straight to raw file sinks).
        let raw_only = transforms.is_empty()
            && spec
                .sinks
                .iter()
                .all(|s| matches!(&s.kind, SinkKind::File(f) if f.raw));
        for source in &mut sources {
            source.raw_only = raw_only;
        }
        Ok(Self {
            name: name.to_owned(),
            sources,
            transforms,
            sinks,
            inflight,
            checkpoint_path,
            metrics,
            backoff: Backoff::default(),
            disk,
            replay,
        })
    }

    /// The pipeline's counters.
    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.metrics.clone()
    }

    /// Overrides the glob re-scan interval (tests).
    pub fn set_scan_interval(&mut self, interval: Duration) {
        for s in &mut self.sources {
            s.scan_interval = interval;
        }
    }

    fn save_checkpoint(&self) {
        let mut cp = Checkpoint {
            version: 1,
            sources: BTreeMap::new(),
        };
        for s in &self.sources {
            cp.sources.insert(s.name.to_string(), s.entries());
        }
        if let Err(e) = checkpoint::save(&self.checkpoint_path, &cp) {
            self.metrics.error("checkpoint");
            tracing::error!(pipeline = %self.name, error = %e, "cannot write checkpoint");
        }
    }

    /// Runs until `stop` is set, then delivers what it can, writes the checkpoint and returns.
    pub async fn run(mut self, stop: Arc<AtomicBool>) {
        tracing::info!(pipeline = %self.name, sources = self.sources.len(), sinks = self.sinks.len(), "pipeline started");
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let now = Instant::now();
            let mut progressed = false;
            if !stopping && !self.replay.is_empty() {
                progressed = self.replay_chunk(now);
            } else if !stopping && !self.inflight.is_full() {
                progressed = self.read_chunk(now);
                if self.disk.is_some() {
                    let offsets = self.inflight.commit_durable();
                    if !offsets.is_empty() {
                        self.commit(offsets);
                        self.save_checkpoint();
                    }
                }
            }
            let full = self.inflight.is_full();
            for i in 0..self.sinks.len() {
                let sink = &self.sinks[i];
                if sink.due(now) || ((full || stopping) && sink.events > 0) {
                    self.deliver(i, &stop, stopping).await;
                    progressed = true;
                }
            }
            let acked = self
                .sinks
                .iter()
                .map(SinkState::acked)
                .min()
                .unwrap_or_else(|| self.inflight.last_seq());
            let done = self.inflight.ack(acked);
            if !done.is_empty() {
                let mut offsets = Vec::new();
                for mut chunk in done {
                    if let (Some(disk), Some(path)) = (&self.disk, &chunk.disk) {
                        if let Err(e) = disk.remove(path) {
                            self.metrics.error("buffer");
                            tracing::error!(pipeline = %self.name, error = %e, "cannot remove a delivered chunk from the disk buffer; it will be sent again after a restart");
                        }
                    }
                    offsets.append(&mut chunk.offsets);
                }
                self.commit(offsets);
                self.save_checkpoint();
            }
            let (events, bytes) = self.inflight.fill();
            self.metrics
                .buffer_events
                .store(events as u64, Ordering::Relaxed);
            self.metrics
                .buffer_bytes
                .store(bytes as u64, Ordering::Relaxed);
            if stopping {
                self.save_checkpoint();
                tracing::info!(pipeline = %self.name, "pipeline stopped");
                return;
            }
            if !progressed {
                let next = self
                    .sinks
                    .iter()
                    .filter_map(SinkState::deadline)
                    .min()
                    .map(|d| d.saturating_duration_since(now))
                    .unwrap_or(IDLE_POLL)
                    .min(IDLE_POLL);
                tokio::time::sleep(next.max(Duration::from_millis(1))).await;
            }
        }
    }

    /// Advances the sources' committed offsets.
    fn commit(&mut self, offsets: super::buffer::Offsets) {
        for (si, id, offset) in offsets {
            if let Some(source) = self.sources.get_mut(si) {
                source.commit(id, offset);
            }
        }
        for s in &mut self.sources {
            s.prune();
        }
    }

    /// Hands the oldest chunk of an earlier run to the sinks when it fits; whether it did.
    fn replay_chunk(&mut self, now: Instant) -> bool {
        let Some(next) = self.replay.front() else {
            return false;
        };
        let events = next.events.len();
        let bytes: usize = next.events.iter().map(|e| e.size()).sum();
        let (room_events, room_bytes) = self.inflight.room();
        let inflight_empty = self.inflight.fill() == (0, 0);
        if !inflight_empty && (room_events < events || room_bytes < bytes) {
            return false;
        }
        for sink in &self.sinks {
            let (e, b) = sink.room();
            if sink.events > 0 && (e < events || b < bytes) {
                return false;
            }
        }
        let Some(mut stored) = self.replay.pop_front() else {
            return false;
        };
        if !self.sources.first().is_some_and(|s| s.raw_only) {
            // Stored by a configuration that kept only raw lines: give them the basic fields.
            for event in stored.events.iter_mut().filter(|e| e.fields.is_empty()) {
                event
                    .fields
                    .insert("message".into(), event.raw.clone().into());
                event
                    .fields
                    .insert("source".into(), event.source.to_string().into());
            }
        }
        let seq = self
            .inflight
            .push_chunk(events, bytes, Vec::new(), Some(stored.path), true);
        for sink in &mut self.sinks {
            sink.add(seq, &stored.events, now);
        }
        true
    }

    /// Reads one chunk from every source; whether anything was read.
    fn read_chunk(&mut self, now: Instant) -> bool {
        // A chunk fits in the buffer and in every sink's batch, so no batch outgrows its
        // limits (and a crash re-sends at most one batch per sink).
        let (mut room_events, mut room_bytes) = self.inflight.room();
        for sink in &self.sinks {
            let (events, bytes) = sink.room();
            room_events = room_events.min(events);
            room_bytes = room_bytes.min(bytes);
        }
        if room_events == 0 || room_bytes == 0 {
            return false;
        }
        let mut budget = Budget {
            events: room_events.min(CHUNK_EVENTS),
            bytes: room_bytes.min(CHUNK_BYTES),
        };
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut events = Vec::new();
        let mut offsets = Vec::new();
        let mut read_any = false;
        for (si, source) in self.sources.iter_mut().enumerate() {
            source.scan_if_due(now);
            let before = events.len();
            let mut file_offsets = Vec::new();
            let stats = source.read(&mut budget, now, &timestamp, &mut events, &mut file_offsets);
            if let Some(m) = self.metrics.sources.get(si) {
                m.events
                    .fetch_add((events.len() - before) as u64, Ordering::Relaxed);
                m.bytes.fetch_add(stats.bytes_read, Ordering::Relaxed);
                m.lag.store(stats.lag, Ordering::Relaxed);
            }
            for _ in 0..stats.errors {
                self.metrics.error("read");
            }
            for _ in 0..stats.rotated_unread {
                self.metrics.error("rotated_unread");
            }
            read_any |= stats.bytes_read > 0 || events.len() > before;
            offsets.extend(file_offsets.into_iter().map(|(id, off)| (si, id, off)));
        }
        if events.is_empty() && offsets.is_empty() {
            return false;
        }
        if !self.transforms.is_empty() {
            let mut kept = Vec::with_capacity(events.len());
            for e in events.drain(..) {
                self.transforms.run(e, &mut kept);
            }
            events = kept;
        }
        let bytes = events.iter().map(|e| e.size()).sum();
        let seq = match &self.disk {
            None => self.inflight.push(events.len(), bytes, offsets),
            Some(_) if events.is_empty() => self.inflight.push_chunk(0, 0, offsets, None, true),
            Some(disk) => {
                // Stored before its offsets are checkpointed; if that fails the chunk stays in
                // memory only and its offsets wait for the sinks, as without a disk buffer.
                match disk.write(self.inflight.next_seq(), &events) {
                    Ok(path) => {
                        self.inflight
                            .push_chunk(events.len(), bytes, offsets, Some(path), true)
                    }
                    Err(e) => {
                        self.metrics.error("buffer");
                        tracing::error!(pipeline = %self.name, error = %e, "cannot write to the disk buffer; keeping the chunk in memory");
                        self.inflight.push(events.len(), bytes, offsets)
                    }
                }
            }
        };
        for sink in &mut self.sinks {
            sink.add(seq, &events, now);
        }
        read_any
    }

    /// Sends one sink's batch, retrying with backoff until it is delivered, rejected for good,
    /// or the pipeline stops.
    async fn deliver(&mut self, i: usize, stop: &AtomicBool, stopping: bool) {
        let mut attempt = 0u32;
        let mut rejections = 0u32;
        loop {
            let sink = &mut self.sinks[i];
            match sink.send().await {
                Ok(()) => {
                    if let Some(m) = self.metrics.sinks.get(i) {
                        m.events.fetch_add(sink.events as u64, Ordering::Relaxed);
                        m.bytes.fetch_add(sink.bytes as u64, Ordering::Relaxed);
                    }
                    sink.delivered();
                    return;
                }
                Err(e) => {
                    let retryable = match &e {
                        LogError::Send { retryable, .. } => *retryable,
                        _ => true,
                    };
                    self.metrics.error(e.metric_label());
                    if !retryable {
                        rejections += 1;
                        if rejections >= MAX_REJECTIONS {
                            self.metrics.error("rejected");
                            tracing::error!(pipeline = %self.name, sink = %sink.name, events = sink.events, error = %e, "batch rejected by the receiver; dropping it");
                            sink.delivered();
                            return;
                        }
                    }
                    if stopping || stop.load(Ordering::Relaxed) {
                        tracing::warn!(pipeline = %self.name, sink = %sink.name, error = %e, "stopping with an undelivered batch; it is read again on restart");
                        return;
                    }
                    if let Some(m) = self.metrics.sinks.get(i) {
                        m.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    let delay = self.backoff.delay(attempt);
                    tracing::warn!(pipeline = %self.name, sink = %sink.name, error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "send failed; retrying");
                    attempt = attempt.saturating_add(1);
                    let until = Instant::now() + delay;
                    while Instant::now() < until {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50).min(until - Instant::now()))
                            .await;
                    }
                }
            }
        }
    }
}

/// A pipeline running on its thread.
struct Running {
    spec: LogPipelineSpec,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        if self.thread.join().is_err() {
            tracing::error!("pipeline thread panicked");
        }
    }
}

/// Every pipeline of the configuration, started, reloaded and stopped together.
pub struct Pipelines {
    host: HostPaths,
    state_dir: PathBuf,
    metrics: LogMetrics,
    running: BTreeMap<String, Running>,
    /// Glob re-scan interval for new pipelines (`None`: the default).
    pub scan_interval: Option<Duration>,
}

impl Pipelines {
    /// No pipelines yet; host paths below `host`, checkpoints below `state_dir`.
    pub fn new(host: HostPaths, state_dir: PathBuf, metrics: LogMetrics) -> Self {
        Self {
            host,
            state_dir,
            metrics,
            running: BTreeMap::new(),
            scan_interval: None,
        }
    }

    /// Names of the running pipelines.
    pub fn names(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Makes the running set match `wanted` (name → spec): unchanged pipelines keep running,
    /// changed ones are stopped (checkpoint written) and started again, removed ones stopped.
    /// A pipeline that fails to build is reported (with its name) and, if it was running, keeps
    /// its old version.
    pub fn apply(
        &mut self,
        wanted: &BTreeMap<String, LogPipelineSpec>,
        lookup: &dyn Lookup,
    ) -> Vec<(String, LogError)> {
        let mut errors = Vec::new();
        let removed: Vec<String> = self
            .running
            .keys()
            .filter(|name| !wanted.contains_key(*name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(running) = self.running.remove(&name) {
                running.stop();
                self.metrics.unregister(&name);
                tracing::info!(pipeline = %name, "pipeline removed");
            }
        }
        for (name, spec) in wanted {
            if self.running.get(name).is_some_and(|r| &r.spec == spec) {
                continue;
            }
            // Stop the old version first: it writes its checkpoint, which the new one reads.
            let old = self.running.remove(name);
            let old_spec = old.as_ref().map(|r| r.spec.clone());
            if let Some(old) = old {
                old.stop();
            }
            match self.start(name, spec, lookup) {
                Ok(running) => {
                    self.running.insert(name.clone(), running);
                }
                Err(e) => {
                    tracing::error!(pipeline = %name, error = %e, "cannot start pipeline");
                    errors.push((name.clone(), e));
                    if let Some(old_spec) = old_spec {
                        if let Ok(running) = self.start(name, &old_spec, lookup) {
                            self.running.insert(name.clone(), running);
                        }
                    }
                }
            }
        }
        errors
    }

    fn start(
        &self,
        name: &str,
        spec: &LogPipelineSpec,
        lookup: &dyn Lookup,
    ) -> Result<Running, LogError> {
        let mut pipeline = Pipeline::new(name, spec, &self.host, &self.state_dir, lookup)?;
        if let Some(interval) = self.scan_interval {
            pipeline.set_scan_interval(interval);
        }
        self.metrics.register(pipeline.metrics());
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread_name = format!("logs-{name}");
        let thread = std::thread::Builder::new()
            .name(thread_name.chars().take(15).collect())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(pipeline.run(thread_stop)),
                    Err(e) => tracing::error!(error = %e, "cannot start the pipeline runtime"),
                }
            })
            .map_err(|e| LogError::Config(format!("pipeline {name}: cannot start thread: {e}")))?;
        Ok(Running {
            spec: spec.clone(),
            stop,
            thread,
        })
    }

    /// Stops every pipeline, each delivering what it can and writing its checkpoint.
    pub fn stop_all(&mut self) {
        let running = std::mem::take(&mut self.running);
        for (name, r) in running {
            r.stop.store(true, Ordering::Relaxed);
            if r.thread.join().is_err() {
                tracing::error!(pipeline = %name, "pipeline thread panicked");
            }
        }
    }
}

impl Drop for Pipelines {
    fn drop(&mut self) {
        self.stop_all();
    }
}
