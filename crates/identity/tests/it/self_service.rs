//! Passwords people manage themselves: the change form, and the reset by a
//! link sent by mail to a real SMTP server (aiosmtpd, `echo_testkit::smtp`),
//! with the attacks on the link.

use std::sync::Arc;
use std::time::Duration;

use echo_core::audit::Outcome;
use echo_core::{Clock, ManualClock, SystemClock};
use echo_edge::{Origin, TrustedProxies};
use echo_identity::IdentityError;
use echo_identity::admin::{NewUser, add_user};
use echo_testkit::smtp::{Delivered, SmtpServer};
use reqwest::StatusCode;

use crate::common::{Browser, EMAIL, MAIL_FROM, PASSWORD, Page, Server, USER};
use crate::tokens::{WEB_AUTH, offline_tokens, refresh, text};

const NEW_PASSWORD: &str = "a brand new passphrase 42";
const MAIL_WAIT: Duration = Duration::from_secs(20);

async fn mailing(smtp: &SmtpServer) -> Server {
    mailing_with(smtp, Arc::new(SystemClock), |_| {}).await
}

async fn mailing_with(
    smtp: &SmtpServer,
    clock: Arc<dyn Clock>,
    configure: impl FnOnce(&mut echo_identity::IdentityConfig),
) -> Server {
    Server::start_mailing(&smtp.url(), clock, configure).await.0
}

