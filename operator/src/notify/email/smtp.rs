//! A small SMTP submission client (RFC 5321, 3207, 4954, 8314) on tokio and rustls: one
//! message per connection, always encrypted.
//!
//! Guarantees:
//! - Nothing but the TLS handshake goes over a connection before it is encrypted: with
//!   STARTTLS, only the greeting, `EHLO` and `STARTTLS`; a server that does not offer STARTTLS
//!   gets `QUIT` and no message. Bytes the server sent ahead of the TLS handshake are an error
//!   (no command injection across the upgrade).
//! - Credentials go only over TLS (`AUTH PLAIN`, else `AUTH LOGIN`), and never into an error:
//!   server replies are shown with the username and password (plain and base64) redacted.
//! - The message is sent once `MAIL FROM` and every `RCPT TO` are accepted; one refused
//!   recipient fails the attempt before `DATA`, so a retry does not mail the others twice.
//! - The whole session has [`SESSION_TIMEOUT`]; server lines and replies are bounded.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use driftless_crds::secret::{Redactor, SecretString};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Longest a whole SMTP session (connect to `QUIT`) may take.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest server line read (RFC 5321 §4.5.3.1.5 allows 512 octets).
const MAX_LINE: usize = 2048;
/// Most lines of one reply.
const MAX_REPLY_LINES: usize = 100;
/// Longest reply text put into an error.
const MAX_REPLY_TEXT: usize = 200;

/// How the connection is encrypted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// Plain TCP upgraded with `STARTTLS`, which the server must offer (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Implicit,
}

/// `AUTH` credentials.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: SecretString,
}

/// Where and how to submit.
#[derive(Clone, Debug)]
pub struct Server {
    /// Host name or IP address; also the name the certificate must hold.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Encryption.
    pub tls: Tls,
    /// The CAs the server's certificate must chain to.
    pub roots: Arc<RootCertStore>,
    /// Login, if the server wants one.
    pub credentials: Option<Credentials>,
}

/// One reply: its code and the text of all its lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, code and separator removed.
    pub lines: Vec<String>,
}

/// One line of a reply: `(code, last line?, text)`.
pub fn parse_line(line: &str) -> Result<(u16, bool, &str), String> {
    let bytes = line.as_bytes();
    let code_ok = bytes.len() >= 3
        && (b'2'..=b'5').contains(&bytes[0])
        && bytes[1..3].iter().all(u8::is_ascii_digit);
    if !code_ok {
        return Err(format!("not an SMTP reply line: {:?}", cut(line)));
    }
    let code = line[..3].parse::<u16>().map_err(|e| e.to_string())?;
    match bytes.get(3) {
        None => Ok((code, true, "")),
        Some(b' ') => Ok((code, true, &line[4..])),
        Some(b'-') => Ok((code, false, &line[4..])),
        Some(_) => Err(format!("not an SMTP reply line: {:?}", cut(line))),
    }
}

/// What an `EHLO` reply offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extensions {
    /// `STARTTLS`.
    pub starttls: bool,
    /// The `AUTH` mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the lines after the first of an `EHLO` reply (`AUTH=` is the pre-RFC form some
    /// servers still send).
    pub fn parse(reply: &Reply) -> Self {
        let mut out = Self::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => out.starttls = true,
                "AUTH" => out.auth.extend(words.map(str::to_ascii_uppercase)),
                k if k.starts_with("AUTH=") => {
                    out.auth.push(k["AUTH=".len()..].to_owned());
                    out.auth.extend(words.map(str::to_ascii_uppercase));
                }
                _ => {}
            }
        }
        out
    }
}

/// The DATA section of `message` (CRLF line ends): every line that starts with `.` gets one
/// more (RFC 5321 §4.5.2), a missing final CRLF is added, and `.` CRLF ends it.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 64);
    let mut line_start = true;
    for &b in message {
        if line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_REPLY_TEXT {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(MAX_REPLY_TEXT - 1).collect();
        s.push('…');
        s
    }
}

/// The stream under the reader: plain TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

struct Session<'a> {
    io: BufReader<Box<dyn Io>>,
    server: &'a Server,
    redactor: Redactor,
}

