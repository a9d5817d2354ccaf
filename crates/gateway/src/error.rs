/// Whose fault a failure is, after Pingora's error sources: it decides
/// between 4xx (downstream: the caller's request), 502/504 (upstream: a
/// service behind the gateway) and 500 (internal), and how loudly it is
/// logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Downstream,
    Upstream,
    Internal,
}

/// Everything that can go wrong in the gateway. `http/error.rs` is the one
/// place these become responses: pages for browsers, JSON for `/api/...`.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Bad configuration, found at start.
    #[error("configuration: {0}")]
    Config(String),
    /// A malformed request (e.g. an off-site `return_to`).
    #[error("{0}")]
    BadRequest(String),
    /// `/callback` with a missing, unknown, expired or foreign `state`.
    #[error("this sign-in is unknown, expired or was started in another browser")]
    LoginState,
    /// The login came back refused or with something we will not trust
    /// (identity's error, a bad ID token, a wrong nonce).
    #[error("sign-in failed: {0}")]
    LoginFailed(String),
    /// No credentials: a page sends the browser to sign in, the API
    /// answers 401.
    #[error("authentication required")]
    NotSignedIn,
    /// The session cookie names a session that ended (idle or absolute
    /// timeout, logout, a refresh identity refused).
    #[error("your session has expired")]
    SessionExpired,
    /// A bearer token refused at the edge (already audited), or the keys
    /// to check tokens with unavailable.
    #[error("{0}")]
    Refused(#[from] echo_edge::Refusal),
    /// A state-changing browser request without its CSRF proof.
    #[error("request refused: {0}")]
    Csrf(&'static str),
    /// Identity's token endpoint refused a grant (its OAuth error code).
    #[error("identity refused: {0}")]
    IdentityRefused(String),
    /// Identity could not be reached or answered nonsense.
    #[error("identity unavailable: {0}")]
    Identity(String),
    /// Identity answered `503`: it is there but cannot serve for now (its
    /// database away, or no replica ready behind a load balancer), so the
    /// caller is told to retry, as identity told the gateway.
    #[error("identity temporarily unavailable: {0}")]
    IdentityUnavailable(String),
    /// Nothing is routed at this path.
    #[error("there is nothing at this address")]
    NotFound,
    /// The caller lacks a role or scope the resource needs.
    #[error("{0}")]
    Forbidden(String),
    /// Identity would not give the console's admin token for this admin's
    /// session: its sign-in with a second factor has ended at identity
    /// (the SSO session, 8 hours by default, ends before the gateway
    /// session's 12), or never passed one. A fresh sign-in is the way on.
    #[error(
        "identity gives the console's access only to active admins who signed in with a \
         second factor, and only while that sign-in lasts (identity's session, 8 hours by \
         default): sign in again with your second factor to go on"
    )]
    ConsoleSignIn,
    /// Identity's admin API refused a console request (a 4xx problem):
    /// its status and its words, which the console shows the admin.
    #[error("{message}")]
    AdminRefused { status: u16, message: String },
    /// A rate limit refused the request.
    #[error("too many requests: try again in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// An upstream (or the audit service) could not be reached, or failed
    /// while answering.
    #[error("upstream {upstream} unavailable: {cause}")]
    UpstreamUnavailable { upstream: String, cause: String },
    /// An upstream did not answer within its route's timeout.
    #[error("upstream {upstream} did not answer in time")]
    UpstreamTimeout { upstream: String },
    #[error("session storage: {0}")]
    Storage(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Crypto(#[from] echo_crypto::CryptoError),
}

impl GatewayError {
    /// Whose fault this is.
    pub fn fault(&self) -> Fault {
        match self {
            GatewayError::Refused(refusal) if refusal.reason.is_none() => Fault::Upstream,
            GatewayError::Identity(_)
            | GatewayError::IdentityUnavailable(_)
            | GatewayError::UpstreamUnavailable { .. }
            | GatewayError::UpstreamTimeout { .. } => Fault::Upstream,
            GatewayError::Config(_) | GatewayError::Storage(_) | GatewayError::Crypto(_) => {
                Fault::Internal
            }
            _ => Fault::Downstream,
        }
    }
}

impl From<sqlx::Error> for GatewayError {
    fn from(e: sqlx::Error) -> Self {
        GatewayError::Storage(Box::new(e))
    }
}

impl From<echo_sql::OpenError> for GatewayError {
    fn from(e: echo_sql::OpenError) -> Self {
        GatewayError::Storage(Box::new(e))
    }
}
