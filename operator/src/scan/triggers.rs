//! What starts a run: the cron `schedule` (in `timeZone`, skipped while `suspend`), a new
//! value of the `driftless.dev/trigger` annotation, and the webhook (see `webhook.rs`).

use chrono::{DateTime, Utc};
use driftless_crds::drift_scan::{DriftScanSpec, DriftScanStatus, TriggerKind};

/// The annotation whose every new value starts a run
/// (`kubectl annotate driftscan X driftless.dev/trigger=$(date +%s) --overwrite`).
pub const TRIGGER_ANNOTATION: &str = "driftless.dev/trigger";

/// A request to start a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// What asks.
    pub kind: TriggerKind,
    /// Who asks (webhook `actor`, annotation value).
    pub actor: Option<String>,
    /// The commit to scan, when the trigger knows it.
    pub commit: Option<String>,
    /// Only these stacks (webhook of one stack, or of changed files); all when `None`.
    pub stacks: Option<Vec<String>>,
}

/// A schedule or time zone that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TriggerError {
    /// The cron expression does not parse.
    #[error("spec.schedule: {reason}")]
    Schedule {
        /// The expression.
        schedule: String,
        /// Why.
        reason: String,
    },
    /// The time zone is unknown.
    #[error("spec.timeZone: {0:?} is not an IANA time zone such as \"Europe/Paris\"")]
    TimeZone(String),
    /// The schedule never fires again.
    #[error("spec.schedule: {0:?} never fires")]
    Never(String),
}

/// The first time strictly after `after` at which `schedule` fires in `time_zone` (UTC when
/// unset).
pub fn next_fire(
    schedule: &str,
    time_zone: Option<&str>,
    after: DateTime<Utc>,
) -> Result<DateTime<Utc>, TriggerError> {
    let cron = driftless_crds::cron::parse(schedule).map_err(|reason| TriggerError::Schedule {
        schedule: schedule.to_owned(),
        reason,
    })?;
    let never = || TriggerError::Never(schedule.to_owned());
    match time_zone {
        None | Some("") | Some("UTC") => cron
            .find_next_occurrence(&after, false)
            .map_err(|_| never()),
        Some(name) => {
            let tz: chrono_tz::Tz = name
                .parse()
                .map_err(|_| TriggerError::TimeZone(name.to_owned()))?;
            let local = after.with_timezone(&tz);
            cron.find_next_occurrence(&local, false)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| never())
        }
    }
}

/// What the triggers ask of one DriftScan now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// A run to start (if no run is active, or the active one may be cancelled).
    pub request: Option<RunRequest>,
    /// The annotation value acted on, to record in `status.lastTrigger` once the run starts.
    pub annotation: Option<String>,
    /// `status.nextScheduledAt` from now on.
    pub next_scheduled_at: Option<DateTime<Utc>>,
    /// A schedule problem to report in the `Ready` condition.
    pub error: Option<String>,
}

