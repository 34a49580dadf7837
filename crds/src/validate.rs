//! Validation of a resource against its generated CRD schema, as the API server does it.
//!
//! A standalone host has no API server, so the loader runs the same checks here from the same
//! generated `openAPIV3Schema`: defaults, types, unknown fields, required fields, patterns,
//! bounds, enums, list-map keys, and the CEL rules (`x-kubernetes-validations`), evaluated with a
//! CEL interpreter. Every problem is collected, each with its field path.
//!
//! Caveats: `type(x)` is not part of the interpreter; it is provided here for the one use the
//! schemas make of it (int-or-string fields). Formats (`date-time`) are not checked.

use std::fmt;
use std::sync::Arc;

use cel_interpreter::extractors::This;
use cel_interpreter::{Context, Program, Value as Cel};
use serde_json::{Map, Value};

use crate::apply_policy::MODE_PATTERN;

/// One thing wrong with an input, at a field path such as `spec.tasks[3].file.mode`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Field path from the resource root.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl Problem {
    /// A problem at a path.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Applies schema defaults to `value` and checks it against `schema`, appending problems.
///
/// CEL rules see the defaulted value and, as on the API server, a node's rules are evaluated
/// only when the structure below it is valid; rules elsewhere still run, so one pass reports
/// every problem.
pub fn check(schema: &Value, value: &mut Value, path: &str, problems: &mut Vec<Problem>) {
    check_node(schema, value, path, problems);
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 60 {
        format!("{}...", text.chars().take(57).collect::<String>())
    } else {
        text
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Checks one node and everything below it; returns whether its structure is valid.
fn check_node(schema: &Value, value: &mut Value, path: &str, problems: &mut Vec<Problem>) -> bool {
    let start = problems.len();
    let mut structural = Vec::new();
    let children_valid = check_structure(schema, value, path, &mut structural, problems);
    let valid = children_valid && structural.is_empty();
    // A node's own problems read before those of its children.
    problems.splice(start..start, structural);
    if valid {
        check_rules(schema, value, path, problems);
    }
    valid
}

/// The structural checks of one node; problems of this node go to `own`, children report into
/// `problems` themselves. Returns whether every child is valid.
fn check_structure(
    schema: &Value,
    value: &mut Value,
    path: &str,
    own: &mut Vec<Problem>,
    problems: &mut Vec<Problem>,
) -> bool {
    if value.is_null() {
        if !flag(schema, "nullable") {
            own.push(Problem::new(path, "must not be null"));
        }
        return true;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || value.is_i64() || value.is_u64()) {
            own.push(Problem::new(
                path,
                format!("expected an integer or a string, got {}", describe(value)),
            ));
        }
        if let Value::String(s) = value {
            check_string(schema, s, path, own);
        }
        return true;
    }
    let expected = schema.get("type").and_then(Value::as_str);
    let mut children_valid = true;
    match (expected, &mut *value) {
        (None, _) => {}
        (Some("object"), Value::Object(map)) => {
            children_valid = check_object(schema, map, path, own, problems)
        }
        (Some("array"), Value::Array(items)) => {
            children_valid = check_array(schema, items, path, own, problems)
        }
        (Some("string"), Value::String(s)) => check_string(schema, s, path, own),
        (Some("boolean"), Value::Bool(_)) => {}
        (Some("integer"), v @ Value::Number(_)) if v.is_i64() || v.is_u64() => {
            check_number(schema, v, path, own)
        }
        (Some("number"), v @ Value::Number(_)) => check_number(schema, v, path, own),
        (Some(expected), v) => own.push(Problem::new(
            path,
            format!("expected {expected}, got {} {}", type_name(v), describe(v)),
        )),
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
            own.push(Problem::new(
                path,
                format!("{} is not one of {}", describe(value), names.join(", ")),
            ));
        }
    }
    children_valid
}

