use std::sync::Arc;
use std::time::Duration;

use echo_core::{Clock, SystemClock};
use echo_crypto::jws::CompactJws;
use echo_crypto::secret::sha256;
use quick_cache::sync::Cache;

use crate::keys::KeyCache;
use echo_tls::ClientTls;

use crate::{Claims, JwksSource, VerifyError};

/// Tunables; the defaults suit a service verifying its callers.
#[derive(Debug, Clone)]
pub struct VerifierOptions {
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway: i64,
    /// How many verified tokens to remember.
    pub cache_capacity: usize,
    /// Least time between two JWKS fetches caused by unknown `kid`s.
    pub refresh_interval: Duration,
    /// Age after which the key set is refetched.
    pub max_key_age: Duration,
    /// How long the request that finds the keys old waits for their
    /// refetch before verifying with them anyway (the fetch goes on).
    pub stale_wait: Duration,
    /// Whom the JWKS fetches trust (`for_issuer`).
    pub tls: ClientTls,
}

impl Default for VerifierOptions {
    fn default() -> Self {
        Self {
            leeway: 10,
            cache_capacity: 10_000,
            refresh_interval: Duration::from_secs(10),
            max_key_age: Duration::from_secs(300),
            stale_wait: Duration::from_millis(100),
            tls: ClientTls::default(),
        }
    }
}

/// What a caller requires of a token beyond a valid signature and issuer.
#[derive(Debug, Clone, Copy)]
pub struct Expectations<'a> {
    /// Must appear in `aud`; `None` accepts any audience.
    pub audience: Option<&'a str>,
    /// The JOSE `typ` header: `at+jwt` for access tokens (RFC 9068), `JWT`
    /// for ID tokens. Checking it keeps an ID token from passing as an
    /// access token and the other way round.
    pub typ: &'a str,
    /// Accept expired tokens (only for `id_token_hint` at logout).
    pub allow_expired: bool,
}

impl<'a> Expectations<'a> {
    pub fn access_token(audience: &'a str) -> Self {
        Self {
            audience: Some(audience),
            typ: "at+jwt",
            allow_expired: false,
        }
    }

    pub fn id_token(client_id: &'a str) -> Self {
        Self {
            audience: Some(client_id),
            typ: "JWT",
            allow_expired: false,
        }
    }
}

/// A token whose signature and issuer were checked.
struct Verified {
    claims: Arc<Claims>,
    kid: String,
    typ: Option<String>,
}

/// Verifies tokens of one issuer. Cheap to share behind an `Arc`.
pub struct Verifier {
    issuer: String,
    options: VerifierOptions,
    clock: Arc<dyn Clock>,
    keys: Arc<KeyCache>,
    cache: Cache<[u8; 32], Arc<Verified>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(
        issuer: impl Into<String>,
        source: Arc<dyn JwksSource>,
        options: VerifierOptions,
    ) -> Self {
        Self::with_clock(issuer, source, options, Arc::new(SystemClock))
    }

    /// The verifier of `issuer`'s tokens, its keys fetched from
    /// `<issuer>/jwks`: what every service but identity itself uses.
    pub fn for_issuer(issuer: &str, options: VerifierOptions) -> Self {
        let issuer = issuer.trim_end_matches('/');
        let jwks = crate::HttpJwks::new(format!("{issuer}/jwks"), &options.tls);
        Self::new(issuer, Arc::new(jwks), options)
    }

    pub fn with_clock(
        issuer: impl Into<String>,
        source: Arc<dyn JwksSource>,
        options: VerifierOptions,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let cache = Cache::new(options.cache_capacity.max(1));
        let issuer = issuer.into();
        let keys = Arc::new(KeyCache::new(&issuer, source, &options));
        Self {
            issuer,
            options,
            clock,
            keys,
            cache,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(
        &self,
        token: &str,
        expect: &Expectations<'_>,
    ) -> Result<Arc<Claims>, VerifyError> {
        self.verify_digested(token, &sha256(token.as_bytes()), expect)
            .await
    }

    /// As [`verify`](Self::verify), for a caller that already has the
    /// token's SHA-256 (`digest`, the cache's key) for keys of its own: a
    /// token is hashed once per request.
    pub async fn verify_digested(
        &self,
        token: &str,
        digest: &[u8; 32],
        expect: &Expectations<'_>,
    ) -> Result<Arc<Claims>, VerifyError> {
        let cache_key = *digest;
        let now = self.clock.now();
        // Old keys are refetched; a slow issuer delays no caller by more
        // than `stale_wait` while the keys it has still verify.
        self.keys.refresh_if_stale().await;
        if let Some(hit) = self.cache.get(&cache_key) {
            if self.keys.current().keys.contains_key(&hit.kid) {
                self.check(&hit, expect, now)?;
                return Ok(hit.claims.clone());
            }
            // Its key has left the JWKS (rotated out or revoked).
            self.cache.remove(&cache_key);
        }

        let jws = CompactJws::parse(token).map_err(|_| VerifyError::Malformed)?;
        let kid = jws.header.kid.clone().ok_or(VerifyError::Malformed)?;
        let key = self.keys.key(&kid).await?;
        key.verify(&jws).map_err(|_| VerifyError::BadSignature)?;
        let payload = jws.payload().map_err(|_| VerifyError::Malformed)?;
        let claims: Claims =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed)?;
        if claims.iss != self.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let verified = Arc::new(Verified {
            claims: Arc::new(claims),
            kid,
            typ: jws.header.typ,
        });
        self.check(&verified, expect, now)?;
        self.cache.insert(cache_key, verified.clone());
        Ok(verified.claims.clone())
    }

    fn check(&self, v: &Verified, expect: &Expectations<'_>, now: i64) -> Result<(), VerifyError> {
        // RFC 9068 §4: `at+jwt` or its full media type `application/at+jwt`.
        let typ = v.typ.as_deref().unwrap_or("");
        let typ = typ.strip_prefix("application/").unwrap_or(typ);
        if !typ.eq_ignore_ascii_case(expect.typ) {
            return Err(VerifyError::WrongType);
        }
        if let Some(audience) = expect.audience
            && !v.claims.aud.contains(audience)
        {
            return Err(VerifyError::WrongAudience);
        }
        if !expect.allow_expired && v.claims.exp + self.options.leeway <= now {
            return Err(VerifyError::Expired);
        }
        if v.claims
            .nbf
            .is_some_and(|nbf| nbf - self.options.leeway > now)
        {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }

    /// Whether this verifier can check tokens: the issuer's keys are
    /// cached, or can be fetched now (a readiness check).
    pub async fn keys_ready(&self) -> Result<&'static str, String> {
        self.keys.ready().await
    }

    /// Refetches the key set now.
    pub async fn refresh_keys(&self) {
        self.keys.refresh().await;
    }
}
