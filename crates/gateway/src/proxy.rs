//! The HTTP mechanics of forwarding: the upstream client (hyper-util's
//! pooled HTTP/1.1 client, http or https as the route's URL says, bodies
//! streamed both ways, never buffered), the
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
use echo_tls::ClientTls;
use echo_tls::rustls::ClientConfig;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The pooled client every route's requests go through.
pub(crate) type Upstreams = Client<HttpsConnector<HttpConnector>, Body>;

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

/// Upstreams over http, or https trusting what `tls` trusts (and showing
/// its client certificate, if any).
pub(crate) fn upstreams(tls: &ClientTls) -> Upstreams {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    // hyper-rustls needs the plain connector to hand https URLs over.
    connector.enforce_http(false);
    // hyper-rustls sets the ALPN itself (`enable_http1`) and refuses a
    // configuration that already has one.
    let mut config = ClientConfig::clone(&tls.rustls_config());
    config.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
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

/// Headers in which a client could claim something about itself that the
/// upstream would take as the gateway's word: dropped from every request.
const CLIENT_CLAIMS: [&str; 5] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-real-ip",
];
/// Prefixes of header names reserved for what the gateway vouches for.
const CLAIM_PREFIXES: [&str; 2] = ["x-user-", "x-echo-"];

/// Removes what the client claims about itself ([`CLIENT_CLAIMS`], any
/// `X-User-*` or `X-Echo-*`); `X-Forwarded-For` is set anew by
/// [`set_forwarded`].
pub(crate) fn strip_client_claims(headers: &mut HeaderMap) {
    let claimed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            CLIENT_CLAIMS.contains(&name) || CLAIM_PREFIXES.iter().any(|p| name.starts_with(p))
        })
        .cloned()
        .collect();
    for name in claimed {
        headers.remove(name);
    }
}

/// The forwarding headers the gateway vouches for: the caller's address
/// alone in `X-Forwarded-For` and `X-Real-IP` (what a client sent there is
/// not passed on), and the scheme and host the caller reached, from the
/// gateway's public URL.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, ip: Option<IpAddr>, public_url: &str) {
    headers.remove(X_FORWARDED_FOR);
    if let Some(value) = ip.and_then(|ip| HeaderValue::from_str(&ip.to_string()).ok()) {
        headers.insert(X_FORWARDED_FOR, value.clone());
        headers.insert(HeaderName::from_static("x-real-ip"), value);
    }
    if let Some((scheme, host)) = public_url.split_once("://")
        && let (Ok(scheme), Ok(host)) = (HeaderValue::from_str(scheme), HeaderValue::from_str(host))
    {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), scheme);
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
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

    #[test]
    fn what_the_client_claims_is_replaced_by_what_the_gateway_vouches_for() {
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-real-ip", "203.0.113.9"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.9"),
            ("x-user-id", "admin"),
            ("X-Echo-Roles", "admin"),
            ("x-useragent-ok", "kept"),
            ("accept", "text/plain"),
        ]);
        strip_client_claims(&mut map);
        set_forwarded(
            &mut map,
            Some([192, 0, 2, 7].into()),
            "http://gw.example:8080",
        );
        let mut names: Vec<_> = map.keys().map(|k| k.as_str().to_owned()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "accept",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-real-ip",
                "x-useragent-ok"
            ]
        );
        assert_eq!(map["x-forwarded-for"], "192.0.2.7");
        assert_eq!(map["x-real-ip"], "192.0.2.7");
        assert_eq!(map["x-forwarded-host"], "gw.example:8080");
        assert_eq!(map["x-forwarded-proto"], "http");
    }
}
