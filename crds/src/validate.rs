//! Validation of a resource against its generated CRD schema, as the API server does it.
//!
//! A standalone host has no API server, so the loader runs the same checks here from the same
//! generated `openAPIV3Schema`: defaults, types, unknown fields, required fields, patterns,
//! bounds, enums, list-map keys, and the CEL rules (`x-kubernetes-validations`), evaluated with a
//! CEL interpreter. Every problem is collected, each with its field path.
//!
//! Caveats: `type(x)` is not part of the interpreter; it is provided here for the one use the
//! schemas make of it (int-or-string fields). Formats (`date-time`) are not checked.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use cel_interpreter::extractors::This;
use cel_interpreter::{Context, FunctionContext, Program, Value as Cel};
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
///
/// This compiles `schema` first; a caller checking many values against one schema compiles it
/// once with [`Schema::compile`] (as [`crate::generate::compiled_spec_schema_of`] does per kind).
pub fn check(schema: &Value, value: &mut Value, path: &str, problems: &mut Vec<Problem>) {
    Schema::compile(schema).check(value, path, problems);
}

/// The JSON type a schema node expects (`type`).
#[derive(Debug)]
enum Type {
    Object,
    Array,
    String,
    Boolean,
    Integer,
    Number,
    /// A type name the walk does not know: every value is reported as not being one.
    Other(String),
}

/// What a node accepts besides its named properties (`additionalProperties`).
#[derive(Debug)]
enum Additional {
    /// Unknown fields are refused (absent, or `false`).
    Refused,
    /// Any value (`true`).
    Any,
    /// Values checked against a schema.
    Schema(Box<Schema>),
}

/// A compiled `pattern`: the regular expression, or why it does not compile (reported for
/// every value checked against it — a broken pattern must not accept anything).
#[derive(Debug)]
struct Pattern {
    source: String,
    regex: Result<Arc<regex::Regex>, String>,
}

/// A compiled `x-kubernetes-validations` entry.
#[derive(Debug)]
struct Rule {
    expr: String,
    /// The user-facing message when the rule is false.
    message: String,
    /// The program, or the compiler's error (reported whenever the rule would run, as before).
    program: Result<Arc<Program>, String>,
    /// Set when the rule reads `self` only through `has(self.f)` tests.
    presence: Option<Presence>,
}

/// A rule that reads `self` only through `has(self.f)` tests (the generated "exactly one of" and
/// "at most one of" rules, "set enabled, state or both"): its result depends on nothing but
/// which of those fields are present, so it is evaluated once per combination of present fields
/// and the result, or the evaluation error, is remembered.
///
/// Guarantees: the same result as evaluating the rule on the whole value; it is the same
/// interpreter, run on a map that holds exactly the tested fields the value holds.
#[derive(Debug)]
struct Presence {
    /// The fields the rule tests, as CEL names them, with the JSON keys that become each name
    /// (see [`cel_field`]: `package` and `__package__` are both `self.__package__`).
    fields: Vec<(String, Vec<String>)>,
    /// Result per set of present fields (bit `i`: `fields[i]` is present).
    results: Mutex<HashMap<u64, Result<bool, String>>>,
}

impl Presence {
    /// The presence analysis of a rule's source, if it only tests fields of `self` (at most 64).
    fn of(expr: &str) -> Option<Self> {
        let ast = cel_parser::Parser::default().parse(expr).ok()?;
        let mut fields = Vec::new();
        if !reads_only_presence(&ast, &mut fields) || fields.len() > 64 {
            return None;
        }
        let fields = fields
            .into_iter()
            .map(|field| {
                let mut keys = Vec::new();
                if cel_field(&field) == field {
                    keys.push(field.clone());
                }
                if let Some(word) = field.strip_prefix("__").and_then(|f| f.strip_suffix("__")) {
                    if CEL_RESERVED.contains(&word) {
                        keys.push(word.to_owned());
                    }
                }
                (field, keys)
            })
            .collect();
        Some(Self {
            fields,
            results: Mutex::default(),
        })
    }

