//! The worker's one error enum, and how each error fails a job.

use echo_queue::Failure;

/// Why a job (or the worker) could not go on.
///
/// The `Display` text of an error that fails a job becomes the job's
/// `last_error`, which the user sees: it is short and names no URL, token
/// or internal detail (the detail is logged where it happens).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("unknown job kind {0:?}")]
    UnknownKind(String),
    #[error("malformed job payload: {0}")]
    Payload(String),
    /// No token could be had for a service (identity down, a wrong secret).
    #[error("the worker could not get a token for the {0} service")]
    Token(&'static str),
    /// A connection error or a timeout.
    #[error("the {0} service could not be reached")]
    Unreachable(&'static str),
    /// An answer that may be different next time (5xx, 401, 503, …).
    #[error("the {service} service answered {status}")]
    Status { service: &'static str, status: u16 },
    /// An answer that will be the same every time: the parser refused the
    /// file (413, 415, 422); its message says why, for the user.
    #[error("{0}")]
    Rejected(String),
    /// An answer that is not what the service promises.
    #[error("the {0} service gave a malformed answer")]
    Malformed(&'static str),
    /// A URL that is not one, a client that cannot be built.
    #[error("invalid worker configuration: {0}")]
    Config(String),
}

pub type Result<T, E = WorkerError> = std::result::Result<T, E>;

impl WorkerError {
    /// How a job that ended in this error is failed: a job that would fail
    /// the same way again is dead-lettered at once, anything else retried.
    pub fn failure(&self) -> Failure {
        match self {
            WorkerError::UnknownKind(_) | WorkerError::Payload(_) | WorkerError::Rejected(_) => {
                Failure::Permanent
            }
            WorkerError::Token(_)
            | WorkerError::Unreachable(_)
            | WorkerError::Status { .. }
            | WorkerError::Malformed(_)
            | WorkerError::Config(_) => Failure::Transient,
        }
    }
}

/// The parser's answer `status` with body `body`, not a success: 413, 415
/// and 422 say the file itself is refused (with the `detail` of the
/// parser's problem body, for the user), anything else may pass next time.
pub fn parser_refusal(status: u16, body: &[u8]) -> WorkerError {
    match status {
        413 | 415 | 422 => {
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("detail")?.as_str().map(str::to_owned))
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| match status {
                    413 => "the file is too large to parse".to_owned(),
                    415 => "the file is not of a supported type".to_owned(),
                    _ => "the file could not be parsed".to_owned(),
                });
            WorkerError::Rejected(message)
        }
        status => WorkerError::Status {
            service: "parser",
            status,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_files_fail_at_once_with_the_parsers_words() {
        for status in [413, 415, 422] {
            let error = parser_refusal(
                status,
                br#"{"type": "urn:echo:problem:unparseable", "detail": "the PDF is truncated"}"#,
            );
            assert_eq!(error.failure(), Failure::Permanent, "{status}");
            assert_eq!(error.to_string(), "the PDF is truncated");
        }
        let bare = parser_refusal(422, b"<html>oops</html>");
        assert_eq!(bare.failure(), Failure::Permanent);
        assert_eq!(bare.to_string(), "the file could not be parsed");
    }

    #[test]
    fn service_trouble_is_retried_with_a_short_message() {
        for status in [401, 403, 429, 500, 502, 503, 504] {
            let error = parser_refusal(status, br#"{"detail": "signing keys unavailable"}"#);
            assert_eq!(error.failure(), Failure::Transient, "{status}");
            assert_eq!(
                error.to_string(),
                format!("the parser service answered {status}")
            );
        }
        for error in [
            WorkerError::Unreachable("parser"),
            WorkerError::Token("docs"),
            WorkerError::Malformed("docs"),
        ] {
            assert_eq!(error.failure(), Failure::Transient, "{error}");
        }
    }

    #[test]
    fn jobs_the_worker_cannot_read_fail_at_once() {
        assert_eq!(
            WorkerError::UnknownKind("resize_image".into()).failure(),
            Failure::Permanent
        );
        assert_eq!(
            WorkerError::Payload("no document_id".into()).failure(),
            Failure::Permanent
        );
    }
}
