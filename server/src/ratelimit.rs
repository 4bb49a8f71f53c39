//! Rate limiting: a token bucket per key, refilled continuously. Signed calls are limited per
//! principal, after the signature check, so a forger cannot drain someone else's bucket;
//! unauthenticated calls per client address.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Instant;

use zopp_crypto::ids::PrincipalId;

use crate::lock;

/// Default sustained requests per second per principal: generous enough for CI fan-out and
/// interactive use, low enough to blunt a runaway script.
pub const DEFAULT_RATE_PER_SEC: u32 = 1000;
/// Buckets kept before idle (full) ones are dropped.
const PRUNE_AT: usize = 10_000;

/// Rate-limit settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second per principal (0 disables the limit).
    pub per_second: f64,
    /// Bucket size: how many requests may arrive at once.
    pub burst: f64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self::per_second(DEFAULT_RATE_PER_SEC)
    }
}

impl RateLimit {
    /// `n` per second with a burst of twice that.
    pub fn per_second(n: u32) -> Self {
        Self {
            per_second: f64::from(n),
            burst: f64::from(n) * 2.0,
        }
    }
    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            per_second: 0.0,
            burst: 0.0,
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The limiter shared by all requests, with one bucket per key (a principal by default).
pub struct RateLimiter<K = PrincipalId> {
    limit: RateLimit,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// A limiter enforcing `limit`.
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `false` when its bucket is empty.
    pub fn allow(&self, key: K) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: K, now: Instant) -> bool {
        if self.limit.per_second <= 0.0 {
            return true;
        }
        let RateLimit { per_second, burst } = self.limit;
        let mut map = lock(&self.buckets);
        if map.len() >= PRUNE_AT {
            map.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * per_second < burst
            });
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * per_second).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const P: PrincipalId = PrincipalId::from_bytes([1; 16]);
    const Q: PrincipalId = PrincipalId::from_bytes([2; 16]);

    #[test]
    fn burst_then_refill() {
        let l: RateLimiter = RateLimiter::new(RateLimit {
            per_second: 10.0,
            burst: 3.0,
        });
        let t = Instant::now();
        assert!(l.allow_at(P, t));
        assert!(l.allow_at(P, t));
        assert!(l.allow_at(P, t));
        assert!(!l.allow_at(P, t));
        // Another principal has its own bucket.
        assert!(l.allow_at(Q, t));
        // 100 ms refills one token at 10/s.
        assert!(l.allow_at(P, t + Duration::from_millis(100)));
        assert!(!l.allow_at(P, t + Duration::from_millis(100)));
    }

    #[test]
    fn zero_rate_means_unlimited() {
        let l: RateLimiter = RateLimiter::new(RateLimit::unlimited());
        let t = Instant::now();
        for _ in 0..10_000 {
            assert!(l.allow_at(P, t));
        }
    }
}
