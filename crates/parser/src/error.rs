//! The one error type of the crate, and its HTTP mapping.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("the file is larger than the limit of {max} bytes")]
    TooLarge { max: usize },
    #[error("{0}")]
    Unsupported(String),
    /// A corrupt or hostile file: the message says what is wrong with it.
    #[error("{0}")]
    Invalid(String),
    #[error("parsing took too long (limit {0:?})")]
    TimedOut(std::time::Duration),
    /// The isolated parser died (a panic, the memory limit, a signal).
    #[error("the parser failed on this file: {0}")]
    Crashed(String),
    /// Ours, not the file's: logged, answered as an opaque 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ParseError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

impl IntoResponse for ParseError {
    fn into_response(self) -> Response {
        let status = match &self {
            ParseError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ParseError::Unsupported(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ParseError::Invalid(_) | ParseError::TimedOut(_) | ParseError::Crashed(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ParseError::Internal(_) => {
                tracing::error!(error = %self, "parser failure");
                return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        problem(status, &self.to_string())
    }
}

pub(crate) fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}
