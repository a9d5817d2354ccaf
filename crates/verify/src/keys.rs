//! [`KeyCache`]: an issuer's public keys as a verifier holds them, and how
//! they are fetched without making callers wait on a slow issuer.
//!
//! - Keys older than `max_key_age` are refetched. The caller that notices
//!   waits for the fetch at most `stale_wait` (a healthy issuer answers in
//!   a millisecond, so a revoked key is dropped at once); past that it
//!   verifies with the keys it has while the fetch goes on in the
//!   background, and so does everyone else meanwhile.
//! - A token naming an unknown `kid` fetches at once (a new key is picked
//!   up on first sight) and waits for the answer, at most once per
//!   `refresh_interval`. While no key at all is known (a service that has
//!   just started, whose issuer was not reachable yet), the interval is
//!   not waited for: only the backoff after failures spaces the attempts,
//!   so a service is ready a second after its issuer is, not
//!   `refresh_interval` later.
//! - One fetch runs at a time; whoever needs one while it runs joins it.
//! - A failed fetch keeps the keys already known, so their tokens still
//!   pass while the issuer is unreachable, and backs off: each failure in
//!   a row doubles the wait before the next attempt (from a second, or
//!   from `refresh_interval` for unknown `kid`s; at most [`MAX_BACKOFF`]),
//!   counted from the last attempt, so a down or stalled issuer sees a
//!   trickle of fetches, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use echo_core::sync::{lock, read, write};
use echo_crypto::{JwkSet, VerifyingKey};
use tokio::sync::watch;

use crate::{JwksSource, VerifierOptions, VerifyError};

/// The longest wait between two fetches after failures.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) keys: HashMap<String, Arc<VerifyingKey>>,
    fetched_at: Option<Instant>,
    last_error: Option<String>,
}

/// When fetches were tried, for the rate limit and the backoff.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    /// When the last (or the running) fetch started.
    last: Option<Instant>,
    failures_in_a_row: u32,
    in_flight: bool,
}

impl Attempts {
    /// Whether a fetch may start now: `interval` after the last attempt,
    /// longer after failures.
    fn allowed(&self, interval: Duration) -> bool {
        let wait = match self.failures_in_a_row {
            0 => interval,
            n => interval
                .max(Duration::from_secs(1))
                .saturating_mul(1 << (n - 1).min(16))
                .min(MAX_BACKOFF)
                .max(interval),
        };
        self.last.is_none_or(|at| at.elapsed() >= wait)
    }
}

/// One issuer's keys (see the module).
pub(crate) struct KeyCache {
    issuer: String,
    source: Arc<dyn JwksSource>,
    refresh_interval: Duration,
    max_key_age: Duration,
    stale_wait: Duration,
    set: RwLock<Arc<KeySet>>,
    attempts: Mutex<Attempts>,
    /// Bumped when a fetch ends, for those waiting on it.
    fetches_done: watch::Sender<u64>,
}

/// Which fetches a caller is willing to start.
enum Due {
    /// Any time (an explicit refresh).
    Always,
    /// When `interval` has passed since the last attempt, and the backoff
    /// after failures allows.
    After(Duration),
}

impl KeyCache {
    pub(crate) fn new(
        issuer: &str,
        source: Arc<dyn JwksSource>,
        options: &VerifierOptions,
    ) -> Self {
        Self {
            issuer: issuer.to_owned(),
            source,
            refresh_interval: options.refresh_interval,
            max_key_age: options.max_key_age,
            stale_wait: options.stale_wait,
            set: RwLock::new(Arc::new(KeySet::default())),
            attempts: Mutex::new(Attempts::default()),
            fetches_done: watch::Sender::new(0),
        }
    }

    pub(crate) fn current(&self) -> Arc<KeySet> {
        read(&self.set).clone()
    }

