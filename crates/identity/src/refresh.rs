//! Refresh tokens (RFC 6749 §6) with rotation and reuse detection
//! (RFC 9700 §4.14.2).
//!
//! A refresh token is issued only when the `offline_access` scope was
//! granted (OIDC Core §11) to a client registered for the `refresh_token`
//! grant. It is 256 random bits, stored as its SHA-256 hash. Every token
//! belongs to a *family*: the authorization code it descends from (the
//! family id is the code's hash, so a replayed code finds its family).
//!
//! Each use rotates: the presented token is marked used and a successor of
//! the same family is issued with a new access token, atomically (of two
//! concurrent uses exactly one rotates). Presenting a spent token again is
//! treated as theft (RFC 9700 §4.14.2, OAuth 2.1 §4.3.1): the whole family
//! is revoked, with every access token issued from it still alive, the
//! event is audited as `oauth.refresh.reuse_detected` and the answer is
//! `invalid_grant`. The one exception is the optional grace
//! ([`IdentityConfig::refresh_token_grace`], zero by default, at most
//! 60 s): within it of the rotation, measured in milliseconds, the client
//! that rotated the token, authenticating with the same method, gets the
//! very same answer again (a second tab, a retry after a lost response).
//! A hash cannot give the successor back, so the rotation seals the whole
//! answer, with the rotation's millisecond and the authentication method,
//! under a key derived from the master key (AES-256-GCM, bound to the spent
//! token's hash) and keeps it on the spent row. Anyone else presenting the
//! spent token (another client, the same client by another method) revokes
//! the family, grace or not.
//!
//! Lifetimes: a token expires after the idle lifetime, and never after the
//! family's absolute lifetime, counted from the code exchange.
//!
//! [`IdentityConfig::refresh_token_grace`]: crate::IdentityConfig::refresh_token_grace

use echo_core::Scope;
use echo_core::audit::AuditEvent;
use echo_crypto::secret::{random_token, token_hash};
use echo_identity_store::{Client, RefreshToken, StoreError};
use serde::{Deserialize, Serialize};

use crate::client_auth::{AuthMethod, Authenticated};
use crate::grant::{ClientGrants, Grant, TokenParams, TokenResponse};
use crate::mint::{Minted, UserAccess};
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// The grant a new family starts from.
#[derive(Debug)]
pub(crate) struct NewFamily<'a> {
    pub family_id: &'a str,
    pub client_id: &'a str,
    pub user_id: &'a str,
    pub scope: &'a str,
    pub audience: Option<&'a str>,
    pub auth_time: i64,
}

/// The answer a rotation produced, sealed on the spent token's row, with
/// what the grace check needs: when (in milliseconds) and how the client
/// authenticated. A row sealed before these were kept has neither, and so
/// gets no grace.
#[derive(Debug, Serialize, Deserialize)]
struct Successor {
    access_token: String,
    access_expires_at: i64,
    refresh_token: String,
    scope: String,
    #[serde(default)]
    rotated_at_ms: Option<i64>,
    #[serde(default)]
    auth_method: Option<AuthMethod>,
}

impl Successor {
    fn response(self, now: i64) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token,
            token_type: "Bearer",
            expires_in: (self.access_expires_at - now).max(0),
            refresh_token: Some(self.refresh_token),
            id_token: None,
            scope: self.scope,
            issued_token_type: None,
        }
    }
}

/// RFC 6749 §6: the requested scope "MUST NOT include any scope not
/// originally granted", and omitted means the original one.
fn narrowed_scope(granted: &str, asked: Option<&str>) -> Result<String> {
    Scope::parse(granted)
        .narrow(asked)
        .map(|scope| scope.to_string())
        .map_err(|extra| {
            IdentityError::InvalidScope(format!(
                "scope {extra} was not granted to this refresh token"
            ))
        })
}

fn corrupt(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::Store(StoreError::Corrupt(format!("refresh successor: {e}")))
}

