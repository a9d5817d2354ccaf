//! Token exchange (RFC 8693): a client trades a user's token it holds for a
//! token for another audience that still names the user, with itself as
//! the actor.

use echo_identity::admin::{ClientSecret, NewClient, add_client};
use echo_identity::exchange::ACCESS_TOKEN_TYPE;
use echo_identity::grant::GRANT_TOKEN_EXCHANGE;
use reqwest::StatusCode;
use serde_json::json;

use crate::common::*;

const GW: &str = "gw";
const GW_SECRET: &str = "gw-secret-0123456789abcdefghijklmnopqrstuvw";
const GW_REDIRECT: &str = "http://127.0.0.1:9997/cb";

/// Registers `gw` (code flow and token exchange, audiences `gw` and
/// `docs`) and answers an access token of the user's for `gw`.
async fn gateway_user_token(server: &Server) -> String {
    let new = NewClient {
        id: GW.into(),
        secret: ClientSecret::Provided(GW_SECRET.into()),
        redirect_uris: vec![GW_REDIRECT.into()],
        grants: vec!["authorization_code".into(), GRANT_TOKEN_EXCHANGE.into()],
        audiences: vec![GW.into(), "docs".into()],
        scopes: vec!["openid".into()],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    add_client(&*server.store, &*server.audit, &*server.clock, new)
        .await
        .expect("add gw");
    let pkce = Pkce::new();
    let params = Params::code_flow(GW, GW_REDIRECT, &pkce).set("scope", "openid");
    let code = Browser::new().login_for_code(server, &params).await;
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
