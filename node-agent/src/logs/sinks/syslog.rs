//! The `syslog` sink: RFC 5424 or RFC 3164 messages over UDP (one datagram each, no
//! acknowledgement), TCP with octet-counted framing (RFC 6587), or TLS over TCP with the same
//! framing (RFC 5425). A TCP or TLS batch is acknowledged once written to the socket and
//! flushed; a failed write closes the connection, and the batch is sent again on a new one.
//!
//! TLS always verifies the server certificate, against `caFile` or the system roots, for
//! `serverName` or the host of `address`; `certFile` and `keyFile` add a client certificate.

use std::sync::Arc;
use std::time::Duration;

use driftless_crds::log_pipeline::{SyslogFormat, SyslogProtocol, SyslogSink as SyslogSinkConfig};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use super::SinkContext;

use crate::logs::parsers::syslog::FACILITIES;
use crate::logs::{Event, LogError};

/// Largest UDP message; longer ones are cut.
const MAX_DATAGRAM: usize = 65_000;

/// The facility number of a name.
pub fn facility_code(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == name).map(|i| i as u8)
}

/// Severity words and their numbers.
const SEVERITIES: [(&str, u8); 16] = [
    ("emerg", 0),
    ("emergency", 0),
    ("panic", 0),
    ("alert", 1),
    ("crit", 2),
    ("critical", 2),
    ("fatal", 2),
    ("err", 3),
    ("error", 3),
    ("warning", 4),
    ("warn", 4),
    ("notice", 5),
    ("info", 6),
    ("informational", 6),
    ("debug", 7),
    ("trace", 7),
];

/// The severity of an event from its `severity` or `level` field; `info` when absent.
pub fn severity(event: &Event) -> u8 {
    let Some(word) = event
        .str_field("severity")
        .or_else(|| event.str_field("level"))
    else {
        return 6;
    };
    SEVERITIES
        .iter()
        .find(|(w, _)| w.eq_ignore_ascii_case(word))
        .map_or(6, |(_, n)| *n)
}

fn message(event: &Event) -> &str {
    event.str_field("message").unwrap_or(&event.raw)
}

fn app<'a>(event: &'a Event, default: &'a str) -> &'a str {
    event
        .str_field("app")
        .filter(|a| !a.is_empty() && a.is_ascii() && !a.contains(' '))
        .unwrap_or(default)
}

/// The timestamp text of a format.
fn stamp(format: SyslogFormat, now: chrono::DateTime<chrono::Utc>) -> String {
    match format {
        SyslogFormat::Rfc5424 => now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        SyslogFormat::Rfc3164 => now.format("%b %e %H:%M:%S").to_string(),
    }
}

/// Appends one message with a formatted timestamp.
fn write_message(
    out: &mut String,
    format: SyslogFormat,
    event: &Event,
    facility: u8,
    app_name: &str,
    host: &str,
    stamp: &str,
) {
    use std::fmt::Write as _;
    let pri = facility as u16 * 8 + severity(event) as u16;
    let app = app(event, app_name);
    let message = message(event);
    let _ = match format {
        SyslogFormat::Rfc5424 => write!(out, "<{pri}>1 {stamp} {host} {app} - - - {message}"),
        SyslogFormat::Rfc3164 => write!(out, "<{pri}>{stamp} {host} {app}: {message}"),
    };
}

/// An RFC 5424 message.
pub fn rfc5424(
    event: &Event,
    facility: u8,
    app_name: &str,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = String::new();
    let stamp = stamp(SyslogFormat::Rfc5424, now);
    write_message(
        &mut out,
        SyslogFormat::Rfc5424,
        event,
        facility,
        app_name,
        host,
        &stamp,
    );
    out
}

/// An RFC 3164 message.
pub fn rfc3164(
    event: &Event,
    facility: u8,
    app_name: &str,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = String::new();
    let stamp = stamp(SyslogFormat::Rfc3164, now);
    write_message(
        &mut out,
        SyslogFormat::Rfc3164,
        event,
        facility,
        app_name,
        host,
        &stamp,
    );
    out
}

/// An open stream connection.
enum Conn {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Tcp(_) => "Conn::Tcp",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

impl Conn {
    async fn write_all_flush(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
            Conn::Tls(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }
}

/// What a TLS connection needs: the client configuration and the name to verify.
struct Tls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// PEM text: the value itself when it holds a PEM block, else the file it names.
fn pem_text(sink: &str, field: &str, value: &str) -> Result<Vec<u8>, LogError> {
    if value.contains("-----BEGIN") {
        return Ok(value.as_bytes().to_vec());
    }
    std::fs::read(value).map_err(|e| {
        LogError::Config(format!(
            "sink {sink}: syslog.{field}: cannot read PEM file {value}: {e}"
        ))
    })
}

fn certificates(
    sink: &str,
    field: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, LogError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LogError::Config(format!(
                "sink {sink}: syslog.{field}: expected PEM certificates: {e}"
            ))
        })?;
    if certs.is_empty() {
        return Err(LogError::Config(format!(
            "sink {sink}: syslog.{field}: expected PEM certificates, found none"
        )));
    }
    Ok(certs)
}

