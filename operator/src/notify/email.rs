//! The `email` receiver: a group as one plain-text e-mail, submitted over SMTP with STARTTLS
//! or implicit TLS (docs/notifications.md, "email").
//!
//! [`Config::from_keys`] reads the receiver's Secret (pure), [`message`] builds the e-mail
//! (pure), [`smtp`] submits it.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use driftless_crds::secret::SecretString;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use super::payload::Message;

pub mod message;
pub mod smtp;

pub use message::Mailbox;

/// The port when the Secret has none, with STARTTLS (submission, RFC 6409).
pub const STARTTLS_PORT: u16 = 587;
/// The port when the Secret has none, with implicit TLS (submissions, RFC 8314).
pub const TLS_PORT: u16 = 465;
/// Most recipients of one receiver.
pub const MAX_RECIPIENTS: usize = 50;

/// An `email` receiver's settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// The submission server.
    pub server: smtp::Server,
    /// `From`.
    pub from: Mailbox,
    /// `To`, in the Secret's order.
    pub to: Vec<Mailbox>,
}

impl Config {
    /// Reads the keys of Secret `secret` (`data`: key → value). Every problem is reported at
    /// once, by key; no value of `username` or `password` is ever in an error. Values are
    /// trimmed, except `password`.
    pub fn from_keys(secret: &str, data: &BTreeMap<String, Vec<u8>>) -> Result<Self, String> {
        let mut problems = Vec::new();
        let text = |key: &str, problems: &mut Vec<String>| -> Option<String> {
            let bytes = data.get(key)?;
            match std::str::from_utf8(bytes) {
                Ok(s) => Some(s.to_owned()),
                Err(_) => {
                    problems.push(format!("key {key:?} is not UTF-8 text"));
                    None
                }
            }
        };
        let required = |key: &str, problems: &mut Vec<String>| match text(key, problems)
            .map(|s| s.trim().to_owned())
        {
            None if !data.contains_key(key) => {
                problems.push(format!("no key {key:?}"));
                None
            }
            Some(v) if v.is_empty() => {
                problems.push(format!("key {key:?} is empty"));
                None
            }
            value => value,
        };
        let host = required("host", &mut problems);
        let from = required("from", &mut problems).and_then(|f| {
            Mailbox::parse(&f)
                .map_err(|e| problems.push(format!("key \"from\": {e}")))
                .ok()
        });
        let to: Vec<Mailbox> = required("to", &mut problems)
            .map(|list| {
                list.split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .filter_map(|a| {
                        Mailbox::parse(a)
                            .map_err(|e| problems.push(format!("key \"to\": {e}")))
                            .ok()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if to.len() > MAX_RECIPIENTS {
            problems.push(format!(
                "key \"to\": {} addresses, at most {MAX_RECIPIENTS}",
                to.len()
            ));
        }
        let tls = match text("tls", &mut problems).map(|t| t.trim().to_ascii_lowercase()) {
            None => smtp::Tls::StartTls,
            Some(t) if t == "starttls" => smtp::Tls::StartTls,
            Some(t) if t == "tls" => smtp::Tls::Implicit,
            Some(t) => {
                problems.push(format!(
                    "key \"tls\": {t:?} is not one of starttls (the default), tls"
                ));
                smtp::Tls::StartTls
            }
        };
        let port = match text("port", &mut problems) {
            None => match tls {
                smtp::Tls::StartTls => STARTTLS_PORT,
                smtp::Tls::Implicit => TLS_PORT,
            },
            Some(p) => match p.trim().parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    problems.push(format!(
                        "key \"port\": {:?} is not a port (1-65535)",
                        p.trim()
                    ));
                    0
                }
            },
        };
        let username = text("username", &mut problems).map(|u| u.trim().to_owned());
        let password = text("password", &mut problems);
        let credentials = match (username, password) {
            (None, None) => None,
            (Some(username), Some(password)) if !username.is_empty() && !password.is_empty() => {
                Some(smtp::Credentials {
                    username,
                    password: SecretString::new(password),
                })
            }
            _ => {
                problems.push(
                    "keys \"username\" and \"password\" must be set together, neither empty".into(),
                );
                None
            }
        };
        let roots = match data.get("ca.crt") {
            None => {
                let mut roots = RootCertStore::empty();
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
                roots
            }
            Some(pem) => ca_roots(pem).unwrap_or_else(|e| {
                problems.push(format!("key \"ca.crt\": {e}"));
                RootCertStore::empty()
            }),
        };
        match (host, from) {
            (Some(host), Some(from)) if problems.is_empty() && !to.is_empty() => Ok(Self {
                server: smtp::Server {
                    host,
                    port,
                    tls,
                    roots: Arc::new(roots),
                    credentials,
                },
                from,
                to,
            }),
            _ => {
                if problems.is_empty() {
                    problems.push("key \"to\": no address".into());
                }
                Err(format!("Secret {secret}: {}", problems.join("; ")))
            }
        }
    }
}

/// The CAs of a PEM bundle.
fn ca_roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("expected PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("expected PEM certificates, found none".into());
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Sends the group `m` as one e-mail dated `date` (the group's send time) to the recipients
/// of receiver `receiver`. The error names the receiver, the server and the SMTP reply.
pub async fn send(
    config: &Config,
    receiver: &str,
    m: &Message<'_>,
    date: DateTime<Utc>,
) -> Result<(), String> {
    let envelope = message::Envelope {
        from: &config.from,
        to: &config.to,
        receiver,
        date,
    };
    let mail = message::render(m, &envelope);
    let to: Vec<String> = config.to.iter().map(|t| t.address.clone()).collect();
    smtp::send(&config.server, &config.from.address, &to, &mail)
        .await
        .map_err(|e| format!("email receiver {receiver}: {e}"))
}

#[cfg(test)]
mod tests;
