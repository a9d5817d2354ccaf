//! What every service answers for its operators, beside its own routes:
//! `GET /healthz`, `GET /readyz` and `GET /metrics`, and the request
//! metrics of every route. [`Service`](crate::Service) mounts them (see
//! [`Ops`]), so no service has a copy of its own.
//!
//! - `/healthz`: the process runs: always `200 {"status":"ok"}`.
//! - `/readyz`: each [`Check`] of the service (its database, its keys,
//!   its issuer's JWKS, its audit writer…) run at once, each within
//!   [`CHECK_TIMEOUT`]: `200 {"status":"ready","checks":{name:{"state":…}}}`
//!   when none failed, else 503 with `"status":"not ready"`. A failure's
//!   cause is logged, never answered (the endpoint is open).
//! - `/metrics`: the process's metrics in the Prometheus text format
//!   (`metrics.rs`), answered to loopback callers (the client after the
//!   service's trusted proxies, with no forwarded address other than
//!   loopback) and to a service token for the service's audience with
//!   [`METRICS_SCOPE`]; anyone else gets the gate's 401/403.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use echo_core::sync::lock;
use metrics::{Counter, Histogram, SharedString};
use serde_json::{Value, json};

use crate::origin::{Origin, TrustedProxies, X_FORWARDED_FOR};
use crate::{Gate, Problem};

/// The scope a service token needs to read `/metrics` from elsewhere than
/// loopback (a service-only scope at identity).
pub const METRICS_SCOPE: &str = "metrics.read";

/// How long one readiness check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The route label of requests no route matched (the gateway's proxied
/// requests, 404s): never the raw path, whose values are unbounded.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// What a passing check reports: `ok`, or a state that is still ready
/// (`spooling`, `cached`).
pub type CheckResult = Result<&'static str, String>;

/// One readiness check: its name in `/readyz` and how to run it.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    probe: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

type CheckFuture = std::pin::Pin<Box<dyn Future<Output = CheckResult> + Send>>;

