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
        assert_eq!(page.json()["type"], "urn:echo:problem:invalid_token");
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

/// An ID token issued to the gateway: the code flow run by hand against
/// identity, as the gateway's client.
async fn id_token(platform: &Platform) -> String {
    let verifier = echo_crypto::secret::random_token();
    let challenge = b64url(&echo_crypto::secret::sha256(verifier.as_bytes()));
    let redirect_uri = platform.gw("/callback");
    let mut authorize = url::Url::parse(&format!("{}/authorize", platform.issuer)).unwrap();
    authorize.query_pairs_mut().extend_pairs([
        ("response_type", "code"),
        ("client_id", "gateway"),
        ("redirect_uri", redirect_uri.as_str()),
        ("scope", "openid"),
        ("state", "s"),
        ("nonce", "n"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ]);
    let callback = platform
        .callback_url(&Browser::new(), authorize.as_str())
        .await;
    let code = crate::common::query_of(&callback)["code"].clone();
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/token", platform.issuer))
        .basic_auth("gateway", Some(crate::common::GATEWAY_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["id_token"].as_str().unwrap().to_owned()
}

/// Issue 13: the gateway's API refuses bad bearer tokens the way every
/// service does — one status, one body shape, one `access.denied` event
/// each — and a flood of them makes a bounded number of events.
#[tokio::test]
async fn bad_tokens_are_refused_alike_and_audited_once_each() {
    let platform = Platform::start().await;
    let id_token = id_token(&platform).await;
    let expired = platform.provider.own_service_token("gateway", "x").unwrap();
    let kid = header_of(&expired)["kid"].as_str().unwrap().to_owned();
    // Access tokens live 10 minutes, ID tokens an hour.
    platform.clock.advance(11 * 60);
    let wrong_audience = platform.provider.own_service_token("audit", "x").unwrap();
    let claims = json!({"iss": platform.issuer, "sub": "admin", "aud": "gateway",
        "exp": platform.clock.now() + 300});
    let bad = [
        None,
        Some("not-a-token".to_owned()),
        Some(expired),
        Some(wrong_audience),
        Some(id_token),
        Some(echo_testkit::refusals::unsigned(&kid, &claims)),
    ];
    let url = platform.gw("/api/me");
    echo_testkit::refusals::assert_refused_alike(bad, |token| {
        let mut request = reqwest::Client::new().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    })
    .await;
    let denied = platform.gateway_audited("access.denied");
    let reasons: Vec<_> = denied
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, echo_testkit::refusals::REASONS);
    assert!(denied.iter().all(|e| e.details["service"] == "gateway"
        && e.ip.as_deref() == Some("127.0.0.1")
        && e.actor.is_none()));

    // A flood: refused, then slowed by the per-address limit (429); both
    // are audited once per window, not once per request.
    for _ in 0..1000 {
        let status = me_with(&platform, "junk.junk").await.status;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status),
            "{status}"
        );
    }
    let all = platform.gateway_audit.events().len();
    assert!(all < 20, "{all} events for 1,006 refusals");
}
