//! `package`: install, pin or remove a package with the host's package manager (apt/dpkg,
//! dnf/rpm or apk, detected from the root's package database when `manager: auto`).
//!
//! A task with a `version` installs exactly that version (up- or downgrading) and holds it so
//! routine upgrades leave it alone; without a version any installed version is accepted.

use driftless_crds::apply_policy::PackageTask;
use driftless_crds::common::Presence;
use driftless_crds::drift_report::ChangeType;

use super::{Context, Plan, Task, TaskError};
use crate::apply::backends::{package_backend, PackageBackend, PackageState};

/// What differs between the installed state and the task, as report attributes.
pub fn decide(task: &PackageTask, state: &PackageState) -> Plan {
    let mut plan = Plan::new(format!("package:{}", task.name));
    match task.state {
        Presence::Present => match (&state.version, &task.version) {
            (None, want) => {
                plan.set_change(ChangeType::Added);
                plan.attribute(
                    "version",
                    None,
                    Some(want.clone().unwrap_or_else(|| "any".into())),
                );
                if want.is_some() {
                    plan.attribute("held", None, Some("true".into()));
                }
            }
            (Some(have), Some(want)) => {
                if have != want {
                    plan.attribute("version", Some(have.clone()), Some(want.clone()));
                }
                if !state.held {
                    plan.attribute("held", Some("false".into()), Some("true".into()));
                }
            }
            (Some(_), None) => {}
        },
        Presence::Absent => {
            if let Some(have) = &state.version {
                plan.set_change(ChangeType::Removed);
                plan.attribute("version", Some(have.clone()), None);
            }
        }
    }
    plan
}

fn backend_for(task: &PackageTask, ctx: &Context) -> Result<Box<dyn PackageBackend>, TaskError> {
    if task.name.is_empty() || task.name.starts_with('-') || task.name.contains(char::is_whitespace)
    {
        return Err(TaskError::Invalid(format!(
            "package.name {:?} is not a package name",
            task.name
        )));
    }
    Ok(package_backend(&ctx.root.paths, task.manager)?)
}

impl Task for PackageTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let backend = backend_for(self, ctx)?;
        let state = backend.query(&self.name)?;
        Ok(decide(self, &state))
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let backend = backend_for(self, ctx)?;
        let state = backend.query(&self.name)?;
        match self.state {
            Presence::Present => {
                let wrong_version = match (&state.version, &self.version) {
                    (None, _) => true,
                    (Some(have), Some(want)) => have != want,
                    (Some(_), None) => false,
                };
                if wrong_version {
                    backend.install(&self.name, self.version.as_deref())?;
                }
                if let Some(version) = &self.version {
                    backend.set_held(&self.name, version, true)?;
                }
            }
            Presence::Absent => {
                if state.version.is_some() {
                    backend.remove(&self.name)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use driftless_crds::apply_policy::PackageManager;

    fn task(version: Option<&str>, state: Presence) -> PackageTask {
        PackageTask {
            name: "nginx".into(),
            state,
            version: version.map(Into::into),
            manager: PackageManager::Auto,
        }
    }

    fn installed(version: &str, held: bool) -> PackageState {
        PackageState {
            version: Some(version.into()),
            held,
        }
    }

    #[test]
    fn decides_install_pin_and_removal() {
        let missing = decide(
            &task(Some("1.2"), Presence::Present),
            &PackageState::default(),
        );
        assert_eq!(missing.change, Some(ChangeType::Added));
        assert_eq!(missing.attributes.len(), 2);
        let any = decide(&task(None, Presence::Present), &installed("1.0", false));
        assert!(!any.is_change());
        let pinned = decide(
            &task(Some("1.0"), Presence::Present),
            &installed("1.0", true),
        );
        assert!(!pinned.is_change());
        let unheld = decide(
            &task(Some("1.0"), Presence::Present),
            &installed("1.0", false),
        );
        assert_eq!(unheld.attributes[0].path, "held");
        let other = decide(
            &task(Some("2.0"), Presence::Present),
            &installed("1.0", true),
        );
        assert_eq!(other.change, Some(ChangeType::Changed));
        assert_eq!(other.attributes[0].before.as_deref(), Some("1.0"));
        assert_eq!(other.attributes[0].after.as_deref(), Some("2.0"));
        let remove = decide(&task(None, Presence::Absent), &installed("1.0", false));
        assert_eq!(remove.change, Some(ChangeType::Removed));
        assert!(!decide(&task(None, Presence::Absent), &PackageState::default()).is_change());
    }
}
