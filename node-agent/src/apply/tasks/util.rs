//! Shared by the file-like task types: modes, owners (from the root's own `/etc/passwd` and
//! `/etc/group`), atomic writes and attribute plans.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{Context, Plan, TaskError};
use crate::apply::diff::unified_diff;
use crate::apply::durable::PendingSync;

/// Parses an octal mode such as `"0644"` or `"2755"`.
pub fn parse_mode(text: &str) -> Result<u32, TaskError> {
    let ok = text.chars().all(|c| ('0'..='7').contains(&c))
        && (3..=5).contains(&text.len())
        && (text.len() < 5 || text.starts_with('0'));
    match u32::from_str_radix(text, 8) {
        Ok(mode) if ok && mode <= 0o7777 => Ok(mode),
        _ => Err(TaskError::Invalid(format!(
            "mode {text:?} is not an octal mode such as \"0644\""
        ))),
    }
}

/// `0644`-style text for mode bits.
pub fn mode_text(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

/// Looks a name up in a colon-separated database (`/etc/passwd`, `/etc/group`) below the root:
/// field 3 is the id. Numeric names are ids already.
fn lookup_id(ctx: &Context, db: &str, what: &str, name: &str) -> Result<u32, TaskError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let path = ctx.path(db)?;
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let n = fields.next()?;
            let id = fields.nth(1)?.parse::<u32>().ok()?;
            (n == name).then_some(id)
        })
        .next()
        .ok_or_else(|| TaskError::Invalid(format!("{what} {name:?} does not exist in {db}")))
}

/// The name for an id in a database below the root, else the id as text.
fn lookup_name(ctx: &Context, db: &str, id: u32) -> String {
    let text = ctx
        .path(db)
        .ok()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    text.lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            let n = fields.next()?;
            let found = fields.nth(1)?.parse::<u32>().ok()?;
            (found == id).then(|| n.to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

/// A user name or uid, resolved against the root's `/etc/passwd`.
pub fn uid(ctx: &Context, name: &str) -> Result<u32, TaskError> {
    lookup_id(ctx, "/etc/passwd", "user", name)
}

/// A group name or gid, resolved against the root's `/etc/group`.
pub fn gid(ctx: &Context, name: &str) -> Result<u32, TaskError> {
    lookup_id(ctx, "/etc/group", "group", name)
}

/// Desired mode, owner and group, resolved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    /// Mode bits.
    pub mode: Option<u32>,
    /// Uid and the name asked for.
    pub owner: Option<(u32, String)>,
    /// Gid and the name asked for.
    pub group: Option<(u32, String)>,
}

impl Attrs {
    /// Resolves the optional `mode`, `owner`, `group` fields of a task.
    pub fn resolve(
        ctx: &Context,
        mode: Option<&str>,
        owner: Option<&str>,
        group: Option<&str>,
    ) -> Result<Self, TaskError> {
        Ok(Self {
            mode: mode.map(parse_mode).transpose()?,
            owner: owner
                .map(|o| uid(ctx, o).map(|id| (id, o.to_owned())))
                .transpose()?,
            group: group
                .map(|g| gid(ctx, g).map(|id| (id, g.to_owned())))
                .transpose()?,
        })
    }

    /// Adds the attributes of an existing file that differ to the plan.
    pub fn plan(&self, ctx: &Context, meta: &std::fs::Metadata, plan: &mut Plan) {
        if let Some(mode) = self.mode {
            let live = meta.mode() & 0o7777;
            if live != mode {
                plan.attribute("mode", Some(mode_text(live)), Some(mode_text(mode)));
            }
        }
        if let Some((uid, name)) = &self.owner {
            if meta.uid() != *uid {
                let live = lookup_name(ctx, "/etc/passwd", meta.uid());
                plan.attribute("owner", Some(live), Some(name.clone()));
            }
        }
        if let Some((gid, name)) = &self.group {
            if meta.gid() != *gid {
                let live = lookup_name(ctx, "/etc/group", meta.gid());
                plan.attribute("group", Some(live), Some(name.clone()));
            }
        }
    }

    /// The attributes a new file gets, for a plan that adds it.
    pub fn plan_new(&self, default_mode: Option<u32>, plan: &mut Plan) {
        if let Some(mode) = self.mode.or(default_mode) {
            plan.attribute("mode", None, Some(mode_text(mode)));
        }
        if let Some((_, name)) = &self.owner {
            plan.attribute("owner", None, Some(name.clone()));
        }
        if let Some((_, name)) = &self.group {
            plan.attribute("group", None, Some(name.clone()));
        }
    }

    /// Sets mode and ownership on a path (not following a final symlink for ownership).
    pub fn apply(&self, path: &Path, host_path: &str) -> Result<(), TaskError> {
        let io = |e| TaskError::io(host_path, e);
        if self.owner.is_some() || self.group.is_some() {
            std::os::unix::fs::lchown(
                path,
                self.owner.as_ref().map(|o| o.0),
                self.group.as_ref().map(|g| g.0),
            )
            .map_err(io)?;
        }
        if let Some(mode) = self.mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
        }
        Ok(())
    }
}

