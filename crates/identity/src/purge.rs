//! The scheduler that keeps token tables bounded.
//!
//! Every [`IdentityConfig::purge_interval`] seconds it deletes expired
//! authorization codes (used or not), refresh tokens past their idle or
//! absolute lifetime (and revoked ones, which expire when revoked),
//! revocation entries whose access token has expired anyway, used
//! client-assertion ids past their `exp`, and ended SSO sessions, at most
//! [`IdentityConfig::purge_batch`] rows per statement so no statement holds
//! the database (SQLite's single writer especially) for long. A used
//! refresh token is kept until it expires: reuse detection needs it.
//!
//! [`IdentityConfig::purge_interval`]: crate::IdentityConfig::purge_interval
//! [`IdentityConfig::purge_batch`]: crate::IdentityConfig::purge_batch

use std::sync::Arc;
use std::time::Duration;

use echo_edge::Periodic;
use echo_identity_store::Purged;

use crate::{Provider, Result};

impl Provider {
    /// One purge of everything that has ended by now.
    pub async fn purge_expired(&self) -> Result<Purged> {
        let purged = self
            .store
            .purge_expired(self.clock.now(), self.config.purge_batch)
            .await?;
        if purged != Purged::default() {
            tracing::info!(
                codes = purged.codes,
                refresh_tokens = purged.refresh_tokens,
                revoked_tokens = purged.revoked_tokens,
                client_assertions = purged.client_assertions,
                sessions = purged.sessions,
                rate_limit_windows = purged.rate_limit_windows,
                "purged expired rows"
            );
        }
        Ok(purged)
    }
}

/// Purges on the configured schedule, forever; the caller aborts it.
/// The purge, every `purge_interval` seconds from start-up.
pub(crate) fn job(provider: Arc<Provider>) -> Periodic {
    let interval = Duration::from_secs(provider.config().purge_interval);
    Periodic::every("purge", interval, move || {
        let provider = provider.clone();
        async move { provider.purge_expired().await.map(drop) }
    })
    .at_start()
}
