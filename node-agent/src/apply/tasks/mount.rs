//! `mount`: an `/etc/fstab` entry (edited in place; other lines and comments kept) and whether
//! it is mounted (read from the mount table; `mount`/`umount` only with `--root /`).

use driftless_crds::apply_policy::{MountState, MountTask};
use driftless_crds::drift_report::ChangeType;

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::mount::{
    find_entry, is_mounted, mount_table, remove_entry, set_entry, set_mounted, FstabEntry,
};
use crate::apply::backends::{read_optional, write_atomic};
use crate::apply::diff::unified_diff;

const FSTAB: &str = "/etc/fstab";

fn entry(task: &MountTask) -> Result<FstabEntry, TaskError> {
    if !task.path.starts_with('/') {
        return Err(TaskError::Invalid(format!(
            "mount.path {:?} must be absolute",
            task.path
        )));
    }
    if task.state != MountState::Absent {
        if task.device.trim().is_empty() {
            return Err(TaskError::Invalid("mount.device is required".into()));
        }
        if task.fstype.trim().is_empty() {
            return Err(TaskError::Invalid("mount.fstype is required".into()));
        }
    }
    for (field, value) in [("fstype", &task.fstype), ("options", &task.options)] {
        if value.contains(char::is_whitespace) {
            return Err(TaskError::Invalid(format!(
                "mount.{field} {value:?} may not contain whitespace"
            )));
        }
    }
    if task.device.contains('\n') || task.path.contains('\n') {
        return Err(TaskError::Invalid(
            "mount.device and mount.path must be one line".into(),
        ));
    }
    Ok(FstabEntry {
        device: task.device.clone(),
        path: task.path.clone(),
        fstype: task.fstype.clone(),
        options: if task.options.is_empty() {
            "defaults".into()
        } else {
            task.options.clone()
        },
        dump: task.dump,
        pass: task.pass,
    })
}

/// The fstab now and as it should be.
fn fstab_edit(task: &MountTask, ctx: &Context) -> Result<(String, String), TaskError> {
    let entry = entry(task)?;
    let text = read_optional(&ctx.path(FSTAB)?)?.unwrap_or_default();
    let edited = if task.state == MountState::Absent {
        if find_entry(&text, &task.path).is_some() {
            remove_entry(&text, &task.path)
        } else {
            text.clone()
        }
    } else if find_entry(&text, &task.path).as_ref() == Some(&entry) {
        text.clone()
    } else {
        set_entry(&text, &entry)
    };
    Ok((text, edited))
}

/// Whether it should be mounted: `Some(bool)`, or `None` to leave it alone.
fn want_mounted(task: &MountTask) -> Option<bool> {
    match task.state {
        MountState::Mounted => Some(true),
        MountState::Unmounted | MountState::Absent => Some(false),
        MountState::Present => None,
    }
}

impl Task for MountTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut plan = Plan::new(format!("mount:{}", self.path));
        let (before, after) = fstab_edit(self, ctx)?;
        if before != after {
            let old = find_entry(&before, &self.path).map(|e| e.line());
            let new = find_entry(&after, &self.path).map(|e| e.line());
            plan.attribute("fstab", old, new);
            plan.diff = unified_diff(FSTAB, &before, &after, ctx.redactor);
        }
        if let Some(want) = want_mounted(self) {
            let is = is_mounted(&mount_table(&ctx.root.paths)?, &self.path);
            if is != want {
                plan.attribute("mounted", Some(is.to_string()), Some(want.to_string()));
            }
        }
        if plan.is_change() && self.state == MountState::Absent {
            plan.set_change(ChangeType::Removed);
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let (before, after) = fstab_edit(self, ctx)?;
        let want = want_mounted(self);
        let is = match want {
            Some(_) => is_mounted(&mount_table(&ctx.root.paths)?, &self.path),
            None => false,
        };
        // Unmount before the entry goes, mount after it is written.
        if want == Some(false) && is {
            set_mounted(&ctx.root.paths, &self.path, false)?;
        }
        if before != after {
            write_atomic(&ctx.path(FSTAB)?, &after, 0o644, Some(&ctx.root.pending))?;
        }
        if want == Some(true) && !is {
            let mount_point = ctx.path(&self.path)?;
            std::fs::create_dir_all(&mount_point)
                .map_err(|e| TaskError::io(self.path.clone(), e))?;
            set_mounted(&ctx.root.paths, &self.path, true)?;
        }
        Ok(())
    }
}
