//! Client authentication at the token, revocation and introspection
//! endpoints (RFC 6749 §2.3): `client_secret_basic`, `client_secret_post`,
//! `private_key_jwt` (RFC 7523 §2.2, OIDC Core §9), and `none` for public
//! clients, which only name themselves.
//!
//! Secrets are compared in constant time against their stored hash, and
//! during a rotation's overlap against the previous hash too. A client
//! assertion is verified with the client's registered public keys (the
//! algorithm comes from the key, never from the header), must name the
//! client as `iss` and `sub` and this provider as `aud`, must expire soon,
//! and its `jti` is recorded until it expires so it cannot be replayed.
//!
//! Every failure is the same `invalid_client`, audited with the reason and
//! counted against the caller's address (the client behind trusted
//! proxies) *and* the registered client it claimed (past the limit: 429),
//! so one client's failures never lock another out of a shared address.

use std::sync::Arc;

use echo_core::audit::{AuditEvent, bounded};
use echo_crypto::jws::CompactJws;
use echo_crypto::secret::verify_client_secret;
use echo_crypto::{JwkSet, VerifyingKey};
use echo_identity_store::Client;
use echo_verify::Audience;
use serde::Deserialize;
use serde_json::Value;

use crate::grant::ClientAuthParams;
use crate::{IdentityError, Provider, Result};
use echo_edge::Origin;

/// RFC 7523 §2.2: the `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Longest remaining life of a client assertion we accept. Its `jti` is
/// kept until it expires, so a long-lived assertion would be a long-lived
/// row; clients mint a fresh one per request anyway.
pub const MAX_ASSERTION_TTL: i64 = 5 * 60;

/// Clock skew tolerated on an assertion's `iat` and `nbf`.
const ASSERTION_LEEWAY: i64 = 10;

/// Credentials from an `Authorization: Basic` header, already decoded.
#[derive(Debug, Clone)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: String,
}

/// How a client authenticated (RFC 8414 §2 names). A spent refresh
/// token's grace answer is given only to the client that rotated it
/// authenticating the same way (`refresh.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    None,
}

/// A client that proved who it is, and how.
#[derive(Debug, Clone)]
pub(crate) struct Authenticated {
    pub client: Arc<Client>,
    pub method: AuthMethod,
}

/// What the client offered as proof.
enum Proof {
    Secret(String),
    Assertion(String),
    /// Nothing: acceptable only from a public client.
    None,
}

/// The claims of a client assertion (RFC 7523 §3).
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    #[serde(default)]
    nbf: Option<i64>,
    #[serde(default)]
    iat: Option<i64>,
    #[serde(default)]
    jti: Option<String>,
}

/// A verified assertion's replay key.
struct AssertionId {
    jti: String,
    exp: i64,
}

/// Reads a client's public keys as registered by an operator: a JWK Set
/// (`{"keys": […]}`) or a single JWK. Every key must be a public key we can
/// verify with; a private member (`d`, `p`, `q`, …, or a symmetric `k`) is
/// refused, since the provider must never hold the client's private key.
pub fn parse_client_jwks(text: &str) -> Result<JwkSet> {
    let bad = |why: String| IdentityError::BadInput(format!("client keys: {why}"));
    let value: Value = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
    let keys = match value.get("keys") {
        Some(Value::Array(keys)) => keys.clone(),
        Some(_) => return Err(bad("\"keys\" must be an array".into())),
        None => vec![value],
    };
    if keys.is_empty() {
        return Err(bad("no key".into()));
    }
    const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];
    let mut set = JwkSet::default();
    for key in keys {
        if PRIVATE_MEMBERS.iter().any(|m| key.get(m).is_some()) {
            return Err(bad(
                "a key has private members: register the public key only".into(),
            ));
        }
        let jwk = serde_json::from_value(key).map_err(|e| bad(e.to_string()))?;
        VerifyingKey::from_jwk(&jwk).map_err(|e| bad(e.to_string()))?;
        set.keys.push(jwk);
    }
    Ok(set)
}

