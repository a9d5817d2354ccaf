//! An independent relying party (the `openidconnect` crate) drives the
//! running provider, and services verify its access tokens with
//! `echo-verify` against the published JWKS. The flows are functions of the
//! server so they run on SQLite and on PostgreSQL alike.

use std::sync::Arc;

use echo_verify::{Expectations, HttpJwks, Verifier, VerifierOptions};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::reqwest as oidc_reqwest;
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;

use crate::common::*;

fn oidc_http() -> oidc_reqwest::Client {
    // In a workspace build reqwest 0.12 has TLS without a crypto provider of
    // its own (echod's tests ask for it so, to keep ring out): name ours.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    oidc_reqwest::ClientBuilder::new()
        .redirect(oidc_reqwest::redirect::Policy::none())
        .build()
        .expect("openidconnect http client")
}

async fn discover(server: &Server, http: &oidc_reqwest::Client) -> CoreProviderMetadata {
    let issuer = IssuerUrl::new(server.issuer.clone()).expect("issuer URL");
    CoreProviderMetadata::discover_async(issuer, http)
        .await
        .expect("discovery by the relying party")
}

/// Authorization code + PKCE S256, end to end, as a third-party RP does it.
pub async fn relying_party_code_flow(server: &Server) {
    let http = oidc_http();
    let metadata = discover(server, &http).await;
    assert_eq!(metadata.issuer().as_str(), server.issuer);
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(WEB.into()),
        Some(ClientSecret::new(WEB_SECRET.into())),
    )
    .set_redirect_uri(RedirectUrl::new(WEB_REDIRECT.into()).expect("redirect URL"));

    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();

    // The user agent: GET the authorization URL, fill in the form over HTTP.
    let browser = Browser::new();
    let form = browser.get(auth_url.as_str()).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.is_login_form(), "{}", form.body);
    let hidden = form.hidden_fields();
    let field = |name: &str| {
        hidden
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert!(field("csrf").is_some_and(|c| !c.is_empty()), "CSRF field");
    assert_eq!(
        field("state").as_deref(),
        Some(state.secret().as_str()),
        "state survives HTML escaping"
    );
    assert_eq!(field("nonce").as_deref(), Some(nonce.secret().as_str()));
    assert_eq!(field("code_challenge_method").as_deref(), Some("S256"));
    let csrf_cookie = form.set_cookie("echo_csrf").expect("CSRF cookie");
    assert!(
        csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"),
        "{csrf_cookie}"
    );

    let back = browser.submit_login(server, &form, USER, PASSWORD).await;
    let sso_cookie = back.set_cookie("echo_sso").expect("SSO cookie on login");
    assert!(
        sso_cookie.contains("HttpOnly") && sso_cookie.contains("SameSite=Lax"),
        "{sso_cookie}"
    );
    let query = back.redirect_to(WEB_REDIRECT);
    assert_eq!(query.get("state"), Some(state.secret()), "state");
    assert_eq!(query.get("iss"), Some(&server.issuer), "RFC 9207 iss");
    let code = query.get("code").expect("code").clone();

    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .expect("token endpoint in discovery")
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange by the relying party");
    let id_token = tokens.id_token().expect("ID token");
    let id_verifier = client.id_token_verifier();
    let claims = id_token
        .claims(&id_verifier, &nonce)
        .expect("ID token verifies with the discovered JWKS");
    assert_eq!(claims.issuer().as_str(), server.issuer);
    assert_eq!(claims.subject().as_str(), server.user_id);
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(USER));
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some(EMAIL),
        "email scope was granted"
    );
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&id_verifier).expect("key"),
    )
    .expect("at_hash");
    assert_eq!(
        claims.access_token_hash(),
        Some(&at_hash),
        "at_hash binds the access token"
    );

    // The nonce is checked: the same ID token under another nonce fails.
    assert!(
        id_token
            .claims(&id_verifier, &Nonce::new("other".into()))
            .is_err()
    );

    let info: openidconnect::core::CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .expect("userinfo endpoint in discovery")
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject().as_str(), server.user_id);
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some(USER));

    // A service of audience `audit` accepts the same access token.
    let verifier = jwks_verifier(server).await;
    let access = verifier
        .verify(
            tokens.access_token().secret(),
            &Expectations::access_token("audit"),
        )
        .await
        .expect("access token verifies for audit");
    assert_eq!(access.sub, server.user_id);
    assert_eq!(access.client_id.as_deref(), Some(WEB));
    assert_eq!(access.roles, vec!["auditor".to_owned()]);
    assert!(server.audited("token.issued") >= 1);
}

