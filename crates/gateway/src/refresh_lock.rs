//! Single flight for refreshes: of many requests of one session arriving
//! as its access token expires, one refreshes and the others wait for its
//! result — a refresh token is rotated on use, and racing it would spend it
//! twice.
//!
//! Within a process, one async mutex per session being refreshed. When the
//! session store is shared by several gateways (Redis), the store's
//! [`SharedLock`] too: the holder of the process's mutex then takes the
//! store's lock (Redis `SET NX PX`, released only by the token that took
//! it), so one request in the whole cluster refreshes, and the others find
//! the new tokens in the store when their turn comes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use echo_core::sync::lock;
use echo_crypto::secret::random_token;
use tokio::sync::OwnedMutexGuard;

use crate::{GatewayError, Result};

/// How long a shared lock is held at most: a refresh's token request times
/// out in 10 s; a gateway that dies holding the lock delays the session's
/// next refresh by no more than this.
pub(crate) const SHARED_LOCK_TTL: Duration = Duration::from_secs(15);
/// How often a request waiting for another gateway's refresh looks again.
const SHARED_LOCK_POLL: Duration = Duration::from_millis(20);

/// A lock every gateway sharing a session store sees, with an expiry.
#[async_trait]
pub trait SharedLock: Send + Sync {
    /// Takes `name` for `ttl` with `token` unless someone holds it;
    /// whether it was taken.
    async fn try_lock(&self, name: &str, token: &str, ttl: Duration) -> Result<bool>;
    /// Releases `name` if `token` still holds it (not once it expired and
    /// another took it).
    async fn unlock(&self, name: &str, token: &str) -> Result<()>;
}

/// The refresh locks of every session of this gateway.
pub(crate) struct RefreshLocks {
    local: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    /// The session store's, when other gateways share it.
    shared: Option<Arc<dyn SharedLock>>,
}

/// A held refresh lock; dropping it releases it.
pub(crate) struct RefreshGuard {
    _local: OwnedMutexGuard<()>,
    shared: Option<(Arc<dyn SharedLock>, String, String)>,
}

impl RefreshLocks {
    pub(crate) fn new(shared: Option<Arc<dyn SharedLock>>) -> Self {
        Self {
            local: Mutex::default(),
            shared,
        }
    }

    /// Waits until this request may refresh session `id_hash`.
    pub(crate) async fn lock(&self, id_hash: &str) -> Result<RefreshGuard> {
        let local = self.local_lock(id_hash).lock_owned().await;
        let Some(shared) = &self.shared else {
            return Ok(RefreshGuard {
                _local: local,
                shared: None,
            });
        };
        let token = random_token();
        // Past the lock's expiry it is free, so this waits no longer
        // unless others keep taking it first.
        let deadline = tokio::time::Instant::now() + SHARED_LOCK_TTL + SHARED_LOCK_POLL;
        while !shared.try_lock(id_hash, &token, SHARED_LOCK_TTL).await? {
            if tokio::time::Instant::now() >= deadline {
                return Err(GatewayError::Storage(
                    "the session's refresh stayed locked by other gateways".into(),
                ));
            }
            tokio::time::sleep(SHARED_LOCK_POLL).await;
        }
        Ok(RefreshGuard {
            _local: local,
            shared: Some((shared.clone(), id_hash.to_owned(), token)),
        })
    }

    /// Entries live as long as someone holds or waits on them.
    fn local_lock(&self, id_hash: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = lock(&self.local);
        if let Some(lock) = map.get(id_hash).and_then(Weak::upgrade) {
            return lock;
        }
        map.retain(|_, lock| lock.strong_count() > 0);
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(id_hash.to_owned(), Arc::downgrade(&lock));
        lock
    }
}

impl Drop for RefreshGuard {
    /// Releases the shared lock in the background: a request dropped
    /// mid-refresh (its client went away) frees it too.
    fn drop(&mut self) {
        if let Some((shared, name, token)) = self.shared.take() {
            tokio::spawn(async move {
                if let Err(e) = shared.unlock(&name, &token).await {
                    tracing::warn!(error = %e, "cannot release a refresh lock; it expires by itself");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{RedisSessionStore, SessionStore};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Two gateways over one Redis: of ten requests refreshing one session,
    /// spread over both, one at a time holds the lock, and the lock is gone
    /// once they are done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn gateways_sharing_a_redis_refresh_one_at_a_time() {
        let url = echo_testkit::redis_url();
        let prefix = format!("echo:test:{}:refresh_lock:", std::process::id());
        let store =
            RedisSessionStore::open(&url, &echo_crypto::TrustedRoots::system(), &prefix, 60)
                .await
                .unwrap_or_else(|e| panic!("Redis at {url} is not reachable ({e})"));
        let gateways = [
            Arc::new(RefreshLocks::new(store.shared_lock())),
            Arc::new(RefreshLocks::new(store.shared_lock())),
        ];
        let inside = Arc::new(AtomicUsize::new(0));
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..10 {
            let (locks, inside) = (gateways[i % 2].clone(), inside.clone());
            requests.spawn(async move {
                let _refreshing = locks.lock("session").await.unwrap();
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "one at a time");
                tokio::time::sleep(Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            });
        }
        while let Some(request) = requests.join_next().await {
            request.unwrap();
        }
        let lock = store.shared_lock().unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !lock
            .try_lock("session", "probe", SHARED_LOCK_TTL)
            .await
            .unwrap()
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the lock is released"
            );
            tokio::time::sleep(SHARED_LOCK_POLL).await;
        }
        lock.unlock("session", "probe").await.unwrap();
    }

    #[test]
    fn refresh_locks_are_shared_per_session_and_dropped_after_use() {
        let locks = RefreshLocks::new(None);
        let a = locks.local_lock("a");
        assert!(Arc::ptr_eq(&a, &locks.local_lock("a")));
        assert!(!Arc::ptr_eq(&a, &locks.local_lock("b")));
        drop(a);
        let _c = locks.local_lock("c");
        let map = lock(&locks.local);
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec!["c"],
            "unused entries go"
        );
    }
}
