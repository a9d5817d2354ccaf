//! The token lifecycle over real HTTP: refresh-token rotation, reuse
//! detection and its grace period, revocation (RFC 7009), introspection
//! (RFC 7662), `private_key_jwt` client authentication (RFC 7523), secret
//! rotation with overlap, and the purge of what expired. The
//! store-dependent scenarios are functions of the server, run on SQLite and
//! on PostgreSQL.

use std::time::Duration;

use echo_core::ManualClock;
use echo_crypto::secret::random_token;
use echo_crypto::{Algorithm, SigningKey};
use echo_identity::admin::{ClientSecret, NewClient, add_client, rotate_client_secret};
use echo_identity::client_auth::JWT_BEARER_ASSERTION;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const OFFLINE_SCOPE: &str = "openid profile email offline_access";
pub(crate) const WEB_AUTH: ClientAuth<'static> = ClientAuth::Basic(WEB, WEB_SECRET);
const SVC_AUTH: ClientAuth<'static> = ClientAuth::Basic(SVC, SVC_SECRET);

pub(crate) fn text(value: &Value, key: &str) -> String {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
        .to_owned()
}

/// The web client's tokens for a grant that includes `offline_access`,
/// logging in with `browser` (or reusing its SSO session).
pub(crate) async fn offline_tokens(server: &Server, browser: &Browser) -> Value {
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("scope", OFFLINE_SCOPE);
    let code = browser.login_for_code(server, &params).await;
    let page = redeem(server, &code, Some(&pkce.verifier)).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    page.json()
}

pub(crate) async fn refresh(
    server: &Server,
    auth: ClientAuth<'_>,
    token: &str,
    extra: &[(&str, &str)],
) -> Page {
    let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", token)];
    form.extend_from_slice(extra);
    token_request(server, auth, &form).await
}

