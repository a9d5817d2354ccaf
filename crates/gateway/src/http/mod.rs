//! The HTTP face of the gateway: routes, request parsing, pages and the
//! one error → response mapping. Handlers stay thin: they read the
//! request, call one [`Gateway`] method and map its result.

mod error;
mod handlers;
mod pages;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::routing::{get, post};
use echo_web::SecurityHeaders;

use crate::Gateway;

pub use handlers::CSRF_HEADER;

/// All of the gateway's endpoints.
pub fn router(gateway: Arc<Gateway>) -> Router {
    let config = gateway.config();
    // `form-action` also covers the redirect after a form: logout posts
    // here and continues to identity's logout endpoint.
    let identity_origin = url::Url::parse(&config.issuer)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let csp = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
         object-src 'none'; base-uri 'none'; form-action 'self' {identity_origin}; \
         frame-ancestors 'none'"
    );
    let headers = SecurityHeaders {
        csp: HeaderValue::from_str(&csp)
            .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'")),
        https: config.https(),
    };
    let router = Router::new()
        .route("/", get(handlers::home))
        .route("/account", get(handlers::account))
        .route("/logs", get(handlers::logs))
        .route("/admin", get(handlers::dashboard))
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
        .route("/healthz", get(handlers::healthz))
        .fallback(handlers::proxy)
        .layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            handlers::admit,
        ));
    headers.wrap(router).with_state(gateway)
}

/// Serves the gateway on `listener` until `shutdown` completes, purging
/// ended sessions on the configured schedule meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let interval = gateway.config().purge_interval;
    let purging = gateway.clone();
    let purger = tokio::spawn(async move {
        if interval == 0 {
            return;
        }
        let mut tick = tokio::time::interval(Duration::from_secs(interval));
        loop {
            tick.tick().await;
            if let Err(e) = purging.purge().await {
                tracing::warn!(error = %e, "session purge failed");
            }
        }
    });
    let served = echo_web::serve(listener, router(gateway), shutdown).await;
    purger.abort();
    served
}
