//! Checks what the API types cannot: every `file.template` and `when` compiles, every host path
//! is absolute and stays below the root, every regular expression and ignore glob compiles,
//! every plugin is installed, of the right kind and accepts its `config`.
//! Called by `driftless validate` and before any apply.

use driftless_crds::apply_policy::TaskAction;
use driftless_crds::plugin::PluginUse;
use driftless_crds::resource::Resource;
use driftless_crds::validate::Problem;

use super::template::Templates;
use crate::config::{Config, ConfigError};
use crate::plugins::{Kind, Plugin};

/// Every template or `when` that does not compile, with file, resource and field path.
pub fn check(config: &Config) -> Vec<ConfigError> {
    check_with(config, &Templates::new())
}

/// [`check`], parsing templates into `templates`, which the apply that follows reuses.
pub fn check_with(config: &Config, templates: &Templates) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for loaded in &config.resources {
        let Resource::ApplyPolicy(policy) = &loaded.resource else {
            continue;
        };
        let label = format!(
            "ApplyPolicy/{}",
            policy.metadata.name.as_deref().unwrap_or_default()
        );
        let lists = [
            ("tasks", &policy.spec.tasks),
            ("handlers", &policy.spec.handlers),
        ];
        for (list, tasks) in lists {
            for (i, task) in tasks.iter().enumerate() {
                let mut problem = |field: &str, message: String| {
                    errors.push(ConfigError {
                        origin: Some(loaded.origin.clone()),
                        resource: Some(label.clone()),
                        problem: Problem::new(format!("spec.{list}[{i}].{field}"), message),
                    });
                };
                if let Some(when) = &task.when {
                    if let Err(e) = templates.check_expression(when) {
                        problem("when", format!("not a valid condition: {e}"));
                    }
                }
                if let TaskAction::Plugin(use_) = &task.action {
                    if let Some((field, message)) = plugin_problem(use_, Kind::Task) {
                        problem(&format!("plugin{field}"), message);
                    }
                }
                if let TaskAction::File(file) = &task.action {
                    if let Some(template) = &file.template {
                        if let Err(e) = templates.check_template(template) {
                            problem("file.template", format!("not a valid template: {e}"));
                        }
                    }
                }
                for (field, path) in paths(&task.action) {
                    if let Some(message) = path_problem(path) {
                        problem(&field, message);
                    }
                }
                for (field, pattern) in regexes(&task.action) {
                    if let Err(e) = driftless_crds::validate::check_regex(pattern) {
                        let first = e.to_string();
                        let last = first.lines().last().unwrap_or_default().trim().to_owned();
                        problem(
                            &field,
                            format!("{pattern:?} is not a regular expression: {last}"),
                        );
                    }
                }
            }
        }
        for (i, use_) in policy.spec.template_filters.iter().enumerate() {
            if let Some((field, message)) = plugin_problem(use_, Kind::Filter) {
                errors.push(ConfigError {
                    origin: Some(loaded.origin.clone()),
                    resource: Some(label.clone()),
                    problem: Problem::new(format!("spec.templateFilters[{i}]{field}"), message),
                });
            }
        }
        for (i, rule) in policy.spec.ignore.iter().enumerate() {
            let globs = [
                ("task", &rule.task),
                ("resource", &rule.resource),
                ("path", &rule.path),
            ];
            for (field, glob) in globs {
                if let Some(glob) = glob {
                    if let Err(e) = globset::Glob::new(glob) {
                        errors.push(ConfigError {
                            origin: Some(loaded.origin.clone()),
                            resource: Some(label.clone()),
                            problem: Problem::new(
                                format!("spec.ignore[{i}].{field}"),
                                format!("{glob:?} is not a glob: {}", e.kind()),
                            ),
                        });
                    }
                }
            }
        }
    }
    errors
}

