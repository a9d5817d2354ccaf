//! The token endpoint: one request dispatched to its grant (RFC 6749
//! §4.1.3 and §4.4 here; §6 in `refresh.rs`; RFC 8693 in `exchange.rs`),
//! with PKCE verification (RFC 7636 §4.6) and OIDC ID tokens. Access tokens
//! are signed by `mint.rs`; client authentication is `client_auth.rs`.

use echo_core::audit::AuditEvent;
use echo_crypto::Algorithm;
use echo_crypto::secret::{b64url, constant_time_eq, sha256, token_hash};
use echo_identity_store::{Client, CodeUse, User};
use serde::Serialize;

use crate::authorize::is_pkce_string;
use crate::client_auth::BasicCredentials;
use crate::grant::{ClientGrants, Grant, OFFLINE_ACCESS, TokenParams, TokenResponse};
use crate::mint::UserAccess;
use crate::refresh::NewFamily;
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// OIDC Core §2 and §3.1.3.6.
#[derive(Debug, Serialize)]
struct IdClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
    at_hash: String,
    preferred_username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    /// OIDC Core §5.1: whether the user followed a link sent to `email`;
    /// present with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
    /// OIDC Core §2 and RFC 8176: how the user authenticated.
    amr: &'a [String],
}

/// OIDC Core §3.1.3.6: base64url of the left half of SHA-256(access token).
fn at_hash(access_token: &str) -> String {
    b64url(&sha256(access_token.as_bytes())[..16])
}

impl Provider {
    /// Runs one token request.
    pub async fn token(
        &self,
        params: TokenParams,
        basic: Option<BasicCredentials>,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        let authenticated = self
            .authenticate_client(&params.client, basic, "/token", meta)
            .await?;
        let client = &authenticated.client;
        let grant = params
            .grant_type
            .as_deref()
            .ok_or_else(|| IdentityError::InvalidRequest("grant_type is required".into()))?;
        match Grant::parse(grant).ok_or(IdentityError::UnsupportedGrantType)? {
            Grant::AuthorizationCode => self.authorization_code_grant(client, &params, meta).await,
            Grant::RefreshToken => {
                self.refresh_token_grant(&authenticated, &params, meta)
                    .await
            }
            Grant::ClientCredentials => self.client_credentials_grant(client, &params, meta).await,
            Grant::TokenExchange => self.token_exchange_grant(client, &params, meta).await,
        }
    }

