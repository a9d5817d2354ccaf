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
use echo_edge::{EdgeLayer, Service};

use crate::Provider;

pub use request::client_request;

/// All of identity's endpoints.
pub fn router(provider: Arc<Provider>) -> Router {
    let secure = provider.config().secure_cookies();
    let router = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(handlers::discovery),
        )
        .route("/jwks", get(handlers::jwks))
        .route("/authorize", get(handlers::authorize))
        .route("/login", post(account::login))
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
        .fallback(pages::not_found);
    let edge = EdgeLayer {
        trusted_proxies: provider.config().trusted_proxies.clone(),
        security_headers: pages::security_headers(secure),
    };
    edge.wrap(router).with_state(provider)
}

/// Identity on `listener`, with its periodic jobs: purging expired rows,
/// refreshing (and rotating) the signing keys, recording refusal counts.
pub fn service(listener: tokio::net::TcpListener, provider: Arc<Provider>) -> Service {
    let jobs = [
        crate::purge::job(provider.clone()),
        crate::key_refresh::job(provider.clone()),
        provider.gate().refusal_job(),
    ];
    Service::http("identity", listener, router(provider)).with_jobs(jobs)
}

/// Serves identity on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: Arc<Provider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, provider).run(shutdown).await
}
