//! The provider's signing keys.
//!
//! Keys live in the store with their private half sealed by the master key
//! (AES-256-GCM, bound to the `kid`). At start the ring opens every stored
//! key and creates one for each algorithm it needs but lacks; JWKS publishes
//! every key it holds. Rotation, retirement and per-audience keys build on
//! this ring (issue 4).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use axum::body::Bytes;
use echo_core::Clock;
use echo_crypto::seal::MasterKey;
use echo_crypto::secret::{b64url, random_bytes};
use echo_crypto::{Algorithm, CryptoError, JwkSet, SigningKey};
use echo_store::{KeyStore, StoreError, StoredKey};
use echo_verify::{JwksSource, VerifyError};

use crate::{IdentityError, Result};

struct Ring {
    /// The newest key of each algorithm: the one that signs.
    signers: HashMap<Algorithm, Arc<SigningKey>>,
    jwks: JwkSet,
    /// The JWKS document, serialised once: it is served on every GET.
    jwks_json: Bytes,
}

/// The signing keys and the JWKS that publishes them.
pub struct KeyRing {
    ring: RwLock<Arc<Ring>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

fn new_kid(alg: Algorithm) -> String {
    format!(
        "{}-{}",
        alg.as_str().to_ascii_lowercase(),
        b64url(&random_bytes::<9>())
    )
}

impl KeyRing {
    /// Opens the stored keys and creates any of `algs` that is missing.
    pub async fn load_or_create(
        store: &dyn KeyStore,
        master: &MasterKey,
        algs: &[Algorithm],
        clock: &dyn Clock,
    ) -> Result<Self> {
        let mut stored = store.keys().await?;
        for &alg in algs {
            if stored.iter().any(|k| k.alg == alg.as_str()) {
                continue;
            }
            let key = SigningKey::generate(alg, new_kid(alg))?;
            let record = StoredKey {
                kid: key.kid().to_owned(),
                alg: alg.as_str().to_owned(),
                sealed_private: master.seal(key.kid().as_bytes(), &key.to_pkcs8()?)?,
                public_jwk: serde_json::to_string(&key.public_jwk())
                    .map_err(|e| IdentityError::Store(StoreError::Corrupt(e.to_string())))?,
                created_at: clock.now(),
            };
            store.insert_key(&record).await?;
            tracing::info!(kid = key.kid(), %alg, "created signing key");
            stored.push(record);
        }
        let mut signers = HashMap::new();
        let mut jwks = JwkSet::default();
        for record in &stored {
            let alg = Algorithm::parse(&record.alg)?;
            let der = master.open(record.kid.as_bytes(), &record.sealed_private).map_err(|_| {
                CryptoError::KeyRejected(format!(
                    "cannot open signing key {}: is ECHO_MASTER_KEY (or master.key) the one it was sealed with?",
                    record.kid
                ))
            })?;
            let key = SigningKey::from_pkcs8(alg, record.kid.clone(), &der)?;
            jwks.keys.push(key.public_jwk());
            // Stored oldest first, so the last of each algorithm wins.
            signers.insert(alg, Arc::new(key));
        }
        let jwks_json = Bytes::from(serde_json::to_vec(&jwks).unwrap_or_default());
        Ok(Self {
            ring: RwLock::new(Arc::new(Ring {
                signers,
                jwks,
                jwks_json,
            })),
        })
    }

    fn ring(&self) -> Option<Arc<Ring>> {
        self.ring.read().ok().map(|r| r.clone())
    }

    /// The key that signs tokens of `alg`.
    pub fn signer(&self, alg: Algorithm) -> Result<Arc<SigningKey>> {
        self.ring()
            .and_then(|r| r.signers.get(&alg).cloned())
            .ok_or_else(|| {
                IdentityError::Crypto(CryptoError::UnsupportedAlgorithm(alg.as_str().into()))
            })
    }

    pub fn jwks(&self) -> JwkSet {
        self.ring().map(|r| r.jwks.clone()).unwrap_or_default()
    }

    pub fn jwks_json(&self) -> Bytes {
        self.ring().map(|r| r.jwks_json.clone()).unwrap_or_default()
    }
}

/// Identity verifies its own tokens (userinfo, `/verify`, `id_token_hint`)
/// with the same verifier as every service, fed from the ring directly.
#[async_trait]
impl JwksSource for KeyRing {
    async fn fetch(&self) -> Result<JwkSet, VerifyError> {
        Ok(self.jwks())
    }
}
