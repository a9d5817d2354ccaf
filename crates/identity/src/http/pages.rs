//! HTML pages, cookies and the security headers every response carries.

use askama::Template;
use axum::extract::Request;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::IdentityError;

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub client_id: &'a str,
    pub csrf: String,
    pub hidden: Vec<(String, String)>,
    pub username: &'a str,
    pub error: Option<&'static str>,
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

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub username: &'a str,
    pub recovery_codes_left: i64,
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

/// Renders a page with `status`; pages are never cached.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, [(CACHE_CONTROL, "no-store")], Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

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

/// 303 See Other to `location`, with cookies to set.
pub fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    add_cookies(&mut response, cookies);
    response
}

pub fn add_cookies(response: &mut Response, cookies: &[String]) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
}

/// Cookie names: `__Host-` prefixed under https, which pins them to this
/// host, path `/` and `Secure`.
pub fn cookie_name(secure: bool, base: &str) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

/// A `Set-Cookie` value: always HttpOnly, `Secure` under https.
pub fn set_cookie(secure: bool, name: &str, value: &str, same_site: &str, max_age: i64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}")
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

/// Headers for every response: no inline script or style, no framing, no
/// MIME sniffing, no referrer leaking codes, HSTS under https.
pub async fn security_headers(https: bool, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let set = |headers: &mut axum::http::HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        HeaderName::from_static("content-security-policy"),
        "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(
        headers,
        HeaderName::from_static("x-content-type-options"),
        "nosniff",
    );
    set(headers, HeaderName::from_static("x-frame-options"), "DENY");
    set(
        headers,
        HeaderName::from_static("referrer-policy"),
        "no-referrer",
    );
    if https {
        set(
            headers,
            HeaderName::from_static("strict-transport-security"),
            "max-age=31536000; includeSubDomains",
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_host_prefixed_and_secure_under_https_only() {
        assert_eq!(cookie_name(true, "echo_sso"), "__Host-echo_sso");
        assert_eq!(cookie_name(false, "echo_sso"), "echo_sso");
        let secure = set_cookie(true, "__Host-echo_sso", "v", "Lax", 60);
        assert_eq!(
            secure,
            "__Host-echo_sso=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let plain = set_cookie(false, "echo_sso", "v", "Lax", 60);
        assert!(plain.contains("HttpOnly") && !plain.contains("Secure"));
    }
}
