//! The authorization endpoint's decisions (RFC 6749 §4.1, OIDC Core §3.1.2,
//! RFC 7636 PKCE, RFC 9207 `iss`).
//!
//! Validation happens in two stages, in this order, because of where an
//! error may be sent: until the client and its exact redirect URI are known,
//! an error is shown as a page and never redirected (an open redirector
//! otherwise); after that, errors go back to the client's redirect URI with
//! `error`, `state` and `iss`.

use echo_core::audit::AuditEvent;
use echo_crypto::secret::{random_token, token_hash};
use echo_identity_store::{AuthCode, Client, User};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::grant::{ClientGrants, Grant, OFFLINE_ACCESS};
use crate::{IdentityError, Provider};
use echo_edge::Origin;

/// Scopes a client may ask for when it was registered without `--scope`.
pub const DEFAULT_SCOPES: [&str; 3] = ["openid", "profile", "email"];

/// The query of an authorization request, as received.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct AuthorizeParams {
    pub response_type: Option<String>,
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub prompt: Option<String>,
    pub resource: Option<String>,
    pub audience: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// Reuse the SSO session if there is one.
    Default,
    /// Ask for the password even with a session.
    Login,
    /// Never show a page: fail with `login_required` instead.
    None,
}

/// What `/authorize` answers a validated request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeAnswer {
    /// Back to the client at this URL: with a code, or with an error.
    Redirect(String),
    /// The login form.
    Login,
}

/// A validated authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    pub client: Client,
    pub redirect_uri: String,
    pub scope: String,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub audience: Option<String>,
    /// The original parameters, carried through the login form.
    pub params: AuthorizeParams,
}

/// Why an authorization request was refused, and where to say so.
#[derive(Debug)]
pub enum AuthorizeError {
    /// Unknown client or redirect URI: an error page, never a redirect.
    Untrusted(String),
    /// RFC 6749 §4.1.2.1: back to the client with `error` and `state`.
    Redirect(String),
    Internal(IdentityError),
}

impl From<IdentityError> for AuthorizeError {
    fn from(e: IdentityError) -> Self {
        AuthorizeError::Internal(e)
    }
}

/// Appends `pairs` to `uri`'s query, keeping the query it already has.
pub fn redirect_with(uri: &str, pairs: &[(&str, &str)]) -> String {
    match Url::parse(uri) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.to_string()
        }
        Err(_) => uri.to_owned(),
    }
}