/// Fills in and submits the form on `page` with `fields` (its hidden
/// fields, the CSRF token among them, kept).
async fn submit(
    browser: &Browser,
    server: &Server,
    page: &Page,
    action: &str,
    fields: &[(&str, &str)],
) -> Page {
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let mut form = page.hidden_fields();
    form.extend(
        fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    browser.post_form(&server.url(action), &form).await
}

/// Asks for a reset link for `email` from `browser`.
async fn forgot(server: &Server, browser: &Browser, email: &str) -> Page {
    let page = browser.get(&server.url("/password/forgot")).await;
    submit(
        browser,
        server,
        &page,
        "/password/forgot",
        &[("email", email)],
    )
    .await
}

/// Asks for a link for `email` and returns the mail that brings it.
async fn reset_mail(server: &Server, smtp: &SmtpServer, email: &str) -> Delivered {
    let before = smtp.messages().len();
    let page = forgot(server, &Browser::new(), email).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    smtp.wait_for(before + 1, MAIL_WAIT)
        .pop()
        .expect("a message")
}

fn link_of(mail: &Delivered) -> String {
    mail.link("/password/reset?token=")
        .unwrap_or_else(|| panic!("no reset link in {mail:?}"))
}

/// Opens `link` and sets `password` through its form.
async fn use_link(server: &Server, browser: &Browser, link: &str, password: &str) -> Page {
    let form = browser.get(link).await;
    if form.status != StatusCode::OK {
        return form;
    }
    submit(
        browser,
        server,
        &form,
        "/password/reset",
        &[("new_password", password)],
    )
    .await
}

/// Whether `username` can sign in with `password` (a fresh browser).
async fn can_log_in(server: &Server, username: &str, password: &str) -> bool {
    let pkce = crate::common::Pkce::new();
    let params =
        crate::common::Params::code_flow(crate::common::WEB, crate::common::WEB_REDIRECT, &pkce);
    let browser = Browser::new();
    let form = browser.get(&server.authorize_url(&params)).await;
    let page = browser
        .submit_login(server, &form, username, password)
        .await;
    page.status == StatusCode::SEE_OTHER
}

fn origin(ip: &str) -> Origin {
    Origin::of(
        Some(ip.parse().expect("ip")),
        &reqwest::header::HeaderMap::new(),
        &TrustedProxies::default(),
    )
}

// ---- mail ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_mail_reset_then_sign_in_with_the_new_password() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let login_page = Browser::new()
        .get(&server.authorize_url(&crate::common::Params::code_flow(
            crate::common::WEB,
            crate::common::WEB_REDIRECT,
            &crate::common::Pkce::new(),
        )))
        .await;
    assert!(login_page.body.contains(r#"href="/password/forgot""#));

    let mail = reset_mail(&server, &smtp, EMAIL).await;
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    assert!(MAIL_FROM.contains(&mail.from), "{}", mail.from);
    assert_eq!(mail.content_type, "multipart/alternative");
    assert_eq!(mail.subject, "Reset your Echo password");
    let link = link_of(&mail);
    assert!(
        link.starts_with(&server.url("/password/reset?token=")),
        "{link}"
    );
    let html = mail.html.as_deref().expect("an HTML part");
    assert!(html.contains(&link) && html.contains("<a href="), "{html}");

    let browser = Browser::new();
    let done = use_link(&server, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Password changed"), "{}", done.body);
    assert!(can_log_in(&server, USER, NEW_PASSWORD).await);
    assert!(!can_log_in(&server, USER, PASSWORD).await);
    assert_eq!(server.audited("account.password.reset_requested"), 1);
    assert_eq!(server.audited("account.password.reset"), 1);
    let reset = server
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "account.password.reset")
        .expect("reset event");
    assert_eq!(reset.actor.as_deref(), Some(server.user_id.as_str()));
    // Only the hash is kept.
    let token = link.split("token=").nth(1).expect("token");
    let stored: Vec<String> = {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(server.db_url.as_deref().expect("db"))
            .await
            .expect("db");
        sqlx::query_scalar("SELECT token_hash FROM password_resets")
            .fetch_all(&mut db)
            .await
            .expect("rows")
    };
    assert_eq!(stored.len(), 1);
    assert_ne!(stored[0], token);
    assert!(!stored[0].contains(token));
}

/// The mail server is down when the link is asked for: the message waits
/// in the queue, is retried with back-off, and goes out once the server is
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_server_that_is_down_loses_nothing() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let (server, queue) = Server::start_mailing(
        &format!("smtp://127.0.0.1:{port}"),
        Arc::new(SystemClock),
        |_| {},
    )
    .await;
    let page = forgot(&server, &Browser::new(), EMAIL).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    // Several attempts fail meanwhile (back-off from 100 ms).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(queue.depth().await.expect("depth").pending, 1);
    assert_eq!(queue.depth().await.expect("depth").dead, 0);

    let smtp = SmtpServer::start_on(port);
    let mail = smtp.wait_for(1, MAIL_WAIT).pop().expect("the message");
    assert_eq!(mail.to, vec![EMAIL.to_owned()]);
    let done = use_link(&server, &Browser::new(), &link_of(&mail), NEW_PASSWORD).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    let deadline = std::time::Instant::now() + MAIL_WAIT;
    while queue.depth().await.expect("depth").pending != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the job never completed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_the_forgot_page_says_it_is_not_available() {
    let server = Server::start().await;
    let page = Browser::new().get(&server.url("/password/forgot")).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(page.body.contains("not set up here"), "{}", page.body);
}

// ---- the answer to /password/forgot -------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_answers_the_same_words_for_known_and_unknown_addresses() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let known = forgot(&server, &Browser::new(), EMAIL).await;
    let unknown = forgot(&server, &Browser::new(), "nobody@example.test").await;
    assert_eq!(known.status, StatusCode::OK);
    assert_eq!(unknown.status, known.status);
    assert_eq!(unknown.body, known.body);
    assert!(
        known.body.contains("If an account has this address"),
        "{}",
        known.body
    );
    smtp.wait_for(1, MAIL_WAIT);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.messages().len(), 1, "no mail for an unknown address");
}