fn check_object(
    schema: &Value,
    map: &mut Map<String, Value>,
    path: &str,
    own: &mut Vec<Problem>,
    problems: &mut Vec<Problem>,
) -> bool {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    let empty = Map::new();
    let properties = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for (key, property) in properties {
        if !map.contains_key(key) {
            if let Some(default) = property.get("default") {
                map.insert(key.clone(), default.clone());
            }
        }
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(key) {
                own.push(Problem::new(join(key), "is required"));
            }
        }
    }
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let mut valid = true;
    for (key, child) in map.iter_mut() {
        let child_path = join(key);
        if let Some(property) = properties.get(key) {
            valid &= check_node(property, child, &child_path, problems);
        } else if let Some(additional @ Value::Object(_)) = additional {
            valid &= check_node(additional, child, &child_path, problems);
        } else if !preserve && additional != Some(&Value::Bool(true)) {
            let mut known: Vec<&str> = properties.keys().map(String::as_str).collect();
            known.sort_unstable();
            valid = false;
            problems.push(Problem::new(
                child_path,
                format!("unknown field; expected one of: {}", known.join(", ")),
            ));
        }
    }
    valid
}

fn check_array(
    schema: &Value,
    items: &mut [Value],
    path: &str,
    own: &mut Vec<Problem>,
    problems: &mut Vec<Problem>,
) -> bool {
    if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
        if items.len() as u64 > max {
            own.push(Problem::new(
                path,
                format!("has {} items, at most {max} allowed", items.len()),
            ));
        }
    }
    if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
        if (items.len() as u64) < min {
            own.push(Problem::new(
                path,
                format!("has {} items, at least {min} required", items.len()),
            ));
        }
    }
    let mut valid = true;
    if let Some(item_schema) = schema.get("items") {
        for (i, item) in items.iter_mut().enumerate() {
            valid &= check_node(item_schema, item, &format!("{path}[{i}]"), problems);
        }
    }
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
        let keys: Vec<&str> = schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
            .map(|k| k.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let mut seen = std::collections::BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let key: Vec<String> = keys
                .iter()
                .map(|k| item.get(k).map(Value::to_string).unwrap_or_default())
                .collect();
            if let Some(first) = seen.insert(key.clone(), i) {
                own.push(Problem::new(
                    format!("{path}[{i}]"),
                    format!(
                        "duplicate {} {} (also at {path}[{first}])",
                        keys.join("/"),
                        key.join("/")
                    ),
                ));
            }
        }
    }
    valid
}

fn check_string(schema: &Value, s: &str, path: &str, problems: &mut Vec<Problem>) {
    let len = s.chars().count() as u64;
    if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
        if len > max {
            problems.push(Problem::new(
                path,
                format!("is {len} characters long, at most {max} allowed"),
            ));
        }
    }
    if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
        if len < min {
            let what = if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("is {len} characters long, at least {min} required")
            };
            problems.push(Problem::new(path, what));
        }
    }
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        let matches = regex::Regex::new(pattern)
            .map(|re| re.is_match(s))
            .unwrap_or(true);
        if !matches {
            problems.push(Problem::new(path, pattern_message(pattern, s)));
        }
    }
}

/// A readable message for a value that does not match a known pattern.
fn pattern_message(pattern: &str, value: &str) -> String {
    let expected = match pattern {
        MODE_PATTERN => "is not an octal mode such as \"0644\"",
        crate::common::DURATION_PATTERN => "is not a duration such as \"30s\", \"5m\" or \"1h30m\"",
        _ => return format!("{value:?} does not match the pattern {pattern}"),
    };
    format!("{value:?} {expected}")
}

fn check_number(schema: &Value, v: &Value, path: &str, problems: &mut Vec<Problem>) {
    let Some(n) = v.as_f64() else { return };
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min {
            problems.push(Problem::new(
                path,
                format!("{v} is less than the minimum {min}"),
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max {
            problems.push(Problem::new(
                path,
                format!("{v} is more than the maximum {max}"),
            ));
        }
    }
}

/// Evaluates the CEL rules of one structurally valid node.
fn check_rules(schema: &Value, value: &Value, path: &str, problems: &mut Vec<Problem>) {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return;
    };
    for rule in rules {
        let Some(expr) = rule.get("rule").and_then(Value::as_str) else {
            continue;
        };
        let message = rule
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("failed rule: {expr}"));
        match evaluate(expr, value) {
            Ok(true) => {}
            Ok(false) => problems.push(Problem::new(path, message)),
            Err(err) => problems.push(Problem::new(
                path,
                format!("rule {expr:?} could not be evaluated: {err}"),
            )),
        }
    }
}

