//! `user`: a local account in the root's `/etc/passwd`, `/etc/shadow` and group files, written
//! directly with shadow-utils' locking (see [`crate::apply::backends::accounts`]).
//!
//! `passwordHash` must be a `${secret:NAME}` reference: a literal hash in the policy is refused,
//! and the hash never appears in reports (`<redacted>`).

use std::time::Duration;

use driftless_crds::apply_policy::UserTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;
use driftless_crds::secret::{references, RefKind, SecretString};

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::accounts::{
    create_home, read_db, read_login_defs, AccountDb, Change, LockedFiles, UserSpec,
};

/// How long to wait for another program (`useradd`, `passwd`) holding the account files.
pub const LOCK_WAIT: Duration = Duration::from_secs(10);

/// The account name rule (as `useradd` accepts by default on Debian).
pub fn valid_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    !body.is_empty()
        && name.len() <= 32
        && body.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(c))
}

/// Copies account changes into a plan (real values of masked ones aside, for audit digests).
pub fn record(plan: &mut Plan, changes: Vec<Change>) {
    for c in changes {
        if let Some(real) = c.real.0 {
            plan.real_before.insert(c.attribute.clone(), real);
        }
        if let Some(real) = c.real.1 {
            plan.real_after.insert(c.attribute.clone(), real);
        }
        plan.attribute(c.attribute, c.before, c.after);
    }
}

fn spec(task: &UserTask, ctx: &Context) -> Result<UserSpec, TaskError> {
    if !valid_name(&task.name) {
        return Err(TaskError::Invalid(format!(
            "user.name {:?} is not a valid account name",
            task.name
        )));
    }
    let password_hash = match &task.password_hash {
        None => None,
        Some(raw) => {
            let from_secret = references(raw)
                .map(|refs| refs.iter().any(|r| r.kind == RefKind::Secret))
                .unwrap_or(false);
            if !from_secret {
                return Err(TaskError::Invalid(
                    "user.passwordHash must come from a secret (${secret:NAME}); a literal hash in the policy is refused".into(),
                ));
            }
            Some(SecretString::new(
                ctx.expand("user.passwordHash", raw)?.value,
            ))
        }
    };
    Ok(UserSpec {
        name: task.name.clone(),
        uid: task.uid,
        group: task.group.clone(),
        groups: task.groups.clone(),
        append: task.append,
        shell: task.shell.clone(),
        home: task.home.clone(),
        system: task.system,
        comment: task.comment.clone(),
        password_hash,
    })
}

/// Applies the task to the account files in memory.
fn change(task: &UserTask, db: &mut AccountDb, ctx: &Context) -> Result<Vec<Change>, TaskError> {
    match task.state {
        Presence::Present => {
            let defs = read_login_defs(&ctx.path("/etc")?)?;
            Ok(db.ensure_user(&spec(task, ctx)?, &defs)?)
        }
        Presence::Absent => {
            if !valid_name(&task.name) {
                return Err(TaskError::Invalid(format!(
                    "user.name {:?} is not a valid account name",
                    task.name
                )));
            }
            Ok(db.remove_user(&task.name)?)
        }
    }
}

/// The home directory to create, when `createHome` is set and it is missing.
fn missing_home(
    task: &UserTask,
    db: &AccountDb,
    ctx: &Context,
) -> Result<Option<String>, TaskError> {
    if !task.create_home || task.state == Presence::Absent {
        return Ok(None);
    }
    let home = match db.passwd.get(&task.name) {
        Some(entry) => entry[5].clone(),
        None => return Ok(None),
    };
    if home.is_empty() || home == "/" || !home.starts_with('/') {
        return Err(TaskError::Invalid(format!(
            "user.home {home:?} is not a directory to create"
        )));
    }
    Ok((!ctx.path(&home)?.exists()).then_some(home))
}

impl Task for UserTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut db = read_db(&ctx.path("/etc")?)?;
        let existed = db.passwd.get(&self.name).is_some();
        let changes = change(self, &mut db, ctx)?;
        let mut plan = Plan::new(format!("user:{}", self.name));
        record(&mut plan, changes);
        if let Some(home) = missing_home(self, &db, ctx)? {
            plan.attribute("homeDirectory", None, Some(home));
        }
        if plan.is_change() {
            match (existed, self.state) {
                (false, Presence::Present) => plan.set_change(ChangeType::Added),
                (true, Presence::Absent) => plan.set_change(ChangeType::Removed),
                _ => {}
            }
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let etc = ctx.path("/etc")?;
        let db = {
            let files = LockedFiles::lock(&etc, LOCK_WAIT)?;
            let mut db = files.read()?;
            if !change(self, &mut db, ctx)?.is_empty() {
                files.write(&db)?;
            }
            db
        };
        if let Some(home) = missing_home(self, &db, ctx)? {
            let entry = db.passwd.get(&self.name).cloned().unwrap_or_default();
            let (uid, gid) = (
                entry.get(2).and_then(|v| v.parse().ok()).unwrap_or(0),
                entry.get(3).and_then(|v| v.parse().ok()).unwrap_or(0),
            );
            let defs = read_login_defs(&etc)?;
            create_home(
                &ctx.path(&home)?,
                &ctx.path("/etc/skel")?,
                uid,
                gid,
                defs.home_mode,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for good in ["alice", "_svc", "build-01", "host$", "a.b"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "1abc",
            "a b",
            "a:b",
            "-x",
            "$",
            &"a".repeat(33),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
