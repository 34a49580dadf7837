//! `blockInFile`: lines between two marker lines, inserted, replaced or removed as a whole.

use driftless_crds::apply_policy::BlockInFileTask;
use driftless_crds::common::Presence;
use regex::Regex;

use super::util::{read_optional, DesiredFile};
use super::{Context, Plan, Task, TaskError};

/// Where a new block goes.
pub enum Anchor {
    /// End of file (default).
    Eof,
    /// Beginning of file.
    Bof,
    /// After the last line matching.
    After(Regex),
    /// Before the last line matching.
    Before(Regex),
}

/// The new text with the block ensured (`Some(block)`) or removed (`None`).
pub fn apply(text: &str, begin: &str, end: &str, block: Option<&str>, anchor: &Anchor) -> String {
    let mut ls: Vec<String> = text.lines().map(str::to_owned).collect();
    let start = ls.iter().position(|l| l == begin);
    let stop = start.and_then(|s| {
        ls.iter()
            .skip(s + 1)
            .position(|l| l == end)
            .map(|i| i + s + 1)
    });
    let mut new: Vec<String> = Vec::new();
    if let Some(block) = block {
        new.push(begin.to_owned());
        new.extend(block.lines().map(str::to_owned));
        new.push(end.to_owned());
    }
    match (start, stop) {
        (Some(s), Some(e)) => {
            ls.splice(s..=e, new);
        }
        _ if block.is_none() => {}
        _ => {
            let at = match anchor {
                Anchor::Eof => ls.len(),
                Anchor::Bof => 0,
                Anchor::After(re) => ls
                    .iter()
                    .rposition(|l| re.is_match(l))
                    .map_or(ls.len(), |i| i + 1),
                Anchor::Before(re) => ls.iter().rposition(|l| re.is_match(l)).unwrap_or(ls.len()),
            };
            ls.splice(at..at, new);
        }
    }
    if ls.is_empty() {
        return String::new();
    }
    let out = ls.join("\n") + "\n";
    if out.trim_end_matches('\n') == text.trim_end_matches('\n') {
        return text.to_owned();
    }
    out
}

/// Helpers of this task type.
trait Helpers {
    fn desired(&self, ctx: &Context) -> Result<Option<DesiredFile>, TaskError>;
}

impl Helpers for BlockInFileTask {
    fn desired(&self, ctx: &Context) -> Result<Option<DesiredFile>, TaskError> {
        if !self.marker.contains("{mark}") {
            return Err(TaskError::Invalid(format!(
                "blockInFile.marker {:?} must contain {{mark}}",
                self.marker
            )));
        }
        let begin = self.marker.replace("{mark}", &self.marker_begin);
        let end = self.marker.replace("{mark}", &self.marker_end);
        let compile = |field: &str, p: &str| {
            Regex::new(p).map_err(|e| {
                TaskError::Invalid(format!("{field}: {p:?} is not a regular expression: {e}"))
            })
        };
        let anchor = match (self.insert_after.as_deref(), self.insert_before.as_deref()) {
            (_, Some("BOF")) => Anchor::Bof,
            (_, Some(p)) => Anchor::Before(compile("blockInFile.insertBefore", p)?),
            (Some("EOF") | None, None) => Anchor::Eof,
            (Some(p), None) => Anchor::After(compile("blockInFile.insertAfter", p)?),
        };
        let block = ctx.expand("blockInFile.block", &self.block)?;
        let path = ctx.path(&self.path)?;
        let text = match (read_optional(&path, &self.path)?, self.state) {
            (Some(text), _) => text,
            (None, Presence::Absent) => return Ok(None),
            (None, Presence::Present) if self.create => String::new(),
            (None, Presence::Present) => {
                return Err(TaskError::Invalid(format!(
                    "{} does not exist (set create: true to create it)",
                    self.path
                )))
            }
        };
        let wanted = (self.state == Presence::Present).then_some(block.value.as_str());
        Ok(Some(DesiredFile {
            host_path: self.path.clone(),
            content: Some(apply(&text, &begin, &end, wanted, &anchor)),
            default_mode: 0o644,
            sensitive: block.is_secret(),
            ..DesiredFile::default()
        }))
    }
}

impl Task for BlockInFileTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let resource = format!("blockInFile:{}", self.path);
        match self.desired(ctx)? {
            Some(desired) => desired.plan(ctx, resource),
            None => Ok(Plan::new(resource)),
        }
    }

    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        match self.desired(ctx)? {
            Some(desired) => desired.write(ctx, plan),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_replaces_and_removes_blocks() {
        let (b, e) = ("# BEGIN X", "# END X");
        let once = apply(
            "127.0.0.1 localhost\n",
            b,
            e,
            Some("10.0.0.1 db\n"),
            &Anchor::Eof,
        );
        assert_eq!(
            once,
            "127.0.0.1 localhost\n# BEGIN X\n10.0.0.1 db\n# END X\n"
        );
        assert_eq!(
            apply(&once, b, e, Some("10.0.0.1 db\n"), &Anchor::Eof),
            once
        );
        let changed = apply(&once, b, e, Some("10.0.0.2 db\n"), &Anchor::Eof);
        assert_eq!(
            changed,
            "127.0.0.1 localhost\n# BEGIN X\n10.0.0.2 db\n# END X\n"
        );
        assert_eq!(
            apply(&changed, b, e, None, &Anchor::Eof),
            "127.0.0.1 localhost\n"
        );
        assert_eq!(
            apply("a\n", b, e, Some("x"), &Anchor::Bof),
            "# BEGIN X\nx\n# END X\na\n"
        );
    }
}