/// What is wrong with a plugin use, checked before anything is applied so a policy never stops
/// half-way on it: a plugin that is not installed (and has no `url` to download it from), one
/// that is not a valid module or not of this kind, or a `config` its schema refuses. Returns
/// the field path below the use and the message.
fn plugin_problem(use_: &PluginUse, kind: Kind) -> Option<(&'static str, String)> {
    let installed = crate::plugins::settings()
        .dir
        .join(format!("{}.wasm", use_.name))
        .exists();
    if !installed && use_.url.is_some() {
        // Downloaded, and checked, when the policy runs.
        return None;
    }
    let plugin = match Plugin::for_use(use_) {
        Ok(p) => p,
        Err(e) => return Some(("", e.to_string())),
    };
    if !plugin.manifest.kinds.contains(&kind) {
        return Some((
            "",
            format!(
                "plugin {} is not a {kind} plugin (its manifest lists: {})",
                use_.name,
                crate::plugins::manifest::kinds_text(&plugin.manifest.kinds)
            ),
        ));
    }
    let config = serde_json::Value::Object(use_.config.0.clone().into_iter().collect());
    let problems = plugin.manifest.config_problems(&config);
    if problems.is_empty() {
        None
    } else {
        Some(("", format!("plugin {}: {}", use_.name, problems.join("; "))))
    }
}

/// The host paths of a task, with their field names.
fn paths(action: &TaskAction) -> Vec<(String, &str)> {
    let key = action.key();
    let fields: Vec<(&str, Option<&str>)> = match action {
        TaskAction::File(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::Directory(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::Symlink(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::LineInFile(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::BlockInFile(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::Mount(t) => vec![("path", Some(t.path.as_str()))],
        TaskAction::Command(t) => {
            vec![("creates", t.creates.as_deref()), ("cwd", t.cwd.as_deref())]
        }
        TaskAction::Plugin(t) => {
            let grants = [("read", &t.grants.read), ("write", &t.grants.write)];
            return grants
                .into_iter()
                .flat_map(|(f, list)| {
                    list.iter()
                        .enumerate()
                        .map(move |(i, p)| (format!("{key}.grants.{f}[{i}]"), p.as_str()))
                })
                .collect();
        }
        _ => Vec::new(),
    };
    fields
        .into_iter()
        .filter_map(|(f, p)| p.map(|p| (format!("{key}.{f}"), p)))
        .collect()
}

/// Why a host path is not acceptable, if it is not: relative, or climbing above `/`.
pub fn path_problem(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return Some(format!("{path:?} is not an absolute path"));
    }
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if depth == 0 {
                    return Some(format!("{path:?} escapes the host root through \"..\""));
                }
                depth -= 1;
            }
            _ => depth += 1,
        }
    }
    None
}

/// The regular expressions of a task, with their field names.
fn regexes(action: &TaskAction) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    fn anchors<'a>(v: &'a Option<String>, end: &str) -> Option<&'a str> {
        v.as_deref().filter(|s| *s != end)
    }
    match action {
        TaskAction::LineInFile(t) => {
            let fields = [
                ("regexp", t.regexp.as_deref()),
                ("insertAfter", anchors(&t.insert_after, "EOF")),
                ("insertBefore", anchors(&t.insert_before, "BOF")),
            ];
            for (f, p) in fields {
                if let Some(p) = p {
                    out.push((format!("lineInFile.{f}"), p));
                }
            }
        }
        TaskAction::BlockInFile(t) => {
            let fields = [
                ("insertAfter", anchors(&t.insert_after, "EOF")),
                ("insertBefore", anchors(&t.insert_before, "BOF")),
            ];
            for (f, p) in fields {
                if let Some(p) = p {
                    out.push((format!("blockInFile.{f}"), p));
                }
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute_and_stay_below_the_root() {
        assert_eq!(path_problem("/etc/motd"), None);
        assert_eq!(path_problem("/etc/../etc/motd"), None);
        assert_eq!(
            path_problem("/etc/../../x").as_deref(),
            Some("\"/etc/../../x\" escapes the host root through \"..\"")
        );
        assert_eq!(
            path_problem("etc/x").as_deref(),
            Some("\"etc/x\" is not an absolute path")
        );
    }
}
