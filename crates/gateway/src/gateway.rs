//! [`Gateway`]: the domain service behind every endpoint. Login and logout
//! live here; request authentication (the pipeline's first phase) in
//! `pipeline.rs`.

use std::sync::Arc;

use aws_lc_rs::hmac;
use echo_core::audit::{AuditEvent, AuditSink, bounded};
use echo_core::{Clock, Scope};
use echo_crypto::seal::MasterKey;
use echo_crypto::secret::{b64url, constant_time_eq, random_token, token_hash};
use echo_edge::{Gate, Limiter, Origin, Refusal, ServiceTokens, SharedCounters, SharedLimiter};
use echo_verify::{Claims, Expectations, Verifier, VerifyError};

use crate::liveness::Liveness;
use crate::oidc::{IdentityClient, LoginSecrets, authorize_url, logout_url};
use crate::principal::Principal;
use crate::proxy::{Forwarded, Upstreams};
use crate::refresh_lock::RefreshLocks;
use crate::return_to::safe_return_to;
use crate::session::{LoginAttempt, Session, SessionStore, Tokens, USER_AGENT_CHARS};
use crate::token_cache::TokenCache;
use crate::{GatewayConfig, GatewayError, Result};

/// A started login: send the browser to `authorize_url`, with the binding
/// cookie set to `browser_binding`.
#[derive(Debug)]
pub struct LoginStart {
    pub authorize_url: String,
    pub browser_binding: String,
}

/// What identity sent back to `/callback` (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Callback {
    pub state: Option<String>,
    pub code: Option<String>,
    pub error: Option<String>,
    pub iss: Option<String>,
}

/// A finished login: the new session's cookie value and where to go.
#[derive(Debug)]
pub struct SignedIn {
    pub session_token: String,
    pub return_to: String,
}

/// The gateway: configuration, session storage, the token verifier and the
/// relying-party client of identity. Shared by every request behind an
/// `Arc`.
pub struct Gateway {
    pub(crate) config: GatewayConfig,
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) identity: IdentityClient,
    pub(crate) verifier: Arc<Verifier>,
    /// Bearer tokens on the API: verified, refusals audited.
    pub(crate) gate: Arc<Gate>,
    /// The gateway's own tokens (reading the audit log).
    pub(crate) service_tokens: ServiceTokens,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) clock: Arc<dyn Clock>,
    /// Seals tokens at rest.
    pub(crate) sealer: MasterKey,
    csrf_key: hmac::Key,
    pub(crate) refreshing: RefreshLocks,
    /// The per-IP, per-user and per-route limits: in this process, or
    /// shared by every gateway ([`Gateway::share_limits`]).
    pub(crate) limiter: Limiter,
    pub(crate) tokens: TokenCache,
    /// When sessions and bearer tokens are next confirmed with identity.
    pub(crate) liveness: Liveness,
    pub(crate) upstreams: Upstreams,
    /// The scheme and host forwarded requests say the caller reached.
    pub(crate) forwarded: Forwarded,
    /// Reads the audit service (pages).
    pub(crate) http: reqwest::Client,
}

impl Gateway {
    /// `master` is the platform's master key; the gateway derives its own
    /// keys from it (one to seal tokens, one for CSRF tokens). `verifier`
    /// checks identity's tokens (ID tokens, and access tokens for
    /// `config.audience`).
    pub fn new(
        config: GatewayConfig,
        store: Arc<dyn SessionStore>,
        master: &MasterKey,
        verifier: Arc<Verifier>,
        audit: Arc<dyn AuditSink>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let gate = Arc::new(Gate::new(
            "gateway",
            &config.audience,
            verifier.clone(),
            audit.clone(),
        ));
        let service_tokens = ServiceTokens::new(
            &config.issuer,
            &config.client_id,
            config.client_secret.expose(),
            &config.tls,
        );
        let refreshing = RefreshLocks::new(store.shared_lock());
        Self {
            identity: IdentityClient::new(&config),
            upstreams: Upstreams::new(&config.tls, &config.routes),
            forwarded: Forwarded::of(&config.public_url),
            http: config.tls.http_client(std::time::Duration::from_secs(10)),
            config,
            store,
            verifier,
            gate,
            service_tokens,
            audit,
            clock,
            sealer: master.derive("echo-gateway session tokens v1"),
            csrf_key: master.subkey("echo-gateway csrf v1"),
            refreshing,
            limiter: Limiter::default(),
            tokens: TokenCache::default(),
            liveness: Liveness::default(),
        }
    }

