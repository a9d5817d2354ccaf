//! The HTTP mechanics of forwarding: the upstream connections (a pool of
//! keep-alive HTTP/1.1 connections per upstream, http or https as the
//! route's URL says, bodies streamed both ways, never buffered), the
//! headers a hop must drop (RFC 9110 §7.6.1) and the `X-Forwarded-For`
//! the gateway vouches for. Request ids, trace context and the caller's
//! address behind trusted proxies are the edge's ([`echo_edge::Origin`]).
//! What to forward and to whom is decided by the pipeline (`pipeline.rs`).
//!
//! The pool is hyper's own connection API with a queue of idle senders per
//! upstream: a request takes the connection idle longest, sends on it, and
//! the connection goes back when the response's body has been read to its
//! end and the connection waits for its next request (a body dropped
//! early closes it, and so does a request body still being sent).
//! hyper-util's pooled client did the same with a task spawned per request
//! to watch the connection come back, which cost more than the rest of the
//! gateway's work together (BENCHMARKS.md, issue 18).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::header::{CONNECTION, HeaderName};
use axum::http::{HeaderMap, HeaderValue, Request, Response, Uri};
use echo_core::sync::lock;
use echo_edge::{X_FORWARDED_FOR, ip_text};
use echo_tls::ClientTls;
use echo_tls::rustls::ClientConfig;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tower::ServiceExt;

use crate::metrics::UpstreamMetrics;
use crate::routes::RouteTable;

/// An idle connection is closed after this long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream; more are closed when they come back.
const MAX_IDLE: usize = 1024;
/// Tries of a request whose connection closed before it was sent (an idle
/// connection the upstream had just closed): the request goes out once.
const SEND_TRIES: usize = 3;

type Connector = HttpsConnector<HttpConnector>;

/// An upstream call that got no response: why.
pub(crate) type SendError = Box<dyn std::error::Error + Send + Sync>;

/// The connections to every route's upstream.
pub(crate) struct Upstreams {
    /// By the route's prefix.
    routes: HashMap<String, Upstream>,
}

/// A route's upstream: its connections (shared by the routes to one
/// origin) and the route's upstream metrics.
pub(crate) struct Upstream {
    pool: Arc<Pool>,
    pub(crate) metrics: UpstreamMetrics,
}

/// One upstream's idle connections, oldest first.
struct Pool {
    connector: Connector,
    /// Where new connections go.
    origin: Uri,
    /// The `Host` its requests carry.
    host: HeaderValue,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: SendRequest<Body>,
    since: Instant,
}

impl Upstreams {
    /// The pools of `routes`' upstreams, over http, or https trusting what
    /// `tls` trusts (and showing its client certificate, if any).
    pub(crate) fn new(tls: &ClientTls, routes: &RouteTable) -> Self {
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
        let mut pools: HashMap<&str, Arc<Pool>> = HashMap::new();
        let routes = routes
            .routes()
            .iter()
            .filter_map(|route| {
                let pool = match pools.get(route.origin.as_str()) {
                    Some(pool) => pool.clone(),
                    None => {
                        let origin = route.origin.parse::<Uri>().ok()?;
                        let host = HeaderValue::from_str(origin.authority()?.as_str()).ok()?;
                        let pool = Arc::new(Pool {
                            connector: connector.clone(),
                            origin,
                            host,
                            idle: Mutex::default(),
                        });
                        pools.insert(&route.origin, pool.clone());
                        pool
                    }
                };
                let upstream = Upstream {
                    pool,
                    metrics: UpstreamMetrics::of_route(&route.prefix),
                };
                Some((route.prefix.clone(), upstream))
            })
            .collect();
        Self { routes }
    }

    /// The upstream of the route at `prefix`.
    pub(crate) fn of(&self, prefix: &str) -> Option<&Upstream> {
        self.routes.get(prefix)
    }
}

impl Upstream {
    /// Sends `request` (origin-form URI, no `Host`) to the upstream, on an
    /// idle connection or a new one; the response's body hands its
    /// connection back when read to its end.
    pub(crate) async fn send(
        &self,
        mut request: Request<Body>,
    ) -> Result<Response<Body>, SendError> {
        let pool = &self.pool;
        request
            .headers_mut()
            .insert(axum::http::header::HOST, pool.host.clone());
        let mut tries = 0;
        loop {
            let mut sender = match pool.take() {
                // Back from its last response, it is ready once its
                // connection has read that response's end, or closed if
                // the upstream said so.
                Some(mut idle) => match idle.ready().await {
                    Ok(()) => idle,
                    Err(_) => continue,
                },
                None => pool.connect().await?,
            };
            tries += 1;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let body = Returning {
                        body,
                        sender: Some(sender),
                        pool: pool.clone(),
                        ended: false,
                    };
                    return Ok(Response::from_parts(parts, Body::new(body)));
                }
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if tries < SEND_TRIES => request = unsent,
                    _ => return Err(failed.into_error().into()),
                },
            }
        }
    }
}

