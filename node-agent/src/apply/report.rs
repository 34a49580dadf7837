//! What an apply did (or, in a dry run, would do): one [`TaskReport`] per task, grouped by
//! policy, with attribute-level before → after and unified diffs for content.
//!
//! Guarantees: everything in a report has been through the policy's [`Redactor`]; content
//! derived from a secret is shown only as `<redacted>`.

use std::fmt::Write as _;

use driftless_crds::apply_policy::ApplyMode;
use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::secret::{Redactor, REDACTED};
use serde::Serialize;

/// How a task ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Live state already matched.
    Unchanged,
    /// Live state was changed (or, in a dry run or `Audit` mode, would be).
    Changed,
    /// The task could not be checked or applied.
    Failed,
    /// Not run: `when` was false, `--only`/`--skip`, or an earlier task failed.
    Skipped,
}

impl Status {
    /// `unchanged`, `changed`, `failed`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unchanged => "unchanged",
            Status::Changed => "changed",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
        }
    }
}

/// What a task found and would change: the decide half of decide-then-act.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The resource, `TYPE:KEY` (`file:/etc/motd`, `sysctl:vm.swappiness`).
    pub resource: String,
    /// `None` when live state matches; otherwise how it differs.
    pub change: Option<ChangeType>,
    /// Attributes that differ (`mode`, `owner`, `content`, `version`), before → after.
    pub attributes: Vec<AttributeChange>,
    /// A unified diff of content, when content differs.
    pub diff: Option<String>,
    /// Content derived from a secret: the report shows `<redacted>` instead of any content.
    pub sensitive: bool,
    /// The resource is replaced (removed and re-created), not changed in place.
    pub replace: bool,
}

impl Plan {
    /// A plan for a resource that is in sync until changes are added.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            ..Self::default()
        }
    }

    /// Whether anything would change.
    pub fn is_change(&self) -> bool {
        self.change.is_some()
    }

    /// Records an attribute change and marks the plan `Changed` (unless already added/removed).
    pub fn attribute(
        &mut self,
        path: impl Into<String>,
        before: Option<String>,
        after: Option<String>,
    ) {
        self.attributes.push(AttributeChange {
            path: path.into(),
            before,
            after,
        });
        if self.change.is_none() {
            self.change = Some(ChangeType::Changed);
        }
    }

    /// Sets how the resource differs (`Added` for a missing resource, `Removed` for one to delete).
    pub fn set_change(&mut self, change: ChangeType) {
        self.change = Some(change);
    }
}

/// Unified diff between two texts, labelled with the path; `None` when equal.
pub fn unified_diff(path: &str, before: &str, after: &str) -> Option<String> {
    if before == after {
        return None;
    }
    let diff = similar::TextDiff::from_lines(before, after);
    let text = diff
        .unified_diff()
        .context_radius(3)
        .header(&format!("{path} (live)"), &format!("{path} (desired)"))
        .to_string();
    Some(text)
}

/// One task's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    /// Task name.
    pub task: String,
    /// Task type (`file`, `lineInFile`).
    pub kind: String,
    /// `TYPE:KEY`, when the task got far enough to know it.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub resource: String,
    /// How it ended.
    pub status: Status,
    /// How the resource differs (for `changed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeType>,
    /// Why it failed or was skipped, or what it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Attributes before → after.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
    /// Unified diff of content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Replaced rather than changed in place.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub replace: bool,
    /// Run as a handler (triggered by `notify`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub handler: bool,
    /// Milliseconds spent.
    pub duration_ms: u64,
}

impl TaskReport {
    /// A report with no changes.
    pub fn new(task: &str, kind: &str, status: Status) -> Self {
        Self {
            task: task.into(),
            kind: kind.into(),
            resource: String::new(),
            status,
            change: None,
            message: None,
            attributes: Vec::new(),
            diff: None,
            replace: false,
            handler: false,
            duration_ms: 0,
        }
    }

    /// A failed report with a message.
    pub fn failed(task: &str, kind: &str, message: impl Into<String>) -> Self {
        let mut r = Self::new(task, kind, Status::Failed);
        r.message = Some(message.into());
        r
    }

    /// A skipped report with the reason.
    pub fn skipped(task: &str, kind: &str, reason: impl Into<String>) -> Self {
        let mut r = Self::new(task, kind, Status::Skipped);
        r.message = Some(reason.into());
        r
    }

    /// Fills the report from a plan, redacting secrets.
    pub fn with_plan(mut self, plan: &Plan, redactor: &Redactor) -> Self {
        self.resource = redactor.redact(&plan.resource).into_owned();
        self.change = plan.change;
        self.replace = plan.replace;
        self.attributes = plan
            .attributes
            .iter()
            .map(|a| {
                let hide = |v: &Option<String>| {
                    v.as_ref().map(|v| {
                        if plan.sensitive && a.path == "content" {
                            REDACTED.to_owned()
                        } else {
                            redactor.redact(v).into_owned()
                        }
                    })
                };
                AttributeChange {
                    path: a.path.clone(),
                    before: hide(&a.before),
                    after: hide(&a.after),
                }
            })
            .collect();
        self.diff = match (&plan.diff, plan.sensitive) {
            (Some(_), true) => Some(format!("{REDACTED}\n")),
            (Some(diff), false) => Some(redactor.redact(diff).into_owned()),
            (None, _) => None,
        };
        self
    }

