//! `regex`: named captures become fields; `message` is the line unless a capture names it.

use serde_json::Value;

use crate::logs::Fields;

/// Applies the pattern; a line it does not match is an error.
pub fn parse(re: &regex::Regex, text: &str, fields: &mut Fields) -> Result<(), String> {
    let captures = re
        .captures(text)
        .ok_or_else(|| "regex: the line does not match the pattern".to_owned())?;
    for name in re.capture_names().flatten() {
        if let Some(m) = captures.name(name) {
            fields.insert(name.to_owned(), Value::String(m.as_str().to_owned()));
        }
    }
    if !fields.contains_key("message") {
        fields.insert("message".into(), Value::String(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_captures_become_fields() {
        let re = regex::Regex::new(r"^(?P<level>\w+) (?P<msg>.*)$").unwrap();
        let mut fields = Fields::new();
        parse(&re, "WARN disk almost full", &mut fields).unwrap();
        assert_eq!(fields["level"], "WARN");
        assert_eq!(fields["msg"], "disk almost full");
        assert_eq!(fields["message"], "WARN disk almost full");
        assert!(parse(&re, "nospace", &mut Fields::new()).is_err());
    }
}
