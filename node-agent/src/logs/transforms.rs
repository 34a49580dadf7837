//! Transforms: include/exclude by field regex, add/drop/rename fields, redact, WebAssembly
//! plugins, in order.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use driftless_crds::log_pipeline::{Transform, TransformKind};
use regex::Regex;
use serde_json::Value;

use super::{Event, Fields, LogError};
use crate::plugins::{Instance, Kind, Plugin, DEFAULT_EVENT_FUEL};

/// A plugin step: its instance and how many events it failed on.
#[derive(Debug)]
struct PluginStep {
    instance: Mutex<Instance>,
    failures: AtomicU64,
}

/// One compiled step.
#[derive(Clone, Debug)]
enum Step {
    Include(String, Regex),
    Exclude(String, Regex),
    Add(Vec<(String, String)>),
    Drop(Vec<String>),
    Rename(Vec<(String, String)>),
    Redact {
        fields: Vec<String>,
        patterns: Vec<Regex>,
        replacement: String,
    },
    Plugin(Arc<PluginStep>),
}

/// The compiled transforms of a pipeline.
#[derive(Clone, Debug, Default)]
pub struct Transforms {
    steps: Vec<Step>,
}

fn compile(pattern: &str, at: usize) -> Result<Regex, LogError> {
    Regex::new(pattern)
        .map_err(|e| LogError::Config(format!("transforms[{at}]: pattern {pattern:?}: {e}")))
}

