//! Token revocation (RFC 7009) and introspection (RFC 7662).
//!
//! Both take a token of either kind. Ours are told apart by their form, so
//! `token_type_hint` is accepted and not needed (RFC 7009 §2.1 and RFC 7662
//! §2.1 let the server ignore it): an access token is a JWT, a refresh token
//! is 43 base64url characters without dots.
//!
//! Who may do what:
//! - Revocation: any client that authenticates as at `/token` (a public
//!   client by its `client_id`), for its own tokens only. Revoking a refresh
//!   token revokes its whole family; revoking an access token records its
//!   `jti` until it expires. Anything else (unknown, malformed, expired, or
//!   another client's token) is silently ignored with 200, as §2.2 demands,
//!   so the endpoint tells a caller nothing about tokens it does not own.
//! - Verification (`/verify`, the original design's helper for services
//!   that cannot verify JWTs themselves): an authenticated confidential
//!   client, as at introspection; refused tokens are audited by the edge's
//!   gate (aggregated per address and reason) and, past
//!   `verify_refusals_per_minute` per client and address, answered 429.
//! - Introspection: an authenticated *confidential* client learns about a
//!   token only if it is one of the token's parties (RFC 7662 §4: "the
//!   authorization server ... MAY limit which protected resources may
//!   introspect which tokens"): an access token for the client it was
//!   issued to (`client_id`) or a resource server named in its `aud` (a
//!   client whose id is that audience); a refresh token for the client it
//!   was issued to. Anyone else gets `{"active": false}`, exactly as for a
//!   revoked, expired, malformed or foreign token, so the answer tells a
//!   stranger nothing. Public clients get `invalid_client`.

use echo_core::audit::AuditEvent;
use echo_crypto::secret::token_hash;
use echo_identity_store::Client;
use std::sync::Arc;

use echo_verify::{Audience, Claims, Expectations};
use serde::{Deserialize, Serialize};

use crate::client_auth::BasicCredentials;
use crate::grant::ClientAuthParams;
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// The form of a revocation or introspection request. `token_type_hint`
/// may be sent and is ignored (see the module docs).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenRequest {
    pub token: Option<String>,
    #[serde(flatten)]
    pub client: ClientAuthParams,
}

/// RFC 7662 §2.2.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Introspection {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

impl Introspection {
    fn inactive() -> Self {
        Self::default()
    }
}

/// Whether `client` may learn about an access token with `claims`: the
/// client it was issued to, or a resource server in its audience. Ids are
/// compared exactly (a client `Docs` is not the audience `docs`).
fn is_party(client: &Client, claims: &Claims) -> bool {
    claims.client_id.as_deref() == Some(client.id.as_str()) || claims.aud.contains(&client.id)
}

/// A compact JWS has three dot-separated parts; our refresh tokens have none.
fn is_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

fn required_token(request: &TokenRequest) -> Result<&str> {
    request
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| IdentityError::InvalidRequest("token is required".into()))
}

impl Provider {
    /// RFC 7009 §2: revokes the caller's own token; answers `Ok` whatever
    /// the token was.
    pub async fn revoke(
        &self,
        request: &TokenRequest,
        basic: Option<BasicCredentials>,
        meta: &Origin,
    ) -> Result<()> {
        let client = self
            .authenticate_client(&request.client, basic, "/revoke", meta)
            .await?
            .client;
        let token = required_token(request)?;
        let now = self.clock.now();
        let kind = if is_jwt(token) {
            let claims = self
                .verifier
                .verify(
                    token,
                    &Expectations {
                        audience: None,
                        typ: "at+jwt",
                        allow_expired: true,
                    },
                )
                .await
                .ok()
                .filter(|c| c.client_id.as_deref() == Some(client.id.as_str()));
            match claims.as_deref() {
                Some(Claims {
                    jti: Some(jti),
                    exp,
                    ..
                }) if self.acceptance_end(*exp) > now => {
                    self.store
                        .revoke_access_token(jti, self.acceptance_end(*exp))
                        .await?;
                    self.revocations.insert(jti, true, now);
                    "access_token"
                }
                _ => return Ok(()),
            }
        } else {
            match self.store.refresh_token(&token_hash(token)).await? {
                Some(refresh) if refresh.client_id == client.id => {
                    self.store
                        .revoke_refresh_family(&refresh.family_id, now)
                        .await?;
                    self.forget_revocation_answers();
                    "refresh_token"
                }
                _ => return Ok(()),
            }
        };
        self.audit(
            AuditEvent::success("oauth.token.revoked")
                .actor(client.id.as_str())
                .detail("client_id", client.id.as_str())
                .detail("token_type", kind),
            meta,
        );
        Ok(())
    }

