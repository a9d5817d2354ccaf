//! The HTTP face of the gateway: routes, request parsing, pages and the
//! one error → response mapping. Handlers stay thin: they read the
//! request, call one [`Gateway`] method and map its result.

mod console;
mod error;
mod handlers;
mod page;
mod pages;
mod sessions;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use echo_edge::{Check, EdgeLayer, Front, FrontFuture, Origin, Periodic, SecurityHeaders, Service};

use crate::Gateway;

/// All of the gateway's endpoints.
pub fn router(gateway: Arc<Gateway>) -> Router {
    Router::new()
        .route("/", get(handlers::home))
        .route("/account", get(handlers::account))
        .route("/sessions", get(sessions::list))
        .route("/sessions/end", post(sessions::end))
        .route("/logs", get(handlers::logs))
        .route("/admin", get(console::dashboard))
        .merge(console_routes())
        .route("/upload", get(handlers::upload))
        .route("/documents", get(handlers::documents))
        .route("/ask", get(handlers::ask))
        .route("/login", get(handlers::login))
        .route("/callback", get(handlers::callback))
        .route("/logout", post(handlers::logout))
        .route("/signed-out", get(handlers::signed_out))
        .route("/api/me", get(handlers::me))
        .route("/static/gateway.css", get(pages::stylesheet))
        .route("/static/documents.js", get(pages::documents_script))
        .route("/ping", get(|| async { "pong" }))
        .fallback(handlers::proxy)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            handlers::admit,
        ))
        .with_state(gateway)
}

/// The edge the gateway stands behind: its trusted proxies, and security
/// headers whose `form-action` also covers the redirect after a form
/// (logout posts here and continues to identity's logout endpoint).
fn edge(gateway: &Gateway) -> EdgeLayer {
    let config = gateway.config();
    let identity_origin = url::Url::parse(&config.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self' {identity_origin}; \
         frame-ancestors 'none'"
    );
    EdgeLayer {
        trusted_proxies: config.trusted_proxies.clone(),
        security_headers: SecurityHeaders {
            csp: HeaderValue::from_str(&csp)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
            https: config.https(),
        },
    }
}

/// The requests under a route's prefix, answered before the router
/// (`echo_edge::Front`): the router would only have handed them to its
/// fallback, since no route may sit under the gateway's own paths.
struct Routed(Arc<Gateway>);

impl Front for Routed {
    fn takes(&self, request: &Request) -> bool {
        self.0.config().routes.find(request.uri().path()).is_some()
    }

    fn answer(&self, request: Request, origin: Origin) -> FrontFuture {
        let gateway = self.0.clone();
        Box::pin(async move { handlers::routed(&gateway, request, &origin).await })
    }
}

/// The admin console's pages (`http/console.rs`), their forms bounded.
fn console_routes() -> Router<Arc<Gateway>> {
    Router::new()
        .route(
            "/admin/users",
            get(console::users).post(console::create_user),
        )
        .route("/admin/invitations", post(console::invite))
        .route("/admin/users/{name}", get(console::user))
        .route("/admin/users/{name}/{verb}", post(console::user_action))
        .route(
            "/admin/clients",
            get(console::clients).post(console::create_client),
        )
        .route("/admin/clients/{id}", get(console::client))
        .route("/admin/clients/{id}/{verb}", post(console::client_action))
        .route("/admin/keys", get(console::keys))
        .route("/admin/keys/rotate", post(console::rotate_keys))
        .route("/admin/keys/{kid}/{verb}", post(console::key_action))
        .layer(axum::extract::DefaultBodyLimit::max(console::FORM_LIMIT))
}

/// The gateway on `listener`, with its periodic jobs: purging ended
/// sessions, recording refusal counts.
pub fn service(listener: tokio::net::TcpListener, gateway: Arc<Gateway>) -> Service {
    let purging = gateway.clone();
    let purge = Periodic::every(
        "session purge",
        Duration::from_secs(gateway.config().purge_interval),
        move || {
            let gateway = purging.clone();
            async move { gateway.purge().await.map(drop) }
        },
    );
    let counting = gateway.clone();
    let count_sessions = Periodic::every("session count", SESSION_COUNT_INTERVAL, move || {
        let gateway = counting.clone();
        async move { gateway.count_sessions().await.map(drop) }
    })
    .at_start();
    let store = gateway.clone();
    let sessions = Check::new("sessions", move || {
        let gateway = store.clone();
        async move {
            match gateway.count_sessions().await {
                Ok(_) => Ok("ok"),
                Err(e) => Err(e.to_string()),
            }
        }
    });
    let refusal_counts = gateway.gate().refusal_job();
    let issuer_keys = Check::issuer_keys(gateway.gate().verifier().clone());
    let gate = gateway.gate().clone();
    let trusted = gateway.config().trusted_proxies.clone();
    let front = Arc::new(Routed(gateway.clone()));
    let edge = edge(&gateway);
    Service::http("gateway", listener, edge, router(gateway))
        .with_front(front)
        .with_job(purge)
        .with_job(count_sessions)
        .with_job(refusal_counts)
        .with_checks([sessions, issuer_keys])
        .with_metrics_gate(gate, trusted)
}

/// How often the live sessions gauge is brought up to date.
const SESSION_COUNT_INTERVAL: Duration = Duration::from_secs(10);

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, gateway).run(shutdown).await
}
