//! `file`: a file's content (inline, template or copied source), mode, owner and group, or its
//! absence.

use driftless_crds::apply_policy::FileTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::util::{read_optional, Attrs, DesiredFile};
use super::{Context, Plan, Task, TaskError};
use crate::apply::diff::unified_diff;

/// Helpers of this task type.
trait Helpers {
    fn desired(&self, ctx: &Context) -> Result<DesiredFile, TaskError>;
    fn resource(&self) -> String;
}

impl Helpers for FileTask {
    fn desired(&self, ctx: &Context) -> Result<DesiredFile, TaskError> {
        let (content, sensitive) = if let Some(content) = &self.content {
            let e = ctx.expand("file.content", content)?;
            let s = e.is_secret();
            (Some(e.value), s)
        } else if let Some(template) = &self.template {
            let e = ctx.render("file.template", template)?;
            let s = e.is_secret();
            (Some(e.value), s)
        } else if let Some(source) = &self.source {
            let relative = std::path::Path::new(source);
            if relative.is_absolute()
                || relative
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(TaskError::Invalid(format!(
                    "file.source {source:?} must be a path inside the configuration directory"
                )));
            }
            let path = ctx.config_dir.join(relative);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| TaskError::io(format!("file.source {}", path.display()), e))?;
            (Some(text), false)
        } else {
            (None, false)
        };
        Ok(DesiredFile {
            host_path: self.path.clone(),
            content,
            attrs: Attrs::resolve(
                ctx,
                self.mode.as_deref(),
                self.owner.as_deref(),
                self.group.as_deref(),
            )?,
            default_mode: 0o644,
            sensitive,
        })
    }

    fn resource(&self) -> String {
        format!("file:{}", self.path)
    }
}

impl Task for FileTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        if self.state == Presence::Absent {
            let mut plan = Plan::new(self.resource());
            let path = ctx.path_nofollow(&self.path)?;
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if meta.is_dir() {
                    return Err(TaskError::Invalid(format!(
                        "{} is a directory; use a directory task to remove it",
                        self.path
                    )));
                }
                plan.set_change(ChangeType::Removed);
                let live = if meta.is_file() {
                    read_optional(&path, &self.path)?.unwrap_or_default()
                } else {
                    String::new()
                };
                plan.content(Some(&live), None);
                plan.diff = unified_diff(&self.path, &live, "", ctx.redactor);
            }
            return Ok(plan);
        }
        self.desired(ctx)?.plan(ctx, self.resource())
    }

    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        if self.state == Presence::Absent {
            let path = ctx.path_nofollow(&self.path)?;
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(TaskError::io(&self.path, e))
                }
                _ => Ok(()),
            };
        }
        self.desired(ctx)?.write(ctx, plan)
    }
}