/// Client credentials through the RP library, then through plain HTTP.
pub async fn client_credentials_flow(server: &Server) {
    let http = oidc_http();
    let client = CoreClient::from_provider_metadata(
        discover(server, &http).await,
        ClientId::new(SVC.into()),
        Some(ClientSecret::new(SVC_SECRET.into())),
    );
    let tokens = client
        .exchange_client_credentials()
        .expect("token endpoint")
        .add_extra_param("audience", "audit")
        .request_async(&http)
        .await
        .expect("client credentials via openidconnect");
    let verifier = jwks_verifier(server).await;
    let claims = verifier
        .verify(
            tokens.access_token().secret(),
            &Expectations::access_token("audit"),
        )
        .await
        .expect("service token verifies against the JWKS");
    assert_eq!(claims.sub, SVC);
    assert_eq!(claims.client_id.as_deref(), Some(SVC));
    assert!(claims.has_scope(SVC_SCOPE));
    assert!(tokens.id_token().is_none(), "no ID token without a user");

    let page = token_request(
        server,
        ClientAuth::Basic(SVC, SVC_SECRET),
        &[("grant_type", "client_credentials"), ("audience", "audit")],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.header("cache-control"),
        Some("no-store"),
        "token responses are not cached"
    );
    let body = page.json();
    assert_eq!(body["token_type"], "Bearer");
    assert!(
        body["expires_in"]
            .as_i64()
            .is_some_and(|s| s > 0 && s <= 900)
    );
    let token = body["access_token"].as_str().expect("access_token");
    let (header, _) = decode_jwt(token);
    assert_eq!(header["typ"], "at+jwt", "RFC 9068 typ");
    let claims = verifier
        .verify(token, &Expectations::access_token("audit"))
        .await
        .expect("verifies");
    assert_eq!(claims.sub, SVC);
    assert_eq!(
        verifier
            .verify(token, &Expectations::access_token("billing"))
            .await
            .unwrap_err(),
        echo_verify::VerifyError::WrongAudience
    );
}

async fn jwks_verifier(server: &Server) -> Verifier {
    let jwks = HttpJwks::discover(&server.issuer, &Default::default())
        .await
        .expect("JWKS discovery");
    Verifier::new(
        server.issuer.clone(),
        Arc::new(jwks),
        VerifierOptions::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relying_party_flows_on_sqlite() {
    let server = Server::start().await;
    relying_party_code_flow(&server).await;
    client_credentials_flow(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relying_party_flows_on_postgres() {
    let db = echo_testkit::PgTestDb::create("identity_relying_party_flows").await;
    {
        let dir = echo_testkit::data_dir();
        let store = echo_identity_store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .expect("open postgres store");
        let server =
            Server::start_with(store, Arc::new(echo_core::SystemClock), Some(dir), |_| {}).await;
        relying_party_code_flow(&server).await;
        client_credentials_flow(&server).await;
        sso_and_replay_on(&server).await;
    }
    db.drop_db().await;
}

/// The store-dependent protocol guarantees: SSO sessions and single-use codes.
async fn sso_and_replay_on(server: &Server) {
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let code = browser.login_for_code(server, &params).await;
    assert_eq!(
        redeem(server, &code, Some(&pkce.verifier)).await.status,
        StatusCode::OK
    );
    assert_oauth_error(
        &redeem(server, &code, Some(&pkce.verifier)).await,
        StatusCode::BAD_REQUEST,
        "invalid_grant",
    );
    assert_eq!(server.audited("oauth.code.replayed"), 1);
    let code = browser.login_for_code(server, &params).await;
    let attempts = redeem_concurrently(server, &code, &pkce.verifier).await;
    assert_eq!(
        attempts
            .iter()
            .filter(|p| p.status == StatusCode::OK)
            .count(),
        1,
        "one winner"
    );
    assert_eq!(server.audited("oauth.code.replayed"), 4);
    let spa = Params::code_flow(SPA, SPA_REDIRECT, &pkce);
    let page = browser.get(&server.authorize_url(&spa)).await;
    code_from(server, &page, &spa);
}
