//! YAML and JSON (a subset of YAML 1.2) parsed into nodes that know where they are in the text,
//! and the way to one task's field in an ApplyPolicy document.

use std::ops::Range;

use granit_parser::{Event, Options, Parser, ScalarStyle, Span, StructureStyle};

use super::{EditError, Target};

/// One node and its place in the text.
#[derive(Clone, Debug)]
pub struct Node {
    /// What it is.
    pub kind: Kind,
    /// Byte range: the scalar's text (for block scalars, the body after the header line); for
    /// a flow collection its opening bracket; empty at the start of a block collection.
    pub span: Range<usize>,
    /// Column (in characters) where the node starts.
    pub col: usize,
    /// Line (from 1) where the node starts.
    pub line: usize,
    /// It defines an anchor, so aliases elsewhere may share it.
    pub anchored: bool,
}

/// Kinds of nodes.
#[derive(Clone, Debug)]
pub enum Kind {
    /// A scalar, its value after escapes and its style.
    Scalar(String, ScalarStyle),
    /// A mapping: flow or block, its entries, and the span of its closing `}` (flow).
    Map {
        /// Written `{...}`.
        flow: bool,
        /// Keys and values in order.
        entries: Vec<(Node, Node)>,
        /// The closing bracket (flow); empty for block mappings.
        close: Range<usize>,
    },
    /// A sequence: its items, and the span of its closing `]` (flow).
    Seq {
        /// Items in order.
        items: Vec<Node>,
        /// The closing bracket (flow); empty for block sequences.
        close: Range<usize>,
    },
    /// An alias (`*name`) of another node.
    Alias,
}

impl Node {
    /// The value of key `key`, when this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key and value of key `key`, when this is a mapping that has it.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.kind {
            Kind::Map { entries, .. } => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, Kind::Scalar(s, _) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// Where the node's text ends (for a flow collection, after its closing bracket).
    pub fn end(&self) -> usize {
        match &self.kind {
            Kind::Map { close, .. } | Kind::Seq { close, .. } if !close.is_empty() => close.end,
            _ => self.span.end,
        }
    }

    /// What the node is, for messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar(..) => "a single value",
            Kind::Map { .. } => "a mapping",
            Kind::Seq { .. } => "a list",
            Kind::Alias => "an alias (*NAME) of another node",
        }
    }
}

/// Where an edit goes: the task type's mapping, the field's value when it is there, and the
/// field's path for messages.
#[derive(Debug)]
pub struct Located<'a> {
    /// The task type's mapping (`file: {...}`).
    pub map: &'a Node,
    /// The field's key and current value, when it is there.
    pub entry: Option<(&'a Node, &'a Node)>,
    /// `spec.tasks[3].file.content`.
    pub path: String,
}

fn byte_range(span: &Span) -> Result<Range<usize>, String> {
    span.byte_range()
        .ok_or_else(|| "the parser gave no byte offsets".to_owned())
}

/// The documents of a text that hold something (the loader skips empty and `null` documents
/// too, so document N here is the loader's document N).
pub fn documents(text: &str) -> Result<Vec<Node>, String> {
    let mut options = Options::default();
    options.emit_comments = false;
    let mut events = Parser::new_from_str_with_options(text, options);
    let mut docs = Vec::new();
    while let Some(next) = events.next() {
        let (event, span) = next.map_err(|e| e.to_string())?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::DocumentStart(..) => {}
            other => {
                let node = build(other, &span, &mut events)?;
                let null = matches!(&node.kind, Kind::Scalar(s, ScalarStyle::Plain)
                    if matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"));
                if !null {
                    docs.push(node);
                }
            }
        }
    }
    Ok(docs)
}

type Events<'a> = Parser<'a, granit_parser::StrInput<'a>>;

/// The node that starts with `event`, reading the events of its children.
fn build(event: Event, span: &Span, events: &mut Events) -> Result<Node, String> {
    let range = byte_range(span)?;
    let (col, line) = (span.start.col(), span.start.line());
    let node = |kind, anchored| Node {
        kind,
        span: range.clone(),
        col,
        line,
        anchored,
    };
    match event {
        Event::Scalar(value, style, anchor, _) => {
            Ok(node(Kind::Scalar(value.into_owned(), style), anchor != 0))
        }
        Event::Alias(_) => Ok(node(Kind::Alias, false)),
        Event::SequenceStart(style, anchor, _) => {
            let mut items = Vec::new();
            let close = loop {
                let (event, span) = next(events)?;
                if matches!(event, Event::SequenceEnd) {
                    break byte_range(&span)?;
                }
                items.push(build(event, &span, events)?);
            };
            let close = if style == StructureStyle::Flow {
                close
            } else {
                close.start..close.start
            };
            Ok(node(Kind::Seq { items, close }, anchor != 0))
        }
        Event::MappingStart(style, anchor, _) => {
            let mut entries = Vec::new();
            let close = loop {
                let (event, span) = next(events)?;
                if matches!(event, Event::MappingEnd) {
                    break byte_range(&span)?;
                }
                let key = build(event, &span, events)?;
                let (event, span) = next(events)?;
                entries.push((key, build(event, &span, events)?));
            };
            let flow = style == StructureStyle::Flow;
            let close = if flow {
                close
            } else {
                close.start..close.start
            };
            Ok(node(
                Kind::Map {
                    flow,
                    entries,
                    close,
                },
                anchor != 0,
            ))
        }
        other => Err(format!("unexpected {other:?}")),
    }
}

