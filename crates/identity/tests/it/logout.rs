//! RP-initiated logout: exact post-logout redirect URIs, the session ends
//! on the server (not just in the cookie), and the confirmation form is
//! CSRF-protected.

use reqwest::StatusCode;
use url::Url;

use crate::common::*;

fn logout_url(server: &Server, pairs: &[(&str, &str)]) -> String {
    let mut url = Url::parse(&server.url("/logout")).expect("logout url");
    url.query_pairs_mut().extend_pairs(pairs);
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_with_hint_ends_the_session_and_returns_to_the_client() {
    let server = Server::start().await;
    let (browser, tokens) = web_tokens(&server).await;
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let old_session = browser.cookie("echo_sso").expect("SSO cookie");

    let page = browser
        .get(&logout_url(
            &server,
            &[
                ("id_token_hint", id_token),
                ("post_logout_redirect_uri", WEB_LOGOUT),
                ("state", "bye & thanks"),
            ],
        ))
        .await;
    let query = page.redirect_to(WEB_LOGOUT);
    assert_eq!(query.get("state").map(String::as_str), Some("bye & thanks"));
    assert!(
        !query.contains_key("code") && !query.contains_key("error"),
        "{query:?}"
    );
    let cleared = page.set_cookie("echo_sso").expect("SSO cookie cleared");
    assert!(
        cleared.starts_with("echo_sso=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert!(browser.cookie("echo_sso").is_none());
    assert_eq!(server.audited("auth.logout"), 1);

    // The next authorization request asks for the password again.
    let params = Params::code_flow(SPA, SPA_REDIRECT, &Pkce::new());
    let page = browser.get(&server.authorize_url(&params)).await;
    assert!(page.is_login_form(), "{}", page.body);

    // Replaying the old cookie does not bring the session back.
    browser.set_cookie("echo_sso", &old_session);
    let page = browser.get(&server.authorize_url(&params)).await;
    assert!(
        page.is_login_form(),
        "a logged-out session stays dead: {}",
        page.body
    );
    let page = browser
        .get(&server.authorize_url(&params.clone().set("prompt", "none")))
        .await;
    assert_eq!(
        page.redirect_to(SPA_REDIRECT)
            .get("error")
            .map(String::as_str),
        Some("login_required")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_post_logout_redirect_uri_gets_an_error_page() {
    let server = Server::start().await;
    let (browser, tokens) = web_tokens(&server).await;
    let id_token = tokens["id_token"].as_str().expect("id_token");
    for uri in [
        "https://evil.com/",
        "http://127.0.0.1:9999/signed-out/extra",
        "http://127.0.0.1:9999@evil.com/signed-out",
        "https://127.0.0.1:9999/signed-out",
        WEB_REDIRECT,
    ] {
        let page = browser
            .get(&logout_url(
                &server,
                &[
                    ("id_token_hint", id_token),
                    ("post_logout_redirect_uri", uri),
                    ("state", "s"),
                ],
            ))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{uri}: {}", page.body);
        assert!(
            page.location().is_none(),
            "{uri}: redirected to {:?}",
            page.location()
        );
        assert!(page.is_html(), "{uri}");
        assert!(
            page.set_cookie("echo_sso").is_none(),
            "{uri}: nothing signed out"
        );
    }
    // Without a hint, naming the client is not enough for a foreign URI either.
    let page = browser
        .get(&logout_url(
            &server,
            &[
                ("client_id", WEB),
                ("post_logout_redirect_uri", "https://evil.com/"),
            ],
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location().is_none());
    // Nor is a post-logout URI with no client at all.
    let page = browser
        .get(&logout_url(
            &server,
            &[("post_logout_redirect_uri", WEB_LOGOUT)],
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.location().is_none());

    // The session survived every refused attempt.
    assert_eq!(server.audited("auth.logout"), 0);
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    code_from(
        &server,
        &browser.get(&server.authorize_url(&params)).await,
        &params,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_misused_id_token_hints_are_refused() {
    let server = Server::start().await;
    let (browser, tokens) = web_tokens(&server).await;
    let access = tokens["access_token"].as_str().expect("access_token");
    let id_token = tokens["id_token"].as_str().expect("id_token");
    let parts: Vec<&str> = id_token.split('.').collect();
    let (_, mut claims) = decode_jwt(id_token);
    claims["aud"] = serde_json::json!(SPA);
    let tampered = format!("{}.{}.{}", parts[0], b64_json(&claims), parts[2]);
    for (case, hint) in [
        ("access token", access),
        ("tampered", tampered.as_str()),
        ("garbage", "x.y.z"),
    ] {
        let page = browser
            .get(&logout_url(
                &server,
                &[
                    ("id_token_hint", hint),
                    ("post_logout_redirect_uri", WEB_LOGOUT),
                ],
            ))
            .await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{case}: {}",
            page.body
        );
        assert!(page.location().is_none(), "{case}");
        assert!(page.set_cookie("echo_sso").is_none(), "{case}");
    }
    // A hint for another client than the one named.
    let page = browser
        .get(&logout_url(
            &server,
            &[
                ("id_token_hint", id_token),
                ("client_id", SPA),
                ("post_logout_redirect_uri", WEB_LOGOUT),
            ],
        ))
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.location().is_none());
    assert_eq!(server.audited("auth.logout"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_without_hint_needs_a_confirmed_csrf_protected_form() {
    let server = Server::start().await;
    let (browser, _) = web_tokens(&server).await;
    let url = logout_url(
        &server,
        &[
            ("client_id", WEB),
            ("post_logout_redirect_uri", WEB_LOGOUT),
            ("state", "s1"),
        ],
    );
    let page = browser.get(&url).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.location().is_none(), "no redirect before confirmation");
    assert!(
        page.set_cookie("echo_sso").is_none(),
        "not signed out by a bare GET"
    );
    assert!(browser.cookie("echo_sso").is_some());
    let form = page.hidden_fields();
    assert!(
        form.iter().any(|(k, v)| k == "csrf" && !v.is_empty()),
        "{}",
        page.body
    );

    // A cross-site POST without the token is refused.
    let forged: Vec<(String, String)> = form.iter().filter(|(k, _)| k != "csrf").cloned().collect();
    let page = browser.post_form(&server.url("/logout"), &forged).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.location().is_none());
    assert_eq!(server.audited("auth.logout"), 0);

    // The confirmed form signs out and returns to the client with state.
    let page = browser.post_form(&server.url("/logout"), &form).await;
    assert_eq!(
        page.redirect_to(WEB_LOGOUT)
            .get("state")
            .map(String::as_str),
        Some("s1")
    );
    assert!(browser.cookie("echo_sso").is_none());
    assert_eq!(server.audited("auth.logout"), 1);
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    assert!(
        browser
            .get(&server.authorize_url(&params))
            .await
            .is_login_form()
    );
}

/// OpenID Connect RP-Initiated Logout 1.0 §2: the OP "MUST ask the End-User
/// [whether to log out] if an id_token_hint was not provided or if the
/// supplied ID Token does not belong to the current OP session with the RP
/// and/or currently logged in End-User". Here any valid (even expired) ID
/// token of any user ends the victim's session with no confirmation, so a
/// link with the attacker's own ID token logs anyone out (ASVS 10.6.2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_token_hint_of_another_user_does_not_skip_the_confirmation() {
    let server = Server::start().await;
    // The attacker gets an ID token of their own, in their own browser.
    server.add_user("mallory", "mallory-password-1").await;
    let attacker = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let form = attacker.get(&server.authorize_url(&params)).await;
    let page = attacker
        .submit_login(&server, &form, "mallory", "mallory-password-1")
        .await;
    let code = code_from(&server, &page, &params);
    let tokens = redeem(&server, &code, Some(&pkce.verifier)).await.json();
    let their_hint = tokens["id_token"].as_str().expect("id_token");

    // The victim, logged in as alice, follows the attacker's link.
    let (victim, _) = web_tokens(&server).await;
    let page = victim
        .get(&logout_url(
            &server,
            &[
                ("id_token_hint", their_hint),
                ("post_logout_redirect_uri", WEB_LOGOUT),
            ],
        ))
        .await;
    assert!(
        page.set_cookie("echo_sso").is_none(),
        "victim signed out by a foreign hint"
    );
    assert_eq!(server.audited("auth.logout"), 0);
    assert_eq!(
        page.status,
        StatusCode::OK,
        "a confirmation page, not a redirect"
    );
}
