//! Copies of database answers on hot paths, used while they are younger
//! than a bound.
//!
//! Reading the database on every token request costs more than signing or
//! verifying the token (measured: the SQLite round trip through its worker
//! thread dominates a client-credentials request or an introspection). So
//! answers that change rarely are kept for a few seconds: a change made by
//! this process drops or replaces its copies at once, and a change made
//! elsewhere (the CLI, another instance) is seen within the bound.

use quick_cache::sync::Cache;

pub(crate) struct FreshCache<V: Clone> {
    entries: Cache<String, (V, i64)>,
    max_age: i64,
}

impl<V: Clone> FreshCache<V> {
    /// A cache of at most `capacity` entries, each used for `max_age`
    /// seconds after it was read.
    pub fn new(capacity: usize, max_age: i64) -> Self {
        Self {
            entries: Cache::new(capacity),
            max_age,
        }
    }

    /// The copy of `key` if it was read less than `max_age` seconds before
    /// `now`.
    pub fn get(&self, key: &str, now: i64) -> Option<V> {
        self.entries
            .get(key)
            .filter(|(_, read_at)| now - read_at < self.max_age)
            .map(|(value, _)| value)
    }

    pub fn insert(&self, key: &str, value: V, now: i64) {
        self.entries.insert(key.to_owned(), (value, now));
    }

    pub fn remove(&self, key: &str) {
        self.entries.remove(key);
    }

    /// Drops every copy (after a change that may touch many keys).
    pub fn clear(&self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_are_used_until_they_are_too_old() {
        let cache = FreshCache::new(10, 2);
        cache.insert("a", 1, 100);
        assert_eq!(cache.get("a", 101), Some(1));
        assert_eq!(cache.get("a", 102), None, "two seconds old");
        cache.insert("a", 2, 102);
        cache.remove("a");
        assert_eq!(cache.get("a", 102), None);
        cache.insert("b", 3, 102);
        cache.clear();
        assert_eq!(cache.get("b", 102), None);
    }
}
