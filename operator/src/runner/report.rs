//! Building a stack's DriftReport status from a plan (pure): bounded items, summary, history.

use driftless_crds::common::Time;
use driftless_crds::drift_report::{
    report_name, Artifact, DriftReport, DriftReportSpec, DriftReportStatus, DriftStatus, Summary,
    Target, TargetKind, MAX_HISTORY, MAX_ITEMS,
};
use kube::api::ObjectMeta;

use super::plan::ParsedPlan;

/// Longest error text kept in a report.
pub const MAX_ERROR_LEN: usize = 4096;

/// What the run is.
#[derive(Clone, Debug)]
pub struct RunMeta {
    /// Run id.
    pub run: String,
    /// Commit planned.
    pub commit: Option<String>,
    /// What triggered the run (`Schedule`, `Manual`, `Webhook`).
    pub trigger: Option<String>,
    /// When the stack was checked.
    pub checked_at: Time,
}

/// How planning a stack ended.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// Planned. The status follows the parsed items, not `plan -detailed-exitcode`'s 2:
    /// Terraform 1.0 exits 2 from a `-refresh-only` plan that found nothing.
    Planned {
        /// The parsed plan.
        plan: ParsedPlan,
        /// The plan's text (`terraform show`), already redacted.
        text: Option<String>,
    },
    /// Failed; the error is already redacted.
    Failed(String),
}

/// The new status of a report, given its previous status. A previous result of a different run
/// goes to the front of the history (bounded to [`MAX_HISTORY`]); a retry within the same run
/// replaces the result without pushing history.
/// Most bytes of plan text a report holds (the CRD allows 16,384 characters: the cut line
/// fits in the rest).
pub const MAX_PLAN_TEXT: usize = 16_000;

/// `text` cut to [`MAX_PLAN_TEXT`] bytes at a line end, with a line saying how much is left out.
pub fn cut_plan_text(text: &str) -> String {
    if text.len() <= MAX_PLAN_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_PLAN_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    if let Some(line_end) = text[..end].rfind('\n') {
        end = line_end + 1;
    }
    let rest = &text[end..];
    format!(
        "{}[plan text cut: {} more bytes, {} more lines; the artifact holds all of it]\n",
        &text[..end],
        rest.len(),
        rest.lines().count()
    )
}

/// The status a report gets from one run of its stack.
pub fn build_status(
    previous: Option<&DriftReportStatus>,
    outcome: &Outcome,
    meta: &RunMeta,
    artifact: Option<Artifact>,
) -> DriftReportStatus {
    let mut history: Vec<Summary> = previous.map(|p| p.history.clone()).unwrap_or_default();
    if let Some(prev) = previous.and_then(|p| p.summary.as_ref()) {
        if prev.run.as_deref() != Some(meta.run.as_str()) {
            history.insert(0, prev.clone());
        }
    }
    history.truncate(MAX_HISTORY);
    let mut summary = Summary {
        status: DriftStatus::InSync,
        added: 0,
        changed: 0,
        removed: 0,
        checked_at: meta.checked_at.clone(),
        revision: None,
        commit: meta.commit.clone(),
        trigger: meta.trigger.clone(),
        run: Some(meta.run.clone()),
    };
    match outcome {
        Outcome::Planned { plan, text } => {
            summary.added = plan.added;
            summary.changed = plan.changed;
            summary.removed = plan.removed;
            summary.status = if plan.drifted() {
                DriftStatus::Drifted
            } else {
                DriftStatus::InSync
            };
            let total = plan.items.len();
            let items: Vec<_> = plan.items.iter().take(MAX_ITEMS).cloned().collect();
            DriftReportStatus {
                summary: Some(summary),
                truncated_items: u32::try_from(total.saturating_sub(MAX_ITEMS)).unwrap_or(u32::MAX),
                items,
                error: None,
                artifact,
                plan_text: text.as_deref().map(cut_plan_text),
                history,
                policies: Vec::new(),
            }
        }
        Outcome::Failed(error) => {
            summary.status = DriftStatus::Error;
            let mut error = error.clone();
            if error.len() > MAX_ERROR_LEN {
                let mut end = MAX_ERROR_LEN;
                while !error.is_char_boundary(end) {
                    end -= 1;
                }
                error.truncate(end);
                error.push('…');
            }
            DriftReportStatus {
                summary: Some(summary),
                items: Vec::new(),
                truncated_items: 0,
                error: Some(error),
                artifact,
                plan_text: None,
                history,
                policies: Vec::new(),
            }
        }
    }
}

