//! RFC 7591 dynamic client registration: a client registers itself at
//! `POST /oauth2/register` with its metadata as JSON and gets its
//! `client_id` (and secret) back.
//!
//! Off by default; turned on by giving identity an initial access token
//! ([`InitialAccessToken`], RFC 7591 §3): only a request that presents it
//! as a bearer token registers anything. A missing or wrong token is
//! refused by the edge's gate (401, audited as `access.denied`).
//!
//! The metadata is checked as a public provider checks it, and more
//! narrowly than an operator's `echod client add`:
//! - redirect URIs (and post-logout ones) are https, or http on a loopback
//!   host (RFC 8252 §7.3), in normal form, without a fragment, at most
//!   [`MAX_URIS`] of at most [`MAX_URI_LEN`] bytes — else
//!   `invalid_redirect_uri`;
//! - grants are `authorization_code`, `refresh_token` and
//!   `client_credentials` (token exchange stays for operators), response
//!   types `code` only and only with `authorization_code` (§2.1),
//!   authentication `client_secret_basic` (the default),
//!   `client_secret_post`, `private_key_jwt` (with `jwks`; `jwks_uri` is
//!   not fetched) or `none`;
//! - `scope` is at most [`MAX_SCOPES`] scopes, none of them
//!   [`ADMIN_SCOPE`] or a service scope;
//! - everything else is `invalid_client_metadata`, with a description.
//!
//! Metadata identity does not keep (`client_name`, `logo_uri`, …) is
//! ignored, as §2 asks. A registered client gets no audience: it can sign
//! users in (ID tokens, `/userinfo`), and an operator grants it audiences
//! with `echod client update --add-audience` when it is to call services.
//! Registrations are audited as `admin.client.created` with actor
//! [`ACTOR`] and the caller's address.

use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::secret::{b64url, random_bytes};
use echo_edge::{Origin, Reason};
use echo_identity_store::Client;
use serde::{Deserialize, Serialize};
use url::{Host, Url};

use crate::admin::{self, ADMIN_SCOPE, ActingAs, ClientSecret, NewClient, check_redirect_uri};
use crate::grant::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, GRANT_REFRESH_TOKEN};
use crate::{IdentityError, InitialAccessToken, Provider, Result};

pub use crate::config::CLIENT_REGISTRATION_PATH;

/// The actor of the audit events of a registration.
pub const ACTOR: &str = "client_registration";
/// At most this many redirect URIs, and as many post-logout ones.
pub const MAX_URIS: usize = 16;
/// The longest redirect URI accepted, in bytes.
pub const MAX_URI_LEN: usize = 2048;
/// At most this many scopes.
pub const MAX_SCOPES: usize = 32;
/// At most this many grant types (three are known; repeats are dropped).
const MAX_GRANTS: usize = 8;
/// The longest scope name accepted, in bytes.
const MAX_SCOPE_LEN: usize = 128;
/// The largest request body, in bytes.
pub const MAX_BODY: usize = 64 * 1024;

const AUTH_BASIC: &str = "client_secret_basic";
const AUTH_POST: &str = "client_secret_post";
const AUTH_JWT: &str = "private_key_jwt";
const AUTH_NONE: &str = "none";
const RESPONSE_CODE: &str = "code";

/// The client metadata of RFC 7591 §2 that identity keeps; other fields
/// are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct ClientMetadata {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// OpenID Connect RP-Initiated Logout §3.1.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: Option<String>,
    pub grant_types: Option<Vec<String>>,
    pub response_types: Option<Vec<String>>,
    /// Space-separated.
    pub scope: Option<String>,
    pub jwks: Option<serde_json::Value>,
    pub jwks_uri: Option<String>,
}

/// The answer of RFC 7591 §3.2.1: the client as registered.
#[derive(Debug, Serialize)]
pub struct RegisteredClient {
    pub client_id: String,
    /// Shown this once; stored only as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub client_id_issued_at: i64,
    /// 0: the secret does not expire (it is rotated by an operator).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<i64>,
    pub redirect_uris: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub post_logout_redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub token_endpoint_auth_method: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

/// The RFC 7591 error code of a refused registration, for its audit event.
fn refusal_code(refused: &IdentityError) -> &'static str {
    match refused {
        IdentityError::InvalidRedirectUri(_) => "invalid_redirect_uri",
        _ => "invalid_client_metadata",
    }
}

