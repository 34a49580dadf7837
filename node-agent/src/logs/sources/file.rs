//! The file source: globs with excludes, re-scanned; complete lines read from every matching
//! file and turned into events.
//!
//! A file is known by its device and inode **and** a fingerprint (SHA-256) of its first
//! `fingerprintBytes` bytes (fewer while the file is shorter), so:
//! - rename rotation: the renamed file keeps its identity and is read to its end through the
//!   open descriptor, and the new file at the old path is read from its beginning;
//! - copytruncate: the truncation is seen (size below the offset, or the first bytes changed);
//!   the copy, recognised by the old fingerprint, is read from the old offset so the lines
//!   written between the last read and the copy are not lost, and the truncated file is read
//!   again from offset 0;
//! - inode reuse: a new file on a recycled inode has other first bytes, so it is a new file;
//! - identical files (same bytes, other inodes) are different files;
//! - deletion while open: the file is read to its end through the open descriptor, then closed;
//! - rotation while the agent is down: a checkpointed file that is no longer matched by the
//!   globs is looked for in its directory, by device and inode (renamed: `app.log.1`,
//!   `app.log-20261204`, any name) or by fingerprint under a rotation name (copied and
//!   truncated), and read from its checkpoint to its end, then forgotten; rotation names
//!   modified after it (rotated more than once while down) are read from their beginning. A
//!   rotated file that was compressed (`.gz`, recognised by the fingerprint of its
//!   decompressed start) or deleted before its end was read is reported: a warning naming the
//!   file and the unread bytes, and `errors_total{kind="rotated_unread"}`.
//!
//! Caveat: a copy that appears while its original has not been truncated yet is held back for
//! [`COPY_GRACE`]; if the original is not truncated by then the copy is read as a file of its own.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use driftless_crds::log_pipeline::{LogSource, ReadFrom};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::kubernetes::{self, ContainerRef};
use super::multiline::{Joiner, MultilineConfig, Record};
use crate::host::HostPaths;
use crate::logs::checkpoint::FileEntry;
use crate::logs::parsers::cri::Reassembler;
use crate::logs::parsers::Parser;
use crate::logs::{Event, LogError};

/// How long a copy of a live file waits for the original's truncation (copytruncate).
pub const COPY_GRACE: Duration = Duration::from_secs(3);
/// A file that left the globs is closed after being idle at its end this long.
const GONE_IDLE: Duration = Duration::from_secs(5);
/// A deleted file is closed after being idle at its end this long.
const DELETED_IDLE: Duration = Duration::from_millis(500);
/// Longest line; longer ones are cut into pieces of this size.
const MAX_LINE: usize = 1 << 20;
/// Bytes read per system call.
const READ_SIZE: usize = 256 << 10;
/// Fingerprints shorter than this are not used to recognise copies.
const MIN_FP_FOR_COPY: u32 = 16;

/// A fingerprint: the length it covers and the hash of those bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// Bytes covered.
    pub len: u32,
    /// Hex SHA-256 prefix.
    pub hash: String,
}

/// The fingerprint of the first `len` bytes of `head` (`None` when `head` is shorter).
pub fn fingerprint(head: &[u8], len: u32) -> Option<Fingerprint> {
    let bytes = head.get(..len as usize)?;
    let digest = Sha256::digest(bytes);
    Some(Fingerprint {
        len,
        hash: hex::encode(&digest[..16]),
    })
}

fn matches(head: &[u8], fp: &Fingerprint) -> bool {
    fingerprint(head, fp.len).is_some_and(|f| f.hash == fp.hash)
}

/// Where a newly seen file starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Read from this offset.
    At(u64),
    /// Not yet: it may be a copy whose original is about to be truncated.
    Defer,
}

/// What is known when deciding where a newly seen file starts.
#[derive(Debug)]
pub struct Candidate<'a> {
    /// Device.
    pub dev: u64,
    /// Inode.
    pub ino: u64,
    /// Size.
    pub size: u64,
    /// Its first bytes (up to `fingerprintBytes`).
    pub head: &'a [u8],
}

/// Decides where a newly seen file starts. Pure: the whole identity policy in one place.
///
/// In order: a checkpoint entry of the same device, inode and fingerprint resumes; an orphaned
/// checkpoint entry (its file is gone or changed) with the same fingerprint is adopted (the file
/// was copied and truncated while the agent was down); a file truncated while running with the
/// same fingerprint hands over its offset (copytruncate); a copy of a live file waits
/// [`COPY_GRACE`]; anything else is new and starts at the beginning, or at its end when
/// `readFrom: End` applies (first scan, no checkpoint).
pub fn decide(
    c: &Candidate<'_>,
    restored: &mut [(FileEntry, bool)],
    truncated: &mut Vec<(Fingerprint, u64, Instant)>,
    live: &[Fingerprint],
    first_seen: Instant,
    now: Instant,
    from_end: bool,
) -> Start {
    let cap = |offset: u64| if offset > c.size { 0 } else { offset };
    let entry_fp = |e: &FileEntry| Fingerprint {
        len: e.fp_len,
        hash: e.fp.clone(),
    };
    if let Some((entry, used)) = restored.iter_mut().find(|(e, used)| {
        !used
            && e.dev == c.dev
            && e.ino == c.ino
            && (e.fp_len == 0 || matches(c.head, &entry_fp(e)))
    }) {
        *used = true;
        return Start::At(cap(entry.offset));
    }
    if let Some((entry, used)) = restored.iter_mut().find(|(e, used)| {
        !used
            && e.fp_len >= MIN_FP_FOR_COPY
            && (e.dev, e.ino) != (c.dev, c.ino)
            && matches(c.head, &entry_fp(e))
    }) {
        *used = true;
        return Start::At(cap(entry.offset));
    }
    if let Some(i) = truncated.iter().position(|(fp, _, _)| matches(c.head, fp)) {
        let (_, offset, _) = truncated.remove(i);
        return Start::At(cap(offset));
    }
    if live
        .iter()
        .any(|fp| fp.len >= MIN_FP_FOR_COPY && matches(c.head, fp))
        && now.duration_since(first_seen) < COPY_GRACE
    {
        return Start::Defer;
    }
    Start::At(if from_end { c.size } else { 0 })
}

