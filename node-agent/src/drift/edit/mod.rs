//! Edits one string field of one task in a policy file — `spec.tasks[i].KIND.FIELD` or
//! `spec.handlers[i].KIND.FIELD` of the task with that name — and leaves every other byte of the
//! file as it was, in each configuration format:
//!
//! - YAML ([`yaml`]): block and flow style. The value's text is replaced in place (its comment
//!   kept); a missing field is added as the mapping's first key (block) or last entry (flow).
//!   Multi-line values become `|` literal blocks in block style and double-quoted strings in
//!   flow style; a value that was single-quoted stays single-quoted when it can.
//! - JSON ([`json`]): the value's text is replaced in place with a JSON string; a missing field
//!   is added as the object's last member, on its own line when the object spans lines.
//! - TOML ([`toml`]): with `toml_edit`, which keeps comments, key order, tables and
//!   whitespace; the new string keeps the old one's surrounding whitespace and comment.
//!
//! Refused, with the field path and the reason: a task, task type or field that is not written
//! out in this document (an alias, or not found), a value or mapping that defines an anchor
//! (aliases elsewhere would change too), and a field that is a mapping or a list.

pub mod json;
pub mod toml;
pub mod tree;
pub mod yaml;

use std::path::Path;

/// Which field to edit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// Document number in the file, counting from 1, as the loader counts them.
    pub document: usize,
    /// The task's (or handler's) name.
    pub task: &'a str,
    /// Task type (`file`, `sysctl`).
    pub kind: &'a str,
    /// Field of the task type (`content`, `value`).
    pub field: &'a str,
}

/// An edited text and the path of the field it set (`spec.tasks[2].file.content`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edited {
    /// The whole file's new text.
    pub text: String,
    /// The field's path in the document.
    pub path: String,
}

/// Why a field could not be edited.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EditError {
    /// Field path in the document (`spec.tasks[2].file.content`), or the part of it that was
    /// reached.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for EditError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Configuration file formats, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.yaml`, `.yml`.
    Yaml,
    /// `.json`.
    Json,
    /// `.toml`.
    Toml,
}

impl Format {
    /// The format of a configuration file, by its extension as the loader reads it.
    pub fn of(path: &Path) -> Option<Self> {
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => Some(Format::Yaml),
            Some("json") => Some(Format::Json),
            Some("toml") => Some(Format::Toml),
            _ => None,
        }
    }
}

/// `text` with the target field set to `value` (see the module's guarantees).
pub fn set_field(
    format: Format,
    text: &str,
    target: &Target,
    value: &str,
) -> Result<Edited, EditError> {
    match format {
        Format::Yaml => yaml::set_field(text, target, value),
        Format::Json => json::set_field(text, target, value),
        Format::Toml => toml::set_field(text, target, value),
    }
}

/// The document `target.document` of a YAML or JSON text.
fn document(text: &str, target: &Target) -> Result<tree::Node, EditError> {
    let mut docs = tree::documents(text).map_err(|e| EditError {
        path: String::new(),
        reason: format!("cannot be parsed for editing: {e}"),
    })?;
    if target.document == 0 || target.document > docs.len() {
        return Err(EditError {
            path: String::new(),
            reason: format!("has no document {}", target.document),
        });
    }
    Ok(docs.swap_remove(target.document - 1))
}

/// `text` with `range` replaced.
fn splice(text: &str, range: std::ops::Range<usize>, with: &str) -> String {
    let mut out = String::with_capacity(text.len() + with.len());
    out.push_str(&text[..range.start]);
    out.push_str(with);
    out.push_str(&text[range.end..]);
    out
}

/// Where to add a member to a flow mapping (YAML `{...}` or a JSON object) and what to put
/// before it: after the last entry (`, ` or, when the mapping spans lines, `,` + line break +
/// the last key's indentation), or right after `{` when it is empty.
fn flow_insert(text: &str, map: &tree::Node) -> (usize, String) {
    let tree::Kind::Map { entries, .. } = &map.kind else {
        return (map.span.end, String::new());
    };
    match entries.last() {
        None => (map.span.end, String::new()),
        Some((key, value)) => {
            let sep = if key.line != map.line {
                let line_start = text[..key.span.start].rfind('\n').map_or(0, |i| i + 1);
                let indent: String = text[line_start..]
                    .chars()
                    .take_while(|c| *c == ' ' || *c == '\t')
                    .collect();
                format!(",\n{indent}")
            } else {
                ", ".to_owned()
            };
            (value.end(), sep)
        }
    }
}
