//! Single sign-on, `prompt`, public clients, and the published metadata.

use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_session_answers_a_second_client_without_the_login_form() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let web = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    browser.login_for_code(&server, &web).await;
    assert!(
        browser.cookie("echo_sso").is_some(),
        "login opened an SSO session"
    );
    let logins = server.audited("auth.login.success");

    // Client B, same browser: straight back with a code.
    let spa_pkce = Pkce::new();
    let spa = Params::code_flow(SPA, SPA_REDIRECT, &spa_pkce);
    let page = browser.get(&server.authorize_url(&spa)).await;
    assert!(
        !page.body.contains("password"),
        "no login form: {}",
        page.body
    );
    let code = code_from(&server, &page, &spa);
    assert_eq!(
        server.audited("auth.login.success"),
        logins,
        "no second password check"
    );

    // The public client redeems it with its verifier alone.
    let tokens = token_request(
        &server,
        ClientAuth::Public(SPA),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", SPA_REDIRECT),
            ("code_verifier", &spa_pkce.verifier),
        ],
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let body = tokens.json();
    let (_, id_claims) = decode_jwt(body["id_token"].as_str().expect("id_token"));
    assert_eq!(id_claims["aud"], SPA);
    assert_eq!(id_claims["sub"], server.user_id.as_str());
    assert_eq!(id_claims["nonce"], spa.get("nonce"));
    let info = userinfo(
        &server,
        body["access_token"].as_str().expect("access_token"),
    )
    .await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    assert_eq!(info.json()["preferred_username"], USER);

    // A browser without the cookie gets the form.
    let stranger = Browser::new();
    let page = stranger
        .get(&server.authorize_url(&Params::code_flow(SPA, SPA_REDIRECT, &Pkce::new())))
        .await;
    assert!(page.is_login_form(), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_login_asks_for_the_password_again() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;

    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("prompt", "login");
    let page = browser.get(&server.authorize_url(&params)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.location().is_none());
    assert!(page.is_login_form(), "{}", page.body);
    let back = browser.submit_login(&server, &page, USER, PASSWORD).await;
    code_from(&server, &back, &params);
    assert_eq!(server.audited("auth.login.success"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_none_without_a_session_is_login_required() {
    let server = Server::start().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce)
        .set("prompt", "none")
        .set("state", "s&t ä");
    let page = browser.get(&server.authorize_url(&params)).await;
    let query = page.redirect_to(WEB_REDIRECT);
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("login_required")
    );
    assert_eq!(
        query.get("state").map(String::as_str),
        Some("s&t ä"),
        "state round-trips encoded"
    );
    assert_eq!(query.get("iss"), Some(&server.issuer));
    assert!(!query.contains_key("code"));

    // With a session, prompt=none answers with a code.
    browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    let page = browser.get(&server.authorize_url(&params)).await;
    let code = code_from(&server, &page, &params);
    assert_eq!(
        redeem(&server, &code, Some(&pkce.verifier)).await.status,
        StatusCode::OK
    );

    // An unknown prompt value is refused back at the client.
    let odd = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("prompt", "consent");
    let query = browser
        .get(&server.authorize_url(&odd))
        .await
        .redirect_to(WEB_REDIRECT);
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("invalid_request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_session_ends_with_its_lifetime() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let pkce = Pkce::new();
    browser
        .login_for_code(&server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    clock.advance(server.provider.config().sso_session_ttl + 1);
    let page = browser
        .get(&server.authorize_url(&Params::code_flow(SPA, SPA_REDIRECT, &pkce)))
        .await;
    assert!(
        page.is_login_form(),
        "expired session must not be reused: {}",
        page.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_document_is_complete_and_honest() {
    let server = Server::start().await;
    let page = discovery(&server).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
    );
    let doc = page.json();
    assert_eq!(doc["issuer"], server.issuer.as_str());
    assert_eq!(doc["jwks_uri"], server.url("/jwks"));
    assert_eq!(doc["authorization_endpoint"], server.url("/authorize"));
    assert_eq!(doc["token_endpoint"], server.url("/token"));
    assert_eq!(doc["userinfo_endpoint"], server.url("/userinfo"));
    assert_eq!(doc["end_session_endpoint"], server.url("/logout"));
    assert_eq!(
        doc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(doc["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    let algs: Vec<&str> = doc["id_token_signing_alg_values_supported"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(algs.contains(&"RS256"), "{algs:?}");
    assert!(
        !algs.contains(&"none") && !algs.iter().any(|a| a.starts_with("HS")),
        "{algs:?}"
    );
    // Every advertised grant actually works (or is refused for the right reason).
    let grants = doc["grant_types_supported"].as_array().expect("array");
    assert!(
        grants.iter().all(|g| g == "authorization_code"
            || g == "client_credentials"
            || g == "refresh_token"
            || g == echo_identity::grant::GRANT_TOKEN_EXCHANGE),
        "{grants:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_publishes_public_signing_keys_only() {
    let server = Server::start().await;
    let page = read(
        no_redirect_client()
            .get(server.url("/jwks"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    let jwks = page.json();
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    for key in keys {
        let object = key.as_object().expect("JWK object");
        assert!(key["kid"].as_str().is_some_and(|k| !k.is_empty()), "{key}");
        assert!(key["alg"].as_str().is_some(), "{key}");
        assert_eq!(key["use"], "sig", "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(
                !object.contains_key(private),
                "private member {private} published: {key}"
            );
        }
    }
    let algs: Vec<&str> = keys.iter().filter_map(|k| k["alg"].as_str()).collect();
    assert!(algs.contains(&"RS256"), "ID tokens are RS256: {algs:?}");

    // Tokens name a kid that the JWKS publishes, with the matching alg.
    let token = service_token(&server).await;
    let (header, _) = decode_jwt(&token);
    let key = keys
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("signing key is published");
    assert_eq!(key["alg"], header["alg"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_security_headers() {
    let server = Server::start().await;
    let browser = Browser::new();
    let page = browser
        .get(&server.authorize_url(&Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new())))
        .await;
    assert!(page.is_login_form());
    assert_eq!(
        page.header("x-frame-options"),
        Some("DENY"),
        "login form cannot be framed"
    );
    assert!(
        page.header("content-security-policy")
            .is_some_and(|c| c.contains("frame-ancestors 'none'"))
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert_eq!(page.header("referrer-policy"), Some("no-referrer"));
}