/// Writes a file atomically: a temporary file in the same directory with the final mode and
/// owner, renamed over the target. Missing parent directories are created. The write is
/// flushed to disk with the rest of the policy's writes (`pending`, see
/// [`crate::apply::durable`]), not one file at a time.
pub fn write_atomic(
    path: &Path,
    host_path: &str,
    content: &[u8],
    attrs: &Attrs,
    default_mode: u32,
    pending: &PendingSync,
) -> Result<(), TaskError> {
    let io = |e| TaskError::io(host_path, e);
    let dir = path
        .parent()
        .ok_or_else(|| TaskError::Invalid(format!("{host_path:?} has no parent directory")))?;
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Keep the mode and owner of an existing file unless the task sets them.
    let existing = std::fs::metadata(path).ok();
    let mut attrs = attrs.clone();
    if attrs.mode.is_none() {
        attrs.mode = Some(
            existing
                .as_ref()
                .map_or(default_mode, |m| m.mode() & 0o7777),
        );
    }
    if let Some(meta) = &existing {
        if attrs.owner.is_none() {
            attrs.owner = Some((meta.uid(), String::new()));
        }
        if attrs.group.is_none() {
            attrs.group = Some((meta.gid(), String::new()));
        }
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.driftless-{}", std::process::id()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(content)?;
        Ok::<(), std::io::Error>(())
    })()
    .map_err(io)
    .and_then(|()| attrs.apply(&tmp, host_path))
    .and_then(|()| std::fs::rename(&tmp, path).map_err(io));
    match &result {
        Ok(()) => pending.note(dir),
        Err(_) => {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    result
}

/// The desired state of a whole file, shared by `file`, `cron`, `lineInFile` and `blockInFile`.
#[derive(Clone, Debug, Default)]
pub struct DesiredFile {
    /// The host path.
    pub host_path: String,
    /// Content; `None` leaves the content of an existing file alone (and creates it empty).
    pub content: Option<String>,
    /// Mode, owner, group.
    pub attrs: Attrs,
    /// Mode of a new file when `attrs.mode` is unset.
    pub default_mode: u32,
    /// Content derived from a secret.
    pub sensitive: bool,
}

impl DesiredFile {
    /// Compares with the live file and plans the differences (`resource` names it in reports).
    pub fn plan(&self, ctx: &Context, resource: String) -> Result<Plan, TaskError> {
        let mut plan = Plan::new(resource);
        plan.sensitive = self.sensitive;
        let path = ctx.path(&self.host_path)?;
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => Some(meta),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(TaskError::io(&self.host_path, e)),
        };
        let Some(meta) = meta else {
            plan.set_change(driftless_crds::drift_report::ChangeType::Added);
            let content = self.content.as_deref().unwrap_or("");
            plan.content(None, Some(content));
            plan.diff = unified_diff(&self.host_path, "", content, ctx.redactor);
            self.attrs.plan_new(Some(self.default_mode), &mut plan);
            return Ok(plan);
        };
        if !meta.is_file() {
            return Err(TaskError::Invalid(format!(
                "{} exists and is not a regular file",
                self.host_path
            )));
        }
        if let Some(content) = &self.content {
            let live = read_optional(&path, &self.host_path)?.unwrap_or_default();
            if &live != content {
                plan.content(Some(&live), Some(content));
                plan.diff = unified_diff(&self.host_path, &live, content, ctx.redactor);
            }
        }
        self.attrs.plan(ctx, &meta, &mut plan);
        Ok(plan)
    }

    /// Makes the live file match: rewrites it when the content differs or it is missing, else
    /// fixes mode and owner in place.
    pub fn write(&self, ctx: &Context, plan: &Plan) -> Result<(), TaskError> {
        let path = ctx.path(&self.host_path)?;
        let rewrite = plan.attributes.iter().any(|a| a.path == "content");
        if rewrite {
            let content = match &self.content {
                Some(c) => c.clone(),
                None => read_optional(&path, &self.host_path)?.unwrap_or_default(),
            };
            write_atomic(
                &path,
                &self.host_path,
                content.as_bytes(),
                &self.attrs,
                self.default_mode,
                &ctx.root.pending,
            )
        } else {
            self.attrs.apply(&path, &self.host_path)
        }
    }
}

/// Reads a file as text; `None` when it does not exist.
pub fn read_optional(path: &Path, host_path: &str) -> Result<Option<String>, TaskError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TaskError::io(host_path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_print() {
        assert_eq!(parse_mode("0644").unwrap(), 0o644);
        assert_eq!(parse_mode("2755").unwrap(), 0o2755);
        assert_eq!(parse_mode("755").unwrap(), 0o755);
        for bad in ["0x644", "", "0999", "12", "77777"] {
            assert!(parse_mode(bad).is_err(), "{bad}");
        }
        assert_eq!(mode_text(0o100644), "0644");
    }
}
