//! `/api/...` with bearer tokens, verified locally against identity's JWKS,
//! and the security headers of every response.

use echo_core::Clock;
use echo_crypto::secret::b64url;
use echo_crypto::{Algorithm, SigningKey};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::{Browser, Platform};

async fn me_with(platform: &Platform, token: &str) -> crate::common::Page {
    Browser::new()
        .get_with(
            &platform.gw("/api/me"),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await
}

/// `token`'s header, decoded.
fn header_of(token: &str) -> serde_json::Value {
    let header = token.split('.').next().unwrap();
    let bytes = echo_crypto::secret::b64url_decode(header).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_bearer_token_for_the_gateway_is_verified_locally() {
    let platform = Platform::start().await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let page = me_with(&platform, &token).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["sub"], "identity");
    assert_eq!(page.json()["roles"], json!([]));
}

#[tokio::test]
async fn forged_expired_wrong_audience_and_unsigned_tokens_get_401() {
    let platform = Platform::start().await;
    let good = platform.provider.own_service_token("gateway", "x").unwrap();
    let kid = header_of(&good)["kid"].as_str().unwrap().to_owned();
    let parts: Vec<&str> = good.split('.').collect();

    // Claims changed after signing.
    let mut claims: serde_json::Value =
        serde_json::from_slice(&echo_crypto::secret::b64url_decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64url(claims.to_string().as_bytes()),
        parts[2]
    );
    // Signed by a key of the attacker's under identity's kid.
    let forger = SigningKey::generate(Algorithm::EdDSA, kid.clone()).unwrap();
    let forged = forger.sign("at+jwt", &claims).unwrap();
    // `alg: none`, no signature.
    let none_header = json!({"alg": "none", "kid": kid, "typ": "at+jwt"});
    let unsigned = format!(
        "{}.{}.",
        b64url(none_header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let wrong_audience = platform.provider.own_service_token("audit", "x").unwrap();
    let expired = platform.provider.own_service_token("gateway", "x").unwrap();
    // The tokens are checked an hour later, when `expired` has expired (no
    // signing key exists an hour back to mint an old one with).
    platform.clock.advance(3600);

    for (name, token) in [
        ("tampered", tampered.as_str()),
        ("forged", &forged),
        ("alg none", &unsigned),
        ("wrong audience", &wrong_audience),
        ("expired", &expired),
        ("garbage", "not-a-jwt"),
    ] {
        let page = me_with(&platform, token).await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            page.body
        );
        let challenge = page.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer") && challenge.contains("invalid_token"),
            "{name}: {challenge}"
        );
        assert_eq!(page.json()["error"], "invalid_token");
    }
    let page = me_with(&platform, &expired).await;
    assert!(page.header("www-authenticate").unwrap().contains("expired"));

    let anonymous = Browser::new().get(&platform.gw("/api/me")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.header("www-authenticate"),
        Some(r#"Bearer realm="echo""#)
    );
}

#[tokio::test]
async fn with_identity_down_cached_keys_pass_and_an_unknown_kid_is_503() {
    let mut platform = Platform::start().await;
    let first = platform.provider.own_service_token("gateway", "x").unwrap();
    assert_eq!(me_with(&platform, &first).await.status, StatusCode::OK);
    platform.stop_identity().await;

    platform.clock.advance(1);
    let fresh = platform.provider.own_service_token("gateway", "x").unwrap();
    assert_ne!(fresh, first, "not a cached verification");
    let page = me_with(&platform, &fresh).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "a cached key still verifies: {}",
        page.body
    );

    let stranger = SigningKey::generate(Algorithm::EdDSA, "kid-nobody-published").unwrap();
    let claims = json!({
        "iss": platform.issuer, "sub": "svc", "aud": "gateway",
        "exp": platform.clock.now() + 300, "iat": platform.clock.now(),
    });
    let unknown = stranger.sign("at+jwt", &claims).unwrap();
    let page = me_with(&platform, &unknown).await;
    assert_eq!(
        page.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not the client's fault: {}",
        page.body
    );
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    for path in [
        "/",
        "/api/me",
        "/no-such-page",
        "/signed-out",
        "/static/gateway.css",
        "/static/documents.js",
        "/upload",
    ] {
        let page = browser.get(&platform.gw(path)).await;
        let csp = page.header("content-security-policy").unwrap_or_default();
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(
            page.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            page.header("referrer-policy"),
            Some("no-referrer"),
            "{path}"
        );
        assert_eq!(
            page.header("strict-transport-security"),
            None,
            "plain http: {path}"
        );
    }
    let missing = browser.get(&platform.gw("/no-such-page")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.body.contains("Not found"));
}
