//! The drift items of a node's DriftReport, made from an apply report (a dry run, `drift
//! check`, or an apply whose `Audit` policies only checked) and bounded so the report stays
//! small in etcd.
//!
//! Guarantees of [`node_items`]:
//! - Pure: no I/O, no clock; the same report always gives the same items.
//! - One item per task whose status is `changed` (for a dry run or `Audit` policy: would
//!   change), in policy and task order, handlers included, in the DriftReport item shape with
//!   `source` = `POLICY/TASK`. Unchanged, skipped and failed tasks give no item.
//! - At most [`MAX_ITEMS`] items (the DriftReport schema's bound); the others are counted in
//!   [`NodeItems::truncated_items`]. `added`, `changed` and `removed` count every item, kept or
//!   not.
//! - Each item's `diff` is at most [`MAX_ITEM_DIFF_BYTES`] bytes and all diffs together at most
//!   [`MAX_REPORT_DIFF_BYTES`] bytes, the cut marker included. A diff that is too long is cut at
//!   a line break and ends with `[diff cut: SHOWN of TOTAL bytes shown]`; once the report's
//!   budget cannot hold even a marker, later items have no diff.
//! - Each attribute value (`before`, `after`) is at most [`MAX_VALUE_BYTES`] bytes; a longer
//!   one is cut at a character boundary and ends with `… [cut: TOTAL bytes]`.
//! - It adds no text of its own beyond those markers, and the report it reads is already
//!   redacted by the engine (secret values are `<redacted>`, [`crate::apply::diff`]), so neither
//!   are the items.

use driftless_crds::drift_report::{AttributeChange, ChangeType, DriftItem};

use crate::apply::report::{ApplyReport, PolicyReport, Status, TaskReport};

pub use driftless_crds::drift_report::MAX_ITEMS;

/// Most bytes of one item's diff in a DriftReport.
pub const MAX_ITEM_DIFF_BYTES: usize = 4096;
/// Most bytes of all items' diffs in one DriftReport.
pub const MAX_REPORT_DIFF_BYTES: usize = 65536;
/// Most bytes of one attribute value in a DriftReport.
pub const MAX_VALUE_BYTES: usize = 1024;
/// Room kept for the `[diff cut: ...]` line (two 20-digit numbers fit).
const MARKER_ROOM: usize = 80;

/// Bounded items for a node's DriftReport.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeItems {
    /// The items kept, at most [`MAX_ITEMS`].
    pub items: Vec<DriftItem>,
    /// Items left out because of the bound (`status.truncatedItems`).
    pub truncated_items: u32,
    /// Items that would be added, kept or not.
    pub added: u32,
    /// Items that would be changed or replaced, kept or not.
    pub changed: u32,
    /// Items that would be removed, kept or not.
    pub removed: u32,
}

/// The item of one task of a policy, unbounded; `None` unless the task changed (or would).
pub fn item(policy: &PolicyReport, task: &TaskReport) -> Option<DriftItem> {
    (task.status == Status::Changed).then(|| DriftItem {
        address: task.resource.clone(),
        domain: task.kind.clone(),
        source: Some(format!("{}/{}", policy.policy, task.task)),
        change: task.change.unwrap_or(ChangeType::Changed),
        replace: task.replace,
        attributes: task.attributes.clone(),
        diff: task.diff.clone(),
        corrected: !policy.check_only,
    })
}

/// The bounded DriftReport items of a report (see the module's guarantees).
pub fn node_items(report: &ApplyReport) -> NodeItems {
    let mut out = NodeItems::default();
    let mut budget = MAX_REPORT_DIFF_BYTES;
    let all = report
        .policies
        .iter()
        .flat_map(|p| p.tasks.iter().filter_map(move |t| item(p, t)));
    for mut item in all {
        let count = match item.change {
            ChangeType::Added => &mut out.added,
            ChangeType::Changed => &mut out.changed,
            ChangeType::Removed => &mut out.removed,
        };
        *count = count.saturating_add(1);
        if out.items.len() >= MAX_ITEMS {
            out.truncated_items = out.truncated_items.saturating_add(1);
            continue;
        }
        item.diff = item
            .diff
            .as_deref()
            .and_then(|d| cut_diff(d, MAX_ITEM_DIFF_BYTES.min(budget)));
        budget -= item.diff.as_ref().map_or(0, String::len);
        item.attributes = item.attributes.into_iter().map(cut_attribute).collect();
        out.items.push(item);
    }
    out
}

/// `diff` in at most `limit` bytes: whole, or cut after a line with the marker line; `None`
/// when not even the marker fits.
fn cut_diff(diff: &str, limit: usize) -> Option<String> {
    if diff.len() <= limit {
        return Some(diff.to_owned());
    }
    let room = limit.checked_sub(MARKER_ROOM)?;
    // The longest run of whole lines that fits; `room` may split a character, so search bytes.
    let shown = diff.as_bytes()[..room]
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |at| at + 1);
    Some(format!(
        "{}[diff cut: {shown} of {} bytes shown]\n",
        &diff[..shown],
        diff.len()
    ))
}

