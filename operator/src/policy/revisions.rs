//! ApplyPolicy revisions: every distinct spec is stored as an immutable `ControllerRevision` in
//! the operator's namespace, as a DaemonSet stores its pod templates.
//!
//! - What a revision holds is what a node runs: the spec without `nodeSelector`, `rollout` and
//!   `revisionHistoryLimit` (they decide where and how, not what), under `data.spec`.
//! - Its name is `<policy>-<hash>`, the hash a SHA-256 of the canonical JSON of that data (10
//!   hex digits), so the same content always has the same name; `revision` numbers the
//!   revisions of a policy in the order they became the newest. Going back to an earlier
//!   content gives its ControllerRevision the next number, as `kubectl rollout undo` does.
//! - Labelled [`POLICY_UID_LABEL`] (the policy's uid), annotated [`POLICY_ANNOTATION`] (its
//!   name), owned by the ApplyPolicy (deleting the policy deletes its revisions).
//! - History: the newest `spec.revisionHistoryLimit` old revisions are kept, plus every
//!   revision a node is assigned or the status names.

use std::collections::BTreeSet;

use driftless_crds::apply_policy::ApplyPolicy;
use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::{Resource, ResourceExt};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Label carrying the uid of the ApplyPolicy a revision belongs to.
pub const POLICY_UID_LABEL: &str = "driftless.dev/policy-uid";
/// Annotation carrying the name of the ApplyPolicy a revision belongs to.
pub const POLICY_ANNOTATION: &str = "driftless.dev/policy";
/// Annotation on the cached (slimmed) ApplyPolicy holding its spec's revision hash.
pub const HASH_ANNOTATION: &str = "driftless.dev/revision-hash";
/// Spec fields that are not part of a revision.
pub const NOT_IN_REVISION: [&str; 3] = ["nodeSelector", "rollout", "revisionHistoryLimit"];

/// The revision data of a spec (as JSON): the spec without [`NOT_IN_REVISION`]. Pure.
pub fn data(spec: &Value) -> Value {
    let mut spec = spec.as_object().cloned().unwrap_or_default();
    for key in NOT_IN_REVISION {
        spec.remove(key);
    }
    json!({ "spec": Value::Object(spec) })
}

/// The content hash of revision data: 10 hex digits of the SHA-256 of its canonical JSON
/// (object keys sorted). Pure.
pub fn hash(data: &Value) -> String {
    fn canonical(v: &Value) -> Value {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), canonical(&map[k]));
                }
                Value::Object(out)
            }
            Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
            other => other.clone(),
        }
    }
    // serde_json's Map keeps keys sorted unless `preserve_order` is on; sorting makes the hash
    // independent of that feature.
    let text = serde_json::to_string(&canonical(data)).unwrap_or_default();
    hex::encode(&Sha256::digest(text.as_bytes())[..5])
}

/// The hash of a policy's current spec.
pub fn policy_hash(policy: &ApplyPolicy) -> String {
    hash(&data(
        &serde_json::to_value(&policy.spec).unwrap_or(Value::Null),
    ))
}

/// The ControllerRevision name for a policy and hash (within 253 characters).
pub fn name(policy: &str, hash: &str) -> String {
    let keep = 253 - 1 - hash.len();
    let mut base = policy[..policy.len().min(keep)].to_owned();
    while base.ends_with(['.', '-']) {
        base.pop();
    }
    format!("{base}-{hash}")
}

/// A revision as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionRef {
    /// ControllerRevision name.
    pub name: String,
    /// Its `revision` number.
    pub number: i64,
}

/// What to do so the newest revision holds `hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// It is the newest already.
    None,
    /// Create it with this number.
    Create(i64),
    /// It exists with an older number: give it this one.
    Renumber(i64),
}