    /// The rule's result for `value`, evaluated on the first value with its set of fields.
    fn evaluate(&self, program: &Program, value: &Value) -> Result<bool, String> {
        // A value that is not an object has no fields: `has` is false on it, as on `{}`.
        let present = |keys: &[String]| {
            value
                .as_object()
                .is_some_and(|map| keys.iter().any(|k| map.contains_key(k)))
        };
        let mask = self
            .fields
            .iter()
            .enumerate()
            .filter(|(_, (_, keys))| present(keys))
            .fold(0u64, |mask, (i, _)| mask | 1 << i);
        let mut results = self.results.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(result) = results.get(&mask) {
            return result.clone();
        }
        let this: HashMap<String, Cel> = self
            .fields
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & 1 << i != 0)
            .map(|(_, (field, _))| (field.clone(), Cel::Null))
            .collect();
        let result = run(program, this.into());
        if results.len() >= CACHE_LIMIT {
            results.clear();
        }
        results.insert(mask, result.clone());
        result
    }
}

/// Whether `expr` reads `self` only as `has(self.f)`, collecting those `f`. A comprehension
/// that names its variable `self` hides the outer one: such a rule is not analysed.
fn reads_only_presence(expr: &cel_parser::Expression, fields: &mut Vec<String>) -> bool {
    use cel_parser::ast::{EntryExpr, Expr};
    match &expr.expr {
        Expr::Select(select)
            if select.test
                && matches!(&select.operand.expr, Expr::Ident(name) if name == "self") =>
        {
            if !fields.contains(&select.field) {
                fields.push(select.field.clone());
            }
            true
        }
        Expr::Ident(name) => name != "self",
        Expr::Select(select) => reads_only_presence(&select.operand, fields),
        Expr::Call(call) => {
            call.target
                .as_deref()
                .is_none_or(|target| reads_only_presence(target, fields))
                && call.args.iter().all(|arg| reads_only_presence(arg, fields))
        }
        Expr::Comprehension(c) => {
            let binds_self = [Some(&c.iter_var), c.iter_var2.as_ref(), Some(&c.accu_var)]
                .into_iter()
                .flatten()
                .any(|name| name == "self");
            !binds_self
                && [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ]
                .into_iter()
                .all(|e| reads_only_presence(e, fields))
        }
        Expr::List(list) => list.elements.iter().all(|e| reads_only_presence(e, fields)),
        Expr::Map(map) => map.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                reads_only_presence(&e.key, fields) && reads_only_presence(&e.value, fields)
            }
            EntryExpr::StructField(f) => reads_only_presence(&f.value, fields),
        }),
        Expr::Struct(s) => s.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => {
                reads_only_presence(&e.key, fields) && reads_only_presence(&e.value, fields)
            }
            EntryExpr::StructField(f) => reads_only_presence(&f.value, fields),
        }),
        Expr::Literal(_) | Expr::Unspecified => true,
    }
}

/// One node of an `openAPIV3Schema`, with every keyword the walk uses read once and every
/// pattern and CEL rule compiled once.
///
/// Guarantees: checking a value against a `Schema` gives exactly the problems, in the same
/// order, as walking the JSON schema it was compiled from.
#[derive(Debug)]
pub struct Schema {
    nullable: bool,
    int_or_string: bool,
    ty: Option<Type>,
    /// Properties in schema order, for defaults; looked up through `index`.
    properties: Vec<(String, Schema)>,
    index: HashMap<String, usize>,
    /// Property names, sorted, for the "unknown field" message.
    known: String,
    defaults: Vec<(String, Value)>,
    required: Vec<String>,
    additional: Additional,
    preserve_unknown: bool,
    enumeration: Option<Vec<Value>>,
    max_items: Option<u64>,
    min_items: Option<u64>,
    items: Option<Box<Schema>>,
    list_map_keys: Option<Vec<String>>,
    max_length: Option<u64>,
    min_length: Option<u64>,
    pattern: Option<Pattern>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    rules: Vec<Rule>,
}

