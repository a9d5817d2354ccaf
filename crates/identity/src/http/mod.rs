//! The HTTP face of the provider: routes, request parsing and response
//! mapping. Handlers stay thin: they parse, call one [`Provider`] method and
//! map its result.

mod account;
mod error;
mod handlers;
mod pages;
mod request;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::Provider;

/// All of identity's endpoints.
pub fn router(provider: Arc<Provider>) -> Router {
    let secure = provider.config().secure_cookies();
    Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(handlers::discovery),
        )
        .route("/jwks", get(handlers::jwks))
        .route("/authorize", get(handlers::authorize))
        .route("/login", post(handlers::login))
        .route("/login/mfa", post(account::login_mfa))
        .route("/account", get(account::account))
        .route("/account/totp", post(account::account_totp))
        .route("/token", post(handlers::token))
        .route("/revoke", post(handlers::revoke))
        .route("/introspect", post(handlers::introspect))
        .route(
            "/userinfo",
            get(handlers::userinfo).post(handlers::userinfo),
        )
        .route("/verify", post(handlers::verify))
        .route(
            "/logout",
            get(handlers::logout).post(handlers::logout_confirmed),
        )
        .route("/ping", get(|| async { "pong" }))
        .route("/healthz", get(handlers::healthz))
        .route("/static/echo.css", get(pages::stylesheet))
        .fallback(pages::not_found)
        .layer(axum::middleware::from_fn(move |req, next| {
            pages::security_headers(secure).apply(req, next)
        }))
        .with_state(provider)
}

/// Serves identity on `listener` until `shutdown` completes, purging
/// expired rows and refreshing the signing keys on their schedules
/// meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: Arc<Provider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let purger = tokio::spawn(crate::purge::run(provider.clone()));
    let key_refresher = tokio::spawn(crate::keys::run(provider.clone()));
    let served = echo_web::serve(listener, router(provider), shutdown).await;
    purger.abort();
    key_refresher.abort();
    served
}
