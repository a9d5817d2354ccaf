//! The edge: the one piece of code every Echo service admits callers
//! through, so that a change of token policy is a change in one place.
//!
//! - [`Origin`] (`origin.rs`): where a request came from — the peer, the
//!   client behind [`TrustedProxies`], the user agent, the request id and
//!   the W3C trace. Computed once per request by [`EdgeLayer`].
//! - [`Gate`] (`gate.rs`): authenticates the caller's bearer token with the
//!   shared verifier and yields a typed [`Caller`] (user or service, with
//!   its client id and scope), or a [`Refusal`]: 401 with the RFC 6750
//!   challenge, 403 for the wrong kind of token or a missing scope, 503
//!   when the keys cannot be had.
//! - [`RefusalLog`] (`refusals.rs`): every refusal audited once, as
//!   [`ACCESS_DENIED`], aggregated per address and reason so a flood of
//!   bad tokens cannot flood the audit log.
//! - [`Problem`] (`problem.rs`): the one RFC 9457 error body of JSON
//!   endpoints that are not OAuth endpoints.
//! - [`ServiceTokens`] (`tokens.rs`): the client-credentials client every
//!   service presents its own tokens with, cached and single-flight.
//! - [`Service`] (`run.rs`): how a service is bound, announced (`ready
//!   <address>`), runs its [`Periodic`] jobs, shuts down and flushes;
//!   `tls.rs`: HTTPS on its listener with an `echo_tls::ServerTls`, and the
//!   job that reloads renewed certificates.
//! - [`Check`] and the operations endpoints (`ops.rs`): `/healthz`,
//!   `/readyz` and `/metrics` beside every service's routes, and its
//!   request metrics; `metrics.rs` is the process's Prometheus recorder.
//! - [`trace`] (`trace.rs`): W3C Trace Context: each request (and job) in
//!   a span carrying its trace id, continued from the caller's
//!   `traceparent` or started; [`trace::headers`] for the next hop,
//!   [`trace::stamp`] for audit events.
//! - [`RateLimiter`] (`rate_limit.rs`): token buckets in one process;
//!   [`Limiter`] and [`SharedLimiter`] (`shared_limit.rs`): the same limits
//!   counted by every replica in [`SharedCounters`] — Redis
//!   ([`RedisCounters`], `redis.rs`) or a service's database.
//! - `web.rs`: cookies, pages, redirects and security headers; [`Nav`]
//!   (`nav.rs`): the navigation bar every page people see shares;
//!   `words.rs`: times and browsers as pages say them.

mod front;
mod gate;
pub mod metrics;
mod nav;
mod ops;
mod origin;
mod problem;
mod rate_limit;
mod redis;
mod refusals;
mod run;
mod shared_limit;
mod tls;
mod tokens;
pub mod trace;
mod web;
pub mod words;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;

pub use front::{Front, FrontFuture};
pub use gate::{Caller, CallerKind, Gate, HasGate, Reason, Refusal, ServiceCaller, UserCaller};
pub use nav::{Nav, NavLink};
pub use ops::{CHECK_TIMEOUT, Check, CheckResult, METRICS_SCOPE, UNMATCHED_ROUTE};
pub use origin::{
    Cidr, MAX_USER_AGENT, Origin, REQUEST_ID, TrustedProxies, X_FORWARDED_FOR, client_ip, ip_text,
    push_ip, request_id,
};
pub use problem::{PROBLEM_JSON, Problem};
pub use rate_limit::{Limit, RateLimiter, Throttled};
pub use redis::{DEFAULT_RATE_LIMIT_PREFIX, RedisCounters, redis_client};
pub use refusals::{ACCESS_DENIED, DEFAULT_WINDOW, RefusalLog, RefusedSubject};
pub use run::{BoxFuture, Periodic, Service, bind, run_all, run_until_signalled, shutdown_signal};
pub use shared_limit::{
    CountersUnavailable, Limiter, SharedCounters, SharedLimiter, Window, unix_ms,
};
pub use tls::{CERT_CHECK_INTERVAL, cert_reload_job};
pub use tokens::{REFRESH_MARGIN, ServiceTokens, TokenSource, refresh_after};
pub use trace::{TRACEPARENT, TraceContext};
pub use web::{
    SecurityHeaders, add_cookies, bearer, bearer_challenge, cookie, cookie_name, render, see_other,
    set_cookie,
};

/// What every response and every request of a service goes through: the
/// request's [`Origin`] (behind the operator's trusted proxies) put on it
/// for handlers and the gate, and the security headers put on the answer.
#[derive(Debug, Clone)]
pub struct EdgeLayer {
    pub trusted_proxies: TrustedProxies,
    pub security_headers: SecurityHeaders,
}

impl EdgeLayer {
    /// The edge of a service that answers JSON alone to other services
    /// (audit, parser): no trusted proxies, a CSP that allows nothing.
    pub fn api() -> Self {
        Self {
            trusted_proxies: TrustedProxies::default(),
            security_headers: SecurityHeaders {
                csp: axum::http::HeaderValue::from_static(
                    "default-src 'none'; frame-ancestors 'none'",
                ),
                https: false,
            },
        }
    }

    /// `router` behind the edge.
    pub fn wrap<S>(self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let headers = self.security_headers.clone();
        let trusted = self.trusted_proxies;
        headers
            .wrap(router)
            .layer(axum::middleware::from_fn(move |request, next| {
                with_origin(trusted.clone(), request, next)
            }))
    }
}

async fn with_origin(trusted: TrustedProxies, mut request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let origin = match request.extensions().get::<TraceContext>() {
        Some(trace) => Origin::in_trace(peer, request.headers(), &trusted, trace.clone()),
        None => Origin::of(peer, request.headers(), &trusted),
    };
    request.extensions_mut().insert(origin);
    next.run(request).await
}
