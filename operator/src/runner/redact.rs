//! Redaction of secrets in plan output, errors and logs.
//!
//! Two layers, applied to every text before it is stored (DriftReport, artifact) or logged:
//! known secret values (credentials the runner read, sensitive plan values) through
//! [`driftless_crds::secret::Redactor`], then patterns of well-known secret shapes: AWS access
//! key ids and secret keys, PEM blocks, bearer/GitHub tokens, and passwords in connection
//! strings (`scheme://user:PASSWORD@host`, `password=...`).

use std::borrow::Cow;
use std::sync::OnceLock;

use driftless_crds::secret::{Redactor, SecretString, REDACTED};
use regex::Regex;

/// One pattern and what replaces a match (`$name` groups kept, the secret part redacted).
struct Pattern {
    regex: Regex,
    replacement: &'static str,
}

fn patterns() -> &'static [Pattern] {
    static PATTERNS: OnceLock<Vec<Pattern>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        let table: [(&str, &'static str); 8] = [
            // PEM blocks (private keys, certificates): the whole block, also with escaped `\n`.
            (
                r"-----BEGIN [A-Z0-9 ]+-----[\s\S]*?-----END [A-Z0-9 ]+-----",
                "<redacted>",
            ),
            // AWS access key ids.
            (
                r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA|A3T[A-Z0-9])[A-Z0-9]{16}\b",
                "<redacted>",
            ),
            // AWS secret access keys next to their usual names.
            (
                r#"(?i)(?P<k>(?:aws_?)?secret_?(?:access_?)?key["']?\s*[:=]\s*["']?)[A-Za-z0-9/+=]{40}"#,
                "${k}<redacted>",
            ),
            // GitHub tokens.
            (
                r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})\b",
                "<redacted>",
            ),
            // Bearer tokens and Authorization headers.
            (
                r#"(?i)(?P<k>\bbearer\s+|\bauthorization["']?\s*[:=]\s*["']?(?:basic\s+|token\s+)?)[A-Za-z0-9\-._~+/]{8,}=*"#,
                "${k}<redacted>",
            ),
            // Passwords in URLs: scheme://user:password@host.
            (
                r"(?P<k>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+(?P<at>@)",
                "${k}<redacted>${at}",
            ),
            // key=value connection strings and config: password=..., pwd=...
            (
                r#"(?i)(?P<k>\b(?:password|passwd|pwd|secret|api_?key|access_?token)["']?\s*[=:]\s*["']?)[^\s;&"',}]+"#,
                "${k}<redacted>",
            ),
            // Private key material in JSON-escaped form without the BEGIN line (rare).
            (r"\bMII[A-Za-z0-9+/]{60,}={0,2}", "<redacted>"),
        ];
        table
            .into_iter()
            .filter_map(|(re, replacement)| {
                Regex::new(re)
                    .ok()
                    .map(|regex| Pattern { regex, replacement })
            })
            .collect()
    })
}

/// Replaces well-known secret shapes in `text` with `<redacted>`.
pub fn redact_patterns(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    for pattern in patterns() {
        if pattern.regex.is_match(&out) {
            let replaced = pattern
                .regex
                .replace_all(&out, pattern.replacement)
                .into_owned();
            out = Cow::Owned(replaced);
        }
    }
    out
}

/// Known secret values plus the patterns: what every stored or logged text goes through.
#[derive(Clone, Debug, Default)]
pub struct Redact {
    known: Vec<SecretString>,
    redactor: Option<Redactor>,
}

impl Redact {
    /// A redactor for `known` secret values (empty values are ignored) and the patterns.
    pub fn new(known: impl IntoIterator<Item = SecretString>) -> Self {
        let known: Vec<SecretString> = known
            .into_iter()
            .filter(|s| !s.expose().is_empty())
            .collect();
        let redactor = (!known.is_empty()).then(|| Redactor::new(known.iter().cloned()));
        Self { known, redactor }
    }

    /// This redactor with more known values.
    pub fn with(&self, more: impl IntoIterator<Item = SecretString>) -> Self {
        Self::new(self.known.iter().cloned().chain(more))
    }

    /// `text` with known values and secret patterns replaced by `<redacted>`.
    pub fn apply<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let known = match &self.redactor {
            Some(r) => r.redact(text),
            None => Cow::Borrowed(text),
        };
        match redact_patterns(&known) {
            Cow::Borrowed(_) => known,
            Cow::Owned(s) => Cow::Owned(s),
        }
    }

    /// Owned form of [`Redact::apply`].
    pub fn text(&self, text: &str) -> String {
        self.apply(text).into_owned()
    }
}

/// `true` when `text` is exactly what redaction shows.
pub fn is_redacted(text: &str) -> bool {
    text == REDACTED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_keys() {
        let t = "key AKIAIOSFODNN7EXAMPLE and aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
        let r = redact_patterns(t);
        assert!(!r.contains("AKIAIOSFODNN7EXAMPLE"), "{r}");
        assert!(!r.contains("wJalrXUtnFEMI"), "{r}");
        assert!(r.contains("aws_secret_access_key = <redacted>"), "{r}");
    }

    #[test]
    fn pem_blocks_also_escaped() {
        let t = "a -----BEGIN RSA PRIVATE KEY-----\nMIIEow\nabc\n-----END RSA PRIVATE KEY----- b";
        assert_eq!(redact_patterns(t), "a <redacted> b");
        let t = r#"{"k":"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n"}"#;
        assert_eq!(redact_patterns(t), r#"{"k":"<redacted>\n"}"#);
    }

    #[test]
    fn tokens_and_connection_strings() {
        let r = redact_patterns("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.abc.def");
        assert_eq!(r, "Authorization: Bearer <redacted>");
        let r = redact_patterns("url postgres://admin:hunter22@db:5432/app");
        assert_eq!(r, "url postgres://admin:<redacted>@db:5432/app");
        let r = redact_patterns("Server=db;User Id=sa;Password=p@ss;Database=x");
        assert_eq!(r, "Server=db;User Id=sa;Password=<redacted>;Database=x");
        let r = redact_patterns("token ghp_abcdefghijklmnopqrstuvwxyz0123456789");
        assert!(!r.contains("ghp_"), "{r}");
    }

    #[test]
    fn leaves_ordinary_text() {
        let t = "aws_s3_bucket.logs: tags.env changed from dev to prod (https://example.com/x)";
        assert!(matches!(redact_patterns(t), Cow::Borrowed(_)));
    }

    #[test]
    fn known_values() {
        let r = Redact::new([SecretString::new("s3cr3t-value")]);
        assert_eq!(r.apply("x s3cr3t-value y"), "x <redacted> y");
        assert!(is_redacted(&r.apply("s3cr3t-value")));
    }
}