impl Schema {
    /// Reads a JSON schema node (and everything below it) into its compiled form. Patterns and
    /// rules come from the process-wide caches, so compiling the same schema again is cheap.
    pub fn compile(schema: &Value) -> Self {
        let flag = |key: &str| schema.get(key).and_then(Value::as_bool).unwrap_or(false);
        let u64_of = |key: &str| schema.get(key).and_then(Value::as_u64);
        let f64_of = |key: &str| schema.get(key).and_then(Value::as_f64);
        let mut properties = Vec::new();
        let mut defaults = Vec::new();
        if let Some(map) = schema.get("properties").and_then(Value::as_object) {
            for (key, property) in map {
                if let Some(default) = property.get("default") {
                    defaults.push((key.clone(), default.clone()));
                }
                properties.push((key.clone(), Schema::compile(property)));
            }
        }
        let index = properties
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let mut known: Vec<&str> = properties.iter().map(|(k, _)| k.as_str()).collect();
        known.sort_unstable();
        let known = known.join(", ");
        let ty = schema.get("type").and_then(Value::as_str).map(|t| match t {
            "object" => Type::Object,
            "array" => Type::Array,
            "string" => Type::String,
            "boolean" => Type::Boolean,
            "integer" => Type::Integer,
            "number" => Type::Number,
            other => Type::Other(other.to_owned()),
        });
        let additional = match schema.get("additionalProperties") {
            Some(object @ Value::Object(_)) => {
                Additional::Schema(Box::new(Schema::compile(object)))
            }
            Some(Value::Bool(true)) => Additional::Any,
            _ => Additional::Refused,
        };
        let list_map_keys = (schema.get("x-kubernetes-list-type").and_then(Value::as_str)
            == Some("map"))
        .then(|| {
            schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default()
        });
        Self {
            nullable: flag("nullable"),
            int_or_string: flag("x-kubernetes-int-or-string"),
            ty,
            properties,
            index,
            known,
            defaults,
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            additional,
            preserve_unknown: flag("x-kubernetes-preserve-unknown-fields"),
            enumeration: schema.get("enum").and_then(Value::as_array).cloned(),
            max_items: u64_of("maxItems"),
            min_items: u64_of("minItems"),
            items: schema.get("items").map(|i| Box::new(Schema::compile(i))),
            list_map_keys,
            max_length: u64_of("maxLength"),
            min_length: u64_of("minLength"),
            pattern: schema
                .get("pattern")
                .and_then(Value::as_str)
                .map(|p| Pattern {
                    source: p.to_owned(),
                    regex: cached_regex(p),
                }),
            minimum: f64_of("minimum"),
            maximum: f64_of("maximum"),
            rules: compile_rules(schema),
        }
    }

    /// Applies defaults to `value` and checks it, appending problems (see [`check`]).
    pub fn check(&self, value: &mut Value, path: &str, problems: &mut Vec<Problem>) {
        self.check_node(value, &mut path.to_owned(), problems);
    }

    /// Checks one node and everything below it; returns whether its structure is valid.
    ///
    /// `path` is one buffer for the whole walk, grown for each child and cut back after it (a
    /// spec holds tens of thousands of values; a path allocated per value cost more than the
    /// checks); it is copied only into a problem.
    fn check_node(
        &self,
        value: &mut Value,
        path: &mut String,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let start = problems.len();
        let mut structural = Vec::new();
        let children_valid = self.check_structure(value, path, &mut structural, problems);
        let valid = children_valid && structural.is_empty();
        // A node's own problems read before those of its children.
        problems.splice(start..start, structural);
        if valid && !self.rules.is_empty() {
            check_rules(&self.rules, value, path, problems);
        }
        valid
    }

    /// The structural checks of one node; problems of this node go to `own`, children report
    /// into `problems` themselves. Returns whether every child is valid.
    fn check_structure(
        &self,
        value: &mut Value,
        path: &mut String,
        own: &mut Vec<Problem>,
        problems: &mut Vec<Problem>,
    ) -> bool {
        if value.is_null() {
            if !self.nullable {
                own.push(Problem::new(path.as_str(), "must not be null"));
            }
            return true;
        }
        if self.int_or_string {
            if !(value.is_string() || value.is_i64() || value.is_u64()) {
                own.push(Problem::new(
                    path.as_str(),
                    format!("expected an integer or a string, got {}", describe(value)),
                ));
            }
            if let Value::String(s) = value {
                self.check_string(s, path, own);
            }
            return true;
        }
        let mut children_valid = true;
        match (&self.ty, &mut *value) {
            (None, _) => {}
            (Some(Type::Object), Value::Object(map)) => {
                children_valid = self.check_object(map, path, own, problems)
            }
            (Some(Type::Array), Value::Array(items)) => {
                children_valid = self.check_array(items, path, own, problems)
            }
            (Some(Type::String), Value::String(s)) => self.check_string(s, path, own),
            (Some(Type::Boolean), Value::Bool(_)) => {}
            (Some(Type::Integer), v @ Value::Number(_)) if v.is_i64() || v.is_u64() => {
                self.check_number(v, path, own)
            }
            (Some(Type::Number), v @ Value::Number(_)) => self.check_number(v, path, own),
            (Some(expected), v) => own.push(Problem::new(
                path.as_str(),
                format!(
                    "expected {}, got {} {}",
                    expected.name(),
                    type_name(v),
                    describe(v)
                ),
            )),
        }
        if let Some(allowed) = &self.enumeration {
            if !allowed.contains(value) {
                let names: Vec<String> = allowed.iter().map(|a| a.to_string()).collect();
                own.push(Problem::new(
                    path.as_str(),
                    format!("{} is not one of {}", describe(value), names.join(", ")),
                ));
            }
        }
        children_valid
    }

