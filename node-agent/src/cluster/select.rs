//! Deciding what a node runs from what the API server holds. Pure: the watchers and the
//! Secret reader feed it; it touches nothing.
//!
//! Guarantees of [`decide`]:
//! - A policy runs on the node when its `spec.nodeSelector` (absent: every node) matches the
//!   Node's labels. A policy that stops matching stops running.
//! - A selected policy passes the same checks as a configuration file (schema, semantic checks,
//!   ApplyPolicy template checks), and every `spec.secrets` entry must name a key of a Secret in
//!   the secrets namespace that was read. A policy that fails is *refused*: the problems go
//!   into a [`Refusal`] and the last good version of it (from `last_good`), if any, keeps
//!   running.
//! - One FactsPolicy runs per node: when several are selected, the first by name runs and the
//!   others are refused, naming it.
//! - `${secret:NAME}` is one value per node: a policy that binds a NAME another policy already
//!   binds to a different Secret key is refused.
//! - Cost is linear in the size of the objects.

use std::collections::{BTreeMap, BTreeSet};

use driftless_crds::common::SecretVar;
use driftless_crds::drift_report::PolicyKind;
use driftless_crds::resource::{self, Resource};
use driftless_crds::secret::SecretString;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;

use crate::config::{Config, Loaded, Origin};
use crate::topology::Refusal;

/// A policy's key.
pub type Key = (PolicyKind, String);

/// A Secret key the node needs: (Secret name, key).
pub type SecretKey = (String, String);

/// What was read of the Secrets: the value, or why there is none.
pub type SecretValues = BTreeMap<SecretKey, Result<SecretString, String>>;

/// What the node runs.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// The valid policies (refused ones: their last good version, when there is one).
    pub config: Config,
    /// The refused policies and why.
    pub refusals: Vec<Refusal>,
    /// `${secret:NAME}` values.
    pub secrets: BTreeMap<String, SecretString>,
    /// Digest of each policy's secret values (`KIND/NAME` → hex).
    pub digests: BTreeMap<String, String>,
}

fn kind_of(object: &Value) -> Option<PolicyKind> {
    match object.get("kind")?.as_str()? {
        "ApplyPolicy" => Some(PolicyKind::ApplyPolicy),
        "FactsPolicy" => Some(PolicyKind::FactsPolicy),
        "LogPipeline" => Some(PolicyKind::LogPipeline),
        _ => None,
    }
}

fn name_of(object: &Value) -> String {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn generation_of(object: &Value) -> i64 {
    object
        .pointer("/metadata/generation")
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A policy object's key, when it is one of the three kinds.
pub fn key_of(object: &Value) -> Option<Key> {
    Some((kind_of(object)?, name_of(object)))
}

/// The raw objects of the versions that run on the node after a decision: each selected
/// policy that was not refused, and for a refused one the version `previous` held (its last
/// good). This is what the node caches, so a restart keeps the last good versions. Pure.
pub fn good_objects(
    objects: &[Value],
    labels: &BTreeMap<String, String>,
    refusals: &[Refusal],
    previous: &BTreeMap<Key, Value>,
) -> BTreeMap<Key, Value> {
    let refused: BTreeSet<Key> = refusals.iter().map(|r| (r.kind, r.name.clone())).collect();
    let mut out = BTreeMap::new();
    for object in objects {
        let Some(key) = key_of(object) else { continue };
        if !selects(object, labels).unwrap_or(false) && !refused.contains(&key) {
            continue;
        }
        if refused.contains(&key) {
            if let Some(old) = previous.get(&key) {
                out.insert(key, old.clone());
            }
        } else {
            out.insert(key, object.clone());
        }
    }
    out
}

/// A ControllerRevision as the agent pins policies to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Revision {
    /// Its `data` (`{"spec": ...}`).
    pub data: Value,
    /// Whether it is its policy's newest revision (the highest `revision` number).
    pub newest: bool,
}

/// The ApplyPolicies as the node may run them: each one's spec replaced by the revision the
/// operator assigned to the node (`assignments`: policy → ControllerRevision name;
/// `revisions`: name → revision), keeping the live `nodeSelector`, `rollout` and
/// `revisionHistoryLimit`, and annotated with the revision's name. The live
/// `rollout.canary.healthCheck` probes the newest revision: a node assigned an older one (a
/// rollback) does not run them. A policy without an assignment does not run yet; one whose
/// revision is not visible yet runs what `previous` (the last good versions) holds of it, if
/// anything. Other kinds pass unchanged. Pure.
pub fn pin(
    objects: Vec<Value>,
    assignments: &BTreeMap<String, String>,
    revisions: &BTreeMap<String, Revision>,
    previous: &BTreeMap<Key, Value>,
) -> Vec<Value> {
    use crate::topology::apply_loop::REVISION_ANNOTATION;
    let mut out = Vec::with_capacity(objects.len());
    for mut object in objects {
        if kind_of(&object) != Some(PolicyKind::ApplyPolicy) {
            out.push(object);
            continue;
        }
        let name = name_of(&object);
        let Some(revision) = assignments.get(&name) else {
            continue;
        };
        let Some((spec, newest)) = revisions
            .get(revision)
            .and_then(|r| Some((r.data.get("spec").and_then(Value::as_object)?, r.newest)))
        else {
            if let Some(old) = previous.get(&(PolicyKind::ApplyPolicy, name)) {
                out.push(old.clone());
            }
            continue;
        };
        let mut spec = spec.clone();
        if let Some(live) = object.get("spec").and_then(Value::as_object) {
            for key in ["nodeSelector", "rollout", "revisionHistoryLimit"] {
                match live.get(key) {
                    Some(v) => spec.insert(key.to_owned(), v.clone()),
                    None => spec.remove(key),
                };
            }
        }
        if !newest {
            if let Some(canary) = spec
                .get_mut("rollout")
                .and_then(|r| r.get_mut("canary"))
                .and_then(Value::as_object_mut)
            {
                canary.remove("healthCheck");
            }
        }
        object["spec"] = Value::Object(spec);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta
                .entry("annotations")
                .or_insert_with(|| Value::Object(Default::default()));
            if !annotations.is_object() {
                *annotations = Value::Object(Default::default());
            }
            annotations[REVISION_ANNOTATION] = Value::String(revision.clone());
        }
        out.push(object);
    }
    out
}

