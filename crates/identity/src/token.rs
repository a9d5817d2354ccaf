//! The token endpoint's grants (RFC 6749 §4.1.3, §4.4 and, in
//! `refresh.rs`, §6), PKCE verification (RFC 7636 §4.6), and the tokens
//! themselves: RFC 9068 access tokens and OIDC ID tokens. Client
//! authentication is `client_auth.rs`.

use std::sync::Arc;

use echo_core::audit::AuditEvent;
use echo_crypto::secret::{b64url, constant_time_eq, random_bytes, sha256, token_hash};
use echo_crypto::{Algorithm, SigningKey};
use echo_identity_store::{Client, CodeUse, User};
use serde::{Deserialize, Serialize};

use crate::admin::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN};
use crate::authorize::is_pkce_string;
use crate::client_auth::{BasicCredentials, ClientAuthParams};
use crate::refresh::{NewFamily, OFFLINE_ACCESS};
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// The name identity's own service tokens carry as `sub`.
pub const IDENTITY_SERVICE: &str = "identity";

/// The form of a token request.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenParams {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    #[serde(flatten)]
    pub client: ClientAuthParams,
    /// RFC 8693's parameters (`exchange.rs`).
    #[serde(flatten)]
    pub exchange: crate::exchange::ExchangeParams,
}

/// RFC 6749 §5.1.
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    pub scope: String,
    /// RFC 8693 §2.2.1: set by token exchange only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
}

/// A user's freshly signed access token and what went into it.
pub(crate) struct UserAccess {
    pub user: User,
    pub access: Minted,
    pub audiences: Vec<String>,
    pub signer: Arc<SigningKey>,
}

/// A freshly signed access token and what revoking it needs.
#[derive(Debug, Clone)]
pub(crate) struct Minted {
    pub token: String,
    pub jti: String,
    pub expires_at: i64,
}

