//! One audit record per change an apply made.

use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::secret::Redactor;
use serde::{Deserialize, Serialize};

use super::key::AuditKey;
use crate::apply::report::{ApplyReport, PolicyReport, Status, TaskReport};

/// What changed, where, when, and under which policy revision. Everything in it has been
/// redacted: secret values appear only as `<redacted>`, in the diff only where they are. The
/// digests are over the real values, keyed with the host's [`AuditKey`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    /// Unique id: `HOST-TIME-SEQ`; sinks may use it to drop duplicates (delivery is
    /// at-least-once).
    pub id: String,
    /// When the change was made (RFC 3339, UTC).
    pub time: String,
    /// Host (node) name.
    pub host: String,
    /// Policy name.
    pub policy: String,
    /// Policy revision: the ControllerRevision name in a cluster, a digest of the policy's spec
    /// on a standalone host.
    pub revision: String,
    /// The policy's `metadata.generation`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// Task name.
    pub task: String,
    /// Task type.
    pub kind: String,
    /// `TYPE:KEY`.
    pub resource: String,
    /// `added`, `changed` or `removed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<ChangeType>,
    /// HMAC-SHA256 (hex) under the host's audit key of the real values before the change, in
    /// the canonical text of [`crate::apply::report::Sealed`]; `None` when the resource did not
    /// exist (or the key could not be used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_hmac_sha256: Option<String>,
    /// The same over the values after the change; `None` when the resource was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_hmac_sha256: Option<String>,
    /// Which key made the digests: [`AuditKey::id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_key_id: Option<String>,
    /// Attributes before → after.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeChange>,
    /// Unified diff of content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Run as a `notify` handler.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handler: bool,
}

/// Who made the changes: fills the fields a report does not have.
#[derive(Clone, Debug, Default)]
pub struct RecordContext {
    /// Host (node) name.
    pub host: String,
    /// Policy name → (revision, generation).
    pub revisions: std::collections::BTreeMap<String, (String, Option<i64>)>,
    /// The host's audit key; without it records carry no digests.
    pub key: Option<AuditKey>,
}

fn digest(
    ctx: &RecordContext,
    side: Option<&driftless_crds::secret::SecretString>,
) -> Option<String> {
    Some(ctx.key.as_ref()?.digest(side?.expose()))
}

impl AuditRecord {
    /// The record for one changed task; `redactor` is applied once more to every text.
    pub fn from_task(
        policy: &PolicyReport,
        task: &TaskReport,
        ctx: &RecordContext,
        time: chrono::DateTime<chrono::Utc>,
        seq: usize,
        redactor: &Redactor,
    ) -> Self {
        let redact = |s: &str| redactor.redact(s).into_owned();
        let attributes: Vec<AttributeChange> = task
            .attributes
            .iter()
            .map(|a| AttributeChange {
                path: redact(&a.path),
                before: a.before.as_deref().map(redact),
                after: a.after.as_deref().map(redact),
            })
            .collect();
        let (revision, generation) = ctx
            .revisions
            .get(&policy.policy)
            .cloned()
            .unwrap_or_default();
        Self {
            id: format!("{}-{}-{seq:04}", ctx.host, time.format("%Y%m%dT%H%M%S%6fZ")),
            time: time.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            host: ctx.host.clone(),
            policy: policy.policy.clone(),
            revision,
            generation,
            task: task.task.clone(),
            kind: task.kind.clone(),
            resource: redact(&task.resource),
            change: task.change,
            before_hmac_sha256: digest(ctx, task.sealed.before.as_ref()),
            after_hmac_sha256: digest(ctx, task.sealed.after.as_ref()),
            hmac_key_id: ctx.key.as_ref().map(AuditKey::id),
            diff: task.diff.as_deref().map(redact),
            attributes,
            handler: task.handler,
        }
    }

    /// The records of an apply: one per task that changed something. A dry run and `Audit`
    /// policies change nothing, so they give none.
    pub fn from_report(
        report: &ApplyReport,
        ctx: &RecordContext,
        redactor: &Redactor,
    ) -> Vec<AuditRecord> {
        if report.dry_run {
            return Vec::new();
        }
        let time = chrono::Utc::now();
        report
            .policies
            .iter()
            .filter(|p| !p.check_only)
            .flat_map(|p| p.tasks.iter().map(move |t| (p, t)))
            .filter(|(_, t)| t.status == Status::Changed)
            .enumerate()
            .map(|(seq, (p, t))| Self::from_task(p, t, ctx, time, seq, redactor))
            .collect()
    }

