//! The bad tokens every service must refuse alike (one status, one body
//! shape, one audit event each), and the check that they are.

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use echo_crypto::SigningKey;
use echo_crypto::secret::b64url;
use serde_json::{Value, json};

/// The reasons, in the order of [`bad_tokens`], that every service gives.
pub const REASONS: [&str; 6] = [
    "missing",
    "malformed",
    "expired",
    "wrong_audience",
    "wrong_kind",
    "bad_signature",
];

/// Seconds since 1970.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A missing, a malformed, an expired, a wrong-audience, a wrong-kind (an
/// ID token presented as an access token) and an `alg: none` token, each
/// otherwise like the valid access token `claims` (which must carry `iss`,
/// `sub` and `aud`) signed by `key`.
pub fn bad_tokens(key: &SigningKey, claims: &Value) -> [Option<String>; 6] {
    let with = |changes: Value| {
        let mut claims = claims.clone();
        claims["exp"] = json!(now() + 300);
        claims["iat"] = json!(now());
        for (k, v) in changes.as_object().into_iter().flatten() {
            claims[k] = v.clone();
        }
        claims
    };
    let kid = key.public_jwk().kid.unwrap_or_default();
    [
        None,
        Some("not-a-token".to_owned()),
        Some(
            key.sign("at+jwt", &with(json!({"exp": now() - 3600})))
                .unwrap(),
        ),
        Some(
            key.sign("at+jwt", &with(json!({"aud": "someone-else"})))
                .unwrap(),
        ),
        Some(key.sign("JWT", &with(json!({}))).unwrap()),
        Some(unsigned(&kid, &with(json!({})))),
    ]
}

/// `claims` as an `alg: none` token naming key `kid`.
pub fn unsigned(kid: &str, claims: &Value) -> String {
    let header = json!({"alg": "none", "kid": kid, "typ": "at+jwt"}).to_string();
    format!(
        "{}.{}.",
        b64url(header.as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

/// Sends each of `tokens` (as [`bad_tokens`] makes them) with `send` and
/// checks that each is refused the same way: 401, an RFC 9457 problem body
/// whose `reason` is the matching entry of [`REASONS`], and the RFC 6750
/// challenge.
pub async fn assert_refused_alike<F, Fut>(tokens: [Option<String>; 6], send: F)
where
    F: Fn(Option<String>) -> Fut,
    Fut: Future<Output = reqwest::Response>,
{
    for (token, reason) in tokens.into_iter().zip(REASONS) {
        let response = send(token).await;
        assert_eq!(response.status(), 401, "{reason}");
        let challenge = response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with(r#"Bearer realm="echo""#),
            "{reason}: {challenge}"
        );
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{reason}"
        );
        let body: Value = response.json().await.unwrap();
        let mut fields: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["detail", "reason", "status", "title", "type"],
            "{reason}: {body}"
        );
        assert_eq!(body["status"], 401, "{body}");
        assert_eq!(body["type"], "urn:echo:problem:invalid_token", "{body}");
        assert_eq!(body["reason"], reason, "{body}");
    }
}
