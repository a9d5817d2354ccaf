//! Black-box tests of the gateway: a real identity provider and a real
//! gateway, each serving HTTP on 127.0.0.1:0, walked through by a
//! cookie-keeping client that never follows redirects.

mod api;
mod common;
mod console;
mod hardening;
mod login;
mod pages;
mod proxy;
mod redis_tls;
mod revocation;
mod sessions;
