use echo_crypto::CryptoError;
use echo_identity_store::StoreError;

/// Everything the provider can refuse or fail at. The HTTP mapping lives
/// in `http/error.rs`; OAuth variants carry RFC 6749 §5.2 error codes.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// `invalid_request`: a parameter is missing, repeated or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// `invalid_client`: client authentication failed. `basic` says whether
    /// the client tried HTTP Basic, which earns a `WWW-Authenticate` reply.
    #[error("client authentication failed")]
    InvalidClient { basic: bool },
    /// `invalid_grant`: the code or verifier is wrong, spent or expired.
    #[error("{0}")]
    InvalidGrant(String),
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    /// RFC 8707 `invalid_target`: an audience the client may not ask for.
    #[error("{0}")]
    InvalidTarget(String),
    /// An access token refused (malformed, expired, revoked (RFC 7009)
    /// or issued from a revoked refresh-token family, …), already audited
    /// by the edge: RFC 6750 `invalid_token` on a protected resource.
    #[error(transparent)]
    Refused(#[from] echo_edge::Refusal),
    /// Wrong username or password: deliberately says no more than that.
    #[error("invalid username or password")]
    LoginFailed,
    /// A wrong, reused or unchecked second-factor code: says no more.
    #[error("invalid code")]
    MfaFailed,
    /// The user state machine does not allow this change.
    #[error("cannot move a user from {from} to {to} (allowed from {from}: {allowed})")]
    InvalidTransition {
        from: &'static str,
        to: &'static str,
        /// The states `from` may move to, listed.
        allowed: String,
    },
    /// A login or form request without a valid CSRF token.
    #[error("invalid or missing CSRF token")]
    Csrf,
    #[error("too many requests")]
    RateLimited { retry_after: u64 },
    /// A new password the policy refuses (`password_policy.rs`), saying why.
    #[error("{0}")]
    WeakPassword(String),
    /// A link sent by mail (a password reset, an address verification, an
    /// invitation) that is unknown, spent or expired: says no more.
    #[error("this link is not valid any more")]
    LinkInvalid,
    /// Mail cannot be queued or sent.
    #[error("mail: {0}")]
    Mail(String),
    #[error(transparent)]
    Queue(#[from] echo_queue::QueueError),
    /// RFC 7591 §3.2.2 `invalid_redirect_uri`: a redirect URI a
    /// self-registering client may not have.
    #[error("{0}")]
    InvalidRedirectUri(String),
    /// RFC 7591 §3.2.2 `invalid_client_metadata`: any other field of a
    /// self-registration that is refused.
    #[error("{0}")]
    InvalidClientMetadata(String),
    /// An admin command's input is not acceptable.
    #[error("{0}")]
    BadInput(String),
    /// A self-service action the policy does not allow this user or this
    /// deployment (sign-up closed, removing a second factor a role needs).
    #[error("{0}")]
    NotAllowed(String),
    #[error("{0} already exists")]
    Conflict(String),
    /// What an admin command or the admin API names does not exist.
    #[error("no {0}")]
    NotFound(String),
    /// RFC 9110 §13.1.1: `If-Match` names another version than the
    /// current one (someone changed it since it was read).
    #[error("the resource changed since it was read: read it again")]
    PreconditionFailed,
    /// RFC 6585 §3: an update without `If-Match`.
    #[error("send If-Match with the ETag of the resource as read")]
    PreconditionRequired,
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl From<StoreError> for IdentityError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => IdentityError::Conflict(what),
            other => IdentityError::Store(other),
        }
    }
}