fn metadata_error(why: impl Into<String>) -> IdentityError {
    IdentityError::InvalidClientMetadata(why.into())
}

/// A redirect URI a self-registered client may have: one an operator
/// could register, over https or, for native apps, http on loopback.
fn check_public_redirect_uri(uri: &str) -> Result<()> {
    let refused = |why: &str| IdentityError::InvalidRedirectUri(format!("{uri:.80}: {why}"));
    if uri.len() > MAX_URI_LEN {
        return Err(refused(&format!("longer than {MAX_URI_LEN} bytes")));
    }
    check_redirect_uri(uri).map_err(|e| IdentityError::InvalidRedirectUri(e.to_string()))?;
    let parsed = Url::parse(uri).map_err(|e| refused(&e.to_string()))?;
    let loopback = match parsed.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(name)) => name == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        "http" => Err(refused("http is only for loopback addresses: use https")),
        _ => Err(refused("use https (or http on a loopback address)")),
    }
}

fn check_uris(uris: &[String]) -> Result<()> {
    if uris.len() > MAX_URIS {
        return Err(IdentityError::InvalidRedirectUri(format!(
            "at most {MAX_URIS} redirect URIs"
        )));
    }
    uris.iter()
        .try_for_each(|uri| check_public_redirect_uri(uri))
}

/// The registration `metadata` asks for, checked; `service_scopes` are
/// the scopes only Echo's own services hold.
fn checked(
    metadata: ClientMetadata,
    service_scopes: &[String],
) -> Result<(NewClient, RegisteredClient)> {
    check_uris(&metadata.redirect_uris)?;
    check_uris(&metadata.post_logout_redirect_uris)?;
    if metadata.jwks_uri.is_some() {
        return Err(metadata_error(
            "jwks_uri is not supported: register the keys as jwks",
        ));
    }
    let mut grants = metadata
        .grant_types
        .unwrap_or_else(|| vec![GRANT_AUTHORIZATION_CODE.to_owned()]);
    let known = [
        GRANT_AUTHORIZATION_CODE,
        GRANT_REFRESH_TOKEN,
        GRANT_CLIENT_CREDENTIALS,
    ];
    if grants.is_empty() || grants.len() > MAX_GRANTS {
        return Err(metadata_error(format!(
            "grant_types: name 1 to {MAX_GRANTS} grants"
        )));
    }
    let mut seen = Vec::with_capacity(grants.len());
    grants.retain(|g| {
        let new = !seen.contains(g);
        seen.push(g.clone());
        new
    });
    if let Some(other) = grants.iter().find(|g| !known.contains(&g.as_str())) {
        return Err(metadata_error(format!(
            "grant_types: {other:.80} is not available to registered clients (use {})",
            known.join(", ")
        )));
    }
    let code_flow = grants.iter().any(|g| g == GRANT_AUTHORIZATION_CODE);
    // RFC 7591 §2.1: `code` goes with authorization_code, and only with it.
    let response_types = metadata.response_types.unwrap_or_else(|| {
        code_flow
            .then(|| RESPONSE_CODE.to_owned())
            .into_iter()
            .collect()
    });
    let expected: &[&str] = if code_flow { &[RESPONSE_CODE] } else { &[] };
    if response_types != expected {
        return Err(metadata_error(if code_flow {
            "response_types: authorization_code goes with [\"code\"] only"
        } else {
            "response_types: without authorization_code there are none"
        }));
    }
    if code_flow && metadata.redirect_uris.is_empty() {
        return Err(IdentityError::InvalidRedirectUri(
            "authorization_code needs at least one redirect URI".to_owned(),
        ));
    }
    let scopes: Vec<String> = metadata
        .scope
        .as_deref()
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if scopes.len() > MAX_SCOPES || scopes.iter().any(|s| s.len() > MAX_SCOPE_LEN) {
        return Err(metadata_error(format!(
            "scope: at most {MAX_SCOPES} scopes of at most {MAX_SCOPE_LEN} bytes"
        )));
    }
    if let Some(reserved) = scopes
        .iter()
        .find(|s| *s == ADMIN_SCOPE || service_scopes.contains(s))
    {
        return Err(metadata_error(format!(
            "scope: {reserved} is not available to registered clients"
        )));
    }
    let auth = metadata
        .token_endpoint_auth_method
        .unwrap_or_else(|| AUTH_BASIC.to_owned());
    let secret = match (auth.as_str(), &metadata.jwks) {
        (AUTH_BASIC | AUTH_POST, None) => ClientSecret::Generate,
        (AUTH_NONE, None) => ClientSecret::Public,
        (AUTH_JWT, Some(jwks)) => ClientSecret::PrivateKeyJwt(jwks.to_string()),
        (AUTH_JWT, None) => return Err(metadata_error("private_key_jwt needs jwks")),
        (AUTH_BASIC | AUTH_POST | AUTH_NONE, Some(_)) => {
            return Err(metadata_error("jwks is only for private_key_jwt"));
        }
        (other, _) => {
            return Err(metadata_error(format!(
                "token_endpoint_auth_method: {other:.80} is not supported (use {AUTH_BASIC}, \
                 {AUTH_POST}, {AUTH_JWT} or {AUTH_NONE})"
            )));
        }
    };
    if auth == AUTH_NONE && grants.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
        return Err(metadata_error(
            "a client without credentials (none) cannot use client_credentials",
        ));
    }
    let client_id = format!("dcr-{}", b64url(&random_bytes::<16>()));
    let scope = (!scopes.is_empty()).then(|| scopes.join(" "));
    let new = NewClient {
        id: client_id.clone(),
        secret,
        redirect_uris: metadata.redirect_uris.clone(),
        grants: grants.clone(),
        audiences: Vec::new(),
        scopes,
        post_logout_redirect_uris: metadata.post_logout_redirect_uris.clone(),
        allow_no_pkce: false,
    };
    let answer = RegisteredClient {
        client_id,
        client_secret: None,
        client_id_issued_at: 0,
        client_secret_expires_at: None,
        redirect_uris: metadata.redirect_uris,
        post_logout_redirect_uris: metadata.post_logout_redirect_uris,
        grant_types: grants,
        response_types,
        token_endpoint_auth_method: auth,
        scope,
        jwks: metadata.jwks,
    };
    Ok((new, answer))
}

