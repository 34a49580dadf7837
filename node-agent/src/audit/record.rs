//! One audit record per change an apply made.

use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::secret::Redactor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::apply::report::{ApplyReport, PolicyReport, Status, TaskReport};

/// What changed, where, when, and under which policy revision. Everything in it has been
/// redacted: secret values appear only as `<redacted>`.
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
    /// SHA-256 (hex) of the changed attributes' values before the change (see
    /// [`state_digest`]); `None` when the resource did not exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_sha256: Option<String>,
    /// SHA-256 (hex) of the changed attributes' values after the change; `None` when the
    /// resource was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_sha256: Option<String>,
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
}

/// The digest of one side of a change: SHA-256 over `path=value\n` for every attribute, in
/// order (`<absent>` for a missing value). `None` when every value on that side is missing
/// (the resource did not exist, or was removed).
pub fn state_digest(attributes: &[AttributeChange], after: bool) -> Option<String> {
    let values: Vec<(&str, Option<&str>)> = attributes
        .iter()
        .map(|a| {
            let v = if after { &a.after } else { &a.before };
            (a.path.as_str(), v.as_deref())
        })
        .collect();
    if values.iter().all(|(_, v)| v.is_none()) {
        return None;
    }
    let mut hasher = Sha256::new();
    for (path, value) in values {
        hasher.update(path.as_bytes());
        hasher.update(b"=");
        hasher.update(value.unwrap_or("<absent>").as_bytes());
        hasher.update(b"\n");
    }
    Some(hex::encode(hasher.finalize()))
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
            before_sha256: state_digest(&attributes, false),
            after_sha256: state_digest(&attributes, true),
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
    use driftless_crds::apply_policy::ApplyMode;
    use driftless_crds::secret::SecretString;

    fn report() -> ApplyReport {
        let mut changed = TaskReport::new("motd", "file", Status::Changed);
        changed.resource = "file:/etc/motd".into();
        changed.change = Some(ChangeType::Changed);
        changed.attributes = vec![AttributeChange {
            path: "content".into(),
            before: Some("old hunter2".into()),
            after: Some("new".into()),
        }];
        changed.diff = Some("-old hunter2\n+new\n".into());
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

    #[test]
    fn one_record_per_change_redacted() {
        let mut ctx = RecordContext {
            host: "node-1".into(),
            ..RecordContext::default()
        };
        ctx.revisions
            .insert("base".into(), ("abc123".into(), Some(4)));
        let redactor = Redactor::new([SecretString::new("hunter2")]);
        let records = AuditRecord::from_report(&report(), &ctx, &redactor);
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!(r.policy, "base");
        assert_eq!(r.revision, "abc123");
        assert_eq!(r.generation, Some(4));
        assert_eq!(r.resource, "file:/etc/motd");
        assert!(r.id.starts_with("node-1-"));
        let line = r.json_line();
        assert!(!line.contains("hunter2"), "{line}");
        assert!(line.contains("<redacted>"));
        assert_ne!(r.before_sha256, r.after_sha256);
        assert_eq!(r.before_sha256.as_ref().unwrap().len(), 64);
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(&back, r);
        let mut dry = report();
        dry.dry_run = true;
        assert!(AuditRecord::from_report(&dry, &ctx, &redactor).is_empty());
    }

    #[test]
    fn digests_of_added_and_removed() {
        let added = [AttributeChange {
            path: "uid".into(),
            before: None,
            after: Some("1001".into()),
        }];
        assert_eq!(state_digest(&added, false), None);
        assert!(state_digest(&added, true).is_some());
    }
}
