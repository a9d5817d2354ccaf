//! HTML pages and the cookies the gateway sets.

use askama::Template;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use echo_web::{cookie_name, set_cookie};

use crate::{GatewayConfig, Principal};

/// The session cookie: an opaque id, nothing else.
pub const SESSION_COOKIE: &str = "echo_session";
/// Binds a login in progress to the browser that started it.
pub const LOGIN_COOKIE: &str = "echo_login";

pub fn session_cookie_name(config: &GatewayConfig) -> String {
    cookie_name(config.https(), SESSION_COOKIE)
}

pub fn login_cookie_name(config: &GatewayConfig) -> String {
    cookie_name(config.https(), LOGIN_COOKIE)
}

/// `Set-Cookie` for the session (`None` deletes it): HttpOnly,
/// SameSite=Lax (it must come along when identity sends the browser back),
/// Path=/, and Secure with the `__Host-` prefix under https.
pub fn session_cookie(config: &GatewayConfig, token: Option<&str>) -> String {
    let max_age = token.map_or(0, |_| config.session_absolute_ttl);
    set_cookie(
        config.https(),
        &session_cookie_name(config),
        token.unwrap_or(""),
        "Lax",
        max_age,
    )
}

pub fn login_cookie(config: &GatewayConfig, binding: &str) -> String {
    set_cookie(
        config.https(),
        &login_cookie_name(config),
        binding,
        "Lax",
        config.login_ttl,
    )
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub user: Option<&'a Principal>,
    pub issuer: &'a str,
}

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage<'a> {
    pub user: &'a Principal,
    pub expires_at: String,
    pub idle_expires_at: String,
    pub csrf: &'a str,
}

#[derive(Template)]
#[template(path = "signed_out.html")]
pub struct SignedOutPage;

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub title: &'a str,
    pub message: &'a str,
    /// A way on: (href, label).
    pub next: Option<(&'a str, &'a str)>,
}

pub async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/gateway.css"),
    )
        .into_response()
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS UTC` (civil-from-days, Howard
/// Hinnant's algorithm), so pages need no date crate.
pub fn utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientSecret;

    #[test]
    fn session_cookie_flags_follow_the_scheme() {
        let https =
            GatewayConfig::new("https://gw.test", "https://id.test", ClientSecret::new("s"))
                .unwrap();
        let set = session_cookie(&https, Some("abc"));
        assert!(set.starts_with("__Host-echo_session=abc; Path=/; HttpOnly; SameSite=Lax"));
        assert!(set.ends_with("; Secure"));
        assert!(!set.contains("Domain"), "__Host- cookies have no Domain");
        assert!(login_cookie(&https, "b").starts_with("__Host-echo_login=b;"));

        let http =
            GatewayConfig::new("http://gw.test", "http://id.test", ClientSecret::new("s")).unwrap();
        let set = session_cookie(&http, Some("abc"));
        assert!(set.starts_with("echo_session=abc; Path=/; HttpOnly; SameSite=Lax"));
        assert!(!set.contains("Secure"));
        assert!(
            session_cookie(&http, None).contains("Max-Age=0"),
            "deletion"
        );
    }

    #[test]
    fn utc_formats_unix_times() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_767_225_599), "2025-12-31 23:59:59 UTC");
    }
}
