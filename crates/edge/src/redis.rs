//! Redis for what replicas share: the client every service connects with
//! ([`redis_client`]), and [`RedisCounters`], the rate limits' counters
//! (`ECHO_RATE_LIMIT_URL`).
//!
//! A counter is the key `<prefix><limit>:<key>:<window start>`, created
//! by the window's first hit with `INCR` and given an expiry by the same
//! script (two windows, so no counter outlives its use), so replicas
//! counting at once never lose a hit and Redis forgets old windows itself.

use async_trait::async_trait;
use echo_crypto::TrustedRoots;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

use crate::shared_limit::{CountersUnavailable, SharedCounters};

/// The key prefix of rate limits unless configured otherwise.
pub const DEFAULT_RATE_LIMIT_PREFIX: &str = "echo:limit:";

/// How long a limit waits for Redis before letting the request through:
/// a hung Redis must not hang every request.
const TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// KEYS[1] the window's counter; ARGV[1] its lifetime (ms).
const HIT: &str = r"
local hits = redis.call('INCR', KEYS[1])
if hits == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return hits
";

/// A client for `url` (`redis://host:port[/db]`, or `rediss://…` for TLS,
/// trusting `roots`).
pub fn redis_client(url: &str, roots: &TrustedRoots) -> redis::RedisResult<redis::Client> {
    if url.starts_with("rediss://") {
        // Given roots replace the system's in redis-rs, hence all of them.
        let certificates = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(roots.pem()),
        };
        redis::Client::build_with_tls(url, certificates)
    } else {
        redis::Client::open(url)
    }
}

/// Rate-limit counters in Redis, shared by every replica that names it.
#[derive(Clone)]
pub struct RedisCounters {
    redis: ConnectionManager,
    prefix: String,
    hit: Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Connects to `url` (see [`redis_client`]); keys go under `prefix`.
    /// The connection reconnects by itself; each command waits at most
    /// half a second.
    pub async fn open(url: &str, roots: &TrustedRoots, prefix: &str) -> redis::RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(1);
        let redis = ConnectionManager::new_with_config(redis_client(url, roots)?, config).await?;
        Ok(Self {
            redis,
            prefix: prefix.to_owned(),
            hit: Script::new(HIT),
        })
    }

    fn counter(&self, key: &str, window_start: i64) -> String {
        format!("{}{key}:{window_start}", self.prefix)
    }
}

fn unavailable(e: redis::RedisError) -> CountersUnavailable {
    CountersUnavailable(e.to_string())
}

#[async_trait]
impl SharedCounters for RedisCounters {
    async fn hit(
        &self,
        key: &str,
        window_start: i64,
        length_ms: i64,
    ) -> Result<u64, CountersUnavailable> {
        self.hit
            .key(self.counter(key, window_start))
            .arg(length_ms.saturating_mul(2))
            .invoke_async(&mut self.redis.clone())
            .await
            .map_err(unavailable)
    }

    async fn hits(&self, key: &str, window_start: i64) -> Result<u64, CountersUnavailable> {
        let hits: Option<u64> = self
            .redis
            .clone()
            .get(self.counter(key, window_start))
            .await
            .map_err(unavailable)?;
        Ok(hits.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_limit::{SharedLimiter, Window};
    use std::sync::Arc;

    fn prefix(test: &str) -> String {
        format!("echo:test:{}:{test}:", std::process::id())
    }

    /// Deletes the test's keys.
    async fn clean(counters: &RedisCounters) {
        let mut redis = counters.redis.clone();
        let keys: Vec<String> = redis
            .keys(format!("{}*", counters.prefix))
            .await
            .expect("list keys");
        if !keys.is_empty() {
            let () = redis.del(keys).await.expect("delete keys");
        }
    }

    async fn machine_redis(test: &str) -> RedisCounters {
        let url = echo_testkit::redis_url();
        RedisCounters::open(&url, &TrustedRoots::system(), &prefix(test))
            .await
            .unwrap_or_else(|e| panic!("{test}: Redis at {url} is not reachable ({e})"))
    }

    #[tokio::test]
    async fn hits_count_per_key_and_window_and_expire_with_it() {
        let counters = machine_redis("hits_count").await;
        for expected in 1..=3 {
            assert_eq!(counters.hit("k", 60_000, 1_000).await.unwrap(), expected);
        }
        assert_eq!(counters.hits("k", 60_000).await.unwrap(), 3);
        assert_eq!(counters.hits("k", 61_000).await.unwrap(), 0, "next window");
        assert_eq!(counters.hits("other", 60_000).await.unwrap(), 0);
        let ttl: i64 = counters
            .redis
            .clone()
            .pttl(counters.counter("k", 60_000))
            .await
            .unwrap();
        assert!((1..=2_000).contains(&ttl), "{ttl}");
        clean(&counters).await;
    }

    /// Two replicas' limiters over one Redis grant the window's hits once
    /// between them, however the hits arrive.
    #[tokio::test]
    async fn replicas_share_one_window() {
        let a = Arc::new(machine_redis("replicas_share").await);
        let b = Arc::new(machine_redis("replicas_share").await);
        let a_limit = SharedLimiter::new(a.clone(), "login");
        let b_limit = SharedLimiter::new(b, "login");
        let window = Window::per_minute(10);
        let now = unix_minute();
        let (from_a, from_b) = tokio::join!(
            hit_eight(&a_limit, window, now),
            hit_eight(&b_limit, window, now)
        );
        let granted = from_a.iter().chain(&from_b).filter(|r| r.is_ok()).count();
        assert_eq!(granted, 10);
        let first: Vec<_> = from_a
            .iter()
            .chain(&from_b)
            .filter_map(|r| r.err())
            .filter(|refusal| refusal.first_in_window)
            .collect();
        assert_eq!(first.len(), 1, "one refusal per window is audited");
        assert!(a_limit.full("ip", window, now).await.is_some());
        assert!(b_limit.full("ip", window, now + 60_000).await.is_none());
        clean(&a).await;
    }

    async fn hit_eight(
        limit: &SharedLimiter,
        window: Window,
        now: i64,
    ) -> Vec<Result<(), crate::Throttled>> {
        let mut results = Vec::new();
        for _ in 0..8 {
            results.push(limit.hit("ip", window, now).await);
        }
        results
    }

    fn unix_minute() -> i64 {
        let now = crate::shared_limit::unix_ms();
        now - now % 60_000 + 1_000
    }

    /// Redis going away lets requests through (fail open) instead of
    /// failing them, without waiting long for it.
    #[tokio::test]
    async fn a_redis_that_goes_away_lets_requests_through() {
        let ca = echo_testkit::tls::TestCa::new();
        let redis = echo_testkit::tls::TlsRedis::start("a_redis_that_goes_away", &ca);
        let roots = TrustedRoots::load(Some(&ca.ca_file)).unwrap();
        let counters = RedisCounters::open(&redis.url(), &roots, "echo:limit:")
            .await
            .unwrap();
        let limit = SharedLimiter::new(Arc::new(counters), "login");
        let window = Window::per_minute(1);
        let now = unix_minute();
        assert!(limit.hit("ip", window, now).await.is_ok());
        assert!(limit.hit("ip", window, now).await.is_err());
        drop(redis);
        let started = std::time::Instant::now();
        assert!(limit.hit("ip", window, now).await.is_ok(), "fails open");
        assert!(limit.full("ip", window, now).await.is_none());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "an unreachable store does not hold requests"
        );
    }
}