/// A successful refresh by the web client: the new token response.
pub(crate) async fn rotate(server: &Server, token: &str) -> Value {
    let page = refresh(server, WEB_AUTH, token, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    page.json()
}

#[track_caller]
fn assert_invalid_grant(page: &Page) {
    assert_oauth_error(page, StatusCode::BAD_REQUEST, "invalid_grant");
}

async fn introspect(server: &Server, auth: ClientAuth<'_>, token: &str) -> Value {
    let page = client_request(server, "/introspect", auth, &[("token", token)]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.header("cache-control"), Some("no-store"));
    page.json()
}

/// Whether introspection by the client the token was issued to finds it
/// active (only a token's own parties learn about it).
async fn is_active(server: &Server, token: &str) -> bool {
    let (_, claims) = decode_jwt(token);
    let auth = if claims["client_id"] == SVC {
        SVC_AUTH
    } else {
        WEB_AUTH
    };
    introspect(server, auth, token).await["active"] == true
}

async fn revoke(server: &Server, auth: ClientAuth<'_>, token: &str) -> Page {
    client_request(server, "/revoke", auth, &[("token", token)]).await
}

/// Registers another confidential web client allowed to refresh.
async fn add_second_web_client(server: &Server) {
    let client = NewClient {
        id: "web2".into(),
        secret: ClientSecret::Provided(WEB_SECRET.into()),
        redirect_uris: vec![WEB_REDIRECT.into()],
        grants: vec!["authorization_code".into(), "refresh_token".into()],
        audiences: vec![],
        scopes: vec![],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    add_client(&*server.store, &*server.audit, &*server.clock, client)
        .await
        .expect("add web2");
}

// ---- scenarios run on both backends ------------------------------------------

/// Each refresh returns a new access token and a new refresh token; the old
/// refresh token is spent.
async fn rotation_works(server: &Server) {
    let browser = Browser::new();
    let first = offline_tokens(server, &browser).await;
    let r1 = text(&first, "refresh_token");
    assert_eq!(r1.len(), 43, "256 random bits");
    assert_eq!(first["scope"], OFFLINE_SCOPE);

    let second = rotate(server, &r1).await;
    let r2 = text(&second, "refresh_token");
    assert_ne!(r1, r2);
    assert_ne!(first["access_token"], second["access_token"]);
    assert_eq!(second["scope"], OFFLINE_SCOPE);
    assert_eq!(second["token_type"], "Bearer");
    let at2 = text(&second, "access_token");
    assert_eq!(userinfo(server, &at2).await.status, StatusCode::OK);
    let (_, claims) = decode_jwt(&at2);
    assert_eq!(claims["sub"], server.user_id.as_str());
    assert_eq!(claims["client_id"], WEB);

    let seen = introspect(server, WEB_AUTH, &r2).await;
    assert_eq!(seen["active"], true, "{seen}");
    assert_eq!(seen["token_type"], "refresh_token");
    assert_eq!(seen["client_id"], WEB);
    assert_eq!(seen["sub"], server.user_id.as_str());
    assert_eq!(seen["username"], USER);
    assert_eq!(seen["scope"], OFFLINE_SCOPE);
    assert_eq!(
        introspect(server, WEB_AUTH, &r1).await,
        json!({"active": false}),
        "the spent token"
    );
    assert_eq!(
        introspect(server, SVC_AUTH, &r2).await,
        json!({"active": false}),
        "another client's refresh token"
    );
    let third = rotate(server, &r2).await;
    assert_ne!(text(&third, "refresh_token"), r2);

    // Without offline_access there is no refresh token.
    let (_, plain) = web_tokens(server).await;
    assert!(plain.get("refresh_token").is_none(), "{plain}");
}

/// Two uses of one refresh token within the grace period (two tabs, a
/// retry) get the same successor, and the family lives on.
async fn reuse_within_grace_returns_the_same_successor(server: &Server, clock: &ManualClock) {
    let reuses = server.audited("oauth.refresh.reuse_detected");
    let r1 = text(
        &offline_tokens(server, &Browser::new()).await,
        "refresh_token",
    );
    let once = rotate(server, &r1).await;
    clock.advance(5);
    let again = rotate(server, &r1).await;
    assert_eq!(once["refresh_token"], again["refresh_token"]);
    assert_eq!(once["access_token"], again["access_token"]);

    let r2 = text(&once, "refresh_token");
    let (a, b) = tokio::join!(rotate(server, &r2), rotate(server, &r2));
    assert_eq!(
        a["refresh_token"], b["refresh_token"],
        "concurrent uses agree"
    );
    let r3 = text(&a, "refresh_token");
    assert!(is_active(server, &text(&a, "access_token")).await);
    rotate(server, &r3).await;
    assert_eq!(server.audited("oauth.refresh.reuse_detected"), reuses);
    assert!(server.audited("oauth.refresh.grace_reuse") >= 2);
}

/// A spent refresh token presented after the grace period revokes the
/// whole family: the successor and the family's access tokens die too.
async fn reuse_after_rotation_revokes_the_family(server: &Server, clock: &ManualClock) {
    let reuses = server.audited("oauth.refresh.reuse_detected");
    let first = offline_tokens(server, &Browser::new()).await;
    let (at1, r1) = (text(&first, "access_token"), text(&first, "refresh_token"));
    let second = rotate(server, &r1).await;
    let (at2, r2) = (
        text(&second, "access_token"),
        text(&second, "refresh_token"),
    );
    assert!(is_active(server, &at2).await);

    clock.advance(11);
    assert_invalid_grant(&refresh(server, WEB_AUTH, &r1, &[]).await);
    assert_eq!(server.audited("oauth.refresh.reuse_detected"), reuses + 1);
    let event = server
        .audit
        .events()
        .into_iter()
        .rfind(|e| e.action == "oauth.refresh.reuse_detected")
        .expect("theft audited");
    assert_eq!(event.actor.as_deref(), Some(server.user_id.as_str()));
    assert_eq!(event.details["client_id"], WEB);
    assert_eq!(event.details["revoked_refresh_tokens"], 2);

    assert_invalid_grant(&refresh(server, WEB_AUTH, &r2, &[]).await);
    for at in [&at1, &at2] {
        assert_eq!(
            introspect(server, SVC_AUTH, at).await,
            json!({"active": false})
        );
        assert_eq!(userinfo(server, at).await.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(verify(server, &at2, "audit").await["error"], "revoked");
}

/// RFC 6749 §4.1.2: a replayed code revokes the tokens issued from it.
async fn code_replay_revokes_the_family(server: &Server) {
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("scope", OFFLINE_SCOPE);
    let code = browser.login_for_code(server, &params).await;
    let tokens = redeem(server, &code, Some(&pkce.verifier)).await.json();
    let (at, rt) = (
        text(&tokens, "access_token"),
        text(&tokens, "refresh_token"),
    );
    assert!(is_active(server, &at).await);

    assert_invalid_grant(&redeem(server, &code, Some(&pkce.verifier)).await);
    assert_invalid_grant(&refresh(server, WEB_AUTH, &rt, &[]).await);
    assert!(!is_active(server, &at).await);
    assert_eq!(userinfo(server, &at).await.status, StatusCode::UNAUTHORIZED);
    let replay = server
        .audit
        .events()
        .into_iter()
        .rfind(|e| e.action == "oauth.code.replayed")
        .expect("replay audited");
    assert_eq!(replay.details["revoked_refresh_tokens"], 1);
}

async fn wait_for_rows(server: &Server, table: &str, expected: i64) {
    for _ in 0..100 {
        if server.row_count(table).await == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{table} still has {} rows, expected {expected}",
        server.row_count(table).await
    );
}

/// Issues many codes and tokens, moves the clock past each lifetime, and
/// watches the scheduled purge (every second, 7 rows per statement) bring
/// each table down to what is still alive.
async fn purge_keeps_tables_bounded(server: &Server, clock: &ManualClock) {
    let browser = Browser::new();
    let mut families = Vec::new();
    for i in 0..12 {
        let pkce = Pkce::new();
        let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("scope", OFFLINE_SCOPE);
        let code = browser.login_for_code(server, &params).await;
        if i < 5 {
            let page = redeem(server, &code, Some(&pkce.verifier)).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            families.push(page.json());
        }
    }
    for family in &families[..2] {
        rotate(server, &text(family, "refresh_token")).await;
    }
    for family in &families[2..5] {
        let page = revoke(server, WEB_AUTH, &text(family, "access_token")).await;
        assert_eq!(page.status, StatusCode::OK);
    }
    assert_eq!(server.row_count("auth_codes").await, 12);
    assert_eq!(server.row_count("refresh_tokens").await, 7);
    assert_eq!(server.row_count("revoked_tokens").await, 3);
    assert_eq!(server.row_count("sso_sessions").await, 1);

    // A revoked family is gone at the next purge.
    revoke(server, WEB_AUTH, &text(&families[2], "refresh_token")).await;
    wait_for_rows(server, "refresh_tokens", 6).await;
    assert_eq!(
        server.row_count("revoked_tokens").await,
        3,
        "already revoked"
    );

    clock.advance(61);
    wait_for_rows(server, "auth_codes", 0).await;
    let pkce = Pkce::new();
    browser
        .login_for_code(server, &Params::code_flow(WEB, WEB_REDIRECT, &pkce))
        .await;
    assert_eq!(server.row_count("auth_codes").await, 1, "a live code stays");
    assert_eq!(server.row_count("refresh_tokens").await, 6);
    assert_eq!(server.row_count("revoked_tokens").await, 3);

    clock.advance(10 * 60 + 11);
    wait_for_rows(server, "revoked_tokens", 0).await;
    wait_for_rows(server, "auth_codes", 0).await;
    assert_eq!(server.row_count("sso_sessions").await, 1);

    clock.advance(8 * 60 * 60);
    wait_for_rows(server, "sso_sessions", 0).await;
    assert_eq!(server.row_count("refresh_tokens").await, 6);

    clock.advance(30 * 24 * 60 * 60);
    wait_for_rows(server, "refresh_tokens", 0).await;
}

fn purging_every_second(config: &mut echo_identity::IdentityConfig) {
    config.purge_interval = 1;
    config.purge_batch = 7;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_rotation_works() {
    let (server, _) = Server::start_with_manual_clock().await;
    rotation_works(&server).await;
}

/// A reuse grace as an operator may configure it (`--refresh-grace 10s`).
fn ten_second_grace(config: &mut echo_identity::IdentityConfig) {
    config.refresh_token_grace = Duration::from_secs(10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_within_grace_returns_the_same_successor() {
    let (server, clock) = Server::start_manual(ten_second_grace).await;
    reuse_within_grace_returns_the_same_successor(&server, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_reuse_after_rotation_revokes_the_family() {
    let (server, clock) = Server::start_with_manual_clock().await;
    reuse_after_rotation_revokes_the_family(&server, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_code_revokes_its_refresh_family() {
    let server = Server::start().await;
    code_replay_revokes_the_family(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_deletes_expired_rows_in_batches_on_sqlite() {
    let (server, clock) = Server::start_manual(purging_every_second).await;
    purge_keeps_tables_bounded(&server, &clock).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_lifecycle_on_postgres() {
    let db = echo_testkit::PgTestDb::create("identity_token_lifecycle").await;
    {
        let (server, clock) = Server::start_manual_on(Some(&db.url), ten_second_grace).await;
        rotation_works(&server).await;
        reuse_within_grace_returns_the_same_successor(&server, &clock).await;
        reuse_after_rotation_revokes_the_family(&server, &clock).await;
        code_replay_revokes_the_family(&server).await;
    }
    db.drop_db().await;
    let db = echo_testkit::PgTestDb::create("identity_purge").await;
    {
        let (server, clock) = Server::start_manual_on(Some(&db.url), purging_every_second).await;
        purge_keeps_tables_bounded(&server, &clock).await;
    }
    db.drop_db().await;
}

// ---- refresh rules ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_may_narrow_the_scope_but_never_widen_it() {
    let server = Server::start().await;
    let r1 = text(
        &offline_tokens(&server, &Browser::new()).await,
        "refresh_token",
    );
    let page = refresh(&server, WEB_AUTH, &r1, &[("scope", "openid admin")]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_scope");

    let narrowed = refresh(&server, WEB_AUTH, &r1, &[("scope", "openid")]).await;
    assert_eq!(narrowed.status, StatusCode::OK, "{}", narrowed.body);
    let narrowed = narrowed.json();
    assert_eq!(narrowed["scope"], "openid");
    let (_, claims) = decode_jwt(&text(&narrowed, "access_token"));
    assert_eq!(claims["scope"], "openid");
    let userinfo = userinfo(&server, &text(&narrowed, "access_token"))
        .await
        .json();
    assert!(userinfo.get("email").is_none(), "email scope was dropped");

    // The refresh token keeps the original grant.
    let full = rotate(&server, &text(&narrowed, "refresh_token")).await;
    assert_eq!(full["scope"], OFFLINE_SCOPE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_by_another_client_is_invalid_grant() {
    let server = Server::start().await;
    add_second_web_client(&server).await;
    let r1 = text(
        &offline_tokens(&server, &Browser::new()).await,
        "refresh_token",
    );
    let page = refresh(&server, ClientAuth::Basic("web2", WEB_SECRET), &r1, &[]).await;
    assert_invalid_grant(&page);
    assert_eq!(server.audited("oauth.refresh.wrong_client"), 1);
    // A client without the refresh grant is refused before the token is looked at.
    let page = refresh(&server, SVC_AUTH, &r1, &[]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "unauthorized_client");
    // The rightful client still can.
    rotate(&server, &r1).await;
    // Unknown and missing refresh tokens.
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &random_token(), &[]).await);
    let page = token_request(&server, WEB_AUTH, &[("grant_type", "refresh_token")]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
}

/// Issue 14 §1: with the defaults a rotated refresh token presented again,
/// even at once, is theft: `invalid_grant`, and the whole family dies,
/// including the newest token and its access token. (It used to answer 200
/// with the same successor for 10 s, and the grace was counted in whole
/// seconds, so even `--refresh-grace 0s` let a reuse in the same second
/// through.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_reuse_of_a_rotated_refresh_token_revokes_its_family() {
    let server = Server::start().await;
    let r1 = text(
        &offline_tokens(&server, &Browser::new()).await,
        "refresh_token",
    );
    let second = rotate(&server, &r1).await;
    let (at2, r2) = (
        text(&second, "access_token"),
        text(&second, "refresh_token"),
    );
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &r1, &[]).await);
    assert_eq!(server.audited("oauth.refresh.reuse_detected"), 1);
    assert_eq!(server.audited("oauth.refresh.grace_reuse"), 0);
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &r2, &[]).await);
    assert_eq!(
        introspect(&server, WEB_AUTH, &at2).await,
        json!({"active": false})
    );
    assert_eq!(
        userinfo(&server, &at2).await.status,
        StatusCode::UNAUTHORIZED
    );
    // Presented again and again, by either method: still refused.
    for _ in 0..3 {
        assert_invalid_grant(&refresh(&server, WEB_AUTH, &r1, &[]).await);
        let post = ClientAuth::Post(WEB, WEB_SECRET);
        assert_invalid_grant(&refresh(&server, post, &r2, &[]).await);
    }
}

/// Two uses of one refresh token at the same moment without a grace: one
/// rotates, the other is a reuse, so the family (and the winner's new
/// token) is revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uses_of_one_refresh_token_without_grace_revoke_the_family() {
    let server = Server::start().await;
    for _ in 0..3 {
        let r1 = text(
            &offline_tokens(&server, &Browser::new()).await,
            "refresh_token",
        );
        let (a, b) = tokio::join!(
            refresh(&server, WEB_AUTH, &r1, &[]),
            refresh(&server, WEB_AUTH, &r1, &[])
        );
        let won: Vec<&Page> = [&a, &b]
            .into_iter()
            .filter(|p| p.status == StatusCode::OK)
            .collect();
        assert!(
            won.len() <= 1,
            "one rotation at most: {} / {}",
            a.body,
            b.body
        );
        for page in [&a, &b] {
            if page.status != StatusCode::OK {
                assert_invalid_grant(page);
            }
        }
        for page in won {
            let successor = text(&page.json(), "refresh_token");
            assert_invalid_grant(&refresh(&server, WEB_AUTH, &successor, &[]).await);
        }
    }
}

/// The grace is measured in milliseconds: 300 ms after the rotation, a
/// 200 ms grace is over (with whole seconds it was not).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reuse_grace_has_sub_second_precision() {
    let server =
        Server::start_configured(|c| c.refresh_token_grace = Duration::from_millis(200)).await;
    let r1 = text(
        &offline_tokens(&server, &Browser::new()).await,
        "refresh_token",
    );
    let once = rotate(&server, &r1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &r1, &[]).await);
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &text(&once, "refresh_token"), &[]).await);
}

/// With a grace configured, only the client that rotated the token,
/// authenticating the same way, gets the grace answer; another client, or
/// the same client by another method, revokes the family.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reuse_grace_is_only_for_the_same_client_and_method() {
    let (server, _) = Server::start_manual(ten_second_grace).await;
    add_second_web_client(&server).await;
    let intruders = [
        ClientAuth::Basic("web2", WEB_SECRET),
        ClientAuth::Post(WEB, WEB_SECRET),
    ];
    for intruder in intruders {
        let r1 = text(
            &offline_tokens(&server, &Browser::new()).await,
            "refresh_token",
        );
        let once = rotate(&server, &r1).await;
        // The rightful client, the same way: the same answer.
        let again = rotate(&server, &r1).await;
        assert_eq!(once["refresh_token"], again["refresh_token"]);
        assert_invalid_grant(&refresh(&server, intruder, &r1, &[]).await);
        // The family is gone, for the rightful client too.
        assert_invalid_grant(&refresh(&server, WEB_AUTH, &r1, &[]).await);
        let r2 = text(&once, "refresh_token");
        assert_invalid_grant(&refresh(&server, WEB_AUTH, &r2, &[]).await);
    }
    assert_eq!(server.audited("oauth.refresh.reuse_detected"), 2);
}

/// A grace above 60 s is refused at start: it would let a thief ride along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reuse_grace_above_a_minute_is_refused() {
    let dir = echo_testkit::data_dir();
    let store = echo_identity_store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
        .await
        .expect("store");
    let mut config = echo_identity::IdentityConfig::new("http://127.0.0.1:1");
    config.refresh_token_grace = Duration::from_millis(60_001);
    let refused = echo_identity::Provider::new(
        config,
        store,
        &echo_crypto::seal::MasterKey::generate(),
        std::sync::Arc::new(echo_core::audit::MemoryAuditSink::default()),
        std::sync::Arc::new(echo_core::SystemClock),
    )
    .await;
    assert!(refused.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_access_needs_the_refresh_grant() {
    let server = Server::start().await;
    let pkce = Pkce::new();
    let params = Params::code_flow(SPA, SPA_REDIRECT, &pkce).set("scope", OFFLINE_SCOPE);
    let page = Browser::new().get(&server.authorize_url(&params)).await;
    let query = page.redirect_to(SPA_REDIRECT);
    assert_eq!(
        query.get("error").map(String::as_str),
        Some("invalid_scope")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_expire_when_idle_and_at_the_family_limit() {
    let (server, clock) = Server::start_manual(|config| {
        config.refresh_token_idle_ttl = 100;
        config.refresh_token_absolute_ttl = 250;
    })
    .await;
    let browser = Browser::new();
    let idle = text(&offline_tokens(&server, &browser).await, "refresh_token");
    clock.advance(101);
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &idle, &[]).await);

    let mut token = text(&offline_tokens(&server, &browser).await, "refresh_token");
    for _ in 0..2 {
        clock.advance(90);
        token = text(&rotate(&server, &token).await, "refresh_token");
    }
    let seen = introspect(&server, WEB_AUTH, &token).await;
    assert!(
        seen["exp"].as_i64().unwrap() <= clock_now(&clock) + 70,
        "{seen}"
    );
    clock.advance(71);
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &token, &[]).await);
}

fn clock_now(clock: &ManualClock) -> i64 {
    use echo_core::Clock;
    clock.now()
}

// ---- revocation and introspection --------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_refresh_token_is_invalid_grant() {
    let server = Server::start().await;
    let tokens = offline_tokens(&server, &Browser::new()).await;
    let (at, rt) = (
        text(&tokens, "access_token"),
        text(&tokens, "refresh_token"),
    );
    // Another client cannot revoke it: 200, and nothing happens.
    add_second_web_client(&server).await;
    let page = revoke(&server, ClientAuth::Basic("web2", WEB_SECRET), &rt).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(introspect(&server, WEB_AUTH, &rt).await["active"], true);

    let page = client_request(
        &server,
        "/revoke",
        WEB_AUTH,
        &[("token", &rt), ("token_type_hint", "refresh_token")],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.is_empty());
    assert_invalid_grant(&refresh(&server, WEB_AUTH, &rt, &[]).await);
    assert_eq!(
        introspect(&server, WEB_AUTH, &rt).await,
        json!({"active": false})
    );
    assert!(!is_active(&server, &at).await, "the family's access token");
    assert_eq!(server.audited("oauth.token.revoked"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_access_token_is_inactive_and_refused_at_userinfo() {
    let server = Server::start().await;
    let (_, tokens) = web_tokens(&server).await;
    let at = text(&tokens, "access_token");
    assert!(is_active(&server, &at).await);

    let page = revoke(&server, SVC_AUTH, &at).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "another client's token: ignored"
    );
    assert!(is_active(&server, &at).await);

    let page = revoke(&server, WEB_AUTH, &at).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(
        introspect(&server, SVC_AUTH, &at).await,
        json!({"active": false})
    );
    let page = userinfo(&server, &at).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(
        page.www_authenticate()
            .is_some_and(|c| c.starts_with(r#"Bearer realm="echo", error="invalid_token""#))
    );
    assert_eq!(
        verify(&server, &at, "audit").await,
        json!({"valid": false, "error": "revoked"})
    );

    // RFC 7009 §2.2: unknown or malformed tokens are not an error.
    for token in [random_token(), "a.b.c".to_owned(), "garbage".to_owned()] {
        assert_eq!(
            revoke(&server, WEB_AUTH, &token).await.status,
            StatusCode::OK
        );
    }
    let page = client_request(&server, "/revoke", WEB_AUTH, &[]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_request");
    let page = client_request(
        &server,
        "/revoke",
        ClientAuth::Basic(WEB, "wrong"),
        &[("token", &at)],
    )
    .await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_without_client_authentication_is_refused() {
    let server = Server::start().await;
    let token = service_token(&server).await;
    let anonymous = read(
        no_redirect_client()
            .post(server.url("/introspect"))
            .form(&[("token", token.as_str())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&anonymous, StatusCode::UNAUTHORIZED, "invalid_client");
    let wrong = client_request(
        &server,
        "/introspect",
        ClientAuth::Basic(SVC, "wrong"),
        &[("token", &token)],
    )
    .await;
    assert_oauth_error(&wrong, StatusCode::UNAUTHORIZED, "invalid_client");
    // A public client cannot authenticate, so it may not introspect.
    let public = client_request(
        &server,
        "/introspect",
        ClientAuth::Public(SPA),
        &[("token", &token)],
    )
    .await;
    assert_oauth_error(&public, StatusCode::UNAUTHORIZED, "invalid_client");
    let missing = client_request(&server, "/introspect", SVC_AUTH, &[]).await;
    assert_oauth_error(&missing, StatusCode::BAD_REQUEST, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_describes_active_tokens_and_nothing_else() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let (_, tokens) = web_tokens(&server).await;
    let at = text(&tokens, "access_token");
    let (_, claims) = decode_jwt(&at);
    let seen = introspect(&server, WEB_AUTH, &at).await;
    assert_eq!(seen["active"], true);
    assert_eq!(seen["token_type"], "Bearer");
    assert_eq!(seen["client_id"], WEB);
    assert_eq!(seen["sub"], server.user_id.as_str());
    assert_eq!(seen["username"], USER);
    assert_eq!(seen["iss"], server.issuer.as_str());
    for claim in ["scope", "exp", "iat", "aud", "jti"] {
        assert_eq!(seen[claim], claims[claim], "{claim}");
    }
    let service = introspect(&server, SVC_AUTH, &service_token(&server).await).await;
    assert_eq!(service["active"], true);
    assert_eq!(service["sub"], SVC);
    assert!(service.get("username").is_none(), "{service}");

    // A token of another issuer, signed with our own key.
    let signer = server
        .provider
        .keys()
        .signer(Algorithm::EdDSA, None, server.clock.now())
        .expect("signer");
    let mut foreign = claims.clone();
    foreign["iss"] = json!("https://elsewhere.example");
    let foreign = signer.sign("at+jwt", &foreign).unwrap();
    // Signed by a key we never published.
    let stranger = SigningKey::generate(Algorithm::EdDSA, "stranger")
        .unwrap()
        .sign("at+jwt", &claims)
        .unwrap();
    let tampered = format!("{}x", &at[..at.len() - 1]);
    for token in [
        foreign,
        stranger,
        tampered,
        "garbage".into(),
        "a.b.c".into(),
    ] {
        assert_eq!(
            introspect(&server, WEB_AUTH, &token).await,
            json!({"active": false}),
            "{token}"
        );
    }
    clock.advance(10 * 60 + 11);
    assert_eq!(
        introspect(&server, WEB_AUTH, &at).await,
        json!({"active": false}),
        "expired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_client_authentication_is_rate_limited_at_revoke_and_introspect() {
    let (server, clock) =
        Server::start_manual(|config| config.client_auth_failures_per_minute = 2).await;
    let token = service_token(&server).await;
    for path in ["/introspect", "/revoke"] {
        let page = client_request(
            &server,
            path,
            ClientAuth::Basic(SVC, "guess"),
            &[("token", &token)],
        )
        .await;
        assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    }
    for path in ["/introspect", "/revoke", "/token"] {
        let page = client_request(&server, path, SVC_AUTH, &[("token", &token)]).await;
        assert_oauth_error(&page, StatusCode::TOO_MANY_REQUESTS, "slow_down");
    }
    clock.advance(60);
    assert!(is_active(&server, &token).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_advertises_revocation_introspection_and_refresh() {
    let server = Server::start().await;
    let page = discovery(&server).await;
    let doc = page.json();
    assert_eq!(doc["revocation_endpoint"], server.url("/revoke"));
    assert_eq!(doc["introspection_endpoint"], server.url("/introspect"));
    let list = |key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert!(list("grant_types_supported").contains(&"refresh_token".into()));
    assert!(list("scopes_supported").contains(&"offline_access".into()));
    for key in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
        "introspection_endpoint_auth_methods_supported",
    ] {
        assert!(list(key).contains(&"private_key_jwt".into()), "{key}");
    }
    assert!(!list("introspection_endpoint_auth_methods_supported").contains(&"none".into()));
}

// ---- private_key_jwt and secret rotation -------------------------------------

const JWT_CLIENT: &str = "jwt-svc";

/// Registers [`JWT_CLIENT`] with the public half of `key`.
async fn add_jwt_client(server: &Server, key: &SigningKey) {
    let client = NewClient {
        id: JWT_CLIENT.into(),
        secret: ClientSecret::PrivateKeyJwt(serde_json::to_string(&key.public_jwk()).unwrap()),
        redirect_uris: vec![],
        grants: vec!["client_credentials".into()],
        audiences: vec!["audit".into()],
        scopes: vec![],
        post_logout_redirect_uris: vec![],
        allow_no_pkce: false,
    };
    add_client(&*server.store, &*server.audit, &*server.clock, client)
        .await
        .expect("add private_key_jwt client");
}

fn assertion(key: &SigningKey, aud: &str, exp_in: i64, now: i64, jti: Option<&str>) -> String {
    let mut claims = json!({
        "iss": JWT_CLIENT,
        "sub": JWT_CLIENT,
        "aud": aud,
        "iat": now,
        "exp": now + exp_in,
    });
    if let Some(jti) = jti {
        claims["jti"] = json!(jti);
    }
    key.sign("JWT", &claims).unwrap()
}

async fn with_assertion(server: &Server, assertion: &str) -> Page {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_assertion_type", JWT_BEARER_ASSERTION),
        ("client_assertion", assertion),
    ];
    let response = no_redirect_client()
        .post(server.url("/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    read(response).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_assertions_replayed_expired_or_foreign_are_invalid_client() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let key = SigningKey::generate(Algorithm::ES256, "client-key").unwrap();
    add_jwt_client(&server, &key).await;
    let now = clock_now(&clock);
    let token_endpoint = server.url("/token");

    let good = assertion(&key, &token_endpoint, 60, now, Some("jti-1"));
    let page = with_assertion(&server, &good).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (_, claims) = decode_jwt(&text(&page.json(), "access_token"));
    assert_eq!(claims["sub"], JWT_CLIENT);
    // The issuer is an acceptable audience too.
    let page = with_assertion(
        &server,
        &assertion(&key, &server.issuer, 60, now, Some("jti-2")),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let failures = server.audited("oauth.client.auth_failure");
    let other_key = SigningKey::generate(Algorithm::ES256, "client-key").unwrap();
    let cases = [
        ("replayed", good.clone()),
        (
            "expired",
            assertion(&key, &token_endpoint, -1, now, Some("jti-3")),
        ),
        (
            "signed by another key",
            assertion(&other_key, &token_endpoint, 60, now, Some("jti-4")),
        ),
        (
            "for another audience",
            assertion(
                &key,
                "https://elsewhere.example/token",
                60,
                now,
                Some("jti-5"),
            ),
        ),
        (
            "living too long",
            assertion(&key, &token_endpoint, 3600, now, Some("jti-6")),
        ),
        (
            "without jti",
            assertion(&key, &token_endpoint, 60, now, None),
        ),
    ];
    for (case, jwt) in &cases {
        let page = with_assertion(&server, jwt).await;
        assert_eq!(
            page.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            page.body
        );
        assert_eq!(page.json()["error"], "invalid_client", "{case}");
    }
    assert_eq!(
        server.audited("oauth.client.auth_failure"),
        failures + cases.len()
    );
    let reasons: Vec<String> = server
        .audit
        .events()
        .iter()
        .filter(|e| e.action == "oauth.client.auth_failure")
        .map(|e| e.details["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        reasons.iter().any(|r| r.contains("replayed")),
        "{reasons:?}"
    );

    // The client has no secret to fall back on, and an assertion needs its type.
    let page = token_request(
        &server,
        ClientAuth::Public(JWT_CLIENT),
        &[("grant_type", "client_credentials")],
    )
    .await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    let fresh = assertion(&key, &token_endpoint, 60, now, Some("jti-7"));
    let untyped = read(
        no_redirect_client()
            .post(server.url("/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion", &fresh),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_oauth_error(&untyped, StatusCode::BAD_REQUEST, "invalid_request");
    // It may introspect, authenticated by an assertion for /introspect.
    let page = read(
        no_redirect_client()
            .post(server.url("/introspect"))
            .form(&[
                ("token", "garbage"),
                ("client_assertion_type", JWT_BEARER_ASSERTION),
                (
                    "client_assertion",
                    &assertion(&key, &server.url("/introspect"), 60, now, Some("jti-8")),
                ),
            ])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotated_secret_overlaps_then_only_the_new_one_works() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let grant = [("grant_type", "client_credentials")];
    // Cache the registration with the old secret.
    assert_eq!(
        token_request(&server, SVC_AUTH, &grant).await.status,
        StatusCode::OK
    );
    let new = rotate_client_secret(&*server.store, &*server.audit, &*server.clock, SVC, 3600)
        .await
        .expect("rotate");
    assert_eq!(new.len(), 43);
    assert_eq!(server.audited("admin.client.secret_rotated"), 1);
    for secret in [SVC_SECRET, new.as_str()] {
        let page = token_request(&server, ClientAuth::Basic(SVC, secret), &grant).await;
        assert_eq!(
            page.status,
            StatusCode::OK,
            "during the overlap: {}",
            page.body
        );
    }
    clock.advance(3601);
    let page = token_request(&server, SVC_AUTH, &grant).await;
    assert_oauth_error(&page, StatusCode::UNAUTHORIZED, "invalid_client");
    let page = token_request(&server, ClientAuth::Post(SVC, &new), &grant).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);

    let refused =
        rotate_client_secret(&*server.store, &*server.audit, &*server.clock, SPA, 60).await;
    assert!(refused.is_err(), "a public client has no secret");
}
