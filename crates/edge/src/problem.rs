//! [`Problem`]: the one error body of every JSON endpoint that is not an
//! OAuth endpoint, RFC 9457 `application/problem+json`.
//!
//! ```json
//! {"type": "urn:echo:problem:not_found", "title": "Not Found", "status": 404,
//!  "detail": "document not found"}
//! ```
//!
//! `type` is `urn:echo:problem:<code>`, a short stable code a client can
//! branch on (the list is in `docs/architecture.md`); `title` is the
//! status's reason phrase; `detail` says what went wrong with this request,
//! for people. Extension members (RFC 9457 §3.2) carry what a client needs
//! to act, such as the `limit` a request exceeded.

use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem, ready to be a response.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    /// The short stable code in `type`.
    pub code: &'static str,
    pub detail: String,
    /// Extension members.
    pub extensions: Map<String, Value>,
    /// Seconds for `Retry-After` (429, 503).
    pub retry_after: Option<u64>,
}

impl Problem {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            extensions: Map::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// An opaque 500: the cause is the caller's to log, never shown.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// A `503`: an engine the service keeps its state in (a database, a
    /// queue) does not answer now; the client may retry after a second.
    /// The cause is the caller's to log.
    pub fn unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "temporarily unavailable; try again shortly",
        )
        .retry_after(1)
    }

    /// A member beside the standard ones (RFC 9457 §3.2).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// The JSON body.
    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:echo:problem:{}", self.code).into(),
        );
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        for (key, value) in &self.extensions {
            body.entry(key.clone()).or_insert_with(|| value.clone());
        }
        Value::Object(body)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut response = (self.status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_problem_is_rfc_9457_json() {
        let response = Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "quota", "over quota")
            .with("limit", 10)
            .with("status", 999)
            .retry_after(5)
            .into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[CONTENT_TYPE], PROBLEM_JSON);
        assert_eq!(response.headers()[RETRY_AFTER], "5");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "type": "urn:echo:problem:quota",
                "title": "Payload Too Large",
                "status": 413,
                "detail": "over quota",
                "limit": 10,
            }),
            "an extension never overrides a standard member"
        );
    }
}