    /// The record as one JSON line (with the newline).
    pub fn json_line(&self) -> String {
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::report::{Plan, Sealed};
    use driftless_crds::apply_policy::ApplyMode;
    use driftless_crds::secret::{SecretString, REDACTED};

    /// A change of a file that holds a secret: `port=1` → `port=2` next to `pw=hunter2`.
    fn changed(redactor: &Redactor) -> TaskReport {
        let (live, desired) = ("port=1\npw=hunter2\n", "port=2\npw=hunter2\n");
        let mut plan = Plan::new("file:/etc/app.conf");
        plan.content(Some(live), Some(desired));
        plan.diff = crate::apply::diff::unified_diff("/etc/app.conf", live, desired, redactor);
        plan.sensitive = true;
        TaskReport::new("app", "file", Status::Changed).with_plan(&plan, redactor)
    }

    fn report(redactor: &Redactor) -> ApplyReport {
        let changed = changed(redactor);
        let unchanged = TaskReport::new("other", "file", Status::Unchanged);
        ApplyReport {
            dry_run: false,
            policies: vec![
                PolicyReport {
                    policy: "base".into(),
                    origin: "base.yaml".into(),
                    mode: ApplyMode::Enforce,
                    check_only: false,
                    tasks: vec![changed.clone(), unchanged],
                },
                PolicyReport {
                    policy: "audit-only".into(),
                    origin: "a.yaml".into(),
                    mode: ApplyMode::Audit,
                    check_only: true,
                    tasks: vec![changed],
                },
            ],
        }
    }

    fn ctx(key: Option<AuditKey>) -> RecordContext {
        let mut ctx = RecordContext {
            host: "node-1".into(),
            key,
            ..RecordContext::default()
        };
        ctx.revisions
            .insert("base".into(), ("abc123".into(), Some(4)));
        ctx
    }

    #[test]
    fn one_record_per_change_with_keyed_digests_of_the_real_values() {
        let dir = tempfile::tempdir().unwrap();
        let key = AuditKey::load_or_create(dir.path()).unwrap();
        let redactor = Redactor::new([SecretString::new("hunter2")]);
        let records =
            AuditRecord::from_report(&report(&redactor), &ctx(Some(key.clone())), &redactor);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.policy, "base");
        assert_eq!(r.revision, "abc123");
        assert_eq!(r.generation, Some(4));
        assert_eq!(r.resource, "file:/etc/app.conf");
        assert!(r.id.starts_with("node-1-"));
        let line = r.json_line();
        assert!(!line.contains("hunter2"), "{line}");
        // The digests differ although both content attributes show `<redacted>`.
        assert_eq!(r.attributes[0].before.as_deref(), Some(REDACTED));
        assert_eq!(r.attributes[0].after.as_deref(), Some(REDACTED));
        assert_ne!(r.before_hmac_sha256, r.after_hmac_sha256);
        // Anyone with the key recomputes them from the real content.
        let full = crate::apply::report::full_digest("port=2\npw=hunter2\n");
        assert_eq!(
            r.after_hmac_sha256.as_deref(),
            Some(key.digest(&format!("content={full}\n")).as_str())
        );
        assert_eq!(r.hmac_key_id.as_deref(), Some(key.id().as_str()));
        // The diff hides only the secret.
        let diff = r.diff.as_deref().unwrap();
        assert!(
            diff.contains("-port=1\n+port=2\n pw=<redacted>\n"),
            "{diff}"
        );
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, r);
        let mut dry = report(&redactor);
        dry.dry_run = true;
        assert!(AuditRecord::from_report(&dry, &ctx(None), &redactor).is_empty());
    }

    #[test]
    fn without_a_key_there_are_no_digests_and_added_has_no_before() {
        let redactor = Redactor::default();
        let records = AuditRecord::from_report(&report(&redactor), &ctx(None), &redactor);
        assert_eq!(records[0].before_hmac_sha256, None);
        assert_eq!(records[0].hmac_key_id, None);
        let dir = tempfile::tempdir().unwrap();
        let mut task = TaskReport::new("bob", "user", Status::Changed);
        let mut plan = Plan::new("user:bob");
        plan.set_change(ChangeType::Added);
        plan.attribute("uid", None, Some("1001".into()));
        task.sealed = Sealed::of(&plan);
        let policy = PolicyReport {
            policy: "base".into(),
            origin: "b.yaml".into(),
            mode: ApplyMode::Enforce,
            check_only: false,
            tasks: vec![],
        };
        let ctx = ctx(Some(AuditKey::load_or_create(dir.path()).unwrap()));
        let r = AuditRecord::from_task(&policy, &task, &ctx, chrono::Utc::now(), 0, &redactor);
        assert_eq!(r.before_hmac_sha256, None);
        assert!(r.after_hmac_sha256.is_some());
    }
}
