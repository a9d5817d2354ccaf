//! Client registrations on the token endpoint's hot path: every token
//! request authenticates its client, so found registrations are kept for
//! [`CLIENT_CACHE_SECONDS`] (see [`FreshCache`]). Unknown ids are never
//! cached, so a client added with `echod client add` works at once; a
//! changed registration takes effect within that bound, except that a failed
//! authentication reads the registration again ([`ClientCache::reload`])
//! before refusing, so a rotated secret or new key works at once.

use std::sync::Arc;

use echo_identity_store::{Client, ClientStore};

use crate::Result;
use crate::fresh_cache::FreshCache;

pub const CLIENT_CACHE_SECONDS: i64 = 2;

pub(crate) struct ClientCache {
    entries: FreshCache<Arc<Client>>,
}

impl ClientCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: FreshCache::new(capacity, CLIENT_CACHE_SECONDS),
        }
    }

    /// The registration of `id`, from memory if read less than
    /// [`CLIENT_CACHE_SECONDS`] ago.
    pub async fn get(
        &self,
        store: &dyn ClientStore,
        id: &str,
        now: i64,
    ) -> Result<Option<Arc<Client>>> {
        if let Some(client) = self.entries.get(id, now) {
            return Ok(Some(client));
        }
        self.reload(store, id, now).await
    }

    /// The registration of `id`, read from the store now.
    pub async fn reload(
        &self,
        store: &dyn ClientStore,
        id: &str,
        now: i64,
    ) -> Result<Option<Arc<Client>>> {
        let client = store.client(id).await?.map(Arc::new);
        match &client {
            Some(client) => self.entries.insert(id, client.clone(), now),
            None => self.entries.remove(id),
        }
        Ok(client)
    }
}