/// The answer is made before the address is looked up, by the same code
/// for every address: on a single-threaded runtime the lookup (a task of
/// its own) cannot start until the caller has its answer, so no store
/// access or mail can shape the answer or its timing. (Each request is
/// checked on its own: a request's own awaits, its rate limits in the
/// store, may let an earlier request's lookup run.)
#[tokio::test]
async fn the_answer_is_made_before_the_address_is_looked_up() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let meta = origin("127.0.0.9");
    let reset_requested = || server.audited("account.password.reset_requested");
    for (looked_up, address) in [EMAIL, "nobody@example.test"].into_iter().enumerate() {
        let lookup = server
            .provider
            .request_password_reset(address, &meta)
            .await
            .expect(address);
        // Checked before this test awaits anything, so before the task ran.
        assert_eq!(reset_requested(), looked_up, "{address} not looked up yet");
        lookup.await.expect("the lookup's task");
        assert_eq!(reset_requested(), looked_up + 1, "{address} looked up");
    }
    let events = server.audit.events();
    let requested: Vec<_> = events
        .iter()
        .filter(|e| e.action == "account.password.reset_requested")
        .collect();
    assert_eq!(requested.len(), 2);
    assert_eq!(requested.iter().filter(|e| e.actor.is_some()).count(), 1);
    let unknown = requested
        .iter()
        .find(|e| e.actor.is_none())
        .expect("unknown");
    assert!(
        !serde_json::to_string(unknown).unwrap().contains("nobody"),
        "the address is not kept"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_is_rate_limited_per_address_and_per_ip() {
    let smtp = SmtpServer::start();
    let server = mailing_with(&smtp, Arc::new(SystemClock), |c| {
        c.reset_requests_per_address = 2;
        c.reset_requests_per_ip = 4;
    })
    .await;
    let meta = |n: u8| origin(&format!("127.0.0.{n}"));
    let p = &server.provider;
    assert!(p.request_password_reset(EMAIL, &meta(10)).await.is_ok());
    assert!(p.request_password_reset(EMAIL, &meta(11)).await.is_ok());
    let limited = p
        .request_password_reset(&EMAIL.to_uppercase(), &meta(12))
        .await
        .unwrap_err();
    assert!(
        matches!(limited, IdentityError::RateLimited { .. }),
        "{limited:?}"
    );
    for i in 0..4 {
        assert!(
            p.request_password_reset(&format!("x{i}@example.test"), &meta(20))
                .await
                .is_ok()
        );
    }
    let limited = p
        .request_password_reset("y@example.test", &meta(20))
        .await
        .unwrap_err();
    assert!(
        matches!(limited, IdentityError::RateLimited { .. }),
        "{limited:?}"
    );

    // Over HTTP: 429 with Retry-After.
    let browser = Browser::from_address("127.0.0.20");
    let page = forgot(&server, &browser, "z@example.test").await;
    assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS, "{}", page.body);
    assert!(page.header("retry-after").is_some());
    let bad = forgot(&server, &Browser::new(), "not an address").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
}