/// Per-file reassembly: CRI partial lines, then multiline joining.
#[derive(Debug)]
struct Assembler {
    cri: Option<(Reassembler, Option<u64>)>,
    joiner: Option<Joiner>,
}

impl Assembler {
    fn pending_start(&self) -> Option<u64> {
        let cri = self.cri.as_ref().and_then(|(_, s)| *s);
        let joined = self.joiner.as_ref().and_then(Joiner::pending_start);
        match (cri, joined) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn push(&mut self, line: String, start: u64, now: Instant, out: &mut Vec<Record>) {
        let record = match &mut self.cri {
            Some((reassembler, cri_start)) => {
                if cri_start.is_none() {
                    *cri_start = Some(start);
                }
                let Some(rec) = reassembler.push(&line) else {
                    return;
                };
                Record {
                    text: rec.content,
                    start: cri_start.take().unwrap_or(start),
                    time: (!rec.time.is_empty()).then_some(rec.time),
                    stream: (!rec.stream.is_empty()).then_some(rec.stream),
                    error: rec.error,
                }
            }
            None => Record {
                text: line,
                start,
                ..Default::default()
            },
        };
        match &mut self.joiner {
            Some(j) => j.push(record, now, out),
            None => out.push(record),
        }
    }

    fn flush_due(&mut self, now: Instant, out: &mut Vec<Record>) {
        if let Some(j) = &mut self.joiner {
            j.flush_due(now, out);
        }
    }

    fn flush(&mut self, now: Instant, out: &mut Vec<Record>) {
        if let Some((r, start)) = &mut self.cri {
            if let Some(rec) = r.flush() {
                let record = Record {
                    text: rec.content,
                    start: start.take().unwrap_or(0),
                    time: Some(rec.time),
                    stream: Some(rec.stream),
                    error: Some(
                        rec.error
                            .unwrap_or_else(|| "cri: final part missing".into()),
                    ),
                };
                match &mut self.joiner {
                    Some(j) => j.push(record, now, out),
                    None => out.push(record),
                }
            }
        }
        if let Some(j) = &mut self.joiner {
            j.flush(out);
        }
    }
}

/// One file being read.
#[derive(Debug)]
struct Tracked {
    id: u64,
    host_path: String,
    file: Option<File>,
    dev: u64,
    ino: u64,
    fp: Fingerprint,
    read_offset: u64,
    carry: Vec<u8>,
    assembler: Assembler,
    committed: u64,
    reported: u64,
    last_size: u64,
    last_data: Instant,
    gone_since: Option<Instant>,
    final_offset: Option<u64>,
    container: Option<ContainerRef>,
}

impl Tracked {
    fn emit_offset(&self) -> u64 {
        self.assembler
            .pending_start()
            .unwrap_or(self.read_offset - self.carry.len() as u64)
    }
}

/// Budget of one read step.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Events left.
    pub events: usize,
    /// Bytes left.
    pub bytes: usize,
}

/// What a read step produced for one file source.
#[derive(Debug, Default)]
pub struct ReadStats {
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Bytes behind the end of the files.
    pub lag: u64,
    /// Errors while reading.
    pub errors: u64,
    /// Rotated files reported with an unread tail that cannot be read (compressed, deleted).
    pub rotated_unread: u64,
}

/// Whether `name` is a rotation name of `base` (`base.1`, `base-20261204`, `base.2026-12-04`,
/// `base_3`, ...), and if so whether it is compressed (`.gz`, `.bz2`, `.xz`, `.zst`).
pub fn rotation_name(name: &str, base: &str) -> Option<bool> {
    let rest = name.strip_prefix(base)?;
    let mut chars = rest.chars();
    if !matches!(chars.next(), Some('.' | '-' | '_')) {
        return None;
    }
    let rest = chars.as_str();
    let (stem, compressed) = [".gz", ".bz2", ".xz", ".zst"]
        .iter()
        .find_map(|ext| rest.strip_suffix(ext).map(|s| (s, true)))
        .unwrap_or((rest, false));
    let generation = !stem.is_empty()
        && stem.starts_with(|c: char| c.is_ascii_digit())
        && stem.chars().all(|c| c.is_ascii_digit() || c == '-');
    generation.then_some(compressed)
}

fn entry_fingerprint(e: &FileEntry) -> Fingerprint {
    Fingerprint {
        len: e.fp_len,
        hash: e.fp.clone(),
    }
}

/// The fingerprint of the decompressed start of a gzip file and its decompressed size
/// (modulo 2^32, from the trailer).
fn gzip_identity(path: &Path, fp_len: u32) -> Option<(Vec<u8>, u64)> {
    let file = File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    let mut trailer = [0u8; 4];
    file.read_exact_at(&mut trailer, len.checked_sub(4)?).ok()?;
    let mut head = Vec::new();
    flate2::read::GzDecoder::new(file)
        .take(fp_len as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some((head, u32::from_le_bytes(trailer) as u64))
}

/// A file source.
#[derive(Debug)]
pub struct FileSource {
    /// Source name.
    pub name: Arc<str>,
    host: HostPaths,
    bases: Vec<(String, usize)>,
    include: GlobSet,
    exclude_paths: GlobSet,
    exclude_names: GlobSet,
    parser: Parser,
    kubernetes: bool,
    read_from: ReadFrom,
    fp_bytes: u32,
    multiline: Option<MultilineConfig>,
    files: Vec<Tracked>,
    restored: Option<Vec<FileEntry>>,
    truncated: Vec<(Fingerprint, u64, Instant)>,
    deferred: HashMap<(u64, u64), Instant>,
    next_id: u64,
    scanned: bool,
    last_scan: Option<Instant>,
    /// How often the globs are re-scanned.
    pub scan_interval: Duration,
    /// Events carry only the raw line and no fields: nothing downstream reads fields (no
    /// transforms, only `raw` file sinks), so lines are not parsed.
    pub raw_only: bool,
    rotate: usize,
    unread_reports: u64,
}

fn glob(pattern: &str, what: &str, source: &str) -> Result<Glob, LogError> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| LogError::Config(format!("source {source}: {what} {pattern:?}: {e}")))
}