/// Decides what makes `wanted` the newest of `revisions` (one policy's). Pure.
pub fn newest(revisions: &[RevisionRef], wanted: &str) -> Action {
    let max = revisions.iter().map(|r| r.number).max().unwrap_or(0);
    match revisions.iter().find(|r| r.name == wanted) {
        Some(r) if r.number == max => Action::None,
        Some(_) => Action::Renumber(max + 1),
        None => Action::Create(max + 1),
    }
}

/// The revisions to delete: all but the newest `limit` old ones, never one in `keep` (the
/// newest, the current, those assigned to nodes). Pure.
pub fn prune(revisions: &[RevisionRef], limit: usize, keep: &BTreeSet<&str>) -> Vec<String> {
    let mut sorted: Vec<&RevisionRef> = revisions.iter().collect();
    sorted.sort_by_key(|r| std::cmp::Reverse(r.number));
    sorted
        .into_iter()
        .skip(1)
        .filter(|r| !keep.contains(r.name.as_str()))
        .skip(limit)
        .map(|r| r.name.clone())
        .collect()
}

/// The ControllerRevision for `policy` (full spec) with `number`, in `namespace`.
pub fn object(policy: &ApplyPolicy, namespace: &str, number: i64) -> ControllerRevision {
    let data = data(&serde_json::to_value(&policy.spec).unwrap_or(Value::Null));
    let policy_name = policy.name_any();
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name(&policy_name, &hash(&data))),
            namespace: Some(namespace.to_owned()),
            labels: Some(
                [(
                    POLICY_UID_LABEL.to_owned(),
                    policy.uid().unwrap_or_default(),
                )]
                .into(),
            ),
            annotations: Some([(POLICY_ANNOTATION.to_owned(), policy_name)].into()),
            owner_references: policy.uid().map(|uid| {
                vec![OwnerReference {
                    api_version: ApplyPolicy::api_version(&()).into_owned(),
                    kind: ApplyPolicy::kind(&()).into_owned(),
                    name: policy.name_any(),
                    uid,
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        data: Some(RawExtension(data)),
        revision: number,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, number: i64) -> RevisionRef {
        RevisionRef {
            name: name.into(),
            number,
        }
    }

    #[test]
    fn rollout_settings_are_not_part_of_a_revision() {
        let a = json!({"tasks": [{"name": "x"}], "rollout": {"paused": true}, "nodeSelector": {}});
        let b = json!({"tasks": [{"name": "x"}], "revisionHistoryLimit": 3});
        let c = json!({"tasks": [{"name": "y"}]});
        assert_eq!(hash(&data(&a)), hash(&data(&b)));
        assert_ne!(hash(&data(&a)), hash(&data(&c)));
        assert_eq!(hash(&data(&a)).len(), 10);
        assert_eq!(data(&b), json!({"spec": {"tasks": [{"name": "x"}]}}));
    }

    #[test]
    fn names_fit_and_end_well() {
        assert_eq!(name("web", "0123456789"), "web-0123456789");
        let long = "a".repeat(250);
        assert_eq!(name(&long, "0123456789").len(), 253);
        assert_eq!(
            name(&format!("{}-", "a".repeat(241)), "0123456789").len(),
            252
        );
    }

    #[test]
    fn the_newest_is_created_or_renumbered() {
        let revs = [r("p-a", 1), r("p-b", 2)];
        assert_eq!(newest(&revs, "p-b"), Action::None);
        assert_eq!(newest(&revs, "p-a"), Action::Renumber(3));
        assert_eq!(newest(&revs, "p-c"), Action::Create(3));
        assert_eq!(newest(&[], "p-c"), Action::Create(1));
    }

    #[test]
    fn prune_keeps_the_limit_and_what_is_in_use() {
        let revs: Vec<RevisionRef> = (1..=6).map(|i| r(&format!("p-{i}"), i)).collect();
        let keep: BTreeSet<&str> = ["p-1"].into();
        // Newest p-6 always kept; then 2 old ones (p-5, p-4); p-1 in use.
        assert_eq!(prune(&revs, 2, &keep), ["p-3", "p-2"]);
        assert!(prune(&revs, 10, &BTreeSet::new()).is_empty());
    }
}