    fn check_object(
        &self,
        map: &mut Map<String, Value>,
        path: &mut String,
        own: &mut Vec<Problem>,
        problems: &mut Vec<Problem>,
    ) -> bool {
        let join = |path: &str, key: &str| {
            if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            }
        };
        for (key, default) in &self.defaults {
            if !map.contains_key(key) {
                map.insert(key.clone(), default.clone());
            }
        }
        for key in &self.required {
            if !map.contains_key(key) {
                own.push(Problem::new(join(path, key), "is required"));
            }
        }
        let mut valid = true;
        let len = path.len();
        for (key, child) in map.iter_mut() {
            if len > 0 {
                path.push('.');
            }
            path.push_str(key);
            if let Some(&i) = self.index.get(key) {
                valid &= self.properties[i].1.check_node(child, path, problems);
            } else if let Additional::Schema(additional) = &self.additional {
                valid &= additional.check_node(child, path, problems);
            } else if !self.preserve_unknown && !matches!(self.additional, Additional::Any) {
                valid = false;
                problems.push(Problem::new(
                    path.as_str(),
                    format!("unknown field; expected one of: {}", self.known),
                ));
            }
            path.truncate(len);
        }
        valid
    }

    fn check_array(
        &self,
        items: &mut [Value],
        path: &mut String,
        own: &mut Vec<Problem>,
        problems: &mut Vec<Problem>,
    ) -> bool {
        if let Some(max) = self.max_items {
            if items.len() as u64 > max {
                own.push(Problem::new(
                    path.as_str(),
                    format!("has {} items, at most {max} allowed", items.len()),
                ));
            }
        }
        if let Some(min) = self.min_items {
            if (items.len() as u64) < min {
                own.push(Problem::new(
                    path.as_str(),
                    format!("has {} items, at least {min} required", items.len()),
                ));
            }
        }
        let mut valid = true;
        if let Some(item_schema) = &self.items {
            let len = path.len();
            for (i, item) in items.iter_mut().enumerate() {
                use std::fmt::Write as _;
                let _ = write!(path, "[{i}]");
                valid &= item_schema.check_node(item, path, problems);
                path.truncate(len);
            }
        }
        if let Some(keys) = &self.list_map_keys {
            duplicate_keys(keys, items, path, own);
        }
        valid
    }

    fn check_string(&self, s: &str, path: &str, problems: &mut Vec<Problem>) {
        if self.max_length.is_some() || self.min_length.is_some() {
            let len = s.chars().count() as u64;
            if let Some(max) = self.max_length {
                if len > max {
                    problems.push(Problem::new(
                        path,
                        format!("is {len} characters long, at most {max} allowed"),
                    ));
                }
            }
            if let Some(min) = self.min_length {
                if len < min {
                    let what = if min == 1 {
                        "must not be empty".to_owned()
                    } else {
                        format!("is {len} characters long, at least {min} required")
                    };
                    problems.push(Problem::new(path, what));
                }
            }
        }
        if let Some(pattern) = &self.pattern {
            match &pattern.regex {
                Ok(re) if re.is_match(s) => {}
                Ok(_) => problems.push(Problem::new(path, pattern_message(&pattern.source, s))),
                Err(err) => problems.push(Problem::new(
                    path,
                    format!(
                        "the schema's pattern {:?} is not a valid regular expression ({err}), so no value can be checked against it",
                        pattern.source
                    ),
                )),
            }
        }
    }

    fn check_number(&self, v: &Value, path: &str, problems: &mut Vec<Problem>) {
        let Some(n) = v.as_f64() else { return };
        if let Some(min) = self.minimum {
            if n < min {
                problems.push(Problem::new(
                    path,
                    format!("{v} is less than the minimum {min}"),
                ));
            }
        }
        if let Some(max) = self.maximum {
            if n > max {
                problems.push(Problem::new(
                    path,
                    format!("{v} is more than the maximum {max}"),
                ));
            }
        }
    }
}