    /// Redacts the message.
    pub fn redact_message(&mut self, redactor: &Redactor) {
        if let Some(m) = &self.message {
            self.message = Some(redactor.redact(m).into_owned());
        }
    }
}

/// One policy's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// Policy name.
    pub policy: String,
    /// Where it was read.
    pub origin: String,
    /// `Enforce` or `Audit`.
    pub mode: ApplyMode,
    /// Nothing was changed: a dry run or `Audit` mode.
    pub check_only: bool,
    /// Tasks in order, then the handlers that ran.
    pub tasks: Vec<TaskReport>,
}

/// The whole apply.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApplyReport {
    /// Dry run.
    pub dry_run: bool,
    /// Policies in file order.
    pub policies: Vec<PolicyReport>,
}

/// Counts of task statuses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Unchanged tasks.
    pub unchanged: usize,
    /// Changed tasks.
    pub changed: usize,
    /// Failed tasks.
    pub failed: usize,
    /// Skipped tasks.
    pub skipped: usize,
}

impl ApplyReport {
    /// Every task report.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskReport> {
        self.policies.iter().flat_map(|p| p.tasks.iter())
    }

    /// How many tasks ended each way.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in self.tasks() {
            match t.status {
                Status::Unchanged => c.unchanged += 1,
                Status::Changed => c.changed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped => c.skipped += 1,
            }
        }
        c
    }

    /// The human-readable report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for policy in &self.policies {
            let how = match (self.dry_run, policy.mode) {
                (_, ApplyMode::Audit) => "Audit: check only",
                (true, _) => "Enforce, dry run",
                (false, _) => "Enforce",
            };
            let _ = writeln!(
                out,
                "ApplyPolicy/{} ({}) [{how}]",
                policy.policy, policy.origin
            );
            for t in &policy.tasks {
                let sign = match (t.status, t.change) {
                    (Status::Changed, Some(ChangeType::Added)) => "+",
                    (Status::Changed, Some(ChangeType::Removed)) => "-",
                    (Status::Changed, _) => "~",
                    (Status::Unchanged, _) => "=",
                    (Status::Failed, _) => "!",
                    (Status::Skipped, _) => " ",
                };
                let status = match (t.status, policy.check_only) {
                    (Status::Changed, true) => "would change",
                    (s, _) => s.as_str(),
                };
                let handler = if t.handler { " (handler)" } else { "" };
                let _ = write!(out, "  {sign} {}{handler} [{}]", t.task, t.kind);
                if !t.resource.is_empty() {
                    let _ = write!(out, " {}", t.resource);
                }
                let _ = write!(out, ": {status}");
                if let Some(m) = &t.message {
                    let _ = write!(out, " ({m})");
                }
                out.push('\n');
                for a in &t.attributes {
                    let show = |v: &Option<String>| match v {
                        Some(v) if a.path == "content" && t.diff.is_some() => {
                            format!("{} bytes", v.len())
                        }
                        Some(v) => v.clone(),
                        None => "(none)".into(),
                    };
                    if a.path == "content" && t.diff.is_some() {
                        continue;
                    }
                    let _ = writeln!(
                        out,
                        "      {}: {} → {}",
                        a.path,
                        show(&a.before),
                        show(&a.after)
                    );
                }
                if let Some(diff) = &t.diff {
                    for line in diff.lines() {
                        let _ = writeln!(out, "      {line}");
                    }
                }
            }
        }
        let c = self.counts();
        let verb = if self.dry_run {
            "would change"
        } else {
            "changed"
        };
        let _ = writeln!(
            out,
            "{} {verb}, {} unchanged, {} failed, {} skipped",
            c.changed, c.unchanged, c.failed, c.skipped
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::secret::SecretString;

    #[test]
    fn secrets_are_redacted_and_sensitive_content_hidden() {
        let redactor = Redactor::new([SecretString::new("hunter2")]);
        let mut plan = Plan::new("file:/etc/token");
        plan.attribute("owner", Some("hunter2".into()), Some("root".into()));
        plan.attribute("content", None, Some("tok=abc".into()));
        plan.diff = unified_diff("/etc/token", "", "tok=abc\n");
        plan.sensitive = true;
        let r = TaskReport::new("t", "file", Status::Changed).with_plan(&plan, &redactor);
        assert_eq!(r.attributes[0].before.as_deref(), Some(REDACTED));
        assert_eq!(r.attributes[1].after.as_deref(), Some(REDACTED));
        assert_eq!(r.diff.as_deref(), Some("<redacted>\n"));
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("hunter2") && !json.contains("abc"), "{json}");
    }

    #[test]
    fn unified_diff_marks_lines() {
        let d = unified_diff("/etc/motd", "a\nb\n", "a\nc\n").unwrap();
        assert!(d.contains("--- /etc/motd (live)"), "{d}");
        assert!(d.contains("-b\n+c\n"), "{d}");
        assert_eq!(unified_diff("/x", "same", "same"), None);
    }
}
