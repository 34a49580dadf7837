//! `plain`: the line as it is, in `message`.

use serde_json::Value;

use crate::logs::Fields;

/// Puts the line into `message`.
pub fn parse(text: &str, fields: &mut Fields) {
    fields.insert("message".into(), Value::String(text.to_owned()));
}
