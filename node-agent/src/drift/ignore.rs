//! `spec.ignore`: known drift kept out of reports and left alone when enforcing.
//!
//! A rule matches when every field it sets matches: `task` is a glob over task names,
//! `resource` a glob over `TYPE:KEY`, `path` a glob over the resource key (the path or sysctl
//! key) or over attribute names. A rule whose `path` matches only some attributes removes those
//! attributes; a plan left with no attributes is in sync.

use driftless_crds::apply_policy::IgnoreRule;
use globset::{Glob, GlobMatcher};

use crate::apply::report::Plan;

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct Rule {
    task: Option<GlobMatcher>,
    resource: Option<GlobMatcher>,
    path: Option<GlobMatcher>,
    /// Why the drift is accepted.
    pub reason: String,
}

fn glob(field: &str, pattern: &str) -> Result<GlobMatcher, String> {
    Glob::new(pattern)
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("ignore.{field}: {pattern:?} is not a glob: {e}"))
}

/// Compiles a policy's rules.
pub fn compile(rules: &[IgnoreRule]) -> Result<Vec<Rule>, String> {
    rules
        .iter()
        .map(|r| {
            Ok(Rule {
                task: r.task.as_deref().map(|p| glob("task", p)).transpose()?,
                resource: r
                    .resource
                    .as_deref()
                    .map(|p| glob("resource", p))
                    .transpose()?,
                path: r.path.as_deref().map(|p| glob("path", p)).transpose()?,
                reason: r.reason.clone().unwrap_or_else(|| "ignored".into()),
            })
        })
        .collect()
}

/// Removes the ignored part of a plan. Returns the reason when something was ignored and the
/// plan has no change left.
pub fn filter(rules: &[Rule], task: &str, plan: &mut Plan) -> Option<String> {
    if !plan.is_change() {
        return None;
    }
    let key = plan
        .resource
        .split_once(':')
        .map_or(plan.resource.as_str(), |(_, k)| k)
        .to_owned();
    for rule in rules {
        if rule.task.as_ref().is_some_and(|g| !g.is_match(task))
            || rule
                .resource
                .as_ref()
                .is_some_and(|g| !g.is_match(&plan.resource))
        {
            continue;
        }
        match &rule.path {
            None => {
                *plan = Plan::new(plan.resource.clone());
                return Some(rule.reason.clone());
            }
            Some(g) if g.is_match(&key) => {
                *plan = Plan::new(plan.resource.clone());
                return Some(rule.reason.clone());
            }
            Some(g) => {
                let before = plan.attributes.len();
                plan.attributes.retain(|a| !g.is_match(&a.path));
                if plan.attributes.len() != before {
                    if !plan.attributes.iter().any(|a| a.path == "content") {
                        plan.diff = None;
                    }
                    if plan.attributes.is_empty() {
                        *plan = Plan::new(plan.resource.clone());
                        return Some(rule.reason.clone());
                    }
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(task: Option<&str>, resource: Option<&str>, path: Option<&str>) -> IgnoreRule {
        IgnoreRule {
            task: task.map(Into::into),
            resource: resource.map(Into::into),
            path: path.map(Into::into),
            reason: Some("known".into()),
        }
    }

    fn plan() -> Plan {
        let mut p = Plan::new("file:/etc/motd");
        p.attribute("mode", Some("0600".into()), Some("0644".into()));
        p.attribute("content", Some("a".into()), Some("b".into()));
        p.diff = Some("diff".into());
        p
    }

    #[test]
    fn rules_match_on_every_field_they_set() {
        let rules = compile(&[rule(Some("mo*"), None, None)]).unwrap();
        let mut p = plan();
        assert_eq!(filter(&rules, "motd", &mut p).as_deref(), Some("known"));
        assert!(!p.is_change());
        let mut p = plan();
        assert_eq!(filter(&rules, "other", &mut p), None);
        assert!(p.is_change());

        let rules = compile(&[rule(None, Some("file:/etc/*"), Some("mode"))]).unwrap();
        let mut p = plan();
        assert_eq!(filter(&rules, "motd", &mut p), None);
        assert_eq!(p.attributes.len(), 1);
        assert_eq!(p.attributes[0].path, "content");

        let rules = compile(&[rule(None, None, Some("/etc/**"))]).unwrap();
        let mut p = plan();
        assert!(filter(&rules, "motd", &mut p).is_some());
        assert!(compile(&[rule(Some("a[b"), None, None)]).is_err());
    }
}
