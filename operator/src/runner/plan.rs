//! A pure parser of `terraform show -json PLAN` (and `tofu show -json`) into DriftReport items.
//!
//! - `resource_changes` (what the plan would do) and `resource_drift` (changes made outside
//!   the tool, reported by Terraform ≥ 1.x and OpenTofu) become [`DriftItem`]s; an address
//!   present in both is reported once, from `resource_changes`;
//! - `output_changes` become items with address `output.NAME` and domain `output`;
//! - actions: `create` → added, `update` → changed, `delete` → removed,
//!   `delete`+`create` (either order) → changed with `replace`; `no-op` and `read` are not drift;
//! - attributes: `before`/`after` are flattened to dotted paths (`tags.env`, `ingress.0.port`)
//!   and only differing leaves are kept; values under `before_sensitive`/`after_sensitive` are
//!   `<redacted>`, values unknown until apply are `(known after apply)`, and every rendered
//!   value goes through the secret patterns of [`crate::runner::redact`].
//!
//! Sensitive values are also *collected* ([`ParsedPlan::sensitive`]) so that the caller can
//! redact them from the full plan JSON and text before storing them: values under
//! `before_sensitive`/`after_sensitive` of every change (drift or not, data sources too), values
//! under `sensitive_values` of every resource in `prior_state` (root and child modules), outputs
//! marked `sensitive` in `prior_state`, and the values and defaults of variables declared
//! `sensitive = true` (`variables` and `configuration`). A value Terraform itself does not mark
//! (for example an output of `terraform_remote_state`, which Terraform 1.0 shows in the clear)
//! is only caught by the secret patterns.
//!
//! The document is streamed: each change and each `prior_state` resource is converted as soon
//! as it is read, so the parser never holds the whole plan as a JSON tree (`planned_values` is
//! skipped without being materialised; only the `variables` blocks of `configuration` are kept).
//! `before`/`after` of a change and the `values` of a state resource stay raw JSON text until
//! needed: a `no-op` change or an unmarked resource is never turned into a tree.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use driftless_crds::drift_report::{AttributeChange, ChangeType, DriftItem};
use driftless_crds::secret::{SecretString, REDACTED};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::redact::Redact;

/// Most attributes kept per item; the plan artifact has the rest.
pub const MAX_ATTRIBUTES: usize = 50;
/// Longest rendered attribute value kept, in bytes; longer values are cut with `…`.
pub const MAX_VALUE_LEN: usize = 1024;
/// What a value unknown until apply is shown as.
pub const UNKNOWN: &str = "(known after apply)";
/// Shortest sensitive value redacted wherever it occurs in the stored plan; shorter ones
/// (`"1"`, `"id"`) would also hit unrelated text, so they are redacted only as whole JSON
/// string values ([`ParsedPlan::sensitive_tokens`]).
pub const MIN_SECRET_LEN: usize = 4;

/// Why a plan could not be parsed.
#[derive(Debug, thiserror::Error)]
#[error("plan JSON: {0}")]
pub struct PlanError(#[from] serde_json::Error);

/// Items and counts of one plan.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedPlan {
    /// Every drifted item, in plan order (resources, then drift-only resources, then outputs).
    pub items: Vec<DriftItem>,
    /// Items that would be added.
    pub added: u32,
    /// Items that would be changed or replaced.
    pub changed: u32,
    /// Items that would be removed.
    pub removed: u32,
    /// `terraform_version` of the plan.
    pub terraform_version: Option<String>,
    /// `format_version` of the plan.
    pub format_version: Option<String>,
    /// Sensitive string values seen in the plan (at least [`MIN_SECRET_LEN`] characters), each
    /// also in its JSON-escaped form when that differs, so the caller can redact them from the
    /// full plan JSON and text before storing them.
    pub sensitive: Vec<SecretString>,
    /// Shorter sensitive strings, JSON-escaped: redacted only where they are a whole JSON string
    /// value (`"ab"` followed by `,` `}` or `]`), never inside other text or as object keys.
    pub sensitive_tokens: Vec<SecretString>,
    /// A number or boolean was marked sensitive: the stored plan JSON must go through
    /// [`redact_marked`] (text replacement cannot find them).
    pub sensitive_non_strings: bool,
}

impl ParsedPlan {
    /// Whether anything drifted.
    pub fn drifted(&self) -> bool {
        !self.items.is_empty()
    }
}

