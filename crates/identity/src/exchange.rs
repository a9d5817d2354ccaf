//! OAuth 2.0 Token Exchange (RFC 8693): a confidential client that holds a
//! user's access token for itself trades it for a token for another
//! audience that still names the user, with the client recorded as the
//! actor (`act`). The gateway uses it to call its upstreams as the user
//! without handing them the token the user gave the gateway.
//!
//! Policy:
//! - only confidential clients registered with [`crate::grant::GRANT_TOKEN_EXCHANGE`]
//!   may exchange (`unauthorized_client` otherwise);
//! - `subject_token` must be one of our access tokens (RFC 8693
//!   `urn:ietf:params:oauth:token-type:access_token`), unexpired, not
//!   revoked, whose `aud` includes the requesting client: a client trades
//!   only tokens that were given to it;
//! - no `actor_token`: the authenticated client is the actor;
//! - the target (`resource` or `audience`, RFC 8693 §2.1) must be one of
//!   the client's registered audiences (`invalid_target`);
//! - the new token keeps `sub`, `roles` and the scope (a `scope` parameter
//!   may narrow it, never widen it; [`crate::admin::ADMIN_SCOPE`] is
//!   never passed on, only granted on its own to an admin who passed a
//!   second factor, see `Provider::exchanged_admin_scope`), carries
//!   `act: {"sub": <client>}`
//!   (nesting any `act` the subject token had, §4.1), and expires no later
//!   than the subject token.

use echo_core::Scope;
use echo_core::audit::AuditEvent;
use echo_crypto::secret::{b64url, random_bytes};
use echo_identity_store::Client;
use serde_json::{Value, json};

use crate::grant::{ClientGrants, Grant, TokenParams, TokenResponse};
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// RFC 8693 §3: an OAuth access token.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// RFC 8693 §3: a JWT (our access tokens are JWTs).
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

impl Provider {
    /// RFC 8693 §2: one exchange.
    pub(crate) async fn token_exchange_grant(
        &self,
        client: &Client,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if client.is_public() || !client.allows(Grant::TokenExchange) {
            return Err(IdentityError::UnauthorizedClient(
                "client may not use token exchange".into(),
            ));
        }
        let exchange = &params.exchange;
        let invalid = |why: &str| IdentityError::InvalidRequest(why.to_owned());
        let subject_token = exchange
            .subject_token
            .as_deref()
            .ok_or_else(|| invalid("subject_token is required"))?;
        if exchange.subject_token_type.as_deref() != Some(ACCESS_TOKEN_TYPE) {
            return Err(invalid(
                "subject_token_type must be urn:ietf:params:oauth:token-type:access_token",
            ));
        }
        if exchange.actor_token.is_some() || exchange.actor_token_type.is_some() {
            return Err(invalid(
                "actor_token is not supported: the client is the actor",
            ));
        }
        if let Some(asked) = exchange.requested_token_type.as_deref()
            && asked != ACCESS_TOKEN_TYPE
            && asked != JWT_TOKEN_TYPE
        {
            return Err(invalid("only access tokens are issued"));
        }
        // §2.2.2: an unacceptable subject token is `invalid_request`.
        let subject = self
            .verify_access_token(subject_token, &client.id, meta)
            .await
            .map_err(|e| match e {
                IdentityError::Refused(_) => invalid("subject_token is not valid for this client"),
                other => other,
            })?;
        let audience = self
            .choose_audience(client, params, None)?
            .ok_or_else(|| IdentityError::InvalidTarget("no audience".into()))?;
        let scope = if crate::admin::asks_admin_scope(params.scope.as_deref()) {
            self.exchanged_admin_scope(&subject, &audience).await?
        } else {
            crate::admin::without_admin_scope(&narrowed_scope(
                subject.scope.as_deref().unwrap_or(""),
                params,
            )?)
        };
        let mut act = json!({"sub": client.id});
        if let Some(prior) = subject.other.get("act") {
            act["act"] = prior.clone();
        }
        let now = self.clock.now();
        let expires_at = (now + self.config.access_token_ttl).min(subject.exp);
        let signer = self
            .keys
            .signer(self.config.access_token_alg, Some(&audience), now)?;
        // RFC 9068 §2.2 plus RFC 8693 §4.1's `act`.
        let mut claims = json!({
            "iss": self.config.issuer,
            "sub": subject.sub,
            "aud": audience,
            "exp": expires_at,
            "iat": now,
            "jti": b64url(&random_bytes::<16>()),
            "client_id": client.id,
            "scope": scope,
            "act": act,
        });
        if !subject.roles.is_empty() {
            claims["roles"] = Value::from(subject.roles.clone());
        }
        let token = signer.sign("at+jwt", &claims)?;
        crate::metrics::token_issued(Grant::TokenExchange, client.id.as_str());
        self.audit(
            AuditEvent::success("token.exchanged")
                .actor(subject.sub.as_str())
                .detail("client_id", client.id.as_str())
                .detail("audience", audience.as_str())
                .detail("kid", signer.kid()),
            meta,
        );
        Ok(TokenResponse {
            access_token: token,
            token_type: "Bearer",
            expires_in: (expires_at - now).max(0),
            refresh_token: None,
            id_token: None,
            scope,
            issued_token_type: Some(ACCESS_TOKEN_TYPE),
        })
    }
}

/// The subject token's scope, or the part of it `params.scope` asks for.
fn narrowed_scope(granted: &str, params: &TokenParams) -> Result<String> {
    Scope::parse(granted)
        .narrow(params.scope.as_deref())
        .map(|scope| scope.to_string())
        .map_err(|extra| {
            IdentityError::InvalidScope(format!("scope {extra} exceeds the subject token's"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_may_narrow_never_widen() {
        let with = |scope: Option<&str>| TokenParams {
            scope: scope.map(str::to_owned),
            ..TokenParams::default()
        };
        assert_eq!(
            narrowed_scope("openid profile", &with(None)).unwrap(),
            "openid profile"
        );
        assert_eq!(
            narrowed_scope("openid profile", &with(Some("profile"))).unwrap(),
            "profile"
        );
        assert!(matches!(
            narrowed_scope("openid", &with(Some("openid admin"))),
            Err(IdentityError::InvalidScope(_))
        ));
    }
}
