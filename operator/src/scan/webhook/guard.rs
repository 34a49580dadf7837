//! Who may use the webhook API, decided before any work is done for a request: pure functions
//! over the request, the cached DriftScan and token, and the rate limiters' state.
//!
//! Guarantees:
//! - Every authentication failure (no such DriftScan, no `spec.webhook`, a Secret that is
//!   missing or lacks `token`, a wrong token or signature) is the same [`Refusal::Unauthorized`]:
//!   a caller without the token learns nothing about what exists.
//! - Tokens and signatures are compared in constant time (`subtle`, and the `hmac` crate's
//!   `verify_slice`); a request for a DriftScan without a token runs the same comparison
//!   against a throw-away key, so the time taken does not say which case it was.
//!
//! Caveats: clients are told apart by the peer address of the connection. Behind a proxy or an
//! ingress every client is the proxy, and the per-client limit is shared by all of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};
use driftless_crds::secret::SecretString;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a request is refused before it is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `401`: whatever the reason, the same answer.
    Unauthorized,
    /// `429` with `Retry-After` (whole seconds, at least 1).
    TooManyRequests(Duration),
    /// `413`: the body is longer than the limit (bytes).
    PayloadTooLarge(usize),
}

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Tokens added per second (> 0).
    pub per_second: f64,
    /// Size of the bucket (>= 1).
    pub burst: u32,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets per key (client address, DriftScan), at most `max_keys` of them: a key whose
/// bucket is full again is forgotten when room is needed, since a full bucket is what a new key
/// gets anyway.
#[derive(Debug)]
pub struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: HashMap<K, Bucket>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// Limiter of `rate` per key, keeping at most `max_keys` partly used buckets.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        Self {
            rate: Rate {
                per_second: rate.per_second.max(f64::MIN_POSITIVE),
                burst: rate.burst.max(1),
            },
            max_keys: max_keys.max(1),
            buckets: HashMap::new(),
        }
    }

    fn level(&self, bucket: Option<&Bucket>, now: Instant) -> f64 {
        let burst = f64::from(self.rate.burst);
        match bucket {
            None => burst,
            Some(b) => {
                let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
                (b.tokens + elapsed * self.rate.per_second).min(burst)
            }
        }
    }

    fn wait_for(&self, level: f64) -> Duration {
        let secs = ((1.0 - level) / self.rate.per_second).ceil().max(1.0);
        Duration::from_secs(secs.min(86_400.0) as u64)
    }

    /// Whether `key` has a token left, without taking it; `Err(retry after)` when it has not.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let level = self.level(self.buckets.get(key), now);
        if level >= 1.0 {
            Ok(())
        } else {
            Err(self.wait_for(level))
        }
    }

    /// Takes a token of `key`; `Err(retry after)` when none is left (or, with `max_keys`
    /// buckets all in use, for a key not among them).
    pub fn take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            let burst = f64::from(self.rate.burst);
            let full: Vec<K> = self
                .buckets
                .iter()
                .filter(|(_, b)| self.level(Some(b), now) >= burst)
                .map(|(k, _)| k.clone())
                .collect();
            for k in full {
                self.buckets.remove(&k);
            }
            if self.buckets.len() >= self.max_keys {
                return Err(Duration::from_secs(1));
            }
        }
        let level = self.level(self.buckets.get(key), now);
        if level < 1.0 {
            return Err(self.wait_for(level));
        }
        self.buckets.insert(
            key.clone(),
            Bucket {
                tokens: level - 1.0,
                at: now,
            },
        );
        Ok(())
    }

    /// Number of keys with a partly used bucket.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// No key has a partly used bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

/// The key of a client for the per-client limit: its IPv4 address, or the /64 network of its
/// IPv6 address (one host usually holds a whole /64).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// The refusal of a body of `len` bytes (announced or read) over `limit`.
pub fn body_size(len: usize, limit: usize) -> Result<(), Refusal> {
    if len > limit {
        Err(Refusal::PayloadTooLarge(limit))
    } else {
        Ok(())
    }
}

/// Checks a request against the token: bearer, or GitHub's `X-Hub-Signature-256`.
pub fn authenticate(headers: &HeaderMap, body: &[u8], token: &SecretString) -> bool {
    let token = token.expose().trim();
    if token.is_empty() {
        return false;
    }
    if let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        if let Some(given) = auth.strip_prefix("Bearer ") {
            return bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()));
        }
    }
    if let Some(sig) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
    {
        let Ok(given) = hex::decode(sig.trim()) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(token.as_bytes()) else {
            return false;
        };
        mac.update(body);
        return mac.verify_slice(&given).is_ok();
    }
    false
}

