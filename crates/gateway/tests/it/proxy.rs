//! The route table: what an upstream receives (its own token, never the
//! cookie), rate limits, and upstream failures as clean 502/504.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::routing::{any, get};
use echo_gateway::{GatewayConfig, GatewayFile};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Browser, GATEWAY_SECRET, Platform, UPSTREAM_AUDIENCE};

/// What the upstream saw of the last request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

/// A trivial upstream on 127.0.0.1:0: `/slow` answers after 2 s, anything
/// else at once with `upstream ok`, recording what it saw.
pub struct Upstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        async fn record(State(seen): State<Arc<Mutex<Vec<Seen>>>>, request: Request) -> String {
            let (parts, body) = request.into_parts();
            let body: Bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            seen.lock().unwrap().push(Seen {
                path: parts.uri.to_string(),
                headers: parts.headers,
                body_len: body.len(),
            });
            "upstream ok".to_owned()
        }
        let app = axum::Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "late"
                }),
            )
            .fallback(any(record))
            .with_state(seen.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, seen }
    }

    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

/// A port nothing listens on.
async fn closed_port() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    url
}

pub fn routes(toml: &str) -> impl FnOnce(&mut GatewayConfig) {
    let file = GatewayFile::parse(toml).unwrap();
    move |config| config.apply_file(&file).unwrap()
}

/// A platform with one route, `/api/up` → `upstream`, plus `extra` lines.
async fn with_route(upstream: &str, extra: &str) -> Platform {
    let route = format!(
        "[[routes]]\nprefix = \"/api/up\"\nupstream = \"{upstream}\"\n\
         audience = \"{UPSTREAM_AUDIENCE}\"\n{extra}\n"
    );
    Platform::start_with(routes(&route)).await
}

/// The claims of a JWT (unverified: the test only reads them).
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&echo_crypto::secret::b64url_decode(payload).unwrap()).unwrap()
}

fn bearer_of(seen: &Seen) -> String {
    let value = seen.headers["authorization"].to_str().unwrap();
    value.strip_prefix("Bearer ").unwrap().to_owned()
}

