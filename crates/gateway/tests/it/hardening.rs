//! Issue 14's attacks on the gateway, each performed over real HTTP: path
//! tricks that route past a role check (§15), cross-site writes on page
//! routes (§16), headers a client sets to speak for the gateway (§17), and
//! a forged `X-Forwarded-For` behind a trusted proxy (§5).

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{Browser, Platform, UPSTREAM_AUDIENCE};
use crate::proxy::{Upstream, routes};

/// `/api/up` open to any signed-in caller, `/api/admin-only` for admins,
/// `/app` a page route; all to `upstream`.
async fn platform(upstream: &Upstream, extra: &str) -> Platform {
    Platform::start_with(routes(&format!(
        r#"
        {extra}
        [[routes]]
        prefix = "/api/up"
        upstream = "{0}"
        audience = "{UPSTREAM_AUDIENCE}"

        [[routes]]
        prefix = "/api/admin-only"
        upstream = "{0}"
        audience = "{UPSTREAM_AUDIENCE}"
        roles = ["admin"]

        [[routes]]
        prefix = "/app"
        upstream = "{0}"
        audience = "{UPSTREAM_AUDIENCE}"
        "#,
        upstream.url
    )))
    .await
}

/// One HTTP/1.1 request written by hand, so the path reaches the gateway
/// exactly as written (clients normalise `..` and `%2e` themselves).
async fn raw(platform: &Platform, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    let addr = platform.gateway_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split(' ')
        .nth(1)
        .and_then(|status| status.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer:?}"))
}

/// §15: a path that names one route as sent and another once an upstream
/// normalises it is refused, in every spelling; a harmless one is
/// forwarded normalised.
#[tokio::test]
async fn paths_are_normalised_before_routing() {
    let upstream = Upstream::start().await;
    let platform = platform(&upstream, "").await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let cookie = browser.cookie_header();
    let session = [("cookie", cookie.as_str()), ("x-echo-csrf", "1")];
    let get = |path: &'static str| raw(&platform, "GET", path, &session);
    // The signed-in user (role auditor) may not use the admin route.
    assert_eq!(get("/api/admin-only/x").await, 403);
    for sneaky in [
        "/api/up/../admin-only/x",
        "/api/up/%2e%2e/admin-only/x",
        "/api/up/%2E%2E/admin-only/x",
        "/api/up/.%2e/admin-only/x",
        "/api/up/%2e./admin-only/x",
        "/api/up/./../admin-only/x",
    ] {
        assert_eq!(get(sneaky).await, 400, "{sneaky}");
    }
    for encoded in [
        "/api/up%2f..%2fadmin-only/x",
        "/api/up/a%2Fb",
        "/api/up\\..\\admin-only",
        "/api/up/a%5cb",
        "/api/up/a%00",
    ] {
        assert_eq!(get(encoded).await, 400, "{encoded}");
    }
    assert_eq!(get("/api/up/../../../etc/passwd").await, 400, "above /");
    // `//` collapses: the admin route is matched, and its role check holds.
    assert_eq!(get("//api//admin-only/x").await, 403);
    assert_eq!(get("/api//admin-only//x").await, 403);
    let count = upstream.seen.lock().unwrap().len();
    assert_eq!(count, 0, "nothing reached the upstream");
    // Inside one route, dot segments are resolved and the clean path sent.
    assert_eq!(get("/api/up/a/./b/../c?q=1").await, 200);
    assert_eq!(upstream.last().path, "/api/up/a/c?q=1");
    assert_eq!(get("/api/up//x").await, 200);
    assert_eq!(upstream.last().path, "/api/up/x");
}

/// §16: on a page route, a write with the session cookie alone (what a
/// cross-site form sends) is refused; the gateway's own pages prove
/// themselves with `Origin`, `Sec-Fetch-Site` or the CSRF header.
#[tokio::test]
async fn writes_on_page_routes_need_a_csrf_proof() {
    let upstream = Upstream::start().await;
    let platform = platform(&upstream, "").await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let cookie = browser.cookie_header();
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let cookie_only = [("cookie", cookie.as_str())];
        assert_eq!(
            raw(&platform, method, "/app/x", &cookie_only).await,
            403,
            "{method}"
        );
        let foreign = [
            ("cookie", cookie.as_str()),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(
            raw(&platform, method, "/app/x", &foreign).await,
            403,
            "{method}"
        );
        let null = [("cookie", cookie.as_str()), ("origin", "null")];
        assert_eq!(
            raw(&platform, method, "/app/x", &null).await,
            403,
            "{method}"
        );
        let cross_site = [
            ("cookie", cookie.as_str()),
            ("sec-fetch-site", "cross-site"),
        ];
        assert_eq!(
            raw(&platform, method, "/app/x", &cross_site).await,
            403,
            "{method}"
        );
    }
    assert_eq!(upstream.seen.lock().unwrap().len(), 0);
    assert!(!platform.gateway_audited("gateway.csrf.refused").is_empty());
    let own = platform.gateway_url.clone();
    for proof in [
        ("origin", own.as_str()),
        ("sec-fetch-site", "same-origin"),
        ("x-echo-csrf", "1"),
    ] {
        let headers = [("cookie", cookie.as_str()), proof];
        assert_eq!(
            raw(&platform, "POST", "/app/x", &headers).await,
            200,
            "{proof:?}"
        );
    }
    // Reading needs no proof.
    assert_eq!(
        raw(&platform, "GET", "/app/x", &[("cookie", cookie.as_str())]).await,
        200
    );
}

