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
//! [`crate::config::KeyPolicy::reload_interval`] seconds by [`run`] (which also rotates
//! keys due for rotation), so `echod keys …` run against the shared
//! database takes effect on every running server within that bound. Which
//! key signs is decided per token from the snapshot's times, so activation
//! and retirement happen at their instant, not at the next reload.

mod admin;
mod state;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::body::Bytes;
use echo_core::sync::{read, write};
use echo_crypto::seal::MasterKey;
use echo_crypto::{Algorithm, CryptoError, Jwk, JwkSet, SigningKey};
use echo_identity_store::{KeyStore, StoreError, StoredKey};
use echo_verify::{JwksSource, VerifyError};

pub use admin::{KeyAdmin, KeyInfo, Revocation};
pub use state::KeyState;

use crate::{IdentityError, Result};

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
    pub(crate) master: MasterKey,
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
