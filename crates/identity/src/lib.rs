//! Echo's OAuth 2.0 / OpenID Connect provider.
//!
//! The map:
//! - [`Provider`] (`provider.rs`) is the domain service. It validates
//!   authorization requests ([`authorize`]), logs users in and keeps their
//!   SSO sessions ([`login`]), authenticates clients ([`client_auth`]), runs
//!   the token endpoint's grants ([`token`], [`refresh`], [`exchange`]), revokes and
//!   introspects tokens ([`introspect`]) and purges what expired (`purge.rs`,
//!   on a schedule started by [`serve`]). It knows nothing of HTTP.
//! - [`KeyRing`] (`keys.rs`) holds the signing keys, publishes the JWKS and
//!   seals private keys with the master key; [`KeyAdmin`] rotates, retires
//!   and revokes them (the `echod keys` commands and the rotation schedule,
//!   `keys/state.rs` for the lifecycle).
//! - [`admin`] registers users and clients (the `echod user|client`
//!   commands), validating everything an operator types;
//!   [`client_registration`] lets clients register themselves (RFC 7591)
//!   with an initial access token, when turned on.
//! - Account security: [`lockout`] (per-account progressive delay and
//!   lockout, reserved atomically before a secret is checked), [`mfa`]
//!   (TOTP, RFC 6238, and recovery codes) and [`user_state`] (the
//!   `invited → active ⇄ suspended → deleted` machine).
//! - Self-service: [`self_service`] (a password change on the account
//!   page, a reset by a link sent by mail), [`password_policy`] (what every
//!   new password must be, wherever it is set) and [`mail`] (SMTP through a
//!   durable queue of identity's own, sent by the job in `delivery.rs`),
//!   [`registration`] (addresses verified by a link sent to them, sign-up,
//!   invitations), [`account_sessions`] (a user's sessions and the
//!   applications holding their refresh tokens).
//! - [`http`] is the thin axum layer: parse, call the provider, map the
//!   result. [`IdentityError`] becomes an HTTP/OAuth error in one place,
//!   `http/error.rs`.
//!
//! Every security-relevant action is recorded through an
//! [`echo_core::audit::AuditSink`].

pub mod account_sessions;
pub mod admin;
pub mod authorize;
pub mod client_auth;
mod client_cache;
pub mod client_registration;
mod config;
mod delivery;
mod error;
pub mod exchange;
mod fresh_cache;
pub mod grant;
pub mod http;
pub mod introspect;
mod key_refresh;
mod keys;
pub mod lockout;
pub mod login;
pub mod mail;
mod metrics;
pub mod mfa;
mod mint;
pub mod password_policy;
mod provider;
mod purge;
mod rate_limit;
pub mod refresh;
pub mod registration;
pub mod self_service;
pub mod token;
pub mod user_state;

pub use config::{
    IdentityConfig, InitialAccessToken, KeyPolicy, LockoutPolicy, MAX_REFRESH_GRACE,
    RegistrationPolicy, SERVICE_SCOPES,
};
pub use error::IdentityError;
pub use http::{router, serve};
pub use keys::{KeyAdmin, KeyInfo, KeyRing, KeyState, Revocation};
pub use provider::Provider;
pub use rate_limit::DatabaseCounters;

pub type Result<T, E = IdentityError> = std::result::Result<T, E>;