/// Parses `show -json` output.
pub fn parse(json: &[u8], redact: &Redact) -> Result<ParsedPlan, PlanError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let mut state = State {
        redact,
        plan: ParsedPlan::default(),
        seen: HashSet::new(),
        drift: Vec::new(),
        sensitive: Secrets::default(),
        variables: BTreeMap::new(),
        sensitive_variables: Vec::new(),
    };
    PlanSeed(&mut state).deserialize(&mut de)?;
    de.end()?;
    state.collect_variables();
    let State {
        mut plan,
        drift,
        seen,
        sensitive,
        ..
    } = state;
    // Drift-only items (changes outside the tool with no planned action) follow the planned ones.
    let mut outputs = Vec::new();
    let items = std::mem::take(&mut plan.items);
    let (resources, outs): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.domain != "output");
    outputs.extend(outs);
    plan.items = resources;
    for item in drift {
        if !seen.contains(&item.address) {
            plan.items.push(item);
        }
    }
    plan.items.extend(outputs);
    for item in &plan.items {
        match item.change {
            ChangeType::Added => plan.added += 1,
            ChangeType::Changed => plan.changed += 1,
            ChangeType::Removed => plan.removed += 1,
        }
    }
    // JSON-escaped forms (quotes, backslashes, newlines, control characters) so the values are
    // also found in the plan JSON text.
    let escape = |s: &str| -> Option<String> {
        let quoted = serde_json::to_string(s).ok()?;
        Some(quoted[1..quoted.len() - 1].to_owned())
    };
    let mut long = Vec::new();
    let mut short = Vec::new();
    plan.sensitive_non_strings = sensitive.non_strings;
    for value in sensitive.strings {
        let escaped = escape(&value);
        if value.len() >= MIN_SECRET_LEN {
            if let Some(e) = escaped.filter(|e| *e != value) {
                long.push(e);
            }
            long.push(value);
        } else if let Some(e) = escaped {
            short.push(e);
        }
    }
    long.sort();
    long.dedup();
    short.sort();
    short.dedup();
    plan.sensitive = long.into_iter().map(SecretString::new).collect();
    plan.sensitive_tokens = short.into_iter().map(SecretString::new).collect();
    Ok(plan)
}

/// Sensitive values seen while flattening.
#[derive(Default)]
struct Secrets {
    /// Non-empty string values.
    strings: HashSet<String>,
    /// Whether a number or a boolean was marked sensitive (the stored plan then needs
    /// [`redact_marked`]: such values cannot be found by text).
    non_strings: bool,
}

struct State<'r> {
    redact: &'r Redact,
    plan: ParsedPlan,
    seen: HashSet<String>,
    drift: Vec<DriftItem>,
    sensitive: Secrets,
    /// `variables`: root variable values (sensitive or not; small).
    variables: BTreeMap<String, Value>,
    /// Names of root variables declared sensitive, and sensitive defaults seen in
    /// `configuration`.
    sensitive_variables: Vec<String>,
}

/// One entry of `variables`.
#[derive(Deserialize)]
struct RawVariable {
    #[serde(default)]
    value: Value,
}

/// `configuration`, only what says which variables are sensitive.
#[derive(Deserialize, Default)]
struct RawConfigModule {
    #[serde(default)]
    variables: Option<BTreeMap<String, RawConfigVariable>>,
    #[serde(default)]
    module_calls: Option<BTreeMap<String, RawModuleCall>>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    root_module: Option<RawConfigModule>,
}

#[derive(Deserialize)]
struct RawModuleCall {
    #[serde(default)]
    module: Option<RawConfigModule>,
}

#[derive(Deserialize)]
struct RawConfigVariable {
    #[serde(default)]
    default: Value,
    #[serde(default)]
    sensitive: bool,
}

/// A resource of `prior_state` (other fields skipped); `values` stays raw JSON text and is
/// only parsed when `sensitive_values` marks something.
#[derive(Deserialize)]
struct RawStateResource<'a> {
    #[serde(default, borrow)]
    values: Option<&'a RawValue>,
    #[serde(default)]
    sensitive_values: Value,
}

/// An output of `prior_state`.
#[derive(Deserialize)]
struct RawStateOutput {
    #[serde(default)]
    sensitive: bool,
    #[serde(default)]
    value: Value,
}

/// One entry of `resource_changes` / `resource_drift`.
#[derive(Deserialize)]
struct RawResource<'a> {
    address: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(borrow)]
    change: RawChange<'a>,
}

/// The `change` object (also the value of each `output_changes` entry). `before` and `after`
/// stay raw JSON text until needed: most changes of a plan are `no-op` and only matter when
/// their sensitivity mirrors mark a value.
#[derive(Deserialize)]
struct RawChange<'a> {
    #[serde(default)]
    actions: Vec<String>,
    #[serde(default, borrow)]
    before: Option<&'a RawValue>,
    #[serde(default, borrow)]
    after: Option<&'a RawValue>,
    #[serde(default)]
    after_unknown: Value,
    #[serde(default)]
    before_sensitive: Value,
    #[serde(default)]
    after_sensitive: Value,
}

/// A [`RawChange`] with `before` and `after` parsed.
struct Change {
    before: Value,
    after: Value,
    after_unknown: Value,
    before_sensitive: Value,
    after_sensitive: Value,
}

impl RawChange<'_> {
    fn parsed(self) -> Result<Change, serde_json::Error> {
        let value = |raw: Option<&RawValue>| match raw {
            Some(raw) => serde_json::from_str(raw.get()),
            None => Ok(Value::Null),
        };
        Ok(Change {
            before: value(self.before)?,
            after: value(self.after)?,
            after_unknown: self.after_unknown,
            before_sensitive: self.before_sensitive,
            after_sensitive: self.after_sensitive,
        })
    }
}

