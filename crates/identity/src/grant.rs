//! The token endpoint's vocabulary, which every grant and the admin
//! commands share: the grant types, the scopes with a meaning of their
//! own, identity's own client id, and the request and answer of `/token`.
//! It depends on no other grant module, so none of them depend on each
//! other through it.

use echo_identity_store::Client;
use serde::{Deserialize, Serialize};

pub const GRANT_AUTHORIZATION_CODE: &str = "authorization_code";
pub const GRANT_REFRESH_TOKEN: &str = "refresh_token";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
/// RFC 8693 §2.1: the grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// A grant type identity knows, parsed once from a request's `grant_type`
/// or a client's registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
    TokenExchange,
}

impl Grant {
    pub const ALL: [Grant; 4] = [
        Grant::AuthorizationCode,
        Grant::RefreshToken,
        Grant::ClientCredentials,
        Grant::TokenExchange,
    ];

    /// Its name on the wire and in a client's registration.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::AuthorizationCode => GRANT_AUTHORIZATION_CODE,
            Grant::RefreshToken => GRANT_REFRESH_TOKEN,
            Grant::ClientCredentials => GRANT_CLIENT_CREDENTIALS,
            Grant::TokenExchange => GRANT_TOKEN_EXCHANGE,
        }
    }

    /// The grant named `name`, if identity knows it.
    pub fn parse(name: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|g| g.as_str() == name)
    }
}

/// What a client's registration allows.
pub trait ClientGrants {
    /// Whether the client was registered for `grant`.
    fn allows(&self, grant: Grant) -> bool;
}

impl ClientGrants for Client {
    fn allows(&self, grant: Grant) -> bool {
        self.grant_types.iter().any(|g| g == grant.as_str())
    }
}

/// OIDC Core §11: the scope that asks for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// The name identity's own service tokens carry as `sub` (and a client id
/// nobody may register).
pub const IDENTITY_SERVICE: &str = "identity";

/// The client-authentication members of a form (RFC 6749 §2.3.1,
/// RFC 7521 §4.2).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ClientAuthParams {
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_assertion_type: Option<String>,
    pub client_assertion: Option<String>,
}

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
    pub exchange: ExchangeParams,
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

/// RFC 8693 §2.1's parameters beyond the ones every grant has.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExchangeParams {
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
}
