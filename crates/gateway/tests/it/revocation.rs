//! Issue 14 §9: logout and suspension leave no token alive. Logout
//! revokes the session's refresh token at identity (RFC 7009); a suspended
//! or deleted user's sessions end, and a revoked bearer token is refused,
//! within 5 s, although every token still verifies locally.

use std::time::{Duration, Instant};

use echo_identity::user_state::{UserState, change_state};
use reqwest::StatusCode;

use crate::common::{Browser, GATEWAY_SECRET, Platform, USER};

/// `echod user suspend|activate|delete` on the platform's user.
async fn move_user(platform: &Platform, to: UserState) {
    change_state(
        &*platform.identity_store,
        &*platform.identity_audit,
        &*platform.clock,
        USER,
        to,
    )
    .await
    .unwrap();
}

/// Polls `me` until it answers 401; how long that took.
async fn refused_within(limit: Duration, mut me: impl AsyncFnMut() -> StatusCode) -> Duration {
    let started = Instant::now();
    loop {
        let status = me().await;
        if status == StatusCode::UNAUTHORIZED {
            return started.elapsed();
        }
        assert_eq!(status, StatusCode::OK);
        assert!(
            started.elapsed() < limit,
            "still served {:?} after the revocation",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn logout_revokes_the_sessions_refresh_token_at_identity() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);
    let account = browser.get(&platform.gw("/account")).await;
    browser
        .post_form(
            &platform.gw("/logout"),
            &account.inputs(),
            &[("origin", &platform.gateway_url)],
        )
        .await;
    let revoked: Vec<_> = platform
        .identity_audit
        .events()
        .into_iter()
        .filter(|e| e.action == "oauth.token.revoked")
        .collect();
    assert_eq!(revoked.len(), 1, "one revocation at identity");
    assert_eq!(revoked[0].details["client_id"], "gateway");
    assert_eq!(revoked[0].details["token_type"], "refresh_token");
}

#[tokio::test]
async fn suspending_a_user_ends_their_sessions_within_5_seconds() {
    let platform = Platform::start().await;
    let (first, second) = (Browser::new(), Browser::new());
    platform.sign_in(&first, None).await;
    platform.sign_in(&second, None).await;
    for browser in [&first, &second] {
        assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);
    }

    move_user(&platform, UserState::Suspended).await;
    let limit = Duration::from_secs(5);
    for browser in [&first, &second] {
        refused_within(limit, async || browser.api_me(&platform).await.status).await;
    }
    let ended = platform.gateway_audited("gateway.session.expired");
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(ended.iter().all(|e| e.details["reason"] == "revoked"));

    // Reactivated, the user signs in again; the old sessions stay ended.
    move_user(&platform, UserState::Active).await;
    assert_eq!(
        first.api_me(&platform).await.status,
        StatusCode::UNAUTHORIZED
    );
    let third = Browser::new();
    platform.sign_in(&third, None).await;
    assert_eq!(third.api_me(&platform).await.status, StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_within_5_seconds() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);
    move_user(&platform, UserState::Deleted).await;
    refused_within(Duration::from_secs(5), async || {
        browser.api_me(&platform).await.status
    })
    .await;
}

/// A bearer token revoked at identity (RFC 7009; suspension revokes a
/// user's access tokens the same way) is refused within 5 s, audited as
/// `access.denied` with reason `revoked`.
#[tokio::test]
async fn a_revoked_bearer_token_is_refused_within_5_seconds() {
    let platform = Platform::start().await;
    let http = reqwest::Client::new();
    let answer: serde_json::Value = http
        .post(format!("{}/token", platform.issuer))
        .basic_auth("gateway", Some(GATEWAY_SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("audience", "gateway"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = answer["access_token"].as_str().expect("a token").to_owned();
    let me = async || {
        http.get(platform.gw("/api/me"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(me().await, StatusCode::OK);
    let revoked = http
        .post(format!("{}/revoke", platform.issuer))
        .basic_auth("gateway", Some(GATEWAY_SECRET))
        .form(&[("token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), StatusCode::OK);
    refused_within(Duration::from_secs(5), me).await;
    let denied = platform.gateway_audited("access.denied");
    assert!(
        denied.iter().any(|e| e.details["reason"] == "revoked"),
        "{denied:?}"
    );
}