impl Provider {
    /// Whether dynamic registration is on.
    pub fn client_registration_enabled(&self) -> bool {
        self.config.client_registration.is_some()
    }

    /// RFC 7591 §3.1: registers the client `metadata` describes, for the
    /// holder of the initial access token (`bearer`). The token is checked
    /// before anything else is looked at.
    pub async fn register_client(
        &self,
        bearer: Option<&str>,
        metadata: Result<ClientMetadata>,
        origin: &Origin,
    ) -> Result<RegisteredClient> {
        let expected = self.initial_access_token()?;
        match bearer {
            None => return Err(self.gate.refuse(Reason::Missing, None, origin).into()),
            Some(token) if !expected.matches(token) => {
                return Err(self.gate.refuse(Reason::WrongKind, None, origin).into());
            }
            Some(_) => {}
        }
        let audit = ActingAs {
            sink: self.audit.clone(),
            actor: ACTOR.to_owned(),
            origin: origin.clone(),
        };
        let registered = async {
            let (new, answer) = checked(metadata?, &self.config.service_scopes)?;
            let secret = admin::add_client(&*self.store, &audit, &*self.clock, new)
                .await
                .map_err(|e| match e {
                    // What add_client refuses beyond the checks above (the
                    // keys of a private_key_jwt client) is metadata too.
                    IdentityError::BadInput(why) => IdentityError::InvalidClientMetadata(why),
                    other => other,
                })?;
            Ok((answer, secret))
        };
        let (mut answer, secret) = match registered.await {
            Ok(registered) => registered,
            Err(
                refused @ (IdentityError::InvalidClientMetadata(_)
                | IdentityError::InvalidRedirectUri(_)),
            ) => {
                audit.record(
                    AuditEvent::failure("admin.client.created")
                        .detail("reason", refusal_code(&refused)),
                );
                return Err(refused);
            }
            Err(other) => return Err(other),
        };
        let client: Client = admin::find_client(&*self.store, &answer.client_id).await?;
        answer.client_id_issued_at = client.created_at;
        answer.client_secret_expires_at = secret.is_some().then_some(0);
        answer.client_secret = secret;
        Ok(answer)
    }