impl Check {
    pub fn new<F, Fut>(name: &'static str, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckResult> + Send + 'static,
    {
        Self {
            name,
            probe: Arc::new(move || Box::pin(probe())),
        }
    }

    /// The issuer's signing keys, reachable or cached (what every service
    /// verifying tokens needs).
    pub fn issuer_keys(verifier: Arc<echo_verify::Verifier>) -> Self {
        Self::new("issuer_keys", move || {
            let verifier = verifier.clone();
            async move { verifier.keys_ready().await }
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    async fn run(&self) -> CheckResult {
        match tokio::time::timeout(CHECK_TIMEOUT, (self.probe)()).await {
            Ok(result) => result,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    }
}

impl std::fmt::Debug for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Check").field("name", &self.name).finish()
    }
}

/// A service's operations endpoints: its name (the `service` label of its
/// request metrics), its readiness checks, and who may read its metrics.
#[derive(Debug, Default)]
pub struct Ops {
    pub(crate) checks: Vec<Check>,
    pub(crate) metrics_gate: Option<(Arc<Gate>, TrustedProxies)>,
}

impl Ops {
    /// `router` with the request metrics of `service` on every route and
    /// `/healthz`, `/readyz`, `/metrics` beside its routes.
    pub(crate) fn wrap(self, service: &'static str, router: Router) -> Router {
        crate::metrics::handle();
        let ops = Arc::new(self);
        let ready = ops.clone();
        let metrics = ops;
        router
            .merge(
                Router::new()
                    .route(
                        "/healthz",
                        get(|| async { axum::Json(json!({"status": "ok"})) }),
                    )
                    .route(
                        "/readyz",
                        get(move || {
                            let ops = ready.clone();
                            async move { ops.readiness(service).await }
                        }),
                    )
                    .route(
                        "/metrics",
                        get(move |request: Request| {
                            let ops = metrics.clone();
                            async move { ops.metrics(request).await }
                        }),
                    ),
            )
            .layer(axum::middleware::from_fn(move |request, next| {
                record(service, request, next)
            }))
    }

    async fn readiness(&self, service: &'static str) -> Response {
        // At once, each on a task of its own: the answer comes within one
        // CHECK_TIMEOUT, however many checks are slow. One after the other
        // (as they once ran), four slow checks took up to 8 s, and a load
        // balancer that gives a check less took a busy replica for a dead
        // one.
        let runs: Vec<_> = self
            .checks
            .iter()
            .map(|check| {
                let check = check.clone();
                tokio::spawn(async move { check.run().await })
            })
            .collect();
        let mut checks = BTreeMap::new();
        let mut ready = true;
        for (check, run) in self.checks.iter().zip(runs) {
            let result = run
                .await
                .unwrap_or_else(|e| Err(format!("the check ended abnormally: {e}")));
            let state = match result {
                Ok(state) => state,
                Err(cause) => {
                    tracing::warn!(service, check = check.name, error = %cause, "readiness check failed");
                    ready = false;
                    "failed"
                }
            };
            checks.insert(check.name, json!({ "state": state }));
        }
        let (status, word) = if ready {
            (StatusCode::OK, "ready")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready")
        };
        let body: Value = json!({ "status": word, "checks": checks });
        (status, axum::Json(body)).into_response()
    }

    async fn metrics(&self, request: Request) -> Response {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let headers = request.headers();
        let trusted = self
            .metrics_gate
            .as_ref()
            .map(|(_, trusted)| trusted.clone())
            .unwrap_or_default();
        let origin = Origin::of(peer, headers, &trusted);
        if is_local(&origin, headers) {
            return exposition();
        }
        let Some((gate, _)) = &self.metrics_gate else {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "metrics are answered to loopback callers only",
            )
            .into_response();
        };
        let allowed = async {
            let caller = gate.authenticate(headers, &origin).await?;
            gate.require_service(&caller)?;
            gate.require_scope(&caller, METRICS_SCOPE)
        };
        match allowed.await {
            Ok(()) => exposition(),
            Err(refusal) => refusal.into_response(),
        }
    }
}

/// A caller on this machine: its client address is loopback and no
/// forwarded address names anything else (a local reverse proxy that is
/// not listed as trusted still forwards its clients' addresses).
fn is_local(origin: &Origin, headers: &HeaderMap) -> bool {
    let loopback = |ip: Option<IpAddr>| ip.is_some_and(|ip| ip.to_canonical().is_loopback());
    let forwarded_elsewhere = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| !loopback(entry.trim().parse().ok()));
    loopback(origin.client_ip) && !forwarded_elsewhere && !headers.contains_key("forwarded")
}

fn exposition() -> Response {
    let mut response = crate::metrics::handle().render().into_response();
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The request metrics: `echo_http_requests_total` and
/// `echo_http_request_duration_seconds` by service, method, route template
/// and status. Labels are borrowed where they can be (every request pays
/// for what is copied).
async fn record(service: &'static str, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(SharedString::const_str(UNMATCHED_ROUTE), |p| {
            SharedString::from(p.as_str().to_owned())
        });
    let recording = Recording::start(service, route, request.method());
    let response = next.run(request).await;
    recording.finish(response.status());
    response
}

/// One request's metrics: started when it arrives, recorded with its
/// status when it is answered (the `record` middleware, and the requests
/// a [`crate::Front`] answers without the router).
pub(crate) struct Recording {
    service: &'static str,
    method: &'static str,
    route: SharedString,
    started: Instant,
}

impl Recording {
    pub(crate) fn start(service: &'static str, route: SharedString, method: &Method) -> Self {
        Self {
            service,
            method: method_label(method),
            route,
            started: Instant::now(),
        }
    }

    pub(crate) fn finish(self, status: StatusCode) {
        let (requests, duration) = self.register(status);
        requests.increment(1);
        duration.record(self.started.elapsed().as_secs_f64());
    }

    /// As [`finish`](Self::finish), for requests that share their service
    /// and route label: their handles are kept in `kept` by method and
    /// status, as registering them builds and hashes a four-label key
    /// twice (a sixth of a proxied request's instructions).
    pub(crate) fn finish_kept(self, status: StatusCode, kept: &KeptHandles) {
        let took = self.started.elapsed().as_secs_f64();
        let mut handles = lock(&kept.0);
        let known = handles
            .iter()
            .find(|(method, code, ..)| *code == status && *method == self.method);
        if let Some((_, _, requests, duration)) = known {
            requests.increment(1);
            duration.record(took);
            return;
        }
        let (requests, duration) = self.register(status);
        requests.increment(1);
        duration.record(took);
        // Bounded: statuses come from upstreams.
        if handles.len() < MAX_KEPT_HANDLES {
            handles.push((self.method, status, requests, duration));
        }
    }

