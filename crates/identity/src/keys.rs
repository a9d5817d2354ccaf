//! The provider's signing keys: the ring that signs and publishes, its
//! lifecycle ([`state`]) and the operations on it ([`admin`]).
//!
//! Keys live in the store with their private half sealed by the master key
//! (AES-256-GCM, bound to the `kid`). Each key has a scope — an algorithm
//! and optionally one audience — and a life derived from its stored times:
//! published ahead of its activation (`next`), signing (`active`), then,
//! once the next key of its scope activates, published without signing
//! (`retired`) until the last token it signed has expired. A revoked key
//! leaves the JWKS at once. See `keys/state.rs`.
//!
//! The [`KeyRing`] is a snapshot of the store, reloaded every
//! [`KeyPolicy::reload_interval`] seconds by [`run`] (which also rotates
//! keys due for rotation), so `echod keys …` run against the shared
//! database takes effect on every running server within that bound. Which
//! key signs is decided per token from the snapshot's times, so activation
//! and retirement happen at their instant, not at the next reload.

mod admin;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use echo_core::sync::{read, write};
use echo_crypto::seal::MasterKey;
use echo_crypto::{Algorithm, CryptoError, Jwk, JwkSet, SigningKey};
use echo_edge::Periodic;
use echo_identity_store::{KeyStore, StoreError, StoredKey};
use echo_verify::{JwksSource, VerifyError};

pub use admin::{KeyAdmin, KeyInfo, Revocation};
pub use state::KeyState;

use crate::{IdentityError, Provider, Result};

/// How signing keys rotate. Times are in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPolicy {
    /// How long a new key is published before it signs. It must cover the
    /// time every verifier needs to see it: a server's reload interval plus
    /// a verifier's JWKS refresh bound (`echo-verify` refetches keys older
    /// than 5 min) plus the JWKS response's `max-age` (60 s). Default
    /// 10 min.
    pub publish_delay: i64,
    /// Age at which a key is replaced automatically (its successor created
    /// `publish_delay` earlier); 0 turns automatic rotation off. Default
    /// 30 days.
    pub rotation_interval: i64,
    /// How often a running server reloads its keys from the store (and
    /// rotates those due); 0 never does. Default 10 s.
    pub reload_interval: u64,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            publish_delay: 10 * 60,
            rotation_interval: 30 * 24 * 60 * 60,
            reload_interval: 10,
        }
    }
}

impl KeyPolicy {
    /// Refuses a schedule that cannot work: negative times, or rotating
    /// more often than a key can be published ahead.
    pub fn validate(&self) -> Result<()> {
        if self.publish_delay < 0 || self.rotation_interval < 0 {
            return Err(IdentityError::BadInput(
                "key publish delay and rotation interval cannot be negative".into(),
            ));
        }
        if self.rotation_interval != 0 && self.rotation_interval <= self.publish_delay {
            return Err(IdentityError::BadInput(
                "the key rotation interval must be longer than the publish delay".into(),
            ));
        }
        Ok(())
    }
}

/// The keys as of the last load.
struct Ring {
    records: Vec<StoredKey>,
    /// The opened private keys of every key that signs now or will.
    signing: HashMap<String, Arc<SigningKey>>,
    jwks: JwkSet,
    /// The JWKS document, serialised once: it is served on every GET.
    jwks_json: Bytes,
}

/// The signing keys and the JWKS that publishes them.
pub struct KeyRing {
    master: MasterKey,
    /// How long a retired key stays published.
    retention: i64,
    ring: RwLock<Arc<Ring>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Opens the stored keys as of `now`; a retired key stays published for
    /// `retention` seconds.
    pub async fn load(
        store: &dyn KeyStore,
        master: MasterKey,
        retention: i64,
        now: i64,
    ) -> Result<Self> {
        let ring = build(store.keys().await?, None, &master, retention, now)?;
        Ok(Self {
            master,
            retention,
            ring: RwLock::new(Arc::new(ring)),
        })
    }