/// The DriftReport object of `stack` (name from [`report_name`]) with `status`.
pub fn report(
    namespace: &str,
    scan: &str,
    stack: &str,
    status: Option<DriftReportStatus>,
) -> DriftReport {
    DriftReport {
        metadata: ObjectMeta {
            name: Some(report_name(scan, stack)),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [
                    ("driftless.dev/scan".to_owned(), scan.to_owned()),
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        "driftless".to_owned(),
                    ),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        spec: DriftReportSpec {
            target: Target {
                kind: TargetKind::Stack,
                name: format!("{scan}/{stack}"),
                scan: Some(scan.to_owned()),
                stack: Some(stack.to_owned()),
                node: None,
            },
            revisions: Vec::new(),
        },
        status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::drift_report::{ChangeType, DriftItem};

    fn meta(run: &str) -> RunMeta {
        RunMeta {
            run: run.into(),
            commit: Some("abc".into()),
            trigger: Some("Manual".into()),
            checked_at: driftless_crds::time::time(chrono::Utc::now()),
        }
    }

    fn plan(n: usize) -> ParsedPlan {
        let items: Vec<_> = (0..n)
            .map(|i| DriftItem {
                address: format!("t.r{i}"),
                domain: "t".into(),
                source: None,
                change: ChangeType::Changed,
                replace: false,
                attributes: vec![],
                diff: None,
                corrected: false,
            })
            .collect();
        ParsedPlan {
            changed: n as u32,
            items,
            ..ParsedPlan::default()
        }
    }

    #[test]
    fn bounded_items_and_status() {
        let s = build_status(
            None,
            &Outcome::Planned {
                plan: plan(250),
                text: None,
            },
            &meta("r1"),
            None,
        );
        assert_eq!(s.items.len(), MAX_ITEMS);
        assert_eq!(s.truncated_items, 50);
        let sum = s.summary.unwrap();
        assert_eq!((sum.status, sum.changed), (DriftStatus::Drifted, 250));
        assert_eq!(sum.run.as_deref(), Some("r1"));
        let s = build_status(
            None,
            &Outcome::Planned {
                plan: plan(0),
                text: None,
            },
            &meta("r1"),
            None,
        );
        assert_eq!(s.summary.unwrap().status, DriftStatus::InSync);
        let s = build_status(
            None,
            &Outcome::Failed("x".repeat(10_000)),
            &meta("r1"),
            None,
        );
        assert_eq!(s.summary.unwrap().status, DriftStatus::Error);
        assert!(s.error.unwrap().len() <= MAX_ERROR_LEN + 3);
    }

    #[test]
    fn plan_text_is_kept_whole_or_cut_at_a_line_with_a_marker() {
        assert_eq!(cut_plan_text("a\nb\n"), "a\nb\n");
        let line = "  ~ tags.env = \"staging\" -> \"prod\" é\n";
        let long = line.repeat(2_000);
        let cut = cut_plan_text(&long);
        assert!(cut.chars().count() <= 16_384, "{}", cut.len());
        let (kept, marker) = cut.rsplit_once("[plan text cut: ").unwrap();
        assert!(kept.ends_with('\n') && kept.len() <= MAX_PLAN_TEXT);
        assert_eq!(kept.len() % line.len(), 0, "cut at a line end");
        let left = long.len() - kept.len();
        assert!(
            marker.starts_with(&format!(
                "{left} more bytes, {} more lines",
                left / line.len()
            )),
            "{marker}"
        );
        let s = build_status(
            None,
            &Outcome::Planned {
                plan: plan(1),
                text: Some(long),
            },
            &meta("r1"),
            None,
        );
        assert_eq!(s.plan_text.as_deref(), Some(cut.as_str()));
    }

    #[test]
    fn history_is_pushed_per_run_and_bounded() {
        let mut status: Option<DriftReportStatus> = None;
        for run in 0..30 {
            let out = Outcome::Planned {
                plan: plan(run % 3),
                text: None,
            };
            status = Some(build_status(
                status.as_ref(),
                &out,
                &meta(&format!("r{run}")),
                None,
            ));
        }
        let s = status.unwrap();
        assert_eq!(s.history.len(), MAX_HISTORY);
        assert_eq!(s.history[0].run.as_deref(), Some("r28"));
        // A retry in the same run replaces the summary, no history push.
        let again = build_status(Some(&s), &Outcome::Failed("e".into()), &meta("r29"), None);
        assert_eq!(again.history, s.history);
    }

    #[test]
    fn report_object() {
        let r = report("ns", "infra", "live/prod", None);
        assert_eq!(r.metadata.name.as_deref(), Some("infra-live-prod"));
        assert_eq!(r.spec.target.name, "infra/live/prod");
    }
}