    async fn authorization_code_grant(
        &self,
        client: &Client,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if !client.allows(Grant::AuthorizationCode) {
            return Err(IdentityError::UnauthorizedClient(
                "client may not use the authorization code grant".into(),
            ));
        }
        let code = params
            .code
            .as_deref()
            .ok_or_else(|| IdentityError::InvalidRequest("code is required".into()))?;
        let now = self.clock.now();
        let code = match self.store.consume_code(&token_hash(code), now).await? {
            CodeUse::Consumed(code) => code,
            CodeUse::Replayed(code) => {
                // RFC 6749 §4.1.2: revoke what the code produced.
                let revoked = self.store.revoke_code_grant(&code.code_hash, now).await?;
                self.forget_revocation_answers();
                self.audit(
                    AuditEvent::failure("oauth.code.replayed")
                        .actor(code.user_id.as_str())
                        .detail("client_id", client.id.as_str())
                        .detail("revoked_refresh_tokens", revoked),
                    meta,
                );
                return Err(IdentityError::InvalidGrant(
                    "authorization code already used".into(),
                ));
            }
            CodeUse::NotFound => {
                return Err(IdentityError::InvalidGrant(
                    "unknown authorization code".into(),
                ));
            }
        };
        let invalid = |why: &str| IdentityError::InvalidGrant(why.to_owned());
        if code.client_id != client.id {
            return Err(invalid("authorization code was issued to another client"));
        }
        if code.expires_at <= now {
            return Err(invalid("authorization code expired"));
        }
        if params.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return Err(invalid(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&code.code_challenge, params.code_verifier.as_deref()) {
            (Some(challenge), Some(verifier)) => {
                let computed = b64url(&sha256(verifier.as_bytes()));
                if !is_pkce_string(verifier)
                    || !constant_time_eq(computed.as_bytes(), challenge.as_bytes())
                {
                    return Err(invalid("code_verifier does not match the code_challenge"));
                }
            }
            (Some(_), None) => return Err(invalid("code_verifier is required")),
            // RFC 9700 §4.8.2: a verifier without a challenge is a downgrade attempt.
            (None, Some(_)) => return Err(invalid("code_verifier sent but no code_challenge was")),
            (None, None) => {}
        }
        let user = self.granted_user(&code.user_id).await?;
        crate::admin::check_admin_scope(&code.scope, &user, Some(&code.amr))?;
        let UserAccess {
            user,
            access,
            audiences,
            signer,
        } = self.user_access_token(
            client,
            params,
            user,
            code.audience.as_deref(),
            (&code.scope, code.auth_time),
            now,
        )?;
        self.store
            .record_code_access_token(&code.code_hash, &access.jti, access.expires_at)
            .await?;
        let offline = code.scope.split(' ').any(|s| s == OFFLINE_ACCESS)
            && client.allows(Grant::RefreshToken);
        let refresh_token = if offline {
            // The family is named after the code, so a replay of the code
            // finds and revokes it.
            let family = NewFamily {
                family_id: &code.code_hash,
                client_id: &client.id,
                user_id: &user.id,
                scope: &code.scope,
                audience: code.audience.as_deref(),
                auth_time: code.auth_time,
            };
            Some(self.start_refresh_family(&family, &access, now).await?)
        } else {
            None
        };
        let id_signer = self.keys.signer(Algorithm::RS256, Some(&client.id), now)?;
        let email = user
            .email
            .as_deref()
            .filter(|_| code.scope.split(' ').any(|s| s == "email"));
        let id_token = id_signer.sign(
            "JWT",
            &IdClaims {
                iss: &self.config.issuer,
                sub: &user.id,
                aud: &client.id,
                exp: now + self.config.id_token_ttl,
                iat: now,
                auth_time: code.auth_time,
                nonce: code.nonce.as_deref(),
                at_hash: at_hash(&access.token),
                preferred_username: &user.username,
                email,
                email_verified: email.map(|_| user.email_verified),
                roles: &user.roles,
                amr: &code.amr,
            },
        )?;
        self.audit_issued(
            client,
            &user.id,
            &audiences,
            &signer,
            Grant::AuthorizationCode,
            meta,
        );
        Ok(TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl,
            refresh_token,
            id_token: Some(id_token),
            scope: code.scope,
            issued_token_type: None,
        })
    }

    /// The user a grant was made to, who must still exist.
    async fn granted_user(&self, user_id: &str) -> Result<User> {
        self.store
            .user_by_id(user_id)
            .await?
            .ok_or_else(|| IdentityError::InvalidGrant("user no longer exists".into()))
    }

    async fn client_credentials_grant(
        &self,
        client: &Client,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if client.is_public() || !client.allows(Grant::ClientCredentials) {
            return Err(IdentityError::UnauthorizedClient(
                "client may not use the client credentials grant".into(),
            ));
        }
        let audience = self
            .choose_audience(client, params, None)?
            .ok_or_else(|| IdentityError::InvalidTarget("client has no allowed audience".into()))?;
        let scope = match params.scope.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(asked) => {
                let asked: Vec<&str> = asked.split(' ').filter(|s| !s.is_empty()).collect();
                if let Some(bad) = asked
                    .iter()
                    .find(|s| !client.scopes.iter().any(|allowed| allowed == *s))
                {
                    return Err(IdentityError::InvalidScope(format!(
                        "scope {bad} is not allowed for this client"
                    )));
                }
                asked.join(" ")
            }
            None => client.scopes.join(" "),
        };
        let now = self.clock.now();
        let signer = self
            .keys
            .signer(self.config.access_token_alg, Some(&audience), now)?;
        let audiences = [audience];
        let access = self.access_token(
            &signer,
            &client.id,
            &audiences,
            &client.id,
            &scope,
            &[],
            None,
            now,
        )?;
        self.audit_issued(
            client,
            &client.id,
            &audiences,
            &signer,
            Grant::ClientCredentials,
            meta,
        );
        Ok(TokenResponse {
            access_token: access.token,
            token_type: "Bearer",
            expires_in: self.config.access_token_ttl,
            refresh_token: None,
            id_token: None,
            scope,
            issued_token_type: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" → at_hash "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }
}
