//! [`TokenCache`]: the tokens the gateway sends on, by whose they are and
//! for which audience, until shortly before they expire.

use std::collections::HashMap;
use std::sync::Mutex;

use echo_core::sync::lock;

/// A cached token is not handed out this close to its expiry (seconds).
const EXPIRY_MARGIN: i64 = 30;
/// Entries kept before expired ones are swept.
const SWEEP_AT: usize = 10_000;

/// Tokens by `(whose, audience)`, with their expiry (Unix seconds).
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<HashMap<(String, String), (String, i64)>>);

impl TokenCache {
    pub(crate) fn get(&self, key: &(String, String), now: i64) -> Option<String> {
        let map = lock(&self.0);
        map.get(key)
            .filter(|(_, exp)| exp - EXPIRY_MARGIN > now)
            .map(|(token, _)| token.clone())
    }

    /// Drops the tokens exchanged for the bearer token of hash `whose`.
    pub(crate) fn forget(&self, whose: &str) {
        lock(&self.0).retain(|(key, _), _| key != whose);
    }

    /// Drops the tokens exchanged for session `id_hash` (under any of its
    /// access tokens).
    pub(crate) fn forget_session(&self, id_hash: &str) {
        let prefix = format!("session {id_hash} ");
        lock(&self.0).retain(|(key, _), _| !key.starts_with(&prefix));
    }

    pub(crate) fn put(&self, key: (String, String), token: String, expires_at: i64, now: i64) {
        let mut map = lock(&self.0);
        if map.len() >= SWEEP_AT {
            map.retain(|_, (_, exp)| *exp - EXPIRY_MARGIN > now);
        }
        map.insert(key, (token, expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_tokens_are_not_handed_out_near_expiry() {
        let cache = TokenCache::default();
        let key = ("h".to_owned(), "docs".to_owned());
        cache.put(key.clone(), "t".into(), 1000, 0);
        assert_eq!(cache.get(&key, 900).as_deref(), Some("t"));
        assert_eq!(cache.get(&key, 1000 - EXPIRY_MARGIN), None);
        assert_eq!(cache.get(&("h".into(), "other".into()), 0), None);
    }
}