/// Last good versions from cached objects (each parsed again; one that no longer parses is
/// dropped).
pub fn seed(cached: &[Value]) -> (BTreeMap<Key, Resource>, BTreeMap<Key, Value>) {
    let mut resources = BTreeMap::new();
    let mut raw = BTreeMap::new();
    for object in cached {
        let Some(key) = key_of(object) else { continue };
        if let Ok(resource) = resource::parse(object.clone()) {
            resources.insert(key.clone(), resource);
            raw.insert(key, object.clone());
        }
    }
    (resources, raw)
}

/// Whether `object` selects a node with `labels`; `Err` when its selector is invalid.
pub fn selects(object: &Value, labels: &BTreeMap<String, String>) -> Result<bool, String> {
    let Some(raw) = object
        .pointer("/spec/nodeSelector")
        .filter(|v| !v.is_null())
    else {
        return Ok(true);
    };
    let selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(raw.clone()).map_err(|e| format!("spec.nodeSelector: {e}"))?;
    let selector = Selector::try_from(selector).map_err(|e| format!("spec.nodeSelector: {e}"))?;
    Ok(selector.matches(labels))
}

/// The Secret keys the selected policies name (those in the secrets namespace), so the reader
/// can fetch them before [`decide`].
pub fn needed_secrets(
    objects: &[Value],
    labels: &BTreeMap<String, String>,
    namespace: &str,
) -> BTreeSet<SecretKey> {
    let mut out = BTreeSet::new();
    for object in objects {
        if !selects(object, labels).unwrap_or(false) {
            continue;
        }
        for var in secret_vars(object) {
            if let Some(r) = var.secret_key_ref {
                if r.namespace.as_deref().is_none_or(|n| n == namespace) {
                    out.insert((r.name, r.key));
                }
            }
        }
    }
    out
}

fn secret_vars(object: &Value) -> Vec<SecretVar> {
    object
        .pointer("/spec/secrets")
        .and_then(|v| serde_json::from_value::<Vec<SecretVar>>(v.clone()).ok())
        .unwrap_or_default()
}

