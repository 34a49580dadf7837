//! `sysctl`: a kernel parameter's live value (`PROC/sys/...`, when `live`) and its persisted
//! value in a `sysctl.d` file (when `persist`), compared field by field.

use driftless_crds::apply_policy::SysctlTask;

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::sysctl::{
    persisted_value, read_live, set_persisted, values_equal, write_live,
};
use crate::apply::backends::{read_optional, write_atomic};
use crate::apply::diff::unified_diff;

fn check(task: &SysctlTask) -> Result<(), TaskError> {
    let valid_name = !task.name.is_empty()
        && !task.name.contains("..")
        && task
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/*".contains(c));
    if !valid_name {
        return Err(TaskError::Invalid(format!(
            "sysctl.name {:?} is not a kernel parameter name",
            task.name
        )));
    }
    if task.value.contains('\n') || task.value.trim().is_empty() {
        return Err(TaskError::Invalid(
            "sysctl.value must be one non-empty line".into(),
        ));
    }
    if !task.persist && !task.live {
        return Err(TaskError::Invalid(
            "sysctl: persist and live are both off, so there is nothing to manage".into(),
        ));
    }
    Ok(())
}

fn value(task: &SysctlTask) -> String {
    task.value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The persisted file's text now and as it should be, when they differ.
fn persisted_edit(task: &SysctlTask, ctx: &Context) -> Result<Option<(String, String)>, TaskError> {
    let path = ctx.path(&task.file)?;
    let text = read_optional(&path)?.unwrap_or_default();
    let current = persisted_value(&text, &task.name);
    if current
        .as_deref()
        .is_some_and(|v| values_equal(v, &task.value))
    {
        return Ok(None);
    }
    let edited = set_persisted(&text, &task.name, &value(task));
    Ok(Some((text, edited)))
}

impl Task for SysctlTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        check(self)?;
        let mut plan = Plan::new(format!("sysctl:{}", self.name));
        if self.live {
            let live = read_live(&ctx.root.paths, &self.name)?.ok_or_else(|| {
                TaskError::Invalid(format!(
                    "the kernel has no parameter {} (nothing at {}/sys); set live: false to only persist it",
                    self.name,
                    ctx.root.paths.proc.display()
                ))
            })?;
            if !values_equal(&live, &self.value) {
                plan.attribute("value", Some(live.trim().to_owned()), Some(value(self)));
            }
        }
        if self.persist {
            if let Some((before, after)) = persisted_edit(self, ctx)? {
                let path = ctx.path(&self.file)?;
                let text = read_optional(&path)?.unwrap_or_default();
                plan.attribute(
                    "persisted",
                    persisted_value(&text, &self.name),
                    Some(value(self)),
                );
                plan.diff = unified_diff(&self.file, &before, &after, ctx.redactor);
            }
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        check(self)?;
        if self.persist {
            if let Some((_, after)) = persisted_edit(self, ctx)? {
                write_atomic(
                    &ctx.path(&self.file)?,
                    &after,
                    0o644,
                    Some(&ctx.root.pending),
                )?;
            }
        }
        if self.live {
            let live = read_live(&ctx.root.paths, &self.name)?.unwrap_or_default();
            if !values_equal(&live, &self.value) {
                write_live(&ctx.root.paths, &self.name, &value(self))?;
            }
        }
        Ok(())
    }
}