/// Decides the triggers of one DriftScan at `now`.
///
/// - The annotation starts a manual run when its value differs from `status.lastTrigger`.
/// - The schedule starts a run when `now` reached `status.nextScheduledAt`; a schedule that was
///   missed several times while the operator was down fires once. `suspend` skips it (the
///   next time still advances). When no next time is recorded yet, it is only computed.
/// - A manual trigger wins over a due schedule at the same time.
pub fn due(
    spec: &DriftScanSpec,
    status: &DriftScanStatus,
    annotation: Option<&str>,
    now: DateTime<Utc>,
) -> Due {
    let mut out = Due::default();
    if let Some(value) = annotation.filter(|v| !v.is_empty()) {
        if status.last_trigger.as_deref() != Some(value) {
            out.request = Some(RunRequest {
                kind: TriggerKind::Manual,
                actor: Some(value.to_owned()),
                commit: None,
                stacks: None,
            });
            out.annotation = Some(value.to_owned());
        }
    }
    let Some(schedule) = spec.schedule.as_deref() else {
        return out;
    };
    let recorded = status
        .next_scheduled_at
        .as_ref()
        .map(driftless_crds::time::of_time);
    let fired = recorded.is_some_and(|t| t <= now);
    match (recorded, fired) {
        (Some(t), false) => out.next_scheduled_at = Some(t),
        _ => match next_fire(schedule, spec.time_zone.as_deref(), now) {
            Ok(next) => out.next_scheduled_at = Some(next),
            Err(err) => out.error = Some(err.to_string()),
        },
    }
    if fired && !spec.suspend && out.request.is_none() {
        out.request = Some(RunRequest {
            kind: TriggerKind::Schedule,
            actor: None,
            commit: None,
            stacks: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn spec(schedule: Option<&str>, tz: Option<&str>) -> DriftScanSpec {
        let mut spec: DriftScanSpec = serde_json::from_value(serde_json::json!({
            "source": {"git": {"url": "file:///repo", "stacks": ["a"]}}
        }))
        .unwrap();
        spec.schedule = schedule.map(Into::into);
        spec.time_zone = tz.map(Into::into);
        spec
    }

    #[test]
    fn cron_in_time_zone() {
        // 02:00 in Paris in winter is 01:00 UTC.
        let next = next_fire(
            "0 2 * * *",
            Some("Europe/Paris"),
            at("2026-01-10T12:00:00Z"),
        )
        .unwrap();
        assert_eq!(next, at("2026-01-11T01:00:00Z"));
        let next = next_fire("0 2 * * *", None, at("2026-01-10T12:00:00Z")).unwrap();
        assert_eq!(next, at("2026-01-11T02:00:00Z"));
        let next = next_fire("@hourly", None, at("2026-01-10T12:00:00Z")).unwrap();
        assert_eq!(next, at("2026-01-10T13:00:00Z"));
        assert!(matches!(
            next_fire(
                "0 2 * * *",
                Some("Mars/Olympus"),
                at("2026-01-10T12:00:00Z")
            ),
            Err(TriggerError::TimeZone(_))
        ));
        assert!(matches!(
            next_fire("every tuesday", None, at("2026-01-10T12:00:00Z")),
            Err(TriggerError::Schedule { .. })
        ));
        // `driftless validate` accepts @midnight; the operator runs it (croner alone refused it).
        assert_eq!(
            next_fire("@midnight", None, at("2026-01-10T12:00:00Z")).unwrap(),
            at("2026-01-11T00:00:00Z")
        );
    }

    #[test]
    fn annotation_starts_a_run_once() {
        let spec = spec(None, None);
        let mut status = DriftScanStatus::default();
        let now = at("2026-01-10T12:00:00Z");
        let d = due(&spec, &status, Some("1700000000"), now);
        assert_eq!(d.request.unwrap().kind, TriggerKind::Manual);
        assert_eq!(d.annotation.as_deref(), Some("1700000000"));
        status.last_trigger = Some("1700000000".into());
        assert_eq!(due(&spec, &status, Some("1700000000"), now), Due::default());
        assert!(due(&spec, &status, Some("1700000001"), now)
            .request
            .is_some());
        assert!(due(&spec, &status, None, now).request.is_none());
    }

    #[test]
    fn schedule_fires_when_due_and_not_suspended() {
        let mut spec = spec(Some("*/5 * * * *"), None);
        let mut status = DriftScanStatus::default();
        // First sight: only compute the next time.
        let d = due(&spec, &status, None, at("2026-01-10T12:01:00Z"));
        assert!(d.request.is_none());
        assert_eq!(d.next_scheduled_at, Some(at("2026-01-10T12:05:00Z")));
        status.next_scheduled_at = d.next_scheduled_at.map(driftless_crds::time::time);
        // Not yet.
        let d = due(&spec, &status, None, at("2026-01-10T12:04:59Z"));
        assert!(d.request.is_none());
        assert_eq!(d.next_scheduled_at, Some(at("2026-01-10T12:05:00Z")));
        // Due, even long after (operator was down): one run, next time from now.
        let d = due(&spec, &status, None, at("2026-01-10T13:02:00Z"));
        assert_eq!(d.request.unwrap().kind, TriggerKind::Schedule);
        assert_eq!(d.next_scheduled_at, Some(at("2026-01-10T13:05:00Z")));
        // Suspended: no run, but the time advances.
        spec.suspend = true;
        let d = due(&spec, &status, None, at("2026-01-10T13:02:00Z"));
        assert!(d.request.is_none());
        assert_eq!(d.next_scheduled_at, Some(at("2026-01-10T13:05:00Z")));
        // Suspend does not block manual triggers.
        let d = due(&spec, &status, Some("x"), at("2026-01-10T13:02:00Z"));
        assert_eq!(d.request.unwrap().kind, TriggerKind::Manual);
    }

    #[test]
    fn bad_schedule_is_reported_not_fatal() {
        let spec = spec(Some("nope"), None);
        let d = due(
            &spec,
            &DriftScanStatus::default(),
            None,
            at("2026-01-10T12:00:00Z"),
        );
        assert!(d.request.is_none());
        assert!(d.error.unwrap().starts_with("spec.schedule: \"nope\""));
    }
}
