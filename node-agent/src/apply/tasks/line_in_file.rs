//! `lineInFile`: one line present in (or absent from) a file, Ansible's `lineinfile` semantics:
//! with `regexp`, the last matching line is replaced; otherwise the line is inserted after the
//! last line matching `insertAfter` (or at the end), or before the last line matching
//! `insertBefore` (or `BOF`), unless it is already there.

use driftless_crds::apply_policy::LineInFileTask;
use driftless_crds::common::Presence;
use driftless_crds::secret::SecretString;
use regex::Regex;

use super::util::{read_optional, DesiredFile};
use super::{Context, Plan, Task, TaskError};
use crate::apply::diff::mask_replaced_line;

/// What the edit needs, compiled.
pub struct Edit {
    /// The line to ensure (present) or remove (absent, without regexp).
    pub line: Option<String>,
    /// Selects the line to replace or remove.
    pub regexp: Option<Regex>,
    /// Present or absent.
    pub state: Presence,
    /// Insert after the last match of this (`None` = EOF).
    pub insert_after: Option<Anchor>,
    /// Insert before the last match of this.
    pub insert_before: Option<Anchor>,
}

/// Where to insert.
pub enum Anchor {
    /// `EOF` / `BOF`.
    End,
    /// The last line matching.
    Regex(Regex),
}

/// Compiled once per process, when a task first uses it (validation only checks it compiles).
fn compile(field: &str, pattern: &str) -> Result<Regex, TaskError> {
    driftless_crds::validate::cached_regex(pattern)
        .map(|re| (*re).clone())
        .map_err(|e| {
            TaskError::Invalid(format!(
                "{field}: {pattern:?} is not a regular expression: {e}"
            ))
        })
}

