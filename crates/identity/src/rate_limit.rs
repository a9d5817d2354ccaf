//! Per-key fixed-window counters, for login attempts per IP.

use std::collections::HashMap;
use std::sync::Mutex;

use echo_core::sync::lock;

/// Entries kept before old windows are swept, so memory stays bounded.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: u32,
    window: i64,
    counts: Mutex<HashMap<String, (i64, u32)>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: i64) -> Self {
        Self {
            limit,
            window,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(seconds)` while `key` is over its limit in the current window,
    /// without counting a hit.
    pub fn blocked(&self, key: &str, now: i64) -> Option<u64> {
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
    pub fn check(&self, key: &str, now: i64) -> Result<(), u64> {
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
        let limiter = RateLimiter::new(2, 60);
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
        let limiter = std::sync::Arc::new(RateLimiter::new(1, 60));
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
        let limiter = RateLimiter::new(1, 60);
        assert_eq!(limiter.blocked("ip", 600), None);
        assert!(limiter.check("ip", 600).is_ok());
        assert_eq!(limiter.blocked("ip", 610), Some(50));
        assert_eq!(limiter.blocked("ip", 660), None);
    }
}
