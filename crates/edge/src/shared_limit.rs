//! Limits that every replica of a service counts together.
//!
//! A [`RateLimiter`]'s buckets live in one process: behind a load balancer
//! each replica would grant its own share. When a service is replicated its
//! limits count in a store all replicas reach instead — Redis
//! ([`RedisCounters`](crate::RedisCounters), `ECHO_RATE_LIMIT_URL`) or the
//! service's PostgreSQL — behind [`SharedCounters`]: fixed windows, one
//! counter per key and window, incremented atomically by the store.
//!
//! [`Limiter`] is what a service holds: today's in-process buckets (no
//! allocation, no lock beyond the buckets' own, no `await` that waits), or
//! a [`SharedLimiter`]. A token bucket ([`Limit`]) counts in a shared store
//! as a window of `burst` requests per time the bucket takes to fill
//! ([`Window::of`]): the same rate, a burst that can reach twice `burst`
//! across a window's edge.
//!
//! A store that cannot count (Redis down) lets requests through — it fails
//! open, warning at most once a minute — so an outage of the limits' store
//! is not an outage of the service. What must fail closed (an account's
//! lockout) is not counted here but in the service's database.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::rate_limit::{Limit, RateLimiter, Throttled};

/// A shared store could not count (it is down, or answered nonsense).
#[derive(Debug)]
pub struct CountersUnavailable(pub String);

impl std::fmt::Display for CountersUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shared rate-limit counters unavailable: {}", self.0)
    }
}

impl std::error::Error for CountersUnavailable {}

/// Fixed-window hit counters kept where every replica counts them.
#[async_trait]
pub trait SharedCounters: Send + Sync {
    /// Counts one hit of `key` in the window that starts at `window_start`
    /// (milliseconds since the epoch) and lasts `length_ms`; answers the
    /// window's hits, this one included.
    async fn hit(
        &self,
        key: &str,
        window_start: i64,
        length_ms: i64,
    ) -> Result<u64, CountersUnavailable>;
    /// The hits of `key` in the window that starts at `window_start`,
    /// without counting one.
    async fn hits(&self, key: &str, window_start: i64) -> Result<u64, CountersUnavailable>;
}

/// A fixed-window limit: at most `hits` in each window of `length_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub hits: u64,
    pub length_ms: i64,
}

impl Window {
    /// `hits` a minute.
    pub fn per_minute(hits: u32) -> Self {
        Self {
            hits: u64::from(hits),
            length_ms: 60_000,
        }
    }

    /// A token bucket's rate in windows: `burst` requests per time the
    /// bucket takes to fill.
    pub fn of(limit: Limit) -> Self {
        let fill = f64::from(limit.burst) / limit.per_second * 1000.0;
        Self {
            hits: u64::from(limit.burst),
            length_ms: (fill.ceil() as i64).max(1),
        }
    }

    fn start(&self, now_ms: i64) -> i64 {
        now_ms - now_ms.rem_euclid(self.length_ms)
    }

    /// The refusal of a request at `now_ms` in a full window.
    fn refusal(&self, now_ms: i64, first_in_window: bool) -> Throttled {
        let left_ms = self.start(now_ms) + self.length_ms - now_ms;
        Throttled {
            // Rounded up: a client that waits this long will get through.
            retry_after: (left_ms.max(0) as u64).div_ceil(1000).max(1),
            first_in_window,
        }
    }
}

/// One limit's counters in a shared store, under the limit's name.
pub struct SharedLimiter {
    counters: Arc<dyn SharedCounters>,
    name: &'static str,
    /// When the store's unavailability was last logged (seconds).
    warned_at: AtomicI64,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedLimiter")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// The limit called `name` (its keys' namespace) counted in `counters`.
    pub fn new(counters: Arc<dyn SharedCounters>, name: &'static str) -> Self {
        Self {
            counters,
            name,
            warned_at: AtomicI64::new(i64::MIN),
        }
    }

    /// Counts one hit of `key` at `now_ms`; refused once the window holds
    /// more than `window.hits`, the first refusal of a window marked for
    /// audit. A store that cannot count lets it through.
    pub async fn hit(&self, key: &str, window: Window, now_ms: i64) -> Result<(), Throttled> {
        let start = window.start(now_ms);
        match self
            .counters
            .hit(&self.key(key), start, window.length_ms)
            .await
        {
            Ok(hits) if hits > window.hits => Err(window.refusal(now_ms, hits == window.hits + 1)),
            Ok(_) => Ok(()),
            Err(e) => {
                self.warn(&e, now_ms);
                Ok(())
            }
        }
    }

    /// `Some` while `key`'s window at `now_ms` is full, without counting a
    /// hit. A store that cannot count answers `None`.
    pub async fn full(&self, key: &str, window: Window, now_ms: i64) -> Option<Throttled> {
        match self
            .counters
            .hits(&self.key(key), window.start(now_ms))
            .await
        {
            Ok(hits) if hits >= window.hits => Some(window.refusal(now_ms, false)),
            Ok(_) => None,
            Err(e) => {
                self.warn(&e, now_ms);
                None
            }
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.name)
    }

    /// Logs the store's failure, once a minute however many requests see it.
    fn warn(&self, error: &CountersUnavailable, now_ms: i64) {
        let now = now_ms / 1000;
        let last = self.warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 60
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(limit = self.name, %error, "rate limits not enforced while their store is unavailable");
        }
    }
}

/// Where a service's token-bucket limits count: in this process (one
/// replica), or in a store every replica shares.
#[derive(Debug)]
pub enum Limiter {
    InProcess(RateLimiter),
    Shared(SharedLimiter),
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::InProcess(RateLimiter::default())
    }
}

impl Limiter {
    /// Takes one request from `key`'s allowance under `limit`.
    pub async fn check(&self, key: &str, limit: Limit) -> Result<(), Throttled> {
        match self {
            Limiter::InProcess(buckets) => buckets.check(key, limit, Instant::now()),
            Limiter::Shared(shared) => shared.hit(key, Window::of(limit), unix_ms()).await,
        }
    }
}

/// The wall clock in milliseconds: replicas agree on windows by it.
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_counts_as_its_burst_per_filling_time() {
        let limit = Limit {
            per_second: 2.0,
            burst: 10,
        };
        assert_eq!(
            Window::of(limit),
            Window {
                hits: 10,
                length_ms: 5_000
            }
        );
        assert_eq!(Window::of(Limit::per_minute(5)).length_ms, 60_000);
        let fast = Limit {
            per_second: 1e9,
            burst: 1,
        };
        assert_eq!(Window::of(fast).length_ms, 1, "never an empty window");
    }

    #[test]
    fn a_refusal_waits_for_the_next_window_in_whole_seconds() {
        let window = Window::per_minute(3);
        assert_eq!(window.refusal(60_000, true).retry_after, 60);
        assert_eq!(window.refusal(60_001, false).retry_after, 60);
        assert_eq!(window.refusal(119_500, false).retry_after, 1);
    }
}
