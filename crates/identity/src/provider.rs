use std::sync::Arc;

use axum::body::Bytes;
use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::Algorithm;
use echo_crypto::password::PasswordPool;
use echo_crypto::seal::MasterKey;
use echo_edge::Origin;
use echo_edge::{Caller, Gate, Reason, SharedCounters};
use echo_identity_store::Store;
use echo_verify::{Claims, Verifier, VerifierOptions};
use serde_json::{Value, json};

use crate::client_cache::ClientCache;
use crate::config::RESET_REQUEST_WINDOW;
use crate::config::{MAX_ACCESS_TOKEN_TTL, MAX_REFRESH_GRACE};
use crate::fresh_cache::FreshCache;
use crate::mail::{Mail, Outbox};
use crate::rate_limit::RateLimiter;
use crate::{IdentityConfig, IdentityError, KeyAdmin, KeyRing, Result};

/// How long an answer about a token's revocation (or a user's name) is
/// used. A revocation made by this process is seen at once; one made by
/// another instance sharing the database, within this bound.
pub const REVOCATION_CACHE_SECONDS: i64 = 2;

/// The OpenID provider: configuration, storage, keys and the services the
/// protocol endpoints call. Shared by every request behind an `Arc`.
pub struct Provider {
    pub(crate) config: IdentityConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keys: Arc<KeyRing>,
    pub(crate) verifier: Arc<Verifier>,
    /// Checks the access tokens presented to identity (`/userinfo`, the
    /// subject tokens of exchanges, `/verify`) and audits their refusals.
    pub(crate) gate: Arc<Gate>,
    pub(crate) passwords: PasswordPool,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) csrf_key: aws_lc_rs::hmac::Key,
    pub(crate) login_limiter: RateLimiter,
    pub(crate) client_auth_failures: RateLimiter,
    /// Refused `/verify` tokens per client and address.
    pub(crate) verify_refusals: RateLimiter,
    /// Password-reset requests per address, and per client IP.
    pub(crate) reset_address_limiter: RateLimiter,
    pub(crate) reset_ip_limiter: RateLimiter,
    /// Mail to users; `None` when no SMTP server is configured.
    pub(crate) outbox: Option<Outbox>,
    /// Seals queued mail (see `mail.rs`).
    pub(crate) mail_key: MasterKey,
    pub(crate) clients: ClientCache,
    /// Whether an access token's `jti` is revoked, for
    /// [`REVOCATION_CACHE_SECONDS`]; every revocation made here clears it.
    pub(crate) revocations: FreshCache<bool>,
    /// User id → username, for introspection answers.
    pub(crate) usernames: FreshCache<Option<String>>,
    /// Seals the answer of a refresh-token rotation (see `refresh.rs`).
    pub(crate) successor_key: MasterKey,
    /// Seals TOTP secrets (see `mfa.rs`).
    pub(crate) totp_key: MasterKey,
    /// Seals a login between its password and second-factor steps.
    pub(crate) pending_key: MasterKey,
    discovery_json: Bytes,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl Provider {
    /// Opens (or creates) the signing keys and assembles the provider.
    pub async fn new(
        config: IdentityConfig,
        store: Arc<dyn Store>,
        master: &MasterKey,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        if !(1..=MAX_ACCESS_TOKEN_TTL).contains(&config.access_token_ttl) {
            return Err(IdentityError::BadInput(format!(
                "access token lifetime must be 1..={MAX_ACCESS_TOKEN_TTL} seconds"
            )));
        }
        if config.refresh_token_grace > MAX_REFRESH_GRACE {
            return Err(IdentityError::BadInput(format!(
                "the refresh-token reuse grace is at most {} s",
                MAX_REFRESH_GRACE.as_secs()
            )));
        }
        config.keys.validate()?;
        let mut algs = vec![Algorithm::RS256];
        if config.access_token_alg != Algorithm::RS256 {
            algs.push(config.access_token_alg);
        }
        let actor = crate::grant::IDENTITY_SERVICE;
        KeyAdmin::new(&*store, master, &*audit, &*clock, &config, actor)
            .ensure_signers(&algs)
            .await?;
        let retention = config.key_retention();
        let keys = Arc::new(KeyRing::load(&*store, master.clone(), retention, clock.now()).await?);
        let verifier = Arc::new(Verifier::with_clock(
            config.issuer.clone(),
            keys.clone(),
            VerifierOptions {
                refresh_interval: std::time::Duration::from_secs(1),
                // The ring is local and cheap to read: follow its reloads
                // closely, so a revoked key stops verifying here too.
                max_key_age: std::time::Duration::from_secs(1),
                ..Default::default()
            },
            clock.clone(),
        ));
        let gate = Arc::new(Gate::new(
            crate::grant::IDENTITY_SERVICE,
            &config.userinfo_audience(),
            verifier.clone(),
            audit.clone(),
        ));
        let discovery_json = Bytes::from(discovery(&config).to_string());
        Ok(Self {
            login_limiter: RateLimiter::per_minute(config.login_attempts_per_minute),
            client_auth_failures: RateLimiter::per_minute(config.client_auth_failures_per_minute),
            verify_refusals: RateLimiter::per_minute(config.verify_refusals_per_minute),
            reset_address_limiter: RateLimiter::per_window(
                config.reset_requests_per_address,
                RESET_REQUEST_WINDOW,
            ),
            reset_ip_limiter: RateLimiter::per_window(
                config.reset_requests_per_ip,
                RESET_REQUEST_WINDOW,
            ),
            outbox: None,
            mail_key: master.derive("identity-mail"),
            clients: ClientCache::new(10_000),
            revocations: FreshCache::new(100_000, REVOCATION_CACHE_SECONDS),
            usernames: FreshCache::new(10_000, REVOCATION_CACHE_SECONDS),
            csrf_key: master.subkey("identity-csrf"),
            successor_key: master.derive("identity-refresh-successor"),
            totp_key: master.derive("identity-totp"),
            pending_key: master.derive("identity-login-pending"),
            passwords: PasswordPool::for_this_machine(),
            config,
            store,
            keys,
            verifier,
            gate,
            audit,
            clock,
            discovery_json,
        })
    }

    /// Counts the per-address and per-client limits in `counters`, which
    /// every identity replica shares (Redis, or the database:
    /// [`DatabaseCounters`](crate::DatabaseCounters)), instead of in this
    /// process.
    pub fn share_limits(mut self, counters: Arc<dyn SharedCounters>) -> Self {
        let config = &self.config;
        self.login_limiter = RateLimiter::shared_per_minute(
            counters.clone(),
            "identity:login",
            config.login_attempts_per_minute,
        );
        self.client_auth_failures = RateLimiter::shared_per_minute(
            counters.clone(),
            "identity:client_auth",
            config.client_auth_failures_per_minute,
        );
        self.verify_refusals = RateLimiter::shared_per_minute(
            counters.clone(),
            "identity:verify",
            config.verify_refusals_per_minute,
        );
        self.reset_address_limiter = RateLimiter::shared(
            counters.clone(),
            "identity:reset_address",
            config.reset_requests_per_address,
            RESET_REQUEST_WINDOW,
        );
        self.reset_ip_limiter = RateLimiter::shared(
            counters,
            "identity:reset_ip",
            config.reset_requests_per_ip,
            RESET_REQUEST_WINDOW,
        );
        self
    }

    /// The provider, sending mail through `outbox`.
    pub fn with_outbox(mut self, outbox: Outbox) -> Self {
        self.outbox = Some(outbox);
        self
    }

    /// Whether identity can send mail (an SMTP server is configured).
    pub fn mail_enabled(&self) -> bool {
        self.outbox.is_some()
    }

    /// Queues `mail` for the delivery job (`delivery.rs`).
    pub(crate) async fn queue_mail(&self, mail: &Mail) -> Result<()> {
        match &self.outbox {
            Some(outbox) => outbox.enqueue(mail, &self.mail_key).await,
            None => Err(IdentityError::Mail(
                "no SMTP server is configured".to_owned(),
            )),
        }
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// Readiness: the database answers.
    pub async fn database_ready(&self) -> std::result::Result<&'static str, String> {
        self.store
            .ping()
            .await
            .map(|()| "ok")
            .map_err(|e| e.to_string())
    }

    /// Readiness: keys are loaded that sign access tokens (of the
    /// configured algorithm) and ID tokens (RS256) now.
    pub fn keys_ready(&self) -> std::result::Result<&'static str, String> {
        let now = self.clock.now();
        for alg in [self.config.access_token_alg, Algorithm::RS256] {
            self.keys
                .signer(alg, None, now)
                .map_err(|_| format!("no active {} signing key", alg.as_str()))?;
        }
        Ok("ok")
    }

    /// Identity's own door (see [`Provider::verify_access_token`]).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The discovery document, serialised once.
    pub fn discovery_json(&self) -> Bytes {
        self.discovery_json.clone()
    }

    pub(crate) fn audit(&self, event: AuditEvent, meta: &Origin) {
        self.audit.record(meta.stamp(event));
    }

    /// Verifies one of our access tokens for `audience` and checks it was
    /// not revoked; refusals are audited by the edge's gate.
    pub async fn verify_access_token(
        &self,
        token: &str,
        audience: &str,
        meta: &Origin,
    ) -> Result<Arc<Claims>> {
        Ok(self.verified_caller(token, audience, meta).await?.claims)
    }

    /// As [`Provider::verify_access_token`], the caller the token speaks
    /// for.
    pub(crate) async fn verified_caller(
        &self,
        token: &str,
        audience: &str,
        meta: &Origin,
    ) -> Result<Caller> {
        let caller = self
            .gate
            .authenticate_for(Some(token), audience, meta)
            .await?;
        if self.access_token_revoked(&caller.claims).await? {
            return Err(self
                .gate
                .refuse(Reason::Revoked, Some(&caller.claims), meta)
                .into());
        }
        Ok(caller)
    }

    /// Whether an access token was revoked, by itself (RFC 7009) or with
    /// its refresh-token family or authorization code.
    pub(crate) async fn access_token_revoked(&self, claims: &Claims) -> Result<bool> {
        let Some(jti) = &claims.jti else {
            return Ok(false);
        };
        let now = self.clock.now();
        if let Some(revoked) = self.revocations.get(jti, now) {
            return Ok(revoked);
        }
        let revoked = self.store.access_token_revoked(jti).await?;
        self.revocations.insert(jti, revoked, now);
        Ok(revoked)
    }

    /// After a revocation that may cover access tokens this process has
    /// seen (a refresh family, a replayed code's grant).
    pub(crate) fn forget_revocation_answers(&self) {
        self.revocations.clear();
    }

    /// The username of a user id (`None` for a user deleted since).
    pub(crate) async fn username(&self, user_id: &str) -> Result<Option<String>> {
        let now = self.clock.now();
        if let Some(name) = self.usernames.get(user_id, now) {
            return Ok(name);
        }
        let name = self.store.user_by_id(user_id).await?.map(|u| u.username);
        self.usernames.insert(user_id, name.clone(), now);
        Ok(name)
    }

    /// Until when the verifier still accepts a token that expires at `exp`
    /// (its leeway for clock skew): how long a revocation must be kept.
    pub(crate) fn acceptance_end(&self, exp: i64) -> i64 {
        exp + VerifierOptions::default().leeway
    }

    /// OIDC Core §5.3: the user's claims for a bearer access token.
    pub async fn userinfo(&self, bearer: Option<&str>, meta: &Origin) -> Result<Value> {
        let Some(token) = bearer else {
            return Err(self.gate.refuse(Reason::Missing, None, meta).into());
        };
        let claims = self
            .verify_access_token(token, &self.config.userinfo_audience(), meta)
            .await?;
        let Some(user) = self.store.user_by_id(&claims.sub).await? else {
            return Err(self
                .gate
                .refuse(Reason::UnknownSubject, Some(&claims), meta)
                .into());
        };
        let mut info = json!({
            "sub": user.id,
            "preferred_username": user.username,
            "name": user.username,
            "roles": user.roles,
        });
        if claims.has_scope("email")
            && let Some(email) = user.email
        {
            info["email"] = json!(email);
            info["email_verified"] = json!(user.email_verified);
        }
        Ok(info)
    }
}