impl Provider {
    /// Authenticates the client of a request to `endpoint` (a path such as
    /// `/token`). One method per request (RFC 6749 §2.3: "MUST NOT use more
    /// than one authentication method in each request").
    pub(crate) async fn authenticate_client(
        &self,
        params: &ClientAuthParams,
        basic: Option<BasicCredentials>,
        endpoint: &str,
        meta: &Origin,
    ) -> Result<Authenticated> {
        let now = self.clock.now();
        let used_basic = basic.is_some();
        let (client_id, proof) = claimed_identity(params, basic)?;
        let method = match &proof {
            Proof::Secret(_) if used_basic => AuthMethod::ClientSecretBasic,
            Proof::Secret(_) => AuthMethod::ClientSecretPost,
            Proof::Assertion(_) => AuthMethod::PrivateKeyJwt,
            Proof::None => AuthMethod::None,
        };
        let authenticated = |client| Authenticated { client, method };
        let cached = match &client_id {
            Some(id) => self.clients.get(&*self.store, id, now).await?,
            None => None,
        };
        let key = failure_key(meta, cached.as_deref());
        if let Some(retry_after) = self.client_auth_failures.blocked(&key, now).await {
            return Err(IdentityError::RateLimited { retry_after });
        }
        let Some(client_id) = client_id else {
            return Err(self
                .client_auth_failed(&key, "unknown", "no client_id", used_basic, meta)
                .await);
        };
        // A registration read from the cache may predate a secret rotation or
        // a key change: on failure, read it again before refusing.
        let mut outcome = None;
        for reload in [false, true] {
            let client = if reload {
                self.clients.reload(&*self.store, &client_id, now).await?
            } else {
                cached.clone()
            };
            let checked = match &client {
                Some(c) => self.check_proof(c, &proof, endpoint, now),
                None => Err("unknown client"),
            };
            let done = checked.is_ok();
            outcome = Some((client, checked));
            if done {
                break;
            }
        }
        let failure = match outcome {
            Some((Some(client), Ok(None))) => return Ok(authenticated(client)),
            Some((Some(client), Ok(Some(assertion)))) => {
                if self
                    .store
                    .record_client_assertion(&client.id, &assertion.jti, assertion.exp)
                    .await?
                {
                    return Ok(authenticated(client));
                }
                "client assertion replayed"
            }
            Some((_, Err(why))) => why,
            _ => "unknown client",
        };
        Err(self
            .client_auth_failed(&key, &client_id, failure, used_basic, meta)
            .await)
    }

    /// Counts (under `key`, see [`failure_key`]), audits and answers one
    /// failed client authentication.
    async fn client_auth_failed(
        &self,
        key: &str,
        client_id: &str,
        reason: &str,
        basic: bool,
        meta: &Origin,
    ) -> IdentityError {
        // Counted only to refuse further guesses; the answer is the same.
        let _ = self.client_auth_failures.check(key, self.clock.now()).await;
        self.audit(
            AuditEvent::failure("oauth.client.auth_failure")
                .detail("client_id", bounded(client_id))
                .detail("reason", reason),
            meta,
        );
        IdentityError::InvalidClient { basic }
    }

