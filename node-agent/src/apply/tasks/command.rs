//! `command`: run a program (below the root). It is never idempotent by itself: unguarded, it
//! runs on every apply and reports `changed`; `creates` (a path that exists) and `unless` (a
//! shell command that exits 0) make it `unchanged`.

use driftless_crds::apply_policy::CommandTask;
use driftless_crds::drift_report::ChangeType;

use super::{Context, Plan, Task, TaskError};

/// Helpers of this task type.
trait Helpers {
    fn argv(&self, ctx: &Context) -> Result<Vec<String>, TaskError>;
    fn display(&self) -> String;
}

impl Helpers for CommandTask {
    fn argv(&self, ctx: &Context) -> Result<Vec<String>, TaskError> {
        match (&self.argv, &self.shell) {
            (Some(argv), None) if !argv.is_empty() => argv
                .iter()
                .enumerate()
                .map(|(i, a)| Ok(ctx.expand(&format!("command.argv[{i}]"), a)?.value))
                .collect(),
            (None, Some(shell)) => Ok(vec![
                "/bin/sh".into(),
                "-c".into(),
                ctx.expand("command.shell", shell)?.value,
            ]),
            _ => Err(TaskError::Invalid(
                "set exactly one of command.argv (non-empty) and command.shell".into(),
            )),
        }
    }

    fn display(&self) -> String {
        match (&self.argv, &self.shell) {
            (Some(argv), _) => argv.join(" "),
            (None, Some(shell)) => shell.clone(),
            (None, None) => String::new(),
        }
    }
}

impl Task for CommandTask {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let first = match (&self.argv, &self.shell) {
            (Some(argv), _) => argv.first().cloned().unwrap_or_default(),
            _ => "/bin/sh".into(),
        };
        let mut plan = Plan::new(format!("command:{first}"));
        self.argv(ctx)?;
        if let Some(creates) = &self.creates {
            let path = ctx.path(creates)?;
            if std::fs::symlink_metadata(path).is_ok() {
                return Ok(plan);
            }
        }
        if let Some(unless) = &self.unless {
            let script = ctx.expand("command.unless", unless)?.value;
            let out = ctx.run(&["/bin/sh".into(), "-c".into(), script], &[])?;
            if out.success() {
                return Ok(plan);
            }
        }
        plan.set_change(ChangeType::Changed);
        let why = match (&self.creates, &self.unless) {
            (Some(c), _) => format!("{c} does not exist"),
            (None, Some(_)) => "unless exited non-zero".into(),
            (None, None) => "unguarded: runs on every apply".into(),
        };
        plan.attribute("run", Some(why), Some(self.display()));
        Ok(plan)
    }

    fn execute(&self, _plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let argv = self.argv(ctx)?;
        let env = self
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), ctx.expand(&format!("command.env.{k}"), v)?.value)))
            .collect::<Result<Vec<_>, TaskError>>()?;
        let out = ctx
            .root
            .run(&argv, &env, self.cwd.as_deref(), ctx.deadline)?;
        if !out.success() {
            return Err(ctx.exit_error(&argv, &out));
        }
        Ok(())
    }
}
