//! Identity's mail over each SMTP transport, to a real server (aiosmtpd,
//! `echo_testkit::smtp`) holding a test CA's certificate, the CA trusted
//! as `--ca-file` makes it: STARTTLS insisted on by `?tls=required`, TLS
//! from the first byte for `smtps://`, AUTH with the configured password
//! (a wrong one refused), and nothing sent where TLS cannot be had — the
//! message waits in the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use echo_core::SystemClock;
use echo_crypto::TrustedRoots;
use echo_identity::mail::SmtpSettings;
use echo_queue::JobQueue;
use echo_testkit::smtp::{Delivered, SmtpOptions, SmtpServer, SmtpTls};
use echo_testkit::tls::{TestCa, free_port};
use reqwest::StatusCode;

use crate::common::{Browser, EMAIL, MAIL_FROM, Server};
use crate::email_links::{MAIL_WAIT, submit};

const SMTP_USER: &str = "echo";
const SMTP_PASSWORD: &str = "the smtp password 0123";
/// Long enough for several attempts (the test queue retries from 100 ms).
const SEVERAL_ATTEMPTS: Duration = Duration::from_millis(2500);

/// Identity mailing to `url` with `password`, trusting `ca` beside the
/// system's roots.
async fn mailing_to(url: &str, password: Option<&str>, ca: &TestCa) -> (Server, Arc<dyn JobQueue>) {
    let settings = SmtpSettings {
        url: url.to_owned(),
        from: MAIL_FROM.to_owned(),
        password: password.map(str::to_owned),
    };
    let roots = TrustedRoots::load(Some(&ca.ca_file)).expect("the test CA");
    Server::start_mailing_as(&settings, &roots, Arc::new(SystemClock), |_| {}).await
}

/// Asks for a reset link for the fixture user: one message queued.
async fn ask_for_a_link(server: &Server) {
    let browser = Browser::new();
    let page = browser.get(&server.url("/password/forgot")).await;
    let sent = submit(
        &browser,
        server,
        &page,
        "/password/forgot",
        &[("email", EMAIL)],
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
}

/// The reset mail, once it arrives.
fn the_reset_mail(smtp: &SmtpServer) -> Delivered {
    let mail = smtp.wait_for(1, MAIL_WAIT).remove(0);
    assert_eq!(mail.to, [EMAIL]);
    assert!(mail.link("/password/reset?token=").is_some(), "{mail:?}");
    mail
}

/// Waits until the queue holds no unfinished job.
async fn until_sent(queue: &dyn JobQueue) {
    let deadline = Instant::now() + MAIL_WAIT;
    while queue.depth().await.expect("depth").pending != 0 {
        assert!(Instant::now() < deadline, "the job never completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn login<'a>() -> Option<(&'a str, &'a str)> {
    Some((SMTP_USER, SMTP_PASSWORD))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_delivers_over_starttls_authenticated_by_the_password() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_with(SmtpOptions {
        tls: SmtpTls::StartTls(&ca),
        login: login(),
    });
    let url = format!("smtp://{SMTP_USER}@127.0.0.1:{}?tls=required", smtp.port);
    let (server, queue) = mailing_to(&url, Some(SMTP_PASSWORD), &ca).await;
    ask_for_a_link(&server).await;
    let mail = the_reset_mail(&smtp);
    assert_eq!(mail.tls.as_deref(), Some("starttls"), "{mail:?}");
    assert_eq!(mail.login.as_deref(), Some(SMTP_USER));
    let attempts = smtp.auth_attempts();
    assert!(
        !attempts.is_empty() && attempts.iter().all(|a| a.ok && a.login == SMTP_USER),
        "{attempts:?}"
    );
    until_sent(&*queue).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtps_delivers_over_tls_from_the_first_byte() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_with(SmtpOptions {
        tls: SmtpTls::Implicit(&ca),
        login: login(),
    });
    let url = format!("smtps://{SMTP_USER}@127.0.0.1:{}", smtp.port);
    let (server, queue) = mailing_to(&url, Some(SMTP_PASSWORD), &ca).await;
    ask_for_a_link(&server).await;
    let mail = the_reset_mail(&smtp);
    assert_eq!(mail.tls.as_deref(), Some("implicit"), "{mail:?}");
    assert_eq!(mail.login.as_deref(), Some(SMTP_USER));
    until_sent(&*queue).await;
}

/// A wrong password: the server refuses the login (535), nothing is
/// delivered, and the message is not dropped with it (a regression: 535 is
/// a 5xx, and every 5xx used to dead-letter the message at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_smtp_password_is_refused_and_the_message_waits_for_the_right_one() {
    let ca = TestCa::new();
    let smtp = SmtpServer::start_with(SmtpOptions {
        tls: SmtpTls::StartTls(&ca),
        login: login(),
    });
    let url = format!("smtp://{SMTP_USER}@127.0.0.1:{}?tls=required", smtp.port);
    let (server, queue) = mailing_to(&url, Some("not the password"), &ca).await;
    ask_for_a_link(&server).await;
    let deadline = Instant::now() + MAIL_WAIT;
    while smtp.auth_attempts().is_empty() {
        assert!(Instant::now() < deadline, "identity never tried to log in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(SEVERAL_ATTEMPTS).await;
    let attempts = smtp.auth_attempts();
    assert!(
        attempts.iter().all(|a| !a.ok && a.login == SMTP_USER),
        "{attempts:?}"
    );
    assert!(smtp.messages().is_empty());
    // Refused logins fail the job for now, like a server that is down: it
    // is retried, and goes out once the password is put right.
    assert!(attempts.len() >= 2, "retried: {attempts:?}");
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.pending, depth.dead), (1, 0), "kept");
}

/// `?tls=required` against a server that offers no STARTTLS: nothing is
/// sent in the clear; the job is retried, and the message goes out over
/// TLS once the server offers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_sends_nothing_to_a_server_without_starttls_and_keeps_the_message() {
    let ca = TestCa::new();
    let port = free_port();
    let plain = SmtpServer::start_on(port);
    let (server, queue) =
        mailing_to(&format!("smtp://127.0.0.1:{port}?tls=required"), None, &ca).await;
    ask_for_a_link(&server).await;
    tokio::time::sleep(SEVERAL_ATTEMPTS).await;
    assert!(plain.messages().is_empty(), "{:?}", plain.messages());
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.pending, depth.dead), (1, 0), "retried, not dropped");

    drop(plain);
    let with_tls = SmtpServer::start_on_with(
        port,
        SmtpOptions {
            tls: SmtpTls::StartTls(&ca),
            login: None,
        },
    );
    let mail = the_reset_mail(&with_tls);
    assert_eq!(mail.tls.as_deref(), Some("starttls"), "{mail:?}");
    until_sent(&*queue).await;
}

/// The server's certificate is checked: one from a CA identity does not
/// trust gets nothing, and the message waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_of_an_untrusted_ca_gets_nothing() {
    let theirs = TestCa::new();
    let ours = TestCa::new();
    let smtp = SmtpServer::start_with(SmtpOptions {
        tls: SmtpTls::Implicit(&theirs),
        login: None,
    });
    let (server, queue) =
        mailing_to(&format!("smtps://127.0.0.1:{}", smtp.port), None, &ours).await;
    ask_for_a_link(&server).await;
    tokio::time::sleep(SEVERAL_ATTEMPTS).await;
    assert!(smtp.messages().is_empty());
    let depth = queue.depth().await.expect("depth");
    assert_eq!((depth.pending, depth.dead), (1, 0), "retried, not dropped");
}
