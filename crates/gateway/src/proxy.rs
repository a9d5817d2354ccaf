//! The HTTP mechanics of forwarding: the upstream client (hyper-util's
//! pooled HTTP/1.1 client, bodies streamed both ways, never buffered), the
//! headers a hop must drop (RFC 9110 §7.6.1) and the `X-Forwarded-For`
//! the gateway vouches for. Request ids, trace context and the caller's
//! address behind trusted proxies are the edge's ([`echo_edge::Origin`]).
//! What to forward and to whom is decided by the pipeline (`pipeline.rs`).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, HeaderName, UPGRADE};
use axum::http::{HeaderMap, HeaderValue};
use echo_edge::X_FORWARDED_FOR;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The pooled client every route's requests go through.
pub(crate) type Upstreams = Client<HttpConnector, Body>;

/// RFC 9110 §7.6.1 (and RFC 2616's list, still sent in the wild): headers
/// that describe one connection, not the message.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
];

pub(crate) fn upstreams() -> Upstreams {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Removes hop-by-hop headers, including every header `Connection` names,
/// and `Upgrade` (no protocol switches through the gateway).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(UPGRADE);
}

/// Sets `X-Forwarded-For` to the caller's address alone: what a client
/// sent in it is not passed on.
pub(crate) fn set_forwarded_for(headers: &mut HeaderMap, ip: Option<IpAddr>) {
    headers.remove(X_FORWARDED_FOR);
    headers.remove("forwarded");
    if let Some(value) = ip.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "text/plain"),
        ]);
        strip_hop_by_hop(&mut map);
        assert_eq!(
            map.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["accept"]
        );
    }
}
