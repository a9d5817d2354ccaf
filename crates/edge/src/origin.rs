//! Where a request came from: [`Origin`], computed once per request by
//! the edge's layer ([`crate::EdgeLayer`]) and read by handlers as an
//! extractor.
//!
//! The client address is the peer's, unless the peer is one of the
//! operator's [`TrustedProxies`]: then `X-Forwarded-For` is walked from the
//! right (the entries a trusted proxy appended) and the first entry that is
//! not a trusted proxy is the client. Entries further left are whatever the
//! client sent, so they are never believed; an entry that does not parse
//! ends the walk, and the last trusted hop is named instead of anything a
//! client could have written.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::trace::TraceContext;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `ip` as text, as its `Display` writes it.
pub fn ip_text(ip: IpAddr) -> String {
    let mut text = String::with_capacity(15);
    push_ip(&mut text, ip);
    text
}

/// Appends `ip` to `out` as its `Display` writes it, an IPv4 address
/// without the formatting machinery: a proxied request writes its
/// caller's address up to three times (rate-limit keys, `X-Forwarded-For`),
/// and `Ipv4Addr`'s `Display` costs more than the rest of the key.
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{ip}");
        }
    }
}

/// Most characters of a user agent kept (audit events, logs).
pub const MAX_USER_AGENT: usize = 256;

/// Where a request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The TCP peer.
    pub peer: Option<IpAddr>,
    /// The client: the peer, or the caller behind trusted proxies.
    pub client_ip: Option<IpAddr>,
    /// At most [`MAX_USER_AGENT`] characters.
    pub user_agent: Option<String>,
    /// The caller's `X-Request-Id` when it is a sane token, else a new one.
    pub request_id: String,
    /// The W3C trace this request belongs to: the caller's, continued, or
    /// a new one.
    pub trace: TraceContext,
}

impl Origin {
    /// The origin of a request with `headers` from `peer`, in the trace its
    /// `traceparent` names (or a new one).
    pub fn of(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &TrustedProxies) -> Self {
        Self::in_trace(
            peer,
            headers,
            trusted,
            TraceContext::continue_or_start(headers),
        )
    }

    /// The origin of a request whose trace is already known (the edge's
    /// request span began it).
    pub fn in_trace(
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        trusted: &TrustedProxies,
        trace: TraceContext,
    ) -> Self {
        let user_agent = headers
            .get(USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
        Self {
            peer,
            client_ip: peer.map(|peer| client_ip(peer, headers, trusted)),
            user_agent,
            request_id: request_id(headers),
            trace,
        }
    }

    /// An origin with no address or headers (a benchmark, a test).
    pub fn unknown() -> Self {
        Self::of(None, &HeaderMap::new(), &TrustedProxies::default())
    }

    /// The client address as text, for audit events and rate-limit keys.
    pub fn ip(&self) -> Option<String> {
        self.client_ip.map(ip_text)
    }

    /// `event` with this origin: address, user agent and trace id.
    pub fn stamp(&self, event: echo_core::audit::AuditEvent) -> echo_core::audit::AuditEvent {
        event
            .origin(self.ip(), self.user_agent.clone())
            .trace(Some(self.trace.trace_id.clone()))
    }
}

/// Handlers read the [`Origin`] the edge layer put on the request; without
/// the layer (a router under test), the peer address alone.
impl<S: Send + Sync> FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(origin) = parts.extensions.get::<Origin>() {
            return Ok(origin.clone());
        }
        Ok(Origin::of(
            peer_of(parts),
            &parts.headers,
            &TrustedProxies::default(),
        ))
    }
}

/// The TCP peer (needs `into_make_service_with_connect_info`).
pub(crate) fn peer_of(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The proxies whose `X-Forwarded-For` is believed: addresses or CIDR
/// blocks. None by default: a client's own header is never trusted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Comma- or space-separated addresses and CIDR blocks
    /// (`10.0.0.0/8, 127.0.0.1, ::1`).
    pub fn parse(list: &str) -> Result<Self, String> {
        list.split([',', ' '])
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse())
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    pub fn from_cidrs(cidrs: Vec<Cidr>) -> Self {
        Self(cidrs)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An address block: an address and how many leading bits count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 client may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_eq(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (whole, rest) = (bits / 8, bits % 8);
    if a[..whole] != b[..whole] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        a[whole] & mask == b[whole] & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an IP address or CIDR block");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy.
/// Then `X-Forwarded-For` (every header line, in order) is walked from the
/// right: trusted proxies are skipped, the first other address is the
/// client, and an entry that is not an address stops the walk at the last
/// trusted hop (what lies left of it was written by someone untrusted).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut nearest_trusted = peer;
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.trim().parse::<IpAddr>() else {
            return nearest_trusted;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        nearest_trusted = ip;
    }
    nearest_trusted
}

/// The caller's `X-Request-Id` if it is a sane token (at most 128 of
/// `[A-Za-z0-9._:-]`), else a new random one.
pub fn request_id(headers: &HeaderMap) -> String {
    let sane = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= 128
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(b))
    };
    match headers
        .get(REQUEST_ID)
        .filter(sane)
        .and_then(|v| v.to_str().ok())
    {
        Some(given) => given.to_owned(),
        None => random_hex_id::<16>(),
    }
}

