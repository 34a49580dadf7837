//! Full plans (JSON and text, redacted) stored outside etcd: an S3 bucket or a mounted volume.
//!
//! Objects are `<prefix>/<scan>/<stack-slug>/<run>/plan.json` and `plan.txt`; the report links
//! them as `s3://bucket/key` or `pvc://claim/<scan>/<stack-slug>/<run>/plan.json`.
//!
//! Before anything is stored, [`redacted_plan`] replaces every sensitive value the parser
//! collected (changes, drift, `prior_state`, sensitive variables; raw and JSON-escaped), the
//! credentials the runner read, and the secret patterns of [`super::redact`]. When a number or
//! boolean is marked sensitive, the JSON is first redacted by structure
//! ([`super::plan::redact_marked`]), as text replacement cannot find such values.

use std::path::PathBuf;

use driftless_crds::common::S3Target;
use driftless_crds::drift_report::{report_name, Artifact};
use driftless_crds::secret::SecretString;

use super::plan::ParsedPlan;
use super::redact::Redact;

/// The plan JSON and text as stored: `base` (credentials and patterns) plus every sensitive
/// value of `plan` replaced by `<redacted>` (short ones only where they are a whole JSON string
/// value).
pub fn redacted_plan(
    base: &Redact,
    plan: &ParsedPlan,
    json: &[u8],
    text: &[u8],
) -> (String, String) {
    let redact = base.with(plan.sensitive.iter().cloned());
    let structural;
    let json = if plan.sensitive_non_strings {
        // Sensitive numbers and booleans cannot be found by text: redact by structure.
        match serde_json::from_slice::<serde_json::Value>(json) {
            Ok(mut doc) => {
                super::plan::redact_marked(&mut doc);
                structural = doc.to_string().into_bytes();
                &structural[..]
            }
            Err(_) => br#"{"redacted": "the plan could not be redacted"}"#,
        }
    } else {
        json
    };
    let mut json = redact.text(&String::from_utf8_lossy(json));
    if !plan.sensitive_tokens.is_empty() {
        let alternatives: Vec<String> = plan
            .sensitive_tokens
            .iter()
            .map(|t| regex::escape(t.expose()))
            .collect();
        let pattern = format!(r#""(?:{})"(?P<end>\s*[,}}\]])"#, alternatives.join("|"));
        match regex::Regex::new(&pattern) {
            Ok(re) => json = re.replace_all(&json, "\"<redacted>\"${end}").into_owned(),
            Err(_) => json = String::from("{\"redacted\": \"the plan could not be redacted\"}"),
        }
    }
    (json, redacted_text(base, plan, text))
}

/// The plan text with `base` and every sensitive value of `plan` replaced by `<redacted>` (as
/// stored, and as the report holds it).
pub fn redacted_text(base: &Redact, plan: &ParsedPlan, text: &[u8]) -> String {
    base.with(plan.sensitive.iter().cloned())
        .text(&String::from_utf8_lossy(text))
}

/// Why an artifact could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Writing to the volume.
    #[error("writing {path}: {source}")]
    Io {
        /// File.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// S3.
    #[error("S3: {0}")]
    S3(String),
}

/// Where plans go.
pub enum Store {
    /// A PersistentVolumeClaim mounted at `mount`.
    Volume {
        /// Claim name (for the link).
        claim: String,
        /// Where it is mounted in the scan pod.
        mount: PathBuf,
    },
    /// An S3 bucket.
    S3 {
        /// The bucket client.
        bucket: Box<s3::Bucket>,
        /// Bucket name (for the link).
        name: String,
        /// Key prefix.
        prefix: String,
    },
}

/// Static S3 credentials.
pub struct S3Credentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: SecretString,
}

