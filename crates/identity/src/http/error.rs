//! The one place where [`IdentityError`] becomes an HTTP response.
//!
//! JSON endpoints answer RFC 6749 §5.2 error objects (`invalid_client` as
//! 401 with `WWW-Authenticate` when the client used Basic), protected
//! resources answer as the edge does (RFC 6750 §3 `WWW-Authenticate:
//! Bearer` and an RFC 9457 problem), and internal failures are an opaque
//! `server_error` whose cause is logged once, here.

use axum::Json;
use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use echo_edge::Problem;
use serde_json::json;

use crate::IdentityError;

impl IdentityError {
    /// HTTP status and OAuth error code.
    pub(crate) fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            IdentityError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            IdentityError::InvalidClient { .. } => (StatusCode::UNAUTHORIZED, "invalid_client"),
            IdentityError::InvalidGrant(_) => (StatusCode::BAD_REQUEST, "invalid_grant"),
            IdentityError::UnauthorizedClient(_) => {
                (StatusCode::BAD_REQUEST, "unauthorized_client")
            }
            IdentityError::UnsupportedGrantType => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type")
            }
            IdentityError::InvalidScope(_) => (StatusCode::BAD_REQUEST, "invalid_scope"),
            IdentityError::InvalidTarget(_) => (StatusCode::BAD_REQUEST, "invalid_target"),
            IdentityError::InvalidRedirectUri(_) => {
                (StatusCode::BAD_REQUEST, "invalid_redirect_uri")
            }
            IdentityError::InvalidClientMetadata(_) => {
                (StatusCode::BAD_REQUEST, "invalid_client_metadata")
            }
            IdentityError::Refused(refusal) => (refusal.status, "invalid_token"),
            IdentityError::LoginFailed | IdentityError::MfaFailed => {
                (StatusCode::UNAUTHORIZED, "access_denied")
            }
            IdentityError::InvalidTransition { .. } => (StatusCode::CONFLICT, "invalid_request"),
            IdentityError::Csrf => (StatusCode::FORBIDDEN, "invalid_request"),
            IdentityError::NotAllowed(_) => (StatusCode::FORBIDDEN, "access_denied"),
            IdentityError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "slow_down"),
            IdentityError::BadInput(_)
            | IdentityError::WeakPassword(_)
            | IdentityError::LinkInvalid => (StatusCode::BAD_REQUEST, "invalid_request"),
            IdentityError::Conflict(_) => (StatusCode::CONFLICT, "invalid_request"),
            IdentityError::NotFound(_) => (StatusCode::NOT_FOUND, "invalid_request"),
            IdentityError::PreconditionFailed => {
                (StatusCode::PRECONDITION_FAILED, "invalid_request")
            }
            IdentityError::PreconditionRequired => {
                (StatusCode::PRECONDITION_REQUIRED, "invalid_request")
            }
            // RFC 6749 §4.1.2.1's code for a server that cannot answer now.
            IdentityError::Store(cause) if cause.is_unavailable() => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
            IdentityError::Store(_)
            | IdentityError::Crypto(_)
            | IdentityError::Mail(_)
            | IdentityError::Queue(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
        }
    }

    /// What the client may read: internal causes stay in the log.
    pub(crate) fn public_description(&self) -> String {
        match self {
            IdentityError::Store(cause) if cause.is_unavailable() => {
                "temporarily unavailable; try again shortly".to_owned()
            }
            IdentityError::Store(_)
            | IdentityError::Crypto(_)
            | IdentityError::Mail(_)
            | IdentityError::Queue(_) => "internal error".to_owned(),
            other => other.to_string(),
        }
    }

    /// Why an access token was refused, as the short code `/verify`
    /// answers; `None` for errors that are not about the token.
    pub(crate) fn rejection_code(&self) -> Option<&'static str> {
        match self {
            IdentityError::Refused(refusal) if refusal.reason.is_some() => Some(refusal.code()),
            _ => None,
        }
    }

    /// Extra headers the error demands, and the one log line for 500s.
    pub(crate) fn decorate(&self, response: &mut Response) {
        let headers = response.headers_mut();
        match self {
            IdentityError::InvalidClient { basic: true } => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="echo""#),
                );
            }

            IdentityError::RateLimited { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            IdentityError::Store(cause) if cause.is_unavailable() => {
                headers.insert(RETRY_AFTER, HeaderValue::from(1));
                tracing::warn!(error = %cause, "storage unavailable");
            }
            IdentityError::Store(cause) => tracing::error!(error = %cause, "storage failure"),
            IdentityError::Crypto(cause) => tracing::error!(error = %cause, "crypto failure"),
            IdentityError::Mail(cause) => tracing::error!(error = %cause, "mail failure"),
            IdentityError::Queue(cause) => tracing::error!(error = %cause, "queue failure"),
            _ => {}
        }
    }
}

impl IdentityError {
    /// The error as the admin API answers it: an RFC 9457 problem (a
    /// refused token as the edge answers it, with its challenge).
    pub(crate) fn into_problem_response(self) -> Response {
        if let IdentityError::Refused(refusal) = self {
            return refusal.into_response();
        }
        let (status, _) = self.status_and_code();
        let code = match &self {
            IdentityError::NotFound(_) => "not_found",
            IdentityError::Conflict(_) | IdentityError::InvalidTransition { .. } => "conflict",
            IdentityError::PreconditionFailed => "precondition_failed",
            IdentityError::PreconditionRequired => "precondition_required",
            IdentityError::RateLimited { .. } => "rate_limited",
            _ if status.is_server_error() => "internal",
            _ => "bad_request",
        };
        let mut response = Problem::new(status, code, self.public_description()).into_response();
        self.decorate(&mut response);
        response
    }
}

impl IntoResponse for IdentityError {
    fn into_response(self) -> Response {
        // Protected resources (`/userinfo`) answer as every service's edge
        // does: the RFC 6750 challenge and a problem body.
        if let IdentityError::Refused(refusal) = self {
            return refusal.into_response();
        }
        let (status, code) = self.status_and_code();
        let body = json!({"error": code, "error_description": self.public_description()});
        let mut response = (status, Json(body)).into_response();
        self.decorate(&mut response);
        response
    }
}
