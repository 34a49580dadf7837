//! The CRDs, generated from the types, and the files they are checked in as.

use std::sync::OnceLock;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{ApplyPolicy, DriftReport, DriftScan, FactsPolicy, LogPipeline, NotificationPolicy};

/// Every Driftless CRD, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    [
        ApplyPolicy::crd(),
        FactsPolicy::crd(),
        LogPipeline::crd(),
        DriftScan::crd(),
        DriftReport::crd(),
        NotificationPolicy::crd(),
    ]
    .into_iter()
    .map(structural)
    .collect()
}

/// Makes a derived CRD one the API server accepts and stores unchanged, and reads well in
/// `kubectl explain`:
/// - `deny_unknown_fields` becomes `additionalProperties: false` in the derived schema, which
///   structural schemas forbid next to `properties` (the API server prunes unknown fields
///   instead, and `driftless validate` reports them from `properties`);
/// - a doc comment's line breaks within a paragraph become spaces (paragraphs stay apart);
/// - an int-or-string field with a default is not `nullable`: a `null` there would be kept by
///   the API server instead of defaulted, and no component could read it.
fn structural(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                if map.get("additionalProperties") == Some(&serde_json::Value::Bool(false)) {
                    map.remove("additionalProperties");
                }
                if map.contains_key("default")
                    && map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true))
                {
                    map.remove("nullable");
                }
                if let Some(serde_json::Value::String(text)) = map.get_mut("description") {
                    *text = unwrap_lines(text);
                }
                // The API server drops an empty rule list, so GitOps diffs would never settle.
                if map
                    .get("x-kubernetes-validations")
                    .is_some_and(|rules| rules.as_array().is_some_and(Vec::is_empty))
                {
                    map.remove("x-kubernetes-validations");
                }
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let Ok(mut value) = serde_json::to_value(&crd) else {
        return crd;
    };
    strip(&mut value);
    serde_json::from_value(value).unwrap_or(crd)
}

/// Joins the lines of each paragraph of a doc comment with spaces; blank lines stay.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .split('\n')
                .map(str::trim_end)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// The file name a CRD is checked in as: `driftless.dev_applypolicies.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// A CRD as YAML, with a header saying where it comes from.
pub fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let body = crate::yaml::to_string(crd).unwrap_or_default();
    format!("# Generated from the Rust types in crds/ by `make crds`; do not edit.\n---\n{body}")
}

/// Directories (relative to the repository root) that hold a copy of every CRD.
pub const CRD_DIRS: &[&str] = &["config/crd/bases", "charts/driftless/crds"];

/// The `openAPIV3Schema` of a kind as JSON, cached. Only the kind asked for is generated: a
/// process reading one kind does not pay for the others.
pub fn schema_of(kind: &str) -> Option<&'static serde_json::Value> {
    const KINDS: [&str; 6] = [
        "ApplyPolicy",
        "FactsPolicy",
        "LogPipeline",
        "DriftScan",
        "DriftReport",
        "NotificationPolicy",
    ];
    static SCHEMAS: [OnceLock<Option<serde_json::Value>>; KINDS.len()] =
        [const { OnceLock::new() }; KINDS.len()];
    let i = KINDS.iter().position(|k| *k == kind)?;
    SCHEMAS[i]
        .get_or_init(|| {
            let crd = match i {
                0 => ApplyPolicy::crd(),
                1 => FactsPolicy::crd(),
                2 => LogPipeline::crd(),
                3 => DriftScan::crd(),
                4 => DriftReport::crd(),
                _ => NotificationPolicy::crd(),
            };
            let version = structural(crd).spec.versions.into_iter().next()?;
            let schema = version.schema?.open_api_v3_schema?;
            serde_json::to_value(schema).ok()
        })
        .as_ref()
}

/// The `spec` schema of a kind, compiled once per process (patterns and CEL rules included).
pub fn compiled_spec_schema_of(kind: &str) -> Option<&'static crate::validate::Schema> {
    // One cell per kind: a process that reads only ApplyPolicies compiles only their schema.
    static COMPILED: [OnceLock<Option<crate::validate::Schema>>; crate::resource::KINDS.len()] =
        [const { OnceLock::new() }; crate::resource::KINDS.len()];
    let i = crate::resource::KINDS.iter().position(|k| *k == kind)?;
    COMPILED[i]
        .get_or_init(|| {
            let spec = schema_of(kind)?.pointer("/properties/spec")?;
            Some(crate::validate::Schema::compile(spec))
        })
        .as_ref()
}