/// The action of a change, as drift.
fn classify(actions: &[String]) -> Option<(ChangeType, bool)> {
    let has = |a: &str| actions.iter().any(|x| x == a);
    if has("delete") && has("create") {
        Some((ChangeType::Changed, true))
    } else if has("create") {
        Some((ChangeType::Added, false))
    } else if has("delete") {
        Some((ChangeType::Removed, false))
    } else if has("update") {
        Some((ChangeType::Changed, false))
    } else {
        None
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    Planned,
    Drift,
}

impl State<'_> {
    fn resource(
        &mut self,
        raw: RawResource<'_>,
        section: Section,
    ) -> Result<(), serde_json::Error> {
        if raw.mode.as_deref() == Some("data") && section == Section::Drift {
            return self.collect_sensitive(&raw.change);
        }
        let Some((mut change, replace)) = classify(&raw.change.actions) else {
            return self.collect_sensitive(&raw.change);
        };
        let c = raw.change.parsed()?;
        // Drift entries describe recorded state → live; items show live → desired.
        let (live, desired, live_sens, desired_sens, unknown) = match section {
            Section::Planned => (
                c.before,
                c.after,
                c.before_sensitive,
                c.after_sensitive,
                c.after_unknown,
            ),
            Section::Drift => {
                change = match change {
                    ChangeType::Removed => ChangeType::Added,
                    ChangeType::Added => ChangeType::Removed,
                    ChangeType::Changed => ChangeType::Changed,
                };
                (
                    c.after,
                    c.before,
                    c.after_sensitive,
                    c.before_sensitive,
                    Value::Null,
                )
            }
        };
        let attributes = self.attributes(&live, &desired, &live_sens, &desired_sens, &unknown);
        let item = DriftItem {
            address: self.redact.text(&raw.address),
            domain: raw.kind,
            source: (section == Section::Drift).then(|| "resource_drift".to_owned()),
            change,
            replace: replace && section == Section::Planned,
            attributes,
            diff: None,
            corrected: false,
        };
        match section {
            Section::Planned => {
                self.seen.insert(raw.address);
                self.plan.items.push(item);
            }
            Section::Drift => self.drift.push(item),
        }
        Ok(())
    }

    fn output(&mut self, name: &str, c: RawChange<'_>) -> Result<(), serde_json::Error> {
        let Some((change, replace)) = classify(&c.actions) else {
            return self.collect_sensitive(&c);
        };
        let c = c.parsed()?;
        let mut attributes = self.attributes(
            &c.before,
            &c.after,
            &c.before_sensitive,
            &c.after_sensitive,
            &c.after_unknown,
        );
        for a in &mut attributes {
            if a.path.is_empty() {
                a.path = "value".into();
            }
        }
        self.plan.items.push(DriftItem {
            address: format!("output.{}", self.redact.apply(name)),
            domain: "output".into(),
            source: None,
            change,
            replace,
            attributes,
            diff: None,
            corrected: false,
        });
        Ok(())
    }

    /// Remembers the sensitive values of a change that is not drift (for artifact redaction);
    /// the raw values are parsed only when their mirror marks something.
    fn collect_sensitive(&mut self, c: &RawChange<'_>) -> Result<(), serde_json::Error> {
        for (value, sensitive) in [
            (c.before, &c.before_sensitive),
            (c.after, &c.after_sensitive),
        ] {
            self.collect_raw(value, sensitive)?;
        }
        Ok(())
    }

    /// [`State::collect_marked`] of raw JSON text, parsed only when `sensitive` marks a value.
    fn collect_raw(
        &mut self,
        value: Option<&RawValue>,
        sensitive: &Value,
    ) -> Result<(), serde_json::Error> {
        if let Some(raw) = value.filter(|_| has_true(sensitive)) {
            let value: Value = serde_json::from_str(raw.get())?;
            self.collect_marked(&value, sensitive);
        }
        Ok(())
    }

    /// Remembers the string leaves of `value` marked `true` in the mirror `sensitive`.
    fn collect_marked(&mut self, value: &Value, sensitive: &Value) {
        if has_true(sensitive) {
            let mut sink = BTreeMap::new();
            flatten(
                value,
                String::new(),
                sensitive,
                &mut sink,
                &mut self.sensitive,
            );
        }
    }

    /// `configuration`: which variables are sensitive; their defaults are remembered at once.
    fn config_module(&mut self, module: RawConfigModule, root: bool) {
        for (name, var) in module.variables.unwrap_or_default() {
            if var.sensitive {
                self.collect_marked(&var.default, &Value::Bool(true));
                if root {
                    self.sensitive_variables.push(name);
                }
            }
        }
        for (_, call) in module.module_calls.unwrap_or_default() {
            if let Some(m) = call.module {
                self.config_module(m, false);
            }
        }
    }

    /// Values of root variables declared sensitive (`variables` and `configuration` may come
    /// in either order, so this runs at the end).
    fn collect_variables(&mut self) {
        let names = std::mem::take(&mut self.sensitive_variables);
        for name in names {
            if let Some(value) = self.variables.remove(&name) {
                self.collect_marked(&value, &Value::Bool(true));
            }
        }
    }

    /// Differing leaves of `before` and `after`, rendered and redacted.
    fn attributes(
        &mut self,
        before: &Value,
        after: &Value,
        before_sensitive: &Value,
        after_sensitive: &Value,
        after_unknown: &Value,
    ) -> Vec<AttributeChange> {
        let mut b = BTreeMap::new();
        let mut a = BTreeMap::new();
        flatten(
            before,
            String::new(),
            before_sensitive,
            &mut b,
            &mut self.sensitive,
        );
        flatten(
            after,
            String::new(),
            after_sensitive,
            &mut a,
            &mut self.sensitive,
        );
        let mut unknown = Vec::new();
        unknown_paths(after_unknown, String::new(), &mut unknown);
        let mut out = Vec::new();
        let paths: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        for path in paths {
            let lb = b.get(path);
            let la = a.get(path);
            if lb.map(|l| &l.raw) == la.map(|l| &l.raw) {
                continue;
            }
            if out.len() >= MAX_ATTRIBUTES {
                break;
            }
            let after = match la {
                Some(l) => Some(self.render(l)),
                None if unknown.contains(path) => Some(UNKNOWN.to_owned()),
                None => None,
            };
            out.push(AttributeChange {
                path: path.clone(),
                before: lb.map(|l| self.render(l)),
                after,
            });
        }
        for path in unknown {
            if out.len() >= MAX_ATTRIBUTES {
                break;
            }
            if a.contains_key(&path) || out.iter().any(|c| c.path == path) {
                continue;
            }
            out.push(AttributeChange {
                before: b.get(&path).map(|l| self.render(l)),
                after: Some(UNKNOWN.to_owned()),
                path,
            });
        }
        out
    }

    fn render(&self, leaf: &Leaf<'_>) -> String {
        if leaf.sensitive {
            return REDACTED.to_owned();
        }
        let text = match leaf.raw {
            Value::String(s) => self.redact.text(s),
            other => self.redact.text(&other.to_string()),
        };
        cut(text)
    }
}

