//! Single flight for refreshes: of many requests of one session arriving
//! as its access token expires, one refreshes and the others wait for its
//! result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use echo_core::sync::lock;

/// One async mutex per session being refreshed, so that of many requests
/// arriving as the access token expires one refreshes and the others wait
/// for its result: a refresh token is rotated on use, and racing it would
/// spend it twice. Entries live as long as someone holds or waits on them.
///
/// This serializes refreshes within one gateway process. Identity grants
/// no grace for a rotated refresh token by default, so replicas sharing a
/// session store need its `--refresh-grace` (docs/gateway.md).
#[derive(Default)]
pub(crate) struct RefreshLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl RefreshLocks {
    pub(crate) fn lock_for(&self, id_hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = lock(&self.0);
        if let Some(lock) = map.get(id_hash).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id_hash.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_locks_are_shared_per_session_and_dropped_after_use() {
        let locks = RefreshLocks::default();
        let a = locks.lock_for("a");
        assert!(Arc::ptr_eq(&a, &locks.lock_for("a")));
        assert!(!Arc::ptr_eq(&a, &locks.lock_for("b")));
        drop(a);
        let _c = locks.lock_for("c");
        let map = lock(&locks.0);
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec!["c"],
            "unused entries go"
        );
    }
}
