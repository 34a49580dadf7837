//! `json`: one JSON object per line; its fields become event fields.

use serde_json::Value;

use crate::logs::Fields;

/// Merges the object's fields; anything but an object is an error.
pub fn parse(text: &str, fields: &mut Fields) -> Result<(), String> {
    match serde_json::from_str::<Value>(text.trim_end_matches('\r')) {
        Ok(Value::Object(object)) => {
            for (key, value) in object {
                fields.insert(key, value);
            }
            Ok(())
        }
        Ok(_) => Err("json: not an object".into()),
        Err(e) => Err(format!("json: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_merge_and_others_fail() {
        let mut fields = Fields::new();
        parse(r#"{"level":"info","n":3,"nested":{"a":1}}"#, &mut fields).unwrap();
        assert_eq!(fields["level"], "info");
        assert_eq!(fields["n"], 3);
        assert_eq!(fields["nested"]["a"], 1);
        assert!(parse("[1,2]", &mut Fields::new())
            .unwrap_err()
            .contains("not an object"));
        assert!(parse("{broken", &mut Fields::new()).is_err());
    }
}