    /// Re-reads the keys from the store; keys opened before are reused.
    pub async fn reload(&self, store: &dyn KeyStore, now: i64) -> Result<()> {
        let records = store.keys().await?;
        let previous = self.ring();
        let ring = build(records, Some(&previous), &self.master, self.retention, now)?;
        *write(&self.ring) = Arc::new(ring);
        Ok(())
    }

    fn ring(&self) -> Arc<Ring> {
        read(&self.ring).clone()
    }

    /// The key that signs a token of `alg` for `audience` at `now`: the
    /// active key scoped to that audience, else the active general key.
    pub fn signer(
        &self,
        alg: Algorithm,
        audience: Option<&str>,
        now: i64,
    ) -> Result<Arc<SigningKey>> {
        let ring = self.ring();
        state::signer(&ring.records, alg.as_str(), audience, now)
            .and_then(|record| ring.signing.get(&record.kid).cloned())
            .ok_or_else(|| {
                IdentityError::Crypto(CryptoError::UnsupportedAlgorithm(alg.as_str().into()))
            })
    }

    /// RFC 7517 §5: the published keys (next, active and retired).
    pub fn jwks(&self) -> JwkSet {
        self.ring().jwks.clone()
    }

    pub fn jwks_json(&self) -> Bytes {
        self.ring().jwks_json.clone()
    }
}

/// The ring for `records` at `now`, opening the private keys that sign now
/// or will (reusing those `previous` opened).
fn build(
    records: Vec<StoredKey>,
    previous: Option<&Ring>,
    master: &MasterKey,
    retention: i64,
    now: i64,
) -> Result<Ring> {
    let mut signing = HashMap::new();
    let mut jwks = JwkSet::default();
    for record in &records {
        let state = state::state(record, &records, now, retention);
        if state.published() {
            let jwk: Jwk = serde_json::from_str(&record.public_jwk)
                .map_err(|e| StoreError::Corrupt(format!("public key of {}: {e}", record.kid)))?;
            jwks.keys.push(jwk);
        }
        if matches!(state, KeyState::Next | KeyState::Active) {
            let key = match previous.and_then(|p| p.signing.get(&record.kid)) {
                Some(key) => key.clone(),
                None => Arc::new(open(master, record)?),
            };
            signing.insert(record.kid.clone(), key);
        }
    }
    let jwks_json = Bytes::from(serde_json::to_vec(&jwks).unwrap_or_default());
    Ok(Ring {
        records,
        signing,
        jwks,
        jwks_json,
    })
}

fn open(master: &MasterKey, record: &StoredKey) -> Result<SigningKey> {
    let alg = Algorithm::parse(&record.alg)?;
    let der = master
        .open(record.kid.as_bytes(), &record.sealed_private)
        .map_err(|_| {
            CryptoError::KeyRejected(format!(
                "cannot open signing key {}: is ECHO_MASTER_KEY (or master.key) the one it was sealed with?",
                record.kid
            ))
        })?;
    Ok(SigningKey::from_pkcs8(alg, record.kid.clone(), &der)?)
}

/// Identity verifies its own tokens (userinfo, `/verify`, `id_token_hint`)
/// with the same verifier as every service, fed from the ring directly.
#[async_trait]
impl JwksSource for KeyRing {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        Ok(self.jwks())
    }
}

impl Provider {
    /// The key operations, as this server (actor `identity`) runs them.
    pub fn key_admin(&self) -> KeyAdmin<'_> {
        KeyAdmin::new(
            &*self.store,
            &self.keys.master,
            &*self.audit,
            &*self.clock,
            &self.config,
            crate::token::IDENTITY_SERVICE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_must_leave_room_to_publish_ahead() {
        assert!(KeyPolicy::default().validate().is_ok());
        let off = KeyPolicy {
            rotation_interval: 0,
            ..KeyPolicy::default()
        };
        assert!(off.validate().is_ok(), "0 turns rotation off");
        for (publish_delay, rotation_interval) in [(600, 600), (600, 60), (-1, 0), (0, -1)] {
            let policy = KeyPolicy {
                publish_delay,
                rotation_interval,
                reload_interval: 10,
            };
            assert!(policy.validate().is_err(), "{policy:?}");
        }
    }
}
