//! [`KeyCache`]: an issuer's public keys as a verifier holds them, and how
//! they are fetched without ever making callers wait on a slow issuer.
//!
//! - Keys older than `max_key_age` are refetched in the background: the
//!   caller that notices goes on verifying with the keys it has.
//! - A token naming an unknown `kid` fetches at once (a new key is picked
//!   up on first sight), at most once per `refresh_interval`; concurrent
//!   callers share one fetch (single flight).
//! - A failed fetch keeps the keys already known, so their tokens still
//!   pass while the issuer is unreachable, and backs off: the next attempt
//!   waits `refresh_interval` doubled for each failure in a row (at most
//!   [`MAX_BACKOFF`]), counted from the last attempt, so a down or stalled
//!   issuer sees a trickle of fetches, not one per request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use echo_core::sync::{read, write};
use echo_crypto::{JwkSet, VerifyingKey};

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
    last: Option<Instant>,
    failures_in_a_row: u32,
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
    set: RwLock<Arc<KeySet>>,
    /// Held while fetching: the single flight.
    attempts: tokio::sync::Mutex<Attempts>,
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
            set: RwLock::new(Arc::new(KeySet::default())),
            attempts: tokio::sync::Mutex::new(Attempts::default()),
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

    /// Starts a fetch in the background if the keys are old, no fetch is
    /// running and the backoff allows one; never waits.
    pub(crate) fn refresh_in_background(self: &Arc<Self>) {
        if !self.is_stale() {
            return;
        }
        let Ok(attempts) = self.attempts.try_lock() else {
            return;
        };
        if !attempts.allowed(self.refresh_interval) {
            return;
        }
        drop(attempts);
        let keys = self.clone();
        tokio::spawn(async move {
            let interval = keys.refresh_interval;
            keys.refresh_if(|a| keys.is_stale() && a.allowed(interval))
                .await;
        });
    }

    /// The key named `kid`, fetching the set first if it is unknown and a
    /// fetch is allowed.
    pub(crate) async fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, VerifyError> {
        if let Some(key) = self.current().keys.get(kid) {
            return Ok(key.clone());
        }
        let interval = self.refresh_interval;
        self.refresh_if(|a| a.allowed(interval)).await;
        let keys = self.current();
        match (keys.keys.get(kid), &keys.last_error) {
            (Some(key), _) => Ok(key.clone()),
            (None, Some(error)) => Err(VerifyError::KeysUnavailable(error.clone())),
            (None, None) => Err(VerifyError::UnknownKey),
        }
    }

    /// Fetches the key set if `due` still holds once the fetch lock is
    /// held (so concurrent callers fetch once).
    pub(crate) async fn refresh_if(&self, due: impl Fn(&Attempts) -> bool) {
        let mut attempts = self.attempts.lock().await;
        if !due(&attempts) {
            return;
        }
        attempts.last = Some(Instant::now());
        let fetched = self.source.fetch().await;
        let previous = self.current();
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