/// The authentication decision. `token` is the cached `token` of the Secret of the DriftScan's
/// `spec.webhook.secretRef`: `None` when there is no such DriftScan, no `spec.webhook`, no such
/// Secret or no `token` key — all of them one refusal, reached in about the same time.
pub fn admit(
    headers: &HeaderMap,
    body: &[u8],
    token: Option<&SecretString>,
) -> Result<(), Refusal> {
    let ok = match token {
        Some(token) => authenticate(headers, body, token),
        None => {
            // The same work as a real check, against a key no request can know.
            let decoy = SecretString::new("driftless-webhook-decoy-0123456789abcdef");
            let _ = authenticate(headers, body, &decoy);
            false
        }
    };
    if ok {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_and_hmac() {
        let token = SecretString::new("s3cret");
        let mut h = HeaderMap::new();
        assert!(!authenticate(&h, b"{}", &token));
        h.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(authenticate(&h, b"{}", &token));
        h.insert(header::AUTHORIZATION, "Bearer s3cre".parse().unwrap());
        assert!(!authenticate(&h, b"{}", &token));
        h.insert(header::AUTHORIZATION, "Bearer s3cretX".parse().unwrap());
        assert!(!authenticate(&h, b"{}", &token));
        let mut h = HeaderMap::new();
        // GitHub's documented example: secret "It's a Secret to Everybody", body "Hello, World!".
        let gh = SecretString::new("It's a Secret to Everybody");
        h.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                .parse()
                .unwrap(),
        );
        assert!(authenticate(&h, b"Hello, World!", &gh));
        assert!(!authenticate(&h, b"Hello, World?", &gh));
        assert!(!authenticate(&h, b"Hello, World!", &SecretString::new("")));
    }

    #[test]
    fn every_authentication_failure_is_one_refusal() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
        let token = SecretString::new("t0ken");
        assert_eq!(admit(&h, b"", Some(&token)), Ok(()));
        // No DriftScan, no webhook, no Secret, no `token` key: no token at all.
        assert_eq!(admit(&h, b"", None), Err(Refusal::Unauthorized));
        // A wrong token, an empty one, a wrong signature.
        let wrong = SecretString::new("other");
        assert_eq!(admit(&h, b"", Some(&wrong)), Err(Refusal::Unauthorized));
        assert_eq!(
            admit(&h, b"", Some(&SecretString::new(" "))),
            Err(Refusal::Unauthorized)
        );
        let mut h = HeaderMap::new();
        h.insert("x-hub-signature-256", "sha256=zz".parse().unwrap());
        assert_eq!(admit(&h, b"", Some(&token)), Err(Refusal::Unauthorized));
    }

    #[test]
    fn buckets_refill_and_say_when() {
        let t0 = Instant::now();
        let mut l = Limiter::new(
            Rate {
                per_second: 0.5,
                burst: 3,
            },
            10,
        );
        for _ in 0..3 {
            assert_eq!(l.check(&"a", t0), Ok(()));
            assert_eq!(l.take(&"a", t0), Ok(()));
        }
        // Empty: one token in 2 s.
        assert_eq!(l.check(&"a", t0), Err(Duration::from_secs(2)));
        assert_eq!(l.take(&"a", t0), Err(Duration::from_secs(2)));
        assert_eq!(
            l.take(&"a", t0 + Duration::from_millis(1500)),
            Err(Duration::from_secs(1))
        );
        // Other keys are not affected.
        assert_eq!(l.take(&"b", t0), Ok(()));
        assert_eq!(l.take(&"a", t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(
            l.check(&"a", t0 + Duration::from_secs(2)),
            Err(Duration::from_secs(2))
        );
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..3 {
            assert_eq!(l.take(&"a", later), Ok(()));
        }
        assert!(l.take(&"a", later).is_err());
    }

    #[test]
    fn buckets_are_bounded() {
        let t0 = Instant::now();
        let rate = Rate {
            per_second: 1.0,
            burst: 2,
        };
        let mut l = Limiter::new(rate, 2);
        assert_eq!(l.take(&1, t0), Ok(()));
        assert_eq!(l.take(&2, t0), Ok(()));
        // Both buckets in use: a third key waits.
        assert_eq!(l.take(&3, t0), Err(Duration::from_secs(1)));
        assert_eq!(l.len(), 2);
        // Once they refilled, they make room.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(l.take(&3, later), Ok(()));
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn clients_are_addresses_or_ipv6_networks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_key(ip("10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
    }

    #[test]
    fn body_limit() {
        assert_eq!(body_size(10, 10), Ok(()));
        assert_eq!(body_size(11, 10), Err(Refusal::PayloadTooLarge(10)));
    }
}