#[tokio::test]
async fn an_upstream_gets_its_own_token_and_never_the_cookie() {
    let upstream = Upstream::start().await;
    let platform = with_route(&format!("{}/base", upstream.url), "strip_prefix = true").await;
    let browser = Browser::new();
    platform.sign_in(&browser, None).await;
    let sub = browser.api_me(&platform).await.json()["sub"].clone();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let page = browser
        .get_with(
            &platform.gw("/api/up/items?x=1"),
            &[
                ("x-echo-csrf", "1"),
                ("x-request-id", "req-42"),
                ("traceparent", trace),
                ("connection", "x-hop"),
                ("x-hop", "secret"),
                ("keep-alive", "timeout=5"),
                ("x-forwarded-for", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.body, "upstream ok");
    assert_eq!(page.header("x-request-id"), Some("req-42"));

    let seen = upstream.last();
    assert_eq!(seen.path, "/base/items?x=1", "prefix stripped, base kept");
    for gone in ["cookie", "x-echo-csrf", "x-hop", "keep-alive", "connection"] {
        assert!(!seen.headers.contains_key(gone), "{gone} forwarded");
    }
    assert_eq!(
        seen.headers["x-forwarded-for"], "127.0.0.1",
        "not the forged one"
    );
    assert_eq!(seen.headers["x-request-id"], "req-42");
    let forwarded_trace = seen.headers["traceparent"].to_str().unwrap();
    assert!(forwarded_trace.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
    assert!(forwarded_trace.ends_with("-01"));
    assert_ne!(forwarded_trace, trace, "the gateway's span is the parent");
    let exchanged = platform
        .identity_audit
        .events()
        .into_iter()
        .find(|e| e.action == "token.exchanged")
        .unwrap();
    assert_eq!(
        exchanged.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
        "identity's event of the exchange is in the browser's trace"
    );
    assert!(
        platform
            .gateway_audited("gateway.request.forwarded")
            .is_empty(),
        "a read is not audited"
    );

    let token = bearer_of(&seen);
    let claims = claims_of(&token);
    assert_eq!(claims["aud"], UPSTREAM_AUDIENCE);
    assert_eq!(claims["sub"], sub);
    assert_eq!(claims["act"], json!({"sub": "gateway"}));
    assert_eq!(claims["roles"], json!(["auditor"]));
    // Good at the upstream's audience, verified against identity's keys.
    let check = reqwest::Client::new()
        .post(format!("{}/verify", platform.issuer))
        .basic_auth("gateway", Some(GATEWAY_SECRET))
        .json(&json!({"token": token, "aud": UPSTREAM_AUDIENCE}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(check["valid"], true, "{check}");

    // The exchanged token is cached: a second call trades nothing.
    browser
        .get_with(&platform.gw("/api/up/again"), &[("x-echo-csrf", "1")])
        .await;
    let again = upstream.last();
    assert_eq!(bearer_of(&again), token);
    assert_eq!(again.path, "/base/again");
    assert!(
        again.headers["x-request-id"].len() >= 16,
        "generated when absent"
    );
    let exchanges = platform
        .identity_audit
        .events()
        .into_iter()
        .filter(|e| e.action == "token.exchanged")
        .count();
    assert_eq!(exchanges, 1);
}

#[tokio::test]
async fn a_bearer_caller_is_exchanged_too_and_bodies_stream_through() {
    let upstream = Upstream::start().await;
    let platform = with_route(&upstream.url, "").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let body = vec![b'a'; 3 << 20];
    let response = reqwest::Client::new()
        .post(platform.gw("/api/up/upload"))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = upstream.last();
    assert_eq!(seen.path, "/api/up/upload", "no stripping unless asked");
    assert_eq!(seen.body_len, 3 << 20);
    let forwarded = bearer_of(&seen);
    assert_ne!(forwarded, token, "the caller's own token stays here");
    assert_eq!(claims_of(&forwarded)["aud"], UPSTREAM_AUDIENCE);
    assert_eq!(claims_of(&forwarded)["sub"], "identity");
    // No traceparent: the gateway started the trace the upstream got, and
    // audited the state-changing request in it.
    let traceparent = seen.headers["traceparent"].to_str().unwrap();
    let (trace_id, _, _) = echo_edge::trace::parse_traceparent(traceparent).unwrap();
    let audited = platform.gateway_audited("gateway.request.forwarded");
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0].actor.as_deref(), Some("identity"));
    assert_eq!(audited[0].details["route"], "/api/up");
    assert_eq!(audited[0].details["method"], "POST");
    assert_eq!(audited[0].details["status"], 200);
    assert_eq!(audited[0].trace_id.as_deref(), Some(trace_id));
}

#[tokio::test]
async fn a_missing_role_is_403_and_a_page_route_without_session_goes_to_login() {
    let upstream = Upstream::start().await;
    let platform = Platform::start_with(routes(&format!(
        r#"
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
    .await;
    let browser = Browser::new();
    let page = browser.get(&platform.gw("/app/x")).await;
    assert_eq!(page.location(), "/login?return_to=%2Fapp%2Fx");
    platform.sign_in(&browser, None).await;
    let denied = browser
        .get_with(&platform.gw("/api/admin-only/x"), &[("x-echo-csrf", "1")])
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.json()["type"], "urn:echo:problem:forbidden");
    assert_eq!(platform.gateway_audited("gateway.route.denied").len(), 1);
    assert!(upstream.seen.lock().unwrap().is_empty());
    let allowed = browser.get(&platform.gw("/app/x")).await;
    assert_eq!(allowed.status, StatusCode::OK);
    let missing = browser
        .get_with(&platform.gw("/api/nothing"), &[("x-echo-csrf", "1")])
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.json()["type"], "urn:echo:problem:not_found");
}

#[tokio::test]
async fn rate_limits_trip_with_retry_after_are_audited_once_and_reset() {
    let upstream = Upstream::start().await;
    let platform = with_route(
        &upstream.url,
        "rate_limit = { per_second = 2.0, burst = 2 }",
    )
    .await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let call = || async {
        Browser::new()
            .get_with(
                &platform.gw("/api/up/x"),
                &[("authorization", &format!("Bearer {token}"))],
            )
            .await
    };
    assert_eq!(call().await.status, StatusCode::OK);
    assert_eq!(call().await.status, StatusCode::OK);
    for _ in 0..3 {
        let refused = call().await;
        assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(refused.header("retry-after"), Some("1"));
        assert_eq!(refused.json()["type"], "urn:echo:problem:rate_limited");
    }
    let audited = platform.gateway_audited("gateway.rate_limited");
    assert_eq!(audited.len(), 1, "once per window, not per request");
    assert_eq!(audited[0].actor.as_deref(), Some("identity"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(call().await.status, StatusCode::OK, "refilled");
}

#[tokio::test]
async fn the_global_per_ip_limit_covers_pages_with_a_friendly_429() {
    let platform = Platform::start_with(|config| {
        config.rate_limits.per_ip = Some(echo_gateway::Limit {
            per_second: 0.5,
            burst: 2,
        });
    })
    .await;
    let browser = Browser::new();
    // Liveness and static files neither count nor are refused.
    let exempt = ["/ping", "/static/gateway.css", "/static/documents.js"];
    for path in exempt.iter().cycle().take(6) {
        assert_eq!(browser.get(&platform.gw(path)).await.status, StatusCode::OK);
    }
    for _ in 0..2 {
        assert_eq!(browser.get(&platform.gw("/")).await.status, StatusCode::OK);
    }
    let refused = browser.get(&platform.gw("/")).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("2"));
    assert!(refused.body.contains("Slow down"), "{}", refused.body);
    assert_eq!(
        browser.get(&platform.gw("/healthz")).await.status,
        StatusCode::OK,
        "health checks are never limited"
    );
    for path in exempt {
        assert_eq!(
            browser.get(&platform.gw(path)).await.status,
            StatusCode::OK,
            "{path} is not limited"
        );
    }
}

#[tokio::test]
async fn upstream_timeouts_are_504_and_unreachable_upstreams_502() {
    let upstream = Upstream::start().await;
    let down = closed_port().await;
    let platform = Platform::start_with(routes(&format!(
        r#"
        [[routes]]
        prefix = "/api/slow"
        upstream = "{0}/slow"
        audience = "{UPSTREAM_AUDIENCE}"
        strip_prefix = true
        timeout = "300ms"

        [[routes]]
        prefix = "/api/down"
        upstream = "{down}"
        audience = "{UPSTREAM_AUDIENCE}"

        [[routes]]
        prefix = "/down"
        upstream = "{down}"
        audience = "{UPSTREAM_AUDIENCE}"
        "#,
        upstream.url
    )))
    .await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let bearer = format!("Bearer {token}");
    let browser = Browser::new();
    let slow = browser
        .get_with(&platform.gw("/api/slow"), &[("authorization", &bearer)])
        .await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.json()["type"], "urn:echo:problem:gateway_timeout");
    let down_api = browser
        .get_with(&platform.gw("/api/down/x"), &[("authorization", &bearer)])
        .await;
    assert_eq!(down_api.status, StatusCode::BAD_GATEWAY);
    assert_eq!(down_api.json()["type"], "urn:echo:problem:bad_gateway");
    assert!(!down_api.body.contains("127.0.0.1"), "no internals shown");
    platform.sign_in(&browser, None).await;
    let down_page = browser.get(&platform.gw("/down/x")).await;
    assert_eq!(down_page.status, StatusCode::BAD_GATEWAY);
    assert!(
        down_page.body.contains("Service unavailable"),
        "{}",
        down_page.body
    );
}

/// Issue 18: the upstream's connections are kept alive and reused (one
/// connection for requests one after another), and one the upstream
/// closes is not used again.
#[tokio::test]
async fn upstream_connections_are_reused_and_a_closed_one_replaced() {
    let app = axum::Router::new()
        .route(
            "/close",
            get(|| async { ([(axum::http::header::CONNECTION, "close")], "closing") }),
        )
        .fallback(|| async { "kept" });
    let (url, accepted) = counting_upstream(app).await;
    let platform = with_route(&url, "strip_prefix = true").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let bearer = format!("Bearer {token}");
    let browser = Browser::new();
    for _ in 0..20 {
        assert_kept(&browser, &platform, &bearer).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
    let closing = browser
        .get_with(&platform.gw("/api/up/close"), &[("authorization", &bearer)])
        .await;
    assert_eq!(closing.status, StatusCode::OK);
    for _ in 0..3 {
        assert_kept(&browser, &platform, &bearer).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "a new one after the close"
    );
}

/// `app` served on 127.0.0.1:0: its URL, and a count of the connections
/// it accepted.
async fn counting_upstream(app: axum::Router) -> (String, Arc<AtomicUsize>) {
    use axum::serve::ListenerExt;

    let accepted = Arc::new(AtomicUsize::new(0));
    let counting = accepted.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = listener.tap_io(move |_| {
        counting.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, accepted)
}

/// A call of `/api/up/x` with `bearer` answered `kept` by the upstream.
async fn assert_kept(browser: &Browser, platform: &Platform, bearer: &str) {
    let page = browser
        .get_with(&platform.gw("/api/up/x"), &[("authorization", bearer)])
        .await;
    assert_eq!((page.status, page.body.as_str()), (StatusCode::OK, "kept"));
}

/// An upstream written on a raw socket, for what axum's server would not
/// do: it answers each request head it reads with `200 kept`, but a POST
/// with `413` at once, without reading its body, and then neither reads
/// nor closes that connection. With `close_idle`, it closes a connection
/// 50 ms after each answer, without saying so (as a server's idle timeout
/// does). It counts the connections it accepted.
async fn raw_upstream(close_idle: bool) -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let counting = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            counting.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    head.clear();
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    if head.starts_with(b"POST") {
                        let refusal =
                            b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\n\r\nbig!";
                        socket.write_all(refusal).await.unwrap();
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let kept = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nkept";
                    if socket.write_all(kept).await.is_err() {
                        return;
                    }
                    if close_idle {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

/// Issue 18: a kept-alive connection the upstream closed while idle, as a
/// server's idle timeout does without a word, costs no request: the next
/// request goes out on a new connection.
#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_costs_no_request() {
    let (url, accepted) = raw_upstream(true).await;
    let platform = with_route(&url, "strip_prefix = true").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let bearer = format!("Bearer {token}");
    let browser = Browser::new();
    for _ in 0..5 {
        assert_kept(&browser, &platform, &bearer).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5, "one connection each");
}

/// Issue 18: an upstream that answers before it has read the request's
/// body leaves a connection still sending it; that connection is not
/// handed to the next request (which would wait behind the old body until
/// its route's timeout).
#[tokio::test]
async fn a_connection_still_sending_a_body_is_not_reused() {
    let (url, accepted) = raw_upstream(false).await;
    let platform = with_route(&url, "strip_prefix = true\ntimeout = \"3s\"").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    let bearer = format!("Bearer {token}");
    let browser = Browser::new();
    // More than the sockets' buffers hold: the upstream reads none of it.
    let body = vec![b'a'; 16 << 20];
    let refused = reqwest::Client::new()
        .post(platform.gw("/api/up/upload"))
        .bearer_auth(&token)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::PAYLOAD_TOO_LARGE);
    for _ in 0..3 {
        assert_kept(&browser, &platform, &bearer).await;
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the refused upload's connection, then one kept alive"
    );
}

/// Issue 18: a large answer streams down whole, in order, and its
/// connection is used again after it.
#[tokio::test]
async fn a_large_answer_streams_down_and_its_connection_is_reused() {
    // Larger than a connection reads at once: the body arrives in many
    // reads.
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let sent = big.clone();
    let app = axum::Router::new().fallback(move || {
        let sent = sent.clone();
        async move { sent }
    });
    let (url, accepted) = counting_upstream(app).await;
    let platform = with_route(&url, "strip_prefix = true").await;
    let token = platform.provider.own_service_token("gateway", "x").unwrap();
    for _ in 0..3 {
        let response = reqwest::Client::new()
            .get(platform.gw("/api/up/big"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.bytes().await.unwrap();
        assert!(
            body == big,
            "the whole answer, in order ({} bytes)",
            body.len()
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one kept-alive connection"
    );
}
