//! A Driftless resource read from a document: kind dispatch, schema and CEL checks, typed
//! deserialization, and the checks a schema cannot express.

use std::collections::BTreeSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::secret::{references, RefKind};
use crate::validate::Problem;
use crate::{generate, ApplyPolicy, DriftScan, FactsPolicy, LogPipeline, API_VERSION};

/// A resource a configuration directory may hold.
#[derive(Clone, Debug)]
pub enum Resource {
    /// Desired host state.
    ApplyPolicy(Box<ApplyPolicy>),
    /// Facts and metrics.
    FactsPolicy(Box<FactsPolicy>),
    /// Log forwarding.
    LogPipeline(Box<LogPipeline>),
    /// IaC drift detection (validated standalone; run by the operator in a cluster).
    DriftScan(Box<DriftScan>),
}

/// Kinds a configuration may hold, for messages.
pub const KINDS: &[&str] = &["ApplyPolicy", "FactsPolicy", "LogPipeline", "DriftScan"];

impl Resource {
    /// The kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::ApplyPolicy(_) => "ApplyPolicy",
            Resource::FactsPolicy(_) => "FactsPolicy",
            Resource::LogPipeline(_) => "LogPipeline",
            Resource::DriftScan(_) => "DriftScan",
        }
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        let meta = match self {
            Resource::ApplyPolicy(r) => &r.metadata,
            Resource::FactsPolicy(r) => &r.metadata,
            Resource::LogPipeline(r) => &r.metadata,
            Resource::DriftScan(r) => &r.metadata,
        };
        meta.name.as_deref().unwrap_or_default()
    }
}

/// `KIND/NAME` of a raw document, as far as it can be read, for messages.
pub fn label(doc: &Value) -> String {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = doc
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    format!("{kind}/{name}")
}

