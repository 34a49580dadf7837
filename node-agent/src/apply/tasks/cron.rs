//! `cron`: one job as a file in `/etc/cron.d`, owned by root, mode 0644 (cron ignores files
//! that are group- or world-writable).

use driftless_crds::apply_policy::CronTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::util::{read_optional, Attrs, DesiredFile};
use super::{Context, Plan, Task, TaskError};
use crate::apply::diff::unified_diff;

/// The file cron reads for this task: a header, the environment lines, the job line.
pub fn render(task: &CronTask, task_name: &str) -> Result<String, String> {
    let schedule = task.schedule.trim();
    driftless_crds::cron::check_cron_d(schedule).map_err(|e| format!("cron.schedule: {e}"))?;
    if task.command.trim().is_empty() || task.command.contains('\n') {
        return Err("cron.command must be one non-empty line".into());
    }
    if task.user.is_empty() || task.user.contains(char::is_whitespace) {
        return Err(format!("cron.user {:?} is not a user name", task.user));
    }
    let mut out =
        format!("# Managed by Driftless (task {task_name}); local changes are overwritten.\n");
    for (name, value) in &task.env {
        if name.is_empty() || name.contains(['=', '\n', ' ']) || value.contains('\n') {
            return Err(format!(
                "cron.env.{name}: names and values must be single words/lines"
            ));
        }
        out.push_str(&format!("{name}={value}\n"));
    }
    out.push_str(&format!(
        "{schedule} {} {}\n",
        task.user,
        task.command.trim()
    ));
    Ok(out)
}

/// Helpers of this task type.
trait Helpers {
    fn host_path(&self) -> String;
    fn desired(&self, ctx: &Context) -> Result<DesiredFile, TaskError>;
}

impl Helpers for CronTask {
    fn host_path(&self) -> String {
        format!("/etc/cron.d/{}", self.name)
    }

    fn desired(&self, ctx: &Context) -> Result<DesiredFile, TaskError> {
        let text = render(self, ctx.task).map_err(TaskError::Invalid)?;
        let expanded = ctx.expand("cron", &text)?;
        Ok(DesiredFile {
            host_path: self.host_path(),
            sensitive: expanded.is_secret(),
            content: Some(expanded.value),
            attrs: Attrs {
                mode: Some(0o644),
                owner: Some((0, "root".into())),
                group: Some((0, "root".into())),
            },
            default_mode: 0o644,
        })
    }
}

impl Task for CronTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let resource = format!("cron:{}", self.host_path());
        if self.state == Presence::Absent {
            let mut plan = Plan::new(resource);
            let path = ctx.path_nofollow(&self.host_path())?;
            if let Some(live) = read_optional(&path, &self.host_path())? {
                plan.set_change(ChangeType::Removed);
                plan.content(Some(&live), None);
                plan.diff = unified_diff(&self.host_path(), &live, "", ctx.redactor);
            }
            return Ok(plan);
        }
        self.desired(ctx)?.plan(ctx, resource)
    }

    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        if self.state == Presence::Absent {
            let path = ctx.path_nofollow(&self.host_path())?;
            return std::fs::remove_file(&path).map_err(|e| TaskError::io(self.host_path(), e));
        }
        self.desired(ctx)?.write(ctx, plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(schedule: &str) -> CronTask {
        CronTask {
            name: "x".into(),
            schedule: schedule.into(),
            user: "root".into(),
            command: "true".into(),
            env: [("MAILTO".to_string(), String::new())].into(),
            state: Presence::Present,
        }
    }

    #[test]
    fn renders_and_validates_schedules() {
        let out = render(&task("30 3 * * *"), "t").unwrap();
        assert!(out.ends_with("MAILTO=\n30 3 * * * root true\n"), "{out}");
        assert!(render(&task("@daily"), "t").is_ok());
        assert!(render(&task("@sometimes"), "t")
            .unwrap_err()
            .contains("@sometimes"));
        assert!(render(&task("* * *"), "t").is_err());
        assert!(render(&task("@reboot"), "t").is_ok());
        // Five fields are not enough: each must be a valid field (one parser everywhere).
        assert!(render(&task("61 * * * *"), "t")
            .unwrap_err()
            .starts_with("cron.schedule: \"61 * * * *\" is not a valid cron expression"));
    }
}
