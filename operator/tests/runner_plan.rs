#![allow(clippy::unwrap_used)]
//! The plan parser and the artifact redaction on real plan JSON written by newer Terraform and
//! OpenTofu versions (`tests/fixtures/public/`, copied from public MPL-2.0 repositories; origin
//! in its README), on hand-written documents in their shape (`tests/fixtures/plans/`), and on a
//! generated 10,000-resource plan.

use driftless_crds::drift_report::{ChangeType, DriftItem};
use driftless_crds::secret::REDACTED;
use driftless_operator::runner::artifacts::redacted_plan;
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

// ---- Public plan JSON (tests/fixtures/public, origin and licence in its README) ------------

fn public(name: &str) -> (Vec<u8>, ParsedPlan) {
    let path = format!(
        "{}/tests/fixtures/public/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap();
    let p = parse(&bytes, &Redact::default()).unwrap();
    (bytes, p)
}

/// The fixture as it would be stored: through the same redaction as the runner's artifacts.
fn stored(bytes: &[u8], p: &ParsedPlan) -> String {
    let (json, _) = redacted_plan(&Redact::default(), p, bytes, b"");
    let reparsed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(reparsed.is_object(), "redaction broke the JSON");
    json
}

fn summary(p: &ParsedPlan) -> Vec<(&str, ChangeType, bool, Option<&str>)> {
    p.items
        .iter()
        .map(|i| (i.address.as_str(), i.change, i.replace, i.source.as_deref()))
        .collect()
}

#[test]
fn public_opentofu_drift() {
    // OpenTofu's `show -json` of a plan where `should_refresh` changed outside the tool
    // (`resource_drift`) and both resources have a code change.
    let (_, p) = public("opentofu_show-json_drift.json");
    assert_eq!(p.format_version.as_deref(), Some("1.0"));
    assert_eq!(
        summary(&p),
        vec![
            ("test_instance.no_refresh", ChangeType::Changed, false, None),
            (
                "test_instance.should_refresh",
                ChangeType::Changed,
                false,
                None
            ),
        ],
        "an address in both sections is reported once, from resource_changes"
    );
    assert_eq!(attrs(&p.items[0]), vec![("ami", Some("foo"), Some("bar"))]);
    assert_eq!(
        attrs(&p.items[1]),
        vec![("ami", Some("refreshed"), Some("baz"))]
    );
    assert_eq!((p.added, p.changed, p.removed), (0, 2, 0));

    // The equivalence-test plan (tfcoremock): base drifted (number 0→1, string), dependent not.
    let (_, p) = public("opentofu_drift_relevant_attributes.json");
    assert_eq!(
        summary(&p),
        vec![
            (
                "tfcoremock_simple_resource.base",
                ChangeType::Changed,
                false,
                None
            ),
            (
                "tfcoremock_simple_resource.dependent",
                ChangeType::Changed,
                false,
                None
            ),
        ]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![
            ("number", Some("1"), Some("0")),
            ("string", Some("Hello, drift!"), Some("Hello, change!")),
        ]
    );
    assert_eq!(
        attrs(&p.items[1]),
        vec![("string", Some("Hello, world!"), Some("Hello, change!"))]
    );
}

#[test]
fn public_drift_only_items_come_from_resource_drift() {
    // The same real document with its resource_changes dropped (what a `-refresh-only` plan
    // has): the drift is reported inverted to live → recorded.
    let (bytes, _) = public("opentofu_show-json_drift.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    doc.as_object_mut().unwrap().remove("resource_changes");
    let p = parse(doc.to_string().as_bytes(), &Redact::default()).unwrap();
    assert_eq!(
        summary(&p),
        vec![(
            "test_instance.should_refresh",
            ChangeType::Changed,
            false,
            Some("resource_drift")
        )]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![("ami", Some("refreshed"), Some("refresh-me"))]
    );
}

#[test]
fn public_replace_actions() {
    let (_, p) = public("opentofu_show-json_requires-replace.json");
    assert_eq!(
        summary(&p),
        vec![("test_instance.test", ChangeType::Changed, true, None)]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![
            ("ami", Some("bar"), Some("force-replace")),
            ("id", Some("placeholder"), Some(UNKNOWN)),
        ]
    );
    let (_, p) = public("opentofu_replace_within_list.json");
    assert_eq!(
        summary(&p),
        vec![("tfcoremock_list.list", ChangeType::Changed, true, None)]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![(
            "list.1.id",
            Some("6A8C6A29-D417-480A-BE19-12D7398B3178"),
            Some("07F887E2-FDFF-4B2E-9BFB-B6AA4A05EDB9")
        )]
    );
    // Terraform 1.15.0 (terraform-json): replace because tainted, nothing else changes.
    let (_, p) = public("terraform-json_action_reason.json");
    assert_eq!(p.terraform_version.as_deref(), Some("1.15.0"));
    assert_eq!(
        summary(&p),
        vec![("null_resource.example", ChangeType::Changed, true, None)]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![("id", Some("8868159889619753631"), Some(UNKNOWN))]
    );
}

#[test]
fn public_sensitive_values_redacted_in_items_and_artifact() {
    // OpenTofu show-json `sensitive-values`: variable `test_var` (sensitive, "boop") flows into
    // a sensitive resource attribute and a sensitive output.
    let (bytes, p) = public("opentofu_show-json_sensitive-values.json");
    let raw = String::from_utf8(bytes.clone()).unwrap();
    assert_eq!(raw.matches("\"boop\"").count(), 7);
    assert_eq!(
        summary(&p),
        vec![
            ("test_instance.test", ChangeType::Added, false, None),
            ("output.test", ChangeType::Added, false, None),
        ]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![("ami", None, Some(REDACTED)), ("id", None, Some(UNKNOWN))]
    );
    assert_eq!(attrs(&p.items[1]), vec![("value", None, Some(REDACTED))]);
    assert!(!format!("{:?}", p.items).contains("boop"));
    let json = stored(&bytes, &p);
    assert!(!json.contains("boop"), "{json}");
    assert!(json.contains("test_instance.test"), "{json}");

    // Each place on its own: only prior_state, only variables + configuration.
    let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    for keys in [&["prior_state"][..], &["variables", "configuration"][..]] {
        let mut part = serde_json::Map::new();
        for k in keys {
            part.insert((*k).to_owned(), doc[*k].clone());
        }
        let part = serde_json::Value::Object(part).to_string();
        let p = parse(part.as_bytes(), &Redact::default()).unwrap();
        assert!(!p.drifted());
        let json = stored(part.as_bytes(), &p);
        assert!(
            part.contains("boop") && !json.contains("boop"),
            "{keys:?}: {json}"
        );
    }

    // OpenTofu + hashicorp/local: a replace whose sensitive attribute is null (nothing to hide).
    let (bytes, p) = public("opentofu_local_provider_update.json");
    assert_eq!(
        summary(&p),
        vec![("local_file.local_file", ChangeType::Changed, true, None)]
    );
    assert_eq!(
        attrs(&p.items[0]),
        vec![
            (
                "content",
                Some("{\"hello\":\"world\"}"),
                Some("{\"goodbye\":\"world\"}")
            ),
            (
                "id",
                Some("2248ee2fa0aaaad99178531f924bf00b4b0a8f4e"),
                Some(UNKNOWN)
            ),
        ]
    );
    assert_eq!(stored(&bytes, &p), String::from_utf8(bytes).unwrap());
}

#[test]
fn public_terraform_1_1_modules_and_short_sensitive_output() {
    // terraform-json `110_sensitive_values` (Terraform 1.1.0-dev): 7 creates across a child
    // module and a count, 8 new outputs, one sensitive with the 3-character value "bar".
    let (bytes, p) = public("terraform-json_110_sensitive_values.json");
    assert_eq!(p.terraform_version.as_deref(), Some("1.1.0-dev"));
    assert_eq!((p.added, p.changed, p.removed), (15, 0, 0));
    let addrs: Vec<&str> = p.items.iter().map(|i| i.address.as_str()).collect();
    assert_eq!(
        &addrs[..3],
        &[
            "module.foo.null_resource.aliased",
            "module.foo.null_resource.foo",
            "null_resource.bar"
        ]
    );
    assert!(addrs.contains(&"null_resource.baz[2]") && addrs.contains(&"output.foo"));
    let foo = p.items.iter().find(|i| i.address == "output.foo").unwrap();
    assert_eq!(attrs(foo), vec![("value", None, Some(REDACTED))]);
    let referenced = p
        .items
        .iter()
        .find(|i| i.address == "output.referenced")
        .unwrap();
    assert_eq!(attrs(referenced), vec![("value", None, Some(UNKNOWN))]);
    // "bar" is too short to replace everywhere: it goes only where it is a whole string value,
    // so keys named "bar" (module inputs) stay and the JSON stays valid.
    assert!(p.sensitive.is_empty());
    let json = stored(&bytes, &p);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["output_changes"]["foo"]["after"], REDACTED);
    assert_eq!(
        doc["prior_state"]["values"]["outputs"]["foo"]["value"],
        REDACTED
    );
    assert_eq!(
        doc["configuration"]["root_module"]["module_calls"]["foo"]["expressions"]["bar"]
            ["constant_value"],
        "baz"
    );
    assert!(
        !json.contains("\"bar\"}") && !json.contains("\"bar\","),
        "{json}"
    );
}

#[test]
fn public_large_nested_update() {
    // OpenTofu equivalence test `fully_populated_complex_update`: one resource, 19 leaves
    // changed deep in lists, sets and blocks.
    let (bytes, p) = public("opentofu_fully_populated_complex_update.json");
    assert_eq!(
        summary(&p),
        vec![(
            "tfcoremock_complex_resource.complex",
            ChangeType::Changed,
            false,
            None
        )]
    );
    let a = attrs(&p.items[0]);
    assert_eq!(a.len(), 19, "{a:?}");
    assert!(
        a.iter().any(|(path, _, _)| *path == "list.2.list.3.number"),
        "{a:?}"
    );
    assert!(
        a.iter().any(|(path, _, _)| *path == "list_block.2.string"),
        "{a:?}"
    );
    assert!(p.sensitive.is_empty() && p.sensitive_tokens.is_empty());
    assert_eq!(stored(&bytes, &p), String::from_utf8(bytes).unwrap());
}
