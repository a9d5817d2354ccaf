//! The operations on signing keys: list, rotate, retire, revoke (the
//! `echod keys` commands), the automatic rotation the server runs, and the
//! first keys it creates. Each change is audited (`key.created`,
//! `key.rotated`, `key.retired`, `key.revoked`), naming the `kid`, never
//! key material.

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::seal::MasterKey;
use echo_crypto::secret::{b64url, random_bytes};
use echo_crypto::{Algorithm, SigningKey};
use echo_identity_store::{KeyStore, StoreError, StoredKey};

use super::state::{self, KeyState, Takeover};
use crate::{IdentityConfig, IdentityError, Result};

/// One key as `echod keys list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: String,
    /// `None` for a general key.
    pub audience: Option<String>,
    pub state: KeyState,
    pub created_at: i64,
    pub activates_at: i64,
    /// When it stops (or stopped) signing, if that is decided.
    pub retires_at: Option<i64>,
    /// When it leaves (or left) the JWKS, if that is decided.
    pub unpublished_at: Option<i64>,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub revoked: KeyInfo,
    /// The key that took over signing, when the revoked key was an
    /// algorithm's active general key.
    pub takeover: Option<KeyInfo>,
}

/// Key operations on the store; the running servers see their effect at
/// their next reload.
pub struct KeyAdmin<'a> {
    pub store: &'a dyn KeyStore,
    /// Seals new private keys.
    pub master: &'a MasterKey,
    pub audit: &'a dyn AuditSink,
    pub clock: &'a dyn Clock,
    /// See [`crate::KeyPolicy::publish_delay`].
    pub publish_delay: i64,
    /// How long a retired key stays published
    /// ([`crate::IdentityConfig::key_retention`]).
    pub retention: i64,
    /// Who acts, for the audit trail: `cli` or `identity`.
    pub actor: &'a str,
}

fn new_kid(alg: Algorithm) -> String {
    format!(
        "{}-{}",
        alg.as_str().to_ascii_lowercase(),
        b64url(&random_bytes::<9>())
    )
}

/// An operator-supplied audience: one token, as clients register them.
fn check_audience(audience: &str) -> Result<()> {
    if audience.is_empty() || audience.len() > 255 || audience.chars().any(char::is_whitespace) {
        return Err(IdentityError::BadInput(format!(
            "invalid audience {audience:?}: 1 to 255 characters, no spaces"
        )));
    }
    Ok(())
}

impl<'a> KeyAdmin<'a> {
    /// The operations under `config`'s key policy, audited as `actor`.
    pub fn new(
        store: &'a dyn KeyStore,
        master: &'a MasterKey,
        audit: &'a dyn AuditSink,
        clock: &'a dyn Clock,
        config: &IdentityConfig,
        actor: &'a str,
    ) -> Self {
        Self {
            store,
            master,
            audit,
            clock,
            publish_delay: config.keys.publish_delay,
            retention: config.key_retention(),
            actor,
        }
    }
}