    /// Whether `proof` authenticates `client`; for an assertion, the id to
    /// record against replay.
    fn check_proof(
        &self,
        client: &Client,
        proof: &Proof,
        endpoint: &str,
        now: i64,
    ) -> Result<Option<AssertionId>, &'static str> {
        match proof {
            Proof::Secret(secret) => {
                let current = client
                    .secret_hash
                    .as_deref()
                    .is_some_and(|h| verify_client_secret(secret, h));
                let previous = client.previous_secret_expires_at.is_some_and(|t| t > now)
                    && client
                        .previous_secret_hash
                        .as_deref()
                        .is_some_and(|h| verify_client_secret(secret, h));
                if current || previous {
                    Ok(None)
                } else {
                    Err("wrong client secret")
                }
            }
            Proof::Assertion(assertion) => self
                .verify_assertion(client, assertion, endpoint, now)
                .map(Some),
            Proof::None if client.is_public() => Ok(None),
            Proof::None => Err("a confidential client sent no credentials"),
        }
    }

    /// RFC 7523 §3 and OIDC Core §9: signature by one of the client's keys,
    /// `iss` = `sub` = client id, `aud` naming this provider, a short `exp`,
    /// and a `jti`.
    fn verify_assertion(
        &self,
        client: &Client,
        assertion: &str,
        endpoint: &str,
        now: i64,
    ) -> Result<AssertionId, &'static str> {
        let keys: JwkSet = client
            .jwks
            .as_deref()
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or("client has no registered keys")?;
        let jws = CompactJws::parse(assertion).map_err(|_| "malformed client assertion")?;
        let kid = jws.header.kid.as_deref();
        let signed = keys
            .keys
            .iter()
            .filter(|k| kid.is_none() || k.kid.as_deref() == kid)
            .filter_map(|k| VerifyingKey::from_jwk(k).ok())
            .any(|key| key.verify(&jws).is_ok());
        if !signed {
            return Err("client assertion not signed by a registered key");
        }
        let claims: AssertionClaims = jws
            .payload()
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("malformed client assertion claims")?;
        if claims.iss != client.id || claims.sub != client.id {
            return Err("client assertion iss and sub must be the client id");
        }
        let ours = [
            self.config.issuer.clone(),
            self.config.endpoint("/token"),
            self.config.endpoint(endpoint),
        ];
        if !ours.iter().any(|aud| claims.aud.contains(aud)) {
            return Err("client assertion is for another audience");
        }
        if claims.exp <= now {
            return Err("client assertion expired");
        }
        if claims.exp > now + MAX_ASSERTION_TTL {
            return Err("client assertion lives too long");
        }
        if claims
            .nbf
            .into_iter()
            .chain(claims.iat)
            .any(|t| t > now + ASSERTION_LEEWAY)
        {
            return Err("client assertion is not valid yet");
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.len() <= 256)
            .ok_or("client assertion has no jti")?;
        Ok(AssertionId {
            jti,
            exp: claims.exp,
        })
    }
}

/// What failed client authentications are counted under: the client
/// address (behind trusted proxies) and the registered client claimed, so
/// guesses at one client's secret never lock another client out of the
/// same address. Claims of unregistered ids share one count per address,
/// so inventing ids does not escape the limit.
fn failure_key(meta: &Origin, registered: Option<&Client>) -> String {
    let ip = meta.ip();
    let ip = ip.as_deref().unwrap_or("unknown");
    match registered {
        Some(client) => format!("{ip} {}", client.id),
        None => format!("{ip} (unregistered)"),
    }
}

/// The client a request claims to be, read as `Provider::authenticate_client`
/// reads it before looking the client up: `Err` for a request offering two
/// methods, an assertion of another type, or a `client_id` that disagrees.
/// Public for the `token_request` fuzz target.
pub fn claimed_client(
    params: &ClientAuthParams,
    basic: Option<BasicCredentials>,
) -> Result<Option<String>> {
    claimed_identity(params, basic).map(|(claimed, _)| claimed)
}

/// The client a request claims to be and its proof, from Basic credentials,
/// form secret, or assertion: exactly one of them, and a `client_id`
/// alongside must agree.
fn claimed_identity(
    params: &ClientAuthParams,
    basic: Option<BasicCredentials>,
) -> Result<(Option<String>, Proof)> {
    let methods = [
        basic.is_some(),
        params.client_secret.is_some(),
        params.client_assertion.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(IdentityError::InvalidRequest(
            "use one client authentication method, not two".into(),
        ));
    }
    let (claimed, proof) = if let Some(b) = basic {
        (Some(b.client_id), Proof::Secret(b.client_secret))
    } else if let Some(secret) = &params.client_secret {
        (params.client_id.clone(), Proof::Secret(secret.clone()))
    } else if let Some(assertion) = &params.client_assertion {
        if params.client_assertion_type.as_deref() != Some(JWT_BEARER_ASSERTION) {
            return Err(IdentityError::InvalidRequest(format!(
                "client_assertion_type must be {JWT_BEARER_ASSERTION}"
            )));
        }
        (
            assertion_subject(assertion).or_else(|| params.client_id.clone()),
            Proof::Assertion(assertion.clone()),
        )
    } else {
        (params.client_id.clone(), Proof::None)
    };
    if let (Some(named), Some(claimed)) = (&params.client_id, &claimed)
        && named != claimed
    {
        return Err(IdentityError::InvalidRequest(
            "client_id does not match the credentials".into(),
        ));
    }
    Ok((claimed, proof))
}