/// Evaluates one CEL rule with `self` bound to `value`, as the API server does.
pub fn evaluate(expr: &str, value: &Value) -> Result<bool, String> {
    let program = Program::compile(expr).map_err(|e| e.to_string())?;
    let mut context = Context::default();
    context.add_variable_from_value("self", to_cel(value));
    for name in [
        "int",
        "uint",
        "double",
        "string",
        "bool",
        "list",
        "map",
        "null_type",
    ] {
        context.add_variable_from_value(name, Cel::String(Arc::new(name.to_owned())));
    }
    context.add_function("type", cel_type);
    match program.execute(&context) {
        Ok(Cel::Bool(result)) => Ok(result),
        Ok(other) => Err(format!("returned {other:?}, not a boolean")),
        Err(err) => Err(err.to_string()),
    }
}

/// Words CEL reserves; the API server exposes properties with these names as `__word__`.
const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// How a property name is written in a CEL rule (`package` is `__package__`).
pub fn cel_field(name: &str) -> String {
    if CEL_RESERVED.contains(&name) {
        format!("__{name}__")
    } else {
        name.to_owned()
    }
}

/// JSON to CEL the way the API server converts it: every JSON integer is a CEL `int`.
fn to_cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (cel_field(k), to_cel(v)))
            .collect::<std::collections::HashMap<String, Cel>>()
            .into(),
    }
}

/// `type(x)`: the name of x's CEL type, compared with the `int`, `string`, ... variables above.
fn cel_type(This(value): This<Cel>) -> String {
    let name = match value {
        Cel::Int(_) => "int",
        Cel::UInt(_) => "uint",
        Cel::Float(_) => "double",
        Cel::String(_) => "string",
        Cel::Bool(_) => "bool",
        Cel::List(_) => "list",
        Cel::Map(_) => "map",
        Cel::Null => "null_type",
        _ => "unknown",
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(schema: Value, mut value: Value) -> Vec<String> {
        let mut out = Vec::new();
        check(&schema, &mut value, "spec", &mut out);
        out.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn applies_defaults_then_rules() {
        let schema = json!({
            "type": "object",
            "properties": {"format": {"type": "string", "default": "plain"}, "regex": {"type": "object"}},
            "x-kubernetes-validations": [{"rule": "(self.format == 'regex') == has(self.regex)", "message": "regex iff format regex"}]
        });
        assert!(problems(schema.clone(), json!({})).is_empty());
        assert_eq!(
            problems(schema, json!({"regex": {}})),
            ["spec: regex iff format regex"]
        );
    }

    #[test]
    fn reports_every_structural_problem_with_paths() {
        let schema = json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "mode": {"type": "string", "pattern": MODE_PATTERN},
                "count": {"type": "integer", "minimum": 1},
                "items": {"type": "array", "maxItems": 1, "items": {"type": "string"}}
            }
        });
        let got = problems(
            schema,
            json!({"mode": "0x644", "count": 0, "items": ["a", 2], "extra": true}),
        );
        assert_eq!(
            got,
            [
                "spec.name: is required",
                "spec.count: 0 is less than the minimum 1",
                "spec.extra: unknown field; expected one of: count, items, mode, name",
                "spec.items: has 2 items, at most 1 allowed",
                "spec.items[1]: expected string, got integer 2",
                "spec.mode: \"0x644\" is not an octal mode such as \"0644\"",
            ]
        );
    }

    #[test]
    fn int_or_string_rules_use_type() {
        let rule = "type(self) == int ? self > 0 : self.matches('^(100|[1-9][0-9]?)%$')";
        assert_eq!(evaluate(rule, &json!(2)), Ok(true));
        assert_eq!(evaluate(rule, &json!(0)), Ok(false));
        assert_eq!(evaluate(rule, &json!("25%")), Ok(true));
        assert_eq!(evaluate(rule, &json!("0%")), Ok(false));
        assert_eq!(evaluate(rule, &json!("two")), Ok(false));
    }

    #[test]
    fn list_map_keys_must_be_unique() {
        let schema = json!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}}}
        });
        assert_eq!(
            problems(schema, json!([{"name": "a"}, {"name": "b"}, {"name": "a"}])),
            ["spec[2]: duplicate name \"a\" (also at spec[0])"]
        );
    }
}
