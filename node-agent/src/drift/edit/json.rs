//! JSON edits (see [`super`]). JSON is YAML 1.2 flow style, so the YAML parser finds the
//! spans; values and keys are written as JSON strings.

use super::tree;
use super::{EditError, Edited, Target};

/// `text` with the target field set to `value`.
pub fn set_field(text: &str, target: &Target, value: &str) -> Result<Edited, EditError> {
    let doc = super::document(text, target)?;
    let at = tree::locate(&doc, target)?;
    let encoded = serde_json::to_string(value).unwrap_or_default();
    let text = match at.entry {
        Some((_, node)) => super::splice(text, node.span.clone(), &encoded),
        None => {
            let (pos, sep) = super::flow_insert(text, at.map);
            let key = serde_json::to_string(target.field).unwrap_or_default();
            super::splice(text, pos..pos, &format!("{sep}{key}: {encoded}"))
        }
    };
    Ok(Edited {
        text,
        path: at.path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, task: &str, kind: &str, field: &str, value: &str) -> String {
        set_field(
            text,
            &Target {
                document: 1,
                task,
                kind,
                field,
            },
            value,
        )
        .unwrap()
        .text
    }

    const POLICY: &str = r#"{
  "apiVersion": "driftless.dev/v1alpha1",
  "kind": "ApplyPolicy",
  "metadata": {"name": "base"},
  "spec": {
    "tasks": [
      {"name": "motd", "file": {"path": "/etc/motd", "content": "hello\n"}},
      {
        "name": "curl",
        "package": {
          "name": "curl"
        }
      }
    ]
  }
}
"#;

    #[test]
    fn replaces_the_string_in_place() {
        let out = set(POLICY, "motd", "file", "content", "it's \"new\"\n\ttab\n");
        assert_eq!(
            out,
            POLICY.replace(r#""hello\n""#, r#""it's \"new\"\n\ttab\n""#)
        );
        let back: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back["spec"]["tasks"][0]["file"]["content"],
            "it's \"new\"\n\ttab\n"
        );
    }

    #[test]
    fn adds_a_missing_member_on_its_own_line() {
        let out = set(POLICY, "curl", "package", "version", "7.88.1-10");
        assert_eq!(
            out,
            POLICY.replace(
                "\"name\": \"curl\"\n        }",
                "\"name\": \"curl\",\n          \"version\": \"7.88.1-10\"\n        }"
            )
        );
        let compact = r#"{"spec":{"tasks":[{"name":"c","package":{"name":"c"}}]}}"#;
        assert_eq!(
            set(compact, "c", "package", "version", "1"),
            r#"{"spec":{"tasks":[{"name":"c","package":{"name":"c", "version": "1"}}]}}"#
        );
    }
}
