//! Every sample in `config/samples/` is valid: the four configuration kinds through the same
//! parser as `driftless validate`, the DriftReport and NotificationPolicy samples against their generated schemas.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use driftless_crds::generate::schema_of;
use driftless_crds::resource::parse;
use driftless_crds::validate::check;

#[test]
fn samples_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/samples");
    let mut kinds = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("driftless_"))
        })
        .collect();
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path).unwrap();
        for mut doc in driftless_crds::yaml::parse_yaml(&text).unwrap() {
            let kind = doc["kind"].as_str().unwrap().to_owned();
            if kind == "DriftReport" || kind == "NotificationPolicy" {
                let schema = schema_of(&kind)
                    .unwrap()
                    .pointer("/properties/spec")
                    .unwrap();
                let mut problems = Vec::new();
                check(schema, &mut doc["spec"], "spec", &mut problems);
                assert!(problems.is_empty(), "{}: {problems:?}", path.display());
                if kind == "DriftReport" {
                    serde_json::from_value::<driftless_crds::DriftReport>(doc).unwrap();
                } else {
                    serde_json::from_value::<driftless_crds::NotificationPolicy>(doc).unwrap();
                }
            } else if let Err(problems) = parse(doc) {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                panic!("{}: {text:#?}", path.display());
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ApplyPolicy",
            "DriftReport",
            "DriftScan",
            "FactsPolicy",
            "LogPipeline",
            "NotificationPolicy"
        ],
        "one sample per kind"
    );
}

#[test]
fn gitops_example_policies_are_valid() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/gitops/clusters/production/policies");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for document in driftless_crds::yaml::parse_yaml(&text).unwrap() {
            if let Err(problems) = parse(document) {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                panic!("{}: {text:#?}", path.display());
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2);
}