/// `N` random bytes in hex: request, trace and span ids. Drawn from the
/// thread's ChaCha generator (seeded by the OS), not aws-lc's DRBG, which
/// asks the CPU for fresh entropy on every call: ids are not keys, and
/// every request draws three of them (BENCHMARKS.md, issue 18).
pub(crate) fn random_hex_id<const N: usize>() -> String {
    hex(&rand::random::<[u8; N]>())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        let mut addresses: Vec<IpAddr> = [0u8, 1, 9, 10, 42, 99, 100, 109, 110, 199, 200, 255]
            .iter()
            .map(|&o| IpAddr::from([o, 255 - o, o / 2, 7]))
            .collect();
        for v6 in [
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:192.0.2.7",
            "fe80::1",
        ] {
            addresses.push(v6.parse().unwrap());
        }
        for ip in addresses {
            assert_eq!(ip_text(ip), ip.to_string());
            let mut key = String::from("ip ");
            push_ip(&mut key, ip);
            assert_eq!(key, format!("ip {ip}"));
        }
    }

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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks_match_by_prefix() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 192.168.1.7 fd00::/8").unwrap();
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("192.168.1.7")));
        assert!(!trusted.contains(ip("192.168.1.8")));
        assert!(trusted.contains(ip("fd12::1")));
        assert!(trusted.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
        assert!(!trusted.contains(ip("11.0.0.1")));
        let odd: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(odd.contains(ip("172.31.255.255")) && !odd.contains(ip("172.32.0.0")));
        for bad in ["10.0.0.0/33", "junk", "10.0.0.0/x", "::/129"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies_and_from_the_right() {
        let proxy = ip("10.0.0.1");
        let trusted = TrustedProxies::parse("10.0.0.0/8").unwrap();
        let client = ip("192.0.2.7");
        let forged = headers(&[("x-forwarded-for", "203.0.113.9, 192.0.2.7")]);
        assert_eq!(
            client_ip(client, &forged, &TrustedProxies::default()),
            client
        );
        assert_eq!(client_ip(client, &forged, &trusted), client, "not a proxy");
        assert_eq!(client_ip(proxy, &forged, &trusted), client, "right-most");
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
        let chained = headers(&[
            ("x-forwarded-for", "203.0.113.9"),
            ("x-forwarded-for", "192.0.2.7, 10.1.1.1"),
        ]);
        assert_eq!(client_ip(proxy, &chained, &trusted), client, "two proxies");
    }

    /// Issue 14 §5: `X-Forwarded-For: 203.0.113.9, junk` sent by the
    /// client, with the real address appended by the proxy, must not yield
    /// the forged address.
    #[test]
    fn junk_in_forwarded_for_never_yields_a_forged_address() {
        let proxy = ip("10.0.0.1");
        let trusted = TrustedProxies::parse("10.0.0.1").unwrap();
        let appended = headers(&[("x-forwarded-for", "203.0.113.9, junk, 198.51.100.7")]);
        assert_eq!(client_ip(proxy, &appended, &trusted), ip("198.51.100.7"));
        for junk_last in [
            "203.0.113.9, junk",
            "203.0.113.9,",
            "203.0.113.9, 10.0.0.1, %30",
        ] {
            let sent = headers(&[("x-forwarded-for", junk_last)]);
            assert_eq!(client_ip(proxy, &sent, &trusted), proxy, "{junk_last}");
        }
    }

    #[test]
    fn request_ids_are_kept_when_sane() {
        assert_eq!(
            request_id(&headers(&[("x-request-id", "abc-123")])),
            "abc-123"
        );
        let new = request_id(&headers(&[("x-request-id", "evil value")]));
        assert_eq!(new.len(), 32);
        assert_ne!(new, request_id(&HeaderMap::new()));
    }
}
