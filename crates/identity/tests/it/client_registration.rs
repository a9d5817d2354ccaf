//! RFC 7591 dynamic client registration (`POST /oauth2/register`): off by
//! default, for holders of the initial access token only, metadata checked
//! as a public provider checks it, and a registered client that works.

use echo_identity::{IdentityConfig, InitialAccessToken};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const REGISTRATION_TOKEN: &str = "initial-access-token-0123456789abcdefghij";
const RP_REDIRECT: &str = "https://rp.example/cb";

fn open(config: &mut IdentityConfig) {
    config.client_registration = Some(InitialAccessToken::new(REGISTRATION_TOKEN).expect("token"));
}

async fn open_server() -> Server {
    Server::start_configured(open).await
}

/// How many clients are registered.
async fn clients(server: &Server) -> usize {
    server.store.list_clients().await.expect("clients").len()
}

/// POST /oauth2/register with `body` as JSON and `token` as bearer.
async fn register(server: &Server, token: Option<&str>, body: &Value) -> Page {
    register_raw(server, token, body.to_string()).await
}

async fn register_raw(server: &Server, token: Option<&str>, body: String) -> Page {
    let mut request = no_redirect_client()
        .post(server.url("/oauth2/register"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    read(request.send().await.expect("registration request")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_is_off_by_default_and_not_advertised() {
    let server = Server::start().await;
    let page = register(
        &server,
        Some(REGISTRATION_TOKEN),
        &json!({"redirect_uris": [RP_REDIRECT]}),
    )
    .await;
    assert_eq!(page.status, StatusCode::NOT_FOUND, "{}", page.body);
    let document = discovery(&server).await.json();
    assert!(document.get("registration_endpoint").is_none());
    assert_eq!(clients(&server).await, 3, "nothing registered");

    let open = open_server().await;
    let document = discovery(&open).await.json();
    assert_eq!(
        document["registration_endpoint"],
        open.url("/oauth2/register")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_initial_access_token_registers() {
    let server = open_server().await;
    let body = json!({"redirect_uris": [RP_REDIRECT]});
    let missing = register(&server, None, &body).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.body);
    assert_eq!(missing.www_authenticate(), Some(r#"Bearer realm="echo""#));
    let wrong = &REGISTRATION_TOKEN[..REGISTRATION_TOKEN.len() - 1];
    for token in [wrong, "x", &format!("{REGISTRATION_TOKEN}x")] {
        let refused = register(&server, Some(token), &body).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
        assert!(
            refused
                .www_authenticate()
                .is_some_and(|c| c.contains(r#"error="invalid_token""#)),
            "{:?}",
            refused.www_authenticate()
        );
    }
    // The token is checked first: a refused caller learns nothing of the
    // metadata's checks.
    let garbage = register_raw(&server, None, "not json".into()).await;
    assert_eq!(garbage.status, StatusCode::UNAUTHORIZED);
    assert!(server.audited("access.denied") >= 1);
    assert_eq!(
        server.audited("admin.client.created"),
        3,
        "the fixtures only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_metadata_gets_the_rfc_7591_error() {
    let server = open_server().await;
    let token = Some(REGISTRATION_TOKEN);
    for (body, error) in [
        (
            json!({"redirect_uris": ["http://rp.example/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["https://rp.example/cb#x"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": ["com.example.app:/cb"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"grant_types": ["authorization_code"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "post_logout_redirect_uris": ["http://rp.example/"]}),
            "invalid_redirect_uri",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "grant_types": ["password"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "response_types": ["id_token"]}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "token_endpoint_auth_method": "client_secret_jwt"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": [RP_REDIRECT], "scope": "openid echo.admin"}),
            "invalid_client_metadata",
        ),
        (
            json!({"redirect_uris": RP_REDIRECT}),
            "invalid_client_metadata",
        ),
    ] {
        let page = register(&server, token, &body).await;
        assert_oauth_error(&page, StatusCode::BAD_REQUEST, error);
        assert!(
            page.json()["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "{body}: {}",
            page.body
        );
    }
    let not_json = register_raw(&server, token, "{".into()).await;
    assert_oauth_error(
        &not_json,
        StatusCode::BAD_REQUEST,
        "invalid_client_metadata",
    );
    assert_eq!(clients(&server).await, 3, "nothing registered");
    let refusals = server
        .audit
        .events()
        .into_iter()
        .filter(|e| {
            e.action == "admin.client.created" && e.actor.as_deref() == Some("client_registration")
        })
        .count();
    assert_eq!(refusals, 12, "every refusal audited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_registrations_are_refused() {
    let server = open_server().await;
    let token = Some(REGISTRATION_TOKEN);
    let many: Vec<String> = (0..17).map(|i| format!("https://rp.example/{i}")).collect();
    let page = register(&server, token, &json!({ "redirect_uris": many })).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
    let long = format!("https://rp.example/{}", "a".repeat(2100));
    let page = register(&server, token, &json!({ "redirect_uris": [long] })).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_redirect_uri");
    let scopes = vec!["s"; 40].join(" ");
    let body = json!({"redirect_uris": [RP_REDIRECT], "scope": scopes});
    let page = register(&server, token, &body).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_client_metadata");
    let huge = json!({"redirect_uris": [RP_REDIRECT], "client_name": "x".repeat(70_000)});
    let page = register(&server, token, &huge).await;
    assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(clients(&server).await, 3, "nothing registered");
}

/// A relying party registers itself, then signs a user in with the code
/// flow and its new secret; its secret is answered once and stored hashed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_client_signs_users_in() {
    let server = open_server().await;
    let redirect = "http://127.0.0.1:9995/cb";
    let page = register(
        &server,
        Some(REGISTRATION_TOKEN),
        &json!({
            "redirect_uris": [redirect],
            "grant_types": ["authorization_code", "refresh_token"],
            "client_name": "ignored, as RFC 7591 §2 allows",
            "scope": "openid profile offline_access",
        }),
    )
    .await;
    assert_eq!(page.status, StatusCode::CREATED, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    let client = page.json();
    let id = client["client_id"].as_str().expect("client_id").to_owned();
    let secret = client["client_secret"].as_str().expect("secret").to_owned();
    assert_eq!(client["client_secret_expires_at"], 0);
    assert!(client["client_id_issued_at"].as_i64().unwrap() > 0);
    assert_eq!(client["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(client["response_types"], json!(["code"]));
    assert_eq!(client["redirect_uris"], json!([redirect]));
    assert!(client.get("client_name").is_none(), "not kept, not claimed");

    let created = server
        .audit
        .events()
        .into_iter()
        .rfind(|e| e.action == "admin.client.created")
        .expect("audited");
    assert_eq!(created.actor.as_deref(), Some("client_registration"));
    assert_eq!(created.details["client_id"], id.as_str());
    assert!(created.ip.is_some(), "the caller's address");

    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(&id, redirect, &pkce).set("scope", "openid offline_access");
    let code = browser.login_for_code(&server, &params).await;
    let tokens = token_request(
        &server,
        ClientAuth::Basic(&id, &secret),
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    let tokens = tokens.json();
    let (_, id_token) = decode_jwt(tokens["id_token"].as_str().unwrap());
    assert_eq!(id_token["aud"], id.as_str());
    assert!(tokens["refresh_token"].is_string());
    let info = userinfo(&server, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(info.status, StatusCode::OK, "{}", info.body);
    assert_eq!(info.json()["preferred_username"], USER);

    // No audience of Echo's services without an operator.
    let denied = token_request(
        &server,
        ClientAuth::Basic(&id, &secret),
        &[("grant_type", "client_credentials"), ("audience", "audit")],
    )
    .await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST, "{}", denied.body);
}

/// A public client (`none`) registers without a secret, and a service
/// with client credentials gets its token once an operator gives it an
/// audience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_and_service_clients_register() {
    let (server, clock) = Server::start_manual(open).await;
    let public = register(
        &server,
        Some(REGISTRATION_TOKEN),
        &json!({"redirect_uris": ["http://[::1]:7000/cb"], "token_endpoint_auth_method": "none"}),
    )
    .await;
    assert_eq!(public.status, StatusCode::CREATED, "{}", public.body);
    assert!(public.json().get("client_secret").is_none());

    let service = register(
        &server,
        Some(REGISTRATION_TOKEN),
        &json!({"grant_types": ["client_credentials"], "token_endpoint_auth_method": "client_secret_post"}),
    )
    .await;
    assert_eq!(service.status, StatusCode::CREATED, "{}", service.body);
    let service = service.json();
    assert_eq!(service["response_types"], json!([]));
    let id = service["client_id"].as_str().unwrap().to_owned();
    let secret = service["client_secret"].as_str().unwrap().to_owned();
    let form = [("grant_type", "client_credentials"), ("audience", "docs")];
    let before = token_request(&server, ClientAuth::Post(&id, &secret), &form).await;
    assert_oauth_error(&before, StatusCode::BAD_REQUEST, "invalid_target");
    let mut registration =
        echo_identity::admin::Registration::of(&server.store.client(&id).await.unwrap().unwrap());
    registration.audiences.push("docs".into());
    echo_identity::admin::update_client(&*server.store, &*server.audit, &id, registration)
        .await
        .expect("an operator adds the audience");
    clock.advance(3); // past the registration cache
    let after = token_request(&server, ClientAuth::Post(&id, &secret), &form).await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.body);
}
