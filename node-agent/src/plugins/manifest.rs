//! A plugin's manifest (what `driftless_manifest` returns) and the exports each kind needs.
//! Pure: parsing and checking, no I/O.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use wasmtime::{ExternType, Module, ValType};

/// The ABI version this agent speaks.
pub const ABI: u32 = 1;

/// Every entry point taking `(ptr, len)` and returning a packed `(ptr, len)`.
pub const ENTRIES: &[&str] = &[
    "driftless_init",
    "driftless_task_plan",
    "driftless_task_apply",
    "driftless_facts",
    "driftless_log",
    "driftless_filter",
];

/// What a plugin provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// An ApplyPolicy task type.
    Task,
    /// Facts and metric samples.
    Facts,
    /// A log transform.
    Log,
    /// Template filters.
    Filter,
}

impl Kind {
    /// The entry points the kind needs.
    pub fn entries(self) -> &'static [&'static str] {
        match self {
            Kind::Task => &["driftless_task_plan", "driftless_task_apply"],
            Kind::Facts => &["driftless_facts"],
            Kind::Log => &["driftless_log"],
            Kind::Filter => &["driftless_filter"],
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Task => "task",
            Kind::Facts => "facts",
            Kind::Log => "log",
            Kind::Filter => "filter",
        })
    }
}

/// `task, facts` for messages.
pub fn kinds_text(kinds: &[Kind]) -> String {
    kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plugin's manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The ABI version it was built for.
    pub abi: u32,
    /// What it provides.
    pub kinds: Vec<Kind>,
    /// For `filter` plugins: the filter names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    /// The schema its `config` is checked against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_schema: Option<Value>,
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn valid_filter(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

impl Manifest {
    /// Parses and checks a manifest: every problem, in one message.
    pub fn parse(text: &str) -> Result<Self, String> {
        let manifest: Manifest = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut problems = Vec::new();
        if !valid_name(&manifest.name) {
            problems.push(format!(
                "name {:?}: expected lowercase letters, digits and `-`, at most 63",
                manifest.name
            ));
        }
        if manifest.abi != ABI {
            problems.push(format!("abi {}: this agent speaks ABI {ABI}", manifest.abi));
        }
        if manifest.kinds.is_empty() {
            problems.push("kinds: expected at least one of task, facts, log, filter".into());
        }
        let filters = manifest.kinds.contains(&Kind::Filter);
        if filters && manifest.filters.is_empty() {
            problems.push("filters: a filter plugin names at least one filter".into());
        }
        if !filters && !manifest.filters.is_empty() {
            problems.push("filters: set, but kinds does not list filter".into());
        }
        for f in &manifest.filters {
            if !valid_filter(f) {
                problems.push(format!("filters: {f:?} is not an identifier"));
            }
        }
        if let Some(schema) = &manifest.config_schema {
            if !schema.is_object() {
                problems.push("configSchema: expected an object (a JSON schema)".into());
            }
        }
        if problems.is_empty() {
            Ok(manifest)
        } else {
            Err(problems.join("; "))
        }
    }

    /// What is wrong with a use's configuration, per the manifest's schema. Defaults the
    /// schema declares are not filled in: the plugin gets the configuration as written.
    pub fn config_problems(&self, config: &Value) -> Vec<String> {
        let Some(schema) = &self.config_schema else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut copy = config.clone();
        driftless_crds::validate::check(schema, &mut copy, "config", &mut problems);
        problems.into_iter().map(|p| p.to_string()).collect()
    }
}

/// Checks the exports every plugin needs and those of `kinds`: names and signatures.
pub fn check_exports(module: &Module, kinds: &[Kind]) -> Result<(), String> {
    let export = |name: &str| module.get_export(name);
    match export("memory") {
        Some(ExternType::Memory(m)) if !m.is_64() => {}
        _ => return Err("it does not export a 32-bit `memory`".into()),
    }
    let func = |name: &str, params: &[ValType], results: &[ValType]| -> Result<(), String> {
        let Some(ExternType::Func(f)) = export(name) else {
            return Err(format!("it does not export the function {name}"));
        };
        let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
            a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
        };
        if !same(&mut f.params(), params) || !same(&mut f.results(), results) {
            return Err(format!(
                "{name} has the signature {f}; the ABI says ({}) -> ({})",
                params
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                results
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(())
    };
    func("driftless_alloc", &[ValType::I32], &[ValType::I32])?;
    func("driftless_manifest", &[], &[ValType::I64])?;
    if export("driftless_init").is_some() {
        func(
            "driftless_init",
            &[ValType::I32, ValType::I32],
            &[ValType::I64],
        )?;
    }
    for kind in kinds {
        for entry in kind.entries() {
            func(entry, &[ValType::I32, ValType::I32], &[ValType::I64])
                .map_err(|e| format!("{e} (needed by the {kind} kind)"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_checked_whole() {
        let m = Manifest::parse(
            r#"{"name":"redact","version":"1.0.0","abi":1,"kinds":["log","filter"],"filters":["redact_email"]}"#,
        )
        .unwrap();
        assert_eq!(m.kinds, vec![Kind::Log, Kind::Filter]);
        let err =
            Manifest::parse(r#"{"name":"Bad_Name","version":"1","abi":2,"kinds":["filter"]}"#)
                .unwrap_err();
        assert!(err.contains("name \"Bad_Name\""), "{err}");
        assert!(err.contains("abi 2"), "{err}");
        assert!(err.contains("filters: a filter plugin"), "{err}");
        let err =
            Manifest::parse(r#"{"name":"x","version":"1","abi":1,"kinds":["nope"]}"#).unwrap_err();
        assert!(err.contains("unknown variant `nope`"), "{err}");
        let err =
            Manifest::parse(r#"{"name":"x","version":"1","abi":1,"kinds":["log"],"extra":1}"#)
                .unwrap_err();
        assert!(err.contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn config_is_checked_against_the_declared_schema() {
        let m = Manifest {
            config_schema: Some(serde_json::json!({
                "type": "object",
                "properties": {"path": {"type": "string"}, "n": {"type": "integer", "maximum": 3}},
                "required": ["path"],
            })),
            ..Manifest::default()
        };
        assert!(m
            .config_problems(&serde_json::json!({"path": "/x"}))
            .is_empty());
        let problems = m.config_problems(&serde_json::json!({"n": 7, "other": true}));
        let text = problems.join("\n");
        assert!(text.contains("config.path"), "{text}");
        assert!(text.contains("config.n"), "{text}");
        assert!(text.contains("other"), "{text}");
        assert!(Manifest::default()
            .config_problems(&serde_json::json!({"anything": 1}))
            .is_empty());
    }
}