impl Tls {
    fn new(sink: &str, config: &SyslogSinkConfig, ctx: &SinkContext<'_>) -> Result<Self, LogError> {
        let expand = |field: &str, value: &Option<String>| -> Result<Option<String>, LogError> {
            value
                .as_ref()
                .map(|v| {
                    ctx.expand(&format!("sink {sink}: syslog.{field}"), v)
                        .map(|s| s.expose().to_owned())
                })
                .transpose()
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        match expand("caFile", &config.ca_file)? {
            Some(ca) => {
                let pem = pem_text(sink, "caFile", &ca)?;
                for cert in certificates(sink, "caFile", &pem)? {
                    roots.add(cert).map_err(|e| {
                        LogError::Config(format!(
                            "sink {sink}: syslog.caFile: unusable CA certificate: {e}"
                        ))
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(LogError::Config(format!(
                        "sink {sink}: syslog.caFile is unset and no system CA certificates were found; set caFile"
                    )));
                }
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LogError::Config(format!("sink {sink}: tls: {e}")))?
            .with_root_certificates(roots);
        let cert = expand("certFile", &config.cert_file)?;
        let key = expand("keyFile", &config.key_file)?;
        let client = match (cert, key) {
            (None, None) => builder.with_no_client_auth(),
            (Some(cert), Some(key)) => {
                let chain = certificates(sink, "certFile", &pem_text(sink, "certFile", &cert)?)?;
                let key_pem = pem_text(sink, "keyFile", &key)?;
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    LogError::Config(format!(
                        "sink {sink}: syslog.keyFile: expected a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
                    ))
                })?;
                builder.with_client_auth_cert(chain, key).map_err(|e| {
                    LogError::Config(format!(
                        "sink {sink}: syslog.certFile/keyFile: the key does not fit the certificate: {e}"
                    ))
                })?
            }
            _ => {
                return Err(LogError::Config(format!(
                    "sink {sink}: syslog.certFile and syslog.keyFile must be set together"
                )))
            }
        };
        let name = match &config.server_name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => host_of(&config.address).to_owned(),
        };
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            LogError::Config(format!(
                "sink {sink}: syslog.serverName: {name:?} is not a valid DNS name or IP address"
            ))
        })?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}

/// The host part of `host:port` (brackets of an IPv6 address removed).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Batch and connection.
#[derive(Debug)]
pub struct SyslogSink {
    name: String,
    address: String,
    protocol: SyslogProtocol,
    format: SyslogFormat,
    facility: u8,
    app_name: String,
    host: String,
    /// UDP: one message per datagram.
    messages: Vec<String>,
    /// TCP and TLS: the octet-counted frames of the batch.
    frames: Vec<u8>,
    /// Scratch space for one message.
    scratch: String,
    /// The timestamp text of the current millisecond, reused by the events formatted in it.
    stamp: (i64, String),
    sent: usize,
    conn: Option<Conn>,
    tls: Option<Tls>,
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    /// A sink from its configuration; `ctx` resolves `${env:...}` and `${secret:...}` in the TLS
    /// fields.
    pub fn new(
        name: &str,
        config: &SyslogSinkConfig,
        ctx: &SinkContext<'_>,
    ) -> Result<Self, LogError> {
        let facility = facility_code(&config.facility).ok_or_else(|| {
            LogError::Config(format!(
                "sink {name}: facility {:?} is not a syslog facility",
                config.facility
            ))
        })?;
        let tls = match config.protocol {
            SyslogProtocol::Tls => Some(Tls::new(name, config, ctx)?),
            _ => {
                for (field, value) in [
                    ("caFile", &config.ca_file),
                    ("certFile", &config.cert_file),
                    ("keyFile", &config.key_file),
                    ("serverName", &config.server_name),
                ] {
                    if value.is_some() {
                        return Err(LogError::Config(format!(
                            "sink {name}: syslog.{field} is only used with protocol tls"
                        )));
                    }
                }
                None
            }
        };
        Ok(Self {
            name: name.to_owned(),
            address: config.address.clone(),
            protocol: config.protocol,
            format: config.format,
            facility,
            app_name: config.app_name.clone(),
            host: super::node_name(),
            messages: Vec::new(),
            frames: Vec::new(),
            scratch: String::new(),
            stamp: (i64::MIN, String::new()),
            sent: 0,
            conn: None,
            tls,
            udp: None,
        })
    }

    pub(super) fn add(&mut self, event: &Event) {
        let now = chrono::Utc::now();
        let ms = now.timestamp_millis();
        if self.stamp.0 != ms {
            self.stamp = (ms, stamp(self.format, now));
        }
        self.scratch.clear();
        write_message(
            &mut self.scratch,
            self.format,
            event,
            self.facility,
            &self.app_name,
            &self.host,
            &self.stamp.1,
        );
        if self.protocol == SyslogProtocol::Udp {
            self.messages.push(self.scratch.clone());
        } else {
            use std::io::Write as _;
            let _ = write!(self.frames, "{} ", self.scratch.len());
            self.frames.extend_from_slice(self.scratch.as_bytes());
        }
    }