impl KeyAdmin<'_> {
    /// Every key, in order of activation.
    pub async fn list(&self) -> Result<Vec<KeyInfo>> {
        let keys = self.store.keys().await?;
        let now = self.clock.now();
        Ok(keys.iter().map(|k| self.info(k, &keys, now)).collect())
    }

    fn info(&self, key: &StoredKey, keys: &[StoredKey], now: i64) -> KeyInfo {
        KeyInfo {
            kid: key.kid.clone(),
            alg: key.alg.clone(),
            audience: key.audience.clone(),
            state: state::state(key, keys, now, self.retention),
            created_at: key.created_at,
            activates_at: key.activates_at,
            retires_at: state::retires_at(key, keys).or(key.revoked_at),
            unpublished_at: state::unpublished_at(key, keys, self.retention),
        }
    }

    /// The key named `kid` and all keys, freshly read.
    async fn find(&self, kid: &str) -> Result<(StoredKey, Vec<StoredKey>)> {
        let keys = self.store.keys().await?;
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .cloned()
            .ok_or_else(|| IdentityError::BadInput(format!("no signing key {kid:?}")))?;
        Ok((key, keys))
    }

    /// The info of `kid` as stored now.
    async fn reread(&self, kid: &str) -> Result<KeyInfo> {
        let (key, keys) = self.find(kid).await?;
        Ok(self.info(&key, &keys, self.clock.now()))
    }

    fn record(&self, action: &'static str, key: &StoredKey) -> AuditEvent {
        AuditEvent::success(action)
            .actor(self.actor)
            .detail("kid", key.kid.as_str())
            .detail("alg", key.alg.as_str())
            .detail("audience", key.audience.clone())
    }

    /// A new key of `alg` for `audience`, sealed and stored, signing from
    /// `activates_at`.
    async fn create(
        &self,
        alg: Algorithm,
        audience: Option<&str>,
        activates_at: i64,
    ) -> Result<StoredKey> {
        // Off the runtime's threads: an RSA key takes long enough to
        // generate to stall every request sharing the thread (a pool's
        // connections among them, whose waits then time out as 503s).
        let key = tokio::task::spawn_blocking(move || SigningKey::generate(alg, new_kid(alg)))
            .await
            // Only a panic in it ends the task otherwise.
            .map_err(|_| echo_crypto::CryptoError::KeyGeneration)??;
        let record = StoredKey {
            kid: key.kid().to_owned(),
            alg: alg.as_str().to_owned(),
            sealed_private: self.master.seal(key.kid().as_bytes(), &key.to_pkcs8()?)?,
            public_jwk: serde_json::to_string(&key.public_jwk())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
            created_at: self.clock.now(),
            audience: audience.map(str::to_owned),
            activates_at,
            retired_at: None,
            revoked_at: None,
        };
        self.store.insert_key(&record).await?;
        tracing::info!(kid = record.kid, %alg, ?audience, activates_at, "created signing key");
        Ok(record)
    }

    /// Creates the successor of the scope `(alg, audience)`: published now,
    /// signing after the publish delay, when the key it replaces retires.
    async fn successor(
        &self,
        alg: Algorithm,
        audience: Option<&str>,
        keys: &[StoredKey],
        now: i64,
    ) -> Result<StoredKey> {
        let replaces = state::signer(keys, alg.as_str(), audience, now)
            .filter(|k| k.audience.as_deref() == audience)
            .map(|k| k.kid.clone());
        let key = self.create(alg, audience, now + self.publish_delay).await?;
        self.audit.record(
            self.record("key.rotated", &key)
                .detail("activates_at", key.activates_at)
                .detail("replaces", replaces),
        );
        Ok(key)
    }

    /// Creates an active general key for each of `algs` that has none (a
    /// first start, or a new access-token algorithm). It signs at once: no
    /// verifier can hold tokens of a key that did not exist.
    pub(crate) async fn ensure_signers(&self, algs: &[Algorithm]) -> Result<()> {
        let keys = self.store.keys().await?;
        let now = self.clock.now();
        for &alg in algs {
            if state::signer(&keys, alg.as_str(), None, now).is_none() {
                let key = self.create(alg, None, now).await?;
                self.audit.record(self.record("key.created", &key));
            }
        }
        Ok(())
    }

    /// `echod keys rotate`: a successor for `alg` (default: every algorithm
    /// with an active general key), general or scoped to `audience`.
    pub async fn rotate(
        &self,
        alg: Option<Algorithm>,
        audience: Option<&str>,
    ) -> Result<Vec<KeyInfo>> {
        if let Some(audience) = audience {
            check_audience(audience)?;
        }
        let keys = self.store.keys().await?;
        let now = self.clock.now();
        let algs: Vec<Algorithm> = match alg {
            Some(alg) => vec![alg],
            None => Algorithm::ALL
                .into_iter()
                .filter(|a| state::signer(&keys, a.as_str(), None, now).is_some())
                .collect(),
        };
        if algs.is_empty() {
            return Err(IdentityError::BadInput(
                "no algorithm has an active key: name one with --alg".into(),
            ));
        }
        let mut created = Vec::new();
        for alg in algs {
            created.push(self.successor(alg, audience, &keys, now).await?);
        }
        let keys = self.store.keys().await?;
        Ok(created.iter().map(|k| self.info(k, &keys, now)).collect())
    }

    /// Automatic rotation: a successor for every active key of at least
    /// `interval` seconds (counting the publish delay) that has none.
    pub(crate) async fn rotate_due(&self, interval: i64) -> Result<()> {
        let keys = self.store.keys().await?;
        let now = self.clock.now();
        for due in state::due_for_rotation(&keys, now, interval, self.publish_delay) {
            let alg = Algorithm::parse(&due.alg)?;
            self.successor(alg, due.audience.as_deref(), &keys, now)
                .await?;
        }
        Ok(())
    }

    /// `echod keys retire KID`: the key signs no more from now and stays
    /// published until the last token it signed has expired. An
    /// algorithm's active general key cannot be retired (its tokens would
    /// have no signer): rotate it, or revoke it.
    pub async fn retire(&self, kid: &str) -> Result<KeyInfo> {
        let (key, keys) = self.find(kid).await?;
        let now = self.clock.now();
        match state::state(&key, &keys, now, self.retention) {
            KeyState::Revoked => {
                return Err(IdentityError::BadInput(format!("key {kid} is revoked")));
            }
            KeyState::Retired | KeyState::Expired => {
                return Err(IdentityError::BadInput(format!(
                    "key {kid} is already retired"
                )));
            }
            KeyState::Active if key.audience.is_none() => {
                return Err(IdentityError::BadInput(format!(
                    "key {kid} signs every {alg} token without a key of its own audience: \
                     `echod keys rotate --alg {alg}` retires it once its successor is \
                     published, `echod keys revoke {kid}` ends it at once",
                    alg = key.alg
                )));
            }
            KeyState::Next | KeyState::Active => {}
        }
        if !self.store.retire_key(kid, now).await? {
            return Err(IdentityError::BadInput(format!(
                "key {kid} changed meanwhile; list the keys and try again"
            )));
        }
        let info = self.reread(kid).await?;
        self.audit.record(
            self.record("key.retired", &key)
                .detail("unpublished_at", info.unpublished_at),
        );
        Ok(info)
    }

    /// `echod keys revoke KID`: the key leaves the JWKS at once and is
    /// never used again, so every token it signed stops verifying. When it
    /// was an algorithm's active general key, the next key takes over at
    /// once (or a new one, when none is waiting) before it is revoked, so
    /// signing never stops.
    pub async fn revoke(&self, kid: &str) -> Result<Revocation> {
        let (key, keys) = self.find(kid).await?;
        if key.revoked_at.is_some() {
            return Err(IdentityError::BadInput(format!(
                "key {kid} is already revoked"
            )));
        }
        let now = self.clock.now();
        let alg = Algorithm::parse(&key.alg)?;
        let takeover = match state::takeover_on_revoke(&key, &keys, now) {
            Takeover::None => None,
            Takeover::Activate(next) => {
                self.store.activate_key(&next, now).await?;
                Some(next)
            }
            Takeover::Create => Some(self.create(alg, None, now).await?.kid),
        };
        if !self.store.revoke_key(kid, now).await? {
            return Err(IdentityError::BadInput(format!(
                "key {kid} is already revoked"
            )));
        }
        self.audit.record(
            self.record("key.revoked", &key)
                .detail("takeover", takeover.clone()),
        );
        Ok(Revocation {
            revoked: self.reread(kid).await?,
            takeover: match takeover {
                Some(next) => Some(self.reread(&next).await?),
                None => None,
            },
        })
    }
}