fn cut(mut text: String) -> String {
    if text.len() > MAX_VALUE_LEN {
        let mut end = MAX_VALUE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

struct Leaf<'v> {
    raw: &'v Value,
    sensitive: bool,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The sensitivity mirror of a child: `true` stays `true` for every descendant.
fn child<'v>(sensitive: &'v Value, key: &str, index: Option<usize>) -> &'v Value {
    static NULL: Value = Value::Null;
    match (sensitive, index) {
        (Value::Bool(true), _) => sensitive,
        (Value::Object(map), None) => map.get(key).unwrap_or(&NULL),
        (Value::Array(list), Some(i)) => list.get(i).unwrap_or(&NULL),
        _ => &NULL,
    }
}

fn flatten<'v>(
    value: &'v Value,
    path: String,
    sensitive: &Value,
    out: &mut BTreeMap<String, Leaf<'v>>,
    secrets: &mut Secrets,
) {
    match value {
        Value::Null => {}
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                flatten(v, join(&path, k), child(sensitive, k, None), out, secrets);
            }
        }
        Value::Array(list) if !list.is_empty() => {
            for (i, v) in list.iter().enumerate() {
                let key = i.to_string();
                flatten(
                    v,
                    join(&path, &key),
                    child(sensitive, &key, Some(i)),
                    out,
                    secrets,
                );
            }
        }
        Value::Object(_) | Value::Array(_) => {}
        leaf => {
            let is_sensitive = sensitive == &Value::Bool(true);
            if is_sensitive {
                match leaf {
                    Value::String(s) if !s.is_empty() => {
                        secrets.strings.insert(s.clone());
                    }
                    Value::String(_) => {}
                    _ => secrets.non_strings = true,
                }
            }
            out.insert(
                path,
                Leaf {
                    raw: leaf,
                    sensitive: is_sensitive,
                },
            );
        }
    }
}

fn has_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Object(map) => map.values().any(has_true),
        Value::Array(list) => list.iter().any(has_true),
        _ => false,
    }
}

fn unknown_paths(unknown: &Value, path: String, out: &mut Vec<String>) {
    match unknown {
        Value::Bool(true) => out.push(path),
        Value::Object(map) => {
            for (k, v) in map {
                unknown_paths(v, join(&path, k), out);
            }
        }
        Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                unknown_paths(v, join(&path, &i.to_string()), out);
            }
        }
        _ => {}
    }
}

// ---- streaming deserialization -------------------------------------------------------------

/// `DeserializeSeed` of a visitor whose value may be `null` (nothing to collect then).
macro_rules! nullable_seed {
    ($ty:ident) => {
        impl<'de> DeserializeSeed<'de> for $ty<'_, '_> {
            type Value = ();
            fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
                d.deserialize_option(self)
            }
        }
    };
}

/// The `null` / present half of such a visitor: `null` is nothing, a value goes to `$inner`.
macro_rules! visit_nullable {
    ($de:lifetime, $inner:ident) => {
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_some<D: Deserializer<$de>>(self, d: D) -> Result<(), D::Error> {
            d.$inner(self)
        }
    };
}

struct PlanSeed<'s, 'r>(&'s mut State<'r>);

impl<'de> DeserializeSeed<'de> for PlanSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PlanSeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a plan JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match key.as_ref() {
                "resource_changes" => map.next_value_seed(Changes(self.0, Section::Planned))?,
                "resource_drift" => map.next_value_seed(Changes(self.0, Section::Drift))?,
                "output_changes" => map.next_value_seed(Outputs(self.0))?,
                "prior_state" => {
                    map.next_value_seed(StateVisitor(self.0, StateLevel::State))?;
                }
                "variables" => {
                    let vars = map.next_value::<Option<BTreeMap<String, RawVariable>>>()?;
                    self.0.variables = vars
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.value))
                        .collect();
                }
                "configuration" => {
                    if let Some(root) = map
                        .next_value::<Option<RawConfig>>()?
                        .and_then(|c| c.root_module)
                    {
                        self.0.config_module(root, true);
                    }
                }
                "terraform_version" => {
                    self.0.plan.terraform_version = map.next_value::<Option<String>>()?;
                }
                "format_version" => {
                    self.0.plan.format_version = map.next_value::<Option<String>>()?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

struct Changes<'s, 'r>(&'s mut State<'r>, Section);

nullable_seed!(Changes);

impl<'de> Visitor<'de> for Changes<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of resource changes")
    }
    visit_nullable!('de, deserialize_seq);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(raw) = seq.next_element::<RawResource<'de>>()? {
            self.0
                .resource(raw, self.1)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

struct Outputs<'s, 'r>(&'s mut State<'r>);

nullable_seed!(Outputs);

impl<'de> Visitor<'de> for Outputs<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of output changes")
    }
    visit_nullable!('de, deserialize_map);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(name) = map.next_key::<String>()? {
            let change = map.next_value::<RawChange<'de>>()?;
            self.0
                .output(&name, change)
                .map_err(serde::de::Error::custom)?;
        }
        Ok(())
    }
}