impl Transforms {
    /// Whether there is no step.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Compiles the steps; a bad regular expression or an unusable plugin is an error naming
    /// the step. Plugin grants are below `root`.
    pub fn new(transforms: &[Transform], root: &Path) -> Result<Self, LogError> {
        let mut steps = Vec::new();
        for (i, t) in transforms.iter().enumerate() {
            steps.push(match &t.kind {
                TransformKind::Include(m) => {
                    Step::Include(m.field.clone(), compile(&m.pattern, i)?)
                }
                TransformKind::Exclude(m) => {
                    Step::Exclude(m.field.clone(), compile(&m.pattern, i)?)
                }
                TransformKind::AddFields(map) => {
                    Step::Add(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                TransformKind::DropFields(list) => Step::Drop(list.clone()),
                TransformKind::RenameFields(map) => {
                    Step::Rename(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                TransformKind::Redact(r) => Step::Redact {
                    fields: if r.fields.is_empty() {
                        vec!["message".into()]
                    } else {
                        r.fields.clone()
                    },
                    patterns: r
                        .patterns
                        .iter()
                        .map(|p| compile(p, i))
                        .collect::<Result<_, _>>()?,
                    replacement: r.replacement.clone(),
                },
                TransformKind::Plugin(use_) => {
                    let instance = Plugin::for_use(use_)
                        .and_then(|p| Instance::new(p, use_, Kind::Log, root, DEFAULT_EVENT_FUEL))
                        .map_err(|e| LogError::Config(format!("transforms[{i}].plugin: {e}")))?;
                    Step::Plugin(Arc::new(PluginStep {
                        instance: Mutex::new(instance),
                        failures: AtomicU64::new(0),
                    }))
                }
            });
        }
        Ok(Self { steps })
    }

    /// Applies every step to the event; `false` when the event is filtered out. A plugin step
    /// that returns several events keeps the first here; [`Transforms::run`] keeps them all.
    #[cfg(test)]
    pub fn apply(&self, event: &mut Event) -> bool {
        let mut out = Vec::new();
        self.run_from(0, std::mem::take(event), &mut out);
        match out.into_iter().next() {
            Some(first) => {
                *event = first;
                true
            }
            None => false,
        }
    }

    /// Runs the steps over one event, pushing what comes out (none when it is filtered out,
    /// several when a plugin splits it).
    pub fn run(&self, event: Event, out: &mut Vec<Event>) {
        self.run_from(0, event, out);
    }

    fn run_from(&self, first: usize, mut event: Event, out: &mut Vec<Event>) {
        for (i, step) in self.steps.iter().enumerate().skip(first) {
            match step {
                Step::Include(field, re) => {
                    if !field_matches(&event, field, re) {
                        return;
                    }
                }
                Step::Exclude(field, re) => {
                    if field_matches(&event, field, re) {
                        return;
                    }
                }
                Step::Add(pairs) => {
                    for (k, v) in pairs {
                        event.fields.insert(k.clone(), Value::String(v.clone()));
                    }
                }
                Step::Drop(names) => {
                    for name in names {
                        event.fields.remove(name);
                    }
                }
                Step::Rename(pairs) => {
                    for (from, to) in pairs {
                        if let Some(value) = event.fields.remove(from) {
                            event.fields.insert(to.clone(), value);
                        }
                    }
                }
                Step::Redact {
                    fields,
                    patterns,
                    replacement,
                } => {
                    for field in fields {
                        let Some(Value::String(text)) = event.fields.get_mut(field) else {
                            continue;
                        };
                        for re in patterns {
                            if let std::borrow::Cow::Owned(new) =
                                re.replace_all(text, replacement.as_str())
                            {
                                *text = new;
                            }
                        }
                    }
                    // The raw line (what `raw: true` file sinks write) is always redacted too.
                    for re in patterns {
                        if let std::borrow::Cow::Owned(new) =
                            re.replace_all(&event.raw, replacement.as_str())
                        {
                            event.raw = new;
                        }
                    }
                }
                Step::Plugin(step) => {
                    match call_plugin(step, &event) {
                        Ok(events) => {
                            for e in events {
                                self.run_from(i + 1, e, out);
                            }
                            return;
                        }
                        Err(why) => {
                            // Never lose the line: it goes on unchanged, marked.
                            let n = step.failures.fetch_add(1, Ordering::Relaxed) + 1;
                            if n.is_power_of_two() {
                                tracing::warn!(failures = n, error = %why, "log plugin failed on an event; the event is kept unchanged");
                            }
                            event
                                .fields
                                .insert("plugin_error".into(), Value::String(why));
                        }
                    }
                }
            }
        }
        out.push(event);
    }
}

/// Runs a plugin on one event; its events, or why not.
fn call_plugin(step: &PluginStep, event: &Event) -> Result<Vec<Event>, String> {
    // Serialized straight from the event: no copy of its fields.
    #[derive(serde::Serialize)]
    struct Input<'a> {
        source: &'a str,
        raw: &'a str,
        fields: &'a Fields,
    }
    let input = serde_json::to_vec(&Input {
        source: &event.source,
        raw: &event.raw,
        fields: &event.fields,
    })
    .map_err(|e| e.to_string())?;
    let mut instance = step
        .instance
        .lock()
        .map_err(|_| "plugin instance poisoned".to_string())?;
    let out = instance
        .call_json("driftless_log", &input, false)
        .map_err(|e| e.to_string())?;
    let Some(list) = out.get("events").and_then(Value::as_array) else {
        return Err("driftless_log: expected {\"events\": [...]}".into());
    };
    let mut events = Vec::with_capacity(list.len());
    for item in list {
        let raw = match item.get("raw") {
            None => event.raw.clone(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("driftless_log: an event's raw is not a string".into()),
        };
        let fields: Fields = match item.get("fields") {
            // A new line without fields: the fields stay, and a `message` that was the line
            // becomes the new line.
            None => {
                let mut fields = event.fields.clone();
                if let Some(Value::String(message)) = fields.get_mut("message") {
                    if *message == event.raw {
                        message.clone_from(&raw);
                    }
                }
                fields
            }
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err("driftless_log: an event's fields are not an object".into()),
        };
        events.push(Event {
            source: event.source.clone(),
            raw,
            fields,
        });
    }
    Ok(events)
}

fn field_matches(event: &Event, field: &str, re: &Regex) -> bool {
    match event.fields.get(field) {
        Some(Value::String(s)) => re.is_match(s),
        Some(Value::Null) | None => false,
        Some(other) => re.is_match(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Fields;

    fn event(message: &str, level: &str) -> Event {
        let mut fields = Fields::new();
        fields.insert("message".into(), message.into());
        fields.insert("level".into(), level.into());
        Event {
            source: "s".into(),
            raw: message.into(),
            fields,
        }
    }

    fn transforms(yaml: &str) -> Transforms {
        let list: Vec<Transform> = serde_saphyr::from_str(yaml).unwrap();
        Transforms::new(&list, Path::new("/")).unwrap()
    }

    #[test]
    fn steps_run_in_order() {
        let t = transforms(
            r#"
- exclude: {field: level, pattern: "^debug$"}
- redact: {patterns: ["token=\\S+", "[a-z]+@example\\.com"]}
- addFields: {env: prod}
- renameFields: {level: severity}
- dropFields: [env2]
"#,
        );
        let mut e = event("login ann@example.com token=abc123 ok", "info");
        assert!(t.apply(&mut e));
        assert_eq!(e.fields["message"], "login <redacted> <redacted> ok");
        assert_eq!(e.raw, "login <redacted> <redacted> ok");
        assert_eq!(e.fields["env"], "prod");
        assert_eq!(e.fields["severity"], "info");
        assert!(e.fields.get("level").is_none());
        assert!(!t.apply(&mut event("x", "debug")));
    }

    #[test]
    fn include_keeps_only_matches_and_bad_regex_is_refused() {
        let t = transforms("- include: {field: message, pattern: ERROR}");
        assert!(t.apply(&mut event("an ERROR here", "x")));
        assert!(!t.apply(&mut event("fine", "x")));
        let list: Vec<Transform> =
            serde_saphyr::from_str("- include: {field: message, pattern: '('}").unwrap();
        assert!(Transforms::new(&list, Path::new("/"))
            .unwrap_err()
            .to_string()
            .contains("transforms[0]"));
    }
}