fn is_meta(component: &str) -> bool {
    component.contains(['*', '?', '[', '{'])
}

/// The directory a glob's literal prefix names and how deep below it matches can be
/// (`usize::MAX` for `**`).
pub fn walk_base(pattern: &str) -> (String, usize) {
    let components: Vec<&str> = pattern.split('/').collect();
    let literal = components.iter().take_while(|c| !is_meta(c)).count();
    if literal == components.len() {
        let parent = components[..components.len().saturating_sub(1)].join("/");
        return (
            if parent.is_empty() {
                "/".into()
            } else {
                parent
            },
            1,
        );
    }
    let base = components[..literal].join("/");
    let rest = &components[literal..];
    let depth = if rest.contains(&"**") {
        usize::MAX
    } else {
        rest.len()
    };
    (if base.is_empty() { "/".into() } else { base }, depth)
}

impl FileSource {
    /// A source from its configuration, reading host paths below `host`, resuming from the
    /// checkpoint entries of this source (`None` when the pipeline has no checkpoint yet).
    pub fn new(
        config: &LogSource,
        host: HostPaths,
        restored: Option<Vec<FileEntry>>,
    ) -> Result<Self, LogError> {
        let name = config.name.as_str();
        let mut includes = config.include.clone();
        if config.kubernetes {
            includes.push(kubernetes::CONTAINER_LOGS.to_owned());
        }
        let mut include = GlobSetBuilder::new();
        let mut bases = Vec::new();
        for pattern in &includes {
            if !pattern.starts_with('/') {
                return Err(LogError::Config(format!(
                    "source {name}: include {pattern:?} must be an absolute path"
                )));
            }
            include.add(glob(pattern, "include", name)?);
            bases.push(walk_base(pattern));
        }
        let mut exclude_paths = GlobSetBuilder::new();
        let mut exclude_names = GlobSetBuilder::new();
        for pattern in &config.exclude {
            if pattern.contains('/') {
                exclude_paths.add(glob(pattern, "exclude", name)?);
            } else {
                exclude_names.add(glob(pattern, "exclude", name)?);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build()
                .map_err(|e| LogError::Config(format!("source {name}: globs: {e}")))
        };
        Ok(Self {
            name: Arc::from(name),
            host,
            bases,
            include: build(include)?,
            exclude_paths: build(exclude_paths)?,
            exclude_names: build(exclude_names)?,
            parser: Parser::for_source(config)?,
            kubernetes: config.kubernetes,
            read_from: config.read_from,
            fp_bytes: config.fingerprint_bytes.clamp(1, 1 << 16),
            multiline: config
                .multiline
                .as_ref()
                .map(|m| MultilineConfig::new(name, m))
                .transpose()?,
            files: Vec::new(),
            restored,
            truncated: Vec::new(),
            deferred: HashMap::new(),
            next_id: 1,
            scanned: false,
            last_scan: None,
            scan_interval: Duration::from_millis(250),
            raw_only: false,
            rotate: 0,
            unread_reports: 0,
        })
    }

    fn wanted(&self, host_path: &str) -> bool {
        if !self.include.is_match(host_path) || self.exclude_paths.is_match(host_path) {
            return false;
        }
        let name = host_path.rsplit('/').next().unwrap_or(host_path);
        !self.exclude_names.is_match(name)
    }

    /// Host paths of the files the globs match now.
    fn list(&self) -> Vec<String> {
        let mut found = Vec::new();
        for (base, depth) in &self.bases {
            let mut stack = vec![(base.clone(), 0usize)];
            while let Some((dir, level)) = stack.pop() {
                let Ok(entries) = std::fs::read_dir(self.host.host(&dir)) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let Some(file_name) = entry.file_name().to_str().map(str::to_owned) else {
                        continue;
                    };
                    let host_path = if dir == "/" {
                        format!("/{file_name}")
                    } else {
                        format!("{dir}/{file_name}")
                    };
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    let is_dir = kind.is_dir();
                    if is_dir {
                        if level + 1 < *depth {
                            stack.push((host_path, level + 1));
                        }
                        continue;
                    }
                    if self.wanted(&host_path) {
                        found.push(host_path);
                    }
                }
            }
        }
        found.sort();
        found.dedup();
        found
    }

    /// The local path of a host path, following symlinks inside the host root.
    fn resolve(&self, host_path: &str) -> PathBuf {
        let mut path = self.host.host(host_path);
        for _ in 0..8 {
            match std::fs::read_link(&path) {
                Ok(target) if target.is_absolute() => path = self.host.host(&target),
                Ok(target) => {
                    path = path.parent().map(|p| p.join(&target)).unwrap_or(target);
                }
                Err(_) => break,
            }
        }
        path
    }

