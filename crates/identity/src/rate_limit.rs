//! Per-key fixed-window counters: login attempts per address, failed
//! client authentications and refused `/verify` tokens per client and
//! address.
//!
//! One identity process counts in memory ([`Counters`]). Replicas count
//! together ([`Provider::share_limits`](crate::Provider::share_limits)) in
//! a [`SharedLimiter`]: in Redis (`ECHO_RATE_LIMIT_URL`), else in their
//! PostgreSQL ([`DatabaseCounters`]), with the same windows, so a limit
//! of N a minute is N a minute for the whole cluster. A shared store that
//! cannot count lets requests through (`echo_edge::SharedLimiter`): the
//! account lockout, which must hold, counts in the database itself
//! (`lockout.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use echo_core::sync::lock;
use echo_edge::{CountersUnavailable, SharedCounters, SharedLimiter, Window};
use echo_identity_store::Store;

/// Entries kept before old windows are swept, so memory stays bounded.
const MAX_KEYS: usize = 100_000;

/// One limit: so many hits a minute for each key.
#[derive(Debug)]
pub(crate) enum RateLimiter {
    InProcess(Counters),
    Shared {
        limiter: SharedLimiter,
        window: Window,
    },
}

impl RateLimiter {
    /// `limit` hits a minute per key, counted in this process.
    pub(crate) fn per_minute(limit: u32) -> Self {
        Self::per_window(limit, 60)
    }

    /// `limit` hits per key in each window of `seconds`, counted in this
    /// process.
    pub(crate) fn per_window(limit: u32, seconds: i64) -> Self {
        RateLimiter::InProcess(Counters::new(limit, seconds))
    }

    /// `limit` hits a minute per key, counted in `counters` under `name`.
    pub(crate) fn shared_per_minute(
        counters: Arc<dyn SharedCounters>,
        name: &'static str,
        limit: u32,
    ) -> Self {
        Self::shared(counters, name, limit, 60)
    }

    /// `limit` hits per key in each window of `seconds`, counted in
    /// `counters` under `name`.
    pub(crate) fn shared(
        counters: Arc<dyn SharedCounters>,
        name: &'static str,
        limit: u32,
        seconds: i64,
    ) -> Self {
        RateLimiter::Shared {
            limiter: SharedLimiter::new(counters, name),
            window: Window {
                hits: u64::from(limit),
                length_ms: seconds.saturating_mul(1000),
            },
        }
    }

    /// `Some(seconds)` while `key` is over its limit at `now` (seconds),
    /// without counting a hit.
    pub(crate) async fn blocked(&self, key: &str, now: i64) -> Option<u64> {
        match self {
            RateLimiter::InProcess(counters) => counters.blocked(key, now),
            RateLimiter::Shared { limiter, window } => limiter
                .full(key, *window, now * 1000)
                .await
                .map(|refused| refused.retry_after),
        }
    }

    /// Counts one hit; `Err(seconds)` until the window ends once over limit.
    pub(crate) async fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        match self {
            RateLimiter::InProcess(counters) => counters.check(key, now),
            RateLimiter::Shared { limiter, window } => limiter
                .hit(key, *window, now * 1000)
                .await
                .map_err(|refused| refused.retry_after),
        }
    }
}

/// The rate-limit windows of identity's database as shared counters: how
/// replicas on one PostgreSQL count together without Redis.
pub struct DatabaseCounters(pub Arc<dyn Store>);

#[async_trait]
impl SharedCounters for DatabaseCounters {
    async fn hit(
        &self,
        key: &str,
        window_start: i64,
        length_ms: i64,
    ) -> Result<u64, CountersUnavailable> {
        let expires_at = (window_start + length_ms).div_euclid(1000) + 1;
        self.0
            .hit_window(key, window_start, expires_at)
            .await
            .map_err(|e| CountersUnavailable(e.to_string()))
    }

    async fn hits(&self, key: &str, window_start: i64) -> Result<u64, CountersUnavailable> {
        self.0
            .window_hits(key, window_start)
            .await
            .map_err(|e| CountersUnavailable(e.to_string()))
    }
}

/// The counters of one process.
#[derive(Debug)]
pub(crate) struct Counters {
    limit: u32,
    window: i64,
    counts: Mutex<HashMap<String, (i64, u32)>>,
}

impl Counters {
    fn new(limit: u32, window: i64) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds)` while `key` is over its limit in the current window,
    /// without counting a hit.
    fn blocked(&self, key: &str, now: i64) -> Option<u64> {
        let window_start = now - now.rem_euclid(self.window);
        let counts = lock(&self.counts);
        match counts.get(key) {
            Some(&(start, count)) if start == window_start && count >= self.limit => {
                Some((window_start + self.window - now).max(1) as u64)
            }
            _ => None,
        }
    }

    /// Counts one hit; `Err(seconds)` until the window ends once over limit.
    fn check(&self, key: &str, now: i64) -> Result<(), u64> {
        let window_start = now - now.rem_euclid(self.window);
        let mut counts = lock(&self.counts);
        if counts.len() >= MAX_KEYS {
            counts.retain(|_, (start, _)| *start == window_start);
        }
        let entry = counts.entry(key.to_owned()).or_insert((window_start, 0));
        if entry.0 != window_start {
            *entry = (window_start, 0);
        }
        entry.1 += 1;
        if entry.1 > self.limit {
            Err((window_start + self.window - now).max(1) as u64)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_after_limit_and_resets_next_window() {
        let limiter = Counters::new(2, 60);
        assert!(limiter.check("ip", 600).is_ok());
        assert!(limiter.check("ip", 601).is_ok());
        assert_eq!(limiter.check("ip", 610), Err(50));
        assert!(limiter.check("other", 610).is_ok());
        assert!(limiter.check("ip", 660).is_ok());
    }

    /// A panic while the counters were held must not turn the limit off
    /// (it used to: a poisoned lock answered "allowed").
    #[test]
    fn a_poisoned_lock_still_limits() {
        let limiter = std::sync::Arc::new(Counters::new(1, 60));
        let poisoner = limiter.clone();
        let _ = std::thread::spawn(move || {
            let _held = poisoner.counts.lock().unwrap();
            panic!("poison the counters");
        })
        .join();
        assert!(limiter.counts.is_poisoned());
        assert!(limiter.check("ip", 600).is_ok());
        assert_eq!(limiter.check("ip", 601), Err(59));
        assert_eq!(limiter.blocked("ip", 602), Some(58));
    }

    #[test]
    fn blocked_only_reads() {
        let limiter = Counters::new(1, 60);
        assert_eq!(limiter.blocked("ip", 600), None);
        assert!(limiter.check("ip", 600).is_ok());
        assert_eq!(limiter.blocked("ip", 610), Some(50));
        assert_eq!(limiter.blocked("ip", 660), None);
    }
}
