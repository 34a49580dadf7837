//! Cloning the DriftScan's repository with git2, at the run's commit.
//!
//! Credentials (from the Secret named in `spec.source.git.credentials`):
//! - `https`: keys `token` and optional `username` (default `git`), sent as HTTP basic auth;
//! - `ssh`: keys `ssh-privatekey` (PEM/OpenSSH) and `known_hosts`; the server's host key must
//!   be listed in `known_hosts` (plain host patterns, `[host]:port`, `*`/`?` wildcards, `!`
//!   negations, and hashed `|1|salt|hmac` entries as written by `ssh-keygen -H`) or the clone
//!   fails with an error naming the host and the key's SHA256 fingerprint. As in OpenSSH, a key
//!   on a matching `@revoked` line is refused even where another line lists it, and
//!   `@cert-authority` lines (keys that sign host certificates) never match a host key;
//! - `githubApp`: key `private-key`; an RS256 JWT for the App is exchanged for an installation
//!   token at `POST {apiUrl}/app/installations/{id}/access_tokens`, then used as `https` with
//!   user `x-access-token`; a process reuses the token until five minutes before it expires
//!   ([`github_app_token`]).

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use driftless_crds::secret::SecretString;
use git2::{
    build::RepoBuilder, CertificateCheckStatus, Cred, FetchOptions, Oid, RemoteCallbacks,
    Repository,
};

/// Why a clone failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// The ref or commit does not exist.
    #[error("git: {0} not found in the repository")]
    NotFound(String),
    /// A GitHub App token could not be minted.
    #[error("GitHub App: {0}")]
    GithubApp(String),
}

/// Credentials resolved from the Secret.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// None (public repositories, `file://`).
    #[default]
    None,
    /// HTTP basic auth with a token.
    Https {
        /// User name (`git`, or `x-access-token` for GitHub App tokens).
        username: String,
        /// The token.
        token: SecretString,
    },
    /// SSH private key, with the accepted host keys.
    Ssh {
        /// The private key (PEM or OpenSSH format).
        private_key: SecretString,
        /// `known_hosts` text.
        known_hosts: String,
    },
}

impl Credentials {
    /// The secret values, for redaction.
    pub fn secrets(&self) -> Vec<SecretString> {
        match self {
            Credentials::None => Vec::new(),
            Credentials::Https { token, .. } => vec![token.clone()],
            Credentials::Ssh { private_key, .. } => vec![private_key.clone()],
        }
    }
}

/// `host` and `port` of an SSH URL (`ssh://user@host:port/path`, `user@host:path`).
pub fn ssh_host(url: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = url.strip_prefix("ssh://") {
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit('@').next()?;
        return match hostport.rsplit_once(':') {
            Some((h, p)) => Some((h.to_owned(), p.parse().ok())),
            None => Some((hostport.to_owned(), None)),
        };
    }
    if url.contains("://") {
        return None;
    }
    let (before, _) = url.split_once(':')?;
    Some((before.rsplit('@').next()?.to_owned(), None))
}

fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// Whether a hashed `known_hosts` host field (`|1|base64(salt)|base64(HMAC-SHA1(salt, name))`,
/// as written by `ssh-keygen -H` or `HashKnownHosts yes`) is `name`. Malformed fields match
/// nothing.
pub fn hashed_host_matches(field: &str, name: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(rest) = field.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// The name `known_hosts` lists a server under: `host`, or `[host]:port` for a port other
/// than 22.
pub fn known_hosts_name(host: &str, port: Option<u16>) -> String {
    match port {
        Some(p) if p != 22 => format!("[{host}]:{p}"),
        _ => host.to_owned(),
    }
}

/// `SHA256:...` fingerprint of a raw host key blob, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key);
    format!(
        "SHA256:{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// What `known_hosts` says of a host key, read as OpenSSH reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A plain line whose hosts match lists the key.
    Known,
    /// A `@revoked` line whose hosts match lists the key: refused, even where a plain line
    /// also lists it.
    Revoked,
    /// No plain line for the host lists the key. `@cert-authority` lines name keys that sign
    /// host certificates; such a key presented as the host's own key is not known.
    Unknown,
}

/// Whether the host field of a `known_hosts` line (patterns separated by commas, or one hashed
/// `|1|` entry) matches `name`.
fn hosts_match(hosts: &str, name: &str) -> bool {
    let mut matched = false;
    if hosts.starts_with("|1|") {
        matched = hashed_host_matches(hosts, name);
    }
    for pattern in hosts.split(',').filter(|p| !p.starts_with('|')) {
        if let Some(neg) = pattern.strip_prefix('!') {
            if glob_match(neg, name) {
                return false;
            }
        } else if glob_match(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// What `known_hosts` says of host key `key` (the raw key blob) for `host`/`port`. Pure: the
/// decision used by the SSH certificate check.
pub fn host_key_status(
    known_hosts: &str,
    host: &str,
    port: Option<u16>,
    key: &[u8],
) -> HostKeyStatus {
    let name = known_hosts_name(host, port);
    let mut known = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (marker, line) = match line.strip_prefix('@') {
            Some(rest) => match rest.split_once(char::is_whitespace) {
                Some((marker, rest)) => (Some(marker), rest.trim_start()),
                None => continue,
            },
            None => (None, line),
        };
        let mut fields = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(blob)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let same_key = base64::engine::general_purpose::STANDARD
            .decode(blob)
            .is_ok_and(|decoded| decoded == key);
        if !same_key || !hosts_match(hosts, &name) {
            continue;
        }
        match marker {
            None => known = true,
            Some("revoked") => return HostKeyStatus::Revoked,
            // `cert-authority`, and markers OpenSSH does not know (it skips those lines).
            Some(_) => {}
        }
    }
    if known {
        HostKeyStatus::Known
    } else {
        HostKeyStatus::Unknown
    }
}

/// Whether `known_hosts` accepts host key `key` (the raw key blob) for `host`/`port`.
pub fn known_host(known_hosts: &str, host: &str, port: Option<u16>, key: &[u8]) -> bool {
    host_key_status(known_hosts, host, port, key) == HostKeyStatus::Known
}

/// How long a clone may take before it is abandoned (the Job's own deadline is one hour).
pub const CLONE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Where a refused host key leaves its message: libgit2 replaces the message of a refused
/// host key with a generic one ("invalid or unknown remote ssh hostkey"); [`explain`] puts
/// the precise one back.
pub type Refusal = Rc<RefCell<Option<String>>>;

/// `err`, or the host-key refusal left in `refusal` by [`fetch_options`]'s certificate check.
pub fn explain(refusal: &Refusal, err: git2::Error) -> git2::Error {
    match refusal.borrow_mut().take() {
        Some(message) => git2::Error::from_str(&message),
        None => err,
    }
}

/// Clones `url` into `dest` and checks out `commit` (when given) or `git_ref` (`HEAD`, a
/// branch, a tag or a commit). Returns the commit checked out. Gives up after
/// [`CLONE_TIMEOUT`].
pub fn clone(
    url: &str,
    git_ref: &str,
    commit: Option<&str>,
    creds: &Credentials,
    dest: &Path,
) -> Result<String, GitError> {
    let deadline = Instant::now() + CLONE_TIMEOUT;
    let refusal = Refusal::default();
    let explain = |err: git2::Error| {
        if Instant::now() >= deadline {
            GitError::Git(git2::Error::from_str(&format!(
                "the clone did not finish within {}s",
                CLONE_TIMEOUT.as_secs()
            )))
        } else {
            GitError::Git(explain(&refusal, err))
        }
    };
    let mut builder = RepoBuilder::new();
    builder.fetch_options(fetch_options(url, creds, &refusal, deadline));
    let repo = builder.clone(url, dest).map_err(explain)?;
    let oid = match commit {
        Some(sha) => {
            let oid =
                Oid::from_str(sha).map_err(|_| GitError::NotFound(format!("commit {sha}")))?;
            if repo.find_commit(oid).is_err() {
                // Not reachable from a branch: fetch it directly (servers allowing it).
                let mut remote = repo.find_remote("origin")?;
                remote
                    .fetch(
                        &[sha],
                        Some(&mut fetch_options(url, creds, &refusal, deadline)),
                        None,
                    )
                    .map_err(explain)?;
            }
            repo.find_commit(oid)
                .map_err(|_| GitError::NotFound(format!("commit {sha}")))?
                .id()
        }
        None => resolve(&repo, git_ref)?,
    };
    let object = repo.find_object(oid, None)?;
    repo.checkout_tree(&object, Some(git2::build::CheckoutBuilder::new().force()))?;
    repo.set_head_detached(oid)?;
    Ok(oid.to_string())
}

fn resolve(repo: &Repository, git_ref: &str) -> Result<Oid, GitError> {
    let candidates = [
        git_ref.to_owned(),
        format!("refs/remotes/origin/{git_ref}"),
        format!("refs/tags/{git_ref}"),
        format!("origin/{git_ref}"),
    ];
    for c in &candidates {
        if let Ok(obj) = repo.revparse_single(c) {
            if let Ok(commit) = obj.peel_to_commit() {
                return Ok(commit.id());
            }
        }
    }
    Err(GitError::NotFound(format!("ref {git_ref}")))
}

/// Fetch options carrying `creds` (HTTPS user and token; SSH key, the server's host key checked
/// against `known_hosts`, a refusal's message left in `refusal`) and aborting the transfer at
/// `deadline`. Used by the scan runner's clone and the operator's repository cache alike.
pub fn fetch_options<'a>(
    url: &str,
    creds: &'a Credentials,
    refusal: &Refusal,
    deadline: Instant,
) -> FetchOptions<'a> {
    let mut callbacks = RemoteCallbacks::new();
    let attempts = Cell::new(0u32);
    callbacks.credentials(move |_url, username, allowed| {
        attempts.set(attempts.get() + 1);
        if attempts.get() > 2 {
            return Err(git2::Error::from_str(
                "authentication failed (credentials refused)",
            ));
        }
        match creds {
            Credentials::Https { username, token } if allowed.is_user_pass_plaintext() => {
                Cred::userpass_plaintext(username, token.expose())
            }
            Credentials::Ssh { private_key, .. } if allowed.is_ssh_key() => {
                Cred::ssh_key_from_memory(
                    username.unwrap_or("git"),
                    None,
                    private_key.expose(),
                    None,
                )
            }
            Credentials::Ssh { .. } if allowed.is_username() => {
                Cred::username(username.unwrap_or("git"))
            }
            _ => Err(git2::Error::from_str(
                "the repository asks for credentials the DriftScan does not provide",
            )),
        }
    });
    if let Credentials::Ssh { known_hosts, .. } = creds {
        let target = ssh_host(url);
        let refusal = Rc::clone(refusal);
        callbacks.certificate_check(move |cert, _host| {
            let Some(hostkey) = cert.as_hostkey() else {
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let (Some((host, port)), Some(key)) = (&target, hostkey.hostkey()) else {
                return Err(git2::Error::from_str(
                    "no host key to check against known_hosts",
                ));
            };
            let status = host_key_status(known_hosts, host, *port, key);
            if status == HostKeyStatus::Known {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                let kind = hostkey
                    .hostkey_type()
                    .map(|t| t.name())
                    .unwrap_or("unknown type");
                let why = if status == HostKeyStatus::Revoked {
                    "is marked @revoked in"
                } else {
                    "is not in"
                };
                let message = format!(
                    "host key of {} ({kind} {}) {why} the known_hosts of the DriftScan's \
                     credentials; refusing to connect",
                    known_hosts_name(host, *port),
                    fingerprint(key)
                );
                *refusal.borrow_mut() = Some(message.clone());
                Err(git2::Error::from_str(&message))
            }
        });
    }
    callbacks.transfer_progress(move |_| Instant::now() < deadline);
    callbacks.sideband_progress(move |_| Instant::now() < deadline);
    let mut options = FetchOptions::new();
    options.remote_callbacks(callbacks);
    options
}

// ---- GitHub App --------------------------------------------------------------------------

/// Decodes a PEM block's base64 body.
fn pem_der(pem: &str) -> Option<(String, Vec<u8>)> {
    let begin = pem.find("-----BEGIN ")?;
    let rest = &pem[begin + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end = rest.find("-----END ")?;
    let body: String = rest[body_start..end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .ok()?;
    Some((label, der))
}

/// An RS256 JWT for GitHub App `app_id`, issued at `now` (Unix seconds), valid 9 minutes.
///
/// The key may be PKCS#1 (`RSA PRIVATE KEY`, as GitHub hands out App keys) or PKCS#8
/// (`PRIVATE KEY`); jsonwebtoken signs with the PKCS#1 DER, so a PKCS#8 key is unwrapped first.
pub fn github_app_jwt(private_key_pem: &str, app_id: i64, now: i64) -> Result<String, GitError> {
    #[derive(serde::Serialize)]
    struct Claims {
        iat: i64,
        exp: i64,
        iss: String,
    }
    let not_rsa = |why: &str| GitError::GithubApp(format!("private-key is not an RSA key: {why}"));
    let (label, der) = pem_der(private_key_pem)
        .ok_or_else(|| GitError::GithubApp("private-key is not a PEM block".into()))?;
    let pkcs1 = match label.as_str() {
        "RSA PRIVATE KEY" => der.as_slice(),
        _ => pkcs8_rsa_key(&der).map_err(not_rsa)?,
    };
    let claims = Claims {
        iat: now - 60,
        exp: now + 540,
        iss: app_id.to_string(),
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_der(pkcs1),
    )
    .map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidRsaKey(why) => not_rsa(why),
        _ => GitError::GithubApp("signing the JWT failed".into()),
    })
}

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208): `SEQUENCE {
/// version, SEQUENCE { rsaEncryption OID, ... }, OCTET STRING key, ... }`. The errors are
/// ring's words for the same cases.
fn pkcs8_rsa_key(der: &[u8]) -> Result<&[u8], &'static str> {
    const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (info, _) = der_element(der, 0x30).ok_or("InvalidEncoding")?;
    let (_version, rest) = der_element(info, 0x02).ok_or("InvalidEncoding")?;
    let (algorithm, rest) = der_element(rest, 0x30).ok_or("InvalidEncoding")?;
    let (oid, _) = der_element(algorithm, 0x06).ok_or("InvalidEncoding")?;
    if oid != RSA_ENCRYPTION {
        return Err("WrongAlgorithm");
    }
    let (key, _) = der_element(rest, 0x04).ok_or("InvalidEncoding")?;
    Ok(key)
}