/// `prior_state` (`{format_version, values: {outputs, root_module}}`), `values` and modules:
/// streamed, one resource at a time, collecting sensitive values only.
#[derive(Clone, Copy, PartialEq)]
enum StateLevel {
    /// `prior_state` itself.
    State,
    /// Its `values`.
    Values,
    /// `root_module` or one of `child_modules`.
    Module,
}

struct StateVisitor<'s, 'r>(&'s mut State<'r>, StateLevel);

nullable_seed!(StateVisitor);

impl<'de> Visitor<'de> for StateVisitor<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.1 {
            StateLevel::State => "a prior_state object",
            StateLevel::Values => "a state values object",
            StateLevel::Module => "a state module object",
        })
    }
    visit_nullable!('de, deserialize_map);
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let state = self.0;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match (self.1, key.as_ref()) {
                (StateLevel::State, "values") => {
                    map.next_value_seed(StateVisitor(&mut *state, StateLevel::Values))?;
                }
                (StateLevel::Values, "outputs") => {
                    let outputs = map.next_value::<Option<BTreeMap<String, RawStateOutput>>>()?;
                    for (_, out) in outputs.unwrap_or_default() {
                        if out.sensitive {
                            state.collect_marked(&out.value, &Value::Bool(true));
                        }
                    }
                }
                (StateLevel::Values, "root_module") => {
                    map.next_value_seed(StateVisitor(&mut *state, StateLevel::Module))?;
                }
                (StateLevel::Module, "resources") => {
                    map.next_value_seed(StateList(&mut *state, false))?;
                }
                (StateLevel::Module, "child_modules") => {
                    map.next_value_seed(StateList(&mut *state, true))?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// `resources` (false) or `child_modules` (true) of a state module.
struct StateList<'s, 'r>(&'s mut State<'r>, bool);

nullable_seed!(StateList);

impl<'de> Visitor<'de> for StateList<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.1 {
            "a list of state modules"
        } else {
            "a list of state resources"
        })
    }
    visit_nullable!('de, deserialize_seq);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let state = self.0;
        if self.1 {
            while seq
                .next_element_seed(StateVisitor(&mut *state, StateLevel::Module))?
                .is_some()
            {}
        } else {
            while let Some(r) = seq.next_element::<RawStateResource<'de>>()? {
                state
                    .collect_raw(r.values, &r.sensitive_values)
                    .map_err(serde::de::Error::custom)?;
            }
        }
        Ok(())
    }
}

/// Replaces, in a whole plan document, every value Terraform marks sensitive by `<redacted>`,
/// whatever its type: `before`/`after` of `resource_changes`, `resource_drift` and
/// `output_changes` under their `*_sensitive` mirrors, resource `values` under
/// `sensitive_values` and outputs marked `sensitive` in `planned_values` and `prior_state`
/// (child modules too), and the values and defaults of variables declared sensitive. Used for
/// the stored plan when [`ParsedPlan::sensitive_non_strings`] says text replacement is not
/// enough (it builds the whole tree, so only then).
pub fn redact_marked(doc: &mut Value) {
    fn mark(value: &mut Value, mirror: &Value) {
        match (mirror, value) {
            (_, Value::Null) => {}
            (Value::Bool(true), value) => *value = Value::String(REDACTED.to_owned()),
            (Value::Object(m), Value::Object(v)) => {
                for (k, s) in m {
                    if let Some(c) = v.get_mut(k) {
                        mark(c, s);
                    }
                }
            }
            (Value::Array(l), Value::Array(v)) => {
                for (c, s) in v.iter_mut().zip(l) {
                    mark(c, s);
                }
            }
            _ => {}
        }
    }
    fn change(c: &mut Value) {
        let Some(c) = c.as_object_mut() else { return };
        for (value, mirror) in [("before", "before_sensitive"), ("after", "after_sensitive")] {
            let mirror = c.get(mirror).cloned().unwrap_or(Value::Null);
            if let Some(v) = c.get_mut(value) {
                mark(v, &mirror);
            }
        }
    }
    fn module(m: &mut Value) {
        let Some(m) = m.as_object_mut() else { return };
        for r in m
            .get_mut("resources")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(r) = r.as_object_mut() else { continue };
            let mirror = r.get("sensitive_values").cloned().unwrap_or(Value::Null);
            if let Some(v) = r.get_mut("values") {
                mark(v, &mirror);
            }
        }
        for child in m
            .get_mut("child_modules")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            module(child);
        }
    }
    fn values(v: Option<&mut Value>) {
        let Some(v) = v.and_then(Value::as_object_mut) else {
            return;
        };
        for out in v
            .get_mut("outputs")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|o| o.values_mut())
        {
            if out.get("sensitive") == Some(&Value::Bool(true)) {
                if let Some(value) = out.get_mut("value") {
                    mark(value, &Value::Bool(true));
                }
            }
        }
        if let Some(root) = v.get_mut("root_module") {
            module(root);
        }
    }
    /// Sensitive variables of a configuration module: defaults redacted, names returned.
    fn config_vars(m: &mut Value, out: &mut Vec<String>) {
        let Some(m) = m.as_object_mut() else { return };
        for (name, var) in m
            .get_mut("variables")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flatten()
        {
            if var.get("sensitive") == Some(&Value::Bool(true)) {
                out.push(name.clone());
                if let Some(d) = var.get_mut("default") {
                    mark(d, &Value::Bool(true));
                }
            }
        }
        for call in m
            .get_mut("module_calls")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|c| c.values_mut())
        {
            if let Some(child) = call.get_mut("module") {
                let mut ignored = Vec::new();
                config_vars(child, &mut ignored);
            }
        }
    }

    let Some(doc) = doc.as_object_mut() else {
        return;
    };
    for section in ["resource_changes", "resource_drift"] {
        for rc in doc
            .get_mut(section)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = rc.get_mut("change") {
                change(c);
            }
        }
    }
    for c in doc
        .get_mut("output_changes")
        .and_then(Value::as_object_mut)
        .into_iter()
        .flat_map(|o| o.values_mut())
    {
        change(c);
    }
    values(doc.get_mut("planned_values"));
    values(
        doc.get_mut("prior_state")
            .and_then(Value::as_object_mut)
            .and_then(|p| p.get_mut("values")),
    );
    let mut sensitive_vars = Vec::new();
    if let Some(root) = doc
        .get_mut("configuration")
        .and_then(Value::as_object_mut)
        .and_then(|c| c.get_mut("root_module"))
    {
        config_vars(root, &mut sensitive_vars);
    }
    if let Some(vars) = doc.get_mut("variables").and_then(Value::as_object_mut) {
        for name in sensitive_vars {
            if let Some(value) = vars.get_mut(&name).and_then(|v| v.get_mut("value")) {
                mark(value, &Value::Bool(true));
            }
        }
    }
}

