//! `directory`: a directory with its mode and owner, optionally the owner and group of
//! everything below it (`recurse`), or its absence.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use driftless_crds::apply_policy::DirectoryTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::util::Attrs;
use super::{Context, Plan, Task, TaskError};

/// Every path below `dir` (not following symlinks) whose uid or gid differs.
fn differing(dir: &Path, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = std::fs::symlink_metadata(entry.path())?;
            if uid.is_some_and(|u| u != meta.uid()) || gid.is_some_and(|g| g != meta.gid()) {
                out.push(entry.path());
            }
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Helpers of this task type.
trait Helpers {
    fn attrs(&self, ctx: &Context) -> Result<Attrs, TaskError>;
}

impl Helpers for DirectoryTask {
    fn attrs(&self, ctx: &Context) -> Result<Attrs, TaskError> {
        Attrs::resolve(
            ctx,
            self.mode.as_deref(),
            self.owner.as_deref(),
            self.group.as_deref(),
        )
    }
}

impl Task for DirectoryTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut plan = Plan::new(format!("directory:{}", self.path));
        if self.state == Presence::Absent {
            let path = ctx.path_nofollow(&self.path)?;
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                if !meta.is_dir() {
                    return Err(TaskError::Invalid(format!(
                        "{} is not a directory; refusing to remove it",
                        self.path
                    )));
                }
                plan.set_change(ChangeType::Removed);
                plan.attribute("state", Some("present".into()), Some("absent".into()));
            }
            return Ok(plan);
        }
        let attrs = self.attrs(ctx)?;
        let path = ctx.path(&self.path)?;
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                plan.set_change(ChangeType::Added);
                attrs.plan_new(Some(0o755), &mut plan);
            }
            Err(e) => return Err(TaskError::io(&self.path, e)),
            Ok(meta) if !meta.is_dir() => {
                return Err(TaskError::Invalid(format!(
                    "{} exists and is not a directory",
                    self.path
                )))
            }
            Ok(meta) => {
                attrs.plan(ctx, &meta, &mut plan);
                if self.recurse && (attrs.owner.is_some() || attrs.group.is_some()) {
                    let below = differing(
                        &path,
                        attrs.owner.as_ref().map(|o| o.0),
                        attrs.group.as_ref().map(|g| g.0),
                    )
                    .map_err(|e| TaskError::io(&self.path, e))?;
                    if !below.is_empty() {
                        plan.attribute(
                            "recurse.ownership",
                            Some(format!("{} entries differ", below.len())),
                            Some("all match".into()),
                        );
                    }
                }
            }
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let io = |e| TaskError::io(&self.path, e);
        if self.state == Presence::Absent {
            let path = ctx.path_nofollow(&self.path)?;
            return std::fs::remove_dir_all(&path).map_err(io);
        }
        let mut attrs = self.attrs(ctx)?;
        let path = ctx.path(&self.path)?;
        if !path.exists() {
            std::fs::create_dir_all(&path).map_err(io)?;
            attrs.mode = attrs.mode.or(Some(0o755));
        }
        attrs.apply(&path, &self.path)?;
        if self.recurse && (attrs.owner.is_some() || attrs.group.is_some()) {
            let uid = attrs.owner.as_ref().map(|o| o.0);
            let gid = attrs.group.as_ref().map(|g| g.0);
            for p in differing(&path, uid, gid).map_err(io)? {
                std::os::unix::fs::lchown(&p, uid, gid).map_err(io)?;
            }
        }
        Ok(())
    }
}
