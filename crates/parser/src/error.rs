//! The one error type of the crate, and its HTTP mapping.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use echo_edge::Problem;

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

impl ParseError {
    /// The problem code it is answered with (`internal` for ours, which
    /// the answer does not name).
    pub fn code(&self) -> &'static str {
        match self {
            ParseError::TooLarge { .. } => "too_large",
            ParseError::Unsupported(_) => "unsupported",
            ParseError::Invalid(_) | ParseError::TimedOut(_) | ParseError::Crashed(_) => {
                "unparseable"
            }
            ParseError::Internal(_) => "internal",
        }
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
                return Problem::internal().into_response();
            }
        };
        Problem::new(status, self.code(), self.to_string()).into_response()
    }
}
