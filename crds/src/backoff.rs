//! Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
//! and Jitter"): the one retry delay of Driftless — the agent's log sinks, audit HTTP sink and
//! facts S3 push wait [`Backoff::delay`]; the operator's notification retries, whose next
//! attempt is kept in an API object, wait the deterministic [`Backoff::ceiling`].

use std::time::Duration;

use rand::Rng;

/// Backoff policy: the n-th retry waits a random time in `[0, min(max, base·2ⁿ)]`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    /// First delay.
    pub base: Duration,
    /// Largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry number `attempt` (0-based), before jitter.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(30)).unwrap_or(u64::MAX);
        let millis = (self.base.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(millis).min(self.max)
    }

    /// The delay before retry number `attempt`, with full jitter: between zero and the ceiling.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps_with_jitter_in_range() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(5),
        };
        assert_eq!(b.ceiling(0), Duration::from_millis(100));
        assert_eq!(b.ceiling(3), Duration::from_millis(800));
        assert_eq!(b.ceiling(10), Duration::from_secs(5));
        assert_eq!(b.ceiling(1000), Duration::from_secs(5));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let d = b.delay(4);
            assert!(d <= Duration::from_millis(1600), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter spreads delays");
        // Full jitter: the whole range, not only its upper half (equal jitter).
        let low = seen
            .iter()
            .filter(|d| **d < Duration::from_millis(800))
            .count();
        assert!(
            low > seen.len() / 4,
            "{low} of {} below half the ceiling",
            seen.len()
        );
    }
}