// ---- attacks on the link ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_link_is_refused() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let first = use_link(&server, &Browser::new(), &link, NEW_PASSWORD).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let again = Browser::new().get(&link).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert!(
        again.body.contains("This link does not work"),
        "{}",
        again.body
    );
    assert!(can_log_in(&server, USER, NEW_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_link_is_refused() {
    let smtp = SmtpServer::start();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let server = mailing_with(&smtp, clock.clone(), |_| {}).await;
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let browser = Browser::new();
    let form = browser.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    clock.advance(30 * 60);
    let page = submit(
        &browser,
        &server,
        &form,
        "/password/reset",
        &[("new_password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(
        page.body.contains("This link does not work"),
        "{}",
        page.body
    );
    assert_eq!(
        Browser::new().get(&link).await.status,
        StatusCode::BAD_REQUEST
    );
    assert!(can_log_in(&server, USER, PASSWORD).await);
}

/// The other side of [`an_expired_link_is_refused`]: "valid 30 minutes"
/// means a link still works in its 30th minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_works_until_its_thirty_minutes_are_up() {
    let smtp = SmtpServer::start();
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let server = mailing_with(&smtp, clock.clone(), |_| {}).await;
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    clock.advance(29 * 60);
    let browser = Browser::new();
    let form = browser.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    clock.advance(59);
    let page = submit(
        &browser,
        &server,
        &form,
        "/password/reset",
        &[("new_password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(can_log_in(&server, USER, NEW_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_changes_only_its_own_users_password() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    server
        .add_user_with_email("bob", "bob's own passphrase", Some("bob@example.test"))
        .await;
    let bobs = link_of(&reset_mail(&server, &smtp, "bob@example.test").await);
    let page = use_link(&server, &Browser::new(), &bobs, NEW_PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(can_log_in(&server, "bob", NEW_PASSWORD).await);
    assert!(
        can_log_in(&server, USER, PASSWORD).await,
        "alice keeps hers"
    );
    assert!(!can_log_in(&server, USER, NEW_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_token_is_refused() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let last = link.chars().last().expect("char");
    let flipped = if last == 'A' { 'B' } else { 'A' };
    let tampered = format!("{}{flipped}", &link[..link.len() - 1]);
    for bad in [
        tampered.as_str(),
        &link[..link.len() - 1],
        &format!("{link}x"),
    ] {
        let page = Browser::new().get(bad).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    // A tampered token in the form is refused as well, and the real one
    // still works afterwards.
    let browser = Browser::new();
    let form = browser.get(&link).await;
    let mut fields = form.hidden_fields();
    for (name, value) in &mut fields {
        if name == "token" {
            value.push('x');
        }
    }
    fields.push(("new_password".into(), NEW_PASSWORD.into()));
    let page = browser
        .post_form(&server.url("/password/reset"), &fields)
        .await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(can_log_in(&server, USER, PASSWORD).await);
    let page = use_link(&server, &Browser::new(), &link, NEW_PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uses_of_one_link_exactly_one_succeeds() {
    let smtp = SmtpServer::start();
    let server = Arc::new(mailing(&smtp).await);
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let browser = Arc::new(Browser::new());
    let form = browser.get(&link).await;
    let uses = (0..8).map(|i| {
        let (server, browser) = (server.clone(), browser.clone());
        let mut fields = form.hidden_fields();
        fields.push(("new_password".into(), format!("{NEW_PASSWORD} number {i}")));
        tokio::spawn(async move {
            browser
                .post_form(&server.url("/password/reset"), &fields)
                .await
                .status
        })
    });
    let mut statuses = Vec::new();
    for used in uses {
        statuses.push(used.await.expect("task"));
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::BAD_REQUEST),
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_ends_every_session_and_clears_the_lockout() {
    let smtp = SmtpServer::start();
    let server = mailing_with(&smtp, Arc::new(SystemClock), |c| {
        c.lockout.free_failures = 3;
        c.lockout.lock_after = 3;
    })
    .await;
    let signed_in = Browser::new();
    let tokens = offline_tokens(&server, &signed_in).await;
    let refresh_token = text(&tokens, "refresh_token");
    for _ in 0..3 {
        assert!(!can_log_in(&server, USER, "wrong password!").await);
    }
    assert!(!can_log_in(&server, USER, PASSWORD).await, "locked");

    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let page = use_link(&server, &Browser::new(), &link, NEW_PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(
        can_log_in(&server, USER, NEW_PASSWORD).await,
        "the lockout is cleared"
    );
    let account = signed_in.get(&server.url("/account")).await;
    assert_eq!(
        account.status,
        StatusCode::UNAUTHORIZED,
        "the session ended"
    );
    let refreshed = refresh(&server, WEB_AUTH, &refresh_token, &[]).await;
    assert_eq!(
        refreshed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refreshed.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reset_to_a_weak_password_shows_the_form_again() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let link = link_of(&reset_mail(&server, &smtp, EMAIL).await);
    let browser = Browser::new();
    for (weak, why) in [("short", "too short"), ("iloveyou", "most common")] {
        let page = use_link(&server, &browser, &link, weak).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
        assert!(page.body.contains(why), "{}", page.body);
        assert!(page.body.contains(r#"name="new_password""#));
    }
    let page = use_link(&server, &browser, &link, NEW_PASSWORD).await;
    assert_eq!(
        page.status,
        StatusCode::OK,
        "the link was not spent: {}",
        page.body
    );
}

// ---- change password ----------------------------------------------------

/// A browser signed in as alice, and the change form it got.
async fn change_form(server: &Server) -> (Browser, Page) {
    let browser = Browser::new();
    offline_tokens(server, &browser).await;
    let form = browser.get(&server.url("/account/password")).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains(r#"name="sign_out_elsewhere""#) && form.body.contains("checked"));
    (browser, form)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_password_signs_out_everywhere_else_by_default() {
    let server = Server::start().await;
    let elsewhere = Browser::new();
    let other_tokens = offline_tokens(&server, &elsewhere).await;
    let (browser, form) = change_form(&server).await;
    let done = submit(
        &browser,
        &server,
        &form,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
            ("sign_out_elsewhere", "on"),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Password changed"));
    assert_eq!(
        browser.get(&server.url("/account")).await.status,
        StatusCode::OK,
        "this session stays"
    );
    assert_eq!(
        elsewhere.get(&server.url("/account")).await.status,
        StatusCode::UNAUTHORIZED
    );
    let refreshed = refresh(
        &server,
        WEB_AUTH,
        &text(&other_tokens, "refresh_token"),
        &[],
    )
    .await;
    assert_eq!(
        refreshed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        refreshed.body
    );
    assert!(can_log_in(&server, USER, NEW_PASSWORD).await);
    assert!(!can_log_in(&server, USER, PASSWORD).await);
    let event = server
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "account.password.changed")
        .expect("audited");
    assert_eq!(event.actor.as_deref(), Some(server.user_id.as_str()));
    assert_eq!(event.details["signed_out_elsewhere"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unticking_keeps_the_other_sessions() {
    let server = Server::start().await;
    let elsewhere = Browser::new();
    let other_tokens = offline_tokens(&server, &elsewhere).await;
    let (browser, form) = change_form(&server).await;
    let done = submit(
        &browser,
        &server,
        &form,
        "/account/password",
        &[
            ("current_password", PASSWORD),
            ("new_password", NEW_PASSWORD),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(
        elsewhere.get(&server.url("/account")).await.status,
        StatusCode::OK
    );
    let refreshed = refresh(
        &server,
        WEB_AUTH,
        &text(&other_tokens, "refresh_token"),
        &[],
    )
    .await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_current_password_or_a_weak_new_one_is_refused() {
    let server = Server::start().await;
    let (browser, form) = change_form(&server).await;
    let cases = [
        (
            "not my password",
            NEW_PASSWORD,
            StatusCode::UNAUTHORIZED,
            "not right",
        ),
        (PASSWORD, "short", StatusCode::BAD_REQUEST, "too short"),
        (
            PASSWORD,
            "Password1",
            StatusCode::BAD_REQUEST,
            "most common",
        ),
    ];
    for (current, new, status, why) in cases {
        let page = submit(
            &browser,
            &server,
            &form,
            "/account/password",
            &[("current_password", current), ("new_password", new)],
        )
        .await;
        assert_eq!(page.status, status, "{}", page.body);
        assert!(page.body.contains(why), "{}", page.body);
    }
    assert!(can_log_in(&server, USER, PASSWORD).await);
    let failed = server
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == "account.password.changed" && e.outcome == Outcome::Failure)
        .count();
    assert_eq!(failed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_form_needs_a_session_and_its_csrf_token() {
    let server = Server::start().await;
    let anonymous = Browser::new().get(&server.url("/account/password")).await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let (browser, _form) = change_form(&server).await;
    let forged = browser
        .post_form(
            &server.url("/account/password"),
            &[
                ("current_password".into(), PASSWORD.into()),
                ("new_password".into(), NEW_PASSWORD.into()),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    assert!(can_log_in(&server, USER, PASSWORD).await);
}

// ---- the policy everywhere a password is set ----------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_apply_the_same_policy() {
    let server = Server::start().await;
    let new = |password: &str| NewUser {
        username: "carol".into(),
        password: password.into(),
        email: None,
        roles: vec![],
    };
    for weak in ["qwertyuiop", "short"] {
        let refused = add_user(&*server.store, &*server.audit, &*server.clock, new(weak))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, IdentityError::WeakPassword(_)),
            "{refused:?}"
        );
    }
    echo_identity::admin::invite_user(
        &*server.store,
        &*server.audit,
        &*server.clock,
        "dave".into(),
        None,
        vec![],
    )
    .await
    .expect("invite");
    let refused = echo_identity::admin::activate_user(
        &*server.store,
        &*server.audit,
        &*server.clock,
        "dave",
        Some("password123".into()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, IdentityError::WeakPassword(_)),
        "{refused:?}"
    );
}
