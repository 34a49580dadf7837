//! Checkpoints: the read offset of every file, per pipeline and source, persisted only after
//! every sink acknowledged the events below it.
//!
//! Guarantees: a checkpoint file is replaced atomically (write to a temporary file, `fsync`,
//! rename over the old one, `fsync` the directory), so a crash at any moment leaves either the
//! old or the new checkpoint, never a torn one.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::LogError;

/// Which file an offset belongs to: device and inode, and a fingerprint of its first bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Host path where the file was last seen.
    pub path: String,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// How many leading bytes the fingerprint covers (less than `fingerprintBytes` while the
    /// file is shorter).
    pub fp_len: u32,
    /// SHA-256 (hex, first 16 bytes) of the first `fp_len` bytes.
    pub fp: String,
    /// Offset of the first byte not yet acknowledged by every sink.
    pub offset: u64,
    /// Size of the file when it was last looked at (0 in checkpoints written before this
    /// field existed): with `offset`, a lower bound of what is unread if the file is lost.
    #[serde(default)]
    pub size: u64,
}

/// The checkpoint of one pipeline.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version.
    pub version: u32,
    /// Files per source name.
    pub sources: BTreeMap<String, Vec<FileEntry>>,
}

/// Where a pipeline's checkpoint lives: `STATE/logs/checkpoints/<pipeline>.json`.
pub fn path_for(state_dir: &Path, pipeline: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join("checkpoints")
        .join(format!("{pipeline}.json"))
}

/// Reads a checkpoint; `None` when there is none yet. A corrupt checkpoint is an error (the
/// pipeline then starts as if new, which may re-send, never skip, data).
pub fn load(path: &Path) -> Result<Option<Checkpoint>, LogError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| LogError::Config(format!("{}: corrupt checkpoint: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::io(path, e)),
    }
}

/// Writes a checkpoint atomically and durably.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(checkpoint)
        .map_err(|e| LogError::Config(format!("encoding checkpoint: {e}")))?;
    let mut file = std::fs::File::create(&tmp).map_err(|e| LogError::io(&tmp, e))?;
    file.write_all(&bytes).map_err(|e| LogError::io(&tmp, e))?;
    file.sync_all().map_err(|e| LogError::io(&tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| LogError::io(path, e))?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Makes the rename itself durable.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_replaces_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "p");
        assert_eq!(load(&path).unwrap(), None);
        let mut cp = Checkpoint {
            version: 1,
            ..Default::default()
        };
        cp.sources.insert(
            "s".into(),
            vec![FileEntry {
                path: "/var/log/a".into(),
                dev: 1,
                ino: 2,
                fp_len: 10,
                fp: "ab".into(),
                offset: 42,
                size: 50,
            }],
        );
        save(&path, &cp).unwrap();
        assert_eq!(load(&path).unwrap(), Some(cp.clone()));
        cp.sources.get_mut("s").unwrap()[0].offset = 99;
        save(&path, &cp).unwrap();
        assert_eq!(load(&path).unwrap().unwrap().sources["s"][0].offset, 99);
        assert!(!path.with_extension("json.tmp").exists());
        std::fs::write(&path, b"{torn").unwrap();
        assert!(load(&path).is_err());
    }
}
