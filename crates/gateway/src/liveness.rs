//! [`Liveness`]: when each credential was last confirmed with identity.
//!
//! Tokens verify locally, so a user suspended or deleted (identity then
//! revokes their refresh tokens and access tokens at once) would keep a
//! gateway session, or a bearer token, until the access token expires.
//! Each gateway therefore asks identity whether a credential is still
//! active (RFC 7662) on its first use [`CHECK_EVERY`] after the last
//! answer: a session's refresh token (its access token if it has none), a
//! bearer token. An inactive one ends the session, or is refused, along
//! with the tokens exchanged for it. With identity's own revocation cache
//! (2 s) the bound is 5 s, on every gateway, for busy credentials; an idle
//! one is checked before its next use.
//!
//! Identity unreachable: the credential is used as verified (signature,
//! expiry) until the next check, as the verifier uses its cached keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use echo_core::sync::lock;

/// How long an answer of identity's is relied on.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 10_000;

/// The next check of each credential (by its hash).
#[derive(Debug, Default)]
pub(crate) struct Liveness(Mutex<HashMap<String, Instant>>);

impl Liveness {
    /// Whether `key` is due for a check at `now`; if so, the next check is
    /// booked at once, so parallel requests ask identity once.
    pub(crate) fn due(&self, key: &str, now: Instant) -> bool {
        let mut next = lock(&self.0);
        if next.get(key).is_some_and(|at| now < *at) {
            return false;
        }
        if next.len() >= SWEEP_AT {
            next.retain(|_, at| now < *at);
        }
        next.insert(key.to_owned(), now + CHECK_EVERY);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_checked_once_per_interval() {
        let liveness = Liveness::default();
        let t0 = Instant::now();
        assert!(liveness.due("a", t0), "first use");
        assert!(!liveness.due("a", t0), "booked");
        assert!(liveness.due("b", t0), "apart");
        assert!(!liveness.due("a", t0 + CHECK_EVERY / 2));
        assert!(liveness.due("a", t0 + CHECK_EVERY));
    }
}