impl Store {
    /// An S3 store; `credentials` None means the environment (`AWS_ACCESS_KEY_ID`, ...).
    pub fn s3(
        target: &S3Target,
        credentials: Option<S3Credentials>,
    ) -> Result<Self, ArtifactError> {
        let region_name = target.region.clone().unwrap_or_else(|| "us-east-1".into());
        let region = match &target.endpoint {
            Some(endpoint) => s3::Region::Custom {
                region: region_name,
                endpoint: endpoint.clone(),
            },
            None => region_name
                .parse()
                .map_err(|e| ArtifactError::S3(format!("region: {e}")))?,
        };
        let creds = match credentials {
            Some(c) => s3::creds::Credentials::new(
                Some(&c.access_key_id),
                Some(c.secret_access_key.expose()),
                None,
                None,
                None,
            ),
            None => s3::creds::Credentials::from_env(),
        }
        .map_err(|e| ArtifactError::S3(format!("credentials: {e}")))?;
        let mut bucket = s3::Bucket::new(&target.bucket, region, creds)
            .map_err(|e| ArtifactError::S3(e.to_string()))?;
        if target.path_style {
            bucket = bucket.with_path_style();
        }
        Ok(Store::S3 {
            bucket,
            name: target.bucket.clone(),
            prefix: target.prefix.trim_matches('/').to_owned(),
        })
    }