/// One DER element with tag `tag` at the start of `input`: its contents and what follows.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len, mut rest) = rest.split_first()?;
    let len = if len < 0x80 {
        usize::from(len)
    } else {
        let count = usize::from(len & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b))
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// An installation token and when GitHub says it expires (`None`: unknown, not reused).
struct Minted {
    token: SecretString,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Exchanges an App JWT for an installation token.
async fn mint(api_url: &str, installation_id: i64, jwt: &str) -> Result<Minted, GitError> {
    #[derive(serde::Deserialize)]
    struct TokenResponse {
        token: String,
        #[serde(default)]
        expires_at: Option<String>,
    }
    let url = format!(
        "{}/app/installations/{installation_id}/access_tokens",
        api_url.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(jwt)
        .header("Accept", "application/vnd.github+json")
        .header("X-GitHub-Api-Version", "2022-11-28")
        .header("User-Agent", "driftless-scan-runner")
        .send()
        .await
        .map_err(|e| GitError::GithubApp(format!("POST {url}: {e}")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(GitError::GithubApp(format!("POST {url}: HTTP {status}")));
    }
    let body: TokenResponse = response
        .json()
        .await
        .map_err(|e| GitError::GithubApp(format!("POST {url}: {e}")))?;
    Ok(Minted {
        token: SecretString::new(body.token),
        expires_at: body
            .expires_at
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
    })
}

/// A cached installation token is used while it has at least this long left.
pub const TOKEN_REUSE_MARGIN: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

/// Whether a token expiring at `expires_at` may still be handed out at `now`.
fn reusable(
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    expires_at.is_some_and(|at| at - now >= TOKEN_REUSE_MARGIN)
}

/// Installation tokens by (API URL, App id, installation id, SHA-256 of the private key).
type TokenKey = (String, i64, i64, Vec<u8>);

/// An installation token for GitHub App `app_id`: minted (JWT, then
/// `POST …/access_tokens`) on first use and reused by later fetches of this process until
/// [`TOKEN_REUSE_MARGIN`] before it expires (GitHub issues them for an hour), so the operator
/// does not mint one per fetch. A different private key mints a new token.
pub async fn github_app_token(
    api_url: &str,
    app_id: i64,
    installation_id: i64,
    private_key_pem: &str,
) -> Result<SecretString, GitError> {
    static TOKENS: std::sync::Mutex<std::collections::BTreeMap<TokenKey, Minted>> =
        std::sync::Mutex::new(std::collections::BTreeMap::new());
    let key: TokenKey = (
        api_url.trim_end_matches('/').to_owned(),
        app_id,
        installation_id,
        ring::digest::digest(&ring::digest::SHA256, private_key_pem.as_bytes())
            .as_ref()
            .to_vec(),
    );
    let now = chrono::Utc::now();
    {
        let mut tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
        tokens.retain(|_, m| reusable(m.expires_at, now));
        if let Some(m) = tokens.get(&key) {
            return Ok(m.token.clone());
        }
    }
    let jwt = github_app_jwt(private_key_pem, app_id, now.timestamp())?;
    let minted = mint(api_url, installation_id, &jwt).await?;
    let token = minted.token.clone();
    if reusable(minted.expires_at, now) {
        TOKENS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, minted);
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the openssl CLI; `None` when it is not installed.
    fn openssl(args: &[&str], dir: &Path) -> Option<std::process::Output> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()?;
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(out)
    }

    #[derive(serde::Deserialize)]
    struct Claims {
        iat: i64,
        exp: i64,
        iss: String,
    }

    /// The JWT verifies with the key's public half (RS256) for PKCS#1 and PKCS#8 keys, and not
    /// with another key's.
    #[test]
    fn github_app_jwt_verifies_with_the_public_key() {
        use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let gen = [
            (
                "pkcs1.pem",
                vec!["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"],
            ),
            (
                "pkcs8.pem",
                vec!["genpkey", "-algorithm", "RSA", "-out", "pkcs8.pem"],
            ),
        ];
        let mut keys = Vec::new();
        for (file, args) in gen {
            if openssl(&args, d).is_none() {
                let line = "skipped: github_app_jwt_verifies_with_the_public_key: no openssl CLI\n";
                let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
                return;
            }
            let public = openssl(
                &["rsa", "-in", file, "-RSAPublicKey_out", "-outform", "DER"],
                d,
            )
            .unwrap()
            .stdout;
            keys.push((std::fs::read_to_string(d.join(file)).unwrap(), public));
        }
        assert!(keys[0].0.contains("BEGIN RSA PRIVATE KEY"));
        assert!(keys[1].0.contains("BEGIN PRIVATE KEY"));
        let now = chrono::Utc::now().timestamp();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&["4242"]);
        validation.set_required_spec_claims(&["iat", "exp", "iss"]);
        for (i, (pem, public)) in keys.iter().enumerate() {
            let jwt = github_app_jwt(pem, 4242, now).unwrap();
            let got = decode::<Claims>(&jwt, &DecodingKey::from_rsa_der(public), &validation)
                .unwrap_or_else(|e| panic!("key {i}: {e}"));
            assert_eq!(got.header.alg, Algorithm::RS256);
            assert_eq!(
                (got.claims.iat, got.claims.exp, got.claims.iss.as_str()),
                (now - 60, now + 540, "4242")
            );
            let other = &keys[1 - i].1;
            assert!(
                decode::<Claims>(&jwt, &DecodingKey::from_rsa_der(other), &validation).is_err(),
                "key {i}: verified with the other key"
            );
        }
    }

    #[test]
    fn github_app_jwt_refuses_what_is_not_an_rsa_key() {
        let err = |pem: &str| github_app_jwt(pem, 1, 0).unwrap_err().to_string();
        assert_eq!(
            err("not-a-key"),
            "GitHub App: private-key is not a PEM block"
        );
        let garbage = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(
            err(garbage).starts_with("GitHub App: private-key is not an RSA key: "),
            "{}",
            err(garbage)
        );
        let garbage = garbage.replace("RSA PRIVATE", "PRIVATE");
        assert_eq!(
            err(&garbage),
            "GitHub App: private-key is not an RSA key: InvalidEncoding"
        );
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            "ec.pem",
        ];
        if openssl(&args, dir.path()).is_none() {
            let line =
                "skipped: github_app_jwt_refuses_what_is_not_an_rsa_key (EC key): no openssl CLI\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
            return;
        }
        let ec = std::fs::read_to_string(dir.path().join("ec.pem")).unwrap();
        assert_eq!(
            err(&ec),
            "GitHub App: private-key is not an RSA key: WrongAlgorithm"
        );
    }