/// §17: what a client says about itself in forwarding and identity
/// headers never reaches an upstream; the gateway sets what it vouches for.
#[tokio::test]
async fn client_headers_that_speak_for_the_gateway_are_replaced() {
    let upstream = Upstream::start().await;
    let platform = platform(&upstream, "").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let response = reqwest::Client::new()
        .get(platform.gw("/api/up/x"))
        .bearer_auth(token)
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-host", "evil.example")
        .header("x-forwarded-proto", "https")
        .header("forwarded", "for=203.0.113.9;host=evil.example")
        .header("x-user-id", "admin")
        .header("x-user-roles", "admin")
        .header("x-echo-roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.last();
    for gone in ["forwarded", "x-user-id", "x-user-roles", "x-echo-roles"] {
        assert!(!seen.headers.contains_key(gone), "{gone} forwarded");
    }
    let gateway_host = platform.gateway_url.trim_start_matches("http://");
    assert_eq!(seen.headers["x-real-ip"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-host"], gateway_host);
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
}

/// §17: a route to one of Echo's own services must say so.
#[tokio::test]
async fn a_route_to_an_internal_audience_must_say_so() {
    for audience in ["gateway", "audit", "identity"] {
        let file = echo_gateway::GatewayFile::parse(&format!(
            "[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"{audience}\"\n"
        ))
        .unwrap();
        let mut config = echo_gateway::GatewayConfig::new(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8081",
            echo_gateway::ClientSecret::new("s"),
        )
        .unwrap();
        let refused = config.apply_file(&file).unwrap_err().to_string();
        assert!(refused.contains("allow_internal_audience"), "{refused}");
        let allowed = echo_gateway::GatewayFile::parse(&format!(
            "[[routes]]\nprefix = \"/api/x\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"{audience}\"\nallow_internal_audience = true\n"
        ))
        .unwrap();
        config.apply_file(&allowed).unwrap();
    }
}

/// §5: behind a trusted proxy that appends the client's address, junk the
/// client put in `X-Forwarded-For` must not make the gateway believe the
/// forged address before it.
#[tokio::test]
async fn a_forged_forwarded_for_is_never_believed() {
    let upstream = Upstream::start().await;
    let platform = platform(&upstream, "trusted_proxies = [\"127.0.0.1\"]").await;
    for (sent, client) in [
        // The proxy appended the real client after the client's junk.
        ("203.0.113.9, junk, 198.51.100.7", "198.51.100.7"),
        // Junk last: no address can be believed past the proxy itself.
        ("203.0.113.9, junk", "127.0.0.1"),
        ("203.0.113.9,", "127.0.0.1"),
        ("203.0.113.9, 127.0.0.1", "203.0.113.9"),
    ] {
        let before = platform.gateway_audited("access.denied").len();
        let response = reqwest::Client::new()
            .get(platform.gw("/api/me"))
            .bearer_auth(format!("junk-{client}-{before}"))
            .header("x-forwarded-for", sent)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let denied = platform.gateway_audited("access.denied");
        let event = denied.last().unwrap();
        assert_eq!(event.ip.as_deref(), Some(client), "{sent}");
    }
}

// ---- §6: scope escalation ----------------------------------------------------

/// The login request passes through the browser: `alice` adds
/// `audit.read` (registered for the gateway's own service token) to it.
fn escalated(authorize: &str) -> String {
    crate::common::with_param(
        authorize,
        "scope",
        "openid profile offline_access audit.read",
    )
}

#[tokio::test]
async fn a_user_cannot_add_a_service_scope_to_the_login() {
    let platform = Platform::start().await;
    let browser = Browser::new();
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    for scope in [
        "audit.read",
        "AUDIT.READ audit.read",
        "audit.write",
        "docs.index",
    ] {
        let tampered = crate::common::with_param(&authorize, "scope", &format!("openid {scope}"));
        let answer = browser.get(&tampered).await;
        let location = answer.location_url();
        // Identity refuses before any login, back to the gateway with the
        // error (or, for an unregistered scope, the same error).
        let query = crate::common::query_of(&location);
        assert_eq!(
            query.get("error").map(String::as_str),
            Some("invalid_scope"),
            "{scope}: {} {location}",
            answer.status
        );
    }
    let tampered = escalated(&authorize);
    let callback = browser.get(&tampered).await.location_url();
    let landed = browser.get(&callback).await;
    assert!(browser.cookie("echo_session").is_none(), "no session");
    assert_ne!(landed.status, StatusCode::OK);
    assert!(platform.gateway_audited("gateway.login.success").is_empty());
}

/// Should identity grant more than the gateway asked (here: one that does
/// not fence service scopes off), the gateway refuses the login.
#[tokio::test]
async fn the_gateway_refuses_a_login_granted_more_than_it_asked() {
    let platform = Platform::start_with_identity(|config| config.service_scopes.clear()).await;
    let browser = Browser::new();
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    let landed = platform
        .finish_sign_in(&browser, &escalated(&authorize))
        .await;
    assert!(browser.cookie("echo_session").is_none(), "no session");
    assert_ne!(landed.status, StatusCode::SEE_OTHER);
    let failures = platform.gateway_audited("gateway.login.failure");
    assert_eq!(failures.len(), 1, "{failures:?}");
    // The same login without the extra scope works.
    let authorize = browser.get(&platform.gw("/login")).await.location_url();
    platform.finish_sign_in(&browser, &authorize).await;
    assert!(browser.cookie("echo_session").is_some());
}
