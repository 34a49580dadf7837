//! Shared helpers of the `system_*` tests: run one task against a temporary root the way the
//! engine does (plan, then execute when the plan has a change).

#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;

use driftless_agent::apply::root::Root;
use driftless_agent::apply::tasks::{Context, Plan, Task};
use driftless_agent::apply::template::Templates;
use driftless_crds::secret::{MapLookup, Redactor, SecretString};

/// Secrets for a test.
pub fn secrets(pairs: &[(&str, &str)]) -> MapLookup {
    let mut lookup = MapLookup::default();
    for (name, value) in pairs {
        lookup
            .secrets
            .insert((*name).into(), SecretString::new(*value));
    }
    lookup
}

/// Plans the task below `root`, executes it when something differs, and returns the plan (or
/// the error message).
pub fn apply(task: &dyn Task, root: &Path, lookup: &MapLookup) -> Result<Plan, String> {
    run(task, root, lookup, false)
}

/// Plans only (a dry run).
pub fn check(task: &dyn Task, root: &Path, lookup: &MapLookup) -> Result<Plan, String> {
    run(task, root, lookup, true)
}

fn run(task: &dyn Task, root: &Path, lookup: &MapLookup, dry_run: bool) -> Result<Plan, String> {
    let root = Root::new(root);
    let facts = serde_json::json!({});
    let vars = serde_json::json!({});
    let redactor = Redactor::new(lookup.secrets.values().cloned());
    let templates = Templates::new();
    let config_dir = Path::new("/nonexistent");
    let ctx = Context {
        root: &root,
        dry_run,
        facts: &facts,
        vars: &vars,
        secrets: lookup,
        redactor: &redactor,
        templates: &templates,
        config_dir,
        task: "test",
        deadline: None,
    };
    let plan = task.plan(&ctx).map_err(|e| e.to_string())?;
    if plan.is_change() && !dry_run {
        task.execute(&plan, &ctx).map_err(|e| e.to_string())?;
    }
    Ok(plan)
}

/// Applies twice: the first run must change something, the second nothing. Returns the first
/// run's plan.
pub fn converges(task: &dyn Task, root: &Path, lookup: &MapLookup) -> Plan {
    let first = apply(task, root, lookup).unwrap();
    assert!(first.is_change(), "first run changed nothing: {first:?}");
    let second = apply(task, root, lookup).unwrap();
    assert!(
        !second.is_change(),
        "second run was not unchanged: {second:?}"
    );
    first
}

/// The attribute's (before, after) in a plan.
pub fn attribute(plan: &Plan, path: &str) -> (Option<String>, Option<String>) {
    let a = plan
        .attributes
        .iter()
        .find(|a| a.path == path)
        .unwrap_or_else(|| panic!("no attribute {path} in {plan:?}"));
    (a.before.clone(), a.after.clone())
}

/// Fails with a message naming the tool script when a program is missing.
pub fn require_tool(program: &str, script: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{program} is not installed: run {script} (it installs what these tests need)"
    );
}
