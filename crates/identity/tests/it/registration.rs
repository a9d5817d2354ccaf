//! Opening an account by policy: `/register` (open sign-up, active once the
//! address is verified, the same answer whatever exists) and invitations by
//! mail, against a real SMTP server.

use std::sync::Arc;

use echo_core::SystemClock;
use echo_identity::RegistrationPolicy;
use echo_identity::admin::invite_user;
use echo_testkit::smtp::SmtpServer;
use reqwest::StatusCode;

use crate::common::{Browser, EMAIL, PASSWORD, Params, Pkce, Server, USER, WEB, WEB_REDIRECT};
use crate::email_links::{follow, next_mail, submit};

const NEW_PASSWORD: &str = "a brand new passphrase 42";

async fn with_policy(smtp: &SmtpServer, policy: RegistrationPolicy, domains: &[&str]) -> Server {
    let domains: Vec<String> = domains.iter().map(|d| (*d).to_owned()).collect();
    Server::start_mailing(&smtp.url(), Arc::new(SystemClock), move |config| {
        config.registration = policy;
        config.registration_domains = domains;
    })
    .await
    .0
}

async fn can_log_in(server: &Server, username: &str, password: &str) -> bool {
    let pkce = Pkce::new();
    let params = Params::code_flow(WEB, WEB_REDIRECT, &pkce);
    let browser = Browser::new();
    let form = browser.get(&server.authorize_url(&params)).await;
    let page = browser
        .submit_login(server, &form, username, password)
        .await;
    page.status == StatusCode::SEE_OTHER
}