    pub(super) fn clear(&mut self) {
        self.messages.clear();
        self.frames.clear();
        if self.frames.capacity() > 4 << 20 {
            self.frames.shrink_to(1 << 20);
        }
        self.sent = 0;
    }

    pub(super) async fn send(&mut self) -> Result<(), LogError> {
        let fail = |message: String| LogError::Send {
            sink: self.name.clone(),
            message,
            retryable: true,
        };
        match self.protocol {
            SyslogProtocol::Udp => {
                if self.udp.is_none() {
                    let socket = UdpSocket::bind("0.0.0.0:0")
                        .await
                        .map_err(|e| fail(format!("udp: {e}")))?;
                    socket
                        .connect(&self.address)
                        .await
                        .map_err(|e| fail(format!("udp {}: {e}", self.address)))?;
                    self.udp = Some(socket);
                }
                let Some(socket) = &self.udp else {
                    return Ok(());
                };
                // Resume after the datagrams already sent in an earlier attempt.
                while self.sent < self.messages.len() {
                    let bytes = self.messages[self.sent].as_bytes();
                    let bytes = &bytes[..bytes.len().min(MAX_DATAGRAM)];
                    if let Err(e) = socket.send(bytes).await {
                        self.udp = None;
                        return Err(fail(format!("udp send: {e}")));
                    }
                    self.sent += 1;
                }
                Ok(())
            }
            SyslogProtocol::Tcp | SyslogProtocol::Tls => {
                if self.conn.is_none() {
                    let stream = tokio::time::timeout(
                        Duration::from_secs(10),
                        TcpStream::connect(&self.address),
                    )
                    .await
                    .map_err(|_| fail(format!("tcp {}: connect timed out", self.address)))?
                    .map_err(|e| fail(format!("tcp {}: {e}", self.address)))?;
                    let _ = stream.set_nodelay(true);
                    let conn = match &self.tls {
                        None => Conn::Tcp(stream),
                        Some(tls) => {
                            let handshake = tls.connector.connect(tls.server_name.clone(), stream);
                            let stream = tokio::time::timeout(Duration::from_secs(10), handshake)
                                .await
                                .map_err(|_| {
                                    fail(format!("tls {}: handshake timed out", self.address))
                                })?
                                .map_err(|e| {
                                    fail(format!(
                                        "tls {}: handshake failed (server name {:?}): {e}",
                                        self.address,
                                        server_name_text(&tls.server_name)
                                    ))
                                })?;
                            Conn::Tls(Box::new(stream))
                        }
                    };
                    self.conn = Some(conn);
                }
                let Some(conn) = &mut self.conn else {
                    return Ok(());
                };
                let written = tokio::time::timeout(
                    Duration::from_secs(30),
                    conn.write_all_flush(&self.frames),
                )
                .await;
                let what = if self.tls.is_some() { "tls" } else { "tcp" };
                match written {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        self.conn = None;
                        Err(fail(format!("{what} write: {e}")))
                    }
                    Err(_) => {
                        self.conn = None;
                        Err(fail(format!("{what} write timed out")))
                    }
                }
            }
        }
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(d) => d.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn event(message: &str, level: Option<&str>) -> Event {
        let mut fields = crate::logs::Fields::new();
        fields.insert("message".into(), message.into());
        if let Some(level) = level {
            fields.insert("level".into(), level.into());
        }
        Event {
            source: "s".into(),
            raw: message.into(),
            fields,
        }
    }

    #[test]
    fn formats() {
        let at = chrono::Utc.with_ymd_and_hms(2024, 5, 1, 3, 4, 5).unwrap();
        let e = event("disk full", Some("error"));
        assert_eq!(
            rfc5424(
                &e,
                facility_code("local0").unwrap(),
                "driftless",
                "web1",
                at
            ),
            "<131>1 2024-05-01T03:04:05.000000Z web1 driftless - - - disk full"
        );
        assert_eq!(
            rfc3164(
                &event("hi", None),
                facility_code("user").unwrap(),
                "app",
                "web1",
                at
            ),
            "<14>May  1 03:04:05 web1 app: hi"
        );
        assert_eq!(facility_code("nope"), None);
        assert_eq!(severity(&event("x", Some("WARN"))), 4);
        assert_eq!(severity(&event("x", Some("bogus"))), 6);
        assert_eq!(severity(&event("x", None)), 6);
        assert_eq!(host_of("logs.example.com:6514"), "logs.example.com");
        assert_eq!(host_of("[::1]:6514"), "::1");
        assert_eq!(host_of("10.0.0.5:514"), "10.0.0.5");
    }
}
