//! The token endpoint's request from arbitrary bytes: an `Authorization`
//! header value (up to the first newline) and a form body (the rest), read
//! as `POST /token` reads them (axum's `Form<TokenParams>`, then the Basic
//! credentials, then the client the request claims to be). Nothing panics,
//! every refusal is `invalid_request` (400) or `invalid_client` (401), a
//! claimed client agrees with the form's `client_id`, and Basic credentials
//! survive encoding (RFC 6749 §2.3.1) and decoding unchanged.

#![no_main]

use std::pin::pin;
use std::task::{Context, Poll, Waker};

use axum::body::Body;
use axum::extract::{Form, FromRequest};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use echo_identity::client_auth::{BasicCredentials, claimed_client};
use echo_identity::http::client_request;
use echo_identity::grant::TokenParams;
use libfuzzer_sys::fuzz_target;

/// The request `POST /token` would receive.
fn request(authorization: Option<&[u8]>, body: &[u8]) -> Option<Request<Body>> {
    let mut request = Request::post("/token")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body.to_vec()))
        .ok()?;
    if let Some(value) = authorization {
        // Bytes no header can carry never reach a handler.
        let value = HeaderValue::from_bytes(value).ok()?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    Some(request)
}

/// Axum's form extraction, run to completion: a whole body in memory is
/// ready at once.
fn extract(
    request: Request<Body>,
) -> Result<Form<TokenParams>, axum::extract::rejection::FormRejection> {
    let mut future = pin!(Form::<TokenParams>::from_request(request, &()));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(form) => form,
        Poll::Pending => panic!("form extraction waited on a body in memory"),
    }
}

/// How a client sends Basic credentials (RFC 6749 §2.3.1).
fn basic_header(credentials: &BasicCredentials) -> HeaderMap {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = format!(
        "{}:{}",
        encode(&credentials.client_id),
        encode(&credentials.client_secret)
    );
    let mut headers = HeaderMap::new();
    let value = format!("Basic {}", STANDARD.encode(pair));
    headers.insert(
        AUTHORIZATION,
        HeaderValue::from_str(&value).expect("base64 is a header value"),
    );
    headers
}

fuzz_target!(|data: &[u8]| {
    let (authorization, body) = match data.iter().position(|&b| b == b'\n') {
        Some(at) => (Some(&data[..at]), &data[at + 1..]),
        None => (None, data),
    };
    let Some(request) = request(authorization, body) else {
        return;
    };
    let headers = request.headers().clone();
    let (params, basic) = match client_request(extract(request), &headers) {
        Ok(read) => read,
        Err(e) => {
            let status = e.into_response().status();
            assert!(
                status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
                "{status}"
            );
            return;
        }
    };
    if let Some(credentials) = &basic {
        let again = client_request(Ok(Form(())), &basic_header(credentials))
            .expect("encoded Basic credentials are readable")
            .1
            .expect("and are Basic credentials");
        assert_eq!(again.client_id, credentials.client_id);
        assert_eq!(again.client_secret, credentials.client_secret);
    }
    match claimed_client(&params.client, basic) {
        Ok(claimed) => {
            if let (Some(named), Some(claimed)) = (&params.client.client_id, &claimed) {
                assert_eq!(named, claimed, "the claimed client is not the one named");
            }
        }
        Err(e) => {
            let status = e.into_response().status();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{status}");
        }
    }
});
