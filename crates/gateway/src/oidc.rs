//! The gateway as an OpenID Connect relying party: the URLs it sends
//! browsers to and its calls to identity's token, introspection (RFC 7662)
//! and revocation (RFC 7009) endpoints.

use std::time::Duration;

use echo_crypto::secret::{b64url, sha256};
use serde::Deserialize;
use url::Url;

use crate::{GatewayConfig, GatewayError, Result};

const TOKEN_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// RFC 8693 §2.1 and §3.
const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// RFC 6749 §5.1 (and §5.2 on failure), the fields the gateway reads.
#[derive(Deserialize)]
pub(crate) struct TokenAnswer {
    pub access_token: String,
    pub refresh_token: Option<String>,
    pub id_token: Option<String>,
    /// Seconds the access token lives.
    pub expires_in: Option<i64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
}

/// RFC 7662 §2.2, the one field the gateway reads.
#[derive(Deserialize)]
struct IntrospectionAnswer {
    active: bool,
}

/// Talks to identity's token endpoint as a confidential client.
pub(crate) struct IdentityClient {
    http: reqwest::Client,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    /// RFC 6749 §2.3.1: id and secret are form-urlencoded before base64.
    basic_user: String,
    basic_password: String,
}

impl IdentityClient {
    pub fn new(config: &GatewayConfig) -> Self {
        let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
        Self {
            http: config.tls.http_client(TOKEN_REQUEST_TIMEOUT),
            token_endpoint: config.identity_endpoint("/token"),
            introspection_endpoint: config.identity_endpoint("/introspect"),
            revocation_endpoint: config.identity_endpoint("/revoke"),
            basic_user: encode(&config.client_id),
            basic_password: encode(config.client_secret.expose()),
        }
    }

    /// RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5).
    pub async fn exchange_code(
        &self,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<TokenAnswer> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// RFC 6749 §6.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenAnswer> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// RFC 8693 §2.1: the user's access token (issued to the gateway)
    /// traded for one for `audience` (with `scope` when given), with the
    /// gateway as actor.
    pub async fn exchange(
        &self,
        subject_token: &str,
        audience: &str,
        scope: Option<&str>,
    ) -> Result<TokenAnswer> {
        let mut form = vec![
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", subject_token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("requested_token_type", ACCESS_TOKEN_TYPE),
            ("audience", audience),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.token(&form).await
    }

    /// RFC 7662: whether identity still honours `token` (one the gateway
    /// was issued, or one for its audience): not revoked, not expired, its
    /// user neither suspended nor deleted.
    pub async fn is_active(&self, token: &str) -> Result<bool> {
        let response = self
            .post(&self.introspection_endpoint, &[("token", token)])
            .await?;
        if !response.status().is_success() {
            return Err(failed(response.status(), "introspection"));
        }
        let answer: IntrospectionAnswer = response
            .json()
            .await
            .map_err(|e| GatewayError::Identity(format!("introspection: {e}")))?;
        Ok(answer.active)
    }

    /// RFC 7009: `token` (and, for a refresh token, its whole family) is
    /// no longer honoured.
    pub async fn revoke(&self, token: &str) -> Result<()> {
        let response = self
            .post(&self.revocation_endpoint, &[("token", token)])
            .await?;
        if !response.status().is_success() {
            return Err(failed(response.status(), "revocation"));
        }
        Ok(())
    }

    async fn post(&self, endpoint: &str, form: &[(&str, &str)]) -> Result<reqwest::Response> {
        self.http
            .post(endpoint)
            .headers(echo_edge::trace::headers())
            .basic_auth(&self.basic_user, Some(&self.basic_password))
            .form(form)
            .send()
            .await
            .map_err(|e| GatewayError::Identity(format!("{endpoint} unreachable: {e}")))
    }

    /// A refusal (4xx with an OAuth error) is [`GatewayError::IdentityRefused`];
    /// anything else that is not a token is [`GatewayError::Identity`].
    async fn token(&self, form: &[(&str, &str)]) -> Result<TokenAnswer> {
        let response = self.post(&self.token_endpoint, form).await?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| GatewayError::Identity(format!("token endpoint: {e}")))?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|e| {
                GatewayError::Identity(format!("token endpoint answered no token: {e}"))
            });
        }
        match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(answer) if status.is_client_error() => {
                Err(GatewayError::IdentityRefused(answer.error))
            }
            _ => Err(failed(status, "token endpoint")),
        }
    }
}