impl Type {
    fn name(&self) -> &str {
        match self {
            Type::Object => "object",
            Type::Array => "array",
            Type::String => "string",
            Type::Boolean => "boolean",
            Type::Integer => "integer",
            Type::Number => "number",
            Type::Other(name) => name,
        }
    }
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

/// One list-map key of an item: strings are compared as they are, anything else (rare) by its
/// JSON text; the message shows the JSON text either way.
#[derive(PartialEq, Eq, Hash)]
enum KeyPart<'a> {
    Text(&'a str),
    Json(String),
}

impl fmt::Display for KeyPart<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPart::Text(s) => write!(f, "{}", Value::from(*s)),
            KeyPart::Json(j) => f.write_str(j),
        }
    }
}

/// `x-kubernetes-list-type: map`: no two items with the same keys.
fn duplicate_keys(keys: &[String], items: &[Value], path: &str, own: &mut Vec<Problem>) {
    let mut seen: HashMap<Vec<KeyPart<'_>>, usize> = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let key: Vec<KeyPart<'_>> = keys
            .iter()
            .map(|k| match item.get(k) {
                Some(Value::String(s)) => KeyPart::Text(s),
                Some(other) => KeyPart::Json(other.to_string()),
                None => KeyPart::Json(String::new()),
            })
            .collect();
        let text = |key: &[KeyPart<'_>]| {
            key.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("/")
        };
        match seen.entry(key) {
            // The message names the previous item with this key, as each duplicate is met.
            std::collections::hash_map::Entry::Occupied(mut previous) => {
                let at = std::mem::replace(previous.get_mut(), i);
                own.push(Problem::new(
                    format!("{path}[{i}]"),
                    format!(
                        "duplicate {} {} (also at {path}[{at}])",
                        keys.join("/"),
                        text(previous.key()),
                    ),
                ));
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(i);
            }
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

/// The most distinct patterns (or CEL rules) kept compiled; past it a cache starts afresh. The
/// schemas hold a few dozen; the bound keeps a long-running process from growing without end
/// should a caller compile patterns taken from its input.
const CACHE_LIMIT: usize = 1024;

/// A process-wide map from source text to its compiled form.
struct Cache<T>(OnceLock<Mutex<HashMap<String, Compiled<T>>>>);

/// A compiled pattern or rule, or the compiler's message.
type Compiled<T> = Result<Arc<T>, String>;

impl<T> Cache<T> {
    const fn new() -> Self {
        Self(OnceLock::new())
    }

    fn get(
        &self,
        source: &str,
        compile: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Arc<T>, String> {
        let map = self.0.get_or_init(Default::default);
        if let Some(found) = map.lock().unwrap_or_else(|e| e.into_inner()).get(source) {
            return found.clone();
        }
        // Compiled outside the lock: a slow pattern does not hold up other threads.
        let compiled = compile(source).map(Arc::new);
        let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_LIMIT {
            map.clear();
        }
        map.insert(source.to_owned(), compiled.clone());
        compiled
    }
}

static REGEXES: Cache<regex::Regex> = Cache::new();
static PROGRAMS: Cache<Program> = Cache::new();
/// Patterns checked by [`check_regex`]: the configuration and the agent's own checks look at
/// the same pattern more than once.
static CHECKED_REGEXES: Cache<()> = Cache::new();

/// A regular expression, compiled once per process: the schemas' `pattern`s and the patterns of
/// CEL's `matches`. The error is the regex crate's message.
pub fn cached_regex(pattern: &str) -> Result<Arc<regex::Regex>, String> {
    REGEXES.get(pattern, |p| regex::Regex::new(p).map_err(|e| e.to_string()))
}

/// Whether `pattern` is a regular expression the regex crate compiles, with its message if not,
/// without building the pattern for matching.
///
/// Guarantees: the same answer and message as `regex::Regex::new`. It builds the same NFA with
/// the same syntax and size limits (the regex crate's defaults) and leaves out only the full
/// DFA, which this process's features would otherwise build for every small pattern (about
/// 400,000 instructions each) and whose failure is never an error. A refused pattern is
/// compiled again by `regex::Regex::new` for its exact message.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    CHECKED_REGEXES
        .get(pattern, |p| {
            use regex_automata::{meta, util::syntax, MatchKind};
            let config = meta::Config::new()
                .nfa_size_limit(Some(10 * (1 << 20)))
                .hybrid_cache_capacity(2 * (1 << 20))
                .match_kind(MatchKind::LeftmostFirst)
                .utf8_empty(true)
                .dfa(false);
            let built = meta::Builder::new()
                .configure(config)
                .syntax(syntax::Config::default().utf8(true))
                .build(p);
            match built {
                Ok(_) => Ok(()),
                Err(_) => regex::Regex::new(p).map(|_| ()).map_err(|e| e.to_string()),
            }
        })
        .map(|_| ())
}

/// A CEL program, compiled once per process.
fn cached_program(expr: &str) -> Result<Arc<Program>, String> {
    PROGRAMS.get(expr, |e| Program::compile(e).map_err(|e| e.to_string()))
}

fn compile_rules(schema: &Value) -> Vec<Rule> {
    let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    rules
        .iter()
        .filter_map(|rule| {
            let expr = rule.get("rule").and_then(Value::as_str)?;
            let message = rule
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| format!("failed rule: {expr}"));
            Some(Rule {
                expr: expr.to_owned(),
                message,
                program: cached_program(expr),
                presence: Presence::of(expr),
            })
        })
        .collect()
}

/// Evaluates the CEL rules of one structurally valid node; the node is converted to CEL at most
/// once for all of them, and not at all for rules that only test which fields are present.
fn check_rules(rules: &[Rule], value: &Value, path: &str, problems: &mut Vec<Problem>) {
    let mut this = None;
    for rule in rules {
        let result = rule
            .program
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|program| match &rule.presence {
                Some(presence) => presence.evaluate(program, value),
                None => run(program, this.get_or_insert_with(|| to_cel(value)).clone()),
            });
        match result {
            Ok(true) => {}
            Ok(false) => problems.push(Problem::new(path, rule.message.clone())),
            Err(err) => problems.push(Problem::new(
                path,
                format!("rule {:?} could not be evaluated: {err}", rule.expr),
            )),
        }
    }
}