impl<'a> Session<'a> {
    /// Connects (and with implicit TLS, completes the handshake); also returns our address.
    async fn open(
        server: &'a Server,
        connector: &TlsConnector,
        name: &ServerName<'static>,
    ) -> Result<(Session<'a>, std::net::SocketAddr), String> {
        let at = format!("SMTP server {}:{}", server.host, server.port);
        let tcp = TcpStream::connect((server.host.as_str(), server.port))
            .await
            .map_err(|e| format!("{at}: cannot connect: {e}"))?;
        let local = tcp.local_addr().map_err(|e| format!("{at}: {e}"))?;
        let io: Box<dyn Io> = match server.tls {
            Tls::StartTls => Box::new(tcp),
            Tls::Implicit => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("{at}: TLS handshake failed: {e}"))?,
            ),
        };
        let redactor = Redactor::new(server.credentials.iter().flat_map(|c| {
            let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
            let (user, password) = (c.username.as_str(), c.password.expose());
            [
                c.password.clone(),
                SecretString::new(b64(password)),
                SecretString::new(b64(&format!("\0{user}\0{password}"))),
            ]
        }));
        let session = Session {
            io: BufReader::new(io),
            server,
            redactor,
        };
        Ok((session, local))
    }

    /// Upgrades the connection with STARTTLS (refused when `ext` does not offer it) and says
    /// EHLO again; returns what the server offers over TLS.
    async fn starttls(
        mut self,
        ext: &Extensions,
        connector: &TlsConnector,
        name: ServerName<'static>,
        helo: &str,
    ) -> Result<(Session<'a>, Extensions), String> {
        let at = self.at();
        if !ext.starttls {
            let _ = self.command("QUIT", "QUIT", &[221]).await;
            return Err(format!(
                "{at} does not offer STARTTLS; not sending in clear text (set tls: tls for a server that takes TLS from the start)"
            ));
        }
        self.command("STARTTLS", "STARTTLS", &[220]).await?;
        if !self.io.buffer().is_empty() {
            return Err(format!(
                "{at} sent data ahead of the TLS handshake; refusing it"
            ));
        }
        let plain = self.io.into_inner();
        let tls = connector
            .connect(name, plain)
            .await
            .map_err(|e| format!("{at}: TLS handshake failed: {e}"))?;
        self.io = BufReader::new(Box::new(tls));
        let ext = self.ehlo(helo).await?;
        Ok((self, ext))
    }

    /// `MAIL FROM`, one `RCPT TO` per recipient, `DATA` and the dot-stuffed message.
    async fn transaction(
        &mut self,
        from: &str,
        to: &[String],
        message: &[u8],
    ) -> Result<(), String> {
        let at = self.at();
        self.command(&format!("MAIL FROM:<{from}>"), "MAIL FROM", &[250])
            .await?;
        for rcpt in to {
            self.command(
                &format!("RCPT TO:<{rcpt}>"),
                &format!("RCPT TO <{rcpt}>"),
                &[250, 251],
            )
            .await?;
        }
        self.command("DATA", "DATA", &[354]).await?;
        let data = dot_stuff(message);
        let writer = self.io.get_mut();
        writer
            .write_all(&data)
            .await
            .map_err(|e| format!("{at}: write failed: {e}"))?;
        writer
            .flush()
            .await
            .map_err(|e| format!("{at}: write failed: {e}"))?;
        let accepted = self.reply().await?;
        if accepted.code != 250 {
            return Err(format!(
                "{at}: the message was answered {}",
                self.describe(&accepted)
            ));
        }
        Ok(())
    }

    fn at(&self) -> String {
        format!("SMTP server {}:{}", self.server.host, self.server.port)
    }

    async fn read_line(&mut self) -> Result<String, String> {
        let at = self.at();
        let mut line = Vec::new();
        loop {
            let buf = self
                .io
                .fill_buf()
                .await
                .map_err(|e| format!("{at}: read failed: {e}"))?;
            if buf.is_empty() {
                return Err(format!("{at} closed the connection"));
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            line.extend_from_slice(&buf[..take]);
            self.io.consume(take);
            if line.len() > MAX_LINE {
                return Err(format!("{at} sent a line over {MAX_LINE} bytes"));
            }
            if done {
                let text = String::from_utf8_lossy(&line);
                return Ok(text.trim_end_matches(['\r', '\n']).to_owned());
            }
        }
    }

    async fn reply(&mut self) -> Result<Reply, String> {
        let mut reply = Reply {
            code: 0,
            lines: Vec::new(),
        };
        loop {
            let line = self.read_line().await?;
            let (code, last, text) =
                parse_line(&line).map_err(|e| format!("{}: {e}", self.at()))?;
            if reply.code != 0 && code != reply.code {
                return Err(format!(
                    "{}: reply codes {} and {code} mixed",
                    self.at(),
                    reply.code
                ));
            }
            reply.code = code;
            reply.lines.push(text.to_owned());
            if last {
                return Ok(reply);
            }
            if reply.lines.len() >= MAX_REPLY_LINES {
                return Err(format!("{}: reply over {MAX_REPLY_LINES} lines", self.at()));
            }
        }
    }

    /// The reply's code and text for an error, with credentials redacted.
    fn describe(&self, reply: &Reply) -> String {
        let text = reply.lines.join(" ");
        format!("{} {}", reply.code, cut(&self.redactor.redact(&text)))
    }

    /// Sends `line` (shown as `what` in errors) and expects a reply in `expect`.
    async fn command(&mut self, line: &str, what: &str, expect: &[u16]) -> Result<Reply, String> {
        self.io
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .map_err(|e| format!("{}: write failed: {e}", self.at()))?;
        self.io
            .get_mut()
            .flush()
            .await
            .map_err(|e| format!("{}: write failed: {e}", self.at()))?;
        let reply = self.reply().await?;
        if expect.contains(&reply.code) {
            Ok(reply)
        } else {
            Err(format!(
                "{}: {what} answered {}",
                self.at(),
                self.describe(&reply)
            ))
        }
    }

    async fn ehlo(&mut self, name: &str) -> Result<Extensions, String> {
        let reply = self
            .command(&format!("EHLO {name}"), "EHLO", &[250])
            .await?;
        Ok(Extensions::parse(&reply))
    }

    async fn authenticate(
        &mut self,
        ext: &Extensions,
        credentials: &Credentials,
    ) -> Result<(), String> {
        let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
        let user = credentials.username.as_str();
        let password = credentials.password.expose();
        if ext.auth.iter().any(|m| m == "PLAIN") {
            let blob = b64(format!("\0{user}\0{password}").as_bytes());
            self.command(&format!("AUTH PLAIN {blob}"), "AUTH PLAIN", &[235])
                .await?;
            return Ok(());
        }
        if ext.auth.iter().any(|m| m == "LOGIN") {
            self.command("AUTH LOGIN", "AUTH LOGIN", &[334]).await?;
            self.command(&b64(user.as_bytes()), "AUTH LOGIN (username)", &[334])
                .await?;
            self.command(&b64(password.as_bytes()), "AUTH LOGIN (password)", &[235])
                .await?;
            return Ok(());
        }
        Err(format!(
            "{} offers no AUTH PLAIN or LOGIN (offered: {})",
            self.at(),
            if ext.auth.is_empty() {
                "none".to_owned()
            } else {
                ext.auth.join(" ")
            }
        ))
    }
}