impl Pool {
    /// A new connection to the upstream, driven by a task of its own.
    async fn connect(&self) -> Result<SendRequest<Body>, SendError> {
        let io = self.connector.clone().oneshot(self.origin.clone()).await?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// The connection idle longest that is still open and not too old.
    fn take(&self) -> Option<SendRequest<Body>> {
        let mut idle = lock(&self.idle);
        while let Some(Idle { sender, since }) = idle.pop_front() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Body>) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE && !sender.is_closed() {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// An upstream response's body that gives its connection back to the
/// pool once read to its end.
struct Returning {
    body: Incoming,
    sender: Option<SendRequest<Body>>,
    pool: Arc<Pool>,
    ended: bool,
}

impl hyper::body::Body for Returning {
    type Data = hyper::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        // Back only when it waits for its next request: a request whose
        // body was still on its way when the answer ended would otherwise
        // hold up the next request on it (behind a body that may never
        // end). A connection whose task has not yet looked for its next
        // request goes too: that costs a new connection, never a wait.
        if let Some(sender) = self.sender.take()
            && (self.ended || self.body.is_end_stream())
            && sender.is_ready()
        {
            self.pool.give_back(sender);
        }
    }
}

/// Whether `name` (lower case, as a [`HeaderMap`] keeps it) describes one
/// connection, not the message: RFC 9110 §7.6.1's headers (and RFC 2616's
/// list, still sent in the wild), and `Upgrade` (no protocol switches
/// through the gateway).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Whether `name` is a header in which a client could claim something
/// about itself that the upstream would take as the gateway's word
/// (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, and the prefixes reserved
/// for what the gateway vouches for, `X-User-*` and `X-Echo-*`).
/// `X-Forwarded-For` and the rest are set anew by [`set_forwarded`].
pub(crate) fn is_client_claim(name: &str) -> bool {
    matches!(
        name,
        "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "x-forwarded-port"
            | "x-real-ip"
    ) || name.starts_with("x-user-")
        || name.starts_with("x-echo-")
}

/// Keeps of `headers` what goes on to the next hop, in one pass over
/// them: no hop-by-hop header, none that `Connection` names, and none for
/// which `dropped` says so; with room for `added` more, which the caller
/// is about to set (so that the map does not grow as they go in). (A
/// [`HeaderMap`] has no `retain`; removing names one by one hashes each
/// of them whether it was sent or not.)
pub(crate) fn keep_end_to_end(
    headers: &mut HeaderMap,
    added: usize,
    dropped: impl Fn(&str) -> bool,
) {
    // Copied out (none allocated without a `Connection`): the map is
    // taken apart below.
    let connection: Vec<HeaderValue> = headers.get_all(CONNECTION).iter().cloned().collect();
    let named = |name: &str| {
        connection.iter().any(|value| {
            value.to_str().is_ok_and(|listed| {
                listed
                    .split(',')
                    .any(|listed| listed.trim().eq_ignore_ascii_case(name))
            })
        })
    };
    let goes = |name: &HeaderName| {
        let name = name.as_str();
        is_hop_by_hop(name) || dropped(name) || named(name)
    };
    if !headers.keys().any(goes) {
        headers.reserve(added);
        return;
    }
    let mut kept = HeaderMap::with_capacity(headers.len() + added);
    let mut current: Option<(HeaderName, bool)> = None;
    for (name, value) in std::mem::take(headers) {
        // `None`: another value of the name before.
        if let Some(name) = name {
            let keep = !goes(&name);
            current = Some((name, keep));
        }
        if let Some((name, true)) = &current {
            kept.append(name.clone(), value);
        }
    }
    *headers = kept;
}

/// The scheme and host the caller reached, from the gateway's public URL:
/// `X-Forwarded-Proto` and `X-Forwarded-Host` of every forwarded request.
pub(crate) struct Forwarded {
    proto: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl Forwarded {
    pub(crate) fn of(public_url: &str) -> Self {
        let (proto, host) = match public_url.split_once("://") {
            Some((scheme, host)) => (
                HeaderValue::from_str(scheme).ok(),
                HeaderValue::from_str(host).ok(),
            ),
            None => (None, None),
        };
        Self { proto, host }
    }
}

/// The forwarding headers the gateway vouches for: the caller's address
/// alone in `X-Forwarded-For` and `X-Real-IP`, and the scheme and host the
/// caller reached. What a client sent in them is gone before: they are
/// client claims ([`is_client_claim`], dropped by [`keep_end_to_end`]).
pub(crate) fn set_forwarded(headers: &mut HeaderMap, ip: Option<IpAddr>, reached: &Forwarded) {
    if let Some(value) = ip.and_then(|ip| HeaderValue::try_from(ip_text(ip)).ok()) {
        headers.insert(X_FORWARDED_FOR, value.clone());
        headers.insert(HeaderName::from_static("x-real-ip"), value);
    }
    if let (Some(proto), Some(host)) = (&reached.proto, &reached.host) {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), proto.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
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
        keep_end_to_end(&mut map, 0, |_| false);
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
        keep_end_to_end(&mut map, 0, is_client_claim);
        set_forwarded(
            &mut map,
            Some([192, 0, 2, 7].into()),
            &Forwarded::of("http://gw.example:8080"),
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

    #[test]
    fn every_value_of_a_kept_name_is_kept_and_nothing_is_rebuilt_without_cause() {
        let mut map = headers(&[
            ("accept", "text/plain"),
            ("x-echo-csrf", "1"),
            ("accept", "text/html"),
            ("cookie", "a=1"),
            ("x-b", "2"),
            ("cookie", "b=2"),
        ]);
        keep_end_to_end(&mut map, 0, |name| {
            name == "cookie" || is_client_claim(name)
        });
        let kept: Vec<_> = map
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(kept, ["accept: text/plain", "accept: text/html", "x-b: 2"]);
        assert!(
            is_client_claim(crate::principal::CSRF_HEADER),
            "the CSRF proof is ours"
        );
        // Nothing to drop: the same map, its capacity untouched.
        let mut map = headers(&[("accept", "text/plain"), ("x-b", "2")]);
        let capacity = map.capacity();
        keep_end_to_end(&mut map, 0, |_| false);
        assert_eq!((map.len(), map.capacity()), (2, capacity));
    }
}
