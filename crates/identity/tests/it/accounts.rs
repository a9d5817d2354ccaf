//! Account security, attacked: password spraying, brute force from many
//! addresses and in parallel against the lockout, TOTP codes replayed,
//! recovery codes reused, suspended and deleted users, and the MFA policy.

use std::sync::Arc;

use echo_core::{Clock, ManualClock};
use echo_identity::LockoutPolicy;
use echo_identity::admin;
use echo_identity::lockout::unlock_user;
use echo_identity::user_state::{UserState, change_state};
use echo_testkit::between;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::*;
use crate::tokens::{WEB_AUTH, offline_tokens, refresh};

const GENERIC_ERROR: &str = "Invalid username or password.";

/// RFC 6238 TOTP of a base32 secret at `unix`, computed independently of
/// the provider.
pub(crate) fn totp(secret: &str, unix: i64) -> String {
    echo_testkit::totp::code(secret, unix)
}

/// The base32 secret on an enrolment page.
pub(crate) fn enrolment_secret(page: &Page) -> String {
    assert!(page.body.contains("<svg"), "an inline SVG QR code");
    assert!(!page.body.contains("<script"), "no script");
    assert!(
        page.body.contains("otpauth://totp/Echo%3A"),
        "{}",
        page.body
    );
    between(&page.body, r#"<code class="secret">"#, "</code>").to_owned()
}

/// The recovery codes a confirmation page shows once.
pub(crate) fn recovery_codes(page: &Page) -> Vec<String> {
    page.body
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest[..rest.find("</code>").expect("code end")].to_owned())
        .collect()
}

/// Submits the code form on `page` (second login step or enrolment).
pub(crate) async fn submit_code(
    server: &Server,
    browser: &Browser,
    page: &Page,
    code: &str,
) -> Page {
    let action = unescape_html(between(&page.body, r#"<form method="post" action=""#, "\""));
    let mut form = page.hidden_fields();
    form.push(("code".into(), code.into()));
    browser.post_form(&server.url(&action), &form).await
}

/// The authorization request's login form, submitted with `password`.
async fn password_step(
    server: &Server,
    browser: &Browser,
    params: &Params,
    username: &str,
    password: &str,
) -> Page {
    let form = browser.get(&server.authorize_url(params)).await;
    browser
        .submit_login(server, &form, username, password)
        .await
}

/// How many `auth.login.failure` events give `reason`.
fn failures(server: &Server, reason: &str) -> usize {
    server
        .audit
        .events()
        .iter()
        .filter(|e| e.action == "auth.login.failure" && e.details["reason"] == reason)
        .count()
}

/// A refused login: the login form again, with the one generic message.
#[track_caller]
fn assert_generic_refusal(page: &Page) {
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);
    assert!(page.is_login_form());
    assert!(page.body.contains(GENERIC_ERROR), "{}", page.body);
}

/// The ID token of a code flow completed on `page` (a redirect with a code).
async fn id_token_claims(server: &Server, page: &Page, params: &Params, pkce: &Pkce) -> Value {
    let code = code_from(server, page, params);
    let tokens = redeem(server, &code, Some(&pkce.verifier)).await;
    assert_eq!(tokens.status, StatusCode::OK, "{}", tokens.body);
    decode_jwt(tokens.json()["id_token"].as_str().expect("id_token")).1
}

// ---- guessing ------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_spraying_across_accounts_from_one_address_trips_the_per_ip_limit() {
    let (server, _clock) =
        Server::start_manual(|config| config.login_attempts_per_minute = 5).await;
    let victims: Vec<String> = (0..8).map(|i| format!("victim{i}")).collect();
    for victim in &victims {
        server.add_user(victim, "a-strong-password-1").await;
    }
    let browser = Browser::from_address("127.0.0.2");
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let mut statuses = Vec::new();
    for victim in &victims {
        let page = password_step(&server, &browser, &params, victim, "Summer2024!").await;
        statuses.push(page.status);
    }
    assert_eq!(statuses[..5], [StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(statuses[5..], [StatusCode::TOO_MANY_REQUESTS; 3]);
    assert_eq!(server.audited("auth.login.rate_limited"), 3);
    // Another address is not affected.
    let other = Browser::from_address("127.0.0.3");
    let page = password_step(&server, &other, &params, USER, PASSWORD).await;
    code_from(&server, &page, &params);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brute_force_on_one_account_from_many_addresses_locks_it() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    // Ten guesses, each from its own address: no per-IP limit applies.
    for i in 0..10 {
        let browser = Browser::from_address(&format!("127.0.1.{}", i + 1));
        let page = password_step(&server, &browser, &params, USER, &format!("guess-{i}")).await;
        assert_generic_refusal(&page);
        if i >= 4 {
            // The progressive delay: a guess right away is refused unchecked.
            let page = password_step(&server, &browser, &params, USER, "too-soon").await;
            assert_generic_refusal(&page);
        }
        clock.advance(20);
    }
    assert_eq!(failures(&server, "wrong_password"), 10);
    assert_eq!(failures(&server, "locked"), 6);
    assert_eq!(server.audited("auth.account.locked"), 1);
    let locked = server
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "auth.account.locked")
        .expect("lock event");
    assert_eq!(locked.actor.as_deref(), Some(server.user_id.as_str()));

    // The right password, from a fresh address, during the lock: the very
    // same refusal a wrong password gets.
    let fresh = Browser::from_address("127.0.2.1");
    assert_generic_refusal(&password_step(&server, &fresh, &params, USER, PASSWORD).await);
    assert_eq!(server.audited("auth.login.success"), 0);

    // The lock ends by itself after 15 minutes.
    clock.advance(LockoutPolicy::default().lock_duration);
    let page = password_step(&server, &fresh, &params, USER, PASSWORD).await;
    code_from(&server, &page, &params);
}

/// Fifty wrong passwords for one account at once: at most `lock_after`
/// reach the password hash, the account locks, the right password is then
/// refused like any other, and an unlock lets the user back in.
async fn parallel_guesses_hold_the_lockout(server: Arc<Server>) {
    let browser = Arc::new(Browser::new());
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let form = Arc::new(browser.get(&server.authorize_url(&params)).await);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (server, browser, form) = (server.clone(), browser.clone(), form.clone());
        guesses.spawn(async move {
            let guess = format!("wrong-{i}");
            browser.submit_login(&server, &form, USER, &guess).await
        });
    }
    while let Some(page) = guesses.join_next().await {
        assert_generic_refusal(&page.expect("guess task"));
    }
    assert_eq!(failures(&server, "wrong_password"), 10, "hash checks");
    assert_eq!(failures(&server, "locked"), 40);
    assert_eq!(server.audited("auth.account.locked"), 1);

    let page = browser.submit_login(&server, &form, USER, PASSWORD).await;
    assert_generic_refusal(&page);
    let wrong = browser.submit_login(&server, &form, USER, "wrong").await;
    assert_eq!(page.body, wrong.body, "a lock reads like a wrong password");

    unlock_user(&*server.store, &*server.audit, USER)
        .await
        .expect("unlock");
    assert_eq!(server.audited("admin.user.unlocked"), 1);
    let page = browser.submit_login(&server, &form, USER, PASSWORD).await;
    code_from(&server, &page, &params);
}

