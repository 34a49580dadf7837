//! What an apply did (or, in a dry run, would do): one [`TaskReport`] per task, grouped by
//! policy, with attribute-level before → after and unified diffs for content.
//!
//! Guarantees: everything in a report has been through the policy's [`Redactor`]; the digest
//! of content derived from a secret is shown only as `<redacted>` (a digest of a short secret
//! could be guessed), and diffs mask secrets as [`super::diff`] documents. The real values are
//! kept only in [`Sealed`], which is never serialized or printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use driftless_crds::apply_policy::ApplyMode;
use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::secret::{Redactor, SecretString, REDACTED};
use serde::Serialize;
use sha2::Digest as _;

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
    /// A unified diff of content, when content differs, secrets masked
    /// ([`super::diff::unified_diff`]).
    pub diff: Option<String>,
    /// Content derived from a secret: the report shows its digests as `<redacted>`.
    pub sensitive: bool,
    /// The resource is replaced (removed and re-created), not changed in place.
    pub replace: bool,
    /// The full SHA-256 (`sha256:` + 64 hex digits) of the live and desired content, when the
    /// `content` attribute changed; audit digests use it instead of the short digest.
    pub content_sha256: (Option<String>, Option<String>),
    /// The real live values of attributes whose shown value is masked (a replaced line, a
    /// password hash), by attribute path: for audit digests only.
    pub real_before: BTreeMap<String, SecretString>,
    /// The real desired values of attributes whose shown value is masked.
    pub real_after: BTreeMap<String, SecretString>,
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

    /// Records a change of content by digest: `sha256:` + 16 hex digits in the attribute, the
    /// full digest in [`Plan::content_sha256`]. `None` is a side where the file does not exist.
    pub fn content(&mut self, live: Option<&str>, desired: Option<&str>) {
        self.attribute("content", live.map(short_digest), desired.map(short_digest));
        self.content_sha256 = (live.map(full_digest), desired.map(full_digest));
    }
}

/// `sha256:` and the first 16 hex digits of a text's digest, to name content in attributes.
pub fn short_digest(text: &str) -> String {
    let mut d = full_digest(text);
    d.truncate("sha256:".len() + 16);
    d
}

/// `sha256:` and the 64 hex digits of a text's digest.
pub fn full_digest(text: &str) -> String {
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    )
}

/// The real values of a change, secrets included, in the canonical text audit digests are
/// keyed over: one `PATH=VALUE` line per changed attribute in report order, `<absent>` for a
/// missing value, `content` as its full `sha256:` digest. A side is `None` when every value on
/// it is missing (the resource did not exist, or is removed). Never serialized; its `Debug`
/// shows only `<redacted>`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// The live side.
    pub before: Option<SecretString>,
    /// The desired side.
    pub after: Option<SecretString>,
}

impl Sealed {
    /// The canonical text of both sides of a plan.
    pub fn of(plan: &Plan) -> Self {
        let side = |after: bool| {
            let values: Vec<(&str, Option<&str>)> = plan
                .attributes
                .iter()
                .map(|a| {
                    let (value, full, real) = if after {
                        (&a.after, &plan.content_sha256.1, &plan.real_after)
                    } else {
                        (&a.before, &plan.content_sha256.0, &plan.real_before)
                    };
                    let value = match (a.path.as_str(), full) {
                        ("content", Some(full)) if value.is_some() => Some(full.as_str()),
                        _ => match real.get(&a.path) {
                            Some(real) if value.is_some() => Some(real.expose()),
                            _ => value.as_deref(),
                        },
                    };
                    (a.path.as_str(), value)
                })
                .collect();
            if values.iter().all(|(_, v)| v.is_none()) {
                return None;
            }
            let text: String = values
                .iter()
                .map(|(path, v)| format!("{path}={}\n", v.unwrap_or("<absent>")))
                .collect();
            Some(SecretString::new(text))
        };
        Self {
            before: side(false),
            after: side(true),
        }
    }
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
    /// The real values of the change, for audit digests only.
    #[serde(skip)]
    pub sealed: Sealed,
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
            sealed: Sealed::default(),
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
                let hide = |v: Option<&str>| {
                    v.map(|v| {
                        if plan.sensitive && a.path == "content" {
                            REDACTED.to_owned()
                        } else {
                            redactor.redact(v).into_owned()
                        }
                    })
                };
                AttributeChange {
                    path: a.path.clone(),
                    before: hide(a.before.as_deref()),
                    after: hide(a.after.as_deref()),
                }
            })
            .collect();
        self.diff = plan
            .diff
            .as_deref()
            .map(|d| redactor.redact(d).into_owned());
        self.sealed = Sealed::of(plan);
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
    fn secrets_are_redacted_and_sensitive_digests_hidden() {
        let redactor = Redactor::new([SecretString::new("hunter2")]);
        let mut plan = Plan::new("file:/etc/token");
        plan.attribute("owner", Some("hunter2".into()), Some("root".into()));
        plan.content(Some("port=1\ntok=hunter2\n"), Some("port=2\ntok=hunter2\n"));
        plan.diff = crate::apply::diff::unified_diff(
            "/etc/token",
            "port=1\ntok=hunter2\n",
            "port=2\ntok=hunter2\n",
            &redactor,
        );
        plan.sensitive = true;
        let r = TaskReport::new("t", "file", Status::Changed).with_plan(&plan, &redactor);
        assert_eq!(r.attributes[0].before.as_deref(), Some(REDACTED));
        assert_eq!(r.attributes[1].before.as_deref(), Some(REDACTED));
        assert_eq!(r.attributes[1].after.as_deref(), Some(REDACTED));
        let diff = r.diff.as_deref().unwrap();
        assert!(
            diff.contains("-port=1\n+port=2\n tok=<redacted>\n"),
            "{diff}"
        );
        let json = serde_json::to_string(&r).unwrap();
        assert!(!json.contains("hunter2"), "{json}");
        assert!(!format!("{r:?}").contains("hunter2"));
        // The sealed values are the real ones, and differ between the sides.
        let before = r.sealed.before.as_ref().unwrap().expose();
        assert!(
            before.starts_with("owner=hunter2\ncontent=sha256:"),
            "{before}"
        );
        assert_eq!(before.len(), "owner=hunter2\ncontent=sha256:\n".len() + 64);
        assert_ne!(r.sealed.before, r.sealed.after);
    }

    #[test]
    fn sealed_sides_are_absent_when_every_value_is() {
        let mut plan = Plan::new("user:bob");
        plan.set_change(ChangeType::Added);
        plan.attribute("uid", None, Some("1001".into()));
        let sealed = Sealed::of(&plan);
        assert_eq!(sealed.before, None);
        assert_eq!(sealed.after.unwrap().expose(), "uid=1001\n");
    }

    #[test]
    fn masked_values_are_shown_and_real_ones_sealed() {
        let mut plan = Plan::new("lineInFile:/etc/app");
        plan.attribute(
            "line",
            Some("pw=<redacted>".into()),
            Some("pw=${secret:PW}".into()),
        );
        plan.real_before
            .insert("line".into(), SecretString::new("pw=old"));
        let r = TaskReport::new("t", "lineInFile", Status::Changed)
            .with_plan(&plan, &Redactor::default());
        assert_eq!(r.attributes[0].before.as_deref(), Some("pw=<redacted>"));
        assert_eq!(r.sealed.before.unwrap().expose(), "line=pw=old\n");
        assert!(!format!("{plan:?}").contains("pw=old"));
    }
}
