//! YAML edits, block and flow style (see [`super`]).

use std::ops::Range;

use granit_parser::ScalarStyle;
use regex::Regex;

use super::tree::{self, Kind, Node};
use super::{EditError, Edited, Target};

/// `text` with the target field set to `value`.
pub fn set_field(text: &str, target: &Target, value: &str) -> Result<Edited, EditError> {
    let doc = super::document(text, target)?;
    let at = tree::locate(&doc, target)?;
    let flow = matches!(at.map.kind, Kind::Map { flow: true, .. });
    let fail = |reason: &str| EditError {
        path: at.path.clone(),
        reason: reason.to_owned(),
    };
    let (range, with) = match at.entry {
        Some((key, node)) => replace(text, key, node, flow, value).map_err(|r| fail(&r))?,
        None if flow => {
            let (pos, sep) = super::flow_insert(text, at.map);
            let (head, _) = encode(value, None, None);
            (pos..pos, format!("{sep}{}: {head}", target.field))
        }
        None => insert_block(text, at.map, target.field, value).map_err(|r| fail(&r))?,
    };
    Ok(Edited {
        text: super::splice(text, range, &with),
        path: at.path,
    })
}

/// The range to replace and its new text, for a field whose value is `node`.
fn replace(
    text: &str,
    key: &Node,
    node: &Node,
    flow: bool,
    value: &str,
) -> Result<(Range<usize>, String), String> {
    let Kind::Scalar(_, style) = &node.kind else {
        return Err("is not a single value".into());
    };
    let quote = match style {
        ScalarStyle::SingleQuoted => Some('\''),
        ScalarStyle::DoubleQuoted => Some('"'),
        _ => None,
    };
    let indent = (!flow).then_some(key.col + 2);
    let (head, body) = encode(value, quote, indent);
    let multi_line = !body.is_empty() || head.starts_with('|');
    if matches!(style, ScalarStyle::Literal | ScalarStyle::Folded) {
        // The span is the body; the header (`|`, `>-`, with a comment) follows the key's `:`.
        let between = text.get(key.span.end..node.span.start).unwrap_or_default();
        let start = key.span.end
            + between
                .find(['|', '>'])
                .ok_or("the block scalar's header was not found")?;
        let header_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let comment = comment_of(&text[start..header_end]);
        let body_text = &text[node.span.clone()];
        // Up to the end of the last line with content: blank lines and the next key's
        // indentation after it belong to the file.
        let end = match body_text.rfind(|c: char| !c.is_whitespace()) {
            Some(i) => {
                let after = &body_text[i..];
                node.span.start + i + after.find('\n').map_or(after.len(), |n| n + 1)
            }
            None => (header_end + 1).min(text.len()),
        };
        return Ok((start..end, block_text(&head, comment, &body)));
    }
    if !multi_line {
        return Ok((node.span.clone(), head));
    }
    // A one-line value becomes a block scalar: its comment moves after the header.
    let line_end = text[node.span.end..]
        .find('\n')
        .map_or(text.len(), |i| node.span.end + i + 1);
    let rest = text[node.span.end..line_end].trim_end_matches('\n');
    let comment = comment_of(rest);
    Ok((node.span.start..line_end, block_text(&head, comment, &body)))
}

/// `# comment` at the end of a line (with all the white space before it), or "".
fn comment_of(line: &str) -> &str {
    let hash = line
        .char_indices()
        .find(|&(i, c)| c == '#' && line[..i].ends_with([' ', '\t']));
    match hash {
        Some((i, _)) => &line[line[..i].trim_end_matches([' ', '\t']).len()..],
        None => "",
    }
}

