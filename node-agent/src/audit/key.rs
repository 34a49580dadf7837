//! The host's audit key: the HMAC-SHA256 key of the digests in audit records.
//!
//! Guarantees:
//! - 32 random bytes from the operating system, kept hex-encoded in `SPOOL/.hmac-key` (the
//!   spool root of [`super::DEFAULT_SPOOL`] or `--audit-spool`), created with mode 0600 on first
//!   use and never overwritten. Creation is atomic (written aside, then hard-linked into place),
//!   so concurrent runs end up with one key.
//! - A key file that group or others may read, or that is not 64 hex digits, is refused, never
//!   used or replaced.
//! - `Debug` shows the key's id, never the key.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::AuditError;

/// The key's file name in the spool root. Policy directories there are DNS names, which never
/// start with a dot.
pub const KEY_FILE: &str = ".hmac-key";

/// The host's audit key.
#[derive(Clone)]
pub struct AuditKey {
    key: [u8; 32],
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.id())
    }
}

impl AuditKey {
    /// The key kept in `spool_root`, created there on first use.
    pub fn load_or_create(spool_root: &Path) -> Result<Self, AuditError> {
        let path = spool_root.join(KEY_FILE);
        match Self::load(&path) {
            Err(AuditError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(spool_root).map_err(|e| AuditError::io(spool_root, e))?;
                Self::create(&path)?;
                Self::load(&path)
            }
            other => other,
        }
    }

    fn load(path: &Path) -> Result<Self, AuditError> {
        let meta = std::fs::metadata(path).map_err(|e| AuditError::io(path, e))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuditError::Config(format!(
                "{}: the audit key may be read by group or others (mode {mode:04o}); make it mode 0600",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| AuditError::io(path, e))?;
        let bytes = hex::decode(text.trim()).ok();
        let key = bytes
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                AuditError::Config(format!(
                    "{}: the audit key is not 64 hex digits",
                    path.display()
                ))
            })?;
        Ok(Self { key })
    }

    /// Writes a new key aside and links it into place unless another run was first.
    fn create(path: &Path) -> Result<(), AuditError> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let tmp: PathBuf =
            path.with_file_name(format!("{KEY_FILE}.{}-{nanos}.tmp", std::process::id()));
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut f| {
                f.write_all(format!("{}\n", hex::encode(key)).as_bytes())?;
                f.sync_all()
            })
            .and_then(|()| match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            });
        let _ = std::fs::remove_file(&tmp);
        written.map_err(|e| AuditError::io(path, e))
    }

    /// The key's id in records: the first 16 hex digits of its SHA-256 (says which key, tells
    /// nothing about it).
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.key))[..16].to_owned()
    }

    /// HMAC-SHA256 of `text` under the key, in hex.
    pub fn digest(&self, text: &str) -> String {
        // HMAC takes a key of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts 32-byte keys"));
        mac.update(text.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let a = AuditKey::load_or_create(&spool).unwrap();
        let path = spool.join(KEY_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = AuditKey::load_or_create(&spool).unwrap();
        assert_eq!(a.id(), b.id());
        assert_eq!(a.digest("x=1\n"), b.digest("x=1\n"));
        assert_ne!(a.digest("x=1\n"), a.digest("x=2\n"));
        assert_eq!(a.digest("x").len(), 64);
        assert!(!format!("{a:?}").contains(&hex::encode(a.key)));
        let leftovers: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the key file is left");
    }

    #[test]
    fn an_open_or_broken_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "00".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = AuditKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("mode 0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(AuditKey::load_or_create(dir.path()).is_ok());
        std::fs::write(&path, "short").unwrap();
        let e = AuditKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not 64 hex digits"), "{e}");
    }

    #[test]
    fn digest_is_the_standard_hmac() {
        // RFC 4231 test case 2 uses a short key; check against an independent computation
        // instead: HMAC(K, m) = H((K ^ opad) || H((K ^ ipad) || m)) with a 32-byte key.
        let key = AuditKey { key: [7u8; 32] };
        let block = |pad: u8| {
            let mut b = [pad; 64];
            for (i, k) in key.key.iter().enumerate() {
                b[i] ^= k;
            }
            b
        };
        let inner = Sha256::new()
            .chain_update(block(0x36))
            .chain_update(b"content=sha256:00\n")
            .finalize();
        let outer = Sha256::new()
            .chain_update(block(0x5c))
            .chain_update(inner)
            .finalize();
        assert_eq!(key.digest("content=sha256:00\n"), hex::encode(outer));
    }
}
