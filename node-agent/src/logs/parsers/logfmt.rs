//! `logfmt`: `key=value` pairs (`key="quoted value"`, bare `key` is `true`).

use serde_json::Value;

use crate::logs::Fields;

/// Parses the pairs; `message` is the line unless a pair names it. A line without any
/// `key=value` pair, or with an unterminated quote, is an error.
pub fn parse(text: &str, fields: &mut Fields) -> Result<(), String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut pairs = 0;
    let mut parsed = Vec::new();
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let key_start = i;
        while i < bytes.len() && bytes[i] != b'=' && !bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = &text[key_start..i];
        if i < bytes.len() && bytes[i] == b'=' {
            i += 1;
            let value = if i < bytes.len() && bytes[i] == b'"' {
                i += 1;
                let mut value = String::new();
                let mut closed = false;
                while i < bytes.len() {
                    match bytes[i] {
                        b'\\' if i + 1 < bytes.len() => {
                            value.push(bytes[i + 1] as char);
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => {
                            let ch = text[i..].chars().next().unwrap_or(' ');
                            value.push(ch);
                            i += ch.len_utf8();
                        }
                    }
                }
                if !closed {
                    return Err(format!("logfmt: unterminated quote in value of {key:?}"));
                }
                value
            } else {
                let start = i;
                while i < bytes.len() && !bytes[i].is_ascii_whitespace() {
                    i += 1;
                }
                text[start..i].to_owned()
            };
            if !key.is_empty() {
                pairs += 1;
                parsed.push((key.to_owned(), Value::String(value)));
            }
        } else if !key.is_empty() {
            parsed.push((key.to_owned(), Value::Bool(true)));
        }
    }
    if pairs == 0 {
        return Err("logfmt: no key=value pair".into());
    }
    for (key, value) in parsed {
        fields.insert(key, value);
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
    fn pairs_quotes_and_flags() {
        let mut fields = Fields::new();
        parse(
            r#"level=info msg="hello \"world\"" dry user=ann"#,
            &mut fields,
        )
        .unwrap();
        assert_eq!(fields["level"], "info");
        assert_eq!(fields["msg"], "hello \"world\"");
        assert_eq!(fields["dry"], true);
        assert_eq!(fields["user"], "ann");
        assert!(parse("just words", &mut Fields::new()).is_err());
        assert!(parse(r#"a="open"#, &mut Fields::new()).is_err());
    }
}