/// Reads one document as a resource, reporting every problem found.
pub fn parse(mut doc: Value) -> Result<Resource, Vec<Problem>> {
    let mut problems = Vec::new();
    if !doc.is_object() {
        return Err(vec![Problem::new(
            "",
            "expected a resource (a mapping with apiVersion, kind, metadata and spec)",
        )]);
    }
    match doc.get("apiVersion").and_then(Value::as_str) {
        Some(API_VERSION) => {}
        Some(other) => problems.push(Problem::new(
            "apiVersion",
            format!("{other:?} is not supported; expected \"{API_VERSION}\""),
        )),
        None => problems.push(Problem::new(
            "apiVersion",
            format!("is required; expected \"{API_VERSION}\""),
        )),
    }
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if !KINDS.contains(&kind.as_str()) {
        let message = match kind.as_str() {
            "" => format!("is required; expected one of {}", KINDS.join(", ")),
            "DriftReport" => {
                "DriftReport is written by Driftless, not read from configuration".into()
            }
            other => format!(
                "unknown kind {other:?}; expected one of {}",
                KINDS.join(", ")
            ),
        };
        problems.push(Problem::new("kind", message));
        return Err(problems);
    }
    check_metadata(&doc, &mut problems);
    if let Some(object) = doc.as_object() {
        for key in object.keys() {
            if !["apiVersion", "kind", "metadata", "spec", "status"].contains(&key.as_str()) {
                problems.push(Problem::new(
                    key.clone(),
                    "unknown field; expected apiVersion, kind, metadata and spec",
                ));
            }
        }
    }
    match (
        generate::compiled_spec_schema_of(&kind),
        doc.get_mut("spec"),
    ) {
        (_, None) => problems.push(Problem::new("spec", "is required")),
        (Some(schema), Some(spec)) => schema.check(spec, "spec", &mut problems),
        (None, Some(_)) => {}
    }
    // The API server drops status written by a client; so does a configuration file.
    if let Some(object) = doc.as_object_mut() {
        object.remove("status");
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let resource = match kind.as_str() {
        "ApplyPolicy" => typed(&doc).map(|r| Resource::ApplyPolicy(Box::new(r))),
        "FactsPolicy" => typed(&doc).map(|r| Resource::FactsPolicy(Box::new(r))),
        "LogPipeline" => typed(&doc).map(|r| Resource::LogPipeline(Box::new(r))),
        _ => typed(&doc).map(|r| Resource::DriftScan(Box::new(r))),
    }
    .map_err(|p| vec![p])?;
    semantic_checks(&resource, &doc, &mut problems);
    if problems.is_empty() {
        Ok(resource)
    } else {
        Err(problems)
    }
}

fn check_metadata(doc: &Value, problems: &mut Vec<Problem>) {
    let Some(meta) = doc.get("metadata") else {
        problems.push(Problem::new("metadata.name", "is required"));
        return;
    };
    match meta.get("name").and_then(Value::as_str) {
        None => problems.push(Problem::new("metadata.name", "is required")),
        Some(name) if !is_dns_subdomain(name) => problems.push(Problem::new(
            "metadata.name",
            format!(
                "{name:?} is not a valid name: lower-case letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters"
            ),
        )),
        Some(_) => {}
    }
}

/// Kubernetes' DNS-1123 subdomain rule for object names.
pub fn is_dns_subdomain(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !name.is_empty()
        && name.len() <= 253
        && name.starts_with(ok)
        && name.ends_with(ok)
        && name.chars().all(|c| ok(c) || c == '-' || c == '.')
}

fn typed<T: DeserializeOwned>(doc: &Value) -> Result<T, Problem> {
    serde_path_to_error::deserialize(doc).map_err(|err| {
        let path = err.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Problem::new(path, err.into_inner().to_string())
    })
}

/// Checks that need more than the schema: regular expressions compile, references resolve.
fn semantic_checks(resource: &Resource, doc: &Value, problems: &mut Vec<Problem>) {
    let spec = doc.get("spec").unwrap_or(&Value::Null);
    match resource {
        Resource::ApplyPolicy(policy) => {
            // One walk for the references and the patterns; the problems keep their order.
            let mut patterns = Vec::new();
            let declared = declared(&policy.spec.secrets);
            walk_strings(spec, "spec", &mut |path, text| {
                secret_ref_problems(path, text, &declared, problems);
                let key = path.rsplit('.').next().unwrap_or_default();
                let pattern = match key {
                    "regexp" => true,
                    "insertAfter" | "insertBefore" => !matches!(text, "EOF" | "BOF"),
                    _ => false,
                };
                if pattern {
                    if let Err(err) = crate::validate::check_regex(text) {
                        patterns.push(Problem::new(path, regex_message(text, &err)));
                    }
                }
            });
            let handlers: BTreeSet<&str> = policy
                .spec
                .handlers
                .iter()
                .map(|h| h.name.as_str())
                .collect();
            for (i, task) in policy.spec.tasks.iter().enumerate() {
                for (j, name) in task.notify.iter().enumerate() {
                    if !handlers.contains(name.as_str()) {
                        problems.push(Problem::new(
                            format!("spec.tasks[{i}].notify[{j}]"),
                            format!("no handler named {name:?} in spec.handlers"),
                        ));
                    }
                }
            }
            problems.append(&mut patterns);
        }
        Resource::FactsPolicy(policy) => {
            check_secret_refs(spec, "spec", declared(&policy.spec.secrets), problems);
            let collectors = &policy.spec.collectors;
            for (i, name) in collectors.disable.iter().enumerate() {
                if collectors.enable.contains(name) {
                    problems.push(Problem::new(
                        format!("spec.collectors.disable[{i}]"),
                        format!("{name:?} is also listed in spec.collectors.enable"),
                    ));
                }
            }
            check_regexes(
                spec,
                "spec",
                &[
                    "mountPointsExclude",
                    "fsTypesExclude",
                    "mountPointsInclude",
                    "devicesExclude",
                    "devicesInclude",
                ],
                problems,
            );
            for (i, threshold) in policy.spec.thresholds.iter().enumerate() {
                for (label, pattern) in &threshold.labels {
                    if let Err(err) = crate::validate::check_regex(&format!("^(?:{pattern})$")) {
                        problems.push(Problem::new(
                            format!("spec.thresholds[{i}].labels.{label}"),
                            regex_message(pattern, &err),
                        ));
                    }
                }
            }
        }
        Resource::LogPipeline(pipeline) => {
            check_secret_refs(spec, "spec", declared(&pipeline.spec.secrets), problems);
            check_regexes(
                spec,
                "spec",
                &["pattern", "startPattern", "continuationPattern"],
                problems,
            );
            for (i, transform) in pipeline.spec.transforms.iter().enumerate() {
                if let crate::log_pipeline::TransformKind::Redact(redact) = &transform.kind {
                    for (j, pattern) in redact.patterns.iter().enumerate() {
                        if let Err(err) = crate::validate::check_regex(pattern) {
                            problems.push(Problem::new(
                                format!("spec.transforms[{i}].redact.patterns[{j}]"),
                                regex_message(pattern, &err),
                            ));
                        }
                    }
                }
            }
        }
        Resource::DriftScan(scan) => {
            if let Some(schedule) = &scan.spec.schedule {
                if let Err(message) = check_cron(schedule) {
                    problems.push(Problem::new("spec.schedule", message));
                }
            }
            for (i, stack) in scan.spec.source.git.stacks.iter().enumerate() {
                if stack.starts_with('/') || stack.split('/').any(|part| part == "..") {
                    problems.push(Problem::new(
                        format!("spec.source.git.stacks[{i}]"),
                        format!(
                            "{stack:?} must be a path inside the repository (relative, no \"..\")"
                        ),
                    ));
                }
            }
        }
    }
}

fn declared(secrets: &[crate::common::SecretVar]) -> BTreeSet<String> {
    secrets.iter().map(|s| s.name.clone()).collect()
}

/// Every `${secret:NAME}` must name a declared secret, and every `${...}` must be well formed.
fn check_secret_refs(
    value: &Value,
    path: &str,
    declared: BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    walk_strings(value, path, &mut |path, text| {
        secret_ref_problems(path, text, &declared, problems);
    });
}

/// The `${secret:...}` references in one string that name no declared secret.
fn secret_ref_problems(
    path: &str,
    text: &str,
    declared: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    match references(text) {
        Ok(refs) => {
            for r in refs {
                if r.kind == RefKind::Secret && !declared.contains(&r.name) {
                    problems.push(Problem::new(
                        path,
                        format!("{r} names no secret declared in spec.secrets"),
                    ));
                }
            }
        }
        Err(err) => problems.push(Problem::new(path, err.to_string())),
    }
}

/// Calls `f` with the field path and text of every string below `value` (`path` names `value`).
pub fn walk_strings(value: &Value, path: &str, f: &mut dyn FnMut(&str, &str)) {
    let mut buffer = path.to_owned();
    walk_strings_in(value, &mut buffer, f);
}

/// [`walk_strings`] with one path buffer, grown and cut back as the walk goes (a spec holds
/// thousands of strings; a path allocated per node cost more than the checks).
fn walk_strings_in(value: &Value, path: &mut String, f: &mut dyn FnMut(&str, &str)) {
    use std::fmt::Write as _;
    let len = path.len();
    match value {
        Value::String(s) => f(path, s),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let _ = write!(path, "[{i}]");
                walk_strings_in(item, path, f);
                path.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, child) in map {
                path.push('.');
                path.push_str(key);
                walk_strings_in(child, path, f);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// Every string field named in `keys`, anywhere in the spec, must be a valid regular expression.
fn check_regexes(value: &Value, path: &str, keys: &[&str], problems: &mut Vec<Problem>) {
    walk_strings(value, path, &mut |path, text| {
        let key = path.rsplit('.').next().unwrap_or_default();
        if keys.contains(&key) {
            if let Err(err) = crate::validate::check_regex(text) {
                problems.push(Problem::new(path, regex_message(text, &err)));
            }
        }
    });
}

fn regex_message(pattern: &str, err: &dyn std::fmt::Display) -> String {
    let detail = err.to_string();
    let last = detail.lines().last().unwrap_or_default().trim();
    format!("{pattern:?} is not a valid regular expression: {last}")
}

/// Checks a DriftScan schedule with the project's one cron parser ([`crate::cron::parse`]).
pub fn check_cron(schedule: &str) -> Result<(), String> {
    crate::cron::parse(schedule).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cron_expressions() {
        for ok in [
            "*/15 * * * *",
            "0 3 * * mon-fri",
            "0 0 1,15 * *",
            "@daily",
            "5 4 * jan sun",
        ] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            check_cron("* * * *").unwrap_err(),
            "\"* * * *\" has 4 fields; expected five (minute hour day-of-month month day-of-week)"
        );
        assert!(check_cron("61 * * * *")
            .unwrap_err()
            .starts_with("\"61 * * * *\" is not a valid cron expression"));
        // What the operator computes, validation accepts, and the other way round.
        assert_eq!(check_cron("@midnight"), Ok(()));
        assert!(check_cron("@reboot").is_err());
        assert!(check_cron("@often").is_err());
    }

    #[test]
    fn wrong_kind_and_version_are_named() {
        let errs = parse(json!({"apiVersion": "v1", "kind": "Pod"})).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "apiVersion: \"v1\" is not supported; expected \"driftless.dev/v1alpha1\"",
                "kind: unknown kind \"Pod\"; expected one of ApplyPolicy, FactsPolicy, LogPipeline, DriftScan"
            ]
        );
    }
}
