//! Session lifetimes, CSRF on session API calls, and the refresh of the
//! access token by one request at a time.

use reqwest::StatusCode;

use crate::common::{Browser, Platform};

#[tokio::test]
async fn an_idle_session_sends_pages_to_login_and_back_and_the_api_gets_401() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);

    platform.clock.advance(31 * 60);
    let api = browser.api_me(&platform).await;
    assert_eq!(api.status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.json()["error"], "session_expired");
    assert!(
        api.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer"))
    );
    let expired = platform.gateway_audited("gateway.session.expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].details["reason"], "idle_timeout");

    let page = browser.get(&platform.gw("/account?tab=roles")).await;
    assert_eq!(page.location(), "/login?return_to=%2Faccount%3Ftab%3Droles");
    // Identity's SSO session is still alive: straight back, no form.
    let login = browser.get(&platform.gw(page.location())).await;
    let landed = platform.finish_sign_in(&browser, login.location()).await;
    assert_eq!(landed.location(), "/account?tab=roles");
    assert_eq!(
        browser.get(&platform.gw("/account")).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn use_keeps_a_session_alive_until_its_absolute_end() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    // 12 h absolute: used every 20 minutes, it still ends.
    let mut alive = 0;
    for _ in 0..40 {
        platform.clock.advance(20 * 60);
        if browser.api_me(&platform).await.status != StatusCode::OK {
            break;
        }
        alive += 1;
    }
    assert_eq!(alive, 35, "20-minute steps within 12 hours");
    let expired = platform.gateway_audited("gateway.session.expired");
    assert_eq!(expired[0].details["reason"], "absolute_timeout");
}

#[tokio::test]
async fn session_api_calls_need_the_csrf_header_and_this_origin() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let no_header = browser.get(&platform.gw("/api/me")).await;
    assert_eq!(no_header.status, StatusCode::FORBIDDEN);
    assert_eq!(no_header.json()["error"], "csrf");
    let cross = browser
        .get_with(
            &platform.gw("/api/me"),
            &[("x-echo-csrf", "1"), ("origin", "http://evil.test")],
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    let same = browser
        .get_with(
            &platform.gw("/api/me"),
            &[("x-echo-csrf", "1"), ("origin", &platform.gateway_url)],
        )
        .await;
    assert_eq!(same.status, StatusCode::OK);
    assert_eq!(platform.gateway_audited("gateway.csrf.refused").len(), 2);
}

#[tokio::test]
async fn twenty_parallel_requests_at_expiry_refresh_once_and_the_session_survives() {
    let platform = Platform::start().await;
    let browser = std::sync::Arc::new(Browser::new());
    platform.sign_in(&browser, None).await;
    let refreshes = || {
        platform
            .identity_audit
            .events()
            .iter()
            .filter(|e| e.action == "token.issued" && e.details["grant"] == "refresh_token")
            .count()
    };
    assert_eq!(refreshes(), 0);

    // Access tokens live 10 minutes; the session idles out after 30.
    platform.clock.advance(10 * 60 + 1);
    let calls = (0..20).map(|_| {
        let browser = browser.clone();
        let url = platform.gw("/api/me");
        async move { browser.get_with(&url, &[("x-echo-csrf", "1")]).await }
    });
    let pages = futures_join_all(calls).await;
    for page in &pages {
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    }
    assert_eq!(refreshes(), 1, "one refresh for twenty requests");
    let identity_actions = platform.identity_audit.actions();
    assert!(
        !identity_actions.contains(&"oauth.refresh.reuse_detected"),
        "{identity_actions:?}"
    );

    // The rotated refresh token works next time too.
    platform.clock.advance(10 * 60 + 1);
    assert_eq!(browser.api_me(&platform).await.status, StatusCode::OK);
    assert_eq!(refreshes(), 2);
}

/// Runs `futures` concurrently, in spawned tasks.
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}
