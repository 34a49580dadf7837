//! The webhook tokens, read ahead of requests: a background task keeps the `token` of the
//! Secret of every DriftScan's `spec.webhook.secretRef` (found in the controller's DriftScan
//! watch cache), so authenticating a request never calls the API server.
//!
//! Guarantees:
//! - The API server sees one `get` per referenced Secret per refresh period (and one within a
//!   second of a DriftScan naming a new Secret), however many requests arrive.
//! - A request that arrives before its DriftScan's Secret was read the first time waits for that
//!   read (at most [`FIRST_READ_WAIT`]) rather than being refused.
//!
//! Caveats: a rotated token is accepted, and the old one refused, within one refresh period
//! (`--webhook-token-refresh-seconds`). An API error keeps the last token read.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use driftless_crds::drift_scan::DriftScan;
use driftless_crds::secret::SecretString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

/// Longest a request waits for the first read of its token.
pub const FIRST_READ_WAIT: Duration = Duration::from_secs(3);
/// How often the task looks for DriftScans naming a Secret not read yet.
const TICK: Duration = Duration::from_secs(1);
/// Retry delay after an API error.
const RETRY: Duration = Duration::from_secs(5);

/// Namespace and name of a Secret.
pub type SecretKey = (String, String);

#[derive(Debug)]
struct Entry {
    /// `None` until read once; `Some(None)`: no such Secret, or no `token` key.
    token: Option<Option<SecretString>>,
    next_read: Instant,
}

/// What the cache knows of a Secret's token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Read: the token, or `None` when the Secret or its `token` key is missing.
    Known(Option<SecretString>),
    /// Not read yet.
    Pending,
}

/// The tokens of the Secrets the DriftScans' webhooks name.
#[derive(Debug, Default)]
pub struct Tokens {
    entries: RwLock<HashMap<SecretKey, Entry>>,
    changed: Notify,
}

/// The Secret `spec.webhook.secretRef` of `scan` names, if any.
pub fn secret_of(scan: &DriftScan) -> Option<SecretKey> {
    let webhook = scan.spec.webhook.as_ref()?;
    Some((scan.namespace()?, webhook.secret_ref.name.clone()))
}

/// The `token` of a Secret, when present and not blank.
pub fn token_of(secret: &Secret) -> Option<SecretString> {
    let value = secret.data.as_ref()?.get("token")?;
    let text = String::from_utf8_lossy(&value.0).trim().to_owned();
    (!text.is_empty()).then(|| SecretString::new(text))
}

impl Tokens {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known of `key`'s token.
    pub fn lookup(&self, key: &SecretKey) -> Lookup {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        match entries.get(key).and_then(|e| e.token.clone()) {
            Some(token) => Lookup::Known(token),
            None => Lookup::Pending,
        }
    }

    /// The token of `key`, waiting up to `wait` for its first read.
    pub async fn get(&self, key: &SecretKey, wait: Duration) -> Option<SecretString> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            match self.lookup(key) {
                Lookup::Known(token) => return token,
                Lookup::Pending => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return None;
                    }
                }
            }
        }
    }

    /// Records a read of `key` (`None`: no such Secret or no `token` key), valid for `max_age`.
    pub fn insert(&self, key: SecretKey, token: Option<SecretString>, max_age: Duration) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            key,
            Entry {
                token: Some(token),
                next_read: Instant::now() + max_age,
            },
        );
        drop(entries);
        self.changed.notify_waiters();
    }

    /// The Secrets to read now: those of `wanted` never read or due again. Forgets the others.
    fn due(&self, wanted: &BTreeSet<SecretKey>, now: Instant) -> Vec<SecretKey> {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| wanted.contains(k));
        wanted
            .iter()
            .filter(|k| entries.get(*k).is_none_or(|e| e.next_read <= now))
            .cloned()
            .collect()
    }

    fn retry_later(&self, key: &SecretKey, now: Instant) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(key.clone())
            .or_insert(Entry {
                token: None,
                next_read: now,
            })
            .next_read = now + RETRY;
    }

    /// Reads the due Secrets among `wanted` (one `get` each).
    pub async fn refresh(&self, client: &Client, wanted: &BTreeSet<SecretKey>, max_age: Duration) {
        for key in self.due(wanted, Instant::now()) {
            let api: Api<Secret> = Api::namespaced(client.clone(), &key.0);
            match api.get_opt(&key.1).await {
                Ok(secret) => self.insert(key, secret.as_ref().and_then(token_of), max_age),
                Err(err) => {
                    tracing::warn!(namespace = %key.0, secret = %key.1, error = %err,
                        "cannot read a DriftScan webhook Secret; keeping the last token read");
                    self.retry_later(&key, Instant::now());
                }
            }
        }
    }

    /// Keeps the tokens of the Secrets `scans` name up to date, read at most every `max_age`.
    ///
    /// It does not wait for the store to be ready (until then it sees no DriftScan): a
    /// second waiter on `Store::wait_until_ready` could take the wake-up of the controller's.
    pub async fn run(self: Arc<Self>, client: Client, scans: Store<DriftScan>, max_age: Duration) {
        loop {
            let wanted: BTreeSet<SecretKey> =
                scans.state().iter().filter_map(|s| secret_of(s)).collect();
            self.refresh(&client, &wanted, max_age).await;
            tokio::time::sleep(TICK).await;
        }
    }
}
