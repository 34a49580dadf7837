//! The e-mail of one group: RFC 5322 headers and a UTF-8 plain-text body in quoted-printable,
//! every line within 78 characters; pure functions, no I/O.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::notify::payload::{change_text, kind_word, rollout_change, Message};

/// Longest header line (RFC 5322 §2.1.1 "SHOULD"), without CRLF; only a single word longer
/// than this (an address with a very long domain) is written on a longer line.
pub const MAX_HEADER_LINE: usize = 78;
/// Longest encoded body line, soft line break included (RFC 2045 §6.7).
pub const MAX_BODY_LINE: usize = 76;
/// Longest encoded word in a header (RFC 2047 §2).
const MAX_ENCODED_WORD: usize = 75;

/// An address with an optional display name: `ops@example.com` or
/// `Driftless <driftless@example.com>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    /// The display name, if any.
    pub name: Option<String>,
    /// `local@domain`, ASCII.
    pub address: String,
}

impl Mailbox {
    /// Parses `local@domain` or `Display Name <local@domain>` (the name may be quoted). The
    /// error says what was expected, not which key the text came from.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (name, address) = match text.strip_suffix('>').and_then(|t| t.rsplit_once('<')) {
            Some((name, address)) => {
                let name = name.trim();
                let name = name
                    .strip_prefix('"')
                    .and_then(|n| n.strip_suffix('"'))
                    .unwrap_or(name)
                    .trim();
                if name.chars().any(char::is_control) {
                    return Err(format!("{text:?}: the display name has control characters"));
                }
                ((!name.is_empty()).then(|| name.to_owned()), address.trim())
            }
            None => (None, text),
        };
        check_address(address).map_err(|why| {
            format!("{text:?} is not an e-mail address (expected local@domain or Name <local@domain>): {why}")
        })?;
        Ok(Self {
            name,
            address: address.to_owned(),
        })
    }

    /// The part after `@`.
    pub fn domain(&self) -> &str {
        self.address
            .rsplit_once('@')
            .map_or(self.address.as_str(), |(_, d)| d)
    }

    /// The mailbox as a header writes it.
    fn header(&self) -> String {
        match &self.name {
            None => self.address.clone(),
            Some(name) if name.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) => {
                let quoted = name.replace('\\', "\\\\").replace('"', "\\\"");
                format!("\"{quoted}\" <{}>", self.address)
            }
            Some(name) => format!("{} <{}>", encoded_words(name).join(" "), self.address),
        }
    }
}

/// `local@domain` with a dot-atom local part and a host name as domain (RFC 5321 §4.1.2,
/// without quoted local parts, address literals or SMTPUTF8).
fn check_address(address: &str) -> Result<(), &'static str> {
    let (local, domain) = address.rsplit_once('@').ok_or("no @")?;
    const ATEXT: &str = "!#$%&'*+-/=?^_`{|}~";
    if local.is_empty() || local.len() > 64 {
        return Err("the local part must have 1 to 64 characters");
    }
    if !local.split('.').all(|atom| {
        !atom.is_empty()
            && atom
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ATEXT.contains(c))
    }) {
        return Err("the local part may hold letters, digits, !#$%&'*+-/=?^_`{|}~ and single dots between them");
    }
    if domain.is_empty() || domain.len() > 253 {
        return Err("the domain must have 1 to 253 characters");
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if !domain.split('.').all(label_ok) {
        return Err("the domain must be a host name (letters, digits, hyphens, dots)");
    }
    Ok(())
}

/// Who the e-mail of a group is from and to, and when it is dated.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// The sender (`From`, and the SMTP `MAIL FROM`).
    pub from: &'a Mailbox,
    /// The recipients (`To`, and one SMTP `RCPT TO` each).
    pub to: &'a [Mailbox],
    /// The receiver's name, part of the Message-ID.
    pub receiver: &'a str,
    /// The `Date`: the group's send time, the same in every attempt.
    pub date: DateTime<Utc>,
}

/// `<delivery id>.<receiver>@<from domain>`: the same in every attempt of a group, different
/// for each receiver, so a resent copy can be recognised and two receivers' mails cannot.
pub fn message_id(delivery: &str, envelope: &Envelope<'_>) -> String {
    format!(
        "<{delivery}.{}@{}>",
        envelope.receiver,
        envelope.from.domain()
    )
}

