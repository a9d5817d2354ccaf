//! The BFF login and logout, end to end through identity's login form;
//! what touches the session store runs once per store.

use std::collections::BTreeMap;

use reqwest::StatusCode;

use crate::common::{Backend, Browser, Platform, on_every_store, query_of, with_param};

on_every_store!(
    login_session_api_logout_and_the_cookie_is_dead_afterwards,
    a_new_session_id_at_every_login,
    callback_without_a_matching_state_is_400,
    logout_needs_the_csrf_token_and_this_origin,
);

async fn login_session_api_logout_and_the_cookie_is_dead_afterwards(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();

    let start = browser
        .get(&platform.gw("/login?return_to=%2Faccount%3Ftab%3D1"))
        .await;
    let authorize = start.location_url();
    assert!(authorize.starts_with(&format!("{}/authorize?", platform.issuer)));
    let query = query_of(&authorize);
    assert_eq!(query["client_id"], "gateway");
    assert_eq!(query["code_challenge_method"], "S256");
    assert_eq!(query["scope"], "openid profile offline_access");
    for kept in ["state", "nonce", "code_challenge"] {
        assert_eq!(query[kept].len(), 43, "{kept} is 256 random bits");
    }

    let landed = platform.finish_sign_in(&browser, &authorize).await;
    assert_eq!(
        landed.location(),
        "/account?tab=1",
        "back where login began"
    );
    let session = browser.cookie("echo_session").expect("session cookie");
    assert_eq!(session.len(), 43, "an opaque random id");
    let set = landed.header("set-cookie").unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
    assert!(!set.contains("Secure"), "plain http: no Secure flag");
    assert_eq!(platform.gateway_audited("gateway.login.success").len(), 1);

    let me = browser.api_me(&platform).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let me = me.json();
    assert_eq!(me["name"], "alice");
    assert_eq!(me["roles"], serde_json::json!(["auditor"]));
    assert!(me["sub"].as_str().is_some_and(|s| !s.is_empty()));

    let home = browser.get(&platform.gw("/")).await;
    assert!(home.body.contains("Welcome, alice"), "{}", home.body);
    let account = browser.get(&platform.gw("/account")).await;
    assert_eq!(account.status, StatusCode::OK);
    assert!(account.body.contains("auditor") && account.body.contains("Session ends"));
    assert!(!account.body.contains("<script"), "no script on pages");

    let form = account.inputs();
    let out = browser
        .post_form(
            &platform.gw("/logout"),
            &form,
            &[("origin", &platform.gateway_url)],
        )
        .await;
    let identity_logout = out.location_url();
    assert!(identity_logout.starts_with(&format!("{}/logout?", platform.issuer)));
    let logout_query = query_of(&identity_logout);
    assert!(logout_query.contains_key("id_token_hint"));
    assert_eq!(
        logout_query["post_logout_redirect_uri"],
        platform.gw("/signed-out")
    );
    assert_eq!(
        browser.cookie("echo_session"),
        None,
        "the cookie is cleared"
    );
    let back = browser.get(&identity_logout).await;
    // Identity appends `?` when there is no `state` to add.
    assert_eq!(
        back.location().trim_end_matches('?'),
        platform.gw("/signed-out")
    );
    let signed_out = browser.get(back.location()).await;
    assert_eq!(signed_out.status, StatusCode::OK);
    assert!(signed_out.body.contains("signed out"));
    assert_eq!(platform.gateway_audited("gateway.logout").len(), 1);

    // The old cookie, replayed, is dead here...
    browser.set_cookie("echo_session", &session);
    let me = browser.api_me(&platform).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    assert!(me.header("www-authenticate").is_some());
    // ... and the SSO session at identity ended too: login asks again.
    let again = browser.get(&platform.gw("/login")).await;
    let form = browser.get(again.location()).await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"name="password""#));
}

async fn a_new_session_id_at_every_login(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    // A planted id (session fixation) is replaced, never adopted.
    browser.set_cookie("echo_session", "planted-by-an-attacker");
    platform.sign_in(&browser, None).await;
    let first = browser.cookie("echo_session").unwrap();
    assert_ne!(first, "planted-by-an-attacker");
    platform.sign_in(&browser, None).await;
    let second = browser.cookie("echo_session").unwrap();
    assert_ne!(first, second);
    browser.set_cookie("echo_session", &first);
    assert_eq!(
        browser.api_me(&platform).await.status,
        StatusCode::UNAUTHORIZED,
        "the session replaced by a new login ended"
    );
}

