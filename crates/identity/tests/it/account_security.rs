//! The account page's second factor (recovery codes, another
//! authenticator, TOTP off, each proven by a code; never off for a role
//! that requires it) and its sessions and applications.

use echo_core::Clock;
use echo_core::audit::Outcome;
use reqwest::StatusCode;

use crate::accounts::{
    enrol_from_account_page, enrolment_secret, recovery_codes, submit_code, to_second_step, totp,
};
use crate::common::{Browser, Page, Params, Pkce, Server, WEB, WEB_REDIRECT};
use crate::email_links::submit;
use crate::tokens::{WEB_AUTH, offline_tokens, refresh, text};

/// Submits the account page's second-factor form with `code` and `action`.
async fn change_mfa(server: &Server, browser: &Browser, code: &str, action: &str) -> Page {
    let account = browser.get(&server.url("/account")).await;
    assert_eq!(account.status, StatusCode::OK, "{}", account.body);
    submit(
        browser,
        server,
        &account,
        "/account/mfa",
        &[("code", code), ("action", action)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_regenerates_codes_replaces_the_authenticator_and_turns_totp_off() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (secret, codes) = enrol_from_account_page(&server, &clock, &browser).await;

    // New recovery codes, proven by an old one; the old set stops working.
    let page = change_mfa(&server, &browser, &codes[0], "recovery_codes").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let fresh = recovery_codes(&page);
    assert_eq!(fresh.len(), 10);
    let stale = change_mfa(&server, &browser, &codes[1], "recovery_codes").await;
    assert_eq!(stale.status, StatusCode::UNAUTHORIZED, "{}", stale.body);
    let forged = browser
        .post_form(
            &server.url("/account/mfa"),
            &[
                ("code".into(), fresh[0].clone()),
                ("action".into(), "remove".into()),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "no CSRF token");

    // Another authenticator: a current code, then the new secret confirmed.
    clock.advance(30);
    let enrol = change_mfa(&server, &browser, &totp(&secret, clock.now()), "replace").await;
    assert_eq!(enrol.status, StatusCode::OK, "{}", enrol.body);
    let new_secret = enrolment_secret(&enrol);
    assert_ne!(new_secret, secret);
    let done = submit_code(&server, &browser, &enrol, &totp(&new_secret, clock.now())).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let codes = recovery_codes(&done);
    clock.advance(30);
    let old = change_mfa(&server, &browser, &totp(&secret, clock.now()), "remove").await;
    assert_eq!(
        old.status,
        StatusCode::UNAUTHORIZED,
        "the old app's codes fail"
    );

    // Off, by a recovery code.
    let off = change_mfa(&server, &browser, &codes[2], "remove").await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    let account = browser.get(&server.url("/account")).await;
    assert!(
        account.body.contains("Two-step verification is off"),
        "{}",
        account.body
    );
    for action in [
        "auth.mfa.recovery_codes_replaced",
        "auth.mfa.replace_started",
        "auth.mfa.removed",
    ] {
        assert_eq!(server.audited(action), 1, "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_requires_totp_keeps_it() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (secret, _codes) = enrol_from_account_page(&server, &clock, &browser).await;
    server
        .store
        .set_user_roles(&server.user_id, &["admin".to_owned()])
        .await
        .unwrap();
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce).set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    clock.advance(30);
    let signed_in = submit_code(&server, &browser, &step, &totp(&secret, clock.now())).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );

    let account = browser.get(&server.url("/account")).await;
    assert!(
        account.body.contains("cannot be turned off"),
        "{}",
        account.body
    );
    assert!(!account.body.contains(r#"value="remove""#));
    clock.advance(30);
    let refused = change_mfa(&server, &browser, &totp(&secret, clock.now()), "remove").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert!(
        browser
            .get(&server.url("/account"))
            .await
            .body
            .contains("recovery codes left")
    );
}

/// Posts `fields` to `action` with the CSRF token of `page`.
async fn post(
    browser: &Browser,
    server: &Server,
    page: &Page,
    action: &str,
    fields: &[(&str, &str)],
) -> Page {
    let mut form = vec![("csrf".to_owned(), page.inputs()["csrf"].clone())];
    form.extend(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    browser.post_form(&server.url(action), &form).await
}

/// A browser signed in as alice through the web client, holding a
/// refresh token.
async fn signed_in(server: &Server, address: &str) -> (Browser, String) {
    let browser = Browser::from_address(address);
    let tokens = offline_tokens(server, &browser).await;
    (browser, text(&tokens, "refresh_token"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sees_and_ends_sessions_and_revokes_applications() {
    let server = Server::start().await;
    let (here, here_refresh) = signed_in(&server, "127.0.0.1").await;
    let (there, _) = signed_in(&server, "127.0.0.2").await;

    let page = here.get(&server.url("/account/sessions")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(
        page.body.matches(r#"<tr class="session">"#).count(),
        2,
        "{}",
        page.body
    );
    assert!(page.body.contains("(this browser)"));
    assert!(page.body.contains("127.0.0.2") && page.body.contains("just now"));
    assert!(page.body.contains(r#"<tr class="app">"#) && page.body.contains(">web<"));

    // Sign the other browser out: its SSO session ends, ours stays.
    let other = page.inputs()["session"].clone();
    let ended = post(
        &here,
        &server,
        &page,
        "/account/sessions/end",
        &[("session", &other)],
    )
    .await;
    assert_eq!(ended.status, StatusCode::SEE_OTHER, "{}", ended.body);
    assert_eq!(
        there.get(&server.url("/account")).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        here.get(&server.url("/account")).await.status,
        StatusCode::OK
    );
    assert_eq!(server.audited("account.session.ended"), 1);

    // Revoke the application: its refresh tokens stop working.
    let page = here.get(&server.url("/account/sessions")).await;
    let revoked = post(
        &here,
        &server,
        &page,
        "/account/apps/revoke",
        &[("client_id", "web")],
    )
    .await;
    assert_eq!(revoked.status, StatusCode::SEE_OTHER, "{}", revoked.body);
    let event = server.audited_once("account.app.revoked");
    assert_eq!(event.outcome, Outcome::Success);
    assert_eq!(event.actor.as_deref(), Some(server.user_id.as_str()));
    assert_eq!(event.details["client_id"], "web");
    assert_eq!(event.details["refresh_tokens"], 2, "here and there");
    let refused = refresh(&server, WEB_AUTH, &here_refresh, &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    let page = here.get(&server.url("/account/sessions")).await;
    assert!(!page.body.contains(r#"<tr class="app">"#), "{}", page.body);
    let again = post(
        &here,
        &server,
        &page,
        "/account/apps/revoke",
        &[("client_id", "web")],
    )
    .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);

    // Everywhere: this session too, and every application.
    let (_, other_refresh) = signed_in(&server, "127.0.0.3").await;
    let page = here.get(&server.url("/account/sessions")).await;
    let all = post(&here, &server, &page, "/account/sessions/end-all", &[]).await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(
        here.get(&server.url("/account")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let refused = refresh(&server, WEB_AUTH, &other_refresh, &[]).await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_eq!(server.audited("account.sessions.ended_all"), 1);

    // Forms need the CSRF token and a session.
    let stranger = Browser::new();
    assert_eq!(
        stranger.get(&server.url("/account/sessions")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let forged = here
        .post_form(&server.url("/account/sessions/end-all"), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}
