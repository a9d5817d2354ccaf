//! Password login, the SSO session it opens, and the CSRF tokens that guard
//! identity's forms.
//!
//! CSRF uses signed double-submit: a random nonce in an HttpOnly cookie and,
//! in the form, an HMAC of that nonce under a key derived from the master
//! key. A cross-site attacker can neither read the cookie nor compute the
//! HMAC.

use aws_lc_rs::hmac;
use echo_core::audit::AuditEvent;
use echo_crypto::secret::{b64url, b64url_decode, constant_time_eq, random_token, token_hash};
use echo_identity_store::{SsoSession, User};
use serde::{Deserialize, Serialize};

use crate::lockout::Reservation;
use crate::mfa::Enrolment;
use crate::user_state::{UserState, state_of};
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// RFC 8176 §2 authentication method references.
pub const AMR_PASSWORD: &str = "pwd";
pub const AMR_OTP: &str = "otp";

/// How long the second step may follow the password, in seconds.
const PENDING_TTL: i64 = 5 * 60;
/// Associated data of sealed pending logins.
const PENDING_AAD: &[u8] = b"identity-login-pending";

/// A successful login: the user and the SSO session cookie value to set.
#[derive(Debug)]
pub struct LoggedIn {
    pub user: User,
    pub session_token: String,
    pub auth_time: i64,
    /// RFC 8176 methods used, for the `amr` claim.
    pub amr: Vec<String>,
}

/// Where a correct password leads.
#[derive(Debug)]
pub enum PasswordOutcome {
    /// No second factor needed: logged in.
    LoggedIn(LoggedIn),
    /// A second factor is due. `pending` (sealed, short-lived) names the
    /// user to the second step; it belongs in an HttpOnly cookie.
    SecondFactor { pending: String },
    /// The user's role requires a second factor they have not set up: they
    /// enrol now, and the confirmation completes the login.
    Enrol {
        pending: String,
        enrolment: Enrolment,
    },
}

/// What the second step asks for, to show its page again.
#[derive(Debug)]
pub enum PendingStep {
    Code,
    Enrol(Enrolment),
}

/// A completed second step.
#[derive(Debug)]
pub struct SecondStep {
    pub logged_in: LoggedIn,
    /// Recovery codes to show once, when the step was an enrolment.
    pub recovery_codes: Option<Vec<String>>,
}

/// A password checked, a second factor not yet: sealed into the pending
/// cookie.
#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    sub: String,
    exp: i64,
}

