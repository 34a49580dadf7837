#![allow(clippy::unwrap_used)]
//! The plan parser on plan JSON in the shape of newer Terraform / OpenTofu versions
//! (fixtures in `tests/fixtures/plans/`, origin in its README) and on a generated
//! 10,000-resource plan.

use driftless_crds::drift_report::{ChangeType, DriftItem};
use driftless_crds::secret::REDACTED;
use driftless_operator::runner::plan::{parse, ParsedPlan, UNKNOWN};
use driftless_operator::runner::redact::Redact;

fn fixture(name: &str) -> ParsedPlan {
    let path = format!("{}/tests/fixtures/plans/{name}", env!("CARGO_MANIFEST_DIR"));
    parse(&std::fs::read(path).unwrap(), &Redact::default()).unwrap()
}

fn attrs(item: &DriftItem) -> Vec<(&str, Option<&str>, Option<&str>)> {
    item.attributes
        .iter()
        .map(|a| (a.path.as_str(), a.before.as_deref(), a.after.as_deref()))
        .collect()
}

#[test]
fn terraform_1_7_replace_with_sensitive_and_unknown() {
    let p = fixture("tf17_replace_sensitive.json");
    assert_eq!(p.terraform_version.as_deref(), Some("1.7.5"));
    assert_eq!(p.items.len(), 1, "no-op resources are not drift");
    let item = &p.items[0];
    assert_eq!(
        (item.address.as_str(), item.domain.as_str()),
        ("random_bytes.key", "random_bytes")
    );
    assert_eq!((item.change, item.replace), (ChangeType::Changed, true));
    assert_eq!(
        attrs(item),
        vec![
            ("base64", Some(REDACTED), Some(UNKNOWN)),
            ("hex", Some(REDACTED), Some(UNKNOWN)),
            ("length", Some("8"), Some("16")),
        ]
    );
    assert_eq!((p.added, p.changed, p.removed), (0, 1, 0));
    let secrets: Vec<&str> = p.sensitive.iter().map(|s| s.expose()).collect();
    assert_eq!(secrets, vec!["abcdef1234567890", "q83vEjRWeJA="]);
}

#[test]
fn opentofu_1_8_drift_modules_outputs() {
    let p = fixture("tofu18_drift.json");
    let addrs: Vec<(&str, ChangeType, Option<&str>)> = p
        .items
        .iter()
        .map(|i| (i.address.as_str(), i.change, i.source.as_deref()))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("aws_s3_bucket.logs", ChangeType::Changed, None),
            ("module.net.aws_subnet.private[1]", ChangeType::Added, None),
            (
                "aws_db_instance.main",
                ChangeType::Changed,
                Some("resource_drift")
            ),
            ("output.subnet_ids", ChangeType::Changed, None),
        ]
    );
    assert_eq!((p.added, p.changed, p.removed), (1, 3, 0));
    assert_eq!(
        attrs(&p.items[0]),
        vec![
            ("tags.owner", Some("someone-else"), Some("platform")),
            ("tags.temp", Some("yes"), None),
            ("tags_all.owner", Some("someone-else"), Some("platform")),
            ("tags_all.temp", Some("yes"), None),
        ]
    );
    assert_eq!(
        attrs(&p.items[1]),
        vec![
            ("cidr_block", None, Some("10.0.2.0/24")),
            ("vpc_id", None, Some("vpc-0a1")),
            ("arn", None, Some(UNKNOWN)),
            ("id", None, Some(UNKNOWN)),
        ]
    );
    // Drift-only: live 50, code 20; the unchanged sensitive password is not listed.
    assert_eq!(
        attrs(&p.items[2]),
        vec![("allocated_storage", Some("50"), Some("20"))]
    );
    assert!(p.sensitive.iter().any(|s| s.expose() == "Sup3rS3cretPW!"));
    let out = attrs(&p.items[3]);
    assert!(out.contains(&("0", Some("subnet-0a0"), None)), "{out:?}");
    assert!(out.contains(&("value", None, Some(UNKNOWN))), "{out:?}");
}

#[test]
fn terraform_1_9_refresh_only_plan() {
    let p = fixture("tf19_refresh_only.json");
    assert_eq!(p.items.len(), 2);
    let bucket = &p.items[0];
    assert_eq!(
        (bucket.address.as_str(), bucket.change),
        ("google_storage_bucket.assets", ChangeType::Changed)
    );
    assert_eq!(
        attrs(bucket),
        vec![("versioning.0.enabled", Some("false"), Some("true"))]
    );
    let user = &p.items[1];
    assert_eq!(
        user.change,
        ChangeType::Added,
        "deleted outside Terraform: missing from live state"
    );
    assert!(attrs(user).contains(&("password", None, Some(REDACTED))));
    assert!(!format!("{:?}", p.items).contains("x9-very-secret"));
}

/// A plan of `n` resources in the shape Terraform writes (prior state, planned values and
/// changes), every third resource drifted. Used by the parser test and `bench_plan`.
fn generated(n: usize) -> String {
    driftless_operator::runner::plan::generate_plan(n)
}

#[test]
fn ten_thousand_resources() {
    let json = generated(10_000);
    let start = std::time::Instant::now();
    let p = parse(json.as_bytes(), &Redact::default()).unwrap();
    let took = start.elapsed();
    eprintln!(
        "parsed {} bytes, 10,000 resources in {took:?} (debug build)",
        json.len()
    );
    // 3,334 drifted resources and the changed sensitive output.
    assert_eq!(p.items.len(), 10_000 / 3 + 1 + 1);
    assert_eq!(
        p.items.last().unwrap().attributes[0].after.as_deref(),
        Some(REDACTED)
    );
    assert_eq!(
        p.changed as usize + p.added as usize + p.removed as usize,
        p.items.len()
    );
    assert!(p.items.iter().all(|i| !i.attributes.is_empty()));
}
