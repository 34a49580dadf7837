//! YAML in and out, with one parser for every reader: configuration files, samples, scan files,
//! the scan runner's report files.
//!
//! Reading is bounded: nesting deeper than [`MAX_YAML_DEPTH`] is refused as the parser meets it,
//! so a rejected input costs time linear in its size (see docs/decisions.md, "YAML").

use serde::Serialize;
use serde_json::Value;

mod fast;

/// Deepest nesting of YAML mappings and sequences (block or flow) accepted; about serde_json's
/// own limit for JSON files (127), far beyond any real configuration.
pub const MAX_YAML_DEPTH: usize = 128;

/// The documents of a YAML stream, as JSON values; empty documents are skipped. Nesting deeper
/// than [`MAX_YAML_DEPTH`] is refused as the parser meets it, so a rejected input costs time
/// linear in its size. Scalars resolve as YAML 1.2's core schema (`yes`, `0755`, `1_000` stay
/// strings); duplicate keys and unknown tags are errors.
///
/// Most configuration is read by a fast reader in one pass; whatever it is not certain to read
/// exactly as [`parse_yaml_full`] does, and every error, goes to [`parse_yaml_full`]. The value
/// and the message are the same either way (see docs/decisions.md, "A fast YAML reader").
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    match fast::parse(text) {
        Ok(documents) => Ok(documents),
        Err(fast::GiveUp) => parse_yaml_full(text),
    }
}

/// What the fast reader makes of `text`: its documents, or `None` where it gives the text to
/// [`parse_yaml_full`]. For the differential tests and the `loader` fuzz target, which check
/// that a value it returns is the full reader's value.
#[doc(hidden)]
pub fn parse_yaml_fast(text: &str) -> Option<Vec<Value>> {
    fast::parse(text).ok()
}

/// [`parse_yaml`] through the full reader (serde-saphyr) alone: every YAML construct, and the
/// messages for every error.
pub fn parse_yaml_full(text: &str) -> Result<Vec<Value>, String> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: MAX_YAML_DEPTH,
            flow_nesting_limit: MAX_YAML_DEPTH,
        },
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
        reject_unsupported_tags: true,
        with_snippet: false,
        // Comments are checked as syntax but not kept: nothing reads them.
        emit_comments: false,
    };
    serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|err| {
        let too_deep = matches!(
            &err,
            serde_saphyr::Error::Budget {
                breach: serde_saphyr::budget::BudgetBreach::Depth { .. },
                ..
            }
        ) || err.to_string().starts_with("recursion limit exceeded");
        match err.location().filter(|_| too_deep) {
            Some(at) => format!(
                "invalid YAML: nesting deeper than {MAX_YAML_DEPTH} levels at line {}, column {}",
                at.line(),
                at.column()
            ),
            None => format!("invalid YAML: {err}"),
        }
    })
}

/// `value` as a YAML document: block collections, each string on one line (plain or quoted,
/// never folded), so generated files diff line by line.
///
/// # Errors
/// When `value` cannot be serialized (a map with non-string keys, a failing `Serialize`).
pub fn to_string<T: Serialize>(value: &T) -> Result<String, String> {
    let options = serde_saphyr::ser_options! {
        prefer_block_scalars: false,
    };
    serde_saphyr::to_string_with_options(value, options)
        .map_err(|err| format!("cannot write YAML: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_resolve_as_yaml_1_2_core_schema() {
        let docs = parse_yaml("[yes, on, 'on', 0755, 1_000, 0x1F, 0o17, ~, 1e3, true, 2001-12-14]")
            .unwrap();
        assert_eq!(
            docs,
            [serde_json::json!([
                "yes",
                "on",
                "on",
                "0755",
                "1_000",
                31,
                15,
                null,
                1000.0,
                true,
                "2001-12-14"
            ])]
        );
    }

    #[test]
    fn empty_documents_are_skipped() {
        let docs = parse_yaml("a: 1\n---\n---\nb: 2\n...\n").unwrap();
        assert_eq!(
            docs,
            [serde_json::json!({"a": 1}), serde_json::json!({"b": 2})]
        );
    }

    #[test]
    fn duplicate_keys_unknown_tags_and_infinities_are_refused() {
        for (text, expected) in [
            ("a: 1\na: 2\n", "duplicate mapping key: a"),
            ("a: !custom 3\n", "invalid YAML: "),
            ("a: .inf\n", "non-finite float"),
        ] {
            let err = parse_yaml(text).unwrap_err();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
    }

    #[test]
    fn nesting_is_capped_at_the_limit_exactly() {
        let at = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse_yaml(&at(MAX_YAML_DEPTH)).is_ok());
        assert_eq!(
            parse_yaml(&at(MAX_YAML_DEPTH + 1)).unwrap_err(),
            "invalid YAML: nesting deeper than 128 levels at line 1, column 129"
        );
        let block =
            |n: usize| -> String { (0..n).map(|i| format!("{}a:\n", " ".repeat(i))).collect() };
        assert!(parse_yaml(&block(MAX_YAML_DEPTH)).is_ok());
        assert_eq!(
            parse_yaml(&block(MAX_YAML_DEPTH + 1)).unwrap_err(),
            "invalid YAML: nesting deeper than 128 levels at line 129, column 129"
        );
    }
}