/// A one-element audience serialises as a string, as most verifiers expect.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Aud<'a> {
    One(&'a str),
    Many(&'a [String]),
}

impl<'a> Aud<'a> {
    fn of(list: &'a [String]) -> Self {
        match list {
            [one] => Aud::One(one),
            many => Aud::Many(many),
        }
    }
}

/// RFC 9068 §2.2.
#[derive(Debug, Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Aud<'a>,
    exp: i64,
    iat: i64,
    jti: String,
    client_id: &'a str,
    scope: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    roles: &'a [String],
}

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
        match params.grant_type.as_deref() {
            Some(GRANT_AUTHORIZATION_CODE) => {
                self.authorization_code_grant(client, &params, meta).await
            }
            Some(GRANT_REFRESH_TOKEN) => {
                self.refresh_token_grant(&authenticated, &params, meta)
                    .await
            }
            Some(GRANT_CLIENT_CREDENTIALS) => {
                self.client_credentials_grant(client, &params, meta).await
            }
            Some(crate::exchange::GRANT_TOKEN_EXCHANGE) => {
                self.token_exchange_grant(client, &params, meta).await
            }
            Some(_) => Err(IdentityError::UnsupportedGrantType),
            None => Err(IdentityError::InvalidRequest(
                "grant_type is required".into(),
            )),
        }
    }

    /// The audience asked for (`resource`, RFC 8707, or `audience`), which
    /// must be one the client may have; else its first allowed audience.
    /// With an audience authorized at `/authorize`, the token request may
    /// only repeat it (RFC 8707 §2.2), not swap it for another.
    pub(crate) fn choose_audience(
        &self,
        client: &Client,
        params: &TokenParams,
        asked_at_authorize: Option<&str>,
    ) -> Result<Option<String>> {
        let asked_now = params.resource.as_deref().or(params.audience.as_deref());
        if let (Some(now), Some(authorized)) = (asked_now, asked_at_authorize)
            && now != authorized
        {
            return Err(IdentityError::InvalidTarget(
                "the audience differs from the one authorized".into(),
            ));
        }
        match asked_now.or(asked_at_authorize) {
            Some(aud) if client.audiences.iter().any(|a| a == aud) => Ok(Some(aud.to_owned())),
            Some(_) => Err(IdentityError::InvalidTarget(
                "the requested audience is not allowed for this client".into(),
            )),
            None => Ok(client.audiences.first().cloned()),
        }
    }

    async fn authorization_code_grant(
        &self,
        client: &Client,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if !client
            .grant_types
            .iter()
            .any(|g| g == GRANT_AUTHORIZATION_CODE)
        {
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
        let UserAccess {
            user,
            access,
            audiences,
            signer,
        } = self.user_access_token(
            client,
            params,
            self.granted_user(&code.user_id).await?,
            code.audience.as_deref(),
            &code.scope,
            now,
        )?;
        self.store
            .record_code_access_token(&code.code_hash, &access.jti, access.expires_at)
            .await?;
        let offline = code.scope.split(' ').any(|s| s == OFFLINE_ACCESS)
            && client.grant_types.iter().any(|g| g == GRANT_REFRESH_TOKEN);
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
        let wants_email = code.scope.split(' ').any(|s| s == "email");
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
                email: user.email.as_deref().filter(|_| wants_email),
                roles: &user.roles,
                amr: &code.amr,
            },
        )?;
        self.audit_issued(
            client,
            &user.id,
            &audiences,
            &signer,
            GRANT_AUTHORIZATION_CODE,
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

    /// A user's access token for `client`, by code or refresh: for the
    /// audience authorized at `/authorize` (or asked for now, see
    /// [`Provider::choose_audience`]) and for `/userinfo`.
    pub(crate) fn user_access_token(
        &self,
        client: &Client,
        params: &TokenParams,
        user: User,
        authorized_audience: Option<&str>,
        scope: &str,
        now: i64,
    ) -> Result<UserAccess> {
        // A suspended or deleted user's grants stop working at once.
        if crate::user_state::state_of(&user)? != crate::user_state::UserState::Active {
            return Err(IdentityError::InvalidGrant("user is not active".into()));
        }
        let mut audiences: Vec<String> = self
            .choose_audience(client, params, authorized_audience)?
            .into_iter()
            .collect();
        audiences.push(self.config.userinfo_audience());
        let signer = self.keys.signer(
            self.config.access_token_alg,
            audiences.first().map(String::as_str),
            now,
        )?;
        let access = self.access_token(
            &signer,
            &user.id,
            &audiences,
            &client.id,
            scope,
            &user.roles,
            now,
        )?;
        Ok(UserAccess {
            user,
            access,
            audiences,
            signer,
        })
    }

    async fn client_credentials_grant(
        &self,
        client: &Client,
        params: &TokenParams,
        meta: &Origin,
    ) -> Result<TokenResponse> {
        if client.is_public()
            || !client
                .grant_types
                .iter()
                .any(|g| g == GRANT_CLIENT_CREDENTIALS)
        {
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
            now,
        )?;
        self.audit_issued(
            client,
            &client.id,
            &audiences,
            &signer,
            GRANT_CLIENT_CREDENTIALS,
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

    /// A token identity mints for itself as a service, for its own calls
    /// to other services (its audit writes): `sub` and `client_id` are
    /// [`IDENTITY_SERVICE`], signed like every access token.
    pub fn own_service_token(&self, audience: &str, scope: &str) -> Result<String> {
        let now = self.clock.now();
        let signer = self
            .keys
            .signer(self.config.access_token_alg, Some(audience), now)?;
        let audiences = [audience.to_owned()];
        let minted = self.access_token(
            &signer,
            IDENTITY_SERVICE,
            &audiences,
            IDENTITY_SERVICE,
            scope,
            &[],
            now,
        )?;
        Ok(minted.token)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn access_token(
        &self,
        signer: &SigningKey,
        sub: &str,
        audiences: &[String],
        client_id: &str,
        scope: &str,
        roles: &[String],
        now: i64,
    ) -> Result<Minted> {
        let jti = b64url(&random_bytes::<16>());
        let expires_at = now + self.config.access_token_ttl;
        let token = signer.sign(
            "at+jwt",
            &AccessClaims {
                iss: &self.config.issuer,
                sub,
                aud: Aud::of(audiences),
                exp: expires_at,
                iat: now,
                jti: jti.clone(),
                client_id,
                scope,
                roles,
            },
        )?;
        Ok(Minted {
            token,
            jti,
            expires_at,
        })
    }

    pub(crate) fn audit_issued(
        &self,
        client: &Client,
        actor: &str,
        audiences: &[String],
        signer: &SigningKey,
        grant: &str,
        meta: &Origin,
    ) {
        self.audit(
            AuditEvent::success("token.issued")
                .actor(actor)
                .detail("client_id", client.id.as_str())
                .detail("grant", grant)
                .detail("audience", audiences.to_vec())
                .detail("kid", signer.kid()),
            meta,
        );
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

    #[test]
    fn single_audience_is_a_string() {
        let one = vec!["audit".to_owned()];
        let two = vec!["a".to_owned(), "b".to_owned()];
        assert_eq!(serde_json::to_string(&Aud::of(&one)).unwrap(), r#""audit""#);
        assert_eq!(
            serde_json::to_string(&Aud::of(&two)).unwrap(),
            r#"["a","b"]"#
        );
    }
}
