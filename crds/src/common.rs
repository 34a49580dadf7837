//! Types shared by several kinds: durations, secret references, S3 targets, status conditions.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
pub use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A span of time written the way Kubernetes and Go write it: `30s`, `5m`, `1h30m`, `500ms`.
///
/// Guarantees: a value that deserializes is positive or zero and fits in a `std::time::Duration`;
/// it serializes back to the text it was read from, so GitOps tools see no diff.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration {
    text: String,
    value: std::time::Duration,
}

/// Pattern the API server checks for every [`Duration`] field.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";

impl Duration {
    /// Parses a Go-style duration such as `1h30m` or `250ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a duration such as \"30s\", \"5m\" or \"1h30m\"");
        if text.is_empty() {
            return Err(bad());
        }
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(bad)?;
            if number_len == 0 {
                return Err(bad());
            }
            let number: f64 = rest[..number_len].parse().map_err(|_| bad())?;
            rest = &rest[number_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let seconds = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total += number * seconds;
        }
        let value = std::time::Duration::try_from_secs_f64(total).map_err(|_| bad())?;
        Ok(Self {
            text: text.to_owned(),
            value,
        })
    }

    /// The duration as a `std::time::Duration`.
    pub fn get(&self) -> std::time::Duration {
        self.value
    }

    /// The text the duration was written as.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Duration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        string_schema(
            DURATION_PATTERN,
            "A duration such as `30s`, `5m` or `1h30m`.",
        )
    }
}

/// A string schema with a pattern and a description.
pub(crate) fn string_schema(pattern: &str, description: &str) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": pattern,
        "description": description,
    })
}

/// Builds a `Duration` from literal text; for defaults in this crate only.
pub(crate) fn duration(text: &str) -> Duration {
    Duration::parse(text).unwrap_or(Duration {
        text: text.to_owned(),
        value: std::time::Duration::ZERO,
    })
}

/// A reference to one key of a Kubernetes Secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Key inside the Secret's `data`.
    pub key: String,
    /// Namespace of the Secret. Node agents read Secrets only in the chart's `secretsNamespace`
    /// (default: the release namespace): absent means that namespace, any other is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to a whole Kubernetes Secret, whose keys a component reads by documented names.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretRef {
    /// Name of the Secret, in the resource's namespace (or Driftless's namespace for
    /// cluster-scoped resources).
    pub name: String,
}

/// A named secret made available to a resource as `${secret:NAME}`.
///
/// In a cluster the value comes from `secretKeyRef`; on a standalone host it comes from the
/// environment variable `NAME`, or from the env file (`~/.config/driftless/env`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretVar {
    /// The name used in `${secret:NAME}`: letters, digits and `_`, not starting with a digit.
    #[schemars(regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"), length(max = 128))]
    pub name: String,
    /// Where the value lives in the cluster. Ignored on standalone hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// Where an S3-compatible object store is and how to reach it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct S3Target {
    /// Bucket name.
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix, without a leading `/`; objects are written below it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub prefix: String,
    /// Endpoint URL of an S3-compatible service (MinIO, Ceph, ...). Empty means AWS S3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region; `us-east-1` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Use path-style URLs (`endpoint/bucket/key`), as most S3-compatible servers need.
    #[serde(default)]
    pub path_style: bool,
    /// Access key id, usually `${secret:NAME}`. Empty means the ambient credentials
    /// (environment, web identity, instance profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret access key, usually `${secret:NAME}`. Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
}

/// How entries are batched before a send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Batch {
    /// Send once this many bytes (uncompressed) are waiting.
    #[serde(default = "default_batch_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
    /// Send once this many events are waiting.
    #[serde(default = "default_batch_events")]
    #[schemars(range(min = 1))]
    pub max_events: u64,
    /// Send a non-empty batch at the latest this long after its first event.
    #[serde(default = "default_batch_age")]
    pub max_age: Duration,
}

impl Default for Batch {
    fn default() -> Self {
        Self {
            max_bytes: default_batch_bytes(),
            max_events: default_batch_events(),
            max_age: default_batch_age(),
        }
    }
}

fn default_batch_bytes() -> u64 {
    1 << 20
}
fn default_batch_events() -> u64 {
    10_000
}
fn default_batch_age() -> Duration {
    duration("5s")
}

/// HTTP headers sent with every request; values may use `${secret:NAME}` and `${env:NAME}`.
pub type Headers = BTreeMap<String, String>;

/// Present or absent: the state of a managed thing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Presence {
    /// The thing must exist.
    #[default]
    Present,
    /// The thing must not exist.
    Absent,
}

/// Free-form values (any JSON), kept as they are by the API server.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Values(pub BTreeMap<String, serde_json::Value>);

impl JsonSchema for Values {
    fn schema_name() -> Cow<'static, str> {
        "Values".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "object",
            "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
        })
    }
}

/// Appends CEL rules (`x-kubernetes-validations`) to a schema.
pub(crate) fn add_rules(schema: &mut Schema, rules: &[(&str, &str)]) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    let list = object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if let serde_json::Value::Array(list) = list {
        for (rule, message) in rules {
            list.push(serde_json::json!({ "rule": rule, "message": message }));
        }
    }
}

/// The CEL rule that each item of a list has a distinct `name`.
pub const UNIQUE_NAMES_RULE: &str = "self.all(x, self.exists_one(y, y.name == x.name))";

/// Schema for a bounded list whose items have unique names, enforced by CEL.
pub(crate) fn unique_named_list<T: JsonSchema>(gen: &mut SchemaGenerator, max: u32) -> Schema {
    let mut schema: Schema = Vec::<T>::json_schema(gen);
    schema.insert("maxItems".into(), max.into());
    add_rules(&mut schema, &[(UNIQUE_NAMES_RULE, "names must be unique")]);
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(Duration::parse("1h30m").unwrap().get().as_secs(), 5400);
        assert_eq!(Duration::parse("250ms").unwrap().get().as_millis(), 250);
        assert_eq!(Duration::parse("1.5s").unwrap().get().as_millis(), 1500);
        for bad in ["", "5", "m", "5 m", "5d", "-1s", "1h-5m"] {
            assert!(Duration::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn duration_round_trips_its_text() {
        let d: Duration = serde_json::from_str("\"90s\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"90s\"");
        let err = serde_json::from_str::<Duration>("\"ninety\"").unwrap_err();
        assert!(err.to_string().contains("is not a duration"), "{err}");
    }

    #[test]
    fn duration_pattern_matches_parser() {
        let pattern = regex::Regex::new(DURATION_PATTERN).unwrap();
        for text in ["1h30m", "250ms", "1.5s", "10us", "3h"] {
            assert!(
                pattern.is_match(text) && Duration::parse(text).is_ok(),
                "{text}"
            );
        }
        for text in ["", "5", "5d", "1h-5m"] {
            assert!(
                !pattern.is_match(text) && Duration::parse(text).is_err(),
                "{text}"
            );
        }
    }
}