/// How far behind a session's "last seen" may be, in seconds: it is
/// written at most this often.
pub const LAST_SEEN_RESOLUTION: i64 = 60;

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

    /// The user of a live SSO session, if the cookie names one. A session
    /// of a user who is no longer active, or that lacks a second factor
    /// the user's role now requires, is no session.
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
        let Some(user) = self.store.user_by_id(&session.user_id).await? else {
            return Ok(None);
        };
        let mfa_missing =
            self.mfa_required_by_role(&user) && !session.amr.iter().any(|m| m == AMR_OTP);
        if state_of(&user)? != UserState::Active || mfa_missing {
            return Ok(None);
        }
        self.store
            .touch_session(&session.id_hash, self.clock.now(), LAST_SEEN_RESOLUTION)
            .await?;
        Ok(Some((user, session)))
    }

    /// Checks a username and password: the first login step.
    ///
    /// Every failure is the same [`IdentityError::LoginFailed`]: a wrong
    /// password, a missing user, a user who is not active, a locked
    /// account. Each costs one argon2 verification (against a dummy hash
    /// when there is nothing to check) and is answered
    /// [`IdentityConfig::failed_login_time`] after it arrived, so the timing
    /// does not tell them apart either: a delayed or locked account's
    /// guess waits up to 2 s for guesses in flight to settle
    /// (`lockout.rs`), an unknown user's would otherwise be answered at
    /// once. A guess is reserved with the lockout before the hash is
    /// checked.
    ///
    /// [`IdentityConfig::failed_login_time`]: crate::IdentityConfig::failed_login_time
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        meta: &Origin,
    ) -> Result<PasswordOutcome> {
        let failure_answer_at = tokio::time::Instant::now() + self.config.failed_login_time;
        let now = self.clock.now();
        let limit_key = meta.ip();
        let limit_key = limit_key.as_deref().unwrap_or("unknown");
        if let Err(retry_after) = self.login_limiter.check(limit_key, now).await {
            crate::metrics::login("rate_limited");
            self.audit(
                typed_username(AuditEvent::failure("auth.login.rate_limited"), username),
                meta,
            );
            return Err(IdentityError::RateLimited { retry_after });
        }
        let user = self.store.user_by_username(username).await?;
        let (reserved, reason) = match &user {
            None => (None, "unknown_user"),
            Some(u) => match state_of(u)? {
                UserState::Active => match self.reserve_attempt(&u.id).await? {
                    Reservation::Granted(reserved) => (Some(reserved), "wrong_password"),
                    Reservation::Refused => (None, "locked"),
                },
                other => (None, other.as_str()),
            },
        };
        let stored_hash = user
            .as_ref()
            .filter(|_| reserved.is_some())
            .map(|u| u.password_hash.clone());
        let valid = self
            .passwords
            .verify(password.to_owned(), stored_hash)
            .await;
        let user = match (user, reserved) {
            (Some(user), Some(_)) if valid => user,
            (user, reserved) => {
                if let (Some(user), Some(reserved)) = (&user, reserved) {
                    self.attempt_failed(&user.id, reserved, meta);
                }
                crate::metrics::login(reason);
                let event = AuditEvent::failure("auth.login.failure").detail("reason", reason);
                let event = match &user {
                    Some(user) => event.detail("username", user.username.as_str()),
                    None => typed_username(event, username),
                };
                self.audit(event, meta);
                tokio::time::sleep_until(failure_answer_at).await;
                return Err(IdentityError::LoginFailed);
            }
        };
        if self.has_totp(&user).await? {
            let pending = self.seal_pending(&user.id, now)?;
            return Ok(PasswordOutcome::SecondFactor { pending });
        }
        if self.mfa_required_by_role(&user) {
            let pending = self.seal_pending(&user.id, now)?;
            let enrolment = self.enrolment_for(&user).await?;
            return Ok(PasswordOutcome::Enrol { pending, enrolment });
        }
        let logged_in = self
            .complete_login(user, vec![AMR_PASSWORD.to_owned()], meta)
            .await?;
        Ok(PasswordOutcome::LoggedIn(logged_in))
    }

    /// The second login step, for the user the `pending` cookie names: a
    /// TOTP or recovery code, or, for a user who must enrol, the code that
    /// confirms the enrolment.
    pub async fn second_factor(
        &self,
        pending: Option<&str>,
        code: &str,
        meta: &Origin,
    ) -> Result<SecondStep> {
        let user = self.pending_user(pending).await?;
        let recovery_codes = if self.has_totp(&user).await? {
            self.verify_second_factor(&user, code, meta).await?;
            None
        } else if self.mfa_required_by_role(&user) {
            Some(self.confirm_totp_enrolment(&user, code, meta).await?)
        } else {
            // The credential was reset meanwhile: start again.
            return Err(IdentityError::LoginFailed);
        };
        let amr = vec![AMR_PASSWORD.to_owned(), AMR_OTP.to_owned()];
        let logged_in = self.complete_login(user, amr, meta).await?;
        Ok(SecondStep {
            logged_in,
            recovery_codes,
        })
    }

    /// What the second step of the `pending` login asks for.
    pub async fn pending_step(&self, pending: Option<&str>) -> Result<PendingStep> {
        let user = self.pending_user(pending).await?;
        Ok(match self.pending_enrolment(&user).await? {
            Some(enrolment) => PendingStep::Enrol(enrolment),
            None => PendingStep::Code,
        })
    }

    fn seal_pending(&self, user_id: &str, now: i64) -> Result<String> {
        let pending = Pending {
            sub: user_id.to_owned(),
            exp: now + PENDING_TTL,
        };
        let json = serde_json::to_vec(&pending)
            .map_err(|e| IdentityError::BadInput(format!("pending login: {e}")))?;
        Ok(b64url(&self.pending_key.seal(PENDING_AAD, &json)?))
    }

    /// The active user a live pending login names; anything else is the
    /// generic [`IdentityError::LoginFailed`] (start again).
    async fn pending_user(&self, pending: Option<&str>) -> Result<User> {
        let pending: Pending = pending
            .and_then(b64url_decode)
            .and_then(|sealed| self.pending_key.open(PENDING_AAD, &sealed).ok())
            .and_then(|json| serde_json::from_slice(&json).ok())
            .filter(|p: &Pending| p.exp > self.clock.now())
            .ok_or(IdentityError::LoginFailed)?;
        let user = self
            .store
            .user_by_id(&pending.sub)
            .await?
            .ok_or(IdentityError::LoginFailed)?;
        if state_of(&user)? != UserState::Active {
            return Err(IdentityError::LoginFailed);
        }
        Ok(user)
    }

    /// Forgets the user's failures and opens the SSO session.
    async fn complete_login(
        &self,
        user: User,
        amr: Vec<String>,
        meta: &Origin,
    ) -> Result<LoggedIn> {
        self.clear_failures(&user.id).await?;
        let now = self.clock.now();
        let session_token = random_token();
        self.store
            .insert_session(&SsoSession {
                id_hash: token_hash(&session_token),
                user_id: user.id.clone(),
                auth_time: now,
                expires_at: now + self.config.sso_session_ttl,
                amr: amr.clone(),
                created_at: now,
                last_seen_at: now,
                user_agent: meta.user_agent.clone().unwrap_or_default(),
                address: meta.ip().unwrap_or_default(),
            })
            .await?;
        crate::metrics::login("success");
        self.audit(
            AuditEvent::success("auth.login.success")
                .actor(user.id.as_str())
                .detail("username", user.username.as_str())
                .detail("amr", amr.clone()),
            meta,
        );
        Ok(LoggedIn {
            user,
            session_token,
            auth_time: now,
            amr,
        })
    }

    /// Ends the SSO session named by the cookie, if any.
    pub async fn end_session(&self, session_token: Option<&str>, meta: &Origin) -> Result<()> {
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

/// What the trail keeps of a username that matched no account: only its
/// length. Such text is often a password typed into the wrong field, so
/// it is never recorded, not even cut short; a real account's username is
/// recorded as stored.
fn typed_username(event: AuditEvent, typed: &str) -> AuditEvent {
    event.detail("username_chars", typed.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_username_leaves_only_its_length() {
        let event = typed_username(AuditEvent::failure("auth.login.failure"), "hunter2 secret");
        assert_eq!(event.details.get("username_chars"), Some(&14.into()));
        assert!(!serde_json::to_string(&event).unwrap().contains("hunter2"));
    }
}
