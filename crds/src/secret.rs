//! Secret values and `${env:NAME}` / `${secret:NAME}` substitution.
//!
//! Guarantees: a [`SecretString`] never prints its value through `Debug`, `Display` or serde;
//! text produced by [`expand`] says whether a secret went into it, and [`Redactor`] removes known
//! secret values from any text before it reaches a log, diff, report or Event.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

/// What secrets are shown as everywhere.
pub const REDACTED: &str = "<redacted>";

/// A secret value. Only [`SecretString::expose`] gives the text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret text. Call it only where the value is used, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for SecretString {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Where `${env:NAME}` and `${secret:NAME}` values come from.
pub trait Lookup {
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// A secret.
    fn secret(&self, name: &str) -> Option<SecretString>;
}

/// A [`Lookup`] over maps, for tests and for values already fetched from Kubernetes Secrets.
#[derive(Clone, Debug, Default)]
pub struct MapLookup {
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// Secrets.
    pub secrets: BTreeMap<String, SecretString>,
}

impl Lookup for MapLookup {
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }

    fn secret(&self, name: &str) -> Option<SecretString> {
        self.secrets.get(name).cloned()
    }
}

/// The kind of a `${...}` reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefKind {
    /// `${env:NAME}`.
    Env,
    /// `${secret:NAME}`.
    Secret,
}

/// One `${kind:NAME}` reference found in a text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reference {
    /// env or secret.
    pub kind: RefKind,
    /// The name.
    pub name: String,
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            RefKind::Env => "env",
            RefKind::Secret => "secret",
        };
        write!(f, "${{{kind}:{}}}", self.name)
    }
}

/// Text after substitution, with the secrets that went into it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Expanded {
    /// The text; secret values are in it, so never print it without [`Expanded::display`].
    pub value: String,
    /// The secret values used, for redaction.
    pub secrets: Vec<SecretString>,
}

impl Expanded {
    /// Whether any secret went into the text.
    pub fn is_secret(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// The text with secret values replaced by `<redacted>`, safe to print.
    pub fn display(&self) -> Cow<'_, str> {
        Redactor::new(self.secrets.iter().cloned()).redact(&self.value)
    }
}

impl fmt::Debug for Expanded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expanded({:?})", self.display())
    }
}

/// Why substitution failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubstError {
    /// A reference whose value is not available.
    Missing(Reference),
    /// `${` without a valid `kind:NAME}`.
    Malformed(String),
}

impl fmt::Display for SubstError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SubstError::Missing(r) if r.kind == RefKind::Secret => {
                write!(f, "{r}: no secret named {:?} is defined", r.name)
            }
            SubstError::Missing(r) => {
                write!(f, "{r}: environment variable {:?} is not set", r.name)
            }
            SubstError::Malformed(text) => write!(
                f,
                "{text:?} is not a reference: write ${{env:NAME}} or ${{secret:NAME}} (and $${{ for a literal ${{)"
            ),
        }
    }
}

impl std::error::Error for SubstError {}

/// One piece of a text: literal or reference.
enum Piece<'a> {
    Literal(&'a str),
    Ref(Reference),
}

/// Splits text into literals and references. `$${` is a literal `${`.
fn pieces(text: &str) -> Result<Vec<Piece<'_>>, SubstError> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest[..at].ends_with('$') {
            out.push(Piece::Literal(&rest[..at - 1]));
            out.push(Piece::Literal("${"));
            rest = &rest[at + 2..];
            continue;
        }
        out.push(Piece::Literal(&rest[..at]));
        let body_end = rest[at..]
            .find('}')
            .ok_or_else(|| SubstError::Malformed(rest[at..].chars().take(40).collect()))?;
        let body = &rest[at + 2..at + body_end];
        let malformed = || SubstError::Malformed(format!("${{{body}}}"));
        let (kind, name) = body.split_once(':').ok_or_else(malformed)?;
        let kind = match kind {
            "env" => RefKind::Env,
            "secret" => RefKind::Secret,
            _ => return Err(malformed()),
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(malformed());
        }
        out.push(Piece::Ref(Reference {
            kind,
            name: name.to_owned(),
        }));
        rest = &rest[at + body_end + 1..];
    }
    out.push(Piece::Literal(rest));
    Ok(out)
}