fn cut_value(value: String) -> String {
    if value.len() <= MAX_VALUE_BYTES {
        return value;
    }
    let total = value.len();
    let marker = format!("… [cut: {total} bytes]");
    let mut end = MAX_VALUE_BYTES - marker.len();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{marker}", &value[..end])
}

fn cut_attribute(a: AttributeChange) -> AttributeChange {
    AttributeChange {
        path: a.path,
        before: a.before.map(cut_value),
        after: a.after.map(cut_value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::apply_policy::ApplyMode;

    fn task(name: &str, status: Status, diff: Option<String>) -> TaskReport {
        let mut t = TaskReport::new(name, "file", status);
        t.resource = format!("file:/etc/{name}");
        t.change = Some(ChangeType::Changed);
        t.diff = diff;
        t.attributes = vec![AttributeChange {
            path: "content".into(),
            before: Some("sha256:0000000000000000".into()),
            after: Some("sha256:1111111111111111".into()),
        }];
        t
    }

    fn report(tasks: Vec<TaskReport>) -> ApplyReport {
        ApplyReport {
            dry_run: true,
            policies: vec![PolicyReport {
                policy: "base".into(),
                origin: "base.yaml".into(),
                mode: ApplyMode::Enforce,
                check_only: true,
                tasks,
            }],
        }
    }

    fn diff_of(lines: usize) -> String {
        let mut d = String::from("--- /f (live)\n+++ /f (desired)\n@@ -1 +1 @@\n");
        for i in 0..lines {
            d.push_str(&format!("+line {i:05} {}\n", "x".repeat(40)));
        }
        d
    }

    #[test]
    fn one_item_per_changed_task_with_its_diff() {
        let r = report(vec![
            task("motd", Status::Changed, Some("-a\n+b\n".into())),
            task("same", Status::Unchanged, None),
            task("broken", Status::Failed, None),
        ]);
        let out = node_items(&r);
        assert_eq!(out.items.len(), 1);
        assert_eq!(out.changed, 1);
        assert_eq!(out.truncated_items, 0);
        let item = &out.items[0];
        assert_eq!(item.address, "file:/etc/motd");
        assert_eq!(item.source.as_deref(), Some("base/motd"));
        assert_eq!(item.diff.as_deref(), Some("-a\n+b\n"));
    }

    #[test]
    fn a_long_diff_is_cut_at_a_line_with_a_marker() {
        let long = diff_of(500);
        let out = node_items(&report(vec![task(
            "big",
            Status::Changed,
            Some(long.clone()),
        )]));
        let d = out.items[0].diff.as_deref().unwrap();
        assert!(d.len() <= MAX_ITEM_DIFF_BYTES, "{}", d.len());
        let (kept, marker) = d.trim_end().rsplit_once('\n').unwrap();
        assert!(long.starts_with(kept) && long[kept.len()..].starts_with('\n'));
        assert_eq!(
            marker,
            format!(
                "[diff cut: {} of {} bytes shown]",
                kept.len() + 1,
                long.len()
            )
        );
    }

    #[test]
    fn all_diffs_together_stay_within_the_report_budget() {
        let tasks = (0..40)
            .map(|i| task(&format!("f{i}"), Status::Changed, Some(diff_of(200))))
            .collect();
        let out = node_items(&report(tasks));
        assert_eq!(out.items.len(), 40);
        let total: usize = out
            .items
            .iter()
            .map(|i| i.diff.as_ref().map_or(0, String::len))
            .sum();
        assert!(total <= MAX_REPORT_DIFF_BYTES, "{total}");
        assert!(
            total > MAX_REPORT_DIFF_BYTES - MAX_ITEM_DIFF_BYTES,
            "{total}"
        );
        assert!(out.items.iter().all(|i| i
            .diff
            .as_ref()
            .is_none_or(|d| d.len() <= MAX_ITEM_DIFF_BYTES)));
        assert!(out.items.last().unwrap().diff.is_none(), "budget spent");
    }

    #[test]
    fn items_past_the_bound_are_counted() {
        let tasks = (0..MAX_ITEMS + 7)
            .map(|i| task(&format!("f{i}"), Status::Changed, None))
            .collect();
        let out = node_items(&report(tasks));
        assert_eq!(out.items.len(), MAX_ITEMS);
        assert_eq!(out.truncated_items, 7);
        assert_eq!(out.changed as usize, MAX_ITEMS + 7);
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let mut t = task("line", Status::Changed, None);
        t.attributes[0].before = Some("é".repeat(2000));
        let out = node_items(&report(vec![t]));
        let v = out.items[0].attributes[0].before.as_deref().unwrap();
        assert!(v.len() <= MAX_VALUE_BYTES, "{}", v.len());
        assert!(v.ends_with("… [cut: 4000 bytes]"), "{v}");
        assert!(v.starts_with("éé"));
    }
}
