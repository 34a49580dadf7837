//! The `file` sink: JSON lines (or raw lines) in `DIRECTORY/<pipeline>-<source>.log`, one file
//! per pipeline and source, rotated by size to `.1` ... `.maxFiles`. A batch is acknowledged
//! once written and `fdatasync`ed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use driftless_crds::log_pipeline::FileSink as FileSinkConfig;

use crate::logs::{Event, LogError};

/// Batches per source and the open files.
#[derive(Debug)]
pub struct FileSink {
    directory: PathBuf,
    pipeline: String,
    max_bytes: u64,
    max_files: u32,
    raw: bool,
    pending: BTreeMap<Arc<str>, Vec<u8>>,
    open: BTreeMap<Arc<str>, (File, u64)>,
}

impl FileSink {
    /// A sink writing below the configured directory (an agent-local path, not below `--root`).
    pub fn new(config: &FileSinkConfig, pipeline: &str) -> Result<Self, LogError> {
        if config.directory.is_empty() {
            return Err(LogError::Config("file sink: directory is empty".into()));
        }
        Ok(Self {
            directory: PathBuf::from(&config.directory),
            pipeline: pipeline.to_owned(),
            max_bytes: config.max_bytes.max(1),
            max_files: config.max_files,
            raw: config.raw,
            pending: BTreeMap::new(),
            open: BTreeMap::new(),
        })
    }

    /// The file of a source.
    pub fn path(&self, source: &str) -> PathBuf {
        self.directory
            .join(format!("{}-{source}.log", self.pipeline))
    }

    pub(super) fn add(&mut self, event: &Event) {
        if !self.pending.contains_key(&event.source) {
            self.pending.insert(event.source.clone(), Vec::new());
        }
        let Some(buf) = self.pending.get_mut(&event.source) else {
            return;
        };
        if self.raw {
            buf.extend_from_slice(event.raw.as_bytes());
            buf.push(b'\n');
        } else {
            event.write_json_line(buf);
        }
    }

    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }

    fn rotate(&mut self, source: &Arc<str>) -> Result<(), LogError> {
        self.open.remove(source);
        let path = self.path(source);
        if self.max_files == 0 {
            return std::fs::remove_file(&path).map_err(|e| LogError::io(&path, e));
        }
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", path.display()));
        for n in (1..self.max_files).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1)).map_err(|e| LogError::io(&from, e))?;
            }
        }
        std::fs::rename(&path, numbered(1)).map_err(|e| LogError::io(&path, e))
    }

    pub(super) fn send(&mut self) -> Result<(), LogError> {
        std::fs::create_dir_all(&self.directory).map_err(|e| LogError::io(&self.directory, e))?;
        let sources: Vec<Arc<str>> = self.pending.keys().cloned().collect();
        for source in sources {
            let Some(bytes) = self.pending.remove(&source) else {
                continue;
            };
            if bytes.is_empty() {
                continue;
            }
            if let Err(e) = self.write(&source, &bytes) {
                // Not delivered for this source: keep it for the retry.
                self.pending.insert(source, bytes);
                return Err(e);
            }
        }
        Ok(())
    }

    fn write(&mut self, source: &Arc<str>, bytes: &[u8]) -> Result<(), LogError> {
        {
            if self
                .open
                .get(source)
                .is_some_and(|(_, size)| *size > 0 && *size + bytes.len() as u64 > self.max_bytes)
            {
                self.rotate(source)?;
            }
            let path = self.path(source);
            if !self.open.contains_key(source) {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| LogError::io(&path, e))?;
                let size = file.metadata().map(|m| m.len()).unwrap_or(0);
                self.open.insert(source.clone(), (file, size));
            }
            let Some((file, size)) = self.open.get_mut(source) else {
                return Ok(());
            };
            let written = file.write_all(bytes).and_then(|()| file.sync_data());
            if let Err(e) = written {
                // Reopen next time: the file may have been removed or the disk filled.
                self.open.remove(source);
                return Err(LogError::io(&path, e));
            }
            *size += bytes.len() as u64;
        }
        Ok(())
    }
}