    fn head(file: &File, max: u32, size: u64) -> Vec<u8> {
        let len = (max as u64).min(size) as usize;
        let mut head = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut head[filled..], filled as u64) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        head.truncate(filled);
        head
    }

    /// Re-scans the globs when due: starts tracking new files, notes files that left.
    pub fn scan_if_due(&mut self, now: Instant) {
        if self
            .last_scan
            .is_some_and(|t| now.duration_since(t) < self.scan_interval)
        {
            return;
        }
        self.last_scan = Some(now);
        self.scan(now);
    }

    fn scan(&mut self, now: Instant) {
        let paths = self.list();
        let first = !self.scanned;
        self.scanned = true;
        let mut restored: Vec<(FileEntry, bool)> = self
            .restored
            .take()
            .map(|entries| entries.into_iter().map(|e| (e, false)).collect())
            .unwrap_or_default();
        let from_end = first && self.read_from == ReadFrom::End && restored.is_empty();
        let mut seen = vec![false; self.files.len()];
        let mut open_ids: HashMap<(u64, u64), usize> = HashMap::new();
        for (i, t) in self.files.iter().enumerate() {
            if let Some(file) = &t.file {
                let alive = file.metadata().map(|m| m.nlink() > 0).unwrap_or(false);
                if alive {
                    open_ids.insert((t.dev, t.ino), i);
                }
            }
        }
        let mut candidates = Vec::new();
        for host_path in paths {
            let local = self.resolve(&host_path);
            let Ok(meta) = std::fs::metadata(&local) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            if let Some(&i) = open_ids.get(&(meta.dev(), meta.ino())) {
                seen[i] = true;
                self.files[i].host_path = host_path;
                continue;
            }
            candidates.push((host_path, local, (meta.dev(), meta.ino())));
        }
        // Files with a checkpoint entry of their own inode first, so that a copy of one of them
        // cannot adopt that entry before the file itself resumes from it.
        candidates.sort_by_key(|(_, _, key)| {
            !restored
                .iter()
                .any(|(e, used)| !used && (e.dev, e.ino) == *key)
        });
        let mut live: Vec<Fingerprint> = self
            .files
            .iter()
            .filter(|t| t.file.is_some())
            .map(|t| t.fp.clone())
            .collect();
        let mut still_deferred = HashMap::new();
        for (host_path, local, _) in candidates {
            let Ok(file) = File::open(&local) else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let head = Self::head(&file, self.fp_bytes, meta.len());
            let key = (meta.dev(), meta.ino());
            let first_seen = self.deferred.get(&key).copied().unwrap_or(now);
            let candidate = Candidate {
                dev: meta.dev(),
                ino: meta.ino(),
                size: meta.len(),
                head: &head,
            };
            let start = decide(
                &candidate,
                &mut restored,
                &mut self.truncated,
                &live,
                first_seen,
                now,
                from_end,
            );
            let offset = match start {
                Start::Defer => {
                    still_deferred.insert(key, first_seen);
                    continue;
                }
                Start::At(offset) => offset,
            };
            let fp = fingerprint(&head, head.len() as u32).unwrap_or(Fingerprint {
                len: 0,
                hash: String::new(),
            });
            // A copy of this file seen later in the same scan waits for its truncation too
            // (after a restart in the middle of a copytruncate, nothing else is live yet).
            live.push(fp.clone());
            tracing::debug!(source = %self.name, file = %host_path, offset, "tailing file");
            let container = if self.kubernetes {
                kubernetes::parse_file_name(&host_path)
            } else {
                None
            };
            let id = self.next_id;
            self.next_id += 1;
            self.files.push(Tracked {
                id,
                host_path,
                dev: meta.dev(),
                ino: meta.ino(),
                fp,
                read_offset: offset,
                carry: Vec::new(),
                assembler: self.assembler(),
                committed: offset,
                reported: offset,
                last_size: meta.len(),
                last_data: now,
                gone_since: None,
                final_offset: None,
                container,
                file: Some(file),
            });
            seen.push(true);
        }
        self.deferred = still_deferred;
        for (t, seen) in self.files.iter_mut().zip(seen) {
            if seen {
                t.gone_since = None;
            } else if t.gone_since.is_none() {
                t.gone_since = Some(now);
            }
        }
        self.truncated
            .retain(|(_, _, at)| now.duration_since(*at) < COPY_GRACE * 4);
        if first {
            let known: HashSet<(u64, u64)> = restored.iter().map(|(e, _)| (e.dev, e.ino)).collect();
            for (entry, used) in restored {
                if !used {
                    self.recover(entry, &known, now);
                }
            }
        }
    }

    /// Starts reading a file outside the globs (a rotated file) from `offset`; it is closed
    /// and forgotten once read to its end.
    fn track_rotated(
        &mut self,
        host_path: String,
        file: File,
        head: &[u8],
        offset: u64,
        now: Instant,
    ) {
        let Ok(meta) = file.metadata() else {
            return;
        };
        let fp = fingerprint(head, head.len() as u32).unwrap_or(Fingerprint {
            len: 0,
            hash: String::new(),
        });
        let id = self.next_id;
        self.next_id += 1;
        self.files.push(Tracked {
            id,
            host_path,
            dev: meta.dev(),
            ino: meta.ino(),
            fp,
            read_offset: offset,
            carry: Vec::new(),
            assembler: self.assembler(),
            committed: offset,
            reported: offset,
            last_size: meta.len(),
            last_data: now,
            gone_since: Some(now),
            final_offset: None,
            container: None,
            file: Some(file),
        });
    }

    /// A checkpointed file no longer matched by the globs (rotated while the agent was down):
    /// finds it in its directory and reads it from its checkpoint, with the rotations newer
    /// than it from their start; reports what cannot be read.
    fn recover(&mut self, entry: FileEntry, known: &HashSet<(u64, u64)>, now: Instant) {
        let Some((dir, base)) = entry.path.rsplit_once('/') else {
            return;
        };
        let dir = if dir.is_empty() { "/" } else { dir };
        let Ok(listing) = std::fs::read_dir(self.host.host(dir)) else {
            return;
        };
        let tracked: HashSet<(u64, u64)> = self
            .files
            .iter()
            .filter(|t| t.file.is_some())
            .map(|t| (t.dev, t.ino))
            .collect();
        let fp = entry_fingerprint(&entry);
        // (host path, local path, rotation name: Some(compressed)).
        let mut siblings = Vec::new();
        for item in listing.flatten() {
            let Some(name) = item.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !item.file_type().is_ok_and(|k| k.is_file()) {
                continue;
            }
            let host_path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            siblings.push((host_path, item.path(), rotation_name(&name, base)));
        }
        siblings.sort();
        let mut same_inode = None;
        let mut copy = None;
        for (host_path, local, rotation) in &siblings {
            if *rotation == Some(true) {
                continue;
            }
            let Ok(file) = File::open(local) else {
                continue;
            };
            let Ok(meta) = file.metadata() else {
                continue;
            };
            let key = (meta.dev(), meta.ino());
            if tracked.contains(&key) {
                continue;
            }
            let head = Self::head(&file, self.fp_bytes, meta.len());
            let fp_ok = entry.fp_len == 0 || matches(&head, &fp);
            if fp_ok && key == (entry.dev, entry.ino) {
                same_inode = Some((host_path.clone(), file, head, meta));
                break;
            }
            if fp_ok
                && copy.is_none()
                && rotation.is_some()
                && entry.fp_len >= MIN_FP_FOR_COPY
                && !known.contains(&key)
            {
                copy = Some((host_path.clone(), file, head, meta));
            }
        }
        if let Some((host_path, file, head, meta)) = same_inode.or(copy) {
            let modified = meta.modified().ok();
            let unread = meta.len().saturating_sub(entry.offset);
            if entry.offset < meta.len() {
                tracing::info!(source = %self.name, file = %host_path, was = %entry.path, offset = entry.offset, unread_bytes = unread, "reading the rest of a file rotated while the agent was down");
                self.track_rotated(host_path.clone(), file, &head, entry.offset, now);
            }
            // Rotated more than once: the rotations written after it were never seen.
            for (newer_path, local, rotation) in &siblings {
                if *rotation != Some(false) || *newer_path == host_path {
                    continue;
                }
                let Ok(file) = File::open(local) else {
                    continue;
                };
                let Ok(m) = file.metadata() else {
                    continue;
                };
                let key = (m.dev(), m.ino());
                let newer = matches!((m.modified(), modified), (Ok(a), Some(b)) if a >= b);
                if !newer
                    || known.contains(&key)
                    || tracked.contains(&key)
                    || self.files.iter().any(|t| (t.dev, t.ino) == key)
                {
                    continue;
                }
                tracing::info!(source = %self.name, file = %newer_path, "reading a file rotated while the agent was down from its start");
                let head = Self::head(&file, self.fp_bytes, m.len());
                self.track_rotated(newer_path.clone(), file, &head, 0, now);
            }
            return;
        }
        for (host_path, local, rotation) in &siblings {
            if *rotation != Some(true) || !host_path.ends_with(".gz") || entry.fp_len == 0 {
                continue;
            }
            let Some((head, size)) = gzip_identity(local, entry.fp_len) else {
                continue;
            };
            if !matches(&head, &fp) {
                continue;
            }
            let unread = size.saturating_sub(entry.offset);
            if unread > 0 {
                self.unread_reports += 1;
                tracing::warn!(source = %self.name, file = %host_path, was = %entry.path, offset = entry.offset, unread_bytes = unread, "a file rotated while the agent was down was compressed before its end was read; its unread lines are not delivered");
            }
            return;
        }
        let unread = entry.size.saturating_sub(entry.offset);
        if unread > 0 {
            self.unread_reports += 1;
            tracing::warn!(source = %self.name, file = %entry.path, offset = entry.offset, unread_bytes = unread, "a file was deleted or moved out of its directory while the agent was down before its end was read; at least unread_bytes are not delivered");
        } else {
            tracing::info!(source = %self.name, file = %entry.path, offset = entry.offset, "a checkpointed file is gone; lines appended to it after the last checkpoint, if any, were not read");
        }
    }

    fn assembler(&self) -> Assembler {
        Assembler {
            cri: matches!(self.parser, Parser::Cri).then(|| {
                let max = self
                    .multiline
                    .as_ref()
                    .map(|_| MAX_LINE)
                    .unwrap_or(MAX_LINE);
                (Reassembler::new(max), None)
            }),
            joiner: self.multiline.clone().map(Joiner::new),
        }
    }

    /// Reads complete lines from every open file within the budget. Events go to `out`, the
    /// offset each file reached (safe to checkpoint once those events are acknowledged) to
    /// `offsets` as `(file id, offset)`.
    pub fn read(
        &mut self,
        budget: &mut Budget,
        now: Instant,
        timestamp: &str,
        out: &mut Vec<Event>,
        offsets: &mut Vec<(u64, u64)>,
    ) -> ReadStats {
        let mut stats = ReadStats {
            rotated_unread: std::mem::take(&mut self.unread_reports),
            ..Default::default()
        };
        let n = self.files.len();
        if n == 0 {
            return stats;
        }
        self.rotate = (self.rotate + 1) % n;
        let mut records = Vec::new();
        for k in 0..n {
            let i = (self.rotate + k) % n;
            if self.files[i].file.is_none() {
                continue;
            }
            if budget.events == 0 || budget.bytes == 0 {
                // Still account lag for files not read this round.
                let t = &self.files[i];
                stats.lag += t.last_size.saturating_sub(t.read_offset);
                continue;
            }
            let replaced = matches!(self.poll(i, now, &mut records, &mut stats), Poll::Replaced);
            if !replaced {
                self.read_file(i, budget, now, &mut records, &mut stats);
            }
            self.emit(i, &mut records, timestamp, budget, out);
            let t = &mut self.files[i];
            stats.lag += t.last_size.saturating_sub(t.read_offset);
            let offset = t.final_offset.unwrap_or_else(|| t.emit_offset());
            if offset != t.reported {
                t.reported = offset;
                offsets.push((t.id, offset));
            }
            if replaced {
                // Read again next round, as a new file on the same descriptor.
                self.reopen(i, now);
            }
        }
        stats
    }

    /// Checks one open file for truncation, replacement and closing.
    fn poll(
        &mut self,
        i: usize,
        now: Instant,
        records: &mut Vec<Record>,
        stats: &mut ReadStats,
    ) -> Poll {
        let fp_bytes = self.fp_bytes;
        let t = &mut self.files[i];
        let Some(file) = &t.file else {
            return Poll::Ok;
        };
        let meta = match file.metadata() {
            Ok(meta) => meta,
            Err(e) => {
                stats.errors += 1;
                tracing::warn!(file = %t.host_path, error = %e, "cannot stat file");
                return Poll::Ok;
            }
        };
        let size = meta.len();
        let changed = size != t.last_size;
        t.last_size = size;
        let mut replaced = size < t.read_offset;
        if !replaced && changed && t.fp.len > 0 {
            let head = Self::head(file, t.fp.len, size);
            replaced = !matches(&head, &t.fp);
        }
        if replaced {
            tracing::info!(file = %t.host_path, offset = t.read_offset, size, "file truncated or replaced; reading it again from the start");
            // A partial line is not emitted: a copy (copytruncate) is read from the start of
            // that line, so it arrives whole. Without a copy its end was cut away with it.
            let line_start = t.read_offset - t.carry.len() as u64;
            t.carry.clear();
            t.read_offset = line_start;
            t.assembler.flush(now, records);
            self.truncated.push((t.fp.clone(), line_start, now));
            t.final_offset = Some(line_start);
            return Poll::Replaced;
        }
        if t.fp.len < fp_bytes && size > t.fp.len as u64 {
            let head = Self::head(file, fp_bytes, size);
            if let Some(fp) = fingerprint(&head, head.len() as u32) {
                t.fp = fp;
            }
        }
        t.assembler.flush_due(now, records);
        let idle = now.duration_since(t.last_data);
        let deleted = meta.nlink() == 0;
        let at_end = t.read_offset >= size;
        let close = at_end
            && ((deleted && idle >= DELETED_IDLE)
                || t.gone_since
                    .is_some_and(|g| now.duration_since(g) >= GONE_IDLE && idle >= GONE_IDLE));
        if close {
            if !t.carry.is_empty() {
                let start = t.read_offset - t.carry.len() as u64;
                let line = String::from_utf8_lossy(&t.carry).into_owned();
                t.carry.clear();
                t.assembler.push(line, start, now, records);
            }
            t.assembler.flush(now, records);
            tracing::debug!(file = %t.host_path, "closing file");
            t.file = None;
            t.final_offset = Some(t.read_offset);
        }
        Poll::Ok
    }

    /// A truncated or replaced file continues as a new file (new id) on the same descriptor.
    fn reopen(&mut self, i: usize, now: Instant) {
        let Some(file) = self.files[i].file.take() else {
            return;
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let head = Self::head(&file, self.fp_bytes, size);
        let fp = fingerprint(&head, head.len() as u32).unwrap_or(Fingerprint {
            len: 0,
            hash: String::new(),
        });
        let id = self.next_id;
        self.next_id += 1;
        let old = &self.files[i];
        let tracked = Tracked {
            id,
            host_path: old.host_path.clone(),
            dev: old.dev,
            ino: old.ino,
            fp,
            read_offset: 0,
            carry: Vec::new(),
            assembler: self.assembler(),
            committed: 0,
            reported: 0,
            last_size: size,
            last_data: now,
            gone_since: old.gone_since,
            final_offset: None,
            container: old.container.clone(),
            file: Some(file),
        };
        self.files.push(tracked);
    }

    fn read_file(
        &mut self,
        i: usize,
        budget: &mut Budget,
        now: Instant,
        records: &mut Vec<Record>,
        stats: &mut ReadStats,
    ) {
        let t = &mut self.files[i];
        let mut events_left = budget.events;
        let mut bytes_left = budget.bytes;
        loop {
            // Complete lines already read.
            let carry_start = t.read_offset - t.carry.len() as u64;
            let mut pos = 0;
            while events_left > 0 && bytes_left > 0 {
                let Some(nl) = memchr::memchr(b'\n', &t.carry[pos..]) else {
                    break;
                };
                let mut end = pos + nl;
                let next = end + 1;
                if end > pos && t.carry[end - 1] == b'\r' {
                    end -= 1;
                }
                let line = String::from_utf8_lossy(&t.carry[pos..end]).into_owned();
                t.assembler
                    .push(line, carry_start + pos as u64, now, records);
                events_left = events_left.saturating_sub(1);
                bytes_left = bytes_left.saturating_sub(next - pos);
                pos = next;
            }
            if pos > 0 {
                t.carry.drain(..pos);
            }
            if events_left == 0 || bytes_left == 0 {
                break;
            }
            if t.carry.len() >= MAX_LINE {
                // A line longer than the limit: emit it in pieces.
                let start = t.read_offset - t.carry.len() as u64;
                let piece: Vec<u8> = t.carry.drain(..MAX_LINE).collect();
                t.assembler.push(
                    String::from_utf8_lossy(&piece).into_owned(),
                    start,
                    now,
                    records,
                );
                events_left = events_left.saturating_sub(1);
                bytes_left = bytes_left.saturating_sub(MAX_LINE);
                continue;
            }
            let Some(file) = &t.file else {
                break;
            };
            let len = t.carry.len();
            t.carry.resize(len + READ_SIZE, 0);
            match file.read_at(&mut t.carry[len..], t.read_offset) {
                Ok(0) => {
                    t.carry.truncate(len);
                    break;
                }
                Ok(n) => {
                    t.carry.truncate(len + n);
                    t.read_offset += n as u64;
                    t.last_data = now;
                    stats.bytes_read += n as u64;
                }
                Err(e) => {
                    t.carry.truncate(len);
                    stats.errors += 1;
                    tracing::warn!(file = %t.host_path, error = %e, "read failed");
                    break;
                }
            }
        }
        if t.carry.capacity() > 2 * READ_SIZE && t.carry.len() < READ_SIZE {
            t.carry.shrink_to(READ_SIZE);
        }
    }

    fn emit(
        &mut self,
        i: usize,
        records: &mut Vec<Record>,
        timestamp: &str,
        budget: &mut Budget,
        out: &mut Vec<Event>,
    ) {
        let t = &self.files[i];
        if self.raw_only {
            for record in records.drain(..) {
                let event = Event {
                    source: self.name.clone(),
                    raw: record.text,
                    fields: crate::logs::Fields::new(),
                };
                budget.events = budget.events.saturating_sub(1);
                budget.bytes = budget.bytes.saturating_sub(event.size());
                out.push(event);
            }
            return;
        }
        for record in records.drain(..) {
            let mut fields = crate::logs::Fields::new();
            self.parser.parse(&record.text, &mut fields);
            if let Some(error) = record.error {
                fields.insert("error".into(), Value::String(error));
            }
            if let Some(stream) = record.stream {
                fields.insert("stream".into(), Value::String(stream));
            }
            if !fields.contains_key("timestamp") {
                let ts = record.time.unwrap_or_else(|| timestamp.to_owned());
                fields.insert("timestamp".into(), Value::String(ts));
            }
            fields.insert("source".into(), Value::String(self.name.to_string()));
            fields.insert("file".into(), Value::String(t.host_path.clone()));
            if let Some(c) = &t.container {
                fields.insert("namespace".into(), Value::String(c.namespace.clone()));
                fields.insert("pod".into(), Value::String(c.pod.clone()));
                fields.insert("container".into(), Value::String(c.container.clone()));
            }
            let event = Event {
                source: self.name.clone(),
                raw: record.text,
                fields,
            };
            budget.events = budget.events.saturating_sub(1);
            budget.bytes = budget.bytes.saturating_sub(event.size());
            out.push(event);
        }
    }

    /// Records that every event below `offset` of file `id` was acknowledged.
    pub fn commit(&mut self, id: u64, offset: u64) {
        if let Some(t) = self.files.iter_mut().find(|t| t.id == id) {
            t.committed = t.committed.max(offset);
        }
    }

    /// Forgets closed files whose every event was acknowledged. A truncated file whose copy
    /// has not been found yet stays: its checkpoint entry is what lets a restart hand its
    /// offset to the copy (the handover itself, [`Self::truncated`], lives in memory only).
    pub fn prune(&mut self) {
        let truncated = &self.truncated;
        self.files.retain(|t| {
            t.file.is_some()
                || t.final_offset.is_some_and(|f| t.committed < f)
                || truncated.iter().any(|(fp, _, _)| *fp == t.fp)
        });
    }

    /// The checkpoint entries: every file with its acknowledged offset.
    pub fn entries(&self) -> Vec<FileEntry> {
        let mut entries: Vec<FileEntry> = self
            .files
            .iter()
            .map(|t| FileEntry {
                path: t.host_path.clone(),
                dev: t.dev,
                ino: t.ino,
                fp_len: t.fp.len,
                fp: t.fp.hash.clone(),
                offset: t.committed,
                size: t.last_size,
            })
            .collect();
        // Before the first scan, keep what was restored.
        if let Some(restored) = &self.restored {
            entries.extend(restored.iter().cloned());
        }
        entries
    }

    /// Paths of the files being read (tests, debugging).
    pub fn paths(&self) -> Vec<&Path> {
        self.files
            .iter()
            .filter(|t| t.file.is_some())
            .map(|t| Path::new(t.host_path.as_str()))
            .collect()
    }
}

