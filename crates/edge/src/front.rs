//! The door every request of an HTTP service comes in by, and the
//! [`Front`] a service may put before its router: the requests it takes
//! (the gateway's proxied routes) skip axum's router and its middleware
//! stack, one boxed future and one layer each, yet go through the same
//! edge steps, called here in the order the layers run them:
//!
//! 1. the request metrics (`ops.rs`, route label [`UNMATCHED_ROUTE`]),
//! 2. the request's span and trace (`trace.rs`),
//! 3. its [`Origin`] behind the trusted proxies (`origin.rs`),
//! 4. the security headers on the answer (`web.rs`).
//!
//! Every other request goes to the router with the peer's address as
//! `ConnectInfo`, as `into_make_service_with_connect_info` gives it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use metrics::SharedString;
use tower::ServiceExt as _;

use crate::ops::{KeptHandles, Recording, UNMATCHED_ROUTE};
use crate::{EdgeLayer, Origin, trace};

/// An answer a [`Front`] gives.
pub type FrontFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

/// Requests a service answers before its router.
pub trait Front: Send + Sync + 'static {
    /// Whether `request` is the front's, from its request line and headers.
    fn takes(&self, request: &Request) -> bool;

    /// The answer to a request it took, with the request's [`Origin`]; it
    /// runs in the request's span and trace.
    fn answer(&self, request: Request, origin: Origin) -> FrontFuture;
}

/// A [`Front`] and the edge it stands behind.
pub(crate) struct FrontDoor {
    pub(crate) service: &'static str,
    pub(crate) front: Arc<dyn Front>,
    pub(crate) edge: EdgeLayer,
    /// Its requests' metric handles: they share a route label.
    pub(crate) metrics: KeptHandles,
}

impl FrontDoor {
    /// `request` through the edge's steps to the front.
    async fn answer(&self, request: Request, peer: SocketAddr) -> Response {
        let route = SharedString::const_str(UNMATCHED_ROUTE);
        let recording = Recording::start(self.service, route, request.method());
        let (span, trace) = trace::request_span(self.service, &request);
        let origin = Origin::in_trace(
            Some(peer.ip()),
            request.headers(),
            &self.edge.trusted_proxies,
            trace.clone(),
        );
        let answer = self.front.answer(request, origin);
        let mut response = trace.run(span.clone(), answer).await;
        self.edge.security_headers.put_on(response.headers_mut());
        span.record("status", response.status().as_u16());
        recording.finish_kept(response.status(), &self.metrics);
        response
    }
}

/// One connection's service: its requests to the front that takes them,
/// the rest to the router.
#[derive(Clone)]
pub(crate) struct Door {
    pub(crate) router: Router,
    pub(crate) front: Option<Arc<FrontDoor>>,
    pub(crate) peer: SocketAddr,
}

impl tower::Service<Request> for Door {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let peer = self.peer;
        if let Some(door) = &self.front
            && door.front.takes(&request)
        {
            let door = door.clone();
            return Box::pin(async move { Ok(door.answer(request, peer).await) });
        }
        request.extensions_mut().insert(ConnectInfo(peer));
        // A router is always ready; `call` on a clone keeps `self` usable.
        Box::pin(self.router.clone().oneshot(request))
    }
}
