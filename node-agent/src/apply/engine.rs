//! The execution model of an apply.
//!
//! Guarantees:
//! - Policies run in configuration order (files sorted by path, documents in file order); tasks
//!   in list order; a policy whose `when` templates do not compile never starts (the loader has
//!   already refused anything else invalid).
//! - A task is skipped when `--only` names other tasks, `--skip` names it, or its `when` is
//!   false. A task whose `when` cannot be evaluated fails.
//! - Each task is planned first; only a plan with a change is executed, and never in a dry run
//!   or an `Audit` policy (those report `changed` meaning "would change").
//! - A failed task stops its policy: later tasks and all handlers are reported `skipped`, unless
//!   the task has `ignoreErrors`. Other policies still run. In a dry run or an `Audit` policy
//!   nothing was changed, so later tasks are still checked: the report shows all the drift.
//! - Handlers named by `notify` of a changed task run once each, after the tasks, in handler
//!   order. `--only` does not deselect them (a selected task's restart still happens); `--skip`
//!   does.
//! - `timeout`: commands are killed when it runs out, and a task that took longer fails.
//!
//! - Files a policy wrote are flushed to disk (one `syncfs` per filesystem) before its report
//!   is made; see [`super::durable`].
//!
//! Caveat: a timeout does not interrupt file operations in progress; they are short and
//! bounded by the file's size.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use driftless_crds::apply_policy::{ApplyMode, ApplyPolicySpec, Task};
use driftless_crds::secret::{references, Lookup, Redactor, RefKind};
use serde_json::Value;

use super::report::{ApplyReport, PolicyReport, Status, TaskReport};
use super::root::Root;
use super::tasks::{self, Context};
use super::template::Templates;
use crate::config::Config;
use crate::drift::ignore::{self, Rule};

/// What an apply is allowed to do and which tasks it selects.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Change nothing; report what would change.
    pub dry_run: bool,
    /// Run only the tasks with these names (empty: all). Handlers they notify still run.
    pub only: Vec<String>,
    /// Skip the tasks (and handlers) with these names.
    pub skip: Vec<String>,
}

/// The host side of an apply.
pub struct Environment<'a> {
    /// The host root.
    pub root: &'a Root,
    /// Facts (`facts` in templates).
    pub facts: &'a Value,
    /// Secrets and environment variables.
    pub secrets: &'a dyn Lookup,
    /// The configuration directory.
    pub config_dir: &'a Path,
}

/// Applies every ApplyPolicy of a loaded configuration, in order.
pub fn apply(config: &Config, env: &Environment, options: &Options) -> ApplyReport {
    apply_with(config, env, options, &Templates::new())
}

/// [`apply`] with templates that may already be parsed (by [`super::validate::check_with`]),
/// so a run parses each template once.
pub fn apply_with(
    config: &Config,
    env: &Environment,
    options: &Options,
    templates: &Templates,
) -> ApplyReport {
    let mut report = ApplyReport {
        dry_run: options.dry_run,
        policies: Vec::new(),
    };
    for loaded in config.of_kind("ApplyPolicy") {
        if let driftless_crds::resource::Resource::ApplyPolicy(policy) = &loaded.resource {
            let name = policy.metadata.name.clone().unwrap_or_default();
            report.policies.push(apply_policy(
                &name,
                &loaded.origin.to_string(),
                &policy.spec,
                env,
                options,
                templates,
            ));
        }
    }
    report
}

/// Every secret value a policy's fields refer to, for redaction.
pub fn policy_redactor(spec: &ApplyPolicySpec, secrets: &dyn Lookup) -> Redactor {
    let mut values = Vec::new();
    let json = serde_json::to_value(spec).unwrap_or(Value::Null);
    let mut stack = vec![&json];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => {
                for r in references(s).unwrap_or_default() {
                    if r.kind == RefKind::Secret {
                        values.extend(secrets.secret(&r.name));
                    }
                }
            }
            Value::Array(a) => stack.extend(a.iter()),
            Value::Object(o) => stack.extend(o.values()),
            _ => {}
        }
    }
    for declared in &spec.secrets {
        values.extend(secrets.secret(&declared.name));
    }
    Redactor::new(values)
}

/// Why a task is not selected, if it is not.
fn deselected(name: &str, options: &Options) -> Option<String> {
    if options.skip.iter().any(|s| s == name) {
        return Some("--skip".into());
    }
    if !options.only.is_empty() && !options.only.iter().any(|o| o == name) {
        return Some("not selected by --only".into());
    }
    None
}