fn next<'a>(events: &mut Events<'a>) -> Result<(Event<'a>, Span), String> {
    match events.next() {
        Some(Ok(next)) => Ok(next),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("the text ends inside a collection".into()),
    }
}

/// Finds `spec.tasks[i].KIND.FIELD` (or `spec.handlers[i]...`) of the task named in `target`.
pub fn locate<'a>(doc: &'a Node, target: &Target) -> Result<Located<'a>, EditError> {
    let fail = |path: &str, reason: String| EditError {
        path: path.to_owned(),
        reason,
    };
    let spec = doc
        .get("spec")
        .ok_or_else(|| fail("spec", "not found".into()))?;
    let mut found = None;
    for list in ["tasks", "handlers"] {
        let Some(node) = spec.get(list) else { continue };
        let Kind::Seq { items, .. } = &node.kind else {
            return Err(fail(
                &format!("spec.{list}"),
                format!(
                    "is {}, not a list written out in this file",
                    node.describe()
                ),
            ));
        };
        let at = items.iter().position(|item| {
            matches!(item.get("name").map(|n| &n.kind), Some(Kind::Scalar(s, _)) if s == target.task)
        });
        if let Some(i) = at {
            found = Some((format!("spec.{list}[{i}]"), &items[i]));
            break;
        }
    }
    let (task_path, task) = found.ok_or_else(|| {
        fail(
            "spec.tasks",
            format!(
                "no task named {:?} is written out in this document",
                target.task
            ),
        )
    })?;
    let kind_path = format!("{task_path}.{}", target.kind);
    let map = task
        .get(target.kind)
        .ok_or_else(|| fail(&kind_path, "not found".into()))?;
    if !matches!(map.kind, Kind::Map { .. }) {
        return Err(fail(
            &kind_path,
            format!("is {}, not a mapping written out here", map.describe()),
        ));
    }
    if map.anchored || task.anchored {
        return Err(fail(
            &kind_path,
            "defines an anchor (&NAME) that aliases elsewhere may share, so editing it here could change them too".into(),
        ));
    }
    let path = format!("{kind_path}.{}", target.field);
    let entry = map.entry(target.field);
    if let Some((_, v)) = entry {
        if !matches!(v.kind, Kind::Scalar(..)) {
            return Err(fail(
                &path,
                format!("is {}, not a value written out here", v.describe()),
            ));
        }
        if v.anchored {
            return Err(fail(
                &path,
                "defines an anchor (&NAME) that aliases elsewhere may share".into(),
            ));
        }
    }
    Ok(Located { map, entry, path })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target<'a>(task: &'a str) -> Target<'a> {
        Target {
            document: 1,
            task,
            kind: "file",
            field: "content",
        }
    }

    #[test]
    fn finds_fields_in_block_and_flow_style() {
        let text = "# c\n---\n---\nspec:\n  tasks:\n    - name: a\n      file:\n        content: x\n    - {name: b, file: {path: /p, content: \"y\"}}\n  handlers:\n    - name: h\n      file: {path: /h}\n";
        let docs = documents(text).unwrap();
        assert_eq!(docs.len(), 1, "empty documents are skipped");
        let a = locate(&docs[0], &target("a")).unwrap();
        assert_eq!(a.path, "spec.tasks[0].file.content");
        assert_eq!(&text[a.entry.unwrap().1.span.clone()], "x");
        let b = locate(&docs[0], &target("b")).unwrap();
        assert_eq!(&text[b.entry.unwrap().1.span.clone()], "\"y\"");
        assert!(matches!(b.map.kind, Kind::Map { flow: true, .. }));
        let h = locate(&docs[0], &target("h")).unwrap();
        assert_eq!(h.path, "spec.handlers[0].file.content");
        assert!(h.entry.is_none());
    }

    #[test]
    fn says_why_a_field_cannot_be_reached() {
        let text = "spec:\n  tasks:\n    - name: a\n      file: &f {content: x}\n    - name: b\n      file:\n        path: &c /x\n        content: *c\n";
        let docs = documents(text).unwrap();
        let e = locate(&docs[0], &target("a")).unwrap_err();
        assert_eq!(e.path, "spec.tasks[0].file");
        assert!(e.reason.contains("anchor"), "{e:?}");
        let e = locate(&docs[0], &target("b")).unwrap_err();
        assert_eq!(e.path, "spec.tasks[1].file.content");
        assert!(e.reason.contains("alias"), "{e:?}");
        let e = locate(&docs[0], &target("zz")).unwrap_err();
        assert_eq!(e.path, "spec.tasks");
    }

    #[test]
    fn parses_json() {
        let text =
            r#"{"spec": {"tasks": [{"name": "a", "file": {"path": "/p", "content": "hi\n"}}]}}"#;
        let docs = documents(text).unwrap();
        let a = locate(&docs[0], &target("a")).unwrap();
        assert_eq!(&text[a.entry.unwrap().1.span.clone()], r#""hi\n""#);
        let tasks = docs[0].get("spec").unwrap().get("tasks").unwrap();
        assert_eq!(tasks.end(), text.rfind(']').unwrap() + 1);
    }
}
