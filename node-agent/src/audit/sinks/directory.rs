//! The `directory` sink: records appended as JSON lines to `PATH/audit.jsonl`, rotated by size
//! to `audit.jsonl.1` … `audit.jsonl.N` (`maxFiles` rotated files kept, oldest dropped).

use std::io::Write;
use std::path::{Path, PathBuf};

use driftless_crds::apply_policy::AuditDirectory;

use crate::audit::AuditError;

/// The current file's name.
pub const CURRENT: &str = "audit.jsonl";

/// A local audit directory.
#[derive(Debug, Clone)]
pub struct DirectorySink {
    dir: PathBuf,
    max_bytes: u64,
    max_files: u32,
}

impl DirectorySink {
    /// The sink for a configuration.
    pub fn new(config: &AuditDirectory) -> Self {
        Self {
            dir: PathBuf::from(&config.path),
            max_bytes: config.max_bytes.max(1),
            max_files: config.max_files,
        }
    }

    fn rotated(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{CURRENT}.{n}"))
    }

    fn rotate(&self) -> Result<(), AuditError> {
        let io = |path: &Path, e| AuditError::io(path, e);
        if self.max_files == 0 {
            let current = self.dir.join(CURRENT);
            return std::fs::remove_file(&current).map_err(|e| io(&current, e));
        }
        let oldest = self.rotated(self.max_files);
        if oldest.exists() {
            std::fs::remove_file(&oldest).map_err(|e| io(&oldest, e))?;
        }
        for n in (1..self.max_files).rev() {
            let from = self.rotated(n);
            if from.exists() {
                let to = self.rotated(n + 1);
                std::fs::rename(&from, &to).map_err(|e| io(&from, e))?;
            }
        }
        let current = self.dir.join(CURRENT);
        std::fs::rename(&current, self.rotated(1)).map_err(|e| io(&current, e))
    }

    /// Appends the batch (rotating first when it would pass `maxBytes`) and syncs it.
    pub fn deliver(&self, body: &str) -> Result<(), AuditError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| AuditError::io(&self.dir, e))?;
        let current = self.dir.join(CURRENT);
        let size = std::fs::metadata(&current).map(|m| m.len()).unwrap_or(0);
        if size > 0 && size + body.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)
            .map_err(|e| AuditError::io(&current, e))?;
        file.write_all(body.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| AuditError::io(&current, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_keeping_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let sink = DirectorySink::new(&AuditDirectory {
            path: dir.path().display().to_string(),
            max_bytes: 25,
            max_files: 2,
        });
        for i in 0..5 {
            sink.deliver(&format!("{{\"record\":{i}}}\n{{\"record\":{i}}}\n"))
                .unwrap();
        }
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        assert_eq!(read("audit.jsonl"), "{\"record\":4}\n{\"record\":4}\n");
        assert_eq!(read("audit.jsonl.1"), "{\"record\":3}\n{\"record\":3}\n");
        assert_eq!(read("audit.jsonl.2"), "{\"record\":2}\n{\"record\":2}\n");
        assert!(!dir.path().join("audit.jsonl.3").exists());
        sink.deliver("x\n").unwrap();
        assert!(!dir.path().join("audit.jsonl.3").exists());
    }
}
