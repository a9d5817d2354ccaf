//! Links sent by mail to a real SMTP server (aiosmtpd): verifying an
//! address, and what `email_verified` says in ID tokens and userinfo.

use std::time::Duration;

use echo_core::SystemClock;
use echo_testkit::smtp::{Delivered, SmtpServer};
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;

use crate::common::{Browser, EMAIL, Page, Server, decode_jwt, userinfo, web_tokens};

pub(crate) const MAIL_WAIT: Duration = Duration::from_secs(20);

pub(crate) async fn mailing(smtp: &SmtpServer) -> Server {
    Server::start_mailing(&smtp.url(), Arc::new(SystemClock), |_| {})
        .await
        .0
}

/// Submits the form on `page` to `action` with its hidden fields (the CSRF
/// token among them) and `fields`.
pub(crate) async fn submit(
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

/// The next message, after the `before` already delivered.
pub(crate) fn next_mail(smtp: &SmtpServer, before: usize) -> Delivered {
    smtp.wait_for(before + 1, MAIL_WAIT)
        .into_iter()
        .nth(before)
        .expect("a message")
}

fn verify_link(mail: &Delivered) -> String {
    mail.link("/email/verify?token=")
        .unwrap_or_else(|| panic!("no verification link in {mail:?}"))
}

/// Opens a link from a mail and presses its button.
pub(crate) async fn follow(server: &Server, browser: &Browser, link: &str, action: &str) -> Page {
    let page = browser.get(link).await;
    if page.status != StatusCode::OK {
        return page;
    }
    submit(browser, server, &page, action, &[]).await
}

/// Asks for a new verification link from the account page.
async fn resend(server: &Server, smtp: &SmtpServer, browser: &Browser) -> Delivered {
    let before = smtp.messages().len();
    let account = browser.get(&server.url("/account")).await;
    assert!(account.body.contains("not verified"), "{}", account.body);
    let sent = submit(browser, server, &account, "/account/email/resend", &[]).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    next_mail(smtp, before)
}

fn verified(info: &Value) -> &Value {
    &info["email_verified"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_is_verified_by_its_link_once_and_tokens_say_so() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let (browser, tokens) = web_tokens(&server).await;
    let id_token = decode_jwt(tokens["id_token"].as_str().unwrap()).1;
    assert_eq!(id_token["email"], EMAIL);
    assert_eq!(id_token["email_verified"], false);
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(verified(&userinfo(&server, access).await.json()), false);

    assert_eq!(server.audited("account.email.verification_sent"), 0);
    let mail = resend(&server, &smtp, &browser).await;
    assert_eq!(mail.to, [EMAIL]);
    let sent = server.audited_once("account.email.verification_sent");
    assert_eq!(sent.actor.as_deref(), Some(server.user_id.as_str()));
    let link = verify_link(&mail);
    assert!(
        mail.html
            .as_deref()
            .unwrap_or_default()
            .contains("Verify my address")
    );

    // Opening the link (a mail scanner does) spends nothing: the button does.
    let scanner = Browser::new();
    assert_eq!(scanner.get(&link).await.status, StatusCode::OK);
    assert_eq!(scanner.get(&link).await.status, StatusCode::OK);
    let done = follow(&server, &Browser::new(), &link, "/email/verify").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.body.contains("Address verified"));
    let again = follow(&server, &Browser::new(), &link, "/email/verify").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(again.body.contains("This link does not work"));

    assert_eq!(verified(&userinfo(&server, access).await.json()), true);
    let (_, tokens) = web_tokens(&server).await;
    let id_token = decode_jwt(tokens["id_token"].as_str().unwrap()).1;
    assert_eq!(id_token["email_verified"], true);
    assert!(
        browser
            .get(&server.url("/account"))
            .await
            .body
            .contains(">verified<")
    );
    assert_eq!(server.audited("account.email.verified"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_address_is_unverified_and_an_old_link_proves_nothing() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let (browser, tokens) = web_tokens(&server).await;
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let old_link = verify_link(&resend(&server, &smtp, &browser).await);

    let form = browser.get(&server.url("/account/email")).await;
    assert!(form.body.contains(EMAIL), "{}", form.body);
    for bad in ["not an address", "a@b", "<x@y.test>"] {
        let refused = submit(
            &browser,
            &server,
            &form,
            "/account/email",
            &[("email", bad)],
        )
        .await;
        assert_eq!(
            refused.status,
            StatusCode::BAD_REQUEST,
            "{bad}: {}",
            refused.body
        );
        assert!(refused.body.contains("valid email address"));
    }
    let before = smtp.messages().len();
    let changed = submit(
        &browser,
        &server,
        &form,
        "/account/email",
        &[("email", "alice@new.example")],
    )
    .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    let mail = next_mail(&smtp, before);
    assert_eq!(mail.to, ["alice@new.example"]);
    assert_eq!(
        server.audited("account.email.verification_sent"),
        2,
        "the resent link, then the changed address's"
    );
    let info = userinfo(&server, &access).await.json();
    assert_eq!(
        (&info["email"], verified(&info)),
        (&"alice@new.example".into(), &false.into())
    );

    let stale = follow(&server, &Browser::new(), &old_link, "/email/verify").await;
    assert_eq!(stale.status, StatusCode::BAD_REQUEST, "{}", stale.body);
    assert_eq!(verified(&userinfo(&server, &access).await.json()), false);
    let done = follow(
        &server,
        &Browser::new(),
        &verify_link(&mail),
        "/email/verify",
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(verified(&userinfo(&server, &access).await.json()), true);
    assert_eq!(server.audited("account.email.changed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_forms_need_the_csrf_token_a_session_and_a_live_link() {
    let smtp = SmtpServer::start();
    let server = mailing(&smtp).await;
    let (browser, _) = web_tokens(&server).await;
    let form = vec![("email".to_owned(), "x@example.test".to_owned())];
    let forged = browser
        .post_form(&server.url("/account/email"), &form)
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    let forged = browser
        .post_form(&server.url("/account/email/resend"), &[])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);

    let stranger = Browser::new();
    let page = stranger.get(&server.url("/account/email")).await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);

    for link in [
        "/email/verify",
        "/email/verify?token=",
        "/email/verify?token=forged",
    ] {
        let page = stranger.get(&server.url(link)).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{link}: {}",
            page.body
        );
        assert!(page.body.contains("This link does not work"));
    }
    let page = stranger.get(&server.url("/password/forgot")).await;
    let forged = submit(
        &stranger,
        &server,
        &page,
        "/email/verify",
        &[("token", "forged")],
    )
    .await;
    assert_eq!(forged.status, StatusCode::BAD_REQUEST, "{}", forged.body);

    // The per-address limit of links (3 an hour, as for reset links).
    for _ in 0..3 {
        resend(&server, &smtp, &browser).await;
    }
    let account = browser.get(&server.url("/account")).await;
    let limited = submit(&browser, &server, &account, "/account/email/resend", &[]).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
}