/// RFC 7636 §4.1: 43 to 128 characters of `[A-Z a-z 0-9 - . _ ~]`.
pub(crate) fn is_pkce_string(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

impl Provider {
    /// Validates an authorization request.
    pub async fn validate_authorize(
        &self,
        params: AuthorizeParams,
    ) -> Result<AuthorizeRequest, AuthorizeError> {
        let client_id = params.client_id.as_deref().ok_or_else(|| {
            AuthorizeError::Untrusted("The request names no client (client_id is missing).".into())
        })?;
        let client = self
            .store
            .client(client_id)
            .await
            .map_err(IdentityError::from)?
            .ok_or_else(|| {
                AuthorizeError::Untrusted(
                    "The application that sent you here is not registered.".into(),
                )
            })?;
        let redirect_uri = params
            .redirect_uri
            .clone()
            .filter(|uri| {
                client
                    .redirect_uris
                    .iter()
                    .any(|registered| registered == uri)
            })
            .ok_or_else(|| {
                AuthorizeError::Untrusted(
                    "The application asked to return to an address it did not register.".into(),
                )
            })?;

        let refuse = |error: &str, description: &str| {
            AuthorizeError::Redirect(self.back_to_client(
                &redirect_uri,
                &[("error", error), ("error_description", description)],
                params.state.as_deref(),
            ))
        };

        if params.response_type.as_deref() != Some("code") {
            return Err(refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
        if !client.allows(Grant::AuthorizationCode) {
            return Err(refuse(
                "unauthorized_client",
                "client may not use the authorization code grant",
            ));
        }
        let scopes: Vec<&str> = params
            .scope
            .as_deref()
            .unwrap_or("")
            .split(' ')
            .filter(|s| !s.is_empty())
            .collect();
        if !scopes.contains(&"openid") {
            return Err(refuse("invalid_scope", "scope must include openid"));
        }
        let allowed = |scope: &&str| {
            if *scope == OFFLINE_ACCESS {
                // OIDC Core §11: only for clients that may refresh.
                client.allows(Grant::RefreshToken)
            } else if client.scopes.is_empty() {
                DEFAULT_SCOPES.contains(scope)
            } else {
                client.scopes.iter().any(|s| s == scope)
            }
        };
        if let Some(bad) = scopes.iter().find(|s| !allowed(s)) {
            return Err(refuse(
                "invalid_scope",
                &format!("scope {bad} is not allowed for this client"),
            ));
        }
        if let Some(bad) = scopes
            .iter()
            .find(|s| self.config.service_scopes.iter().any(|only| only == *s))
        {
            return Err(refuse(
                "invalid_scope",
                &format!("scope {bad} is for services only"),
            ));
        }
        let code_challenge = match (
            params.code_challenge.as_deref(),
            params.code_challenge_method.as_deref(),
        ) {
            (None, _) if client.allow_no_pkce && !client.is_public() => None,
            (None, _) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge is required (PKCE with S256)",
                ));
            }
            (Some(_), method) if method != Some("S256") => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge_method must be S256",
                ));
            }
            (Some(challenge), _) if challenge.len() != 43 || !is_pkce_string(challenge) => {
                return Err(refuse(
                    "invalid_request",
                    "code_challenge is not a S256 challenge",
                ));
            }
            (Some(challenge), _) => Some(challenge.to_owned()),
        };
        let prompt = match params.prompt.as_deref() {
            None | Some("") => Prompt::Default,
            Some("login") => Prompt::Login,
            Some("none") => Prompt::None,
            Some(other) => {
                return Err(refuse(
                    "invalid_request",
                    &format!("unsupported prompt {other}"),
                ));
            }
        };
        let audience = match params.resource.as_deref().or(params.audience.as_deref()) {
            Some(aud) if !client.audiences.iter().any(|a| a == aud) => {
                return Err(refuse(
                    "invalid_target",
                    "the requested audience is not allowed for this client",
                ));
            }
            other => other.map(str::to_owned),
        };
        Ok(AuthorizeRequest {
            scope: scopes.join(" "),
            state: params.state.clone(),
            nonce: params.nonce.clone(),
            client,
            redirect_uri,
            code_challenge,
            prompt,
            audience,
            params,
        })
    }

    /// OIDC Core §3.1.2.1, `prompt`: with a live SSO session (the cookie
    /// value `sso`) a code at once, unless `prompt=login` asks for the
    /// password again; without one the login form, unless `prompt=none`
    /// forbids pages (`login_required`).
    pub async fn answer_authorize(
        &self,
        request: &AuthorizeRequest,
        sso: Option<&str>,
        meta: &Origin,
    ) -> Result<AuthorizeAnswer, IdentityError> {
        Ok(match (self.session_user(sso).await?, request.prompt) {
            (Some((user, session)), Prompt::Default | Prompt::None) => AuthorizeAnswer::Redirect(
                self.issue_code(request, &user, session.auth_time, &session.amr, meta)
                    .await?,
            ),
            (None, Prompt::None) => AuthorizeAnswer::Redirect(self.login_required(request)),
            _ => AuthorizeAnswer::Login,
        })
    }

    /// The redirect that answers `prompt=none` when nobody is logged in.
    fn login_required(&self, request: &AuthorizeRequest) -> String {
        self.back_to_client(
            &request.redirect_uri,
            &[("error", "login_required")],
            request.state.as_deref(),
        )
    }

    /// A redirect to the client with `pairs`, then `state` (if any) and our
    /// `iss` (RFC 9207), so the client can tell which provider answered.
    fn back_to_client(
        &self,
        redirect_uri: &str,
        pairs: &[(&str, &str)],
        state: Option<&str>,
    ) -> String {
        let mut pairs = pairs.to_vec();
        if let Some(state) = state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.config.issuer));
        redirect_with(redirect_uri, &pairs)
    }

    /// Issues a one-time code for `user` and returns the redirect back to
    /// the client, carrying `code`, `state` and `iss`.
    pub async fn issue_code(
        &self,
        request: &AuthorizeRequest,
        user: &User,
        auth_time: i64,
        amr: &[String],
        meta: &Origin,
    ) -> Result<String, IdentityError> {
        let code = random_token();
        let now = self.clock.now();
        self.store
            .insert_code(&AuthCode {
                code_hash: token_hash(&code),
                client_id: request.client.id.clone(),
                user_id: user.id.clone(),
                redirect_uri: request.redirect_uri.clone(),
                scope: request.scope.clone(),
                nonce: request.nonce.clone(),
                code_challenge: request.code_challenge.clone(),
                audience: request.audience.clone(),
                auth_time,
                expires_at: now + self.config.code_ttl,
                amr: amr.to_vec(),
            })
            .await?;
        self.audit(
            AuditEvent::success("oauth.code.issued")
                .actor(user.id.as_str())
                .detail("client_id", request.client.id.as_str())
                .detail("scope", request.scope.as_str()),
            meta,
        );
        Ok(self.back_to_client(
            &request.redirect_uri,
            &[("code", &code)],
            request.state.as_deref(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_keeps_existing_query_and_encodes() {
        let url = redirect_with(
            "https://app.test/cb?x=1",
            &[("code", "a b"), ("state", "s&t")],
        );
        assert_eq!(url, "https://app.test/cb?x=1&code=a+b&state=s%26t");
    }

    #[test]
    fn pkce_strings() {
        assert!(is_pkce_string(&"a".repeat(43)));
        assert!(!is_pkce_string(&"a".repeat(42)));
        assert!(!is_pkce_string(&"a".repeat(129)));
        assert!(!is_pkce_string(&format!("{}+", "a".repeat(43))));
    }
}