enum Poll {
    Ok,
    Replaced,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(dev: u64, ino: u64, head: &[u8], offset: u64) -> FileEntry {
        let fp = fingerprint(head, head.len() as u32).unwrap();
        FileEntry {
            path: "/x".into(),
            dev,
            ino,
            fp_len: fp.len,
            fp: fp.hash,
            offset,
            size: offset,
        }
    }

    #[test]
    fn walk_bases() {
        assert_eq!(walk_base("/var/log/app/*.log"), ("/var/log/app".into(), 1));
        assert_eq!(walk_base("/var/log/syslog"), ("/var/log".into(), 1));
        assert_eq!(
            walk_base("/var/log/**/*.log"),
            ("/var/log".into(), usize::MAX)
        );
        assert_eq!(walk_base("/var/*/x/*.log"), ("/var".into(), 3));
    }

    fn unread_reports_after_start(root: &Path, restored: Vec<FileEntry>) -> u64 {
        let config: LogSource =
            serde_saphyr::from_str("{name: app, include: [/var/log/app.log]}").unwrap();
        let mut source = FileSource::new(&config, HostPaths::under(root), Some(restored)).unwrap();
        let now = Instant::now();
        source.scan_if_due(now);
        let mut budget = Budget {
            events: 100,
            bytes: 1 << 20,
        };
        let stats = source.read(&mut budget, now, "t", &mut Vec::new(), &mut Vec::new());
        stats.rotated_unread
    }