    /// `/verify`: whether `token` is one of our unrevoked access tokens for
    /// `audience`, for an authenticated confidential client.
    pub async fn verify_for_client(
        &self,
        credentials: &ClientAuthParams,
        basic: Option<BasicCredentials>,
        token: &str,
        audience: &str,
        meta: &Origin,
    ) -> Result<Arc<Claims>> {
        let used_basic = basic.is_some();
        let client = self
            .authenticate_client(credentials, basic, "/verify", meta)
            .await?
            .client;
        if client.is_public() {
            return Err(IdentityError::InvalidClient { basic: used_basic });
        }
        let ip = meta.ip();
        let key = format!("{}|{}", client.id, ip.as_deref().unwrap_or("unknown"));
        let now = self.clock.now();
        if let Some(retry_after) = self.verify_refusals.blocked(&key, now).await {
            return Err(IdentityError::RateLimited { retry_after });
        }
        let verified = self.verify_access_token(token, audience, meta).await;
        if let Err(IdentityError::Refused(_)) = &verified {
            // Counted only to slow a caller probing tokens; the answer is
            // the same.
            let _ = self.verify_refusals.check(&key, now).await;
        }
        verified
    }

    /// RFC 7662 §2: what an authenticated confidential client may know of
    /// a token.
    pub async fn introspect(
        &self,
        request: &TokenRequest,
        basic: Option<BasicCredentials>,
        meta: &Origin,
    ) -> Result<Introspection> {
        let used_basic = basic.is_some();
        let client = self
            .authenticate_client(&request.client, basic, "/introspect", meta)
            .await?
            .client;
        if client.is_public() {
            return Err(IdentityError::InvalidClient { basic: used_basic });
        }
        let token = required_token(request)?;
        if is_jwt(token) {
            self.introspect_access_token(&client, token).await
        } else {
            self.introspect_refresh_token(&client, token).await
        }
    }

    async fn introspect_access_token(&self, client: &Client, token: &str) -> Result<Introspection> {
        let expect = Expectations {
            audience: None,
            typ: "at+jwt",
            allow_expired: false,
        };
        let Ok(claims) = self.verifier.verify(token, &expect).await else {
            return Ok(Introspection::inactive());
        };
        if !is_party(client, &claims) {
            return Ok(Introspection::inactive());
        }
        if claims.jti.is_none() || self.access_token_revoked(&claims).await? {
            return Ok(Introspection::inactive());
        }
        // Client-credentials tokens name the client as subject: no user.
        let username = if claims.client_id.as_deref() == Some(claims.sub.as_str()) {
            None
        } else {
            self.username(&claims.sub).await?
        };
        Ok(Introspection {
            active: true,
            scope: claims.scope.clone(),
            client_id: claims.client_id.clone(),
            username,
            token_type: Some("Bearer"),
            exp: Some(claims.exp),
            iat: claims.iat,
            sub: Some(claims.sub.clone()),
            aud: Some(claims.aud.clone()),
            iss: Some(claims.iss.clone()),
            jti: claims.jti.clone(),
        })
    }

    async fn introspect_refresh_token(
        &self,
        client: &Client,
        token: &str,
    ) -> Result<Introspection> {
        let now = self.clock.now();
        let Some(refresh) = self
            .store
            .refresh_token(&token_hash(token))
            .await?
            .filter(|t| {
                t.client_id == client.id
                    && t.used_at.is_none()
                    && t.revoked_at.is_none()
                    && t.expires_at > now
            })
        else {
            return Ok(Introspection::inactive());
        };
        let username = self.username(&refresh.user_id).await?;
        Ok(Introspection {
            active: true,
            scope: Some(refresh.scope),
            client_id: Some(refresh.client_id),
            username,
            token_type: Some("refresh_token"),
            exp: Some(refresh.expires_at),
            iat: Some(refresh.issued_at),
            sub: Some(refresh.user_id),
            aud: None,
            iss: Some(self.config.issuer.clone()),
            jti: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_told_apart_by_form() {
        assert!(is_jwt("a.b.c"));
        assert!(!is_jwt(&echo_crypto::secret::random_token()));
        assert!(!is_jwt("a.b"));
        assert!(!is_jwt("a.b.c.d"));
    }

    #[test]
    fn inactive_says_nothing_else() {
        assert_eq!(
            serde_json::to_value(Introspection::inactive()).unwrap(),
            serde_json::json!({"active": false})
        );
    }
}