/// Evaluates one CEL rule with `self` bound to `value`, as the API server does.
pub fn evaluate(expr: &str, value: &Value) -> Result<bool, String> {
    let program = cached_program(expr)?;
    run(&program, to_cel(value))
}

/// The functions and type names every rule sees, set up once per process.
fn root_context() -> &'static Context<'static> {
    static ROOT: OnceLock<Context<'static>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut context = Context::default();
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
        context.add_function("matches", cel_matches);
        context
    })
}

fn run(program: &Program, this: Cel) -> Result<bool, String> {
    let mut context = root_context().new_inner_scope();
    context.add_variable_from_value("self", this);
    match program.execute(&context) {
        Ok(Cel::Bool(result)) => Ok(result),
        Ok(other) => Err(format!("returned {other:?}, not a boolean")),
        Err(err) => Err(err.to_string()),
    }
}

/// CEL's `matches`, as the interpreter defines it, with the pattern compiled once per process
/// instead of once per call.
fn cel_matches(
    ftx: &FunctionContext,
    This(this): This<Arc<String>>,
    regex: Arc<String>,
) -> cel_interpreter::ResolveResult {
    match cached_regex(&regex) {
        Ok(re) => Ok(Cel::Bool(re.is_match(&this))),
        Err(err) => Err(ftx.error(format!("'{regex}' not a valid regex:\n{err}"))),
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
    fn a_pattern_that_does_not_compile_refuses_every_value_naming_the_field() {
        let schema = json!({
            "type": "object",
            "properties": {"name": {"type": "string", "pattern": "^(unclosed$"}}
        });
        let got = problems(schema, json!({"name": "anything"}));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "spec.name: the schema's pattern \"^(unclosed$\" is not a valid regular expression"
            ),
            "{got:?}"
        );
    }

    #[test]
    fn patterns_and_rules_are_compiled_once_per_process() {
        let a = cached_regex("^compiled-once-[0-9]+$").unwrap();
        let b = cached_regex("^compiled-once-[0-9]+$").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(cached_regex("(").is_err());
        let rule = "self.x == 'compiled once'";
        assert!(Arc::ptr_eq(
            &cached_program(rule).unwrap(),
            &cached_program(rule).unwrap()
        ));
        // Two compilations of a schema share the compiled pattern and rule.
        let schema = json!({"type": "string", "pattern": "^compiled-once-[0-9]+$",
            "x-kubernetes-validations": [{"rule": "self.size() > 1"}]});
        let (x, y) = (Schema::compile(&schema), Schema::compile(&schema));
        let pattern = |s: &Schema| s.pattern.as_ref().unwrap().regex.clone().unwrap();
        assert!(Arc::ptr_eq(&pattern(&x), &pattern(&y)));
        assert!(Arc::ptr_eq(&pattern(&x), &a));
        let program = |s: &Schema| s.rules[0].program.clone().unwrap();
        assert!(Arc::ptr_eq(&program(&x), &program(&y)));
    }

    #[test]
    fn presence_rules_give_what_the_whole_value_gives() {
        let one_of = crate::one_of::exactly_one_rule(&["file", "package", "service"]);
        for rule in [
            one_of.as_str(),
            "[has(self.a), has(self.b)].filter(x, x).size() <= 1",
            "has(self.enabled) || has(self.state)",
            "!(has(self.a) && has(self.b))",
        ] {
            let presence = Presence::of(rule).unwrap_or_else(|| panic!("{rule}"));
            let program = cached_program(rule).unwrap();
            for value in [
                json!({}),
                json!({"file": {"path": "/x"}}),
                json!({"file": {}, "package": null}),
                json!({"__package__": 1}),
                json!({"a": 1, "b": "x", "other": [1]}),
                json!({"enabled": false}),
                json!({"state": "absent", "a": null}),
                json!("not an object"),
                json!([1]),
            ] {
                // Twice: the second answer comes from what the first one remembered.
                for _ in 0..2 {
                    assert_eq!(
                        presence.evaluate(&program, &value),
                        run(&program, to_cel(&value)),
                        "{rule} on {value}"
                    );
                }
            }
        }
        // Rules that read values, or `self` itself, are evaluated on the whole value.
        for rule in [
            "self.state == 'absent' ? (has(self.regexp) || has(self.line)) : has(self.line)",
            "type(self) == int ? self > 0 : self.matches('^[0-9]+%$')",
            "self.all(x, self.exists_one(y, y.name == x.name))",
            "[1].all(self, has(self.a))",
        ] {
            assert!(Presence::of(rule).is_none(), "{rule}");
        }
    }

    #[test]
    fn cel_matches_uses_the_cache_and_reports_bad_patterns() {
        assert_eq!(evaluate("self.matches('^a+$')", &json!("aaa")), Ok(true));
        assert_eq!(evaluate("self.matches('^a+$')", &json!("ab")), Ok(false));
        let err = evaluate("self.matches('(')", &json!("a")).unwrap_err();
        assert!(err.contains("not a valid regex"), "{err}");
    }

    #[test]
    fn list_map_duplicates_name_the_previous_item() {
        let schema = json!({
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {}}}
        });
        assert_eq!(
            problems(
                schema,
                json!([{"name": "a"}, {"name": 1}, {"name": "a"}, {"name": 1}, {"name": "a"}])
            ),
            [
                "spec[2]: duplicate name \"a\" (also at spec[0])",
                "spec[3]: duplicate name 1 (also at spec[1])",
                "spec[4]: duplicate name \"a\" (also at spec[2])",
            ]
        );
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

    #[test]
    fn checking_a_pattern_answers_as_compiling_it() {
        for pattern in [
            "^key1=",
            r"(?i)^\s*PermitRootLogin\b",
            r"\p{Greek}+",
            "^(unclosed",
            "[z-a]",
            r"\p{NoSuchClass}",
            "a**",
            // Valid syntax, past the regex crate's compiled-size limit.
            r"\w{1000}{1000}",
        ] {
            let compiled = regex::Regex::new(pattern)
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert_eq!(check_regex(pattern), compiled, "{pattern}");
            assert_eq!(check_regex(pattern), compiled, "{pattern}, cached");
        }
        assert!(check_regex(r"\w{1000}{1000}")
            .unwrap_err()
            .contains("exceeds size limit"));
    }
}
