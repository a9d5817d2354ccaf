//! Echo's gateway: the one door users see.
//!
//! The browser's backend-for-frontend, the gateway's own API, and the
//! routes to upstreams:
//!
//! - **Login** (`/login` → identity `/authorize` → `/callback`): the
//!   authorization code flow with PKCE (S256), `state` and `nonce` kept
//!   server-side in a short-lived [`LoginAttempt`] keyed by the hash of
//!   `state` and bound to the browser by a cookie (no login CSRF). The code
//!   is redeemed with `client_secret_basic`; the ID token is verified
//!   (signature via identity's JWKS, `iss`, `aud`, `exp`, `typ`, `nonce`)
//!   with the shared [`echo_verify::Verifier`].
//! - **Sessions** ([`Session`], [`SessionStore`]): server-side; the cookie
//!   holds an opaque 256-bit id, stored only as its hash. A new id at every
//!   login; idle and absolute timeouts; the tokens sealed with AES-256-GCM
//!   under a key derived from the master key. An access token about to
//!   expire is refreshed (RFC 6749 §6) by one request per session at a
//!   time (`pipeline.rs`).
//! - **CSRF**: forms carry an HMAC of the session id; session calls to
//!   `/api/...` need `X-Echo-CSRF: 1`; a foreign `Origin` is refused.
//! - **API**: `/api/...` takes a bearer JWT from identity with
//!   `aud` = gateway, verified locally, or a session.
//! - **Logout** ends the session here and at identity (RP-initiated
//!   logout with `id_token_hint`). A user lists their sessions and ends
//!   any of them on `/sessions` (`browser_sessions.rs`).
//! - **Routes** (`routes.rs`, from the TOML file): path prefix →
//!   upstream, run through the phases of `pipeline.rs` (admit, route,
//!   authenticate, authorize, rate limit, upstream token, rewrite,
//!   forward); the upstream gets a token for its own audience by token
//!   exchange at identity (`exchange.rs`, RFC 8693), never the cookie;
//!   `proxy.rs` holds the HTTP mechanics (hyper-util client, hop-by-hop
//!   headers, request ids, trace context), `rate_limit.rs` the buckets.
//! - **Pages** over the audit log (`audit_log.rs`): the logs page, the
//!   admin dashboard's login chart, the home page's recent activity.
//! - **Admin console** (`console.rs`, `/admin/users`, `/admin/clients`,
//!   `/admin/keys`): identity's admin API called with the signed-in
//!   admin's own token (exchanged for audience `identity`, scope
//!   `echo.admin`), every change a CSRF-checked form, destructive ones
//!   confirmed first.
//! - **Document pages** (`/upload`, `/documents`, `/ask`): shells for
//!   signed-in users, brought to life by `static/documents.js`, which
//!   calls the docs service's routes (`/api/documents`, `/api/query`)
//!   through the routing table like any other session call.
//!
//! The map: [`Gateway`] (`gateway.rs`: login, logout; `pipeline.rs`: the
//! request pipeline) is the domain service and knows nothing of HTTP;
//! `oidc.rs` is the relying-party client; [`SqliteSessionStore`] the
//! default storage, [`RedisSessionStore`] the shared one; [`http`] the thin axum layer with the one
//! error → response mapping (`http/error.rs`). Security-relevant events
//! (login success and failure, logout, session expiry, CSRF refusals) go
//! to the [`echo_core::audit::AuditSink`] the gateway is given.

mod audit_log;
mod browser_sessions;
mod config;
mod console;
mod error;
mod exchange;
mod gateway;
pub mod http;
mod liveness;
mod metrics;
mod oidc;
mod path;
mod pipeline;
mod principal;
mod proxy;
mod redis_store;
mod refresh_lock;
mod return_to;
mod routes;
mod session;
mod sqlite;
mod token_cache;

pub use audit_log::{EventsPage, LogEvent, LogFilters, LoginChart};
pub use browser_sessions::BrowserSession;
pub use config::{ClientSecret, GatewayConfig};
pub use echo_edge::Limit;
pub use error::{Fault, GatewayError};
pub use gateway::{Callback, Gateway, LoginStart, SignedIn};
pub use http::{router, serve};
pub use path::{BadPath, Normalised, normalise};
pub use pipeline::Admitted;
pub use principal::{CSRF_HEADER, Presented, Principal, SessionInfo, Surface};
pub use redis_store::{DEFAULT_REDIS_PREFIX, RedisSessionStore};
pub use refresh_lock::SharedLock;
pub use routes::{GatewayFile, RateLimitSpec, RateLimits, Route, RouteSpec, RouteTable};
pub use session::{LoginAttempt, Session, SessionStore, Tokens};
pub use sqlite::SqliteSessionStore;

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;