fn tls_connector(server: &Server) -> Result<(TlsConnector, ServerName<'static>), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(server.roots.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(server.host.clone()).map_err(|_| {
        format!(
            "host {:?} is not a valid DNS name or IP address",
            server.host
        )
    })?;
    Ok((TlsConnector::from(Arc::new(config)), name))
}

/// The `EHLO` argument: the address literal of our end of the connection (RFC 5321 §4.1.3),
/// which needs no host name that might not resolve.
fn ehlo_name(local: std::net::SocketAddr) -> String {
    match local.ip() {
        std::net::IpAddr::V4(ip) => format!("[{ip}]"),
        std::net::IpAddr::V6(ip) => format!("[IPv6:{ip}]"),
    }
}

/// Submits `message` (CRLF lines, not dot-stuffed) from `from` to every address of `to`.
/// Errors name the server and the step, with the server's reply code and text.
pub async fn send(
    server: &Server,
    from: &str,
    to: &[String],
    message: &[u8],
) -> Result<(), String> {
    match tokio::time::timeout(SESSION_TIMEOUT, session(server, from, to, message)).await {
        Ok(result) => result,
        Err(_) => Err(format!(
            "SMTP server {}:{}: no answer within {}s",
            server.host,
            server.port,
            SESSION_TIMEOUT.as_secs()
        )),
    }
}

async fn session(server: &Server, from: &str, to: &[String], message: &[u8]) -> Result<(), String> {
    let (connector, name) = tls_connector(server)?;
    let (mut s, local) = Session::open(server, &connector, &name).await?;
    let greeting = s.reply().await?;
    if greeting.code != 220 {
        return Err(format!("{}: greeting {}", s.at(), s.describe(&greeting)));
    }
    let helo = ehlo_name(local);
    let mut ext = s.ehlo(&helo).await?;
    if server.tls == Tls::StartTls {
        (s, ext) = s.starttls(&ext, &connector, name, &helo).await?;
    }
    if let Some(credentials) = &server.credentials {
        s.authenticate(&ext, credentials).await?;
    }
    s.transaction(from, to, message).await?;
    // Accepted: a failing QUIT changes nothing.
    let _ = s.command("QUIT", "QUIT", &[221]).await;
    Ok(())
}
