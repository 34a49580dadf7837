//! Transforms: include/exclude by field regex, add/drop/rename fields, redact, in order.

use driftless_crds::log_pipeline::{Transform, TransformKind};
use regex::Regex;
use serde_json::Value;

use super::{Event, LogError};

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

    /// Compiles the steps; a bad regular expression is an error naming the step.
    pub fn new(transforms: &[Transform]) -> Result<Self, LogError> {
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
            });
        }
        Ok(Self { steps })
    }

    /// Applies every step to the event; `false` when the event is filtered out.
    pub fn apply(&self, event: &mut Event) -> bool {
        for step in &self.steps {
            match step {
                Step::Include(field, re) => {
                    if !field_matches(event, field, re) {
                        return false;
                    }
                }
                Step::Exclude(field, re) => {
                    if field_matches(event, field, re) {
                        return false;
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
            }
        }
        true
    }
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
        Transforms::new(&list).unwrap()
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
        assert!(Transforms::new(&list)
            .unwrap_err()
            .to_string()
            .contains("transforms[0]"));
    }
}
