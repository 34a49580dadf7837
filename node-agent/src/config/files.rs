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

/// Deepest nesting of YAML mappings and sequences (block or flow) accepted; about serde_json's
/// own limit for JSON files (127), far beyond any real configuration.
pub const MAX_YAML_DEPTH: usize = 128;

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

/// The documents of a YAML stream, as JSON values; empty documents are skipped. Nesting deeper
/// than [`MAX_YAML_DEPTH`] is refused as the parser meets it, so a rejected input costs time
/// linear in its size. Scalars resolve as YAML 1.2's core schema (`yes`, `0755`, `1_000` stay
/// strings); duplicate keys and unknown tags are errors.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            flow_nesting_limit: MAX_YAML_DEPTH,
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        with_snippet: false,
        // Comments are checked as syntax but not kept: nothing reads them.
        emit_comments: false,
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|err| {
        let too_deep = matches!(
            &err,
            serde_saphyr::Error::Budget {
                breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
                ..
            }
        ) || err.to_string().starts_with("recursion limit exceeded");
        match err.location().filter(|_| too_deep) {
            Some(at) => format!(
                "invalid YAML: nesting deeper than {MAX_YAML_DEPTH} levels at line {}, column {}",
                at.line(),
                at.column()
            ),
            None => format!("invalid YAML: {err}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_as_yaml_1_2_core_schema() {
        let docs = parse_yaml("[yes, on, 'on', 0755, 1_000, 0x1F, 0o17, ~, 1e3, true, 2001-12-14]")
            .unwrap();
        assert_eq!(
            docs,
            [serde_json::json!([
                "yes",
                "on",
                "on",
                "0755",
                "1_000",
                31,
                15,
                null,
                1000.0,
                true,
                "2001-12-14"
            ])]
        );
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = parse_yaml("a: 1\n---\n---\nb: 2\n...\n").unwrap();
        assert_eq!(
            docs,
            [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
        );
    }

    #[test]
    fn duplicate_keys_unknown_tags_and_infinities_are_refused() {
        for (text, expected) in [
            ("a: 1\na: 2\n", "duplicate mapping key: a"),
            ("a: !custom 3\n", "invalid YAML: "),
            ("a: .inf\n", "non-finite float"),
        ] {
            let err = parse_yaml(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn nesting_is_capped_at_the_limit_exactly() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_yaml(&at(MAX_YAML_DEPTH)).is_ok());
        assert_eq!(
            parse_yaml(&at(MAX_YAML_DEPTH + 1)).unwrap_err(),
            "invalid YAML: nesting deeper than 128 levels at line 1, column 129"
        );
        let block =
            |n: usize| -> String { (0..n).map(|i| format!("{}a:\n", " ".repeat(i))).collect() };
        assert!(parse_yaml(&block(MAX_YAML_DEPTH)).is_ok());
        assert_eq!(
            parse_yaml(&block(MAX_YAML_DEPTH + 1)).unwrap_err(),
            "invalid YAML: nesting deeper than 128 levels at line 129, column 129"
        );
    }
}