/// Client authentication methods (RFC 8414 §2), `none` last.
const AUTH_METHODS: [&str; 4] = [
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "none",
];

/// Algorithms a `private_key_jwt` assertion may be signed with: those of
/// the key types a client may register.
const ASSERTION_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

/// OpenID Connect Discovery 1.0 §3 and RFC 8414 §2 metadata.
fn discovery(config: &IdentityConfig) -> Value {
    let mut document = json!({
        "issuer": config.issuer,
        "authorization_endpoint": config.endpoint("/authorize"),
        "token_endpoint": config.endpoint("/token"),
        "userinfo_endpoint": config.endpoint("/userinfo"),
        "jwks_uri": config.endpoint("/jwks"),
        "end_session_endpoint": config.endpoint("/logout"),
        "revocation_endpoint": config.endpoint("/revoke"),
        "introspection_endpoint": config.endpoint("/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials",
                                  crate::grant::GRANT_TOKEN_EXCHANGE],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        // RFC 7662: public clients may not introspect.
        "introspection_endpoint_auth_methods_supported": &AUTH_METHODS[..3],
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "claims_supported": ["sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "at_hash",
                             "name", "preferred_username", "email", "email_verified", "roles",
                             "amr"],
        "prompt_values_supported": ["none", "login"],
        "authorization_response_iss_parameter_supported": true,
    });
    // RFC 8414 §2: advertised only where it answers.
    if config.client_registration.is_some() {
        document["registration_endpoint"] =
            json!(config.endpoint(crate::config::CLIENT_REGISTRATION_PATH));
    }
    document
}
