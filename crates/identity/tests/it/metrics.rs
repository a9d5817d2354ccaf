//! Identity's `/metrics` over real HTTP (docs/operations.md): the
//! counters of second factors and refresh-token reuse move with the
//! events they count. The registry is the test process's, shared by the
//! tests running beside this one, so each check is of a counter that
//! moved by at least what this test did.

use echo_core::Clock;
use echo_testkit::prometheus::{self, Exposition};
use reqwest::StatusCode;

use crate::accounts::{enrol_from_account_page, submit_code, to_second_step, totp};
use crate::common::*;
use crate::tokens::{WEB_AUTH, offline_tokens, refresh, rotate, text};

async fn scrape(server: &Server) -> Exposition {
    let response = reqwest::get(server.url("/metrics")).await.expect("scrape");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.text().await.expect("body");
    prometheus::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn moved(before: &Exposition, after: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.sum(name, labels) - before.sum(name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_factors_and_refresh_reuse_are_counted() {
    let (server, clock) = Server::start_with_manual_clock().await;
    let browser = Browser::new();
    let (secret, _) = enrol_from_account_page(&server, &clock, &browser).await;
    clock.advance(30);

    let before = scrape(&server).await;
    let params = Params::code_flow(WEB, WEB_REDIRECT, &Pkce::new()).set("prompt", "login");
    let step = to_second_step(&server, &browser, &params).await;
    let wrong = submit_code(&server, &browser, &step, "000000").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let page = submit_code(&server, &browser, &wrong, &totp(&secret, clock.now())).await;
    code_from(&server, &page, &params);
    let after = scrape(&server).await;
    let mfa = "echo_identity_mfa_total";
    let totp_failed = [("method", "totp"), ("outcome", "failure")];
    let totp_passed = [("method", "totp"), ("outcome", "success")];
    assert!(moved(&before, &after, mfa, &totp_failed) >= 1.0);
    assert!(moved(&before, &after, mfa, &totp_passed) >= 1.0);
    assert!(
        moved(
            &before,
            &after,
            "echo_identity_logins_total",
            &[("outcome", "success")]
        ) >= 1.0
    );

    let first = offline_tokens(&server, &browser).await;
    let spent = text(&first, "refresh_token");
    rotate(&server, &spent).await;
    let before = scrape(&server).await;
    let reused = refresh(&server, WEB_AUTH, &spent, &[]).await;
    assert_eq!(reused.status, StatusCode::BAD_REQUEST, "{}", reused.body);
    let after = scrape(&server).await;
    assert!(
        moved(
            &before,
            &after,
            "echo_identity_refresh_reuse_detected_total",
            &[]
        ) >= 1.0
    );
    let issued = [("grant", "refresh_token"), ("client", WEB)];
    assert!(after.sum("echo_identity_tokens_issued_total", &issued) >= 1.0);
}