    /// Counts the rate limits in `counters`, which every gateway replica
    /// shares, instead of in this process.
    pub fn share_limits(mut self, counters: Arc<dyn SharedCounters>) -> Self {
        self.limiter = Limiter::Shared(SharedLimiter::new(counters, "gateway"));
        self
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The door bearer tokens come through.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    pub(crate) fn audit(&self, event: AuditEvent, meta: &Origin) {
        self.audit.record(meta.stamp(event));
    }

    /// The CSRF token of forms in session `id_hash`: an HMAC of the session
    /// id's hash, so it is bound to the session and needs no storage.
    pub(crate) fn csrf_token(&self, id_hash: &str) -> String {
        b64url(hmac::sign(&self.csrf_key, id_hash.as_bytes()).as_ref())
    }

    /// Refuses a request whose `Origin` is another site's (OWASP CSRF
    /// cheat sheet, "verifying origin with standard headers").
    ///
    /// `Origin: null` counts as no `Origin`: under our `Referrer-Policy:
    /// no-referrer` browsers send `null` on their own form posts (Fetch
    /// §3.2.5, found by the browser tests on logout). Such a request still
    /// needs its CSRF token or header, which a foreign page cannot supply.
    pub(crate) fn check_origin(&self, origin: Option<&str>, meta: &Origin) -> Result<()> {
        match origin {
            Some(origin) if origin != self.config.public_url && origin != "null" => {
                self.refuse_csrf("cross-origin request", meta)
            }
            _ => Ok(()),
        }
    }

    /// A form post's CSRF proof: no foreign `Origin`, and the session's
    /// form token `expected` (compared in constant time).
    pub(crate) fn check_form(
        &self,
        expected: &str,
        csrf: Option<&str>,
        origin: Option<&str>,
        meta: &Origin,
    ) -> Result<()> {
        self.check_origin(origin, meta)?;
        if csrf.is_some_and(|token| constant_time_eq(token.as_bytes(), expected.as_bytes())) {
            Ok(())
        } else {
            self.refuse_csrf("missing or wrong CSRF token", meta)
        }
    }

    /// A form posted in `principal`'s session: [`Gateway::check_form`]
    /// against that session's form token.
    pub(crate) fn check_session_form(
        &self,
        principal: &Principal,
        (csrf, origin): (Option<&str>, Option<&str>),
        meta: &Origin,
    ) -> Result<()> {
        let expected = principal
            .session
            .as_ref()
            .map(|s| s.csrf.as_str())
            .ok_or(GatewayError::SessionExpired)?;
        self.check_form(expected, csrf, origin, meta)
    }

    pub(crate) fn refuse_csrf(&self, reason: &'static str, meta: &Origin) -> Result<()> {
        self.audit(
            AuditEvent::failure("gateway.csrf.refused").detail("reason", reason),
            meta,
        );
        Err(GatewayError::Csrf(reason))
    }

    /// `/login`: remembers `state`, `nonce` and the PKCE verifier under the
    /// hash of `state`, bound to this browser, and answers where to send it.
    pub async fn begin_login(
        &self,
        return_to: Option<&str>,
        browser: Option<&str>,
    ) -> Result<LoginStart> {
        let return_to = safe_return_to(return_to)?;
        let browser_binding = match browser {
            Some(binding) if binding.len() == 43 => binding.to_owned(),
            _ => random_token(),
        };
        let secrets = LoginSecrets::generate();
        self.store
            .insert_attempt(&LoginAttempt {
                state_hash: token_hash(&secrets.state),
                browser_hash: token_hash(&browser_binding),
                nonce: secrets.nonce.clone(),
                pkce_verifier: secrets.pkce_verifier.clone(),
                return_to,
                expires_at: self.clock.now() + self.config.login_ttl,
            })
            .await?;
        Ok(LoginStart {
            authorize_url: authorize_url(&self.config, &secrets)?,
            browser_binding,
        })
    }

    /// `/callback`: checks the response, redeems the code, verifies the ID
    /// token and opens a new session (a new id at every login, so an id
    /// planted before login is worth nothing). The session the browser
    /// had before (`previous`), if any, ends.
    pub async fn finish_login(
        &self,
        callback: &Callback,
        browser: Option<&str>,
        previous: Option<&str>,
        meta: &Origin,
    ) -> Result<SignedIn> {
        match self.complete_login(callback, browser, meta).await {
            Ok((signed_in, subject)) => {
                if let Some(previous) = previous {
                    self.store.delete_session(&token_hash(previous)).await?;
                }
                self.audit(
                    AuditEvent::success("gateway.login.success").actor(subject),
                    meta,
                );
                Ok(signed_in)
            }
            Err(e) => {
                self.audit(
                    AuditEvent::failure("gateway.login.failure").detail("reason", e.to_string()),
                    meta,
                );
                Err(e)
            }
        }
    }

    async fn complete_login(
        &self,
        callback: &Callback,
        browser: Option<&str>,
        meta: &Origin,
    ) -> Result<(SignedIn, String)> {
        let state = callback.state.as_deref().ok_or(GatewayError::LoginState)?;
        let attempt = self
            .store
            .take_attempt(&token_hash(state))
            .await?
            .ok_or(GatewayError::LoginState)?;
        let now = self.clock.now();
        let same_browser = browser.is_some_and(|b| {
            constant_time_eq(token_hash(b).as_bytes(), attempt.browser_hash.as_bytes())
        });
        if attempt.expires_at <= now || !same_browser {
            return Err(GatewayError::LoginState);
        }
        if let Some(error) = &callback.error {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(GatewayError::LoginFailed(format!(
                "identity answered {error}"
            )));
        }
        // RFC 9207 §2.4: identity always sends `iss`, so a response
        // without it, or with another issuer's, is not one we asked for
        // (a mix-up attack).
        match callback.iss.as_deref() {
            Some(iss) if iss == self.config.issuer => {}
            Some(_) => {
                return Err(GatewayError::LoginFailed(
                    "response from another issuer".into(),
                ));
            }
            None => {
                return Err(GatewayError::LoginFailed(
                    "response without its issuer (iss)".into(),
                ));
            }
        }
        let code = callback
            .code
            .as_deref()
            .ok_or_else(|| GatewayError::LoginFailed("no code in the response".into()))?;
        let answer = self
            .identity
            .exchange_code(code, &attempt.pkce_verifier, &self.config.redirect_uri())
            .await?;
        let id_token = answer
            .id_token
            .ok_or_else(|| GatewayError::LoginFailed("no ID token".into()))?;
        let id = self
            .verify_issued(&id_token, &Expectations::id_token(&self.config.client_id))
            .await?;
        // OIDC Core §3.1.3.7 step 11.
        let nonce = id.other.get("nonce").and_then(|n| n.as_str()).unwrap_or("");
        if !constant_time_eq(nonce.as_bytes(), attempt.nonce.as_bytes()) {
            return Err(GatewayError::LoginFailed("nonce mismatch".into()));
        }
        let access = self
            .verify_issued(
                &answer.access_token,
                &Expectations::access_token(&self.config.audience),
            )
            .await?;
        if access.sub != id.sub {
            return Err(GatewayError::LoginFailed(
                "tokens name different users".into(),
            ));
        }
        // The authorize request passes through the browser, which may add
        // scopes to it: a session never holds more than the gateway asked.
        let asked = Scope::parse(&self.config.scopes);
        if let Some(extra) = access
            .scope
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .find(|s| !asked.contains(s))
        {
            return Err(GatewayError::LoginFailed(format!(
                "identity granted scope {} that was not asked for",
                bounded(extra)
            )));
        }
        let session_token = random_token();
        let id_hash = token_hash(&session_token);
        let tokens = Tokens {
            access_token: answer.access_token,
            refresh_token: answer.refresh_token,
            id_token,
        };
        let name = ["preferred_username", "name"]
            .iter()
            .find_map(|claim| id.other.get(*claim).and_then(|v| v.as_str()))
            .map(str::to_owned);
        self.store
            .insert_session(&Session {
                tokens: tokens.seal(&self.sealer, &id_hash)?,
                id_hash,
                subject: id.sub.clone(),
                name,
                roles: access.roles.clone(),
                created_at: now,
                last_seen_at: now,
                expires_at: now + self.config.session_absolute_ttl,
                access_expires_at: access.exp,
                user_agent: meta
                    .user_agent
                    .as_deref()
                    .unwrap_or("")
                    .chars()
                    .take(USER_AGENT_CHARS)
                    .collect(),
                address: meta.ip().unwrap_or_default(),
            })
            .await?;
        let signed_in = SignedIn {
            session_token,
            return_to: attempt.return_to,
        };
        Ok((signed_in, id.sub.clone()))
    }

    /// Verifies a token identity just handed us. A bad one fails the login
    /// (or refresh); unreachable keys stay a 503.
    pub(crate) async fn verify_issued(
        &self,
        token: &str,
        expect: &Expectations<'_>,
    ) -> Result<Arc<Claims>> {
        self.verifier
            .verify(token, expect)
            .await
            .map_err(|e| match e {
                VerifyError::KeysUnavailable(_) => {
                    GatewayError::Refused(Refusal::keys_unavailable())
                }
                other => {
                    GatewayError::LoginFailed(format!("{} token: {}", expect.typ, other.code()))
                }
            })
    }

    /// `/logout` (a CSRF-checked form): ends the session here and answers
    /// identity's RP-initiated logout URL, which ends the SSO session and
    /// comes back to the signed-out page. Without a live session there is
    /// nothing to protect: straight to the signed-out page.
    pub async fn logout(
        &self,
        session: Option<&str>,
        csrf: Option<&str>,
        origin: Option<&str>,
        meta: &Origin,
    ) -> Result<String> {
        let signed_out = self.config.post_logout_redirect_uri();
        let Some(id_hash) = session.map(token_hash) else {
            return Ok(signed_out);
        };
        let Some(session) = self.store.session(&id_hash).await? else {
            return Ok(signed_out);
        };
        self.check_form(&self.csrf_token(&id_hash), csrf, origin, meta)?;
        let tokens = self.end_and_revoke(&session).await?;
        self.audit(
            AuditEvent::success("gateway.logout").actor(session.subject.as_str()),
            meta,
        );
        logout_url(&self.config, &tokens.id_token)
    }

    /// Deletes ended sessions and stale logins; how many rows went.
    /// Counts the live sessions into their gauge: a periodic job, and the
    /// session store's readiness check.
    pub async fn count_sessions(&self) -> Result<u64> {
        let now = self.clock.now();
        let live = self
            .store
            .live_sessions(now, now - self.config.session_idle_ttl)
            .await?;
        crate::metrics::live_sessions(live);
        Ok(live)
    }

    pub async fn purge(&self) -> Result<u64> {
        let now = self.clock.now();
        self.store
            .purge(now, now - self.config.session_idle_ttl)
            .await
    }
}
