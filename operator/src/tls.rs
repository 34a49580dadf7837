//! TLS for the operator's HTTP server (`--tls-cert`, `--tls-key`): a listener that completes
//! handshakes off the accept loop, so a slow or silent client holds only its own connection.
//!
//! Guarantees:
//! - A certificate or key that cannot be used stops the operator at start-up with the file and
//!   the reason; the server never falls back to plain HTTP.
//! - The files are checked every [`RELOAD_CHECK`] and read again when they changed (a Secret
//!   mounted as a volume is updated in place by the kubelet, e.g. after cert-manager renewed
//!   it); a renewed pair that cannot be used is reported and the previous one kept.
//! - TLS 1.2 and 1.3 only (rustls' safe defaults), HTTP/1.1.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// How often the certificate and key files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(30);
/// Longest a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_error(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Tls {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The server configuration of a PEM certificate chain and a PEM private key (PKCS#8, PKCS#1
/// or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, Error> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| tls_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error(cert, e))?;
    if certs.is_empty() {
        return Err(tls_error(cert, "no PEM CERTIFICATE block"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        tls_error(
            key,
            format!("expected a PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(cert, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_error(key, format!("does not match the certificate: {e}")))?;
    let mut config = config;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn modified(paths: &[&Path]) -> Vec<Option<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A TCP listener whose connections are TLS streams, for `axum::serve`.
pub struct TlsListener {
    connections: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Serves TLS on `tcp` with the certificate and key in these files, checked for changes
    /// every `reload_check` ([`RELOAD_CHECK`] in the operator).
    pub fn new(
        tcp: TcpListener,
        cert: PathBuf,
        key: PathBuf,
        reload_check: Duration,
    ) -> Result<Self, Error> {
        let config = server_config(&cert, &key)?;
        let local = tcp.local_addr().map_err(|e| tls_error(&cert, e))?;
        let (tx, connections) = mpsc::channel(64);
        tokio::spawn(accept_loop(tcp, config, (cert, key), reload_check, tx));
        Ok(Self { connections, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    config: Arc<ServerConfig>,
    (cert, key): (PathBuf, PathBuf),
    reload_check: Duration,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut acceptor = TlsAcceptor::from(config);
    let mut stamps = modified(&[&cert, &key]);
    let mut check = tokio::time::interval(reload_check);
    loop {
        tokio::select! {
            _ = check.tick() => {
                let now = modified(&[&cert, &key]);
                if now != stamps {
                    stamps = now;
                    match server_config(&cert, &key) {
                        Ok(config) => {
                            acceptor = TlsAcceptor::from(config);
                            tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                        }
                        Err(err) => tracing::warn!(error = %err, "TLS certificate not reloaded; keeping the previous one"),
                    }
                }
            }
            accepted = tcp.accept() => match accepted {
                Ok((stream, peer)) => {
                    let (acceptor, tx) = (acceptor.clone(), tx.clone());
                    tokio::spawn(async move {
                        let _ = stream.set_nodelay(true);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => {
                                let _ = tx.send((tls, peer)).await;
                            }
                            Ok(Err(err)) => tracing::debug!(%peer, error = %err, "TLS handshake failed"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
                // Out of file descriptors and the like: give the process a moment.
                Err(err) => {
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = tx.closed() => return,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            // The accept loop ended with the runtime: nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ClientAddr;
    use axum::extract::ConnectInfo;
    use axum::routing::get;
    use std::process::Command;

    /// A self-signed certificate for `localhost` and 127.0.0.1, made by the openssl command.
    fn self_signed(dir: &Path, cn: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        let out = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
            ])
            .arg("-subj")
            .arg(format!("/CN={cn}"))
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("the openssl command");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (cert, key)
    }

    fn client(cert: &Path, addr: SocketAddr) -> reqwest::Client {
        let pem = std::fs::read(cert).unwrap();
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .tls_built_in_root_certs(false)
            .resolve("localhost", addr)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn serves_https_with_the_client_address_and_reloads_renewed_files() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "first");
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener =
            TlsListener::new(tcp, cert.clone(), key.clone(), Duration::from_millis(100)).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let app = axum::Router::new()
            .route(
                "/who",
                get(
                    |ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>| async move {
                        peer.ip().to_string()
                    },
                ),
            )
            .into_make_service_with_connect_info::<ClientAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("https://localhost:{}/who", addr.port());
        let r = client(&cert, addr).get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "127.0.0.1");
        // Plain HTTP gets no answer.
        let plain = reqwest::get(format!("http://127.0.0.1:{}/who", addr.port())).await;
        assert!(plain.is_err(), "{plain:?}");
        // A client that trusts another certificate refuses the server's.
        let other = tempfile::tempdir().unwrap();
        let (other_cert, _) = self_signed(other.path(), "other");
        assert!(client(&other_cert, addr).get(&url).send().await.is_err());
        // Renewed in place: the new pair is served once it is noticed.
        std::thread::sleep(Duration::from_millis(20));
        let (renewed, _) = self_signed(dir.path(), "renewed");
        let mut served = false;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if client(&renewed, addr).get(&url).send().await.is_ok() {
                served = true;
                break;
            }
        }
        assert!(served, "the renewed certificate was never served");
    }

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed(dir.path(), "x");
        let missing = dir.path().join("missing.key");
        let err = server_config(&cert, &missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("TLS: {}: ", missing.display())),
            "{err}"
        );
        let err = server_config(&key, &key).unwrap_err().to_string();
        assert!(err.contains("no PEM CERTIFICATE block"), "{err}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = self_signed(other.path(), "y");
        let err = server_config(&cert, &other_key).unwrap_err().to_string();
        assert!(err.contains("does not match the certificate"), "{err}");
    }
}
