//! `kernelModule`: whether a module is loaded (read from `PROC/modules`; `modprobe` and
//! `modprobe -r` only with `--root /`) and persisted in `/etc/modules-load.d/NAME.conf`, with
//! its parameters in `/etc/modprobe.d/NAME.conf`.

use driftless_crds::apply_policy::KernelModuleTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::modules::{
    load_file_content, loaded, options_file_content, set_loaded,
};
use crate::apply::backends::{read_optional, remove_optional, write_atomic};

/// One file the task manages: host path and desired content (`None`: absent).
struct ManagedFile {
    host_path: String,
    content: Option<String>,
}

fn check(task: &KernelModuleTask) -> Result<(), TaskError> {
    let valid = !task.name.is_empty()
        && !task.name.starts_with('-')
        && task
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid {
        return Err(TaskError::Invalid(format!(
            "kernelModule.name {:?} is not a module name",
            task.name
        )));
    }
    if task.params.as_deref().is_some_and(|p| p.contains('\n')) {
        return Err(TaskError::Invalid(
            "kernelModule.params must be one line".into(),
        ));
    }
    Ok(())
}

fn files(task: &KernelModuleTask) -> Vec<ManagedFile> {
    let present = task.state == Presence::Present;
    let mut files = vec![ManagedFile {
        host_path: format!("/etc/modules-load.d/{}.conf", task.name),
        content: (present && task.persist).then(|| load_file_content(&task.name)),
    }];
    // Parameters are only managed when given (or when the module is removed).
    if task.params.is_some() || !present {
        files.push(ManagedFile {
            host_path: format!("/etc/modprobe.d/{}.conf", task.name),
            content: task
                .params
                .as_deref()
                .filter(|_| present)
                .map(|p| options_file_content(&task.name, p)),
        });
    }
    files
}

impl Task for KernelModuleTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        check(self)?;
        let mut plan = Plan::new(format!("kernelModule:{}", self.name));
        let want = self.state == Presence::Present;
        let is = loaded(&ctx.root.paths, &self.name)?;
        if is != want {
            plan.attribute("loaded", Some(is.to_string()), Some(want.to_string()));
        }
        for file in files(self) {
            let live = read_optional(&ctx.path_nofollow(&file.host_path)?)?;
            if live != file.content {
                plan.attribute(
                    file.host_path.clone(),
                    live.map(|t| t.trim().replace('\n', " | ")),
                    file.content.map(|t| t.trim().replace('\n', " | ")),
                );
            }
        }
        if plan.is_change() && !want {
            plan.set_change(ChangeType::Removed);
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        check(self)?;
        for file in files(self) {
            let path = ctx.path_nofollow(&file.host_path)?;
            match &file.content {
                Some(content) => {
                    if read_optional(&path)?.as_deref() != Some(content.as_str()) {
                        write_atomic(&path, content, 0o644, Some(&ctx.root.pending))?;
                    }
                }
                None => {
                    remove_optional(&path)?;
                }
            }
        }
        let want = self.state == Presence::Present;
        if loaded(&ctx.root.paths, &self.name)? != want {
            set_loaded(&ctx.root.paths, &self.name, want, self.params.as_deref())?;
        }
        Ok(())
    }
}
