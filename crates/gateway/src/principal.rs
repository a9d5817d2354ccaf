//! Who is calling and through which face: the [`Surface`] a request is
//! for (decided once, from its path), the credentials it [`Presented`],
//! and the [`Principal`] authentication found.

use echo_core::Scope;

/// The header a session call to `/api/...` carries as its CSRF proof.
pub const CSRF_HEADER: &str = "x-echo-csrf";

/// Which face of the gateway a request is for: what CSRF proof it needs
/// and how failures answer (pages redirect to login, the API says 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Page,
    Api,
}

impl Surface {
    /// The face a request for `path` is for: `/api/...` is the API, the
    /// rest are pages. The one place this is decided.
    pub fn of(path: &str) -> Self {
        if path.starts_with("/api/") {
            Surface::Api
        } else {
            Surface::Page
        }
    }
}

/// The credentials a request presents, as read from HTTP.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    pub surface: Surface,
    /// `Authorization: Bearer` (the API only).
    pub bearer: Option<&'a str>,
    /// The session cookie's value.
    pub session: Option<&'a str>,
    /// `X-Echo-CSRF: 1` was sent: a header a cross-site page cannot set
    /// without a CORS preflight, which the gateway never grants.
    pub csrf_header: bool,
    /// The `Origin` header.
    pub origin: Option<&'a str>,
    /// The `Sec-Fetch-Site` header (Fetch Metadata).
    pub fetch_site: Option<&'a str>,
}

/// Who is calling, after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `sub`: a user id, or a client id for service tokens.
    pub subject: String,
    pub name: Option<String>,
    pub roles: Vec<String>,
    /// The bearer token's `scope`; for a session, the scopes the gateway
    /// asks for at login.
    pub scopes: Scope,
    /// Set when the caller is a browser session.
    pub session: Option<SessionInfo>,
    /// What the caller's token can be traded from.
    pub(crate) credential: Credential,
}

impl Principal {
    /// Whether the caller has any of `roles`.
    pub fn has_any_role(&self, roles: &[&str]) -> bool {
        self.roles.iter().any(|r| roles.contains(&r.as_str()))
    }
}

/// The caller's token: as presented, or sealed in the session (opened
/// only when a request needs it upstream).
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Credential {
    /// A bearer token and its hash (what it is known by in caches).
    Bearer { token: String, hash: String },
    Session {
        id_hash: String,
        sealed: Vec<u8>,
        /// When the sealed access token expires: it changes with every
        /// refresh, so it tells the session's tokens apart without opening
        /// them.
        access_expires_at: i64,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(..)")
    }
}

/// What pages show and need of a browser session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The absolute end (Unix seconds).
    pub expires_at: i64,
    /// The end if unused from now on.
    pub idle_expires_at: i64,
    /// The token this session's forms carry.
    pub csrf: String,
}