/// A value's text ending its line: the header (or one-line value), its comment, then the
/// block's lines.
fn block_text(head: &str, comment: &str, body: &[String]) -> String {
    let mut out = format!("{head}{comment}\n");
    for line in body {
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A missing field added as the first key of a block mapping.
fn insert_block(
    text: &str,
    map: &Node,
    field: &str,
    value: &str,
) -> Result<(Range<usize>, String), String> {
    let Kind::Map { entries, .. } = &map.kind else {
        return Err("is not a mapping".into());
    };
    let (first, _) = entries.first().ok_or("the mapping is empty")?;
    let line_start = text[..first.span.start].rfind('\n').map_or(0, |i| i + 1);
    let pad = &text[line_start..first.span.start];
    if !pad.chars().all(|c| c == ' ') {
        return Err("the mapping's first key does not start its line, so there is no place to add the field".into());
    }
    let (head, body) = encode(value, None, Some(pad.len() + 2));
    let with = format!("{pad}{field}: {}", block_text(&head, "", &body));
    Ok((line_start..line_start, with))
}

/// A scalar as YAML: plain when unambiguous, a `|` block for multi-line text when `indent` (the
/// block's indentation) is given (block style), else quoted — single quotes when the value
/// being replaced had them and the value has no line break, otherwise a double-quoted (JSON)
/// string. Returns the text on the key's line and, for a block, its indented lines.
pub fn encode(value: &str, quote: Option<char>, indent: Option<usize>) -> (String, Vec<String>) {
    if let Some(indent) = indent {
        if value.contains('\n') && !value.starts_with([' ', '\t']) && !value.contains('\r') {
            let trailing = value.len() - value.trim_end_matches('\n').len();
            let chomp = match trailing {
                0 => "|-",
                1 => "|",
                _ => "|+",
            };
            let pad = " ".repeat(indent);
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
    }
    let plain = Regex::new(r"^[A-Za-z0-9_./][A-Za-z0-9_./=@+ -]*$")
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

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "# comment at the top\napiVersion: driftless.dev/v1alpha1\nkind: ApplyPolicy\nmetadata:\n  name: a\nspec:\n  tasks:\n    - name: motd\n      file:\n        path: /etc/motd\n        content: |\n          old line\n\n        mode: \"0644\" # keep\n    - name: swap\n      sysctl:\n        name: vm.swappiness\n        value: \"10\"  # tuned\n---\nkind: Other\n";

    fn set(
        text: &str,
        doc: usize,
        task: &str,
        kind: &str,
        field: &str,
        value: &str,
    ) -> Result<String, EditError> {
        let target = Target {
            document: doc,
            task,
            kind,
            field,
        };
        set_field(text, &target, value).map(|e| e.text)
    }

    #[test]
    fn block_style_rewrites_one_value_and_keeps_everything_else() {
        let out = set(POLICY, 1, "swap", "sysctl", "value", "60").unwrap();
        assert_eq!(
            out,
            POLICY.replace("value: \"10\"  # tuned", "value: \"60\"  # tuned")
        );
        let out = set(POLICY, 1, "motd", "file", "content", "new\ntext\n").unwrap();
        assert_eq!(
            out,
            POLICY.replace("          old line\n", "          new\n          text\n")
        );
        let out = set(POLICY, 1, "motd", "file", "content", "no newline").unwrap();
        assert!(
            out.contains("        content: no newline\n\n        mode: \"0644\" # keep\n"),
            "{out}"
        );
        let out = set(POLICY, 1, "swap", "sysctl", "value", "a\nb").unwrap();
        assert!(
            out.contains("        value: |-  # tuned\n          a\n          b\n---\n"),
            "{out}"
        );
        assert!(set(POLICY, 1, "nope", "file", "content", "x").is_err());
        let e = set(POLICY, 3, "motd", "file", "content", "x").unwrap_err();
        assert_eq!(e.reason, "has no document 3");
    }

    #[test]
    fn flow_style_rewrites_the_value_in_place() {
        let text = "spec:\n  tasks:\n    - name: motd\n      file: {path: /etc/motd, content: \"hello\\n\"}  # banner\n    - {name: issue, file: {path: /etc/issue, content: 'it''s'}}\n";
        let out = set(text, 1, "motd", "file", "content", "hello\nworld\n").unwrap();
        assert_eq!(
            out,
            text.replace(r#"content: "hello\n"}"#, r#"content: "hello\nworld\n"}"#)
        );
        let out = set(text, 1, "issue", "file", "content", "it's new").unwrap();
        assert_eq!(out, text.replace("'it''s'", "'it''s new'"));
    }

    #[test]
    fn inserts_a_missing_field() {
        let text = "spec:\n  tasks:\n    - name: curl\n      package:\n        name: curl\n";
        let out = set(text, 1, "curl", "package", "version", "7.88.1-10").unwrap();
        assert_eq!(out, "spec:\n  tasks:\n    - name: curl\n      package:\n        version: \"7.88.1-10\"\n        name: curl\n");
        let text = "spec:\n  tasks:\n    - name: curl\n      package: {name: curl}\n";
        let out = set(text, 1, "curl", "package", "version", "7.88.1-10").unwrap();
        assert_eq!(
            out,
            text.replace("{name: curl}", "{name: curl, version: \"7.88.1-10\"}")
        );
        let text =
            "spec:\n  tasks:\n    - name: curl\n      package: {\n        name: curl\n      }\n";
        let out = set(text, 1, "curl", "package", "version", "1.0-1").unwrap();
        assert_eq!(
            out,
            text.replace(
                "        name: curl\n",
                "        name: curl,\n        version: \"1.0-1\"\n"
            )
        );
    }

    #[test]
    fn encodes_ambiguous_values_quoted() {
        assert_eq!(encode("10", None, Some(2)).0, "\"10\"");
        assert_eq!(encode("yes", None, Some(2)).0, "\"yes\"");
        assert_eq!(encode("a: b", None, Some(2)).0, "\"a: b\"");
        assert_eq!(encode("it's", Some('\''), Some(2)).0, "'it''s'");
        assert_eq!(
            encode("SystemMaxUse=1G", None, Some(2)).0,
            "SystemMaxUse=1G"
        );
        assert_eq!(encode("a\nb\n", None, None).0, "\"a\\nb\\n\"");
        assert_eq!(encode("a, b", None, None).0, "\"a, b\"");
    }
}
