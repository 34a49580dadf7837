//! The `syslog` sink: RFC 5424 or RFC 3164 messages over UDP (one datagram each, no
//! acknowledgement) or TCP with octet-counted framing (RFC 6587). A TCP batch is acknowledged
//! once written to the socket and flushed; a failed write closes the connection, and the batch
//! is sent again on a new one.

use std::time::Duration;

use driftless_crds::log_pipeline::{SyslogFormat, SyslogProtocol, SyslogSink as SyslogSinkConfig};
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};

use crate::logs::parsers::syslog::FACILITIES;
use crate::logs::{Event, LogError};

/// Largest UDP message; longer ones are cut.
const MAX_DATAGRAM: usize = 65_000;

/// The facility number of a name.
pub fn facility_code(name: &str) -> Option<u8> {
    FACILITIES.iter().position(|f| *f == name).map(|i| i as u8)
}

/// The severity of an event from its `severity` or `level` field; `info` when absent.
pub fn severity(event: &Event) -> u8 {
    let word = event
        .str_field("severity")
        .or_else(|| event.str_field("level"))
        .unwrap_or("info")
        .to_ascii_lowercase();
    match word.as_str() {
        "emerg" | "emergency" | "panic" => 0,
        "alert" => 1,
        "crit" | "critical" | "fatal" => 2,
        "err" | "error" => 3,
        "warning" | "warn" => 4,
        "notice" => 5,
        "debug" | "trace" => 7,
        _ => 6,
    }
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

/// An RFC 5424 message.
pub fn rfc5424(
    event: &Event,
    facility: u8,
    app_name: &str,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let pri = facility as u16 * 8 + severity(event) as u16;
    format!(
        "<{pri}>1 {} {host} {} - - - {}",
        now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        app(event, app_name),
        message(event)
    )
}

/// An RFC 3164 message.
pub fn rfc3164(
    event: &Event,
    facility: u8,
    app_name: &str,
    host: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let pri = facility as u16 * 8 + severity(event) as u16;
    format!(
        "<{pri}>{} {host} {}: {}",
        now.format("%b %e %H:%M:%S"),
        app(event, app_name),
        message(event)
    )
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
    messages: Vec<String>,
    sent: usize,
    tcp: Option<TcpStream>,
    udp: Option<UdpSocket>,
}

impl SyslogSink {
    /// A sink from its configuration.
    pub fn new(name: &str, config: &SyslogSinkConfig) -> Result<Self, LogError> {
        let facility = facility_code(&config.facility).ok_or_else(|| {
            LogError::Config(format!(
                "sink {name}: facility {:?} is not a syslog facility",
                config.facility
            ))
        })?;
        if config.protocol == SyslogProtocol::Tls {
            return Err(LogError::Config(format!(
                "sink {name}: protocol tls is not supported by this agent build yet; use tcp"
            )));
        }
        Ok(Self {
            name: name.to_owned(),
            address: config.address.clone(),
            protocol: config.protocol,
            format: config.format,
            facility,
            app_name: config.app_name.clone(),
            host: super::node_name(),
            messages: Vec::new(),
            sent: 0,
            tcp: None,
            udp: None,
        })
    }

    pub(super) fn add(&mut self, event: &Event) {
        let now = chrono::Utc::now();
        let text = match self.format {
            SyslogFormat::Rfc5424 => rfc5424(event, self.facility, &self.app_name, &self.host, now),
            SyslogFormat::Rfc3164 => rfc3164(event, self.facility, &self.app_name, &self.host, now),
        };
        self.messages.push(text);
    }

    pub(super) fn clear(&mut self) {
        self.messages.clear();
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
                if self.tcp.is_none() {
                    let stream = tokio::time::timeout(
                        Duration::from_secs(10),
                        TcpStream::connect(&self.address),
                    )
                    .await
                    .map_err(|_| fail(format!("tcp {}: connect timed out", self.address)))?
                    .map_err(|e| fail(format!("tcp {}: {e}", self.address)))?;
                    let _ = stream.set_nodelay(true);
                    self.tcp = Some(stream);
                }
                let mut frames = Vec::new();
                for message in &self.messages {
                    frames.extend_from_slice(format!("{} {message}", message.len()).as_bytes());
                }
                let Some(stream) = &mut self.tcp else {
                    return Ok(());
                };
                let written = tokio::time::timeout(Duration::from_secs(30), async {
                    stream.write_all(&frames).await?;
                    stream.flush().await
                })
                .await;
                match written {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => {
                        self.tcp = None;
                        Err(fail(format!("tcp write: {e}")))
                    }
                    Err(_) => {
                        self.tcp = None;
                        Err(fail("tcp write timed out".into()))
                    }
                }
            }
        }
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
    }
}