/// A synthetic plan of `n` resources in the shape Terraform writes (`prior_state`,
/// `planned_values`, `resource_changes`, `configuration`), every third resource drifted (one
/// tag changed) and one sensitive output; for the parser tests and `make bench-plan`.
pub fn generate_plan(n: usize) -> String {
    use std::fmt::Write as _;
    let values = |i: usize, version: &str| {
        format!(
            r#"{{"ami":"ami-0c55b159cbfafe1f0","arn":"arn:aws:ec2:eu-west-1:123456789012:instance/i-{i:016x}","id":"i-{i:016x}","instance_type":"t3.micro","monitoring":false,"private_ip":"10.0.{}.{}","subnet_id":"subnet-0123456789abcdef0","tags":{{"Name":"web-{i}","env":"prod","version":"{version}"}},"root_block_device":[{{"volume_size":20,"volume_type":"gp3","encrypted":true}}],"vpc_security_group_ids":["sg-0123456789abcdef0"]}}"#,
            (i / 250) % 256,
            i % 250
        )
    };
    let mut prior = String::new();
    let mut planned = String::new();
    let mut changes = String::new();
    for i in 0..n {
        let sep = if i == 0 { "" } else { "," };
        let drifted = i % 3 == 0;
        let before = values(i, "v1");
        let after = values(i, if drifted { "v2" } else { "v1" });
        let head = format!(
            r#""address":"aws_instance.web[{i}]","mode":"managed","type":"aws_instance","name":"web","index":{i},"provider_name":"registry.terraform.io/hashicorp/aws""#
        );
        let _ = write!(
            prior,
            r#"{sep}{{{head},"schema_version":1,"values":{before},"sensitive_values":{{"tags":{{}},"root_block_device":[{{}}],"vpc_security_group_ids":[false]}}}}"#
        );
        let _ = write!(
            planned,
            r#"{sep}{{{head},"schema_version":1,"values":{after},"sensitive_values":{{"tags":{{}},"root_block_device":[{{}}],"vpc_security_group_ids":[false]}}}}"#
        );
        let action = if drifted { "update" } else { "no-op" };
        let _ = write!(
            changes,
            r#"{sep}{{{head},"change":{{"actions":["{action}"],"before":{before},"after":{after},"after_unknown":{{}},"before_sensitive":{{"tags":{{}}}},"after_sensitive":{{"tags":{{}}}}}}}}"#
        );
    }
    format!(
        r#"{{"format_version":"1.2","terraform_version":"1.9.8","planned_values":{{"outputs":{{"db_password":{{"sensitive":true,"value":"generated-secret"}}}},"root_module":{{"resources":[{planned}]}}}},"resource_changes":[{changes}],"output_changes":{{"db_password":{{"actions":["update"],"before":"old-secret","after":"generated-secret","after_unknown":false,"before_sensitive":true,"after_sensitive":true}}}},"prior_state":{{"format_version":"1.0","terraform_version":"1.9.8","values":{{"root_module":{{"resources":[{prior}]}}}}}},"configuration":{{"root_module":{{"resources":[{{"address":"aws_instance.web","mode":"managed","type":"aws_instance","name":"web","provider_config_key":"aws","expressions":{{"ami":{{"constant_value":"ami-0c55b159cbfafe1f0"}}}},"count_expression":{{"constant_value":{n}}}}}]}}}},"timestamp":"2024-11-05T12:00:00Z","errored":false}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> ParsedPlan {
        parse(v.to_string().as_bytes(), &Redact::default()).unwrap()
    }

    #[test]
    fn actions_map_to_changes() {
        let rc = |addr: &str, actions: Value| {
            json!({"address": addr, "type": "t", "mode": "managed",
                   "change": {"actions": actions, "before": {"a": 1}, "after": {"a": 2}}})
        };
        let p = run(json!({"format_version": "1.2", "resource_changes": [
            rc("t.c", json!(["create"])), rc("t.u", json!(["update"])),
            rc("t.d", json!(["delete"])), rc("t.r", json!(["delete", "create"])),
            rc("t.r2", json!(["create", "delete"])), rc("t.n", json!(["no-op"])),
            rc("t.rd", json!(["read"])),
        ]}));
        let got: Vec<_> = p
            .items
            .iter()
            .map(|i| (i.address.as_str(), i.change, i.replace))
            .collect();
        assert_eq!(
            got,
            vec![
                ("t.c", ChangeType::Added, false),
                ("t.u", ChangeType::Changed, false),
                ("t.d", ChangeType::Removed, false),
                ("t.r", ChangeType::Changed, true),
                ("t.r2", ChangeType::Changed, true),
            ]
        );
        assert_eq!((p.added, p.changed, p.removed), (1, 3, 1));
        assert_eq!(p.format_version.as_deref(), Some("1.2"));
    }

    #[test]
    fn nested_attributes_only_changed_leaves() {
        let p = run(
            json!({"resource_changes": [{"address": "aws_instance.a", "type": "aws_instance",
            "change": {"actions": ["update"],
              "before": {"ami": "x", "tags": {"env": "dev", "team": "a"}, "ports": [80, 443], "same": {"k": 1}},
              "after": {"ami": "x", "tags": {"env": "prod", "team": "a"}, "ports": [80], "same": {"k": 1}, "new": "n"},
              "after_unknown": {"arn": true}}}]}),
        );
        let item = &p.items[0];
        assert_eq!(item.domain, "aws_instance");
        let attrs: Vec<_> = item
            .attributes
            .iter()
            .map(|a| (a.path.as_str(), a.before.as_deref(), a.after.as_deref()))
            .collect();
        assert_eq!(
            attrs,
            vec![
                ("new", None, Some("n")),
                ("ports.1", Some("443"), None),
                ("tags.env", Some("dev"), Some("prod")),
                ("arn", None, Some(UNKNOWN)),
            ]
        );
    }

    #[test]
    fn sensitive_values_are_redacted_and_collected() {
        let p = run(
            json!({"resource_changes": [{"address": "db.a", "type": "db",
            "change": {"actions": ["update"],
              "before": {"password": "old-pass", "nested": {"k": "v1"}, "list": ["a", "b"]},
              "after": {"password": "new-pass", "nested": {"k": "v2"}, "list": ["a", "c"]},
              "before_sensitive": {"password": true, "nested": true, "list": [false, true]},
              "after_sensitive": {"password": true, "nested": true, "list": [false, true]}}}],
            "output_changes": {"pw": {"actions": ["update"], "before": "aaaa1", "after": "bbbb2",
              "before_sensitive": true, "after_sensitive": true}}}),
        );
        for item in &p.items {
            for a in &item.attributes {
                assert_eq!(a.before.as_deref(), Some(REDACTED), "{a:?}");
                assert_eq!(a.after.as_deref(), Some(REDACTED), "{a:?}");
            }
        }
        assert_eq!(p.items[0].attributes.len(), 3);
        assert_eq!(p.items[1].address, "output.pw");
        assert_eq!(p.items[1].attributes[0].path, "value");
        let known: Vec<&str> = p.sensitive.iter().map(|s| s.expose()).collect();
        assert!(
            known.contains(&"new-pass") && known.contains(&"aaaa1"),
            "{known:?}"
        );
    }

    #[test]
    fn drift_is_inverted_and_not_duplicated() {
        let p = run(json!({
        "resource_drift": [
          {"address": "s.a", "type": "s", "mode": "managed", "change": {"actions": ["update"], "before": {"x": "code"}, "after": {"x": "live"}}},
          {"address": "s.b", "type": "s", "mode": "managed", "change": {"actions": ["delete"], "before": {"x": "1"}, "after": null}}
        ],
        "resource_changes": [
          {"address": "s.a", "type": "s", "mode": "managed", "change": {"actions": ["update"], "before": {"x": "live"}, "after": {"x": "code"}}}
        ]}));
        assert_eq!(p.items.len(), 2);
        assert_eq!(p.items[0].source, None);
        let b = &p.items[1];
        assert_eq!((b.address.as_str(), b.change), ("s.b", ChangeType::Added));
        assert_eq!(b.source.as_deref(), Some("resource_drift"));
        assert_eq!(b.attributes[0].after.as_deref(), Some("1"));
    }

    #[test]
    fn secret_patterns_in_values() {
        let p = run(json!({"resource_changes": [{"address": "x.a", "type": "x",
            "change": {"actions": ["create"], "before": null,
              "after": {"conn": "postgres://u:pw123456@db/x", "key": "AKIAIOSFODNN7EXAMPLE"}}}]}));
        let attrs = &p.items[0].attributes;
        assert_eq!(
            attrs[0].after.as_deref(),
            Some("postgres://u:<redacted>@db/x")
        );
        assert_eq!(attrs[1].after.as_deref(), Some(REDACTED));
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"resource_changes": 3}"#,
            r#"{"resource_changes": [{"change": {}}]}"#,
        ] {
            assert!(parse(bad.as_bytes(), &Redact::default()).is_err(), "{bad}");
        }
        let p = parse(
            br#"{"resource_changes": null, "output_changes": null}"#,
            &Redact::default(),
        )
        .unwrap();
        assert!(!p.drifted());
    }

    fn secrets(p: &ParsedPlan) -> Vec<&str> {
        p.sensitive.iter().map(|s| s.expose()).collect()
    }

    #[test]
    fn sensitive_values_outside_changes_are_collected() {
        // The shape of Terraform 1.0.3's `show -json` for a stack with a sensitive variable and
        // a data source (see `tests/runner_terraform.rs` for the real binary).
        let p = run(json!({
            "format_version": "0.2",
            "variables": {"api_token": {"value": "tok-variable-1234"}, "region": {"value": "eu-west-1"},
                          "creds": {"value": {"user": "admin", "pass": "multi\nline\"pw"}}},
            "planned_values": {"outputs": {"x": {"sensitive": true, "value": "planned-only-9"}}},
            "prior_state": {"format_version": "0.2", "values": {
                "outputs": {"old_secret": {"sensitive": true, "value": "prior-output-secret"},
                            "plain": {"sensitive": false, "value": "not-secret-value"}},
                "root_module": {
                    "resources": [
                        {"address": "data.x.a", "mode": "data", "values": {"token": "prior-data-token", "name": "visible-name"},
                         "sensitive_values": {"token": true}},
                        {"address": "x.b", "values": {"list": ["l0-visible", "l1-hidden-value"]},
                         "sensitive_values": {"list": [false, true]}}
                    ],
                    "child_modules": [{"address": "module.m", "resources": [
                        {"address": "module.m.x.c", "values": {"k": "child-module-secret"}, "sensitive_values": {"k": true}}
                    ], "child_modules": [{"resources": [
                        {"values": {"deep": "grandchild-secret"}, "sensitive_values": true}
                    ]}]}]
                }}},
            "resource_drift": [{"address": "data.y.d", "mode": "data", "type": "y",
                "change": {"actions": ["update"], "before": {"pw": "drift-data-before"},
                           "after": {"pw": "drift-data-after"},
                           "before_sensitive": {"pw": true}, "after_sensitive": {"pw": true}}}],
            "configuration": {"root_module": {
                "variables": {"api_token": {"default": "default-token-5678", "sensitive": true},
                              "region": {"default": "eu-west-1"},
                              "creds": {"sensitive": true}},
                "module_calls": {"m": {"source": "./m", "module": {"variables": {
                    "inner": {"default": "module-default-secret", "sensitive": true}}}}}}}
        }));
        assert!(!p.drifted());
        let got = secrets(&p);
        for want in [
            "tok-variable-1234",
            "default-token-5678",
            "admin",
            "multi\nline\"pw",
            "multi\\nline\\\"pw",
            "prior-output-secret",
            "prior-data-token",
            "l1-hidden-value",
            "child-module-secret",
            "grandchild-secret",
            "drift-data-before",
            "drift-data-after",
            "module-default-secret",
        ] {
            assert!(got.contains(&want), "{want} not collected: {got:?}");
        }
        for not in [
            "eu-west-1",
            "not-secret-value",
            "visible-name",
            "l0-visible",
            "planned-only-9",
        ] {
            assert!(!got.contains(&not), "{not} collected: {got:?}");
        }
        // Variables after configuration work the same.
        let p = run(json!({
            "configuration": {"root_module": {"variables": {"v": {"sensitive": true}}}},
            "variables": {"v": {"value": "late-variable"}}
        }));
        assert_eq!(secrets(&p), vec!["late-variable"]);
        // Short values are kept apart (redacted only as whole JSON string values).
        let p = run(json!({"variables": {"v": {"value": "a\"c"}},
            "configuration": {"root_module": {"variables": {"v": {"sensitive": true}}}}}));
        assert!(p.sensitive.is_empty());
        let tokens: Vec<&str> = p.sensitive_tokens.iter().map(|s| s.expose()).collect();
        assert_eq!(tokens, vec!["a\\\"c"]);
    }

    #[test]
    fn bad_prior_state_is_an_error() {
        for bad in [
            r#"{"prior_state": 3}"#,
            r#"{"prior_state": {"values": {"root_module": {"resources": 1}}}}"#,
            r#"{"prior_state": {"values": {"root_module": {"child_modules": [3]}}}}"#,
            r#"{"variables": []}"#,
            r#"{"configuration": {"root_module": {"variables": {"v": {"sensitive": "yes"}}}}}"#,
        ] {
            let err = parse(bad.as_bytes(), &Redact::default()).unwrap_err();
            assert!(err.to_string().starts_with("plan JSON: "), "{err}");
        }
        let p = parse(
            br#"{"prior_state": null, "variables": null, "configuration": null}"#,
            &Redact::default(),
        )
        .unwrap();
        assert!(p.sensitive.is_empty());
    }

    #[test]
    fn attributes_are_bounded() {
        let after: serde_json::Map<String, Value> = (0..200)
            .map(|i| (format!("k{i:03}"), json!("v".repeat(2000))))
            .collect();
        let p = run(json!({"resource_changes": [{"address": "x.a", "type": "x",
            "change": {"actions": ["create"], "after": after}}]}));
        assert_eq!(p.items[0].attributes.len(), MAX_ATTRIBUTES);
        assert!(p.items[0].attributes[0].after.as_ref().unwrap().len() <= MAX_VALUE_LEN + 3);
    }
}
