//! HTML pages, cookies and the security headers every response carries.

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
pub use echo_edge::{SecurityHeaders, add_cookies, cookie_name, render, see_other, set_cookie};

use crate::{IdentityError, Provider};

/// The navigation bar of the account pages: the one every page of the
/// gateway shows too (`echo_edge::Nav`), for `user` (console links for
/// admins), with the link `current` marked.
pub fn account_nav(p: &Provider, user: &echo_identity_store::User, current: &str) -> String {
    echo_edge::Nav::new(p.config().portal_url.as_deref(), "", &user.roles, current)
        .render()
        .unwrap_or_default()
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub client_id: &'a str,
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
    pub username: &'a str,
    pub error: Option<&'static str>,
    /// Link to `/register`: sign-up is open here.
    pub sign_up: bool,
}

#[derive(Template)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
    pub error: Option<&'static str>,
}

/// TOTP enrolment: the QR code (inline SVG, drawn server-side), the secret
/// as text and as an otpauth URI, and the confirmation code field.
#[derive(Template)]
#[template(path = "enrol.html")]
pub struct EnrolPage<'a> {
    /// The navigation bar on the account's enrolment, empty at sign-in.
    pub nav: String,
    pub action: &'static str,
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
    pub secret: &'a str,
    pub uri: &'a str,
    pub qr_svg: &'a str,
    pub error: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "recovery.html")]
pub struct RecoveryPage<'a> {
    pub codes: &'a [String],
    pub continue_to: &'a str,
}

/// The account overview: the address and the second factor.
#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub nav: String,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub email_verified: bool,
    pub mail_enabled: bool,
    pub csrf: String,
    /// `Some` when TOTP is on.
    pub recovery_codes_left: Option<i64>,
    pub mfa_required: bool,
}

#[derive(Template)]
#[template(path = "email.html")]
pub struct EmailPage<'a> {
    pub nav: String,
    pub email: Option<&'a str>,
    pub mail_enabled: bool,
    pub csrf: String,
    pub error: Option<&'a str>,
}

/// One row of the sessions table.
pub struct SessionRow {
    pub id: String,
    pub current: bool,
    pub browser: String,
    pub address: String,
    pub last_seen: String,
}

/// One row of the applications table.
pub struct AppRow {
    pub client_id: String,
    pub last_used: String,
}

#[derive(Template)]
#[template(path = "sessions.html")]
pub struct SessionsPage<'a> {
    pub nav: String,
    pub csrf: String,
    pub sessions: &'a [SessionRow],
    pub apps: &'a [AppRow],
    /// The gateway's page of the user's portal sessions, if identity knows
    /// where the portal is.
    pub portal_sessions: Option<String>,
}

#[derive(Template)]
#[template(path = "register.html")]
pub struct RegisterPage<'a> {
    pub csrf: String,
    pub username: &'a str,
    pub email: &'a str,
    pub min_len: usize,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "invitation.html")]
pub struct InvitationPage<'a> {
    pub csrf: String,
    pub username: &'a str,
    pub token: &'a str,
    pub min_len: usize,
    pub error: Option<&'a str>,
}

/// A link from a mail, followed by pressing a button (a POST with the
/// token), so a mail scanner opening links spends nothing.
#[derive(Template)]
#[template(path = "confirm_link.html")]
pub struct ConfirmLinkPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub action: &'a str,
    pub button: &'a str,
    pub csrf: String,
    pub token: &'a str,
}

#[derive(Template)]
#[template(path = "password.html")]
pub struct PasswordPage<'a> {
    pub nav: String,
    pub username: &'a str,
    pub csrf: String,
    pub min_len: usize,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "forgot.html")]
pub struct ForgotPage<'a> {
    pub csrf: String,
    pub error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "reset.html")]
pub struct ResetPage<'a> {
    pub csrf: String,
    pub token: &'a str,
    pub min_len: usize,
    pub error: Option<&'a str>,
}

/// A page that says something happened, with an optional way on.
#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    pub link: Option<(&'a str, &'a str)>,
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage {
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage;

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &ErrorPage { title, message })
}

/// An error from an HTML endpoint, as a page.
pub fn error_as_page(error: IdentityError) -> Response {
    let (status, _) = error.status_and_code();
    let title = match status {
        StatusCode::FORBIDDEN => "Request refused",
        StatusCode::TOO_MANY_REQUESTS => "Too many attempts",
        s if s.is_server_error() => "Something went wrong",
        _ => "Invalid request",
    };
    let mut response = error_page(status, title, &error.public_description());
    error.decorate(&mut response);
    response
}

pub async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/echo.css"),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is nothing at this address.",
    )
}

/// The security headers of every identity response: no inline script or
/// style at all (identity's pages need none), no framing, no MIME sniffing,
/// no referrer leaking codes, HSTS under https.
pub fn security_headers(https: bool) -> SecurityHeaders {
    SecurityHeaders {
        csp: HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        https,
    }
}
