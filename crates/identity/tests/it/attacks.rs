//! Each attack performed over real HTTP against a running provider, and
//! refused with the right status and OAuth error code.

use aws_lc_rs::hmac;
use echo_core::Clock;
use echo_crypto::{Algorithm, SigningKey};
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

// ---- authorization codes and PKCE ------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_code_is_refused_and_audited() {
    let server = Server::start().await;
    let pkce = Pkce::new();
    let code = Browser::new()
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    let first = redeem(&server, &code, Some(&pkce.verifier)).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let issued = server.audited("token.issued");

    let second = redeem(&server, &code, Some(&pkce.verifier)).await;
    assert_oauth_error(&second, StatusCode::BAD_REQUEST, "invalid_grant");
    assert_eq!(second.header("cache-control"), Some("no-store"));
    assert!(second.json().get("access_token").is_none());
    assert_eq!(
        server.audited("oauth.code.replayed"),
        1,
        "{:?}",
        server.audit.actions()
    );
    assert_eq!(
        server.audited("token.issued"),
        issued,
        "nothing issued on replay"
    );
    let replay = server
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "oauth.code.replayed")
        .expect("event");
    assert_eq!(replay.actor.as_deref(), Some(server.user_id.as_str()));
    assert_eq!(replay.details["client_id"], WEB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_redemptions_of_one_code_yield_one_token() {
    let server = Server::start().await;
    let pkce = Pkce::new();
    let code = Browser::new()
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    let attempts = redeem_concurrently(&server, &code, &pkce.verifier).await;
    let ok = attempts
        .iter()
        .filter(|p| p.status == StatusCode::OK)
        .count();
    assert_eq!(
        ok,
        1,
        "exactly one redemption wins: {:?}",
        attempts.iter().map(|p| &p.body).collect::<Vec<_>>()
    );
    for page in attempts.iter().filter(|p| p.status != StatusCode::OK) {
        assert_oauth_error(page, StatusCode::BAD_REQUEST, "invalid_grant");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_or_missing_code_verifier_is_invalid_grant() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();

    let code = browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    let other = Pkce::new();
    assert_oauth_error(
        &redeem(&server, &code, Some(&other.verifier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    let code = browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    assert_oauth_error(
        &redeem(&server, &code, None).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    // The challenge itself is not a verifier.
    let code = browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    assert_oauth_error(
        &redeem(&server, &code, Some(&pkce.challenge)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );

    // Control: the right verifier works on a fresh code.
    let code = browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    assert_eq!(
        redeem(&server, &code, Some(&pkce.verifier)).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_is_bound_to_its_client_and_redirect_uri() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);

    // Another client (the public SPA) cannot redeem the web client's code.
    let code = browser.login_for_code(&server, &params).await;
    let stolen = token_request(
        &server,
        ClientAuth::Public(SPA),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", WEB_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_oauth_error(&stolen, StatusCode::BAD_REQUEST, "invalid_grant");

    // The redirect URI must be the one of the authorization request.
    let code = browser.login_for_code(&server, &params).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:9999/cb/other"),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let page = token_request(&server, ClientAuth::Basic(WEB, WEB_SECRET), &form).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_grant");

    // A made-up code.
    let page = redeem(
        &server,
        "bm90LWEtcmVhbC1jb2RlLWJ1dC1sb25nLWVub3VnaC10by1sb29r",
        Some(&pkce.verifier),
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_code_is_invalid_grant() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let pkce = Pkce::new();
    let code = Browser::new()
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    clock.advance(server.provider.config().code_ttl + 1);
    assert_oauth_error(
        &redeem(&server, &code, Some(&pkce.verifier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_without_s256_pkce_is_refused_at_the_client() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let base = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let cases = [
        (
            "no code_challenge",
            base.clone()
                .without("code_challenge")
                .without("code_challenge_method"),
        ),
        ("no method", base.clone().without("code_challenge_method")),
        (
            "plain",
            base.clone()
                .set("code_challenge_method", "plain")
                .set("code_challenge", &pkce.verifier[..43]),
        ),
        (
            "lowercase s256",
            base.clone().set("code_challenge_method", "s256"),
        ),
        ("short challenge", base.clone().set("code_challenge", "abc")),
    ];
    for (case, params) in cases {
        let page = browser.get(&server.authorize_url(&params)).await;
        let query = page.redirect_to(WEB_REDIRECT);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("invalid_request"),
            "{case}: {query:?}"
        );
        assert_eq!(
            query.get("state").map(String::as_str),
            Some(params.get("state")),
            "{case}"
        );
        assert_eq!(query.get("iss"), Some(&server.issuer), "{case}");
        assert!(!query.contains_key("code"), "{case}");
    }
    assert!(
        browser.cookie("echo_csrf").is_none(),
        "no login form was ever shown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bad_requests_are_refused_at_the_client() {
    let server = Server::start().await;
    let browser = Browser::new();
    let base = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let cases = [
        (
            base.clone().set("response_type", "token"),
            "unsupported_response_type",
        ),
        (
            base.clone().without("response_type"),
            "unsupported_response_type",
        ),
        (base.clone().set("scope", "profile"), "invalid_scope"),
        (base.clone().set("scope", "openid admin"), "invalid_scope"),
        (base.clone().set("audience", "billing"), "invalid_target"),
        (base.clone().set("resource", "billing"), "invalid_target"),
    ];
    for (params, error) in cases {
        let query = browser
            .get(&server.authorize_url(&params))
            .await
            .redirect_to(WEB_REDIRECT);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some(error),
            "{params:?}"
        );
        assert_eq!(query.get("iss"), Some(&server.issuer));
    }
}

// ---- redirect URIs and clients: never an open redirector -------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_redirect_uris_get_an_error_page_never_a_redirect() {
    let server = Server::start().await;
    let browser = Browser::new();
    let base = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let variants = [
        "http://127.0.0.1:9999/cb/extra",
        "http://127.0.0.1:9998/cb",
        "http://127.0.0.1:9999@evil.com/cb",
        "http://127.0.0.1.evil.com:9999/cb",
        "https://127.0.0.1:9999/cb",
        "http://127.0.0.1:9999/cb?next=https://evil.com",
        "http://127.0.0.1:9999/cb#x",
        "http://127.0.0.1:9999/cb/",
        "http://127.0.0.1:9999/CB",
        "http://127.0.0.1:9999/cb/../cb",
        "http://127.0.0.1/cb",
        "http://evil.com/?http://127.0.0.1:9999/cb",
        "//evil.com/cb",
        "javascript:alert(1)//http://127.0.0.1:9999/cb",
        "",
    ];
    for uri in variants {
        let page = browser
            .get(&server.authorize_url(&base.clone().set("redirect_uri", uri)))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{uri}: {}", page.body);
        assert!(
            page.location().is_none(),
            "{uri}: redirected to {:?}",
            page.location()
        );
        assert!(page.is_html(), "{uri}: an error page");
        assert!(
            page.body.contains("did not register"),
            "{uri}: {}",
            page.body
        );
        assert!(
            !page.body.contains("evil.com"),
            "{uri}: the page does not link the attacker's URI"
        );
    }
    // A missing redirect_uri is refused the same way, and errors that would
    // otherwise be redirected are still shown as a page when the URI is bad.
    for params in [
        base.clone().without("redirect_uri"),
        base.clone()
            .set("redirect_uri", "https://evil.com/cb")
            .without("code_challenge"),
        base.clone()
            .set("redirect_uri", "https://evil.com/cb")
            .set("prompt", "none"),
    ] {
        let page = browser.get(&server.authorize_url(&params)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{params:?}");
        assert!(page.location().is_none(), "{params:?}");
        assert!(page.is_html());
    }
    // The same URI registered for another client is not good for this one.
    let page = browser
        .get(&server.authorize_url(&base.clone().set("redirect_uri", SPA_REDIRECT)))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_client_gets_an_error_page() {
    let server = Server::start().await;
    let browser = Browser::new();
    let base = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    for params in [
        base.clone().set("client_id", "evil"),
        base.clone().set("client_id", "WEB"),
        base.clone().set("client_id", "<script>"),
        base.clone().without("client_id"),
    ] {
        let page = browser.get(&server.authorize_url(&params)).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{params:?}: {}",
            page.body
        );
        assert!(page.location().is_none(), "{params:?}");
        assert!(page.is_html());
        assert!(
            !page.body.contains("<script>"),
            "client id is not reflected raw"
        );
    }
    // Repeated parameters are malformed, also an error page.
    let url = format!(
        "{}&redirect_uri=https%3A%2F%2Fevil.com%2Fcb",
        server.authorize_url(&base)
    );
    let page = browser.get(&url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location().is_none());
}

// ---- forged, expired and misdirected access tokens -------------------------

/// The /userinfo answer to a token it must refuse.
async fn assert_userinfo_refuses(server: &Server, token: &str, case: &str) {
    let page = userinfo(server, token).await;
    assert_eq!(
        page.status,
        StatusCode::UNAUTHORIZED,
        "{case}: {}",
        page.body
    );
    let challenge = page
        .www_authenticate()
        .unwrap_or_else(|| panic!("{case}: no WWW-Authenticate"));
    assert!(
        challenge.starts_with(r#"Bearer realm="echo", error="invalid_token""#),
        "{case}: {challenge}"
    );
    assert_eq!(
        page.json()["type"],
        "urn:echo:problem:invalid_token",
        "{case}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_access_tokens_are_refused() {
    let server = Server::start().await;
    let (_, tokens) = web_tokens(&server).await;
    let genuine = tokens["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    // Control: the genuine token passes both checks.
    assert_eq!(userinfo(&server, &genuine).await.status, StatusCode::OK);
    assert_eq!(verify(&server, &genuine, "audit").await["valid"], true);

    let (header, claims) = decode_jwt(&genuine);
    let kid = header["kid"].as_str().expect("kid").to_owned();
    let parts: Vec<&str> = genuine.split('.').collect();
    let jwks = read(
        no_redirect_client()
            .get(server.url("/jwks"))
            .send()
            .await
            .unwrap(),
    )
    .await
    .json();
    let jwk_of = |kid: &str| {
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()
            .clone()
    };
    let rsa = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .expect("RSA key")
        .clone();

    let mut elevated = claims.clone();
    elevated["roles"] = json!(["admin"]);
    elevated["sub"] = json!("someone-else");
    let mut forged: Vec<(&str, String, &str)> = Vec::new();

    // alg none, with and without the trailing dot.
    let none = b64_json(&json!({"alg": "none", "kid": kid, "typ": "at+jwt"}));
    forged.push((
        "alg none",
        format!("{none}.{}.", b64_json(&elevated)),
        "bad_signature",
    ));
    forged.push((
        "alg none, no signature part",
        format!("{none}.{}", b64_json(&elevated)),
        "malformed",
    ));
    forged.push((
        "alg none, kept signature",
        format!("{none}.{}.{}", parts[1], parts[2]),
        "bad_signature",
    ));

    // HS256 keyed with the public key, for the ES256 and the RSA key.
    for (key, secret_bytes) in [
        (jwk_of(&kid), jwk_of(&kid).to_string().into_bytes()),
        (
            jwk_of(&kid),
            jwk_of(&kid)["x"].as_str().unwrap().as_bytes().to_vec(),
        ),
        (rsa.clone(), rsa.to_string().into_bytes()),
        (rsa.clone(), rsa["n"].as_str().unwrap().as_bytes().to_vec()),
    ] {
        let header = b64_json(&json!({"alg": "HS256", "kid": key["kid"], "typ": "at+jwt"}));
        let input = format!("{header}.{}", b64_json(&elevated));
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &secret_bytes),
            input.as_bytes(),
        );
        forged.push((
            "HS256 with the public key",
            format!("{input}.{}", b64(tag.as_ref())),
            "bad_signature",
        ));
    }

    // A valid signature over the original payload, under a changed payload.
    forged.push((
        "tampered payload",
        format!("{}.{}.{}", parts[0], b64_json(&elevated), parts[2]),
        "bad_signature",
    ));
    // Header switched to RS256 (the other published key's algorithm).
    let rs_header = b64_json(&json!({"alg": "RS256", "kid": kid, "typ": "at+jwt"}));
    forged.push((
        "alg switched",
        format!("{rs_header}.{}.{}", parts[1], parts[2]),
        "bad_signature",
    ));

    // Signed by a key we made, naming the provider's kid, or a kid of ours.
    let mut own = claims.clone();
    own["exp"] = json!(claims["exp"].as_i64().unwrap() + 60);
    let impostor = SigningKey::generate(Algorithm::ES256, kid.clone()).unwrap();
    forged.push((
        "foreign key, provider's kid",
        impostor.sign("at+jwt", &own).unwrap(),
        "bad_signature",
    ));
    let stranger = SigningKey::generate(Algorithm::ES256, "attacker-1").unwrap();
    forged.push((
        "foreign key and kid",
        stranger.sign("at+jwt", &own).unwrap(),
        "unknown_key",
    ));

    // An ID token is not an access token (RFC 9068 typ).
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    forged.push(("ID token as access token", id_token, "wrong_kind"));
    forged.push(("garbage", "not.a.jwt".to_owned(), "malformed"));

    for (case, token, code) in &forged {
        assert_userinfo_refuses(&server, token, case).await;
        let answer = verify(&server, token, "audit").await;
        assert_eq!(answer, json!({"valid": false, "error": code}), "{case}");
    }
    // Each kind of refusal is audited (repeats from one address are
    // counted into one event per window).
    let mut reasons: Vec<_> = forged.iter().map(|(_, _, code)| *code).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert!(server.audited("access.denied") >= reasons.len());

    // No bearer at all.
    let page = read(
        no_redirect_client()
            .get(server.url("/userinfo"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.www_authenticate()
            .is_some_and(|c| c.starts_with("Bearer"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_access_tokens_are_refused() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let (_, tokens) = web_tokens(&server).await;
    let user_token = tokens["access_token"].as_str().unwrap().to_owned();
    let service = service_token(&server).await;
    // Valid now, and remembered by the verifier's cache.
    assert_eq!(userinfo(&server, &user_token).await.status, StatusCode::OK);
    assert_eq!(verify(&server, &service, "audit").await["valid"], true);

    clock.advance(3600);
    assert_userinfo_refuses(&server, &user_token, "expired user token").await;
    assert_eq!(
        verify(&server, &user_token, "audit").await,
        json!({"valid": false, "error": "expired"})
    );
    assert_eq!(
        verify(&server, &service, "audit").await,
        json!({"valid": false, "error": "expired"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_refused_for_another_audience() {
    let server = Server::start().await;
    let service = service_token(&server).await;
    assert_eq!(verify(&server, &service, "audit").await["valid"], true);
    assert_eq!(
        verify(&server, &service, "other").await,
        json!({"valid": false, "error": "wrong_audience"})
    );

    // A service token (aud audit) cannot read anyone's userinfo.
    assert_userinfo_refuses(&server, &service, "client-credentials token at userinfo").await;
    let page = userinfo(&server, &service).await;
    assert!(
        page.www_authenticate()
            .is_some_and(|c| c.contains(r#"error="invalid_token""#))
    );

    // A user token is valid for its audiences only.
    let (_, tokens) = web_tokens(&server).await;
    let user = tokens["access_token"].as_str().unwrap();
    assert_eq!(verify(&server, user, "audit").await["valid"], true);
    assert_eq!(
        verify(&server, user, &server.url("/userinfo")).await["valid"],
        true
    );
    assert_eq!(
        verify(&server, user, "billing").await,
        json!({"valid": false, "error": "wrong_audience"})
    );

    // /verify with a malformed body is a 400 invalid_request, not a crash.
    let page = read(
        no_redirect_client()
            .post(server.url("/verify"))
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
}

// ---- client authentication and audiences ------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_client_credentials_are_invalid_client() {
    let server = Server::start().await;
    let grant = [("grant_type", "client_credentials"), ("audience", "audit")];
    let wrong = "svc-secret-0123456789abcdefghijklmnopqrstuX";

    let page = token_request(&server, ClientAuth::Basic(SVC, wrong), &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        page.www_authenticate()
            .is_some_and(|c| c.starts_with("Basic")),
        "{:?}",
        page.www_authenticate()
    );

    let page = token_request(&server, ClientAuth::Basic("nobody", wrong), &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        page.www_authenticate()
            .is_some_and(|c| c.starts_with("Basic"))
    );

    let page = token_request(&server, ClientAuth::Post(SVC, wrong), &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    assert!(
        page.www_authenticate().is_none(),
        "no Basic challenge for client_secret_post"
    );

    // A confidential client cannot pose as a public one, nor a public as confidential.
    let page = token_request(&server, ClientAuth::Public(SVC), &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    let page = token_request(&server, ClientAuth::Post(SPA, wrong), &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    // No credentials at all.
    let page = read(
        no_redirect_client()
            .post(server.url("/token"))
            .form(&grant)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    // An unreadable Basic header.
    let page = read(
        no_redirect_client()
            .post(server.url("/token"))
            .header("authorization", "Basic !!!")
            .form(&grant)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    // Two methods at once.
    let mut both = grant.to_vec();
    both.push(("client_secret", SVC_SECRET));
    let page = token_request(&server, ClientAuth::Basic(SVC, SVC_SECRET), &both).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");

    assert!(server.audited("oauth.client.auth_failure") >= 5);
    assert_eq!(server.audited("token.issued"), 0);
    // The right secret, posted, works.
    let page = token_request(&server, ClientAuth::Post(SVC, SVC_SECRET), &grant).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_and_grants_a_client_may_not_have_are_refused() {
    let server = Server::start().await;
    let auth = ClientAuth::Basic(SVC, SVC_SECRET);
    let userinfo_audience = server.url("/userinfo");
    for (param, audience) in [
        ("audience", "billing"),
        ("resource", "billing"),
        ("audience", userinfo_audience.as_str()),
        ("audience", "audit billing"),
    ] {
        let form = [("grant_type", "client_credentials"), (param, audience)];
        let page = token_request(&server, auth, &form).await;
        assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_target");
    }
    let page = token_request(
        &server,
        auth,
        &[("grant_type", "client_credentials"), ("scope", "admin")],
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");
    let page = token_request(
        &server,
        auth,
        &[("grant_type", "password"), ("username", USER)],
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "unsupported_grant_type");
    // The web client may not use client credentials; the service no codes.
    let page = token_request(
        &server,
        ClientAuth::Basic(WEB, WEB_SECRET),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "unauthorized_client");
    let page = token_request(
        &server,
        auth,
        &[("grant_type", "authorization_code"), ("code", "x")],
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "unauthorized_client");

    // A code exchange asking for an audience the client lacks.
    let pkce = Pkce::new();
    let code = Browser::new()
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_REDIRECT),
        ("code_verifier", pkce.verifier.as_str()),
        ("resource", "billing"),
    ];
    let page = token_request(&server, ClientAuth::Basic(WEB, WEB_SECRET), &form).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_target");
    assert_eq!(server.audited("token.issued"), 0);
}

// ---- the login form ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_without_a_valid_csrf_token_is_forbidden() {
    let server = Server::start().await;
    let browser = Browser::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let form = browser.get(&server.authorize_url(&params)).await;
    assert!(form.is_login_form());
    let fields = |csrf: Option<&str>| {
        let mut fields: Vec<(String, String)> = form
            .hidden_fields()
            .into_iter()
            .filter(|(k, _)| k != "csrf")
            .collect();
        if let Some(csrf) = csrf {
            fields.push(("csrf".into(), csrf.into()));
        }
        fields.push(("username".into(), USER.into()));
        fields.push(("password".into(), PASSWORD.into()));
        fields
    };
    let good = form.inputs()["csrf"].clone();

    let attempts = [
        ("no csrf field", fields(None)),
        (
            "wrong csrf",
            fields(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ),
        ("empty csrf", fields(Some(""))),
    ];
    for (case, body) in &attempts {
        let page = browser.post_form(&server.url("/login"), body).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{case}: {}", page.body);
        assert!(page.location().is_none(), "{case}");
        assert!(page.is_html(), "{case}");
    }

    // The token from this form, but without the cookie it is bound to.
    let cookie = browser.cookie("echo_csrf").expect("CSRF cookie");
    browser.remove_cookie("echo_csrf");
    let page = browser
        .post_form(&server.url("/login"), &fields(Some(&good)))
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "token without its cookie"
    );

    // The attacker's own cookie and token, planted in the victim's form.
    let attacker = Browser::new();
    let their_form = attacker.get(&server.authorize_url(&params)).await;
    let their_token = their_form.inputs()["csrf"].clone();
    browser.set_cookie("echo_csrf", &cookie);
    let page = browser
        .post_form(&server.url("/login"), &fields(Some(&their_token)))
        .await;
    assert_eq!(
        page.status,
        StatusCode::FORBIDDEN,
        "token bound to another cookie"
    );

    assert_eq!(server.audited("auth.login.success"), 0);
    assert_eq!(
        server.audited("auth.login.failure"),
        0,
        "CSRF is checked before the password"
    );
    assert!(browser.cookie("echo_sso").is_none());

    // Control: the untouched form logs in.
    let page = browser
        .post_form(&server.url("/login"), &fields(Some(&good)))
        .await;
    code_from(&server, &page, &params);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_say_the_same_thing_and_escape_input() {
    let server = Server::start().await;
    let browser = Browser::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let form = browser.get(&server.authorize_url(&params)).await;

    let wrong_password = browser
        .submit_login(&server, &form, USER, "not the password")
        .await;
    let unknown_user = browser
        .submit_login(&server, &form, "mallory", PASSWORD)
        .await;
    let script = "<script>alert(1)</script>";
    let injected = browser.submit_login(&server, &form, script, PASSWORD).await;
    for (case, page) in [
        ("wrong password", &wrong_password),
        ("unknown user", &unknown_user),
        ("script", &injected),
    ] {
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{case}");
        assert!(page.is_html(), "{case}");
        assert!(page.location().is_none(), "{case}");
        assert!(page.set_cookie("echo_sso").is_none(), "{case}: no session");
        assert!(
            page.body.contains("Invalid username or password"),
            "{case}: {}",
            page.body
        );
        assert!(page.is_login_form(), "{case}: the form is shown again");
        assert!(
            !page.body.contains(PASSWORD) && !page.body.contains("not the password"),
            "{case}: password echoed"
        );
    }
    let error_line = |page: &Page| {
        page.body
            .lines()
            .find(|l| l.contains("Invalid username"))
            .map(str::to_owned)
    };
    assert_eq!(
        error_line(&wrong_password),
        error_line(&unknown_user),
        "no user enumeration"
    );
    assert!(!injected.body.contains(script), "input is not echoed raw");
    let escaped = [
        "&#60;script&#62;alert(1)&#60;/script&#62;",
        "&lt;script&gt;alert(1)&lt;/script&gt;",
    ];
    assert!(
        escaped.iter().any(|e| injected.body.contains(e)),
        "escaped form present: {}",
        injected.body
    );
    assert_eq!(
        injected.inputs()["username"],
        script,
        "escaped, not mangled"
    );
    assert_eq!(server.audited("auth.login.failure"), 3);

    // The re-shown form still works.
    let page = browser
        .submit_login(&server, &injected, USER, PASSWORD)
        .await;
    code_from(&server, &page, &params);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflected_parameters_are_escaped_in_the_login_form() {
    let server = Server::start().await;
    let browser = Browser::new();
    let state = r#""><script>alert('x')</script><input value=""#;
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new())
        .set("state", state)
        .set("nonce", "a&b<c>'d\"");
    let form = browser.get(&server.authorize_url(&params)).await;
    assert!(form.is_login_form());
    assert!(!form.body.contains("<script>"), "{}", form.body);
    let hidden = form.inputs();
    assert_eq!(hidden["state"], state, "carried intact through escaping");
    assert_eq!(hidden["nonce"], "a&b<c>'d\"");
    let back = browser.submit_login(&server, &form, USER, PASSWORD).await;
    assert_eq!(
        back.redirect_to(WEB_REDIRECT)
            .get("state")
            .map(String::as_str),
        Some(state)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_cannot_be_bound_to_a_forged_authorization_request() {
    let server = Server::start().await;
    let browser = Browser::new();
    let form = browser
        .get(&server.authorize_url(&Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new())))
        .await;
    // The hidden redirect_uri is rewritten to the attacker's: refused as a
    // page even though the password is right; no session, no code.
    let mut fields: Vec<(String, String)> = form
        .hidden_fields()
        .into_iter()
        .map(|(k, v)| {
            if k == "redirect_uri" {
                (k, "https://evil.com/cb".to_owned())
            } else {
                (k, v)
            }
        })
        .collect();
    fields.push(("username".into(), USER.into()));
    fields.push(("password".into(), PASSWORD.into()));
    let page = browser.post_form(&server.url("/login"), &fields).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.location().is_none());
    assert!(browser.cookie("echo_sso").is_none());
    assert_eq!(server.audited("oauth.code.issued"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_rate_limited_per_client_address() {
    // A manual clock, so the four attempts cannot straddle two rate windows.
    let (server, clock) = Server::start_manual(|config| config.login_attempts_per_minute = 3).await;
    let browser = Browser::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let form = browser.get(&server.authorize_url(&params)).await;
    for guess in ["guess-one", "guess-two", "guess-three"] {
        let page = browser.submit_login(&server, &form, USER, guess).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{guess}");
    }
    // Over the limit even the right password is not checked.
    let page = browser.submit_login(&server, &form, USER, PASSWORD).await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.is_html());
    assert!(page.location().is_none());
    assert!(
        page.header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| (1..=60).contains(&s))
    );
    assert!(browser.cookie("echo_sso").is_none());
    assert_eq!(server.audited("auth.login.rate_limited"), 1);
    assert_eq!(server.audited("auth.login.success"), 0);

    // The next window lets the user in again.
    clock.advance(60);
    let page = browser.submit_login(&server, &form, USER, PASSWORD).await;
    code_from(&server, &page, &params);
}

/// RFC 8707 §2.2: the token request may repeat the audience authorized at
/// `/authorize`, never swap it for another the client may also have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_request_cannot_widen_the_authorized_audience() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("resource", "gateway");
    let code = browser.login_for_code(&server, &params).await;
    let swapped = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", WEB_REDIRECT),
        ("code_verifier", pkce.verifier.as_str()),
        ("audience", "audit"),
    ];
    let page = token_request(&server, ClientAuth::Basic(WEB, WEB_SECRET), &swapped).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_target");

    let code = browser.login_for_code(&server, &params).await;
    let tokens = redeem(&server, &code, Some(&pkce.verifier)).await.json();
    let (_, claims) = decode_jwt(tokens["access_token"].as_str().expect("access token"));
    assert_eq!(
        claims["aud"][0], "gateway",
        "the authorized audience, not the client's first"
    );
}

/// Guessing a client secret: past the per-IP failure limit even the right
/// secret is refused with 429 until the window ends, while a client that
/// authenticates correctly is never counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_guessing_is_rate_limited_per_client_address() {
    let (server, clock) =
        Server::start_manual(|config| config.client_auth_failures_per_minute = 3).await;
    let grant = [("grant_type", "client_credentials")];
    for _ in 0..5 {
        let page = token_request(&server, ClientAuth::Basic(SVC, SVC_SECRET), &grant).await;
        assert_eq!(page.status, StatusCode::OK, "successes are not counted");
    }
    for guess in [
        "guess-one-0123456789abcdef0123456789",
        "guess-two",
        "guess-three",
    ] {
        let page = token_request(&server, ClientAuth::Basic(SVC, guess), &grant).await;
        assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let page = token_request(&server, ClientAuth::Basic(SVC, SVC_SECRET), &grant).await;
    assert_oauth_error(&page, StatusCode::TOO_MANY_REQUESTS, "slow_down");
    assert!(
        page.header("retry-after")
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| (1..=60).contains(&s))
    );
    clock.advance(60);
    let page = token_request(&server, ClientAuth::Basic(SVC, SVC_SECRET), &grant).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the next window lets the client in"
    );
}

/// Issue 13: `/userinfo` refuses bad tokens the way every service does —
/// one status, one body shape, one `access.denied` event each — and a
/// flood of them from one address makes a bounded number of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_at_userinfo_are_refused_alike_and_audited_once_each() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let (_, tokens) = web_tokens(&server).await;
    let access_token = tokens["access_token"].as_str().unwrap().to_owned();
    let id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let (header, claims) = decode_jwt(&access_token);
    // The access token expires (10 minutes), the ID token (1 hour) not yet.
    clock.advance(15 * 60);
    let other_audience = service_token(&server).await;
    let mut fresh = claims.clone();
    fresh["exp"] = json!(clock.now() + 300);
    let bad = [
        None,
        Some("not-a-token".to_owned()),
        Some(access_token),
        Some(other_audience),
        Some(id_token),
        Some(echo_testkit::refusals::unsigned(
            header["kid"].as_str().unwrap(),
            &fresh,
        )),
    ];
    let before = server.audit.events().len();
    let url = server.url("/userinfo");
    echo_testkit::refusals::assert_refused_alike(bad, |token| {
        let mut request = no_redirect_client().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    })
    .await;
    let events = server.audit.events();
    let reasons: Vec<_> = events[before..]
        .iter()
        .map(|e| (e.action, e.details["reason"].as_str().unwrap()))
        .collect();
    let expected: Vec<_> = echo_testkit::refusals::REASONS
        .iter()
        .map(|reason| ("access.denied", *reason))
        .collect();
    assert_eq!(reasons, expected);
    assert!(
        events[before..]
            .iter()
            .all(|e| e.details["service"] == "identity" && e.ip.as_deref() == Some("127.0.0.1"))
    );

    let before = server.audit.events().len();
    for _ in 0..1000 {
        assert_eq!(
            userinfo(&server, "junk").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let flood = server.audit.events().len() - before;
    assert!(flood < 20, "{flood} events for 1,000 refusals");
}
