//! Password login, the SSO session it opens, and the CSRF tokens that guard
//! identity's forms.
//!
//! CSRF uses signed double-submit: a random nonce in an HttpOnly cookie and,
//! in the form, an HMAC of that nonce under a key derived from the master
//! key. A cross-site attacker can neither read the cookie nor compute the
//! HMAC.

use aws_lc_rs::hmac;
use echo_core::audit::AuditEvent;
use echo_crypto::secret::{b64url, constant_time_eq, random_token, token_hash};
use echo_store::{SsoSession, User};

use crate::provider::RequestMeta;
use crate::{IdentityError, Provider, Result};

/// A successful login: the user and the SSO session cookie value to set.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: User,
    pub session_token: String,
    pub auth_time: i64,
}

impl Provider {
    /// The form token for the CSRF cookie value `nonce`.
    pub fn csrf_token(&self, nonce: &str) -> String {
        b64url(hmac::sign(&self.csrf_key, nonce.as_bytes()).as_ref())
    }

    /// Refuses a form whose token does not match its cookie.
    pub fn check_csrf(&self, cookie_nonce: Option<&str>, form_token: Option<&str>) -> Result<()> {
        match (cookie_nonce, form_token) {
            (Some(nonce), Some(token))
                if constant_time_eq(self.csrf_token(nonce).as_bytes(), token.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(IdentityError::Csrf),
        }
    }

    /// The user of a live SSO session, if the cookie names one.
    pub async fn session_user(
        &self,
        session_token: Option<&str>,
    ) -> Result<Option<(User, SsoSession)>> {
        let Some(token) = session_token else {
            return Ok(None);
        };
        let Some(session) = self.store.session(&token_hash(token)).await? else {
            return Ok(None);
        };
        if session.expires_at <= self.clock.now() {
            return Ok(None);
        }
        Ok(self
            .store
            .user_by_id(&session.user_id)
            .await?
            .map(|user| (user, session)))
    }

    /// Checks a username and password and opens an SSO session.
    ///
    /// Every failure is the same [`IdentityError::LoginFailed`], and a
    /// missing user costs the same argon2 time as a wrong password, so
    /// neither the answer nor its timing tells whether an account exists.
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        meta: &RequestMeta,
    ) -> Result<LoggedIn> {
        let now = self.clock.now();
        let limit_key = meta.ip.as_deref().unwrap_or("unknown");
        if let Err(retry_after) = self.login_limiter.check(limit_key, now) {
            self.audit(
                AuditEvent::failure("auth.login.rate_limited").detail("username", username),
                meta,
            );
            return Err(IdentityError::RateLimited { retry_after });
        }
        let user = self.store.user_by_username(username).await?;
        let stored_hash = user.as_ref().map(|u| u.password_hash.clone());
        let valid = self
            .passwords
            .verify(password.to_owned(), stored_hash)
            .await;
        let Some(user) = user.filter(|_| valid) else {
            self.audit(
                AuditEvent::failure("auth.login.failure").detail("username", username),
                meta,
            );
            return Err(IdentityError::LoginFailed);
        };
        let session_token = random_token();
        self.store
            .insert_session(&SsoSession {
                id_hash: token_hash(&session_token),
                user_id: user.id.clone(),
                auth_time: now,
                expires_at: now + self.config.sso_session_ttl,
            })
            .await?;
        self.audit(
            AuditEvent::success("auth.login.success")
                .actor(user.id.as_str())
                .detail("username", username),
            meta,
        );
        Ok(LoggedIn {
            user,
            session_token,
            auth_time: now,
        })
    }

    /// Ends the SSO session named by the cookie, if any.
    pub async fn end_session(&self, session_token: Option<&str>, meta: &RequestMeta) -> Result<()> {
        if let Some(token) = session_token {
            let hash = token_hash(token);
            if let Some(session) = self.store.session(&hash).await? {
                self.store.delete_session(&hash).await?;
                self.audit(
                    AuditEvent::success("auth.logout").actor(session.user_id),
                    meta,
                );
            }
        }
        Ok(())
    }
}

/// An RP-initiated logout request (OpenID Connect RP-Initiated Logout 1.0).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct LogoutParams {
    pub id_token_hint: Option<String>,
    pub post_logout_redirect_uri: Option<String>,
    pub state: Option<String>,
    pub client_id: Option<String>,
}

/// Where a logout may go once the session has ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutPlan {
    /// The request carried a valid `id_token_hint`: the client asked for
    /// this logout, so no confirmation page is needed.
    pub confirmed: bool,
    /// The client's registered post-logout URI (with `state`), if asked for.
    pub redirect: Option<String>,
}

impl Provider {
    /// Validates a logout request. The redirect URI must exactly match one
    /// the client registered, so logout is never an open redirector. The
    /// logout is `confirmed` only when the hint names the user whose session
    /// it would end (`session_user`): anyone's old ID token in a link must
    /// not sign another user out unasked.
    pub async fn plan_logout(
        &self,
        params: &LogoutParams,
        session_user: Option<&str>,
    ) -> Result<LogoutPlan> {
        let mut hint_subject = None;
        let hinted_client = match params.id_token_hint.as_deref() {
            Some(hint) => {
                let expect = echo_verify::Expectations {
                    audience: params.client_id.as_deref(),
                    typ: "JWT",
                    allow_expired: true,
                };
                let claims = self.verifier.verify(hint, &expect).await.map_err(|e| {
                    IdentityError::InvalidRequest(format!("id_token_hint is not valid: {e}"))
                })?;
                hint_subject = Some(claims.sub.clone());
                match &claims.aud {
                    echo_verify::Audience::One(client) => Some(client.clone()),
                    echo_verify::Audience::Many(many) => many.first().cloned(),
                }
            }
            None => None,
        };
        let client_id = hinted_client.as_deref().or(params.client_id.as_deref());
        let redirect = match params.post_logout_redirect_uri.as_deref() {
            None => None,
            Some(uri) => {
                let client = match client_id {
                    Some(id) => self.store.client(id).await?,
                    None => None,
                };
                if !client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri)) {
                    return Err(IdentityError::InvalidRequest(
                        "post_logout_redirect_uri is not registered for this client".into(),
                    ));
                }
                let state: Vec<(&str, &str)> = params
                    .state
                    .as_deref()
                    .map(|s| ("state", s))
                    .into_iter()
                    .collect();
                Some(crate::authorize::redirect_with(uri, &state))
            }
        };
        let confirmed = match (hint_subject.as_deref(), session_user) {
            (Some(hinted), Some(current)) => hinted == current,
            (Some(_), None) => true,
            (None, _) => false,
        };
        Ok(LogoutPlan {
            confirmed,
            redirect,
        })
    }
}
