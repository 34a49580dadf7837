//! The optional on-disk buffer (`buffer.diskPath`): every chunk read is written to
//! `DISK/<pipeline>/<seq>.chunk` before its offsets are checkpointed, and removed once every
//! sink acknowledged it. After a restart the chunks still on disk are sent again first, so
//! lines read but not yet delivered survive a restart even when their source file is gone.
//!
//! Guarantees: a chunk file is written to a temporary name, `fsync`ed and renamed, so it is
//! either complete or absent (a leftover temporary file was never checkpointed and is removed).
//! Each file carries its length and a CRC-32 of its body; a file that is short, altered or
//! unparsable is reported (log and `errors_total{kind="buffer"}`), renamed to `*.corrupt` for
//! inspection, and skipped. The buffer holds only chunks in flight, so its size is bounded by
//! `buffer.maxBytes` (plus the JSON encoding of the fields).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Event, Fields, LogError};

/// First word of every chunk file.
const MAGIC: &str = "DLBUF1";

/// The directory of one pipeline's chunks.
#[derive(Debug)]
pub struct DiskBuffer {
    dir: PathBuf,
}

#[derive(Serialize)]
struct EventRef<'a> {
    s: &'a str,
    r: &'a str,
    f: &'a Fields,
}

#[derive(Deserialize)]
struct EventOwned {
    s: String,
    r: String,
    f: Fields,
}

/// A chunk found on disk at start-up.
#[derive(Debug)]
pub struct Stored {
    /// Its file.
    pub path: PathBuf,
    /// Its sequence number (from the name).
    pub seq: u64,
    /// Its events.
    pub events: Vec<Event>,
}

/// Why a chunk file cannot be used.
#[derive(Debug, PartialEq, Eq)]
pub enum Corrupt {
    /// The header line is missing or malformed.
    Header(String),
    /// The body is shorter or longer than the header says (a partial write).
    Length {
        /// Bytes the header announces.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// The body's checksum differs from the header's.
    Checksum,
    /// An event line is not valid.
    Event(usize, String),
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corrupt::Header(m) => write!(f, "bad header: {m}"),
            Corrupt::Length { expected, found } => write!(
                f,
                "partial file: header announces {expected} body bytes, found {found}"
            ),
            Corrupt::Checksum => f.write_str("checksum mismatch: the body was altered"),
            Corrupt::Event(line, m) => write!(f, "event {line}: {m}"),
        }
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

/// Encodes events as a chunk file: a header line `DLBUF1 <events> <body bytes> <crc32>` and
/// one JSON object per event.
pub fn encode(events: &[Event]) -> Vec<u8> {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.size() * 2 + 32).sum());
    for event in events {
        let line = EventRef {
            s: &event.source,
            r: &event.raw,
            f: &event.fields,
        };
        if serde_json::to_writer(&mut body, &line).is_err() {
            body.extend_from_slice(b"{}");
        }
        body.push(b'\n');
    }
    let mut out = format!(
        "{MAGIC} {} {} {:08x}\n",
        events.len(),
        body.len(),
        crc32(&body)
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Decodes a chunk file written by [`encode`].
pub fn decode(bytes: &[u8]) -> Result<Vec<Event>, Corrupt> {
    let newline = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| Corrupt::Header("no header line".into()))?;
    let header =
        std::str::from_utf8(&bytes[..newline]).map_err(|_| Corrupt::Header("not text".into()))?;
    let words: Vec<&str> = header.split(' ').collect();
    let [magic, count, len, crc] = words[..] else {
        return Err(Corrupt::Header(format!("{header:?}")));
    };
    if magic != MAGIC {
        return Err(Corrupt::Header(format!(
            "expected {MAGIC}, found {magic:?}"
        )));
    }
    let bad = |what: &str| Corrupt::Header(format!("{what} is not a number in {header:?}"));
    let count: usize = count.parse().map_err(|_| bad("event count"))?;
    let len: usize = len.parse().map_err(|_| bad("length"))?;
    let crc = u32::from_str_radix(crc, 16).map_err(|_| bad("checksum"))?;
    let body = &bytes[newline + 1..];
    if body.len() != len {
        return Err(Corrupt::Length {
            expected: len,
            found: body.len(),
        });
    }
    if crc32(body) != crc {
        return Err(Corrupt::Checksum);
    }
    let mut events = Vec::with_capacity(count);
    for (i, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let e: EventOwned =
            serde_json::from_slice(line).map_err(|e| Corrupt::Event(i + 1, e.to_string()))?;
        events.push(Event {
            source: Arc::from(e.s),
            raw: e.r,
            fields: e.f,
        });
    }
    if events.len() != count {
        return Err(Corrupt::Event(
            events.len(),
            format!("expected {count} events, found {}", events.len()),
        ));
    }
    Ok(events)
}