    /// Stores the plan JSON and text of `stack`; returns the report's links.
    pub async fn put(
        &self,
        scan: &str,
        stack: &str,
        run: &str,
        json: &[u8],
        text: &[u8],
    ) -> Result<Artifact, ArtifactError> {
        let dir = object_dir(scan, stack, run);
        match self {
            Store::Volume { claim, mount } => {
                let base = mount.join(&dir);
                std::fs::create_dir_all(&base).map_err(|source| ArtifactError::Io {
                    path: base.display().to_string(),
                    source,
                })?;
                for (file, bytes) in [("plan.json", json), ("plan.txt", text)] {
                    let path = base.join(file);
                    std::fs::write(&path, bytes).map_err(|source| ArtifactError::Io {
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                Ok(Artifact {
                    plan_json: format!("pvc://{claim}/{dir}/plan.json"),
                    plan_text: Some(format!("pvc://{claim}/{dir}/plan.txt")),
                })
            }
            Store::S3 {
                bucket,
                name,
                prefix,
            } => {
                let key = |file: &str| {
                    if prefix.is_empty() {
                        format!("{dir}/{file}")
                    } else {
                        format!("{prefix}/{dir}/{file}")
                    }
                };
                for (file, bytes, kind) in [
                    ("plan.json", json, "application/json"),
                    ("plan.txt", text, "text/plain"),
                ] {
                    bucket
                        .put_object_with_content_type(key(file), bytes, kind)
                        .await
                        .map_err(|e| ArtifactError::S3(format!("put {}: {e}", key(file))))?;
                }
                Ok(Artifact {
                    plan_json: format!("s3://{name}/{}", key("plan.json")),
                    plan_text: Some(format!("s3://{name}/{}", key("plan.txt"))),
                })
            }
        }
    }
}

/// `<scan>/<stack-slug>/<run>`: the object directory of one plan.
pub fn object_dir(scan: &str, stack: &str, run: &str) -> String {
    let run: String = run
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{scan}/{}/{run}", report_name(scan, stack))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirs_are_safe() {
        assert_eq!(
            object_dir("infra", "live/prod", "r1"),
            "infra/infra-live-prod/r1"
        );
        assert_eq!(object_dir("s", "a", "../x"), "s/s-a/..-x");
    }

    #[test]
    fn sensitive_numbers_and_booleans_are_redacted_by_structure() {
        let doc = serde_json::json!({
            "format_version": "1.2",
            "variables": {"db_port": {"value": 15432}, "replicas": {"value": 3}},
            "planned_values": {
                "outputs": {"pin": {"sensitive": true, "value": 271828}},
                "root_module": {"resources": [{"address": "x.a",
                    "values": {"port": 15432, "public": true, "size": 20},
                    "sensitive_values": {"port": true, "public": true}}]}
            },
            "resource_changes": [{"address": "x.a", "type": "x", "mode": "managed",
                "change": {"actions": ["update"],
                    "before": {"port": 15431, "public": false, "size": 20, "list": [7, 314159]},
                    "after": {"port": 15432, "public": true, "size": 20, "list": [7, 314159]},
                    "before_sensitive": {"port": true, "public": true, "list": [false, true]},
                    "after_sensitive": {"port": true, "public": true, "list": [false, true]}}}],
            "output_changes": {"pin": {"actions": ["update"], "before": 161803, "after": 271828,
                "before_sensitive": true, "after_sensitive": true}},
            "prior_state": {"values": {
                "outputs": {"pin": {"sensitive": true, "value": 161803}},
                "root_module": {"child_modules": [{"resources": [{"address": "module.m.x.b",
                    "values": {"flag": true, "n": 11}, "sensitive_values": {"flag": true}}]}]}}},
            "configuration": {"root_module": {"variables": {
                "db_port": {"sensitive": true, "default": 25432},
                "replicas": {"default": 3}}}}
        });
        let bytes = doc.to_string().into_bytes();
        let plan = super::super::plan::parse(&bytes, &Redact::default()).unwrap();
        assert!(plan.sensitive_non_strings);
        let (json, _) = redacted_plan(&Redact::default(), &plan, &bytes, b"");
        for secret in ["15432", "15431", "271828", "161803", "314159", "25432"] {
            assert!(!json.contains(secret), "{secret} stored: {json}");
        }
        let stored: serde_json::Value = serde_json::from_str(&json).unwrap();
        let r = "<redacted>";
        let change = &stored["resource_changes"][0]["change"];
        assert_eq!(change["after"]["public"], r);
        assert_eq!(change["before"]["public"], r);
        // Unmarked values stay as they were.
        assert_eq!(change["after"]["size"], 20);
        assert_eq!(change["after"]["list"][0], 7);
        assert_eq!(change["after"]["list"][1], r);
        assert_eq!(stored["variables"]["replicas"]["value"], 3);
        assert_eq!(stored["variables"]["db_port"]["value"], r);
        let m = &stored["prior_state"]["values"]["root_module"]["child_modules"][0]["resources"][0];
        assert_eq!(m["values"]["flag"], r);
        assert_eq!(m["values"]["n"], 11);
        assert_eq!(
            stored["planned_values"]["root_module"]["resources"][0]["values"]["public"],
            r
        );

        // Only strings marked: the stored plan keeps its original text (no re-serialisation).
        let doc = serde_json::json!({"resource_changes": [{"address": "x.a", "type": "x",
            "change": {"actions": ["update"], "before": {"pw": "old-password"},
                "after": {"pw": "new-password", "n": 5}, "before_sensitive": {"pw": true},
                "after_sensitive": {"pw": true}}}]});
        let text = serde_json::to_string_pretty(&doc).unwrap();
        let plan = super::super::plan::parse(text.as_bytes(), &Redact::default()).unwrap();
        assert!(!plan.sensitive_non_strings);
        let (json, _) = redacted_plan(&Redact::default(), &plan, text.as_bytes(), b"");
        assert_eq!(
            json,
            text.replace("old-password", r).replace("new-password", r)
        );
    }

    #[tokio::test]
    async fn volume_store_writes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::Volume {
            claim: "plans".into(),
            mount: dir.path().to_path_buf(),
        };
        let a = store
            .put("infra", "live/a", "r7", b"{}", b"text")
            .await
            .unwrap();
        assert_eq!(a.plan_json, "pvc://plans/infra/infra-live-a/r7/plan.json");
        let written = std::fs::read(dir.path().join("infra/infra-live-a/r7/plan.txt")).unwrap();
        assert_eq!(written, b"text");
    }
}