/// Applies one policy.
pub fn apply_policy(
    name: &str,
    origin: &str,
    spec: &ApplyPolicySpec,
    env: &Environment,
    options: &Options,
    templates: &Templates,
) -> PolicyReport {
    let check_only = options.dry_run || spec.mode == ApplyMode::Audit;
    let redactor = policy_redactor(spec, env.secrets);
    let vars = serde_json::to_value(&spec.vars).unwrap_or(Value::Null);
    let mut report = PolicyReport {
        policy: name.into(),
        origin: origin.into(),
        mode: spec.mode,
        check_only,
        tasks: Vec::new(),
    };
    let rules = match crate::drift::ignore::compile(&spec.ignore) {
        Ok(rules) => rules,
        Err(e) => {
            for task in &spec.tasks {
                report.tasks.push(TaskReport::failed(
                    &task.name,
                    task.action.key(),
                    format!("policy not started: spec.{e}"),
                ));
            }
            return report;
        }
    };
    // A policy with plugin filters gets templates of its own, so its filters reach no other
    // policy's templates.
    let own_templates;
    let templates = if spec.template_filters.is_empty() {
        templates
    } else {
        match Templates::with_plugin_filters(&spec.template_filters, env.root.dir()) {
            Ok(t) => {
                own_templates = t;
                &own_templates
            }
            Err(e) => {
                for task in &spec.tasks {
                    report.tasks.push(TaskReport::failed(
                        &task.name,
                        task.action.key(),
                        format!("policy not started: {e}"),
                    ));
                }
                return report;
            }
        }
    };
    let run = |task: &Task| -> TaskReport {
        let kind = task.action.key();
        let started = Instant::now();
        let ctx = Context {
            root: env.root,
            dry_run: check_only,
            facts: env.facts,
            vars: &vars,
            secrets: env.secrets,
            redactor: &redactor,
            templates,
            config_dir: env.config_dir,
            task: &task.name,
            deadline: task.timeout.as_ref().map(|t| started + t.get()),
        };
        let mut r = run_task(task, &ctx, check_only, &rules);
        let elapsed = started.elapsed();
        if let Some(timeout) = &task.timeout {
            if elapsed > timeout.get() && r.status != Status::Failed {
                r = TaskReport::failed(
                    &task.name,
                    kind,
                    format!("timed out: took {elapsed:.1?}, timeout is {timeout}"),
                );
            }
        }
        r.redact_message(&redactor);
        r.duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        r
    };
    let mut notified = BTreeSet::new();
    let mut stopped: Option<String> = None;
    for task in &spec.tasks {
        let kind = task.action.key();
        if let Some(failed) = &stopped {
            report.tasks.push(TaskReport::skipped(
                &task.name,
                kind,
                format!("task {failed:?} failed earlier"),
            ));
            continue;
        }
        if let Some(why) = deselected(&task.name, options) {
            report
                .tasks
                .push(TaskReport::skipped(&task.name, kind, why));
            continue;
        }
        let r = run(task);
        tracing::debug!(policy = name, task = %task.name, status = r.status.as_str(), "task done");
        if r.status == Status::Changed {
            notified.extend(task.notify.iter().cloned());
        }
        if r.status == Status::Failed && !task.ignore_errors && !check_only {
            stopped = Some(task.name.clone());
        }
        report.tasks.push(r);
    }
    for handler in &spec.handlers {
        if !notified.contains(&handler.name) {
            continue;
        }
        let kind = handler.action.key();
        let mut r = if let Some(failed) = &stopped {
            TaskReport::skipped(
                &handler.name,
                kind,
                format!("task {failed:?} failed earlier"),
            )
        } else if let Some(why) = options
            .skip
            .iter()
            .any(|s| s == &handler.name)
            .then(|| "--skip".to_owned())
        {
            TaskReport::skipped(&handler.name, kind, why)
        } else {
            run(handler)
        };
        r.handler = true;
        if r.status == Status::Failed && !handler.ignore_errors && !check_only {
            stopped = Some(handler.name.clone());
        }
        report.tasks.push(r);
    }
    flush(env.root, &mut report);
    report
}

/// Flushes the policy's writes to disk before it is reported (see [`super::durable`]); when
/// that fails, what it changed is not known to be on disk, so those tasks fail.
fn flush(root: &Root, report: &mut PolicyReport) {
    if root.pending.is_empty() {
        return;
    }
    if let Err(e) = root.pending.flush() {
        tracing::error!(policy = %report.policy, error = %e, "cannot flush written files to disk");
        for task in &mut report.tasks {
            if task.status == Status::Changed {
                task.status = Status::Failed;
                task.message = Some(format!("written, but not flushed to disk: {e}"));
            }
        }
    }
}

/// `when`, plan, and (unless checking only) execute.
fn run_task(task: &Task, ctx: &Context, check_only: bool, rules: &[Rule]) -> TaskReport {
    let kind = task.action.key();
    if let Some(when) = &task.when {
        match ctx.templates.when(&task.name, when, ctx.facts, ctx.vars) {
            Ok(true) => {}
            Ok(false) => return TaskReport::skipped(&task.name, kind, "when is false"),
            Err(e) => return TaskReport::failed(&task.name, kind, e.to_string()),
        }
    }
    let module = tasks::task(&task.action);
    let mut plan = match module.plan(ctx) {
        Ok(plan) => plan,
        Err(e) => return TaskReport::failed(&task.name, kind, e.to_string()),
    };
    if let Some(reason) = ignore::filter(rules, &task.name, &mut plan) {
        let mut r =
            TaskReport::new(&task.name, kind, Status::Unchanged).with_plan(&plan, ctx.redactor);
        r.message = Some(format!("drift ignored: {reason}"));
        return r;
    }
    if !plan.is_change() {
        return TaskReport::new(&task.name, kind, Status::Unchanged).with_plan(&plan, ctx.redactor);
    }
    let report = TaskReport::new(&task.name, kind, Status::Changed).with_plan(&plan, ctx.redactor);
    if check_only {
        return report;
    }
    match module.execute(&plan, ctx) {
        Ok(()) => report,
        Err(e) => {
            let mut failed = report;
            failed.status = Status::Failed;
            failed.message = Some(e.to_string());
            failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_and_skip_select_tasks() {
        let o = Options {
            only: vec!["a".into()],
            skip: vec!["b".into()],
            ..Options::default()
        };
        assert_eq!(deselected("a", &o), None);
        assert_eq!(deselected("b", &o).as_deref(), Some("--skip"));
        assert_eq!(
            deselected("c", &o).as_deref(),
            Some("not selected by --only")
        );
        assert_eq!(deselected("c", &Options::default()), None);
    }
}
