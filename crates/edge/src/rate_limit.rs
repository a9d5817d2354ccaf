//! Token buckets in memory, one per key (an IP, a user, a route and IP…).
//!
//! A bucket holds at most `burst` tokens and gains `per_second` tokens a
//! second; a request takes one or is refused with the seconds until one
//! is back (`Retry-After`). A refusal is reported for audit once per
//! window per key (a window is the time a bucket takes to fill again), not
//! for every request of a flood. Buckets that have filled up again are
//! forgotten when the map grows, so memory stays bounded by the keys that
//! are busy now.
//!
//! The buckets are spread over [`SHARDS`] maps, each behind its own lock,
//! by a hash of the key: requests of different callers on different
//! threads do not wait for one another, and a busy key's bucket is found
//! without copying its key.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use echo_core::sync::lock;
use serde::Deserialize;

/// Buckets kept before full ones are swept.
const SWEEP_AT: usize = 10_000;
/// Maps the buckets are spread over.
const SHARDS: usize = 16;

/// A token bucket: `burst` requests at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub per_second: f64,
    pub burst: u32,
}

impl Limit {
    /// `count` a minute, all of them at once if need be.
    pub fn per_minute(count: u32) -> Self {
        Self {
            per_second: f64::from(count) / 60.0,
            burst: count,
        }
    }
}

/// What a refused request learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Whole seconds until a token is back (at least 1).
    pub retry_after: u64,
    /// The first refusal of this key's window: audit it.
    pub first_in_window: bool,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Until when refusals of this key are not audited again.
    quiet_until: Option<Instant>,
}

#[derive(Debug)]
pub struct RateLimiter {
    /// Boxed: a [`crate::Limiter`] holding the buckets stays small.
    shards: Box<[Mutex<HashMap<String, Bucket>>]>,
    hasher: std::hash::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }
}

impl RateLimiter {
    /// Takes a token from `key`'s bucket at `now`.
    pub fn check(&self, key: &str, limit: Limit, now: Instant) -> Result<(), Throttled> {
        let burst = f64::from(limit.burst);
        let shard = self.hasher.hash_one(key) as usize % SHARDS;
        let mut buckets = lock(&self.shards[shard]);
        // A busy key's bucket is found with one lookup, its key not copied.
        if let Some(bucket) = buckets.get_mut(key) {
            return bucket.take(limit, now);
        }
        if buckets.len() >= SWEEP_AT / SHARDS {
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * limit.per_second < burst
            });
        }
        let mut bucket = Bucket {
            tokens: burst,
            updated: now,
            quiet_until: None,
        };
        let taken = bucket.take(limit, now);
        buckets.insert(key.to_owned(), bucket);
        taken
    }
}

impl Bucket {
    /// One token at `now`, refilled first; or how long until one is back.
    fn take(&mut self, limit: Limit, now: Instant) -> Result<(), Throttled> {
        let burst = f64::from(limit.burst);
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_second).min(burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / limit.per_second;
        let first_in_window = self.quiet_until.is_none_or(|until| now >= until);
        if first_in_window {
            let window = Duration::from_secs_f64(burst / limit.per_second);
            self.quiet_until = Some(now + window);
        }
        Err(Throttled {
            // Rounded up: a client that waits this long will get through.
            retry_after: (wait.ceil() as u64).max(1),
            first_in_window,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_empties_refills_and_audits_once_per_window() {
        let limiter = RateLimiter::default();
        let limit = Limit {
            per_second: 1.0,
            burst: 2,
        };
        let t0 = Instant::now();
        assert!(limiter.check("k", limit, t0).is_ok());
        assert!(limiter.check("k", limit, t0).is_ok());
        let refused = limiter.check("k", limit, t0).unwrap_err();
        assert_eq!(refused.retry_after, 1);
        assert!(refused.first_in_window);
        assert!(!limiter.check("k", limit, t0).unwrap_err().first_in_window);
        assert!(limiter.check("other", limit, t0).is_ok(), "keys are apart");
        // One second later one token is back.
        let t1 = t0 + Duration::from_secs(1);
        assert!(limiter.check("k", limit, t1).is_ok());
        assert!(!limiter.check("k", limit, t1).unwrap_err().first_in_window);
        // After the window (2 s) a new refusal is audited again.
        let t3 = t0 + Duration::from_millis(3500);
        assert!(limiter.check("k", limit, t3).is_ok());
        assert!(limiter.check("k", limit, t3).is_ok());
        assert!(limiter.check("k", limit, t3).unwrap_err().first_in_window);
    }

    #[test]
    fn many_keys_stay_apart_and_full_buckets_are_swept() {
        let limiter = RateLimiter::default();
        let limit = Limit {
            per_second: 1.0,
            burst: 1,
        };
        let t0 = Instant::now();
        for i in 0..SWEEP_AT * 2 {
            assert!(limiter.check(&format!("k{i}"), limit, t0).is_ok());
        }
        assert!(
            limiter.check("k7", limit, t0).is_err(),
            "its bucket is empty"
        );
        // Later every bucket is full again, and a new key sweeps its shard.
        let later = t0 + Duration::from_secs(2);
        assert!(limiter.check("new", limit, later).is_ok());
        let kept: usize = limiter.shards.iter().map(|s| lock(s).len()).sum();
        assert!(kept < SWEEP_AT * 2, "{kept} buckets kept");
    }

    #[test]
    fn slow_refill_answers_whole_seconds() {
        let limiter = RateLimiter::default();
        let limit = Limit {
            per_second: 0.1,
            burst: 1,
        };
        let t0 = Instant::now();
        assert!(limiter.check("k", limit, t0).is_ok());
        assert_eq!(limiter.check("k", limit, t0).unwrap_err().retry_after, 10);
    }
}
