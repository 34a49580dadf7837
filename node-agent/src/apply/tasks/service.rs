//! `service`: a systemd unit, enabled at boot or not (`systemctl --root` on any root, no running
//! systemd needed) and started, stopped, restarted or reloaded (only with `--root /` and
//! systemd as PID 1; otherwise the task fails and says why).

use driftless_crds::apply_policy::{ServiceState, ServiceTask};

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::systemd::{unit_name, Enablement, Systemd};

fn unit(task: &ServiceTask) -> Result<String, TaskError> {
    if task.name.is_empty() || task.name.starts_with('-') || task.name.contains(['/', ' ', '\n']) {
        return Err(TaskError::Invalid(format!(
            "service.name {:?} is not a unit name",
            task.name
        )));
    }
    Ok(unit_name(&task.name))
}

/// The enablement change needed: `Some(true)` to enable, `Some(false)` to disable.
fn enablement_change(
    task: &ServiceTask,
    sd: &Systemd,
    unit: &str,
    ctx: &Context,
) -> Result<Option<bool>, TaskError> {
    let Some(want) = task.enabled else {
        return Ok(None);
    };
    match sd.is_enabled(unit)? {
        Enablement::NotFound => Err(TaskError::Invalid(format!(
            "unit {unit} has no unit file below {}",
            ctx.root.dir().display()
        ))),
        Enablement::Masked if want => Err(TaskError::Invalid(format!(
            "unit {unit} is masked: unmask it before enabling it"
        ))),
        Enablement::Masked | Enablement::Disabled => Ok(want.then_some(true)),
        Enablement::Enabled(_) => Ok((!want).then_some(false)),
        Enablement::Fixed(kind) => Err(TaskError::Invalid(format!(
            "unit {unit} is {kind}: it has no [Install] section to enable or disable"
        ))),
    }
}

impl Task for ServiceTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let unit = unit(self)?;
        let sd = Systemd::new(&ctx.root.paths);
        let mut plan = Plan::new(format!("service:{unit}"));
        if let Some(enable) = enablement_change(self, &sd, &unit, ctx)? {
            plan.attribute(
                "enabled",
                Some((!enable).to_string()),
                Some(enable.to_string()),
            );
        }
        if let Some(state) = self.state {
            let active = sd.is_active(&unit)?;
            let before = if active { "started" } else { "stopped" };
            match state {
                ServiceState::Started if !active => {
                    plan.attribute("state", Some(before.into()), Some("started".into()))
                }
                ServiceState::Stopped if active => {
                    plan.attribute("state", Some(before.into()), Some("stopped".into()))
                }
                ServiceState::Restarted => {
                    plan.attribute("state", Some(before.into()), Some("restarted".into()))
                }
                ServiceState::Reloaded => {
                    plan.attribute("state", Some(before.into()), Some("reloaded".into()))
                }
                _ => {}
            }
        }
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let unit = unit(self)?;
        let sd = Systemd::new(&ctx.root.paths);
        if self.daemon_reload {
            sd.daemon_reload()?;
        }
        if let Some(enable) = enablement_change(self, &sd, &unit, ctx)? {
            sd.set_enabled(&unit, enable)?;
        }
        if let Some(state) = self.state {
            let active = sd.is_active(&unit)?;
            match state {
                ServiceState::Started if !active => sd.control("start", &unit)?,
                ServiceState::Stopped if active => sd.control("stop", &unit)?,
                ServiceState::Restarted => sd.control("restart", &unit)?,
                ServiceState::Reloaded => sd.control("reload", &unit)?,
                _ => {}
            }
        }
        Ok(())
    }
}
