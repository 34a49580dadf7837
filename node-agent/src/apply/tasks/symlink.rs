//! `symlink`: a symbolic link with a given target, or its absence. The link's target is
//! written as given (a host path); the link's own location is confined to the root.

use driftless_crds::apply_policy::SymlinkTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::{Context, Plan, Task, TaskError};

/// What stands at the link's path.
enum Live {
    Missing,
    Link(String),
    File,
    Dir,
}

/// Helpers of this task type.
trait Helpers {
    fn live(&self, ctx: &Context) -> Result<(std::path::PathBuf, Live), TaskError>;
}

impl Helpers for SymlinkTask {
    fn live(&self, ctx: &Context) -> Result<(std::path::PathBuf, Live), TaskError> {
        let path = ctx.path_nofollow(&self.path)?;
        let live = match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Live::Missing,
            Err(e) => return Err(TaskError::io(&self.path, e)),
            Ok(m) if m.file_type().is_symlink() => {
                let t = std::fs::read_link(&path).map_err(|e| TaskError::io(&self.path, e))?;
                Live::Link(t.to_string_lossy().into_owned())
            }
            Ok(m) if m.is_dir() => Live::Dir,
            Ok(_) => Live::File,
        };
        Ok((path, live))
    }
}

impl Task for SymlinkTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut plan = Plan::new(format!("symlink:{}", self.path));
        let (_, live) = self.live(ctx)?;
        if self.state == Presence::Absent {
            match live {
                Live::Missing => {}
                Live::Link(t) => {
                    plan.set_change(ChangeType::Removed);
                    plan.attribute("target", Some(t), None);
                }
                Live::File | Live::Dir => {
                    return Err(TaskError::Invalid(format!(
                        "{} is not a symbolic link; refusing to remove it",
                        self.path
                    )))
                }
            }
            return Ok(plan);
        }
        if self.target.is_empty() {
            return Err(TaskError::Invalid(
                "symlink.target is required when state is present".into(),
            ));
        }
        match live {
            Live::Missing => {
                plan.set_change(ChangeType::Added);
                plan.attribute("target", None, Some(self.target.clone()));
            }
            Live::Link(t) if t == self.target => {}
            Live::Link(t) => plan.attribute("target", Some(t), Some(self.target.clone())),
            Live::File | Live::Dir if !self.force => {
                return Err(TaskError::Invalid(format!(
                    "{} exists and is not a symbolic link; set force: true to replace it",
                    self.path
                )))
            }
            Live::File | Live::Dir => {
                plan.set_change(ChangeType::Changed);
                plan.replace = true;
                plan.attribute("type", Some("not a link".into()), Some("symlink".into()));
                plan.attribute("target", None, Some(self.target.clone()));
            }
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let io = |e| TaskError::io(&self.path, e);
        let (path, live) = self.live(ctx)?;
        if self.state == Presence::Absent {
            return std::fs::remove_file(&path).map_err(io);
        }
        if let Live::Dir = live {
            std::fs::remove_dir_all(&path).map_err(io)?;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        // A temporary link renamed over the old one: the path is never missing.
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = path.with_file_name(format!(".{name}.driftless-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&self.target, &tmp).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io(e)
        })
    }
}
