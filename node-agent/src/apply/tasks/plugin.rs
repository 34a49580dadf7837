//! `plugin`: a task type from a WebAssembly plugin (docs/plugins.md). The plugin plans (its
//! granted directories read-only) and applies (write grants writable) through the same
//! contract as the built-in types, so dry runs, drift checks, `ignore` rules and audit records
//! treat it like any other task.

use driftless_crds::drift_report::{AttributeChange, ChangeType};
use driftless_crds::plugin::PluginUse;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{Context, Plan, Task, TaskError};
use crate::plugins::{Instance, Kind, Plugin, DEFAULT_FUEL};

/// A plan as a plugin returns it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginPlan {
    resource: String,
    #[serde(default)]
    change: Option<ChangeType>,
    #[serde(default)]
    attributes: Vec<AttributeChange>,
    #[serde(default)]
    diff: Option<String>,
}

fn instance(use_: &PluginUse, ctx: &Context) -> Result<Instance, TaskError> {
    let plugin = Plugin::for_use(use_).map_err(|e| TaskError::Invalid(e.to_string()))?;
    Instance::new(plugin, use_, Kind::Task, ctx.root.dir(), DEFAULT_FUEL)
        .map_err(|e| TaskError::Invalid(e.to_string()))
}

/// Turns a plugin's plan into the engine's, secrets masked. Pure.
pub fn to_plan(
    name: &str,
    value: Value,
    ctx_redact: &dyn Fn(&str) -> String,
) -> Result<Plan, String> {
    let p: PluginPlan = serde_json::from_value(value)
        .map_err(|e| format!("plugin {name}: driftless_task_plan: not a plan: {e}"))?;
    if p.resource.is_empty() || p.resource.len() > 4096 {
        return Err(format!(
            "plugin {name}: driftless_task_plan: resource: expected 1 to 4096 bytes"
        ));
    }
    let mut plan = Plan::new(ctx_redact(&p.resource));
    if let Some(change) = p.change {
        plan.set_change(change);
        for a in p.attributes {
            plan.attributes.push(AttributeChange {
                path: ctx_redact(&a.path),
                before: a.before.map(|v| ctx_redact(&v)),
                after: a.after.map(|v| ctx_redact(&v)),
            });
        }
        plan.diff = p.diff.map(|d| ctx_redact(&d));
    }
    Ok(plan)
}

/// The plan in the ABI's shape, for `driftless_task_apply`.
fn plan_json(plan: &Plan) -> Value {
    json!({
        "resource": plan.resource,
        "change": plan.change,
        "attributes": plan.attributes,
        "diff": plan.diff,
    })
}

impl Task for PluginUse {
    fn plan(&self, ctx: &Context) -> Result<Plan, TaskError> {
        let mut instance = instance(self, ctx)?;
        let out = instance
            .call(
                "driftless_task_plan",
                &json!({ "dryRun": ctx.dry_run }),
                false,
            )
            .map_err(|e| TaskError::Invalid(ctx.redactor.redact(&e.to_string()).into_owned()))?;
        let redact = |s: &str| ctx.redactor.redact(s).into_owned();
        to_plan(&self.name, out, &redact).map_err(TaskError::Invalid)
    }

    fn execute(&self, plan: &Plan, ctx: &Context) -> Result<(), TaskError> {
        let mut instance = instance(self, ctx)?;
        instance
            .call(
                "driftless_task_apply",
                &json!({ "plan": plan_json(plan) }),
                true,
            )
            .map_err(|e| TaskError::Invalid(ctx.redactor.redact(&e.to_string()).into_owned()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_plans_become_engine_plans() {
        let same = |s: &str| s.replace("hunter2", "<redacted>");
        let plan = to_plan(
            "motd",
            json!({"resource": "motd:/etc/motd", "change": "changed",
                   "attributes": [{"path": "content", "before": "a", "after": "hunter2"}],
                   "diff": null}),
            &same,
        )
        .unwrap();
        assert_eq!(plan.resource, "motd:/etc/motd");
        assert_eq!(plan.change, Some(ChangeType::Changed));
        assert_eq!(plan.attributes[0].after.as_deref(), Some("<redacted>"));
        let in_sync = to_plan(
            "motd",
            json!({"resource": "motd:/etc/motd", "change": null, "attributes": [], "diff": null}),
            &same,
        )
        .unwrap();
        assert!(!in_sync.is_change());
        let err = to_plan("motd", json!({"change": "sideways"}), &same).unwrap_err();
        assert!(
            err.starts_with("plugin motd: driftless_task_plan: not a plan"),
            "{err}"
        );
    }
}