/// No delay before the lock, and no per-IP limit in the way.
fn lock_at_ten_without_delay(config: &mut echo_identity::IdentityConfig) {
    config.login_attempts_per_minute = 1_000;
    config.lockout.free_failures = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_wrong_passwords_lock_the_account_on_sqlite() {
    let (server, _clock) = Server::start_manual(lock_at_ten_without_delay).await;
    parallel_guesses_hold_the_lockout(Arc::new(server)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_wrong_passwords_lock_the_account_on_postgres() {
    let db = echo_testkit::PgTestDb::create("identity_parallel_lockout").await;
    {
        let (server, _clock) =
            Server::start_manual_on(Some(&db.url), lock_at_ten_without_delay).await;
        parallel_guesses_hold_the_lockout(Arc::new(server)).await;
    }
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_guesses_under_the_default_policy_get_five_checks() {
    let (server, _clock) =
        Server::start_manual(|config| config.login_attempts_per_minute = 1_000).await;
    let server = Arc::new(server);
    let browser = Arc::new(Browser::new());
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let form = Arc::new(browser.get(&server.authorize_url(&params)).await);
    let mut guesses = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (server, browser, form) = (server.clone(), browser.clone(), form.clone());
        guesses.spawn(async move {
            browser
                .submit_login(&server, &form, USER, &format!("w{i}"))
                .await
        });
    }
    while let Some(page) = guesses.join_next().await {
        assert_generic_refusal(&page.expect("guess task"));
    }
    // Five free guesses, then the delay refuses the rest unchecked.
    assert_eq!(failures(&server, "wrong_password"), 5);
}

/// Regression: a reservation counts as a failure until its guess settles, so
/// eight correct logins at once used to see the delay reached by the five
/// in flight and three were refused (and audited as locked).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_correct_logins_all_succeed() {
    let (server, _clock) =
        Server::start_manual(|config| config.login_attempts_per_minute = 1_000).await;
    let server = Arc::new(server);
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let server = server.clone();
        logins.spawn(async move {
            let browser = Browser::new();
            let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
            let form = browser.get(&server.authorize_url(&params)).await;
            let page = browser.submit_login(&server, &form, USER, PASSWORD).await;
            code_from(&server, &page, &params)
        });
    }
    while let Some(code) = logins.join_next().await {
        assert!(!code.expect("login task").is_empty());
    }
    assert_eq!(failures(&server, "locked"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_inactive_users_are_refused_like_wrong_passwords() {
    let (server, _clock) = Server::start_with_manual_clock().await;
    admin::invite_user(
        &*server.store,
        &*server.audit,
        &*server.clock,
        "newbie".into(),
        None,
        vec![],
    )
    .await
    .expect("invite");
    let browser = Browser::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let wrong = password_step(&server, &browser, &params, USER, "wrong").await;
    let missing = password_step(&server, &browser, &params, "nobody", PASSWORD).await;
    let invited = password_step(&server, &browser, &params, "newbie", "anything-at-all").await;
    for page in [&wrong, &missing, &invited] {
        assert_generic_refusal(page);
    }
    assert_eq!(failures(&server, "unknown_user"), 1);
    assert_eq!(failures(&server, "invited"), 1);
}

// ---- TOTP ----------------------------------------------------------------

/// Logs `browser` in as alice (password only), enrols TOTP from the
/// account page, and returns the secret and the recovery codes.
pub(crate) async fn enrol_from_account_page(
    server: &Server,
    clock: &ManualClock,
    browser: &Browser,
) -> (String, Vec<String>) {
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let page = password_step(server, browser, &params, USER, PASSWORD).await;
    let claims = id_token_claims(server, &page, &params, &pkce).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));

    let enrol = browser.get(&server.url("/account/totp")).await;
    assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.body);
    let secret = enrolment_secret(&enrol);
    assert_eq!(
        echo_testkit::totp::base32_decode(&secret).len(),
        20,
        "160-bit secret"
    );
    // Issue 14 §10: showing the page again (a reload, a second tab) keeps
    // the enrolment in progress: the secret already scanned stays valid.
    let again = browser.get(&server.url("/account/totp")).await;
    assert_eq!(enrolment_secret(&again), secret, "the enrolment goes on");
    let enrolled_before = server.audited("auth.mfa.enrolled");
    let wrong = submit_code(server, browser, &enrol, "000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.body);
    assert_eq!(enrolment_secret(&wrong), secret, "the same secret again");
    assert_eq!(server.audited("auth.mfa.enrolled"), enrolled_before);
    let done = submit_code(server, browser, &enrol, &totp(&secret, clock.now())).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(server.audited("auth.mfa.enrolled"), enrolled_before + 1);
    let enrolled = server
        .audit
        .events()
        .into_iter()
        .rfind(|e| e.action == "auth.mfa.enrolled")
        .expect("auth.mfa.enrolled");
    assert_eq!(enrolled.actor.as_deref(), Some(server.user_id.as_str()));
    assert_eq!(enrolled.details["method"], "totp");
    let codes = recovery_codes(&done);
    assert_eq!(codes.len(), 10);
    let account = browser.get(&server.url("/account")).await;
    assert!(
        account.body.contains("10 recovery codes left"),
        "{}",
        account.body
    );
    (secret, codes)
}

/// A fresh login (`prompt=login`) up to the second-factor page.
pub(crate) async fn to_second_step(server: &Server, browser: &Browser, params: &Params) -> Page {
    let page = password_step(server, browser, params, USER, PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        page.body.contains(r#"action="/login/mfa""#),
        "{}",
        page.body
    );
    assert!(browser.cookie("echo_mfa").is_some());
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrolment_then_login_with_a_code_puts_otp_in_amr() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (secret, _) = enrol_from_account_page(&server, &clock, &browser).await;
    clock.advance(30);

    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    let page = submit_code(&server, &browser, &step, &totp(&secret, clock.now())).await;
    let claims = id_token_claims(&server, &page, &params, &pkce).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert!(
        browser.cookie("echo_mfa").is_none(),
        "pending login cleared"
    );
    assert_eq!(server.audited("auth.mfa.success"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_totp_code_reused_within_its_window_is_refused() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (secret, _) = enrol_from_account_page(&server, &clock, &browser).await;
    clock.advance(30);
    let code = totp(&secret, clock.now());

    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new()).set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    let page = submit_code(&server, &browser, &step, &code).await;
    code_from(&server, &page, &params);

    // The same code again, 10 s later, still inside its window: refused.
    clock.advance(10);
    let step = to_second_step(&server, &browser, &params).await;
    let replay = submit_code(&server, &browser, &step, &code).await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED, "{}", replay.body);
    assert!(replay.body.contains("Invalid code."));
    assert!(replay.location().is_none());
    // The next step's code works.
    clock.advance(30);
    let page = submit_code(&server, &browser, &replay, &totp(&secret, clock.now())).await;
    code_from(&server, &page, &params);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_code_works_once() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (_, codes) = enrol_from_account_page(&server, &clock, &browser).await;

    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    let page = submit_code(&server, &browser, &step, &codes[3].to_uppercase()).await;
    let claims = id_token_claims(&server, &page, &params, &pkce).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));

    let step = to_second_step(&server, &browser, &params).await;
    let again = submit_code(&server, &browser, &step, &codes[3]).await;
    assert_eq!(again.status, StatusCode::UNAUTHORIZED, "{}", again.body);
    assert!(again.body.contains("Invalid code."));
    let account = browser.get(&server.url("/account")).await;
    assert!(
        account.body.contains("9 recovery codes left"),
        "{}",
        account.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_requires_mfa_forces_enrolment_at_login() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let roles = vec!["admin".to_owned()];
    admin::set_roles(&*server.store, &*server.audit, USER, roles)
        .await
        .expect("set roles");
    let browser = Browser::new();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let enrol = password_step(&server, &browser, &params, USER, PASSWORD).await;
    assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.body);
    assert!(enrol.body.contains(r#"action="/login/mfa""#));
    let secret = enrolment_secret(&enrol);
    assert!(browser.cookie("echo_sso").is_none(), "not logged in yet");

    let done = submit_code(&server, &browser, &enrol, &totp(&secret, clock.now())).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(recovery_codes(&done).len(), 10);
    assert!(browser.cookie("echo_sso").is_some());
    // "Continue" goes back through /authorize, answered by the session.
    let next = unescape_html(between(&done.body, r#"<a class="button" href=""#, "\""));
    let page = browser.get(&server.url(&next)).await;
    let claims = id_token_claims(&server, &page, &params, &pkce).await;
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    // The same user's next login asks for a code.
    let fresh = Browser::new();
    let page = password_step(&server, &fresh, &params, USER, PASSWORD).await;
    assert!(page.body.contains("Two-step verification"), "{}", page.body);
    assert!(!page.body.contains("<svg"), "no new enrolment");
}

// ---- user states ---------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_user_cannot_log_in_and_their_refresh_token_stops_working() {
    let (server, _clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let tokens = offline_tokens(&server, &browser).await;
    let refresh_token = tokens["refresh_token"].as_str().expect("refresh token");

    change_state(
        &*server.store,
        &*server.audit,
        &*server.clock,
        USER,
        UserState::Suspended,
    )
    .await
    .expect("suspend");
    assert_eq!(server.audited("admin.user.state_changed"), 1);

    let page = refresh(&server, WEB_AUTH, refresh_token, &[]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_grant");
    let access = tokens["access_token"].as_str().expect("access token");
    assert_eq!(
        userinfo(&server, access).await.status,
        StatusCode::UNAUTHORIZED
    );
    // The SSO session no longer answers; the password no longer works.
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
    let page = password_step(&server, &browser, &params, USER, PASSWORD).await;
    assert_generic_refusal(&page);
    assert_eq!(failures(&server, "suspended"), 1);

    // Reactivated, they log in again; the old refresh token stays dead.
    change_state(
        &*server.store,
        &*server.audit,
        &*server.clock,
        USER,
        UserState::Active,
    )
    .await
    .expect("activate");
    let page = password_step(&server, &browser, &params, USER, PASSWORD).await;
    code_from(&server, &page, &params);
    let page = refresh(&server, WEB_AUTH, refresh_token, &[]).await;
    assert_oauth_error(&page, StatusCode::BAD_REQUEST, "invalid_grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_to_active_is_refused_with_a_clear_error() {
    let (server, _clock) = Server::start_with_manual_clock().await;
    let (store, audit, clock) = (&*server.store, &*server.audit, &*server.clock);
    change_state(store, audit, clock, USER, UserState::Deleted)
        .await
        .expect("delete");
    let error = change_state(store, audit, clock, USER, UserState::Active)
        .await
        .expect_err("deleted is final");
    assert_eq!(
        error.to_string(),
        "cannot move a user from deleted to active (allowed from deleted: none)"
    );
    let error = admin::activate_user(store, audit, clock, USER, Some("new-password".into()))
        .await
        .expect_err("deleted is final");
    assert!(error.to_string().contains("from deleted to active"));
    assert_eq!(server.audited("admin.user.state_changed"), 1);
}