impl Provider {
    /// The first refresh token of a family, issued with `access`.
    pub(crate) async fn start_refresh_family(
        &self,
        family: &NewFamily<'_>,
        access: &Minted,
        now: i64,
    ) -> Result<String> {
        let token = random_token();
        self.store
            .insert_refresh_token(&RefreshToken {
                token_hash: token_hash(&token),
                family_id: family.family_id.to_owned(),
                client_id: family.client_id.to_owned(),
                user_id: family.user_id.to_owned(),
                scope: family.scope.to_owned(),
                audience: family.audience.map(str::to_owned),
                auth_time: family.auth_time,
                issued_at: now,
                expires_at: now + self.config.refresh_token_idle_ttl,
                family_expires_at: now + self.config.refresh_token_absolute_ttl,
                access_jti: access.jti.clone(),
                access_expires_at: self.acceptance_end(access.expires_at),
                used_at: None,
                revoked_at: None,
                successor: None,
            })
            .await?;
        Ok(token)
    }

    /// RFC 6749 §6: the refresh-token grant, with rotation.
    pub(crate) async fn refresh_token_grant(
        &self,
        authenticated: &Authenticated,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        let client: &Client = &authenticated.client;
        if !client.allows(Grant::RefreshToken) {
            return Err(IdentityError::UnauthorizedClient(
                "client may not use the refresh token grant".into(),
            ));
        }
        let presented = params
            .refresh_token
            .as_deref()
            .ok_or_else(|| IdentityError::InvalidRequest("refresh_token is required".into()))?;
        let invalid = |why: &str| IdentityError::InvalidGrant(why.to_owned());
        let hash = token_hash(presented);
        let now = self.clock.now();
        let now_ms = self.clock.now_millis();
        // The token and its user in one read: the user's state is checked
        // on every refresh, so a suspension stops refreshes at once.
        let (token, user) = self
            .store
            .refresh_grant(&hash)
            .await?
            .ok_or_else(|| invalid("unknown refresh token"))?;
        if token.client_id != client.id {
            if token.used_at.is_some() && token.revoked_at.is_none() {
                // A spent token in another client's hands: stolen.
                return self.spent_refresh_token(token, authenticated, meta).await;
            }
            self.audit(
                AuditEvent::failure("oauth.refresh.wrong_client")
                    .actor(token.user_id.as_str())
                    .detail("client_id", client.id.as_str())
                    .detail("issued_to", token.client_id.as_str()),
                meta,
            );
            return Err(invalid("refresh token was issued to another client"));
        }
        if token.revoked_at.is_some() {
            return Err(invalid("refresh token revoked"));
        }
        if token.used_at.is_some() {
            return self.spent_refresh_token(token, authenticated, meta).await;
        }
        if token.expires_at <= now {
            return Err(invalid("refresh token expired"));
        }
        let scope = narrowed_scope(&token.scope, params.scope.as_deref())?;
        crate::admin::check_admin_scope(&scope, &user, None)?;
        let UserAccess {
            user,
            access,
            audiences,
            signer,
        } = self.user_access_token(
            client,
            params,
            user,
            token.audience.as_deref(),
            (&scope, token.auth_time),
            now,
        )?;
        let refresh_token = random_token();
        let successor = RefreshToken {
            token_hash: token_hash(&refresh_token),
            issued_at: now,
            expires_at: (now + self.config.refresh_token_idle_ttl).min(token.family_expires_at),
            access_jti: access.jti.clone(),
            access_expires_at: self.acceptance_end(access.expires_at),
            used_at: None,
            revoked_at: None,
            successor: None,
            ..token.clone()
        };
        let answer = Successor {
            access_token: access.token,
            access_expires_at: access.expires_at,
            refresh_token,
            scope,
            rotated_at_ms: Some(now_ms),
            auth_method: Some(authenticated.method),
        };
        let sealed = self.successor_key.seal(
            hash.as_bytes(),
            &serde_json::to_vec(&answer).map_err(corrupt)?,
        )?;
        if self
            .store
            .rotate_refresh_token(&hash, now, &sealed, &successor)
            .await?
        {
            self.audit_issued(
                client,
                &user.id,
                &audiences,
                &signer,
                Grant::RefreshToken,
                meta,
            );
            return Ok(answer.response(now));
        }
        // A concurrent use rotated it first (or revoked it): answer as to
        // a spent token.
        let token = self
            .store
            .refresh_token(&hash)
            .await?
            .filter(|t| t.revoked_at.is_none())
            .ok_or_else(|| invalid("refresh token revoked"))?;
        self.spent_refresh_token(token, authenticated, meta).await
    }