/// Decides what the node runs. `last_good` holds the last version of each policy that passed;
/// it is updated (policies that are gone or no longer select the node are forgotten).
pub fn decide(
    objects: &[Value],
    labels: &BTreeMap<String, String>,
    namespace: &str,
    secrets: &SecretValues,
    last_good: &mut BTreeMap<Key, Resource>,
) -> Decision {
    let mut decision = Decision::default();
    let mut bound: BTreeMap<String, (SecretKey, String)> = BTreeMap::new();
    let mut selected: BTreeSet<Key> = BTreeSet::new();
    let mut sorted: Vec<&Value> = objects.iter().filter(|o| kind_of(o).is_some()).collect();
    sorted.sort_by_key(|o| (kind_of(o), name_of(o)));
    let mut facts_running: Option<String> = None;
    for object in sorted {
        let Some(kind) = kind_of(object) else {
            continue;
        };
        let name = name_of(object);
        let generation = generation_of(object);
        let key = (kind, name.clone());
        let refuse = |message: String| Refusal {
            kind,
            name: name.clone(),
            generation,
            message,
        };
        match selects(object, labels) {
            Ok(false) => continue,
            Ok(true) => {}
            Err(problem) => {
                // Whether it selects this node cannot be told: refuse it, keep what ran.
                selected.insert(key.clone());
                decision.refusals.push(refuse(problem));
                continue;
            }
        }
        selected.insert(key.clone());
        let mut problems = Vec::new();
        let mut values = Vec::new();
        for (i, var) in secret_vars(object).iter().enumerate() {
            let path = format!("spec.secrets[{i}]");
            let Some(r) = &var.secret_key_ref else {
                problems.push(format!(
                    "{path}.secretKeyRef: is required in a cluster (the Secret key holding {})",
                    var.name
                ));
                continue;
            };
            if let Some(ns) = r.namespace.as_deref().filter(|ns| *ns != namespace) {
                problems.push(format!(
                    "{path}.secretKeyRef.namespace: {ns:?} is not allowed; the agent reads Secrets only in {namespace:?} (the chart's secretsNamespace)"
                ));
                continue;
            }
            let secret_key = (r.name.clone(), r.key.clone());
            if let Some((other, owner)) = bound.get(&var.name) {
                if *other != secret_key {
                    problems.push(format!(
                        "{path}.name: {} is already bound to Secret {}/{} by {owner}",
                        var.name, other.0, other.1
                    ));
                    continue;
                }
            }
            match secrets.get(&secret_key) {
                Some(Ok(value)) => values.push((var.name.clone(), secret_key, value.clone())),
                Some(Err(why)) => problems.push(format!(
                    "{path}.secretKeyRef: Secret {namespace}/{} key {}: {why}",
                    r.name, r.key
                )),
                None => problems.push(format!(
                    "{path}.secretKeyRef: Secret {namespace}/{} key {} has not been read yet",
                    r.name, r.key
                )),
            }
        }
        if let Some(spec) = object.get("spec") {
            unresolved(spec, "spec", &mut problems);
        }
        let parsed = match resource::parse(object.clone()) {
            Ok(resource) => {
                let config = Config {
                    resources: vec![Loaded {
                        resource: resource.clone(),
                        origin: origin(kind, &name),
                    }],
                };
                problems.extend(
                    crate::apply::validate::check(&config)
                        .into_iter()
                        .map(|e| e.problem.to_string()),
                );
                Some(resource)
            }
            Err(found) => {
                problems.extend(found.into_iter().map(|p| p.to_string()));
                None
            }
        };
        if kind == PolicyKind::FactsPolicy && problems.is_empty() {
            if let Some(first) = &facts_running {
                problems.push(format!(
                    "only one FactsPolicy applies per node; FactsPolicy {first} (first by name) already selects this node"
                ));
            }
        }
        let resource = match (parsed, problems.is_empty()) {
            (Some(resource), true) => {
                last_good.insert(key.clone(), resource.clone());
                for (var, secret_key, value) in values {
                    bound.insert(
                        var.clone(),
                        (secret_key, format!("{} {name}", kind.as_str())),
                    );
                    decision.secrets.insert(var, value);
                }
                resource
            }
            _ => {
                decision.refusals.push(refuse(problems.join("; ")));
                match last_good.get(&key) {
                    Some(previous) => previous.clone(),
                    None => continue,
                }
            }
        };
        if kind == PolicyKind::FactsPolicy {
            facts_running.get_or_insert_with(|| name.clone());
        }
        decision.digests.insert(
            format!("{}/{name}", kind.as_str()),
            digest(&resource, &decision.secrets),
        );
        decision.config.resources.push(Loaded {
            resource,
            origin: origin(kind, &name),
        });
    }
    last_good.retain(|k, _| selected.contains(k));
    decision
}

/// Problems for every `${env:NAME}` the agent's environment does not have (undeclared
/// `${secret:NAME}` references are found by the resource checks; declared ones without a
/// value by [`decide`]).
fn unresolved(value: &Value, path: &str, problems: &mut Vec<String>) {
    use driftless_crds::secret::{references, RefKind};
    match value {
        Value::String(text) => {
            for r in references(text).unwrap_or_default() {
                match r.kind {
                    RefKind::Env if std::env::var_os(&r.name).is_none() => problems.push(format!(
                        "{path}: {r} has no value: the agent has no environment variable {}",
                        r.name
                    )),
                    _ => {}
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                unresolved(item, &format!("{path}[{i}]"), problems);
            }
        }
        Value::Object(map) => {
            for (key, child) in map {
                if path == "spec" && key == "secrets" {
                    continue;
                }
                unresolved(child, &format!("{path}.{key}"), problems);
            }
        }
        _ => {}
    }
}

fn origin(kind: PolicyKind, name: &str) -> Origin {
    Origin {
        file: format!("{}/{name}", kind.as_str()).into(),
        document: 1,
        documents: 1,
    }
}

/// A digest of the secret values a policy names (so a changed value runs it again). The
/// digest is not secret-revealing: SHA-256 over all values with a separator.
fn digest(resource: &Resource, secrets: &BTreeMap<String, SecretString>) -> String {
    use sha2::{Digest, Sha256};
    let vars = match resource {
        Resource::ApplyPolicy(p) => &p.spec.secrets,
        Resource::FactsPolicy(p) => &p.spec.secrets,
        Resource::LogPipeline(p) => &p.spec.secrets,
        Resource::DriftScan(_) => return String::new(),
    };
    let mut hash = Sha256::new();
    for var in vars {
        hash.update(var.name.as_bytes());
        hash.update([0]);
        if let Some(v) = secrets.get(&var.name) {
            hash.update(v.expose().as_bytes());
        }
        hash.update([0]);
    }
    hex::encode(hash.finalize())
}

#[cfg(test)]
mod tests;
