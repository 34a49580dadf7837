//! Finding configuration files and splitting them into documents.

use std::io::Read;
use std::path::{Path, PathBuf};

use driftless_crds::validate::Problem;
use serde_json::Value;

/// File extensions read as configuration.
const EXTENSIONS: &[&str] = &["yaml", "yml", "json", "toml"];

/// Largest configuration file read, in bytes. A larger file is refused after reading one byte
/// past the limit, so its cost is bounded whatever it holds (a ConfigMap holds at most 1 MiB).
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

pub use driftless_crds::yaml::{parse_yaml, MAX_YAML_DEPTH};

/// Every configuration file below `dir`, recursively, sorted by path. Hidden files and
/// directories (`.git`) are skipped.
pub fn discover(dir: &Path) -> Result<Vec<PathBuf>, Problem> {
    let metadata = std::fs::metadata(dir).map_err(|err| {
        Problem::new(
            "",
            format!(
                "cannot read configuration directory {}: {err}",
                dir.display()
            ),
        )
    })?;
    if !metadata.is_dir() {
        return Err(Problem::new(
            "",
            format!("{} is not a directory", dir.display()),
        ));
    }
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current)
            .map_err(|err| Problem::new("", format!("cannot read {}: {err}", current.display())))?;
        for entry in entries {
            let entry = entry.map_err(|err| {
                Problem::new("", format!("cannot read {}: {err}", current.display()))
            })?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            // Follows symlinks, as Kubernetes ConfigMap volumes are made of them.
            if path.is_dir() {
                pending.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// The documents of one file, as JSON values. Empty YAML documents are skipped.
pub fn read_documents(path: &Path) -> Result<Vec<Value>, Problem> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(|err| Problem::new("", format!("cannot read file: {err}")))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(Problem::new(
            "",
            format!("file is larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match extension {
        "json" => serde_json::from_str(&text)
            .map(|v| vec![v])
            .map_err(|err| Problem::new("", format!("invalid JSON: {err}"))),
        "toml" => toml::from_str::<Value>(&text)
            .map(|v| vec![v])
            .map_err(|err| Problem::new("", format!("invalid TOML: {}", err.to_string().trim()))),
        _ => parse_yaml(&text).map_err(|message| Problem::new("", message)),
    }
}
