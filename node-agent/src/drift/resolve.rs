//! `driftless drift resolve --prefer-system`: writes the live value back into the policy file,
//! for the drift kinds where "the live value" is one field of one task: `file` inline content,
//! `lineInFile` line, `sysctl` value and `package` version. Everything else is refused.
//!
//! Guarantees: the file is edited as text — only the field's value changes; comments, key
//! order, quoting of other values and the other documents stay as they were. The edited file is
//! loaded again with the real loader before it replaces the original, and the edit is refused
//! unless the task then declares exactly the live value. Values that came from a secret or a
//! template are never written back.

use std::path::{Path, PathBuf};

use driftless_crds::apply_policy::{ApplyPolicy, TaskAction};
use driftless_crds::drift_report::DriftItem;
use driftless_crds::resource::Resource;
use regex::Regex;

use crate::apply::Root;
use crate::config::{self, Config, StandaloneSecrets};

/// What `--prefer-system` did with each item.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolution {
    /// `FILE: POLICY/TASK FIELD = VALUE` for each value written back.
    pub written: Vec<String>,
    /// `ADDRESS: why` for each item refused.
    pub refused: Vec<String>,
}

/// The field and live value to write back for one item, or why not.
fn live_value(
    policy: &ApplyPolicy,
    task_name: &str,
    item: &DriftItem,
    root: &Root,
) -> Result<(&'static str, &'static str, String), String> {
    let task = policy
        .spec
        .tasks
        .iter()
        .chain(policy.spec.handlers.iter())
        .find(|t| t.name == task_name)
        .ok_or_else(|| format!("task {task_name:?} not found"))?;
    let before = |attr: &str| {
        item.attributes
            .iter()
            .find(|a| a.path == attr)
            .and_then(|a| a.before.clone())
    };
    let only = |allowed: &[&str]| -> Result<(), String> {
        let other: Vec<&str> = item
            .attributes
            .iter()
            .map(|a| a.path.as_str())
            .filter(|p| !allowed.contains(p))
            .collect();
        if other.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} drift cannot be written back; only {} can (use --prefer-manifest)",
                other.join(", "),
                allowed.first().copied().unwrap_or_default()
            ))
        }
    };
    let no_refs = |text: &str| {
        if text.contains("${") {
            Err("the declared value uses ${...} references; refusing to write a secret or environment value into the policy".to_owned())
        } else {
            Ok(())
        }
    };
    match &task.action {
        TaskAction::File(file) => {
            let Some(content) = &file.content else {
                return Err("the content comes from a template or source file, not an inline value; edit that instead".into());
            };
            no_refs(content)?;
            only(&["content"])?;
            let path = root.resolve(&file.path).map_err(|e| e.to_string())?;
            let live = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read the live file {}: {e}", file.path))?;
            Ok(("file", "content", live))
        }
        TaskAction::LineInFile(lif) => {
            no_refs(lif.line.as_deref().unwrap_or_default())?;
            only(&["line", "content"])?;
            let live = before("line").ok_or_else(|| {
                "the live file has no line matching regexp; nothing to write back".to_owned()
            })?;
            Ok(("lineInFile", "line", live))
        }
        TaskAction::Sysctl(s) => {
            no_refs(&s.value)?;
            only(&["value", "persisted"])?;
            // The running kernel's value when it drifted, else the persisted one.
            let live = before("value")
                .or_else(|| before("persisted"))
                .ok_or("the live value is unknown")?;
            Ok(("sysctl", "value", live))
        }
        TaskAction::Package(_) => {
            only(&["version", "held"])?;
            let live = before("version").ok_or("the package is not installed on the host; nothing to write back")?;
            Ok(("package", "version", live))
        }
        other => Err(format!(
            "--prefer-system does not apply to {} tasks (only file content, lineInFile, sysctl value and package version); use --prefer-manifest or edit the policy",
            other.key()
        )),
    }
}