    /// A used refresh token presented again: the same successor to the
    /// same client authenticating the same way within the grace, else the
    /// family is revoked (RFC 9700 §4.14.2).
    async fn spent_refresh_token(
        &self,
        token: RefreshToken,
        by: &Authenticated,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if let Some(answer) = self.grace_answer(&token, by)? {
            self.audit(
                AuditEvent::success("oauth.refresh.grace_reuse")
                    .actor(token.user_id.as_str())
                    .detail("client_id", token.client_id.as_str()),
                meta,
            );
            return Ok(answer.response(self.clock.now()));
        }
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_refresh_family(&token.family_id, now)
            .await?;
        self.forget_revocation_answers();
        crate::metrics::refresh_reuse();
        self.audit(
            AuditEvent::failure("oauth.refresh.reuse_detected")
                .actor(token.user_id.as_str())
                .detail("client_id", token.client_id.as_str())
                .detail(
                    "reason",
                    "spent refresh token presented again: possible theft",
                )
                .detail("revoked_refresh_tokens", revoked),
            meta,
        );
        Err(IdentityError::InvalidGrant(
            "refresh token already used".into(),
        ))
    }

    /// The sealed answer of `token`'s rotation, if `by` may have it again:
    /// a grace is configured, it is the client the token was issued to,
    /// authenticating as it did at the rotation, and the rotation is at
    /// most the grace ago, in milliseconds.
    fn grace_answer(&self, token: &RefreshToken, by: &Authenticated) -> Result<Option<Successor>> {
        let grace_ms = i64::try_from(self.config.refresh_token_grace.as_millis()).unwrap_or(0);
        let Some(sealed) = token.successor.as_ref().filter(|_| grace_ms > 0) else {
            return Ok(None);
        };
        if by.client.id != token.client_id {
            return Ok(None);
        }
        let plain = self
            .successor_key
            .open(token.token_hash.as_bytes(), sealed)?;
        let answer: Successor = serde_json::from_slice(&plain).map_err(corrupt)?;
        let elapsed_ms = answer.rotated_at_ms.map(|at| self.clock.now_millis() - at);
        let within = elapsed_ms.is_some_and(|ms| (0..=grace_ms).contains(&ms));
        Ok((within && answer.auth_method == Some(by.method)).then_some(answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_may_narrow_but_never_widen() {
        let granted = "openid profile offline_access";
        assert_eq!(narrowed_scope(granted, None).unwrap(), granted);
        assert_eq!(narrowed_scope(granted, Some("  ")).unwrap(), granted);
        assert_eq!(
            narrowed_scope(granted, Some("openid openid profile")).unwrap(),
            "openid profile"
        );
        assert!(matches!(
            narrowed_scope(granted, Some("openid email")),
            Err(IdentityError::InvalidScope(_))
        ));
    }

    #[test]
    fn a_grace_answer_counts_down_the_access_token() {
        let answer = Successor {
            access_token: "at".into(),
            access_expires_at: 1_600,
            refresh_token: "rt".into(),
            scope: "openid".into(),
            rotated_at_ms: None,
            auth_method: None,
        };
        let response = answer.response(1_000);
        assert_eq!(response.expires_in, 600);
        assert_eq!(response.refresh_token.as_deref(), Some("rt"));
    }
}