    #[test]
    fn compressed_or_deleted_rotations_are_counted() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("var/log");
        std::fs::create_dir_all(&logs).unwrap();
        let content: String = (0..100)
            .map(|i| format!("line {i:04} of a file compressed while the agent was down\n"))
            .collect();
        let gz = std::fs::File::create(logs.join("app.log.1.gz")).unwrap();
        let mut encoder = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
        encoder.write_all(content.as_bytes()).unwrap();
        encoder.finish().unwrap();
        let mut compressed = entry(1, 1, &content.as_bytes()[..256], 1000);
        compressed.path = "/var/log/app.log".into();
        assert_eq!(
            unread_reports_after_start(dir.path(), vec![compressed.clone()]),
            1
        );
        // Read to its end before it was compressed: nothing to report.
        compressed.offset = content.len() as u64;
        assert_eq!(unread_reports_after_start(dir.path(), vec![compressed]), 0);
        std::fs::remove_file(logs.join("app.log.1.gz")).unwrap();
        // Deleted: counted when bytes were known to be unread.
        let mut deleted = entry(1, 1, b"any first bytes of the deleted file", 1000);
        deleted.path = "/var/log/app.log".into();
        deleted.size = 1500;
        assert_eq!(
            unread_reports_after_start(dir.path(), vec![deleted.clone()]),
            1
        );
        deleted.size = 1000;
        assert_eq!(unread_reports_after_start(dir.path(), vec![deleted]), 0);
    }

    /// Copytruncate while running, the truncated file's lines all acknowledged, then a crash
    /// before the next glob scan found the copy: the restart hands the copy the old offset
    /// instead of reading the whole rotated file again.
    #[test]
    fn copy_found_after_a_crash_resumes_where_the_truncated_file_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("var/log");
        std::fs::create_dir_all(&logs).unwrap();
        let lines = |from: usize, count: usize| -> String {
            (from..from + count)
                .map(|i| format!("line {i:04} of a file rotated by copytruncate\n"))
                .collect()
        };
        std::fs::write(logs.join("app.log"), lines(0, 100)).unwrap();
        let config: LogSource =
            serde_saphyr::from_str("{name: app, include: [/var/log/app.log*]}").unwrap();
        let read_all = |source: &mut FileSource, now: Instant| {
            let mut events = Vec::new();
            let mut offsets = Vec::new();
            let mut budget = Budget {
                events: 1000,
                bytes: 1 << 20,
            };
            source.read(&mut budget, now, "t", &mut events, &mut offsets);
            for (id, offset) in offsets {
                source.commit(id, offset);
            }
            source.prune();
            events
        };
        let now = Instant::now();
        let mut source = FileSource::new(&config, HostPaths::under(dir.path()), None).unwrap();
        source.scan_if_due(now);
        assert_eq!(read_all(&mut source, now).len(), 100);
        std::fs::copy(logs.join("app.log"), logs.join("app.log.1")).unwrap();
        std::fs::write(logs.join("app.log"), lines(100, 50)).unwrap();
        // The truncation is seen while reading; the next glob scan is not due yet.
        let events = read_all(&mut source, now);
        let events = events.len() + read_all(&mut source, now).len();
        assert_eq!(events, 50, "the new app.log");
        // kill -9 here: the restart has only the checkpoint.
        let mut restarted = FileSource::new(
            &config,
            HostPaths::under(dir.path()),
            Some(source.entries()),
        )
        .unwrap();
        restarted.scan_if_due(now);
        let again: Vec<String> = read_all(&mut restarted, now)
            .into_iter()
            .map(|e| e.raw)
            .collect();
        assert!(again.is_empty(), "read again after the restart: {again:?}");

        // kill -9 between the copy and the truncation: the restart sees both files whole.
        std::fs::remove_file(logs.join("app.log.1")).unwrap();
        let checkpoint = restarted.entries();
        std::fs::copy(logs.join("app.log"), logs.join("app.log.1")).unwrap();
        let mut restarted =
            FileSource::new(&config, HostPaths::under(dir.path()), Some(checkpoint)).unwrap();
        restarted.scan_if_due(now);
        assert!(read_all(&mut restarted, now).is_empty(), "app.log resumes");
        std::fs::write(logs.join("app.log"), lines(150, 10)).unwrap();
        let later = now + Duration::from_secs(1);
        let mut got = read_all(&mut restarted, later).len();
        restarted.scan_if_due(later);
        got += read_all(&mut restarted, later).len();
        got += read_all(&mut restarted, later).len();
        assert_eq!(got, 10, "only the lines written after the truncation");
    }

    #[test]
    fn rotation_names() {
        assert_eq!(rotation_name("app.log.1", "app.log"), Some(false));
        assert_eq!(rotation_name("app.log-20261204", "app.log"), Some(false));
        assert_eq!(rotation_name("app.log.2026-12-04", "app.log"), Some(false));
        assert_eq!(rotation_name("app.log.1.gz", "app.log"), Some(true));
        assert_eq!(rotation_name("app.log-20261204.gz", "app.log"), Some(true));
        assert_eq!(rotation_name("app.log", "app.log"), None);
        assert_eq!(rotation_name("app.log.lock", "app.log"), None);
        assert_eq!(rotation_name("app.logger.1", "app.log"), None);
        assert_eq!(rotation_name("app.log.gz", "app.log"), None);
    }

    #[test]
    fn identity_decisions() {
        let now = Instant::now();
        let head = b"0001 first line of the file that is long enough\n";
        let c = Candidate {
            dev: 1,
            ino: 10,
            size: 1000,
            head,
        };
        // Same inode and fingerprint: resume.
        let mut restored = vec![(entry(1, 10, head, 500), false)];
        assert_eq!(
            decide(&c, &mut restored, &mut vec![], &[], now, now, false),
            Start::At(500)
        );
        assert!(restored[0].1);
        // Inode reused by other content: new file from the start (not the old offset).
        let mut restored = vec![(
            entry(1, 10, b"other content entirely, not the same!", 500),
            false,
        )];
        assert_eq!(
            decide(&c, &mut restored, &mut vec![], &[], now, now, false),
            Start::At(0)
        );
        // readFrom End applies to new files only.
        assert_eq!(
            decide(&c, &mut [], &mut vec![], &[], now, now, true),
            Start::At(1000)
        );
        // Copied while the agent was down (other inode, same bytes, original changed): adopt.
        let mut restored = vec![(entry(1, 99, head, 700), false)];
        assert_eq!(
            decide(&c, &mut restored, &mut vec![], &[], now, now, false),
            Start::At(700)
        );
        // Truncated while running: the copy takes over the offset.
        let fp = fingerprint(head, head.len() as u32).unwrap();
        let mut truncated = vec![(fp.clone(), 300, now)];
        assert_eq!(
            decide(&c, &mut [], &mut truncated, &[], now, now, false),
            Start::At(300)
        );
        assert!(truncated.is_empty());
        // A copy of a live file waits, then is a file of its own (identical files).
        assert_eq!(
            decide(
                &c,
                &mut [],
                &mut vec![],
                std::slice::from_ref(&fp),
                now,
                now,
                false
            ),
            Start::Defer
        );
        let later = now + COPY_GRACE;
        assert_eq!(
            decide(&c, &mut [], &mut vec![], &[fp], now, later, false),
            Start::At(0)
        );
        // An offset past the end means the file is shorter now: start over.
        let mut restored = vec![(entry(1, 10, head, 5000), false)];
        assert_eq!(
            decide(&c, &mut restored, &mut vec![], &[], now, now, false),
            Start::At(0)
        );
    }
}