impl DiskBuffer {
    /// The buffer of `pipeline` below `dir` (created when missing).
    pub fn open(dir: &Path, pipeline: &str) -> Result<Self, LogError> {
        let dir = dir.join(pipeline);
        std::fs::create_dir_all(&dir).map_err(|e| {
            LogError::Config(format!(
                "buffer.diskPath: cannot create {}: {e}",
                dir.display()
            ))
        })?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.chunk"))
    }

    /// Writes a chunk durably; returns its file.
    pub fn write(&self, seq: u64, events: &[Event]) -> Result<PathBuf, LogError> {
        let path = self.path(seq);
        let tmp = path.with_extension("tmp");
        let bytes = encode(events);
        let mut file = std::fs::File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
        file.write_all(&bytes).map_err(|e| LogError::io(&tmp, e))?;
        file.sync_data().map_err(|e| LogError::io(&tmp, e))?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(|e| LogError::io(&path, e))?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(path)
    }

    /// Removes a delivered chunk.
    pub fn remove(&self, path: &Path) -> Result<(), LogError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(LogError::io(path, e)),
        }
    }

    /// The chunks left by an earlier run, oldest first, and the problems found (corrupt files,
    /// each renamed to `*.corrupt`). Leftover temporary files are removed: their offsets were
    /// never checkpointed, so their lines are read again from the source.
    pub fn load(&self) -> Result<(Vec<Stored>, Vec<String>), LogError> {
        let mut stored = Vec::new();
        let mut problems = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| LogError::io(&self.dir, e))?;
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if ext == "tmp" {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if ext != "chunk" {
                continue;
            }
            let seq = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok());
            let read = std::fs::read(&path).map_err(|e| LogError::io(&path, e));
            let result = match (seq, read) {
                (None, _) => Err("the name is not <number>.chunk".to_owned()),
                (_, Err(e)) => Err(e.to_string()),
                (Some(seq), Ok(bytes)) => decode(&bytes)
                    .map(|events| (seq, events))
                    .map_err(|e| e.to_string()),
            };
            match result {
                Ok((seq, events)) => stored.push(Stored { path, seq, events }),
                Err(reason) => {
                    let aside = path.with_extension("corrupt");
                    let _ = std::fs::rename(&path, &aside);
                    problems.push(format!(
                        "{}: corrupt disk buffer chunk ({reason}); moved to {}, its events cannot be re-sent",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        Ok((stored, problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Event {
        let mut fields = Fields::new();
        fields.insert("message".into(), format!("line {i} \"quoted\"\n").into());
        fields.insert("n".into(), (i as u64).into());
        Event {
            source: "app".into(),
            raw: format!("line {i} \"quoted\""),
            fields,
        }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let events: Vec<Event> = (0..5).map(event).collect();
        let bytes = encode(&events);
        assert_eq!(decode(&bytes).unwrap(), events);
        assert_eq!(decode(&encode(&[])).unwrap(), vec![]);
        // Partial write.
        assert!(matches!(
            decode(&bytes[..bytes.len() - 3]),
            Err(Corrupt::Length { .. })
        ));
        // Flipped byte in the body.
        let mut flipped = bytes.clone();
        let last = flipped.len() - 5;
        flipped[last] ^= 0x20;
        assert_eq!(decode(&flipped), Err(Corrupt::Checksum));
        assert!(matches!(decode(b"garbage"), Err(Corrupt::Header(_))));
        assert!(matches!(decode(b"DLBUF1 x y z\n"), Err(Corrupt::Header(_))));
        assert!(matches!(decode(b""), Err(Corrupt::Header(_))));
    }

    #[test]
    fn load_skips_and_reports_corrupt_files() {
        let dir = tempfile::tempdir().unwrap();
        let buffer = DiskBuffer::open(dir.path(), "p").unwrap();
        let a = buffer.write(7, &[event(1), event(2)]).unwrap();
        buffer.write(9, &[event(3)]).unwrap();
        std::fs::write(
            buffer.dir().join("00000000000000000010.chunk"),
            b"DLBUF1 1 99 0\n{",
        )
        .unwrap();
        std::fs::write(buffer.dir().join("00000000000000000011.tmp"), b"half").unwrap();
        let (stored, problems) = buffer.load().unwrap();
        assert_eq!(stored.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(stored[0].events, vec![event(1), event(2)]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("partial file"), "{problems:?}");
        assert!(buffer.dir().join("00000000000000000010.corrupt").exists());
        assert!(!buffer.dir().join("00000000000000000011.tmp").exists());
        buffer.remove(&a).unwrap();
        buffer.remove(&a).unwrap();
        assert_eq!(buffer.load().unwrap().0.len(), 1);
    }
}
