//! Black-box tests of the identity provider: every test starts a real
//! server on an ephemeral port and talks to it over HTTP, as a browser, a
//! relying party (the `openidconnect` crate) or a service would.

mod account_security;
mod accounts;
mod admin_api;
mod attacks;
mod client_registration;
mod common;
mod email_links;
mod exchange;
mod flows;
mod hardening;
mod keys;
mod logout;
mod mail_transport;
mod metrics;
mod registration;
mod rp;
mod self_service;
mod tokens;