/// Fills in `/register` from a fresh browser.
async fn sign_up(
    server: &Server,
    username: &str,
    email: &str,
    password: &str,
) -> crate::common::Page {
    let browser = Browser::new();
    let form = browser.get(&server.url("/register")).await;
    submit(
        &browser,
        server,
        &form,
        "/register",
        &[
            ("username", username),
            ("email", email),
            ("password", password),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_sign_up_is_active_only_once_its_address_is_verified() {
    let smtp = SmtpServer::start();
    let server = with_policy(&smtp, RegistrationPolicy::Open, &[]).await;
    let before = smtp.messages().len();
    let page = sign_up(&server, "newcomer", "newcomer@example.test", NEW_PASSWORD).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Check your email"));
    let mail = next_mail(&smtp, before);
    assert_eq!(mail.to, ["newcomer@example.test"]);
    let link = mail.link("/email/verify?token=").expect("a link");
    assert!(
        !can_log_in(&server, "newcomer", NEW_PASSWORD).await,
        "not yet"
    );

    let done = follow(&server, &Browser::new(), &link, "/email/verify").await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(can_log_in(&server, "newcomer", NEW_PASSWORD).await);
    assert_eq!(server.audited("account.registered"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_username_or_address_gets_the_same_answer_and_a_mail_instead() {
    let smtp = SmtpServer::start();
    let server = with_policy(&smtp, RegistrationPolicy::Open, &[]).await;
    // Each test has its own SMTP server: the messages are counted from 0.
    let fresh = sign_up(&server, "someone", "someone@example.test", NEW_PASSWORD).await;
    next_mail(&smtp, 0);

    let taken_name = sign_up(&server, USER, "other@example.test", NEW_PASSWORD).await;
    let mail = next_mail(&smtp, 1);
    assert_eq!(mail.to, ["other@example.test"]);
    assert!(mail.subject.contains("another username"), "{mail:?}");

    let taken_address = sign_up(&server, "alice2", EMAIL, NEW_PASSWORD).await;
    let mail = next_mail(&smtp, 2);
    assert_eq!(mail.to, [EMAIL]);
    assert!(mail.subject.contains("already have"), "{mail:?}");
    assert!(mail.text.as_deref().unwrap_or_default().contains(USER));

    for page in [&taken_name, &taken_address] {
        assert_eq!(
            (page.status, &page.body),
            (fresh.status, &fresh.body),
            "the same answer"
        );
    }
    assert!(
        can_log_in(&server, USER, PASSWORD).await,
        "alice is untouched"
    );
    assert!(!can_log_in(&server, "alice2", NEW_PASSWORD).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_up_checks_its_form_the_domains_and_the_per_ip_limit() {
    let smtp = SmtpServer::start();
    let server = with_policy(&smtp, RegistrationPolicy::Open, &["example.test"]).await;
    for (username, email, password, says) in [
        ("bad name!", "x@example.test", NEW_PASSWORD, "username"),
        (
            "okname",
            "not-an-address",
            NEW_PASSWORD,
            "valid email address",
        ),
        ("okname", "x@elsewhere.test", NEW_PASSWORD, "domain"),
        ("okname", "x@example.test", "password", "common"),
        ("okname", "x@example.test", "short", "at least"),
    ] {
        let page = sign_up(&server, username, email, password).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{username} {email}: {}",
            page.body
        );
        assert!(page.body.contains(says), "{says}: {}", page.body);
    }
    let browser = Browser::new();
    let forged = browser
        .post_form(
            &server.url("/register"),
            &[
                ("username".into(), "x".into()),
                ("email".into(), "x@example.test".into()),
            ],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);

    // 30 requests that send mail per IP an hour (with the reset links').
    let mut last = StatusCode::OK;
    for i in 0..31 {
        last = sign_up(
            &server,
            &format!("user{i}"),
            &format!("u{i}@example.test"),
            NEW_PASSWORD,
        )
        .await
        .status;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

/// The login form offers "Create an account" where sign-up is open, and
/// only there: not under `closed` or `invite`, nor under `open` without
/// mail (where `/register` could not send its link).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_links_to_sign_up_only_where_it_is_open() {
    let smtp = SmtpServer::start();
    let login_page = |server: &Server| {
        let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new());
        let url = server.authorize_url(&params);
        async move { Browser::new().get(&url).await }
    };
    let link = r#"<a href="/register">Create an account</a>"#;
    let open = with_policy(&smtp, RegistrationPolicy::Open, &[]).await;
    let page = login_page(&open).await;
    assert!(page.is_login_form(), "{}", page.body);
    assert!(page.body.contains(link), "{}", page.body);
    let form = Browser::new().get(&open.url("/register")).await;
    assert_eq!(form.status, StatusCode::OK, "the link leads to the form");
    for policy in [RegistrationPolicy::Closed, RegistrationPolicy::Invite] {
        let server = with_policy(&smtp, policy, &[]).await;
        let page = login_page(&server).await;
        assert!(page.is_login_form(), "{}", page.body);
        assert!(
            !page.body.contains("/register"),
            "{policy:?}: {}",
            page.body
        );
    }
    let without_mail =
        Server::start_configured(|config| config.registration = RegistrationPolicy::Open).await;
    let page = login_page(&without_mail).await;
    assert!(!page.body.contains("/register"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_is_refused_unless_the_policy_is_open() {
    let smtp = SmtpServer::start();
    for (policy, says) in [
        (RegistrationPolicy::Closed, "closed"),
        (RegistrationPolicy::Invite, "invitation"),
    ] {
        let server = with_policy(&smtp, policy, &[]).await;
        let page = Browser::new().get(&server.url("/register")).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains(says), "{}", page.body);
        let browser = Browser::new();
        let login = browser.get(&server.url("/password/forgot")).await;
        let posted = submit(
            &browser,
            &server,
            &login,
            "/register",
            &[
                ("username", "x"),
                ("email", "x@example.test"),
                ("password", NEW_PASSWORD),
            ],
        )
        .await;
        assert!(
            matches!(posted.status, StatusCode::FORBIDDEN),
            "{}",
            posted.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_by_mail_sets_the_password_and_activates_once() {
    let smtp = SmtpServer::start();
    let server = with_policy(&smtp, RegistrationPolicy::Invite, &[]).await;
    let invited = invite_user(
        &*server.store,
        &*server.audit,
        &SystemClock,
        "guest".into(),
        Some("guest@example.test".into()),
        vec![],
    )
    .await
    .unwrap();
    let before = smtp.messages().len();
    let origin = echo_edge::Origin::of(
        Some("127.0.0.1".parse().unwrap()),
        &reqwest::header::HeaderMap::new(),
        &echo_edge::TrustedProxies::default(),
    );
    assert!(
        server
            .provider
            .send_invitation(&invited, "admin-id", &origin)
            .await
            .unwrap()
    );
    let mail = next_mail(&smtp, before);
    assert_eq!(mail.to, ["guest@example.test"]);
    let link = mail.link("/invitation?token=").expect("an invitation link");

    let browser = Browser::new();
    let form = browser.get(&link).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    assert!(form.body.contains("guest"));
    let weak = submit(
        &browser,
        &server,
        &form,
        "/invitation",
        &[("new_password", "password")],
    )
    .await;
    assert_eq!(weak.status, StatusCode::BAD_REQUEST, "{}", weak.body);
    let done = submit(
        &browser,
        &server,
        &form,
        "/invitation",
        &[("new_password", NEW_PASSWORD)],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(can_log_in(&server, "guest", NEW_PASSWORD).await);
    let again = submit(
        &browser,
        &server,
        &form,
        "/invitation",
        &[("new_password", "another passphrase 43")],
    )
    .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.body);
    assert!(
        can_log_in(&server, "guest", NEW_PASSWORD).await,
        "spent once"
    );
    let user = server
        .store
        .user_by_username("guest")
        .await
        .unwrap()
        .unwrap();
    assert!(user.email_verified);
    assert_eq!(server.audited("account.invitation.accepted"), 1);

    // Closed: no mail; the administrator activates.
    let closed = with_policy(&smtp, RegistrationPolicy::Closed, &[]).await;
    let user = invite_user(
        &*closed.store,
        &*closed.audit,
        &SystemClock,
        "g2".into(),
        Some("g2@example.test".into()),
        vec![],
    )
    .await
    .unwrap();
    assert!(
        !closed
            .provider
            .send_invitation(&user, "admin-id", &origin)
            .await
            .unwrap()
    );
}
