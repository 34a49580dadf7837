//! Durability of an apply's writes, batched: files are replaced atomically (temporary file,
//! then rename) as tasks run, and flushed to disk once per filesystem when the policy ends,
//! instead of one `fsync` per file.
//!
//! Guarantees: a policy's report is produced only after every file it wrote was flushed
//! (`syncfs` on each filesystem written to) — or, when flushing fails, its changed tasks are
//! reported failed. Readers never see a half-written file, whatever happens.
//!
//! Caveat: a power loss *before* the flush may leave files written by the unfinished policy at
//! their old content or, on filesystems that do not order data before a rename (ext4 does by
//! default, `auto_da_alloc`; XFS and btrfs may not), empty. The next run rewrites them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The directories written to since the last flush. Cloning shares the set.
#[derive(Clone, Debug, Default)]
pub struct PendingSync {
    dirs: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl PendingSync {
    /// Records that a file in `dir` was written and is not flushed yet.
    pub fn note(&self, dir: &Path) {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if !dirs.contains(dir) {
            dirs.insert(dir.to_path_buf());
        }
    }

    /// Whether nothing waits to be flushed.
    pub fn is_empty(&self) -> bool {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Flushes every filesystem written to (one `syncfs` per filesystem) and forgets the
    /// directories. A directory removed since it was written is skipped: nothing of it is
    /// left to flush.
    pub fn flush(&self) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let dirs = std::mem::take(&mut *self.dirs.lock().unwrap_or_else(|e| e.into_inner()));
        let mut synced = BTreeSet::new();
        for dir in dirs {
            let Ok(handle) = std::fs::File::open(&dir) else {
                continue;
            };
            let device = handle
                .metadata()
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .dev();
            if synced.insert(device) {
                rustix::fs::syncfs(&handle)
                    .map_err(|e| format!("flushing {} to disk: {e}", dir.display()))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_forgets_what_it_flushed_and_skips_removed_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let pending = PendingSync::default();
        assert!(pending.is_empty());
        pending.note(tmp.path());
        pending.note(&tmp.path().join("gone"));
        pending.clone().note(tmp.path());
        assert!(!pending.is_empty());
        pending.flush().unwrap();
        assert!(pending.is_empty());
    }
}