    /// The request counter and duration histogram of these labels.
    fn register(&self, status: StatusCode) -> (Counter, Histogram) {
        let labels = [
            ("service", SharedString::const_str(self.service)),
            ("method", SharedString::const_str(self.method)),
            ("route", self.route.clone()),
            ("status", status_label(status)),
        ];
        (
            metrics::counter!("echo_http_requests_total", &labels),
            metrics::histogram!("echo_http_request_duration_seconds", &labels),
        )
    }
}

/// Method and status label sets whose handles a [`KeptHandles`] keeps.
const MAX_KEPT_HANDLES: usize = 64;

/// The request metrics' handles of one service and route label, by method
/// and status ([`Recording::finish_kept`]). Handles are made on first use,
/// after the service has installed the recorder ([`Ops::wrap`]).
#[derive(Debug, Default)]
pub(crate) struct KeptHandles(Mutex<Vec<(&'static str, StatusCode, Counter, Histogram)>>);

/// The status as a label: borrowed for the codes Echo answers most.
fn status_label(status: StatusCode) -> SharedString {
    let common = match status.as_u16() {
        200 => "200",
        201 => "201",
        204 => "204",
        302 => "302",
        303 => "303",
        304 => "304",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return SharedString::from(other.to_string()),
    };
    SharedString::const_str(common)
}

/// The method, or `OTHER` for extension methods (a label's values stay
/// bounded whatever a client sends).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Runs `service`'s readiness checks on their own: what a service without
/// HTTP routes of its own answers on its health listener.
pub(crate) fn health_router(service: &'static str, ops: Ops) -> Router {
    ops.wrap(service, Router::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(peer: &str, xff: Option<&str>, trusted: &str) -> (Origin, HeaderMap) {
        let mut headers = HeaderMap::new();
        if let Some(xff) = xff {
            headers.insert(X_FORWARDED_FOR, xff.parse().unwrap());
        }
        let trusted = TrustedProxies::parse(trusted).unwrap();
        (
            Origin::of(Some(peer.parse().unwrap()), &headers, &trusted),
            headers,
        )
    }

    #[test]
    fn only_callers_on_this_machine_are_local() {
        let local = |peer, xff, trusted| {
            let (origin, headers) = origin(peer, xff, trusted);
            is_local(&origin, &headers)
        };
        assert!(local("127.0.0.1", None, ""));
        assert!(local("::1", None, ""));
        assert!(local("::ffff:127.0.0.1", None, ""));
        assert!(!local("192.0.2.7", None, ""));
        assert!(
            !local("127.0.0.1", Some("203.0.113.9"), "127.0.0.1"),
            "the client behind a trusted proxy"
        );
        assert!(
            !local("127.0.0.1", Some("203.0.113.9"), ""),
            "a local proxy not listed as trusted still forwards its client"
        );
        assert!(local("127.0.0.1", Some("127.0.0.1"), ""));
    }

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "OTHER");
    }

    #[test]
    fn every_status_has_its_own_label() {
        for code in [200, 204, 404, 418, 429, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(status).as_ref(), code.to_string());
        }
    }

    #[test]
    fn kept_handles_count_as_registered_ones_do() {
        let rendered = || crate::metrics::handle().render();
        let count = |status: &str| {
            let series = format!(
                "echo_http_requests_total{{service=\"kept-test\",method=\"GET\",route=\"/k\",status=\"{status}\"}} "
            );
            rendered()
                .lines()
                .find_map(|line| line.strip_prefix(&series).map(str::to_owned))
        };
        // As `Service::with_front` does before any request.
        crate::metrics::handle();
        let kept = KeptHandles::default();
        let get = Method::GET;
        for status in [200, 200, 404, 200] {
            let recording = Recording::start("kept-test", SharedString::const_str("/k"), &get);
            recording.finish_kept(StatusCode::from_u16(status).unwrap(), &kept);
        }
        // Through `finish` as well: the same series.
        Recording::start("kept-test", SharedString::const_str("/k"), &get).finish(StatusCode::OK);
        assert_eq!(count("200").as_deref(), Some("4"), "{}", rendered());
        assert_eq!(count("404").as_deref(), Some("1"));
        assert_eq!(lock(&kept.0).len(), 2, "one entry per method and status");
    }
}
