//! The HTTP face of the provider: routes, request parsing and response
//! mapping. Handlers stay thin: they parse, call one [`Provider`] method and
//! map its result.

mod account;
mod admin_api;
mod email;
mod error;
mod extract;
mod handlers;
mod pages;
mod password;
mod register;
mod request;
mod sessions;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use echo_edge::{Check, EdgeLayer, Service};

use crate::{Provider, client_registration};

pub use request::client_request;

/// All of identity's endpoints.
pub fn router(provider: Arc<Provider>) -> Router {
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
        .route(
            "/account/totp",
            get(account::totp_form).post(account::account_totp),
        )
        .route(
            "/account/email",
            get(email::email_form).post(email::change_email),
        )
        .route("/account/email/resend", post(email::resend))
        .route("/account/mfa", post(account::change_mfa))
        .route("/account/sessions", get(sessions::sessions))
        .route("/account/sessions/end", post(sessions::end))
        .route("/account/sessions/end-all", post(sessions::end_all))
        .route("/account/apps/revoke", post(sessions::revoke_app))
        .route("/email/verify", get(email::verify_form).post(email::verify))
        .route(
            "/register",
            get(register::register_form).post(register::register),
        )
        .route(
            "/invitation",
            get(register::invitation_form).post(register::accept_invitation),
        )
        .route(
            "/account/password",
            get(password::change_form).post(password::change),
        )
        .route(
            "/password/forgot",
            get(password::forgot_form).post(password::forgot),
        )
        .route(
            "/password/reset",
            get(password::reset_form).post(password::reset),
        )
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
        .merge(admin_api::router())
        .route("/ping", get(|| async { "pong" }))
        .route("/static/echo.css", get(pages::stylesheet))
        .fallback(pages::not_found);
    // Off, the endpoint does not exist (404), as if identity had none.
    let router = if provider.client_registration_enabled() {
        router.route(
            client_registration::CLIENT_REGISTRATION_PATH,
            post(handlers::register_client)
                .layer(DefaultBodyLimit::max(client_registration::MAX_BODY)),
        )
    } else {
        router
    };
    router.with_state(provider)
}

/// Identity's edge: the operator's trusted proxies, and its pages'
/// security headers.
fn edge(provider: &Provider) -> EdgeLayer {
    EdgeLayer {
        trusted_proxies: provider.config().trusted_proxies.clone(),
        security_headers: pages::security_headers(provider.config().secure_cookies()),
    }
}

/// Identity on `listener`, with its periodic jobs: purging expired rows,
/// refreshing (and rotating) the signing keys, recording refusal counts,
/// sending queued mail (when an SMTP server is configured).
pub fn service(listener: tokio::net::TcpListener, provider: Arc<Provider>) -> Service {
    let mut jobs = vec![
        crate::purge::job(provider.clone()),
        crate::key_refresh::job(provider.clone()),
        provider.gate().refusal_job(),
    ];
    if provider.mail_enabled() {
        jobs.push(crate::delivery::job(provider.clone()));
    }
    let database = provider.clone();
    let keys = provider.clone();
    let checks = [
        Check::new("database", move || {
            let provider = database.clone();
            async move { provider.database_ready().await }
        }),
        Check::new("signing_keys", move || {
            let ready = keys.keys_ready();
            async move { ready }
        }),
    ];
    let gate = provider.gate().clone();
    let trusted = provider.config().trusted_proxies.clone();
    let edge = edge(&provider);
    Service::http("identity", listener, edge, router(provider))
        .with_jobs(jobs)
        .with_checks(checks)
        .with_metrics_gate(gate, trusted)
}

/// Serves identity on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    provider: Arc<Provider>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, provider).run(shutdown).await
}