/// Identity's `endpoint` answered `status`, neither a success nor a
/// refusal: a `503` says to come back soon, anything else is broken.
fn failed(status: reqwest::StatusCode, endpoint: &str) -> GatewayError {
    let what = format!("{endpoint} answered {status}");
    if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
        GatewayError::IdentityUnavailable(what)
    } else {
        GatewayError::Identity(what)
    }
}

/// What `/login` remembers to finish the login.
pub(crate) struct LoginSecrets {
    pub state: String,
    pub nonce: String,
    pub pkce_verifier: String,
}

impl LoginSecrets {
    pub fn generate() -> Self {
        use echo_crypto::secret::random_token;
        Self {
            state: random_token(),
            nonce: random_token(),
            // RFC 7636 §4.1: 43 characters of the unreserved set.
            pkce_verifier: random_token(),
        }
    }
}

/// RFC 7636 §4.2: `S256` challenge of `verifier`.
pub(crate) fn pkce_challenge(verifier: &str) -> String {
    b64url(&sha256(verifier.as_bytes()))
}

/// `url` with `pairs` appended to its query.
fn with_query(url: &str, pairs: &[(&str, &str)]) -> Result<String> {
    let mut url =
        Url::parse(url).map_err(|e| GatewayError::Config(format!("identity URL {url:?}: {e}")))?;
    url.query_pairs_mut().extend_pairs(pairs);
    Ok(url.into())
}

/// The authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2.1).
pub(crate) fn authorize_url(config: &GatewayConfig, secrets: &LoginSecrets) -> Result<String> {
    with_query(
        &config.identity_endpoint("/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &config.client_id),
            ("redirect_uri", &config.redirect_uri()),
            ("scope", &config.scopes),
            ("state", &secrets.state),
            ("nonce", &secrets.nonce),
            ("code_challenge", &pkce_challenge(&secrets.pkce_verifier)),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// OpenID Connect RP-Initiated Logout 1.0 §2.
pub(crate) fn logout_url(config: &GatewayConfig, id_token: &str) -> Result<String> {
    with_query(
        &config.identity_endpoint("/logout"),
        &[
            ("id_token_hint", id_token),
            (
                "post_logout_redirect_uri",
                &config.post_logout_redirect_uri(),
            ),
            ("client_id", &config.client_id),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientSecret;

    #[test]
    fn identity_answering_503_is_unavailable_for_now_anything_else_broken() {
        let busy = failed(reqwest::StatusCode::SERVICE_UNAVAILABLE, "token endpoint");
        assert!(
            matches!(busy, GatewayError::IdentityUnavailable(_)),
            "{busy:?}"
        );
        for status in [
            reqwest::StatusCode::INTERNAL_SERVER_ERROR,
            reqwest::StatusCode::BAD_GATEWAY,
        ] {
            let broken = failed(status, "token endpoint");
            assert!(matches!(broken, GatewayError::Identity(_)), "{broken:?}");
        }
    }

    #[test]
    fn authorize_url_carries_state_nonce_and_s256_challenge() {
        let config =
            GatewayConfig::new("http://gw.test", "http://id.test", ClientSecret::new("s")).unwrap();
        let secrets = LoginSecrets::generate();
        let url = Url::parse(&authorize_url(&config, &secrets).unwrap()).unwrap();
        assert_eq!(url.path(), "/authorize");
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(query["state"], secrets.state);
        assert_eq!(query["nonce"], secrets.nonce);
        assert_eq!(query["redirect_uri"], "http://gw.test/callback");
        assert_eq!(query["code_challenge_method"], "S256");
        assert_eq!(
            query["code_challenge"],
            pkce_challenge(&secrets.pkce_verifier)
        );
        assert!(
            !url.as_str().contains(&secrets.pkce_verifier),
            "the verifier stays here"
        );
        // RFC 7636 appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
