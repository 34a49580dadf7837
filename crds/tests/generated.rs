//! The checked-in CRDs and field reference must be what the types generate.

#![allow(clippy::unwrap_used)]

use std::path::Path;

#[test]
fn checked_in_files_are_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stale = Vec::new();
    for (path, content) in driftless_crds::generate::files() {
        match std::fs::read_to_string(root.join(&path)) {
            Ok(on_disk) if on_disk == content => {}
            Ok(_) => stale.push(format!("{path} differs")),
            Err(err) => stale.push(format!("{path}: {err}")),
        }
    }
    assert!(
        stale.is_empty(),
        "generated files are stale; run `make crds` and commit:\n  {}",
        stale.join("\n  ")
    );
}

/// The YAML written for each CRD reads back as exactly the CRD: quoting and escaping of every
/// description, pattern and default survive the round trip.
#[test]
fn generated_yaml_reads_back_as_the_crd() {
    for crd in driftless_crds::generate::crds() {
        let yaml = driftless_crds::generate::to_yaml(&crd);
        let docs = driftless_crds::yaml::parse_yaml(&yaml).unwrap();
        assert_eq!(docs.len(), 1, "{}", crd.spec.names.plural);
        assert_eq!(
            docs[0],
            serde_json::to_value(&crd).unwrap(),
            "{}",
            crd.spec.names.plural
        );
    }
}
