//! The top-level blocks of one Terraform configuration file that the runner checks before
//! `init`: `data "external"` blocks and the sources of `module` blocks.
//!
//! Native syntax (`.tf`) is read by a real HCL parser (`hcl-edit`, the parser of the hcl-rs
//! project), JSON syntax (`.tf.json`) by serde_json, so comments, strings, heredocs and
//! `locals` are what Terraform takes them for and never look like blocks.
//!
//! *Guarantees*: only top-level blocks count, as in Terraform; in JSON syntax a block type, a
//! label level and a body may each be an object or an array of objects.
//! *Caveats*: a file that does not parse is an error ([`ParseError`]), never "no blocks".

use serde_json::Value;

/// What the runner needs from one configuration file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TopLevel {
    /// Names of the `data "external" "<name>"` blocks.
    pub external_data: Vec<String>,
    /// The `source` of every `module` block that is a plain string (local or not).
    pub module_sources: Vec<String>,
}

/// Why a configuration file could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}", position.map(|(l, c)| format!("line {l}, column {c}: ")).unwrap_or_default())]
pub struct ParseError {
    /// Line and column (1-based) where the parser stopped, when it knows.
    pub position: Option<(usize, usize)>,
    /// The parser's message.
    pub message: String,
}

/// Reads the top-level blocks of a native-syntax (`.tf`) file.
pub fn native(text: &str) -> Result<TopLevel, ParseError> {
    use hcl_edit::expr::Expression;
    let body = hcl_edit::parser::parse_body(text).map_err(|e| ParseError {
        position: Some((e.location().line(), e.location().column())),
        message: e.message().to_owned(),
    })?;
    let mut out = TopLevel::default();
    for block in body.blocks() {
        let labels: Vec<&str> = block.labels.iter().map(|l| l.as_str()).collect();
        match (block.ident.as_str(), labels.as_slice()) {
            ("data", ["external", rest @ ..]) => out
                .external_data
                .push(rest.first().copied().unwrap_or_default().to_owned()),
            ("module", _) => {
                if let Some(Expression::String(source)) =
                    block.body.get_attribute("source").map(|a| &a.value)
                {
                    out.module_sources.push(source.value().clone());
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Reads the top-level blocks of a JSON-syntax (`.tf.json`) file: `"data": {"external":
/// {"<name>": {...}}}` and `"module": {"<name>": {"source": "..."}}`, each level an object or
/// an array of objects.
pub fn json(text: &str) -> Result<TopLevel, ParseError> {
    let root: Value = serde_json::from_str(text).map_err(|e| {
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = e.to_string();
        ParseError {
            position: Some((e.line(), e.column())),
            message: message.strip_suffix(&suffix).unwrap_or(&message).to_owned(),
        }
    })?;
    let Value::Object(root) = root else {
        return Err(ParseError {
            position: None,
            message: "the top-level value must be a JSON object".into(),
        });
    };
    let mut out = TopLevel::default();
    if let Some(data) = root.get("data") {
        for types in objects(data) {
            if let Some(external) = types.get("external") {
                for names in objects(external) {
                    out.external_data.extend(names.keys().cloned());
                }
            }
        }
    }
    if let Some(modules) = root.get("module") {
        for names in objects(modules) {
            for body in names.values().flat_map(objects) {
                if let Some(Value::String(source)) = body.get("source") {
                    out.module_sources.push(source.clone());
                }
            }
        }
    }
    Ok(out)
}

/// The objects of one JSON block level: the value itself, or the objects of an array.
fn objects(value: &Value) -> Vec<&serde_json::Map<String, Value>> {
    match value {
        Value::Object(map) => vec![map],
        Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    }
}

/// Whether a module source is a local path (`./x`, `../x`), which Terraform reads from the
/// repository instead of downloading.
pub fn is_local_source(source: &str) -> bool {
    source.starts_with("./") || source.starts_with("../")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn native_blocks_labels_and_sources() {
        let got = native(
            "data external run { program = [\"sh\"] }\n\
             data \"external\"\"tight\"{}\n\
             module \"m\" { source = \"./m\" }\n\
             module \"r\" { source = \"git::https://example.com/x.git\" }\n\
             module \"v\" { source = \"./${var.x}\" }\n",
        )
        .unwrap();
        assert_eq!(got.external_data, ["run", "tight"]);
        assert_eq!(
            got.module_sources,
            ["./m", "git::https://example.com/x.git"]
        );
    }

    #[test]
    fn json_levels_may_be_arrays() {
        let got = json(
            r#"{"data": {"external": [{"a": {}}, {"b": [{}]}]},
                "module": [{"m": [{"source": "../m"}]}, {"n": {"source": 3}}]}"#,
        )
        .unwrap();
        assert_eq!(got.external_data, ["a", "b"]);
        assert_eq!(got.module_sources, ["../m"]);
    }

    #[test]
    fn errors_carry_the_position() {
        let err = native("locals {\n  a = \n}\n").unwrap_err();
        assert_eq!(err.position.map(|p| p.0), Some(2), "{err}");
        assert!(err.to_string().starts_with("line 2, column "), "{err}");
        let err = json("{\n \"data\": [}\n").unwrap_err();
        assert_eq!(err.position, Some((2, 11)), "{err}");
        assert!(!err.message.contains(" at line "), "{err}");
        let err = json("[]").unwrap_err();
        assert_eq!(err.to_string(), "the top-level value must be a JSON object");
    }

    #[test]
    fn local_sources() {
        assert!(is_local_source("./a") && is_local_source("../a"));
        assert!(!is_local_source("hashicorp/consul/aws") && !is_local_source(".terraform/x"));
    }
}
