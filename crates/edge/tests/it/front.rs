//! A service's [`Front`]: the requests it takes are answered before the
//! router, yet with everything the edge's layers give the router's: the
//! caller's `Origin` behind the trusted proxies, the request's trace
//! (continued from its `traceparent`, current while it is answered), the
//! security headers and the request metrics. Other requests reach the
//! router, which still sees the peer's address.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use echo_edge::{
    EdgeLayer, Front, FrontFuture, Origin, SecurityHeaders, Service, TraceContext, TrustedProxies,
    bind,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// Takes every path under `/front`, and answers with what it was given.
struct Echoing;

impl Front for Echoing {
    fn takes(&self, request: &Request) -> bool {
        request.uri().path().starts_with("/front/")
    }

    fn answer(&self, request: Request, origin: Origin) -> FrontFuture {
        Box::pin(async move {
            let current = TraceContext::current();
            axum::Json(json!({
                "path": request.uri().path(),
                "client_ip": origin.client_ip.map(|ip| ip.to_string()),
                "peer": origin.peer.map(|ip| ip.to_string()),
                "trace_id": origin.trace.trace_id,
                "current_trace_id": current.map(|t| t.trace_id),
            }))
            .into_response()
        })
    }
}

/// The router's own route: what its handlers see of the caller.
async fn routed(origin: Origin) -> Response {
    axum::Json(json!({
        "client_ip": origin.client_ip.map(|ip| ip.to_string()),
        "peer": origin.peer.map(|ip| ip.to_string()),
    }))
    .into_response()
}

struct Running {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn serve() -> Running {
    let listener = bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let edge = EdgeLayer {
        trusted_proxies: TrustedProxies::parse("127.0.0.1").unwrap(),
        security_headers: SecurityHeaders {
            csp: HeaderValue::from_static("default-src 'none'"),
            https: false,
        },
    };
    let router = Router::new().route("/own", get(routed));
    let service = Service::http("fronted", listener, edge, router).with_front(Arc::new(Echoing));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(service.run(async move {
        let _ = stopped.await;
    }));
    Running { addr, _stop: stop }
}

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn the_front_answers_its_requests_with_everything_the_edge_gives() {
    let running = serve().await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://{}/front/a", running.addr))
        .header("x-forwarded-for", "203.0.113.9")
        .header("traceparent", TRACEPARENT)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["content-security-policy"], "default-src 'none'");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["path"], "/front/a");
    assert_eq!(body["peer"], "127.0.0.1");
    assert_eq!(
        body["client_ip"], "203.0.113.9",
        "the client behind the trusted proxy"
    );
    assert_eq!(
        body["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "the caller's trace continued"
    );
    assert_eq!(
        body["current_trace_id"], body["trace_id"],
        "the trace is current while the front answers"
    );

    let metrics = client
        .get(format!("http://{}/metrics", running.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|line| line.starts_with("echo_http_requests_total{")
                && line.contains(r#"service="fronted""#)
                && line.contains(r#"route="unmatched""#)
                && line.contains(r#"status="200""#)),
        "the front's request is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn other_requests_reach_the_router_with_the_peer_address() {
    let running = serve().await;
    let client = reqwest::Client::new();
    let own: Value = client
        .get(format!("http://{}/own", running.addr))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(own["peer"], "127.0.0.1");
    assert_eq!(own["client_ip"], "203.0.113.9");
    for path in ["/frontier", "/front", "/nothing"] {
        let response = client
            .get(format!("http://{}{path}", running.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{path} is not the front's");
    }
    let health = client
        .get(format!("http://{}/healthz", running.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the operations endpoints stay");
}