    #[test]
    fn tokens_are_reused_until_five_minutes_before_expiry() {
        let now = chrono::Utc::now();
        let at = |minutes: i64| Some(now + chrono::TimeDelta::minutes(minutes));
        assert!(reusable(at(60), now));
        assert!(reusable(at(5), now));
        assert!(!reusable(at(4), now));
        assert!(!reusable(at(-1), now));
        assert!(!reusable(None, now), "no expiry given: never reused");
    }

    #[test]
    fn ssh_hosts() {
        assert_eq!(
            ssh_host("git@github.com:org/repo.git"),
            Some(("github.com".into(), None))
        );
        assert_eq!(
            ssh_host("ssh://git@example.com:2222/org/repo.git"),
            Some(("example.com".into(), Some(2222)))
        );
        assert_eq!(ssh_host("https://example.com/x.git"), None);
    }

    #[test]
    fn known_hosts_matching() {
        let key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let kh = format!("# comment\nother.example ssh-ed25519 AAAA\ngithub.com,*.corp.example ssh-ed25519 {b64}\n[git.local]:2222 ssh-ed25519 {b64}\n");
        assert!(known_host(&kh, "github.com", None, key));
        assert!(known_host(&kh, "git.corp.example", Some(22), key));
        assert!(known_host(&kh, "git.local", Some(2222), key));
        assert!(!known_host(&kh, "git.local", None, key));
        assert!(!known_host(&kh, "github.com", None, b"other key"));
        assert!(!known_host(&kh, "evil.com", None, key));
        let neg = format!("*,!evil.com ssh-ed25519 {b64}\n");
        assert!(!known_host(&neg, "evil.com", None, key));
        assert!(known_host(&neg, "good.com", None, key));
    }

