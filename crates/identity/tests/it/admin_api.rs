//! The admin API (`/admin/v1/…`): who may call it (a client registered
//! for `echo.admin`, or an admin who signed in with a second factor, and
//! nobody else), and what it does with users, clients, invitations and
//! keys: problems for errors, pages, ETags and `If-Match`, audited as the
//! caller.

use echo_core::Clock;
use echo_identity::admin::{self, ClientSecret, NewClient, Registration};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::accounts::{enrol_from_account_page, submit_code, to_second_step, totp};
use crate::common::*;

const OPS: &str = "ops";
const OPS_SECRET: &str = "ops-secret-0123456789abcdefghijklmnopqrstuv";
/// A web console whose users may ask for `echo.admin`.
const CONSOLE: &str = "console";
const CONSOLE_SECRET: &str = "console-secret-0123456789abcdefghijklmnopq";
const CONSOLE_REDIRECT: &str = "http://127.0.0.1:9997/cb";

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn register(server: &Server, id: &str, secret: &str, grant: &str, scopes: &[&str]) {
    let code_flow = grant == "authorization_code";
    let new = NewClient {
        id: id.into(),
        secret: ClientSecret::Provided(secret.into()),
        redirect_uris: if code_flow {
            strings(&[CONSOLE_REDIRECT])
        } else {
            vec![]
        },
        grants: strings(&[grant]),
        audiences: strings(&["identity", "audit"]),
        scopes: strings(scopes),
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    admin::add_client(&*server.store, &*server.audit, &*server.clock, new)
        .await
        .expect("add client");
}

/// `ops`: a service registered for the admin API.
async fn add_ops(server: &Server) {
    register(
        server,
        OPS,
        OPS_SECRET,
        "client_credentials",
        &["echo.admin"],
    )
    .await;
}

/// A server with [`add_ops`].
async fn ops_server() -> Server {
    let server = Server::start().await;
    add_ops(&server).await;
    server
}

async fn service_token(server: &Server, id: &str, secret: &str, form: &[(&str, &str)]) -> Page {
    let mut form = form.to_vec();
    form.push(("grant_type", "client_credentials"));
    token_request(server, ClientAuth::Basic(id, secret), &form).await
}

async fn ops_token(server: &Server) -> String {
    let page = service_token(
        server,
        OPS,
        OPS_SECRET,
        &[("audience", "identity"), ("scope", "echo.admin")],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()["access_token"].as_str().unwrap().to_owned()
}

/// A request to the admin API.
async fn api(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
    if_match: Option<&str>,
) -> Page {
    let mut request = no_redirect_client().request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    read(request.send().await.expect("admin request")).await
}

async fn get(server: &Server, path: &str, token: &str) -> Page {
    api(server, reqwest::Method::GET, path, Some(token), None, None).await
}

fn assert_problem(page: &Page, status: StatusCode, code: &str) {
    assert_eq!(page.status, status, "{}", page.body);
    assert_eq!(
        page.header("content-type"),
        Some("application/problem+json"),
        "{}",
        page.body
    );
    assert_eq!(
        page.json()["type"],
        format!("urn:echo:problem:{code}"),
        "{}",
        page.body
    );
}

fn etag(page: &Page) -> String {
    page.header("etag").expect("ETag").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_listed_created_and_changed_with_if_match_as_the_caller() {
    let server = ops_server().await;
    let token = ops_token(&server).await;
    use reqwest::Method;

    let created = api(
        &server,
        Method::POST,
        "/admin/v1/users",
        Some(&token),
        Some(json!({"username": "bob", "password": "a long enough passphrase", "email": "Bob@example.test"})),
        None,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json()["state"], "active");
    assert!(created.json().get("password_hash").is_none());
    let again = api(
        &server,
        Method::POST,
        "/admin/v1/users",
        Some(&token),
        Some(json!({"username": "bob", "password": "a long enough passphrase"})),
        None,
    )
    .await;
    assert_problem(&again, StatusCode::CONFLICT, "conflict");

    // pages and search
    let first = get(&server, "/admin/v1/users?limit=1", &token).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.json()["items"][0]["username"], USER);
    let cursor = first.json()["next_cursor"].as_str().unwrap().to_owned();
    let second = get(
        &server,
        &format!("/admin/v1/users?limit=1&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(second.json()["items"][0]["username"], "bob");
    assert!(second.json().get("next_cursor").is_none(), "the last page");
    let found = get(&server, "/admin/v1/users?search=BOB%40", &token).await;
    assert_eq!(found.json()["items"].as_array().unwrap().len(), 1);
    for bad in [
        "/admin/v1/users?limit=0",
        "/admin/v1/users?limit=201",
        "/admin/v1/users?limit=x",
        "/admin/v1/users?cursor=%21%21",
        "/admin/v1/users?colour=red",
    ] {
        assert_problem(
            &get(&server, bad, &token).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    assert_problem(
        &get(&server, "/admin/v1/users/nobody", &token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // If-Match on updates
    let bob = get(&server, "/admin/v1/users/bob", &token).await;
    let tag = etag(&bob);
    let change = json!({"roles": ["auditor"]});
    let path = "/admin/v1/users/bob";
    let missing = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(change.clone()),
        None,
    )
    .await;
    assert_problem(
        &missing,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    );
    let stale = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(change.clone()),
        Some("\"old\""),
    )
    .await;
    assert_problem(
        &stale,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    );
    let changed = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(change.clone()),
        Some(&tag),
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert_eq!(changed.json()["roles"], json!(["auditor"]));
    assert_ne!(etag(&changed), tag, "a change changes the ETag");
    let replayed = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(change),
        Some(&tag),
    )
    .await;
    assert_problem(
        &replayed,
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
    );
    let unknown = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(json!({"admin": true})),
        Some("*"),
    )
    .await;
    assert_problem(&unknown, StatusCode::BAD_REQUEST, "bad_request");
    let backwards = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(json!({"state": "invited"})),
        Some("*"),
    )
    .await;
    assert_problem(&backwards, StatusCode::CONFLICT, "conflict");
    let suspended = api(
        &server,
        Method::PATCH,
        path,
        Some(&token),
        Some(json!({"state": "suspended"})),
        Some("*"),
    )
    .await;
    assert_eq!(suspended.json()["state"], "suspended", "{}", suspended.body);

    // invitations, activated with a password
    let invited = api(
        &server,
        Method::POST,
        "/admin/v1/invitations",
        Some(&token),
        Some(json!({"username": "carol", "roles": ["auditor"]})),
        None,
    )
    .await;
    assert_eq!(invited.status, StatusCode::CREATED, "{}", invited.body);
    assert_eq!(invited.json()["state"], "invited");
    let active = api(
        &server,
        Method::PATCH,
        "/admin/v1/users/carol",
        Some(&token),
        Some(json!({"state": "active", "password": "carol's own long passphrase"})),
        Some(&etag(&invited)),
    )
    .await;
    assert_eq!(active.json()["state"], "active", "{}", active.body);
    for action in ["unlock", "reset-mfa"] {
        let done = api(
            &server,
            Method::POST,
            &format!("/admin/v1/users/carol/{action}"),
            Some(&token),
            None,
            None,
        )
        .await;
        assert_eq!(
            done.status,
            StatusCode::NO_CONTENT,
            "{action}: {}",
            done.body
        );
    }
    let deleted = api(
        &server,
        Method::DELETE,
        "/admin/v1/users/carol",
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(
        get(&server, "/admin/v1/users/carol", &token).await.json()["state"],
        "deleted"
    );

    // audited as the caller
    let events = server.audit.events();
    for action in [
        "admin.user.created",
        "admin.user.roles_set",
        "admin.user.state_changed",
    ] {
        let event = events
            .iter()
            .rev()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("no {action}"));
        assert_eq!(event.actor.as_deref(), Some(OPS), "{action}");
        assert!(event.ip.is_some(), "{action}: the caller's address");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_created_updated_and_deleted_and_keys_rotated() {
    let server = ops_server().await;
    let token = ops_token(&server).await;
    use reqwest::Method;

    let created = api(
        &server,
        Method::POST,
        "/admin/v1/clients",
        Some(&token),
        Some(json!({"id": "app", "auth": "client_secret", "grants": ["client_credentials"], "audiences": ["audit"]})),
        None,
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let secret = created.json()["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(created.json()["auth"], "confidential");
    assert_eq!(
        service_token(&server, "app", &secret, &[]).await.status,
        StatusCode::OK
    );
    let refused = api(
        &server,
        Method::POST,
        "/admin/v1/clients",
        Some(&token),
        Some(json!({"id": "bad", "auth": "public", "grants": ["client_credentials"]})),
        None,
    )
    .await;
    assert_problem(&refused, StatusCode::BAD_REQUEST, "bad_request");

    let listed = get(&server, "/admin/v1/clients?limit=200", &token).await;
    let ids: Vec<String> = listed.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        ids.contains(&"app".into()) && ids.contains(&OPS.into()),
        "{ids:?}"
    );

    let app = get(&server, "/admin/v1/clients/app", &token).await;
    let registration =
        json!({"grants": ["client_credentials"], "audiences": ["docs"], "scopes": ["docs.read"]});
    let path = "/admin/v1/clients/app";
    let missing = api(
        &server,
        Method::PUT,
        path,
        Some(&token),
        Some(registration.clone()),
        None,
    )
    .await;
    assert_problem(
        &missing,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    );
    let updated = api(
        &server,
        Method::PUT,
        path,
        Some(&token),
        Some(registration),
        Some(&etag(&app)),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.body);
    assert_eq!(updated.json()["audiences"], json!(["docs"]));
    let old_audience = service_token(&server, "app", &secret, &[("audience", "audit")]).await;
    assert_eq!(
        old_audience.status,
        StatusCode::BAD_REQUEST,
        "{}",
        old_audience.body
    );
    let invalid = api(
        &server,
        Method::PUT,
        path,
        Some(&token),
        Some(json!({"grants": ["authorization_code"]})),
        Some("*"),
    )
    .await;
    assert_problem(&invalid, StatusCode::BAD_REQUEST, "bad_request");

    let rotated = api(
        &server,
        Method::POST,
        "/admin/v1/clients/app/secret",
        Some(&token),
        Some(json!({"overlap_seconds": 0})),
        None,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::OK, "{}", rotated.body);
    let new_secret = rotated.json()["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(
        service_token(&server, "app", &new_secret, &[]).await.status,
        StatusCode::OK
    );

    let deleted = api(&server, Method::DELETE, path, Some(&token), None, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    assert_eq!(
        service_token(&server, "app", &new_secret, &[]).await.status,
        StatusCode::UNAUTHORIZED,
        "a deleted client is refused at once"
    );
    assert_problem(
        &api(&server, Method::DELETE, path, Some(&token), None, None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let event = server
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "admin.client.deleted")
        .expect("audited");
    assert_eq!(event.actor.as_deref(), Some(OPS));

    let keys = get(&server, "/admin/v1/keys", &token).await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.body);
    let before = keys.json()["items"].as_array().unwrap().len();
    assert!(before >= 1);
    let rotated = api(
        &server,
        Method::POST,
        "/admin/v1/keys/rotate",
        Some(&token),
        Some(json!({"alg": "ES256"})),
        None,
    )
    .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{}", rotated.body);
    let kid = rotated.json()[0]["kid"].as_str().unwrap().to_owned();
    let revoked = api(
        &server,
        Method::POST,
        &format!("/admin/v1/keys/{kid}/revoke"),
        Some(&token),
        None,
        None,
    )
    .await;
    assert_eq!(revoked.json()["state"], "revoked", "{}", revoked.body);
    let bad_alg = api(
        &server,
        Method::POST,
        "/admin/v1/keys/rotate",
        Some(&token),
        Some(json!({"alg": "none"})),
        None,
    )
    .await;
    assert_problem(&bad_alg, StatusCode::BAD_REQUEST, "bad_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_registered_clients_and_admins_with_a_second_factor_get_echo_admin() {
    let (server, clock) = Server::start_with_manual_clock().await;
    add_ops(&server).await;
    register(
        &server,
        CONSOLE,
        CONSOLE_SECRET,
        "authorization_code",
        &["openid", "echo.admin"],
    )
    .await;
    register(
        &server,
        "reader",
        OPS_SECRET,
        "client_credentials",
        &["audit.read"],
    )
    .await;

    // no token, a malformed one
    let none = api(
        &server,
        reqwest::Method::GET,
        "/admin/v1/users",
        None,
        None,
        None,
    )
    .await;
    assert_problem(&none, StatusCode::UNAUTHORIZED, "invalid_token");
    assert!(none.www_authenticate().is_some());
    assert_eq!(
        get(&server, "/admin/v1/users", "not-a-jwt").await.status,
        StatusCode::UNAUTHORIZED
    );

    // a client not registered for the scope or the audience cannot get it
    let asked = service_token(
        &server,
        SVC,
        SVC_SECRET,
        &[("audience", "identity"), ("scope", "echo.admin")],
    )
    .await;
    assert_eq!(asked.status, StatusCode::BAD_REQUEST, "{}", asked.body);
    let asked = service_token(
        &server,
        "reader",
        OPS_SECRET,
        &[("audience", "identity"), ("scope", "echo.admin")],
    )
    .await;
    assert_eq!(asked.json()["error"], "invalid_scope", "{}", asked.body);
    // its own token for identity, without the scope: forbidden
    let reader = service_token(&server, "reader", OPS_SECRET, &[("audience", "identity")]).await;
    let reader = reader.json()["access_token"].as_str().unwrap().to_owned();
    assert_problem(
        &get(&server, "/admin/v1/users", &reader).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
    // the scope for another audience
    let elsewhere = service_token(
        &server,
        OPS,
        OPS_SECRET,
        &[("audience", "audit"), ("scope", "echo.admin")],
    )
    .await;
    let elsewhere = elsewhere.json()["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get(&server, "/admin/v1/users", &elsewhere).await.status,
        StatusCode::UNAUTHORIZED
    );
    // expired
    let token = ops_token(&server).await;
    assert_eq!(
        get(&server, "/admin/v1/users", &token).await.status,
        StatusCode::OK
    );
    clock.advance(server.provider.config().access_token_ttl + 120);
    assert_eq!(
        get(&server, "/admin/v1/users", &token).await.status,
        StatusCode::UNAUTHORIZED
    );
    // a client that loses the scope loses the access, its token unexpired
    let token = ops_token(&server).await;
    let ops = admin::find_client(&*server.store, OPS).await.unwrap();
    let without = Registration {
        scopes: vec![],
        ..Registration::of(&ops)
    };
    admin::update_client(&*server.store, &*server.audit, OPS, without)
        .await
        .unwrap();
    clock.advance(3);
    assert_problem(
        &get(&server, "/admin/v1/users", &token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );

    // users through the console: not an admin
    let (params, pkce) = console_params();
    let code = Browser::new().login_for_code(&server, &params).await;
    let redeemed = redeem_console(&server, &code, &params, &pkce).await;
    assert_eq!(
        redeemed.json()["error"],
        "invalid_scope",
        "not an admin: {}",
        redeemed.body
    );

    // an admin with a second factor: allowed, until the role goes
    let browser = Browser::new();
    let (secret, _) = enrol_from_account_page(&server, &clock, &browser).await;
    admin::set_roles(&*server.store, &*server.audit, USER, strings(&["admin"]))
        .await
        .unwrap();
    clock.advance(30);
    let (params, pkce) = console_params();
    let params = params.set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    let page = submit_code(&server, &browser, &step, &totp(&secret, clock.now())).await;
    let code = code_from(&server, &page, &params);
    let redeemed = redeem_console(&server, &code, &params, &pkce).await;
    assert_eq!(redeemed.status, StatusCode::OK, "{}", redeemed.body);
    let user_token = redeemed.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        get(&server, "/admin/v1/users", &user_token).await.status,
        StatusCode::OK
    );
    admin::set_roles(&*server.store, &*server.audit, USER, vec![])
        .await
        .unwrap();
    assert_problem(
        &get(&server, "/admin/v1/users", &user_token).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_without_a_second_factor_does_not_get_echo_admin() {
    let server = Server::start_configured(|config| config.mfa_required_roles.clear()).await;
    register(
        &server,
        CONSOLE,
        CONSOLE_SECRET,
        "authorization_code",
        &["openid", "echo.admin"],
    )
    .await;
    admin::set_roles(&*server.store, &*server.audit, USER, strings(&["admin"]))
        .await
        .unwrap();
    let (params, pkce) = console_params();
    let code = Browser::new().login_for_code(&server, &params).await;
    let redeemed = redeem_console(&server, &code, &params, &pkce).await;
    assert_eq!(
        redeemed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        redeemed.body
    );
    assert_eq!(redeemed.json()["error"], "invalid_scope");
}

/// The console's authorization request for `echo.admin` at identity.
fn console_params() -> (Params, Pkce) {
    let pkce = Pkce::new();
    let params = Params::code_flow(CONSOLE, CONSOLE_REDIRECT, &pkce)
        .set("scope", "openid echo.admin")
        .set("resource", "identity");
    (params, pkce)
}

async fn redeem_console(server: &Server, code: &str, params: &Params, pkce: &Pkce) -> Page {
    token_request(
        server,
        ClientAuth::Basic(CONSOLE, CONSOLE_SECRET),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", params.get("redirect_uri")),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await
}

/// Issue 17: schemathesis (from PyPI, `.ci/run` installs it) tests the
/// running API against the OpenAPI document it serves: no 5xx, no
/// response outside the schema. Without schemathesis the test fails, as
/// every test whose tool or service is missing does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document() {
    let installed = std::process::Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        installed,
        "schemathesis is missing: pip install schemathesis"
    );
    let server = ops_server().await;
    let token = ops_token(&server).await;
    let doc = read(
        no_redirect_client()
            .get(server.url("/admin/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(doc.status, StatusCode::OK, "{}", doc.body);
    assert!(doc.json()["openapi"].as_str().unwrap().starts_with("3.1"));
    let (schema, base) = (server.url("/admin/v1/openapi.json"), server.issuer.clone());
    // schemathesis keeps its state in the working directory: a temporary one.
    let scratch = echo_testkit::data_dir();
    let cwd = scratch.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("schemathesis")
            .current_dir(cwd)
            .args(["run", &schema, "--url", &base])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args([
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "10",
            ])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Invitations through the API: mailed when the policy invites by mail
/// (the link works), listed while pending, paged, and gone from the list
/// once accepted; a sign-up waiting for its address is no invitation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_mailed_listed_and_paged() {
    use echo_identity::RegistrationPolicy;
    use echo_testkit::smtp::SmtpServer;
    use reqwest::Method;

    let smtp = SmtpServer::start();
    let (server, _) = Server::start_mailing(
        &smtp.url(),
        std::sync::Arc::new(echo_core::SystemClock),
        |config| config.registration = RegistrationPolicy::Invite,
    )
    .await;
    add_ops(&server).await;
    let token = ops_token(&server).await;
    let before = smtp.messages().len();
    let invite = |name: &str, email: Option<&str>| {
        let body = json!({"username": name, "email": email});
        api(
            &server,
            Method::POST,
            "/admin/v1/invitations",
            Some(&token),
            Some(body),
            None,
        )
    };
    let mailed = invite("dora", Some("dora@example.test")).await;
    assert_eq!(mailed.status, StatusCode::CREATED, "{}", mailed.body);
    assert_eq!(mailed.json()["invitation_mailed"], true);
    assert!(mailed.header("etag").is_some());
    let mail = crate::email_links::next_mail(&smtp, before);
    assert_eq!(mail.to, ["dora@example.test"]);
    let link = mail.link("/invitation?token=").expect("an invitation link");
    let unmailed = invite("eve", None).await;
    assert_eq!(unmailed.json()["invitation_mailed"], false, "no address");
    invite("fred", Some("fred@example.test")).await;
    let sent = server
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == "account.invitation.sent")
        .collect::<Vec<_>>();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].actor.as_deref(), Some(OPS), "as the caller");

    let names = |page: &Page| -> Vec<String> {
        page.json()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["username"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = get(&server, "/admin/v1/invitations?limit=2", &token).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(names(&first), ["dora", "eve"]);
    let cursor = first.json()["next_cursor"].as_str().unwrap().to_owned();
    let next = get(
        &server,
        &format!("/admin/v1/invitations?limit=2&cursor={cursor}"),
        &token,
    )
    .await;
    assert_eq!(names(&next), ["fred"]);
    assert!(next.json().get("next_cursor").is_none());
    assert_problem(
        &get(&server, "/admin/v1/invitations?search=x", &token).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_eq!(
        api(
            &server,
            Method::GET,
            "/admin/v1/invitations",
            None,
            None,
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );

    // accepted: no longer pending
    let browser = Browser::new();
    let form = browser.get(&link).await;
    let accepted = crate::email_links::submit(
        &browser,
        &server,
        &form,
        "/invitation",
        &[("new_password", "dora's own long passphrase")],
    )
    .await;
    assert_eq!(accepted.status, StatusCode::OK, "{}", accepted.body);
    let all = get(&server, "/admin/v1/invitations", &token).await;
    assert_eq!(names(&all), ["eve", "fred"]);
}