/// The `sub` an assertion claims, before anything is verified: only to know
/// whose keys to verify it with.
fn assertion_subject(assertion: &str) -> Option<String> {
    let payload = CompactJws::parse(assertion).ok()?.payload().ok()?;
    let claims: Value = serde_json::from_slice(&payload).ok()?;
    claims.get("sub")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use echo_crypto::{Algorithm, SigningKey};

    fn params() -> ClientAuthParams {
        ClientAuthParams::default()
    }

    #[test]
    fn one_method_per_request() {
        let basic = || {
            Some(BasicCredentials {
                client_id: "web".into(),
                client_secret: "s".into(),
            })
        };
        let with_secret = ClientAuthParams {
            client_secret: Some("s".into()),
            ..params()
        };
        assert!(claimed_identity(&with_secret, basic()).is_err());
        let with_assertion = ClientAuthParams {
            client_assertion: Some("a.b.c".into()),
            client_assertion_type: Some(JWT_BEARER_ASSERTION.into()),
            client_secret: Some("s".into()),
            ..params()
        };
        assert!(claimed_identity(&with_assertion, None).is_err());
        let mismatched = ClientAuthParams {
            client_id: Some("other".into()),
            ..params()
        };
        assert!(claimed_identity(&mismatched, basic()).is_err());
        let (id, proof) = claimed_identity(&params(), basic()).unwrap();
        assert_eq!(id.as_deref(), Some("web"));
        assert!(matches!(proof, Proof::Secret(s) if s == "s"));
    }

    #[test]
    fn assertion_needs_the_jwt_bearer_type_and_names_its_client() {
        let key = SigningKey::generate(Algorithm::ES256, "k").unwrap();
        let jwt = key
            .sign("JWT", &serde_json::json!({"iss": "c1", "sub": "c1"}))
            .unwrap();
        let untyped = ClientAuthParams {
            client_assertion: Some(jwt.clone()),
            ..params()
        };
        assert!(claimed_identity(&untyped, None).is_err());
        let typed = ClientAuthParams {
            client_assertion_type: Some(JWT_BEARER_ASSERTION.into()),
            ..untyped
        };
        let (id, proof) = claimed_identity(&typed, None).unwrap();
        assert_eq!(id.as_deref(), Some("c1"));
        assert!(matches!(proof, Proof::Assertion(_)));
    }

    #[test]
    fn client_keys_must_be_public() {
        let key = SigningKey::generate(Algorithm::ES256, "k").unwrap();
        let jwk = serde_json::to_value(key.public_jwk()).unwrap();
        assert_eq!(parse_client_jwks(&jwk.to_string()).unwrap().keys.len(), 1);
        let set = serde_json::json!({"keys": [jwk.clone(), jwk.clone()]});
        assert_eq!(parse_client_jwks(&set.to_string()).unwrap().keys.len(), 2);
        let mut private = jwk;
        private["d"] = "c2VjcmV0".into();
        assert!(parse_client_jwks(&private.to_string()).is_err());
        let symmetric = serde_json::json!({"kty": "oct", "k": "c2VjcmV0"});
        assert!(parse_client_jwks(&symmetric.to_string()).is_err());
        assert!(parse_client_jwks(r#"{"keys": []}"#).is_err());
        assert!(parse_client_jwks("not json").is_err());
    }
}