/// Splits text into lines without their newline.
fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn join(lines: &[String]) -> String {
    if lines.is_empty() {
        return String::new();
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

impl Edit {
    /// The new text, and the live line the regexp matched (for reports and `--prefer-system`).
    pub fn apply(&self, text: &str) -> (String, Option<String>) {
        let mut ls = lines(text);
        let matched = self
            .regexp
            .as_ref()
            .and_then(|re| ls.iter().rposition(|l| re.is_match(l)));
        let matched_line = matched.and_then(|i| ls.get(i).cloned());
        match self.state {
            Presence::Absent => {
                ls.retain(|l| match (&self.regexp, &self.line) {
                    (Some(re), _) => !re.is_match(l),
                    (None, Some(line)) => l != line,
                    (None, None) => true,
                });
            }
            Presence::Present => {
                let Some(line) = &self.line else {
                    return (text.to_owned(), matched_line);
                };
                if let Some(i) = matched {
                    ls[i] = line.clone();
                } else if !ls.iter().any(|l| l == line) {
                    let at = match (&self.insert_before, &self.insert_after) {
                        (Some(Anchor::End), _) => 0,
                        (Some(Anchor::Regex(re)), _) => {
                            ls.iter().rposition(|l| re.is_match(l)).unwrap_or(ls.len())
                        }
                        (None, Some(Anchor::Regex(re))) => ls
                            .iter()
                            .rposition(|l| re.is_match(l))
                            .map_or(ls.len(), |i| i + 1),
                        (None, _) => ls.len(),
                    };
                    ls.insert(at, line.clone());
                }
            }
        }
        let out = join(&ls);
        // Leave a file alone when only its missing final newline would change.
        if out.trim_end_matches('\n') == text.trim_end_matches('\n') {
            return (text.to_owned(), matched_line);
        }
        (out, matched_line)
    }
}

/// Helpers of this task type.
trait Helpers {
    fn edit(&self, ctx: &Context) -> Result<(Edit, bool), TaskError>;
    fn desired(&self, ctx: &Context) -> Result<(Option<DesiredFile>, Option<String>), TaskError>;
}

impl Helpers for LineInFileTask {
    fn edit(&self, ctx: &Context) -> Result<(Edit, bool), TaskError> {
        let line = self
            .line
            .as_deref()
            .map(|l| ctx.expand("lineInFile.line", l))
            .transpose()?;
        let sensitive = line.as_ref().is_some_and(|l| l.is_secret());
        let anchor =
            |field: &str, v: &Option<String>, end: &str| -> Result<Option<Anchor>, TaskError> {
                Ok(match v.as_deref() {
                    None => None,
                    Some(s) if s == end => Some(Anchor::End),
                    Some(s) => Some(Anchor::Regex(compile(field, s)?)),
                })
            };
        Ok((
            Edit {
                line: line.map(|l| l.value),
                regexp: self
                    .regexp
                    .as_deref()
                    .map(|r| compile("lineInFile.regexp", r))
                    .transpose()?,
                state: self.state,
                insert_after: anchor("lineInFile.insertAfter", &self.insert_after, "EOF")?,
                insert_before: anchor("lineInFile.insertBefore", &self.insert_before, "BOF")?,
            },
            sensitive,
        ))
    }

    fn desired(&self, ctx: &Context) -> Result<(Option<DesiredFile>, Option<String>), TaskError> {
        let (edit, sensitive) = self.edit(ctx)?;
        let path = ctx.path(&self.path)?;
        let live = read_optional(&path, &self.path)?;
        let text = match (live, self.state) {
            (Some(text), _) => text,
            (None, Presence::Absent) => return Ok((None, None)),
            (None, Presence::Present) if self.create => String::new(),
            (None, Presence::Present) => {
                return Err(TaskError::Invalid(format!(
                    "{} does not exist (set create: true to create it)",
                    self.path
                )))
            }
        };
        let (content, matched) = edit.apply(&text);
        Ok((
            Some(DesiredFile {
                host_path: self.path.clone(),
                content: Some(content),
                default_mode: 0o644,
                sensitive,
                ..DesiredFile::default()
            }),
            matched,
        ))
    }
}

impl Task for LineInFileTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let resource = format!("lineInFile:{}", self.path);
        let (Some(desired), matched) = self.desired(ctx)? else {
            return Ok(Plan::new(resource));
        };
        let mut plan = desired.plan(ctx, resource)?;
        if plan.is_change() && self.state == Presence::Present {
            let mut shown = matched.clone();
            // The replaced live line may hold an earlier value of the line's secret: shown
            // masked, kept whole for audit digests.
            if let (Some(live), Some(line)) = (&matched, &self.line) {
                let line = ctx.expand("lineInFile.line", line)?;
                if line.is_secret() {
                    shown = Some(mask_replaced_line(live, &line.value, ctx.redactor));
                    plan.real_before
                        .insert("line".into(), SecretString::new(live.clone()));
                }
            }
            plan.attribute("line", shown, self.line.clone());
        }
        Ok(plan)
    }

    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        match self.desired(ctx)? {
            (Some(desired), _) => desired.write(ctx, plan),
            (None, _) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edit(line: &str, regexp: Option<&str>) -> Edit {
        Edit {
            line: Some(line.into()),
            regexp: regexp.map(|r| Regex::new(r).unwrap()),
            state: Presence::Present,
            insert_after: None,
            insert_before: None,
        }
    }

    #[test]
    fn replaces_last_match_or_appends_once() {
        let e = edit("SystemMaxUse=500M", Some("^#?SystemMaxUse="));
        let (out, m) = e.apply("[Journal]\n#SystemMaxUse=\nX=1\n");
        assert_eq!(out, "[Journal]\nSystemMaxUse=500M\nX=1\n");
        assert_eq!(m.as_deref(), Some("#SystemMaxUse="));
        assert_eq!(e.apply(&out).0, out);
        let (out, _) = e.apply("[Journal]");
        assert_eq!(out, "[Journal]\nSystemMaxUse=500M\n");
        let plain = edit("a", None);
        assert_eq!(plain.apply("a\nb\n").0, "a\nb\n");
    }

    #[test]
    fn inserts_relative_to_anchors_and_removes() {
        let mut e = edit("new", None);
        e.insert_after = Some(Anchor::Regex(Regex::new("^b").unwrap()));
        assert_eq!(e.apply("a\nb\nc\n").0, "a\nb\nnew\nc\n");
        e.insert_after = None;
        e.insert_before = Some(Anchor::End);
        assert_eq!(e.apply("a\n").0, "new\na\n");
        e.insert_before = Some(Anchor::Regex(Regex::new("^c").unwrap()));
        assert_eq!(e.apply("a\nc\n").0, "a\nnew\nc\n");
        let mut gone = edit("x", Some("^x"));
        gone.state = Presence::Absent;
        assert_eq!(gone.apply("x=1\ny\nx=2\n").0, "y\n");
    }
}