async fn callback_without_a_matching_state_is_400(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    for path in [
        "/callback?code=abc",
        "/callback?state=made-up&code=abc",
        "/callback",
    ] {
        let page = browser.get(&platform.gw(path)).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(page.body.contains("Sign-in expired"), "{}", page.body);
    }

    // A state (and code) carried to another browser: login CSRF.
    let victim = Browser::new();
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    let callback = platform.callback_url(&browser, &authorize).await;
    let refused = victim.get(&callback).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    assert_eq!(victim.cookie("echo_session"), None);
    // The state was spent by the refusal: the attempt is single use.
    assert_eq!(browser.get(&callback).await.status, StatusCode::BAD_REQUEST);
    assert!(!platform.gateway_audited("gateway.login.failure").is_empty());
}

#[tokio::test]
async fn an_id_token_with_another_nonce_is_refused() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    // Same state and PKCE challenge, so only the nonce differs.
    let tampered = with_param(&authorize, "nonce", "attacker-chosen-nonce");
    let page = platform.finish_sign_in(&browser, &tampered).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("Sign-in failed"), "{}", page.body);
    assert_eq!(browser.cookie("echo_session"), None);
    let failures = platform.gateway_audited("gateway.login.failure");
    assert!(
        failures[0].details["reason"]
            .as_str()
            .is_some_and(|r| r.contains("nonce")),
        "{failures:?}"
    );
}

/// Issue 14 §10: RFC 9207 — a callback without `iss`, or with another
/// issuer's, is refused (identity always sends it).
#[tokio::test]
async fn a_callback_without_its_issuer_is_refused() {
    let platform = Platform::start().await;
    for (label, change) in [
        ("without iss", None),
        ("another issuer", Some("https://evil.example")),
    ] {
        let browser = Browser::new();
        let authorize = browser.get(&platform.gw("/login")).await.location_url();
        let callback = platform.callback_url(&browser, &authorize).await;
        let mut url = url::Url::parse(&callback).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .into_owned()
            .filter(|(k, _)| k != "iss")
            .collect();
        url.query_pairs_mut().clear().extend_pairs(&pairs);
        if let Some(iss) = change {
            url.query_pairs_mut().append_pair("iss", iss);
        }
        let page = browser.get(url.as_str()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{label}");
        assert!(
            page.body.contains("Sign-in failed"),
            "{label}: {}",
            page.body
        );
        assert_eq!(browser.cookie("echo_session"), None, "{label}");
    }
    let reasons: Vec<String> = platform
        .gateway_audited("gateway.login.failure")
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(reasons[0].contains("without its issuer"), "{reasons:?}");
    assert!(reasons[1].contains("another issuer"), "{reasons:?}");
}

#[tokio::test]
async fn return_to_must_stay_on_this_site() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    for bad in [
        "https%3A%2F%2Fevil.test%2F",
        "%2F%2Fevil.test",
        "%2F%5Cevil.test",
        "javascript%3Aalert(1)",
    ] {
        let page = browser
            .get(&platform.gw(&format!("/login?return_to={bad}")))
            .await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

async fn logout_needs_the_csrf_token_and_this_origin(backend: Backend) {
    let platform = Platform::start_on(backend).await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let home = browser.get(&platform.gw("/")).await;
    let form = home.inputs();
    assert_eq!(form["csrf"].len(), 43);

    let missing = browser
        .post_form(&platform.gw("/logout"), &BTreeMap::new(), &[])
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    let mut wrong = form.clone();
    wrong.insert("csrf".into(), "A".repeat(43));
    let wrong = browser
        .post_form(&platform.gw("/logout"), &wrong, &[])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    let cross = browser
        .post_form(
            &platform.gw("/logout"),
            &form,
            &[("origin", "http://evil.test")],
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(platform.gateway_audited("gateway.csrf.refused").len(), 3);
    assert_eq!(
        browser.api_me(&platform).await.status,
        StatusCode::OK,
        "refused logouts leave the session alone"
    );
    let done = browser.post_form(&platform.gw("/logout"), &form, &[]).await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
}
