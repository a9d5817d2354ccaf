//! Keeping a running server's signing keys current: the key operations as
//! the server runs them, and the periodic job that rotates the keys due
//! and reloads the ring from the store (picking up `echod keys` and other
//! servers' changes). Apart from `keys.rs`, which knows nothing of the
//! provider.

use std::sync::Arc;
use std::time::Duration;

use echo_edge::Periodic;

use crate::keys::KeyAdmin;
use crate::{Provider, Result};

impl Provider {
    /// The key operations, as this server (actor `identity`) runs them.
    pub fn key_admin(&self) -> KeyAdmin<'_> {
        KeyAdmin::new(
            &*self.store,
            &self.keys.master,
            &*self.audit,
            &*self.clock,
            &self.config,
            crate::grant::IDENTITY_SERVICE,
        )
    }

    /// Rotates the keys due for automatic rotation (when it is on), then
    /// reloads the ring from the store, picking up what `echod keys` or
    /// another server changed (also when the rotation failed).
    pub async fn refresh_keys(&self) -> Result<()> {
        let interval = self.config.keys.rotation_interval;
        let rotated = match interval {
            0 => Ok(()),
            _ => self.key_admin().rotate_due(interval).await,
        };
        self.keys.reload(&*self.store, self.clock.now()).await?;
        rotated
    }
}

/// Refreshes the keys on the configured schedule, forever; the caller
/// aborts it. A failed reload keeps the keys loaded before.
/// The key refresh (and scheduled rotation), every `reload_interval`
/// seconds from start-up.
pub(crate) fn job(provider: Arc<Provider>) -> Periodic {
    let interval = Duration::from_secs(provider.config().keys.reload_interval);
    Periodic::every("key refresh", interval, move || {
        let provider = provider.clone();
        async move { provider.refresh_keys().await }
    })
    .at_start()
}
