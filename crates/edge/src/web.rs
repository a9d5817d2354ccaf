//! HTTP mechanics every service with a browser or bearer face needs:
//! reading cookies and bearer credentials, writing cookies with the right
//! flags, rendering pages and redirects, the RFC 6750 challenge, and the
//! security headers every response carries. What a cookie or token
//! *means* is the service's business.

use askama::Template;
use axum::Router;
use axum::extract::Request;
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, COOKIE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

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

/// 303 See Other to `location`, setting `cookies`.
pub fn see_other(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    add_cookies(&mut response, cookies);
    response
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// RFC 6750 §2.1: `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
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

/// A `Set-Cookie` value: always `Path=/` and `HttpOnly`, `Secure` under
/// https. `max_age` 0 deletes the cookie.
pub fn set_cookie(secure: bool, name: &str, value: &str, same_site: &str, max_age: i64) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite={same_site}; Max-Age={max_age}{secure}")
}

/// Appends `Set-Cookie` headers to `response`.
pub fn add_cookies(response: &mut Response, cookies: &[String]) {
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(SET_COOKIE, value);
        }
    }
}

/// RFC 6750 §3: the challenge of a 401. With `Some(reason)` (a short code
/// such as `expired`) a token was refused: `error="invalid_token"`;
/// with `None` the request had no usable credentials, and no error code.
pub fn bearer_challenge(response: &mut Response, refused: Option<&str>) {
    let value = match refused {
        Some(reason) => {
            let reason = reason.replace(['"', '\\'], "'");
            format!(r#"Bearer realm="echo", error="invalid_token", error_description="{reason}""#)
        }
        None => r#"Bearer realm="echo""#.to_owned(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
}

/// The headers every response of a service carries.
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// The `Content-Security-Policy`.
    pub csp: HeaderValue,
    /// Served over https: adds HSTS.
    pub https: bool,
}

impl SecurityHeaders {
    /// Middleware (`axum::middleware::from_fn`): no framing, no MIME
    /// sniffing, no referrer leaking codes or paths, the service's CSP, and
    /// HSTS under https.
    pub async fn apply(self, request: Request, next: Next) -> Response {
        let mut response = next.run(request).await;
        self.put_on(response.headers_mut());
        response
    }

    /// These headers on a response's `headers`.
    pub fn put_on(&self, headers: &mut HeaderMap) {
        headers.insert(
            HeaderName::from_static("content-security-policy"),
            self.csp.clone(),
        );
        let mut set = |name: &'static str, value: &'static str| {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        };
        set("x-content-type-options", "nosniff");
        set("x-frame-options", "DENY");
        set("referrer-policy", "no-referrer");
        if self.https {
            set(
                "strict-transport-security",
                "max-age=31536000; includeSubDomains",
            );
        }
    }

    /// `router` with these headers on every response it gives.
    pub fn wrap<S>(self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(axum::middleware::from_fn(move |request, next| {
            self.clone().apply(request, next)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            COOKIE,
            HeaderValue::from_static("a=1; echo_session=xyz; echo_session_x=2"),
        );
        assert_eq!(cookie(&headers, "echo_session"), Some("xyz"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn bearer_is_read_from_authorization() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer abc "));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    async fn headers_of(https: bool) -> HeaderMap {
        use tower::ServiceExt;
        let layer = SecurityHeaders {
            csp: HeaderValue::from_static("default-src 'self'"),
            https,
        };
        let app = axum::Router::new()
            .route("/", axum::routing::get(|| async { "hi" }))
            .layer(axum::middleware::from_fn(move |request, next| {
                layer.clone().apply(request, next)
            }));
        let request = Request::builder()
            .uri("/")
            .body(axum::body::Body::empty())
            .unwrap();
        app.oneshot(request).await.unwrap().headers().clone()
    }

    #[tokio::test]
    async fn security_headers_and_hsts_only_under_https() {
        let plain = headers_of(false).await;
        assert_eq!(plain["content-security-policy"], "default-src 'self'");
        assert_eq!(plain["x-content-type-options"], "nosniff");
        assert_eq!(plain["referrer-policy"], "no-referrer");
        assert!(!plain.contains_key("strict-transport-security"));
        let https = headers_of(true).await;
        assert!(
            https["strict-transport-security"]
                .to_str()
                .unwrap()
                .starts_with("max-age=")
        );
    }

    #[test]
    fn cookies_are_host_prefixed_and_secure_under_https_only() {
        assert_eq!(cookie_name(true, "echo_session"), "__Host-echo_session");
        assert_eq!(cookie_name(false, "echo_session"), "echo_session");
        assert_eq!(
            set_cookie(true, "__Host-s", "v", "Lax", 60),
            "__Host-s=v; Path=/; HttpOnly; SameSite=Lax; Max-Age=60; Secure"
        );
        let plain = set_cookie(false, "s", "v", "Lax", 60);
        assert!(plain.contains("HttpOnly") && !plain.contains("Secure"));
    }
}