    #[test]
    fn revoked_keys_are_refused_and_authorities_are_not_host_keys() {
        let key = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";
        let other = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20ZYXWVUTSRQPONMLKJIHGFEDCBA012345";
        let b64 = base64::engine::general_purpose::STANDARD.encode(key);
        let other_b64 = base64::engine::general_purpose::STANDARD.encode(other);
        let status = |kh: &str, k: &[u8]| host_key_status(kh, "git.example", None, k);
        // Revoked wins over a plain line listing the same key, in either order.
        let plain = format!("git.example ssh-ed25519 {b64}\n");
        let revoked = format!("@revoked * ssh-ed25519 {b64}\n");
        assert_eq!(status(&plain, key), HostKeyStatus::Known);
        assert_eq!(
            status(&format!("{plain}{revoked}"), key),
            HostKeyStatus::Revoked
        );
        assert_eq!(
            status(&format!("{revoked}{plain}"), key),
            HostKeyStatus::Revoked
        );
        assert!(!known_host(
            &format!("{plain}{revoked}"),
            "git.example",
            None,
            key
        ));
        // Only for hosts the line matches, and only that key.
        let elsewhere = format!("@revoked other.example ssh-ed25519 {b64}\n");
        assert_eq!(
            status(&format!("{plain}{elsewhere}"), key),
            HostKeyStatus::Known
        );
        let both = format!("{plain}git.example ssh-ed25519 {other_b64}\n{revoked}");
        assert_eq!(status(&both, other), HostKeyStatus::Known);
        // A CA key is not a host key: presented as one, it is unknown.
        let ca = format!("@cert-authority *.example ssh-ed25519 {b64}\n");
        assert_eq!(status(&ca, key), HostKeyStatus::Unknown);
        assert!(!known_host(&ca, "git.example", None, key));
        assert_eq!(status(&format!("{ca}{plain}"), key), HostKeyStatus::Known);
        // Unknown markers and a marker alone are skipped, as OpenSSH does.
        assert_eq!(
            status(
                &format!("@future git.example ssh-ed25519 {b64}\n@revoked\n"),
                key
            ),
            HostKeyStatus::Unknown
        );
    }

