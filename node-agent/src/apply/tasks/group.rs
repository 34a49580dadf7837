//! `group`: a local group in the root's `/etc/group` and `/etc/gshadow`, written directly with
//! shadow-utils' locking (see [`crate::apply::backends::accounts`]).

use driftless_crds::apply_policy::GroupTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::user::{record, valid_name, LOCK_WAIT};
use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::accounts::{
    read_db, read_login_defs, AccountDb, Change, GroupSpec, LockedFiles,
};

fn change(task: &GroupTask, db: &mut AccountDb, ctx: &Context) -> Result<Vec<Change>, TaskError> {
    if !valid_name(&task.name) {
        return Err(TaskError::Invalid(format!(
            "group.name {:?} is not a valid group name",
            task.name
        )));
    }
    match task.state {
        Presence::Present => {
            let defs = read_login_defs(&ctx.path("/etc")?)?;
            let spec = GroupSpec {
                name: task.name.clone(),
                gid: task.gid,
                system: task.system,
            };
            Ok(db.ensure_group(&spec, &defs)?)
        }
        Presence::Absent => Ok(db.remove_group(&task.name)?),
    }
}

impl Task for GroupTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut db = read_db(&ctx.path("/etc")?)?;
        let existed = db.group.get(&self.name).is_some();
        let changes = change(self, &mut db, ctx)?;
        let mut plan = Plan::new(format!("group:{}", self.name));
        record(&mut plan, changes);
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
        let files = LockedFiles::lock(&ctx.path("/etc")?, LOCK_WAIT)?;
        let mut db = files.read()?;
        if !change(self, &mut db, ctx)?.is_empty() {
            files.write(&db)?;
        }
        Ok(())
    }
}