/// Writes the live value of every item back into its policy file.
pub fn prefer_system(
    config: &Config,
    config_dir: &Path,
    secrets: &StandaloneSecrets,
    root: &Root,
    items: &[DriftItem],
) -> Resolution {
    let mut out = Resolution::default();
    for item in items {
        let refuse = |why: String| format!("{}: {why}", item.address);
        let Some((policy_name, task_name)) = item.source.as_deref().and_then(|s| s.split_once('/'))
        else {
            out.refused.push(refuse("no source task".into()));
            continue;
        };
        let found = config.resources.iter().find_map(|l| match &l.resource {
            Resource::ApplyPolicy(p) if p.metadata.name.as_deref() == Some(policy_name) => {
                Some((p, &l.origin))
            }
            _ => None,
        });
        let Some((policy, origin)) = found else {
            out.refused
                .push(refuse(format!("policy {policy_name:?} not found")));
            continue;
        };
        let result = live_value(policy, task_name, item, root).and_then(|(kind, field, value)| {
            let file = config_dir.join(&origin.file);
            write_back(
                &file,
                origin.document,
                policy_name,
                task_name,
                kind,
                field,
                &value,
                secrets,
            )?;
            Ok(format!(
                "{}: {policy_name}/{task_name} {kind}.{field} set to the live value",
                origin.file.display()
            ))
        });
        match result {
            Ok(done) => out.written.push(done),
            Err(why) => out.refused.push(refuse(why)),
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn write_back(
    file: &Path,
    document: usize,
    policy: &str,
    task: &str,
    kind: &str,
    field: &str,
    value: &str,
    secrets: &StandaloneSecrets,
) -> Result<(), String> {
    let ext = file
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    if !matches!(ext, "yaml" | "yml") {
        return Err(format!(
            "{} is not YAML; only YAML policy files are edited",
            file.display()
        ));
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let edited = set_field(&text, document, task, kind, field, value)?;
    verify(file, &edited, policy, task, kind, field, value, secrets)?;
    let tmp = file.with_extension("yaml.driftless-tmp");
    std::fs::write(&tmp, &edited)
        .and_then(|()| {
            if let Ok(meta) = std::fs::metadata(file) {
                std::fs::set_permissions(&tmp, meta.permissions())?;
            }
            std::fs::rename(&tmp, file)
        })
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            format!("{}: {e}", file.display())
        })
}

/// Loads the edited file alone with the real loader and checks the task now says `value`.
#[allow(clippy::too_many_arguments)]
fn verify(
    file: &Path,
    edited: &str,
    policy: &str,
    task: &str,
    kind: &str,
    field: &str,
    value: &str,
    secrets: &StandaloneSecrets,
) -> Result<(), String> {
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "driftless-resolve-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    ));
    let name = file
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| "policy.yaml".into());
    let loaded = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(dir.join(&name), edited))
        .map_err(|e| e.to_string())
        .and_then(|()| {
            config::load(&dir, secrets).map_err(|e| format!("the edited file would not load: {e}"))
        });
    let _ = std::fs::remove_dir_all(&dir);
    let loaded = loaded?;
    let now = loaded.resources.iter().find_map(|l| match &l.resource {
        Resource::ApplyPolicy(p) if p.metadata.name.as_deref() == Some(policy) => p
            .spec
            .tasks
            .iter()
            .chain(p.spec.handlers.iter())
            .find(|t| t.name == task)
            .cloned(),
        _ => None,
    });
    let json = now
        .map(|t| serde_json::to_value(&t).unwrap_or_default())
        .unwrap_or_default();
    if json
        .get(kind)
        .and_then(|k| k.get(field))
        .and_then(|v| v.as_str())
        == Some(value)
    {
        Ok(())
    } else {
        Err("could not edit the policy file safely (the edit did not yield the live value); edit it by hand".into())
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

fn is_blank(line: &str) -> bool {
    line.trim().is_empty()
}

/// A scalar as YAML: plain when unambiguous, a block literal for multi-line text, else a
/// double-quoted (JSON) string. `quote` is the quoting of the value being replaced.
fn encode(value: &str, quote: Option<char>, child_indent: usize) -> (String, Vec<String>) {
    if value.contains('\n') && !value.starts_with([' ', '\t']) && !value.contains('\r') {
        let trailing = value.len() - value.trim_end_matches('\n').len();
        let chomp = match trailing {
            0 => "|-",
            1 => "|",
            _ => "|+",
        };
        let pad = " ".repeat(child_indent);
        let body = value.strip_suffix('\n').unwrap_or(value);
        let lines = body
            .split('\n')
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{pad}{l}")
                }
            })
            .collect();
        return (chomp.into(), lines);
    }
    let plain = Regex::new(r"^[A-Za-z0-9_./=@+-][A-Za-z0-9_./=@+ -]*$")
        .map(|re| re.is_match(value))
        .unwrap_or(false)
        && !value.ends_with(' ')
        && value.chars().any(|c| c.is_ascii_alphabetic())
        && !matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        )
        && value.parse::<f64>().is_err();
    if plain && quote.is_none() {
        return (value.to_owned(), Vec::new());
    }
    if quote == Some('\'') && !value.contains('\n') {
        return (format!("'{}'", value.replace('\'', "''")), Vec::new());
    }
    (serde_json::to_string(value).unwrap_or_default(), Vec::new())
}

