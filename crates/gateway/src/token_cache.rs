//! [`TokenCache`]: the tokens the gateway sends on, by whose they are and
//! for which audience, until shortly before they expire. Each is kept as
//! the `Authorization` header it goes out in, so a request that finds its
//! token here copies no token and formats nothing.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::HeaderValue;
use echo_core::sync::lock;

/// A cached token is not handed out this close to its expiry (seconds).
const EXPIRY_MARGIN: i64 = 30;
/// Callers kept before those without a live token are swept.
const SWEEP_AT: usize = 10_000;

/// Exchanged tokens by whose they are: a bearer token's hash, or a
/// session's id hash. Looked up without allocating.
#[derive(Default)]
pub(crate) struct TokenCache(Mutex<HashMap<String, Exchanged>>);

/// One caller's tokens.
struct Exchanged {
    /// Which of the caller's own tokens they were traded from: a session's
    /// access token's expiry (it changes at every refresh), 0 for a bearer
    /// token (its hash names it).
    version: i64,
    /// `(audience, Authorization header, expiry in Unix seconds)`.
    by_audience: Vec<(String, HeaderValue, i64)>,
}

impl TokenCache {
    /// The `Authorization` header for `audience` traded from version
    /// `version` of `whose` credential, if it is good for a while yet.
    pub(crate) fn get(
        &self,
        whose: &str,
        version: i64,
        audience: &str,
        now: i64,
    ) -> Option<HeaderValue> {
        let map = lock(&self.0);
        let exchanged = map.get(whose).filter(|e| e.version == version)?;
        exchanged
            .by_audience
            .iter()
            .find(|(aud, _, exp)| aud == audience && exp - EXPIRY_MARGIN > now)
            .map(|(_, header, _)| header.clone())
    }

    /// Drops the tokens exchanged for `whose` (a bearer token's hash, a
    /// session's id hash).
    pub(crate) fn forget(&self, whose: &str) {
        lock(&self.0).remove(whose);
    }

    /// Keeps `header` for `audience`; tokens of an older `version` of
    /// `whose` credential go.
    pub(crate) fn put(
        &self,
        (whose, version): (&str, i64),
        audience: &str,
        header: HeaderValue,
        expires_at: i64,
        now: i64,
    ) {
        let mut map = lock(&self.0);
        if map.len() >= SWEEP_AT && !map.contains_key(whose) {
            map.retain(|_, e| e.by_audience.iter().any(|t| t.2 - EXPIRY_MARGIN > now));
        }
        let exchanged = map.entry(whose.to_owned()).or_insert(Exchanged {
            version,
            by_audience: Vec::new(),
        });
        if exchanged.version != version {
            exchanged.version = version;
            exchanged.by_audience.clear();
        }
        exchanged
            .by_audience
            .retain(|(aud, _, exp)| aud != audience && exp - EXPIRY_MARGIN > now);
        exchanged
            .by_audience
            .push((audience.to_owned(), header, expires_at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(token: &str) -> HeaderValue {
        HeaderValue::from_str(token).unwrap()
    }

    #[test]
    fn cached_tokens_are_not_handed_out_near_expiry() {
        let cache = TokenCache::default();
        cache.put(("h", 0), "docs", header("t"), 1000, 0);
        assert_eq!(cache.get("h", 0, "docs", 900), Some(header("t")));
        assert_eq!(cache.get("h", 0, "docs", 1000 - EXPIRY_MARGIN), None);
        assert_eq!(cache.get("h", 0, "other", 0), None);
        assert_eq!(cache.get("someone else", 0, "docs", 0), None);
    }

    #[test]
    fn a_refreshed_session_trades_again_and_a_forgotten_one_has_nothing() {
        let cache = TokenCache::default();
        cache.put(("s1", 1_000), "docs", header("old"), 2_000, 0);
        cache.put(("s1", 1_000), "audit", header("old-audit"), 2_000, 0);
        assert_eq!(
            cache.get("s1", 1_900, "docs", 0),
            None,
            "a newer access token"
        );
        cache.put(("s1", 1_900), "docs", header("new"), 2_000, 0);
        assert_eq!(cache.get("s1", 1_900, "docs", 0), Some(header("new")));
        assert_eq!(
            cache.get("s1", 1_000, "audit", 0),
            None,
            "the older ones went"
        );
        cache.forget("s1");
        assert_eq!(cache.get("s1", 1_900, "docs", 0), None);
    }
}
