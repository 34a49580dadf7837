//! Drift of the host against its ApplyPolicies: `driftless drift check` and `drift resolve`.
//!
//! A drift check is a dry run of every policy (never a change, `Audit` policies included); each
//! task that would change is one [`DriftItem`] in the DriftReport item shape, after the policy's
//! ignore rules, with the same unified diff `apply --dry-run` shows. Tasks that fail to check
//! make the check an error. [`items`] bounds the items for a node's DriftReport.

pub mod edit;
pub mod ignore;
pub mod items;
pub mod resolve;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use driftless_crds::drift_report::{ChangeType, DriftItem, DriftStatus};
use serde::Serialize;

use crate::apply::report::{ApplyReport, Status};
use crate::apply::{self, Environment, Options};
use crate::config::Config;

/// The result of a drift check.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftCheck {
    /// `InSync`, `Drifted` or `Error`.
    pub status: DriftStatus,
    /// Items that would be added.
    pub added: u32,
    /// Items that would be changed or replaced.
    pub changed: u32,
    /// Items that would be removed.
    pub removed: u32,
    /// What drifted.
    pub items: Vec<DriftItem>,
    /// Tasks that could not be checked: `POLICY/TASK: message`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// The drift items of a dry-run report.
pub fn from_report(report: &ApplyReport) -> DriftCheck {
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for policy in &report.policies {
        for task in &policy.tasks {
            match task.status {
                Status::Changed => items.extend(items::item(policy, task)),
                Status::Failed => errors.push(format!(
                    "{}/{}: {}",
                    policy.policy,
                    task.task,
                    task.message.as_deref().unwrap_or("failed")
                )),
                Status::Unchanged | Status::Skipped => {}
            }
        }
    }
    let count = |c: ChangeType| {
        u32::try_from(items.iter().filter(|i| i.change == c).count()).unwrap_or(u32::MAX)
    };
    let status = if !errors.is_empty() {
        DriftStatus::Error
    } else if items.is_empty() {
        DriftStatus::InSync
    } else {
        DriftStatus::Drifted
    };
    DriftCheck {
        status,
        added: count(ChangeType::Added),
        changed: count(ChangeType::Changed),
        removed: count(ChangeType::Removed),
        items,
        errors,
    }
}

/// Checks every policy without changing anything.
pub fn check(config: &Config, env: &Environment) -> DriftCheck {
    check_with(config, env, &apply::template::Templates::new())
}

/// [`check`] with templates already parsed by validation.
pub fn check_with(
    config: &Config,
    env: &Environment,
    templates: &apply::template::Templates,
) -> DriftCheck {
    let report = apply::apply_with(
        config,
        env,
        &Options {
            dry_run: true,
            ..Options::default()
        },
        templates,
    );
    from_report(&report)
}

impl DriftCheck {
    /// The report grouped by domain, `+` added, `-` removed, `~` changed.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut by_domain: BTreeMap<&str, Vec<&DriftItem>> = BTreeMap::new();
        for item in &self.items {
            by_domain.entry(&item.domain).or_default().push(item);
        }
        for (domain, items) in by_domain {
            let _ = writeln!(out, "{domain}:");
            for item in items {
                let sign = match item.change {
                    ChangeType::Added => "+",
                    ChangeType::Removed => "-",
                    ChangeType::Changed => "~",
                };
                let replace = if item.replace { " (replace)" } else { "" };
                let source = item.source.as_deref().unwrap_or_default();
                let _ = writeln!(out, "  {sign} {}{replace}  [{source}]", item.address);
                for a in &item.attributes {
                    let v = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
                    let _ = writeln!(out, "      {}: {} → {}", a.path, v(&a.before), v(&a.after));
                }
                // Indented as `apply` prints it, so the two read the same.
                for line in item.diff.iter().flat_map(|d| d.lines()) {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        for e in &self.errors {
            let _ = writeln!(out, "error: {e}");
        }
        let status = match self.status {
            DriftStatus::InSync => "in sync",
            DriftStatus::Drifted => "drifted",
            DriftStatus::Error => "error",
        };
        let _ = writeln!(
            out,
            "{status}: {} to add, {} to change, {} to remove",
            self.added, self.changed, self.removed
        );
        out
    }

    /// `--detailed-exitcode`: 0 in sync, 2 drift, 1 error.
    pub fn detailed_exit_code(&self) -> u8 {
        match self.status {
            DriftStatus::InSync => 0,
            DriftStatus::Drifted => 2,
            DriftStatus::Error => 1,
        }
    }
}