/// Sets `TASK.KIND.FIELD` to `value` in document `document` (1-based) of a YAML text, editing
/// only that value. The task must be a list item written `- name: TASK`.
pub fn set_field(
    text: &str,
    document: usize,
    task: &str,
    kind: &str,
    field: &str,
    value: &str,
) -> Result<String, String> {
    let lines: Vec<&str> = text.split('\n').collect();
    // Documents: segments between `---` lines that hold something other than comments.
    let mut starts = vec![0];
    for (i, l) in lines.iter().enumerate() {
        if *l == "---" || l.starts_with("--- ") {
            starts.push(i + 1);
        }
    }
    starts.push(lines.len() + 1);
    let mut n = 0;
    let mut range = None;
    for w in starts.windows(2) {
        let (a, b) = (w[0], w[1].saturating_sub(1).min(lines.len()));
        let has_content = lines[a..b]
            .iter()
            .any(|l| !is_blank(l) && !l.trim_start().starts_with('#'));
        if has_content {
            n += 1;
            if n == document {
                range = Some((a, b));
                break;
            }
        }
    }
    let (a, b) = range.ok_or_else(|| format!("document {document} not found"))?;
    let escaped = regex::escape(task);
    let item_re = Regex::new(&format!(
        r#"^(\s*)-\s+name:\s*(?:{escaped}|"{escaped}"|'{escaped}')\s*(?:#.*)?$"#
    ))
    .map_err(|e| e.to_string())?;
    let (item, dash) = (a..b)
        .find_map(|i| {
            item_re
                .captures(lines[i])
                .map(|c| (i, c.get(1).map_or(0, |m| m.len())))
        })
        .ok_or_else(|| format!("could not find \"- name: {task}\" in the policy file"))?;
    let item_end = (item + 1..b)
        .find(|&i| !is_blank(lines[i]) && indent(lines[i]) <= dash)
        .unwrap_or(b);
    let kind_re = Regex::new(&format!(r"^(\s*){}:\s*(?:#.*)?$", regex::escape(kind)))
        .map_err(|e| e.to_string())?;
    let kind_line = (item + 1..item_end)
        .find(|&i| kind_re.is_match(lines[i]))
        .ok_or_else(|| format!("could not find \"{kind}:\" in task {task}"))?;
    let kind_indent = indent(lines[kind_line]);
    let block_end = (kind_line + 1..item_end)
        .find(|&i| !is_blank(lines[i]) && indent(lines[i]) <= kind_indent)
        .unwrap_or(item_end);
    let child = (kind_line + 1..block_end)
        .find(|&i| !is_blank(lines[i]) && !lines[i].trim_start().starts_with('#'))
        .map_or(kind_indent + 2, |i| indent(lines[i]));
    let field_re =
        Regex::new(&format!(r"^( *){}:(.*)$", regex::escape(field))).map_err(|e| e.to_string())?;
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    let found = (kind_line + 1..block_end).find(|&i| {
        field_re
            .captures(lines[i])
            .is_some_and(|c| c.get(1).map_or(0, |m| m.len()) == child)
    });
    match found {
        None => {
            let (head, body) = encode(value, None, child + 2);
            let mut new = vec![format!("{}{field}: {head}", " ".repeat(child))];
            new.extend(body);
            out.splice(kind_line + 1..kind_line + 1, new);
        }
        Some(i) => {
            let rest = field_re
                .captures(lines[i])
                .and_then(|c| c.get(2))
                .map_or("", |m| m.as_str())
                .trim();
            let (end, quote, comment) = if rest.starts_with('|') || rest.starts_with('>') {
                let end = (i + 1..block_end)
                    .find(|&j| !is_blank(lines[j]) && indent(lines[j]) <= child)
                    .unwrap_or(block_end);
                // Blank lines before the next key belong to the file, not the scalar.
                let mut end = end;
                while end > i + 1 && is_blank(lines[end - 1]) {
                    end -= 1;
                }
                (end, None, String::new())
            } else {
                let scalar = Regex::new(r#"^("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^#]*?)(\s+#.*)?$"#)
                    .map_err(|e| e.to_string())?;
                let caps = scalar
                    .captures(rest)
                    .ok_or("the current value spans several lines; edit it by hand")?;
                let v = caps.get(1).map_or("", |m| m.as_str());
                if (v.starts_with('"') && !v.ends_with('"'))
                    || (v.starts_with('\'') && !v.ends_with('\''))
                    || v.len() == 1 && (v == "\"" || v == "'")
                {
                    return Err("the current value spans several lines; edit it by hand".into());
                }
                let quote = v.chars().next().filter(|c| *c == '"' || *c == '\'');
                (
                    i + 1,
                    quote,
                    caps.get(2).map_or(String::new(), |m| m.as_str().to_owned()),
                )
            };
            let (head, body) = encode(value, quote, child + 2);
            let mut new = vec![format!("{}{field}: {head}{comment}", " ".repeat(child))];
            new.extend(body);
            out.splice(i..end, new);
        }
    }
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "# comment at the top\napiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: a\nspec:\n  tasks:\n    - name: motd\n      file:\n        path: /etc/motd\n        content: |\n          old line\n\n        mode: \"0644\" # keep\n    - name: swap\n      sysctl:\n        name: vm.swappiness\n        value: \"10\"  # tuned\n---\nkind: Other\n";

    #[test]
    fn rewrites_one_value_and_keeps_everything_else() {
        let out = set_field(POLICY, 1, "swap", "sysctl", "value", "60").unwrap();
        assert_eq!(
            out,
            POLICY.replace("value: \"10\"  # tuned", "value: \"60\"  # tuned")
        );
        let out = set_field(POLICY, 1, "motd", "file", "content", "new\ntext\n").unwrap();
        assert_eq!(
            out,
            POLICY.replace("          old line\n", "          new\n          text\n")
        );
        let out = set_field(POLICY, 1, "motd", "file", "content", "no newline").unwrap();
        assert!(
            out.contains("        content: no newline\n\n        mode: \"0644\" # keep\n"),
            "{out}"
        );
        assert!(set_field(POLICY, 1, "nope", "file", "content", "x").is_err());
        assert!(set_field(POLICY, 3, "motd", "file", "content", "x").is_err());
    }

    #[test]
    fn inserts_a_missing_field() {
        let text = "spec:\n  tasks:\n    - name: curl\n      package:\n        name: curl\n";
        let out = set_field(text, 1, "curl", "package", "version", "7.88.1-10").unwrap();
        assert_eq!(out, "spec:\n  tasks:\n    - name: curl\n      package:\n        version: \"7.88.1-10\"\n        name: curl\n");
    }

    #[test]
    fn encodes_ambiguous_values_quoted() {
        assert_eq!(encode("10", None, 2).0, "\"10\"");
        assert_eq!(encode("yes", None, 2).0, "\"yes\"");
        assert_eq!(encode("a: b", None, 2).0, "\"a: b\"");
        assert_eq!(encode("it's", Some('\''), 2).0, "'it''s'");
        assert_eq!(encode("SystemMaxUse=1G", None, 2).0, "SystemMaxUse=1G");
    }
}