/// The plain text of the group (lines end with `\n`): the headline, one line per listed
/// rollout with its message below it, one line per listed target with its dashboard link
/// below it, how many are not listed, and the policy and delivery id.
pub fn body(m: &Message<'_>) -> String {
    let (rollouts, listed, rest) = m.listed();
    let mut text = format!("{}\n\n", m.headline());
    for r in rollouts {
        text.push_str(&format!(
            "- ApplyPolicy {}: {}\n",
            r.policy,
            rollout_change(r)
        ));
        if let Some(message) = &r.message {
            text.push_str(&format!("    {message}\n"));
        }
    }
    for t in listed {
        let change = change_text(t).replace("\r\n", "\n").replace('\r', "\n");
        let mut lines = change.split('\n');
        text.push_str(&format!(
            "- {} ({}): {}\n",
            t.target,
            kind_word(t.kind),
            lines.next().unwrap_or_default()
        ));
        // A multi-line error stays under its target.
        for line in lines {
            text.push_str(&format!("    {line}\n"));
        }
        if let Some(url) = m.link(&t.report) {
            text.push_str(&format!("  {url}\n"));
        }
    }
    if rest > 0 {
        text.push_str(&format!("… and {rest} more\n"));
    }
    text.push_str(&format!(
        "\nNotificationPolicy {}/{}, delivery {}\n",
        m.namespace, m.policy, m.id
    ));
    text
}

/// The whole message, header and body, with CRLF line ends; not yet dot-stuffed (that is the
/// SMTP layer's job).
pub fn render(m: &Message<'_>, envelope: &Envelope<'_>) -> Vec<u8> {
    let to: Vec<String> = envelope
        .to
        .iter()
        .enumerate()
        .map(|(i, mailbox)| {
            let mut h = mailbox.header();
            if i + 1 < envelope.to.len() {
                h.push(',');
            }
            h
        })
        .collect();
    let mut out = String::new();
    for (name, words) in [
        ("Date", vec![envelope.date.to_rfc2822()]),
        ("From", vec![envelope.from.header()]),
        ("To", to),
        ("Subject", unstructured(&m.headline())),
        ("Message-ID", vec![message_id(m.id, envelope)]),
        ("MIME-Version", vec!["1.0".into()]),
        (
            "Content-Type",
            vec!["text/plain;".into(), "charset=utf-8".into()],
        ),
        ("Content-Transfer-Encoding", vec!["quoted-printable".into()]),
        // RFC 3834: out-of-office replies and other automatic answers are not sent back.
        ("Auto-Submitted", vec!["auto-generated".into()]),
        ("X-Driftless-Delivery", vec![m.id.to_owned()]),
    ] {
        out.push_str(&fold(name, &words));
    }
    out.push_str("\r\n");
    out.push_str(&quoted_printable(&body(m)));
    out.into_bytes()
}

/// `Name: w1 w2 ...` folded into lines of at most [`MAX_HEADER_LINE`] characters, breaking only
/// between words; every line ends with CRLF.
pub fn fold(name: &str, words: &[String]) -> String {
    let mut out = format!("{name}:");
    let mut line = out.len();
    for word in words {
        if line + 1 + word.len() > MAX_HEADER_LINE && line > name.len() + 1 {
            out.push_str("\r\n");
            line = 0;
        }
        out.push(' ');
        out.push_str(word);
        line += 1 + word.len();
    }
    out.push_str("\r\n");
    out
}

/// An unstructured header value as words: printable ASCII as it is, anything else as UTF-8
/// encoded words (RFC 2047).
fn unstructured(text: &str) -> Vec<String> {
    if text.chars().all(|c| c == ' ' || c.is_ascii_graphic()) {
        text.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    } else {
        encoded_words(text)
    }
}

/// `=?utf-8?B?...?=` words of at most 75 characters, split between characters.
fn encoded_words(text: &str) -> Vec<String> {
    const OVERHEAD: usize = "=?utf-8?B??=".len();
    // Base64 turns 3 bytes into 4 characters.
    let max_bytes = (MAX_ENCODED_WORD - OVERHEAD) / 4 * 3;
    let mut words = Vec::new();
    let mut chunk = String::new();
    for c in text.chars() {
        if chunk.len() + c.len_utf8() > max_bytes {
            words.push(std::mem::take(&mut chunk));
        }
        chunk.push(c);
    }
    if !chunk.is_empty() {
        words.push(chunk);
    }
    words
        .iter()
        .map(|w| {
            format!(
                "=?utf-8?B?{}?=",
                base64::engine::general_purpose::STANDARD.encode(w)
            )
        })
        .collect()
}

/// Quoted-printable (RFC 2045 §6.7) of `text`, whose lines end with `\n`: CRLF line ends, lines
/// of at most [`MAX_BODY_LINE`] characters with soft line breaks, `=`, control characters and
/// every non-ASCII byte encoded, and a space or tab at a line's end encoded.
pub fn quoted_printable(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    for line in lines {
        let bytes = line.as_bytes();
        let mut width = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let last = i + 1 == bytes.len();
            let literal =
                matches!(b, b'!'..=b'<' | b'>'..=b'~') || (matches!(b, b' ' | b'\t') && !last);
            let token = if literal {
                char::from(b).to_string()
            } else {
                format!("={b:02X}")
            };
            // Room for the soft break's `=` unless this token ends the line.
            let limit = if last {
                MAX_BODY_LINE
            } else {
                MAX_BODY_LINE - 1
            };
            if width + token.len() > limit {
                out.push_str("=\r\n");
                width = 0;
            }
            out.push_str(&token);
            width += token.len();
        }
        out.push_str("\r\n");
    }
    out
}