    fn initial_access_token(&self) -> Result<&InitialAccessToken> {
        self.config
            .client_registration
            .as_ref()
            .ok_or_else(|| IdentityError::NotFound("dynamic client registration".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(json: serde_json::Value) -> ClientMetadata {
        serde_json::from_value(json).expect("metadata")
    }

    fn refusal(json: serde_json::Value) -> IdentityError {
        checked(metadata(json), &["audit.write".to_owned()])
            .map(drop)
            .expect_err("refused")
    }

    #[test]
    fn redirect_uris_are_https_or_loopback_http() {
        for ok in [
            "https://rp.example/cb",
            "http://127.0.0.1:8080/cb",
            "http://[::1]/cb",
            "http://localhost:3000/cb",
        ] {
            assert!(check_public_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://rp.example/cb",
            "com.example.app:/cb",
            "https://rp.example/cb#frag",
            "javascript:alert(1)",
            "https://rp.example/cb?x=1 ",
        ] {
            assert!(
                matches!(
                    check_public_redirect_uri(bad),
                    Err(IdentityError::InvalidRedirectUri(_))
                ),
                "{bad}"
            );
        }
        let long = format!("https://rp.example/{}", "a".repeat(MAX_URI_LEN));
        assert!(check_public_redirect_uri(&long).is_err());
    }

    #[test]
    fn defaults_are_a_confidential_code_flow_client() {
        let (new, answer) = checked(
            metadata(serde_json::json!({"redirect_uris": ["https://rp.example/cb"]})),
            &[],
        )
        .unwrap();
        assert_eq!(answer.grant_types, [GRANT_AUTHORIZATION_CODE]);
        assert_eq!(answer.response_types, [RESPONSE_CODE]);
        assert_eq!(answer.token_endpoint_auth_method, AUTH_BASIC);
        assert!(matches!(new.secret, ClientSecret::Generate));
        assert!(new.audiences.is_empty(), "no audience without an operator");
        assert!(new.id.starts_with("dcr-"));
    }

    #[test]
    fn metadata_outside_what_identity_offers_is_refused() {
        use serde_json::json;
        let cb = ["https://rp.example/cb"];
        for (json, expect) in [
            (
                json!({"redirect_uris": cb, "grant_types": ["implicit"]}),
                "implicit",
            ),
            (
                json!({"redirect_uris": cb, "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"]}),
                "not available",
            ),
            (
                json!({"redirect_uris": cb, "response_types": ["token"]}),
                "response_types",
            ),
            (
                json!({"grant_types": ["client_credentials"], "response_types": ["code"]}),
                "response_types",
            ),
            (
                json!({"redirect_uris": cb, "token_endpoint_auth_method": "tls_client_auth"}),
                "not supported",
            ),
            (
                json!({"redirect_uris": cb, "token_endpoint_auth_method": "private_key_jwt"}),
                "needs jwks",
            ),
            (
                json!({"redirect_uris": cb, "jwks_uri": "https://rp.example/jwks"}),
                "jwks_uri",
            ),
            (
                json!({"redirect_uris": cb, "scope": "openid echo.admin"}),
                "echo.admin",
            ),
            (
                json!({"redirect_uris": cb, "scope": "audit.write"}),
                "audit.write",
            ),
            (
                json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "none"}),
                "cannot use client_credentials",
            ),
        ] {
            match refusal(json.clone()) {
                IdentityError::InvalidClientMetadata(why) => {
                    assert!(why.contains(expect), "{json}: {why}")
                }
                other => panic!("{json}: {other:?}"),
            }
        }
        assert!(matches!(
            refusal(json!({"grant_types": ["authorization_code"]})),
            IdentityError::InvalidRedirectUri(_)
        ));
        let many: Vec<String> = (0..=MAX_URIS)
            .map(|i| format!("https://rp.example/{i}"))
            .collect();
        assert!(matches!(
            refusal(json!({ "redirect_uris": many })),
            IdentityError::InvalidRedirectUri(_)
        ));
        let scopes = vec!["s"; MAX_SCOPES + 1].join(" ");
        assert!(matches!(
            refusal(json!({"redirect_uris": cb, "scope": scopes})),
            IdentityError::InvalidClientMetadata(_)
        ));
    }
}