    /// github.com's ed25519 host key, as `ssh-keyscan` prints it.
    const GITHUB_KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn hashed_entries() {
        // Written by `ssh-keygen -H` (OpenSSH 9.2p1) from the lines `github.com KEY` and
        // `[127.0.0.1]:2222 KEY`.
        let key = base64::engine::general_purpose::STANDARD
            .decode(GITHUB_KEY)
            .unwrap();
        let gh = "|1|YkvMdSNaxshzHqKHBt7uzOBo900=|p5h4rVohBODcse1G1Ft50LZ5b5s=";
        let local = "|1|VltdwviCjmVx4hFRu4s3Px9aqlc=|xL2fM/+PIHigiQO2lpH3FlnxgrE=";
        assert!(hashed_host_matches(gh, "github.com"));
        assert!(!hashed_host_matches(gh, "gitlab.com"));
        assert!(hashed_host_matches(local, "[127.0.0.1]:2222"));
        assert!(!hashed_host_matches(local, "127.0.0.1"));
        assert!(!hashed_host_matches("|1|bad|", "github.com"));
        assert!(!hashed_host_matches("|2|x|y", "github.com"));
        assert!(!hashed_host_matches(
            "|1|YkvMdSNaxshzHqKHBt7uzOBo900=",
            "github.com"
        ));
        let kh = format!("{gh} ssh-ed25519 {GITHUB_KEY}\n{local} ssh-ed25519 {GITHUB_KEY}\n");
        assert!(known_host(&kh, "github.com", None, &key));
        assert!(known_host(&kh, "github.com", Some(22), &key));
        assert!(known_host(&kh, "127.0.0.1", Some(2222), &key));
        assert!(!known_host(&kh, "127.0.0.1", Some(2223), &key));
        assert!(!known_host(&kh, "127.0.0.1", None, &key));
        assert!(!known_host(&kh, "github.com", None, b"other"));
        assert!(!known_host(&kh, "example.com", None, &key));
    }

    #[test]
    fn fingerprints() {
        // What `ssh-keygen -lf` prints for github.com's ed25519 key.
        let key = base64::engine::general_purpose::STANDARD
            .decode(GITHUB_KEY)
            .unwrap();
        assert_eq!(
            fingerprint(&key),
            "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU"
        );
    }
}