/// Every generated file, as (path relative to the repository root, content).
pub fn files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for crd in crds() {
        let yaml = to_yaml(&crd);
        for dir in CRD_DIRS {
            out.push((format!("{dir}/{}", file_name(&crd)), yaml.clone()));
        }
    }
    out.push(("docs/reference/crds.md".into(), reference_markdown()));
    out
}

/// The field reference of every kind, generated from the schemas.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "<!-- Generated from the Rust types in crds/ by `make crds`; do not edit. -->\n\
         # API reference: `driftless.dev/v1alpha1`\n\n\
         Every field of every Driftless resource, generated from the same types as the CRDs.\n\
         `kubectl explain <kind>.spec...` shows the same descriptions. A field path with `[]` is\n\
         a list item. *Rules* are CEL validations the API server (and `driftless validate`)\n\
         enforce.\n",
    );
    for crd in crds() {
        let names = &crd.spec.names;
        let scope = &crd.spec.scope;
        let Some(schema) = schema_of(&names.kind) else {
            continue;
        };
        out.push_str(&format!(
            "\n## {kind}\n\n{scope}-scoped; plural `{plural}`, short names `{short}`, categories \
             `{categories}`.\n\n",
            kind = names.kind,
            plural = names.plural,
            short = names.short_names.clone().unwrap_or_default().join("`, `"),
            categories = names.categories.clone().unwrap_or_default().join("`, `"),
        ));
        if let Some(description) = schema
            .pointer("/properties/spec/description")
            .and_then(serde_json::Value::as_str)
        {
            out.push_str(description);
            out.push_str("\n\n");
        }
        out.push_str("| field | type | default | description |\n|---|---|---|---|\n");
        for part in ["spec", "status"] {
            if let Some(sub) = schema.pointer(&format!("/properties/{part}")) {
                document_fields(sub, part, &mut out);
            }
        }
    }
    out
}

fn document_fields(schema: &serde_json::Value, path: &str, out: &mut String) {
    use serde_json::Value;
    let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let type_of = |s: &Value| -> String {
        if s.get("x-kubernetes-int-or-string").is_some() {
            return "int or string".into();
        }
        let base = s.get("type").and_then(Value::as_str).unwrap_or("any");
        match (
            base,
            s.get("items")
                .and_then(|i| i.get("type"))
                .and_then(Value::as_str),
        ) {
            ("array", Some(item)) => format!("[]{item}"),
            _ => match s.get("enum").and_then(Value::as_array) {
                Some(values) => values
                    .iter()
                    .map(|v| format!("`{}`", v.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(" \\| "),
                None => base.to_owned(),
            },
        }
    };
    let rules = |s: &Value| -> String {
        s.get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .map(|rules| {
                rules
                    .iter()
                    .filter_map(|r| r.get("message").and_then(Value::as_str))
                    .map(|m| format!(" *Rule:* {m}."))
                    .collect()
            })
            .unwrap_or_default()
    };
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (name, property) in properties {
        let field = format!("{path}.{name}");
        let default = property
            .get("default")
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let mut description = property
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        if required.contains(&name.as_str()) {
            description.insert_str(0, "**Required.** ");
        }
        let item = property.get("items");
        description.push_str(&rules(property));
        if let Some(item) = item {
            description.push_str(&rules(item));
        }
        out.push_str(&format!(
            "| `{field}` | {} | {} | {} |\n",
            type_of(property),
            cell(&default),
            cell(&description)
        ));
        match item {
            Some(item) if item.get("properties").is_some() => {
                document_fields(item, &format!("{field}[]"), out)
            }
            _ => document_fields(property, &field, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_alone_has_the_schema_of_the_generated_crds() {
        for crd in crds() {
            let version = crd.spec.versions.into_iter().next().unwrap();
            let schema = version.schema.unwrap().open_api_v3_schema.unwrap();
            assert_eq!(
                schema_of(&crd.spec.names.kind),
                Some(&serde_json::to_value(schema).unwrap()),
                "{}",
                crd.spec.names.kind
            );
        }
        assert_eq!(schema_of("Unknown"), None);
    }
}
