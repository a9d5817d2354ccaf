//! Token exchange (RFC 8693): a client trades a user's token it holds for a
//! token for another audience that still names the user, with itself as
//! the actor.

use echo_core::{Clock, ManualClock};
use echo_identity::admin::{ClientSecret, NewClient, add_client, set_roles};
use echo_identity::exchange::ACCESS_TOKEN_TYPE;
use echo_identity::grant::GRANT_TOKEN_EXCHANGE;
use reqwest::StatusCode;
use serde_json::json;

use crate::accounts::{enrol_from_account_page, submit_code, to_second_step};
use crate::common::*;

const GW: &str = "gw";
const GW_SECRET: &str = "gw-secret-0123456789abcdefghijklmnopqrstuvw";
const GW_REDIRECT: &str = "http://127.0.0.1:9997/cb";

/// Registers `gw` (code flow and token exchange, audiences `gw`, `docs`
/// and `identity`) and answers an access token of the user's for `gw`.
async fn gateway_user_token(server: &Server) -> String {
    register_gw(server).await;
    user_token_with(server, &Browser::new(), None).await
}

async fn register_gw(server: &Server) {
    let new = NewClient {
        id: GW.into(),
        secret: ClientSecret::Provided(GW_SECRET.into()),
        redirect_uris: vec![GW_REDIRECT.into()],
        grants: vec!["authorization_code".into(), GRANT_TOKEN_EXCHANGE.into()],
        audiences: vec![GW.into(), "docs".into(), "identity".into()],
        scopes: vec!["openid".into()],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    add_client(&*server.store, &*server.audit, &*server.clock, new)
        .await
        .expect("add gw");
}

/// The user's access token for `gw` from a sign-in in `browser`; with
/// `totp`, a fresh sign-in that passes the second factor with its secret
/// at `clock`'s time.
async fn user_token_with(
    server: &Server,
    browser: &Browser,
    totp: Option<(&str, &ManualClock)>,
) -> String {
    let pkce = Pkce::new();
    let params = Params::code_flow(GW, GW_REDIRECT, &pkce).set("scope", "openid");
    let code = match totp {
        None => browser.login_for_code(server, &params).await,
        Some((secret, clock)) => {
            let params = params.clone().set("prompt", "login");
            let step = to_second_step(server, browser, &params).await;
            let code = echo_testkit::totp::code(secret, clock.now());
            let page = submit_code(server, browser, &step, &code).await;
            code_from(server, &page, &params)
        }
    };
    let page = token_request(
        server,
        ClientAuth::Basic(GW, GW_SECRET),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", GW_REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()["access_token"].as_str().unwrap().to_owned()
}

async fn exchange(server: &Server, auth: ClientAuth<'_>, token: &str, audience: &str) -> Page {
    token_request(
        server,
        auth,
        &[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("audience", audience),
        ],
    )
    .await
}

/// An exchange for `audience` asking for scope `echo.admin`.
async fn admin_exchange(server: &Server, token: &str, audience: &str) -> Page {
    token_request(
        server,
        ClientAuth::Basic(GW, GW_SECRET),
        &[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", token),
            ("subject_token_type", ACCESS_TOKEN_TYPE),
            ("audience", audience),
            ("scope", "echo.admin"),
        ],
    )
    .await
}

/// Issue 17's console: the gateway trades an admin's token for the admin
/// API's, only for audience `identity`, only for an active admin whose
/// sign-in came after confirming a second factor; the API then acts as
/// that admin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_scope_is_exchanged_only_for_an_admin_signed_in_with_a_second_factor() {
    let (server, clock) = Server::start_with_manual_clock().await;
    register_gw(&server).await;
    // A sign-in before any second factor, kept.
    let early = user_token_with(&server, &Browser::new(), None).await;
    let page = admin_exchange(&server, &early, "identity").await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");

    let browser = Browser::new();
    let (secret, _) = enrol_from_account_page(&server, &clock, &browser).await;
    set_roles(&*server.store, &*server.audit, USER, vec!["admin".into()])
        .await
        .unwrap();
    // Now an admin with a second factor, but that sign-in had none.
    let page = admin_exchange(&server, &early, "identity").await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");

    clock.advance(30);
    let token = user_token_with(&server, &browser, Some((&secret, &clock))).await;
    let page = admin_exchange(&server, &token, "docs").await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");
    let page = admin_exchange(&server, &token, "identity").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["scope"], "echo.admin", "that scope alone");
    let admin_token = page.json()["access_token"].as_str().unwrap().to_owned();
    let users = no_redirect_client()
        .get(server.url("/admin/v1/users"))
        .bearer_auth(&admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(users.status(), StatusCode::OK);
    // Without asking, the scope is not passed on, as before.
    let plain = exchange(
        &server,
        ClientAuth::Basic(GW, GW_SECRET),
        &token,
        "identity",
    )
    .await;
    assert_eq!(plain.json()["scope"], "openid", "{}", plain.body);

    // Once the role goes, so does the exchange.
    set_roles(&*server.store, &*server.audit, USER, vec![])
        .await
        .unwrap();
    let page = admin_exchange(&server, &token, "identity").await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_keeps_the_user_and_names_the_client_as_actor() {
    let server = Server::start().await;
    let user_token = gateway_user_token(&server).await;
    let page = exchange(
        &server,
        ClientAuth::Basic(GW, GW_SECRET),
        &user_token,
        "docs",
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let answer = page.json();
    assert_eq!(answer["issued_token_type"], ACCESS_TOKEN_TYPE);
    assert_eq!(answer["token_type"], "Bearer");
    let issued = answer["access_token"].as_str().unwrap();
    let (header, claims) = decode_jwt(issued);
    assert_eq!(header["typ"], "at+jwt");
    let (_, subject) = decode_jwt(&user_token);
    assert_eq!(claims["sub"], subject["sub"]);
    assert_eq!(claims["aud"], "docs");
    assert_eq!(claims["act"], json!({"sub": GW}));
    assert_eq!(claims["roles"], json!(["auditor"]));
    assert!(claims["exp"].as_i64() <= subject["exp"].as_i64());
    // The issued token is good for its audience, and only there.
    assert_eq!(verify(&server, issued, "docs").await["valid"], true);
    assert_eq!(verify(&server, issued, GW).await["valid"], false);
    assert_eq!(server.audited("token.exchanged"), 1);
    let discovered = discovery(&server).await.json();
    assert!(
        discovered["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&json!(GRANT_TOKEN_EXCHANGE))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_exchange_is_refused_outside_its_policy() {
    let server = Server::start().await;
    let user_token = gateway_user_token(&server).await;
    // A client not registered for the grant.
    let page = exchange(
        &server,
        ClientAuth::Basic(WEB, WEB_SECRET),
        &user_token,
        "audit",
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "unauthorized_client");
    // An audience the client may not ask for.
    let page = exchange(
        &server,
        ClientAuth::Basic(GW, GW_SECRET),
        &user_token,
        "audit",
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_target");
    // A token that was not given to the client (the web client's).
    let (_, web) = web_tokens(&server).await;
    let foreign = web["access_token"].as_str().unwrap();
    let page = exchange(&server, ClientAuth::Basic(GW, GW_SECRET), foreign, "docs").await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
    // Garbage, and a missing subject token type.
    let page = exchange(
        &server,
        ClientAuth::Basic(GW, GW_SECRET),
        "not-a-jwt",
        "docs",
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
    let page = token_request(
        &server,
        ClientAuth::Basic(GW, GW_SECRET),
        &[
            ("grant_type", GRANT_TOKEN_EXCHANGE),
            ("subject_token", &user_token),
            ("audience", "docs"),
        ],
    )
    .await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
}