/// The references in a text, in order, without resolving them.
pub fn references(text: &str) -> Result<Vec<Reference>, SubstError> {
    // Most strings hold none; `pieces` would allocate for them all the same.
    if !text.contains("${") {
        return Ok(Vec::new());
    }
    Ok(pieces(text)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Ref(r) => Some(r),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// Replaces every reference in `text` with its value.
pub fn expand(text: &str, lookup: &dyn Lookup) -> Result<Expanded, SubstError> {
    let mut out = Expanded::default();
    for piece in pieces(text)? {
        match piece {
            Piece::Literal(s) => out.value.push_str(s),
            Piece::Ref(r) => match r.kind {
                RefKind::Env => {
                    let value = lookup.env(&r.name).ok_or(SubstError::Missing(r))?;
                    out.value.push_str(&value);
                }
                RefKind::Secret => {
                    let value = lookup.secret(&r.name).ok_or(SubstError::Missing(r))?;
                    out.value.push_str(value.expose());
                    out.secrets.push(value);
                }
            },
        }
    }
    Ok(out)
}

/// Removes known secret values from text.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    values: Vec<SecretString>,
}

impl Redactor {
    /// A redactor for these values; empty values are ignored.
    pub fn new(values: impl IntoIterator<Item = SecretString>) -> Self {
        let mut values: Vec<SecretString> = values
            .into_iter()
            .filter(|v| !v.expose().is_empty())
            .collect();
        // Longest first, so a secret that contains another is removed whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        values.dedup();
        Self { values }
    }

    /// The text with every known secret value replaced by `<redacted>`.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for value in &self.values {
            if out.contains(value.expose()) {
                out = Cow::Owned(out.replace(value.expose(), REDACTED));
            }
        }
        out
    }

    /// The byte ranges of `text` that hold a known secret value, sorted, overlapping and
    /// adjacent ranges merged. Covers at least every byte [`Redactor::redact`] replaces.
    pub fn find(&self, text: &str) -> Vec<std::ops::Range<usize>> {
        let mut found: Vec<std::ops::Range<usize>> = self
            .values
            .iter()
            .flat_map(|v| {
                text.match_indices(v.expose())
                    .map(|(at, s)| at..at + s.len())
            })
            .collect();
        found.sort_by_key(|r| (r.start, r.end));
        let mut merged: Vec<std::ops::Range<usize>> = Vec::with_capacity(found.len());
        for r in found {
            match merged.last_mut() {
                Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
                _ => merged.push(r),
            }
        }
        merged
    }

    /// Whether the redactor knows no secret value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> MapLookup {
        let mut l = MapLookup::default();
        l.env.insert("HOME".into(), "/root".into());
        l.secrets
            .insert("DB_PASSWORD".into(), SecretString::new("hunter2"));
        l
    }

    #[test]
    fn secret_never_prints() {
        let s = SecretString::new("hunter2");
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
    }

    #[test]
    fn expands_env_and_secrets() {
        let out = expand("home=${env:HOME} pw=${secret:DB_PASSWORD}", &lookup()).unwrap();
        assert_eq!(out.value, "home=/root pw=hunter2");
        assert!(out.is_secret());
        assert_eq!(out.display(), "home=/root pw=<redacted>");
        assert!(!format!("{out:?}").contains("hunter2"));
    }

    #[test]
    fn dollar_dollar_is_literal() {
        let out = expand("cost: $${env:HOME} and $5", &lookup()).unwrap();
        assert_eq!(out.value, "cost: ${env:HOME} and $5");
        assert!(!out.is_secret());
    }

    #[test]
    fn missing_and_malformed_references_are_named() {
        let err = expand("${secret:NOPE}", &lookup()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "${secret:NOPE}: no secret named \"NOPE\" is defined"
        );
        let err = expand("${env:UNSET_VAR}", &lookup()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "${env:UNSET_VAR}: environment variable \"UNSET_VAR\" is not set"
        );
        for bad in [
            "${vault:X}",
            "${env:}",
            "${env:1X}",
            "${env:A-B}",
            "${env:A",
        ] {
            assert!(
                matches!(expand(bad, &lookup()), Err(SubstError::Malformed(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn redactor_replaces_longest_first() {
        let r = Redactor::new([SecretString::new("abc"), SecretString::new("abcdef")]);
        assert_eq!(r.redact("x abcdef y abc"), "x <redacted> y <redacted>");
        assert_eq!(r.redact("nothing here"), "nothing here");
    }

    #[test]
    fn finds_merged_secret_ranges() {
        let r = Redactor::new([SecretString::new("abc"), SecretString::new("cde")]);
        assert_eq!(r.find("x abcde y abc"), vec![2..7, 10..13]);
        assert_eq!(r.find("nothing"), Vec::<std::ops::Range<usize>>::new());
        assert!(Redactor::default().is_empty());
    }
}
