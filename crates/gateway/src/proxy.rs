//! The HTTP mechanics of forwarding: the upstream client (hyper-util's
//! pooled HTTP/1.1 client, bodies streamed both ways, never buffered), the
//! headers a hop must drop (RFC 9110 §7.6.1), request ids, W3C trace
//! context, and the caller's address behind trusted proxies. What to
//! forward and to whom is decided by the pipeline (`pipeline.rs`).

use std::net::IpAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CONNECTION, HeaderName, UPGRADE};
use axum::http::{HeaderMap, HeaderValue};
use echo_crypto::secret::random_bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The pooled client every route's requests go through.
pub(crate) type Upstreams = Client<HttpConnector, Body>;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

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

/// The caller's `X-Request-Id` if it is a sane token (at most 128 of
/// `[A-Za-z0-9._:-]`), else a new random one.
pub(crate) fn request_id(headers: &HeaderMap) -> HeaderValue {
    let sane = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
    };
    match headers.get(REQUEST_ID).filter(sane) {
        Some(given) => given.clone(),
        None => HeaderValue::from_str(&hex(&random_bytes::<16>()))
            .unwrap_or(HeaderValue::from_static("0")),
    }
}

/// W3C Trace Context §3.2: continues the caller's trace if its
/// `traceparent` is valid (same trace id and flags, a new parent id for
/// the gateway's hop), else starts a new sampled trace.
pub(crate) fn traceparent(headers: &HeaderMap) -> HeaderValue {
    let parent = hex(&random_bytes::<8>());
    let value = match headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent)
    {
        Some((trace_id, flags)) => format!("00-{trace_id}-{parent}-{flags}"),
        None => format!("00-{}-{parent}-01", hex(&random_bytes::<16>())),
    };
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("0"))
}

/// `(trace id, flags)` of a valid version-00 `traceparent`.
fn parse_traceparent(value: &str) -> Option<(&str, &str)> {
    let mut parts = value.trim().split('-');
    let (version, trace_id, parent_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, len: usize| {
        s.len() == len
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let nonzero = |s: &str| s.bytes().any(|b| b != b'0');
    let valid = version == "00"
        && parts.next().is_none()
        && lower_hex(trace_id, 32)
        && nonzero(trace_id)
        && lower_hex(parent_id, 16)
        && nonzero(parent_id)
        && lower_hex(flags, 2);
    valid.then_some((trace_id, flags))
}

/// Sets `X-Forwarded-For` to the caller's address alone: what a client
/// sent in it is not passed on.
pub(crate) fn set_forwarded_for(headers: &mut HeaderMap, ip: Option<&str>) {
    headers.remove(X_FORWARDED_FOR);
    headers.remove("forwarded");
    if let Some(value) = ip.and_then(|ip| HeaderValue::from_str(ip).ok()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
}

/// The caller's address: the peer's, unless the peer is a trusted proxy,
/// in which case the right-most `X-Forwarded-For` entry that is not a
/// trusted proxy (entries further left can be forged by the client).
pub(crate) fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> Option<IpAddr> {
    let peer = peer?;
    if !trusted.contains(&peer) {
        return Some(peer);
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|entry| entry.trim().parse().ok())
        .collect();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted.contains(ip))
            .unwrap_or(peer),
    )
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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
    fn request_ids_are_kept_when_sane() {
        let id = request_id(&headers(&[("x-request-id", "abc-123")]));
        assert_eq!(id, "abc-123");
        let new = request_id(&headers(&[("x-request-id", "evil value")]));
        assert_eq!(new.len(), 32);
        assert_ne!(new, request_id(&HeaderMap::new()));
    }

    #[test]
    fn traceparent_continues_a_valid_trace_and_starts_one_otherwise() {
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = traceparent(&headers(&[("traceparent", given)]));
        let next = next.to_str().unwrap();
        assert!(next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(next.ends_with("-01"));
        assert_ne!(next, given, "a new parent id for the gateway's hop");
        assert!(parse_traceparent(next).is_some());
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "garbage",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
            let fresh = traceparent(&headers(&[("traceparent", bad)]));
            assert!(parse_traceparent(fresh.to_str().unwrap()).is_some());
        }
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let proxy: IpAddr = [10, 0, 0, 1].into();
        let client: IpAddr = [192, 0, 2, 7].into();
        let forged = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7")]);
        assert_eq!(client_ip(Some(client), &forged, &[]), Some(client));
        assert_eq!(
            client_ip(Some(client), &forged, &[proxy]),
            Some(client),
            "not a proxy"
        );
        assert_eq!(
            client_ip(Some(proxy), &forged, &[proxy]),
            Some(client),
            "right-most"
        );
        assert_eq!(
            client_ip(Some(proxy), &HeaderMap::new(), &[proxy]),
            Some(proxy)
        );
    }
}