    fn is_stale(&self) -> bool {
        self.current()
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.max_key_age)
    }

    /// Refetches old keys, waiting for the fetch at most `stale_wait`
    /// after it started; fresh keys return at once.
    pub(crate) async fn refresh_if_stale(self: &Arc<Self>) {
        if !self.is_stale() {
            return;
        }
        let done = self.fetches_done.subscribe();
        // Old keys are refetched as soon as they are old: only failures
        // space the attempts.
        if let Some(started) = self.start_fetch(Due::After(Duration::ZERO)) {
            wait_for(done, Some(started + self.stale_wait)).await;
        }
    }

    /// The key named `kid`, fetching the set first (and waiting for it) if
    /// it is unknown and a fetch is allowed.
    pub(crate) async fn key(self: &Arc<Self>, kid: &str) -> Result<Arc<VerifyingKey>, VerifyError> {
        let known = self.current();
        if let Some(key) = known.keys.get(kid) {
            return Ok(key.clone());
        }
        let done = self.fetches_done.subscribe();
        if self.start_fetch(self.due_for_unknown(&known)).is_some() {
            wait_for(done, None).await;
        }
        let keys = self.current();
        match (keys.keys.get(kid), &keys.last_error) {
            (Some(key), _) => Ok(key.clone()),
            (None, Some(error)) => Err(VerifyError::KeysUnavailable(error.clone())),
            (None, None) => Err(VerifyError::UnknownKey),
        }
    }

    /// Whether tokens can be verified: keys are cached (`ok` when fresh,
    /// `cached` when old), or a fetch allowed now brings some.
    pub(crate) async fn ready(self: &Arc<Self>) -> Result<&'static str, String> {
        let known = |keys: &KeySet| !keys.keys.is_empty();
        if known(&self.current()) {
            return Ok(if self.is_stale() { "cached" } else { "ok" });
        }
        let done = self.fetches_done.subscribe();
        if self
            .start_fetch(self.due_for_unknown(&self.current()))
            .is_some()
        {
            wait_for(done, None).await;
        }
        let keys = self.current();
        match (&keys.last_error, known(&keys)) {
            (_, true) => Ok("ok"),
            (Some(error), false) => Err(error.clone()),
            (None, false) => Err(format!("{} publishes no usable key", self.issuer)),
        }
    }

    /// When a key not in `known` may be fetched: once per
    /// `refresh_interval`, or as soon as the backoff allows while no fetch
    /// has brought any key yet (see the module). An issuer that answers
    /// with no key is asked once per interval, like any other.
    fn due_for_unknown(&self, known: &KeySet) -> Due {
        if known.keys.is_empty() && known.fetched_at.is_none() {
            Due::After(Duration::ZERO)
        } else {
            Due::After(self.refresh_interval)
        }
    }

    /// Fetches now (or joins the running fetch) and waits for it.
    pub(crate) async fn refresh(self: &Arc<Self>) {
        let done = self.fetches_done.subscribe();
        if self.start_fetch(Due::Always).is_some() {
            wait_for(done, None).await;
        }
    }

    /// Starts a fetch in the background unless one runs (then that one is
    /// joined) or `due` forbids it; returns when the fetch started.
    fn start_fetch(self: &Arc<Self>, due: Due) -> Option<Instant> {
        let mut attempts = lock(&self.attempts);
        if attempts.in_flight {
            return attempts.last;
        }
        if let Due::After(interval) = due
            && !attempts.allowed(interval)
        {
            return None;
        }
        let now = Instant::now();
        attempts.in_flight = true;
        attempts.last = Some(now);
        drop(attempts);
        let fetch = InFlight(self.clone());
        tokio::spawn(async move { fetch.run().await });
        Some(now)
    }

    async fn fetch(&self) {
        let fetched = self.source.fetch().await;
        let previous = self.current();
        let mut attempts = lock(&self.attempts);
        metrics::counter!("echo_jwks_fetches_total").increment(1);
        let next = match fetched {
            Ok(set) => {
                attempts.failures_in_a_row = 0;
                KeySet {
                    keys: parse_keys(&set),
                    fetched_at: Some(Instant::now()),
                    last_error: None,
                }
            }
            Err(e) => {
                metrics::counter!("echo_jwks_fetch_failures_total").increment(1);
                attempts.failures_in_a_row = attempts.failures_in_a_row.saturating_add(1);
                tracing::warn!(issuer = %self.issuer, error = %e, failures = attempts.failures_in_a_row, "JWKS fetch failed; keeping cached keys");
                KeySet {
                    keys: previous.keys.clone(),
                    fetched_at: previous.fetched_at,
                    last_error: Some(e.to_string()),
                }
            }
        };
        *write(&self.set) = Arc::new(next);
    }
}

/// The running fetch. Dropping it, finished or not (a runtime shutting
/// down drops its tasks), lets the next one start and wakes the waiters.
struct InFlight(Arc<KeyCache>);

impl InFlight {
    async fn run(self) {
        self.0.fetch().await;
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.0.attempts).in_flight = false;
        self.0.fetches_done.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Waits for the next fetch to end, or until `deadline`.
async fn wait_for(mut done: watch::Receiver<u64>, deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => {
            let _ = tokio::time::timeout_at(deadline.into(), done.changed()).await;
        }
        None => {
            let _ = done.changed().await;
        }
    }
}

/// Keys we cannot use (no `kid`, unknown type) are skipped, not fatal.
fn parse_keys(set: &JwkSet) -> HashMap<String, Arc<VerifyingKey>> {
    set.keys
        .iter()
        .filter(|jwk| jwk.use_.as_deref().is_none_or(|u| u == "sig"))
        .filter_map(|jwk| match (VerifyingKey::from_jwk(jwk), jwk.kid.clone()) {
            (Ok(key), Some(kid)) => Some((kid, Arc::new(key))),
            (Err(e), kid) => {
                tracing::warn!(?kid, error = %e, "skipping unusable JWK");
                None
            }
            (Ok(_), None) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_doubling_up_to_a_minute() {
        let s = Duration::from_secs;
        let ago = |secs: u64| Some(Instant::now() - s(secs));
        let attempts = |last, failures_in_a_row| Attempts {
            last,
            failures_in_a_row,
            in_flight: false,
        };
        assert!(attempts(None, 0).allowed(s(10)));
        assert!(!attempts(ago(5), 0).allowed(s(10)));
        assert!(attempts(ago(11), 0).allowed(s(10)));
        // After failures: 10 s, 20 s, 40 s, then the 60 s cap.
        assert!(attempts(ago(11), 1).allowed(s(10)));
        assert!(!attempts(ago(11), 2).allowed(s(10)));
        assert!(attempts(ago(21), 2).allowed(s(10)));
        assert!(!attempts(ago(39), 3).allowed(s(10)));
        assert!(!attempts(ago(59), 30).allowed(s(10)));
        assert!(attempts(ago(61), 30).allowed(s(10)));
        // A zero interval (tests) still backs off from a second.
        assert!(!attempts(ago(0), 1).allowed(Duration::ZERO));
    }
}
