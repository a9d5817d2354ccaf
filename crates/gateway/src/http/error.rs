//! The one place where [`GatewayError`] becomes a response, by the
//! request's [`Surface`] ([`respond`]): a page, or a redirect to login,
//! for browsers; an RFC 9457 problem with the RFC 6750 challenge for the
//! API. Internal causes are logged once, here, and never shown.

use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use echo_edge::{Problem, bearer_challenge, render, see_other};

use super::pages::{ErrorPage, session_cookie};
use crate::{Fault, Gateway, GatewayError, Surface};

/// The answer to a request for `here` (path and query) on `surface` that
/// failed with `error`: where "redirect to login or 401" is decided.
pub fn respond(g: &Gateway, surface: Surface, error: GatewayError, here: &str) -> Response {
    match surface {
        Surface::Page => page_error(g, error, here),
        Surface::Api => api_error(g, error),
    }
}

impl GatewayError {
    /// HTTP status and a short stable code for API answers.
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            GatewayError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            GatewayError::LoginState => (StatusCode::BAD_REQUEST, "invalid_state"),
            GatewayError::LoginFailed(_) | GatewayError::IdentityRefused(_) => {
                (StatusCode::BAD_REQUEST, "login_failed")
            }
            GatewayError::NotSignedIn => (StatusCode::UNAUTHORIZED, "unauthorized"),
            GatewayError::SessionExpired => (StatusCode::UNAUTHORIZED, "session_expired"),
            GatewayError::Refused(refusal) => (refusal.status, refusal.code()),
            GatewayError::Csrf(_) => (StatusCode::FORBIDDEN, "csrf"),
            GatewayError::Identity(_) | GatewayError::UpstreamUnavailable { .. } => {
                (StatusCode::BAD_GATEWAY, "bad_gateway")
            }
            GatewayError::IdentityUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            GatewayError::UpstreamTimeout { .. } => {
                (StatusCode::GATEWAY_TIMEOUT, "gateway_timeout")
            }
            GatewayError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            GatewayError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            GatewayError::ConsoleSignIn => (StatusCode::FORBIDDEN, "console_sign_in"),
            GatewayError::AdminRefused { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_REQUEST),
                "refused",
            ),
            GatewayError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            GatewayError::Config(_) | GatewayError::Storage(_) | GatewayError::Crypto(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error")
            }
        }
    }

    /// What the caller may read; upstream and internal causes are logged
    /// (once, here) instead.
    fn public_message(&self) -> String {
        match self.fault() {
            Fault::Upstream => tracing::warn!(error = %self, "upstream failure"),
            Fault::Internal => tracing::error!(error = %self, "internal failure"),
            Fault::Downstream => {}
        }
        match self {
            GatewayError::Refused(refusal) => refusal.to_string(),
            GatewayError::Identity(_) => "the identity service is unavailable".to_owned(),
            GatewayError::IdentityUnavailable(_) => {
                "the identity service is temporarily unavailable: try again shortly".to_owned()
            }
            GatewayError::UpstreamUnavailable { .. } => {
                "the service behind this address is unavailable".to_owned()
            }
            GatewayError::UpstreamTimeout { .. } => {
                "the service behind this address did not answer in time".to_owned()
            }
            GatewayError::Config(_) | GatewayError::Storage(_) | GatewayError::Crypto(_) => {
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// RFC 6585 §4: a 429 says when to come back; a 503 of identity's
/// (RFC 9110 §10.2.3) too, after a second as identity's own.
fn with_retry_after(mut response: Response, error: &GatewayError) -> Response {
    let after = match error {
        GatewayError::RateLimited { retry_after } => *retry_after,
        GatewayError::IdentityUnavailable(_) => 1,
        _ => return response,
    };
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(after));
    response
}

/// An error on a page request that came for `here` (path and query).
pub fn page_error(g: &Gateway, error: GatewayError, here: &str) -> Response {
    if let GatewayError::SessionExpired | GatewayError::NotSignedIn = error {
        // Sign in again and come back; the dead cookie goes.
        let location = format!(
            "/login?return_to={}",
            url::form_urlencoded::byte_serialize(here.as_bytes()).collect::<String>()
        );
        return see_other(&location, &[session_cookie(g.config(), None)]);
    }
    let (status, _) = error.status_and_code();
    let message = error.public_message();
    let sign_in = Some(("/login", "Sign in again"));
    // Back to the page after signing in (a console form's section).
    let sign_in_here = format!(
        "/login?return_to={}",
        url::form_urlencoded::byte_serialize(console_section(here).as_bytes()).collect::<String>()
    );
    let (title, next) = match &error {
        GatewayError::LoginState => ("Sign-in expired", sign_in),
        GatewayError::LoginFailed(_) | GatewayError::IdentityRefused(_) => {
            ("Sign-in failed", sign_in)
        }
        GatewayError::Csrf(_) => ("Request refused", Some(("/", "Back to the start"))),
        GatewayError::Identity(_) | GatewayError::IdentityUnavailable(_) => {
            ("Identity is unavailable", Some(("/", "Try again")))
        }
        GatewayError::NotFound => ("Not found", Some(("/", "Back to the start"))),
        GatewayError::Forbidden(_) => ("Access denied", Some(("/", "Back to the start"))),
        GatewayError::ConsoleSignIn => (
            "Sign in again for the console",
            Some((sign_in_here.as_str(), "Sign in again")),
        ),
        GatewayError::AdminRefused { .. } => (
            "Not done",
            Some((console_section(here), "Back to the console")),
        ),
        GatewayError::RateLimited { .. } => ("Slow down", Some(("/", "Back to the start"))),
        GatewayError::UpstreamUnavailable { .. } => {
            ("Service unavailable", Some(("/", "Back to the start")))
        }
        GatewayError::UpstreamTimeout { .. } => {
            ("Service did not answer", Some(("/", "Back to the start")))
        }
        _ if status == StatusCode::SERVICE_UNAVAILABLE => {
            ("Temporarily unavailable", Some(("/", "Try again")))
        }
        _ if status.is_server_error() => ("Something went wrong", None),
        _ => ("Invalid request", Some(("/", "Back to the start"))),
    };
    let page = render(
        status,
        &ErrorPage {
            title,
            message: &message,
            next,
        },
    );
    with_retry_after(page, &error)
}

/// The console section (`/admin/users`, `/admin/clients`, `/admin/keys`)
/// a console request for `here` came from.
pub(super) fn console_section(here: &str) -> &str {
    let path = here.split('?').next().unwrap_or(here);
    let end = path
        .match_indices('/')
        .nth(2)
        .map_or(path.len(), |(at, _)| at);
    &path[..end]
}

/// An error on an `/api/...` request: an RFC 9457 problem whose type is
/// the short code; a 401 carries `WWW-Authenticate: Bearer` (RFC 6750 §3,
/// with `invalid_token` when a token was refused). A refused bearer token
/// answers as the edge does for every service.
pub fn api_error(g: &Gateway, error: GatewayError) -> Response {
    if let GatewayError::Refused(refusal) = error {
        if refusal.reason.is_none() {
            tracing::warn!("signing keys unavailable");
        }
        return refusal.into_response();
    }
    let (status, code) = error.status_and_code();
    let mut response = Problem::new(status, code, error.public_message()).into_response();
    match &error {
        GatewayError::SessionExpired => {
            bearer_challenge(&mut response, None);
            echo_edge::add_cookies(&mut response, &[session_cookie(g.config(), None)]);
        }
        _ if status == StatusCode::UNAUTHORIZED => bearer_challenge(&mut response, None),
        _ => {}
    }
    with_retry_after(response, &error)
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use axum::response::IntoResponse as _;

    use super::{GatewayError, console_section, with_retry_after};

    /// Identity's 503 (its database away) is passed on as one, with when
    /// to come back; identity unreachable or broken stays a 502.
    #[test]
    fn identity_unavailable_for_now_is_a_503_to_retry() {
        let busy = GatewayError::IdentityUnavailable("token endpoint answered 503".into());
        assert_eq!(
            busy.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
        let response = with_retry_after(StatusCode::SERVICE_UNAVAILABLE.into_response(), &busy);
        assert_eq!(response.headers()["retry-after"], "1");
        let broken = GatewayError::Identity("token endpoint answered 500".into());
        assert_eq!(
            broken.status_and_code(),
            (StatusCode::BAD_GATEWAY, "bad_gateway")
        );
        let response = with_retry_after(StatusCode::BAD_GATEWAY.into_response(), &broken);
        assert!(response.headers().get("retry-after").is_none());
    }

    #[test]
    fn console_failures_lead_back_to_their_section() {
        assert_eq!(console_section("/admin/users/bob/suspend"), "/admin/users");
        assert_eq!(console_section("/admin/keys?done=x"), "/admin/keys");
        assert_eq!(
            console_section("/admin/clients/web/delete"),
            "/admin/clients"
        );
    }
}
