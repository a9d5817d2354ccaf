//! What handlers read from a request besides its body and its
//! [`echo_edge::Origin`]: cookies and credentials.

use axum::extract::Form;
use axum::extract::rejection::FormRejection;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use echo_edge::{bearer, cookie};

use crate::IdentityError;
use crate::client_auth::BasicCredentials;

/// The form and any Basic credentials of a client-authenticated request
/// (`/token`, `/revoke`, `/introspect`), as their handlers read them: a form
/// axum could not read is `invalid_request`, a Basic header we cannot read
/// `invalid_client`. Public for the `token_request` fuzz target.
pub fn client_request<T>(
    form: Result<Form<T>, FormRejection>,
    headers: &HeaderMap,
) -> Result<(T, Option<BasicCredentials>), IdentityError> {
    let Form(params) =
        form.map_err(|e| IdentityError::InvalidRequest(format!("malformed request: {e}")))?;
    let basic =
        basic_credentials(headers).map_err(|()| IdentityError::InvalidClient { basic: true })?;
    Ok((params, basic))
}

/// RFC 6749 §2.3.1: Basic credentials are form-urlencoded before base64.
/// `Err` for a Basic header we cannot read.
pub fn basic_credentials(headers: &HeaderMap) -> Result<Option<BasicCredentials>, ()> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return Ok(None);
    };
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| ())?;
    let decoded = String::from_utf8(decoded).map_err(|_| ())?;
    let (id, secret) = decoded.split_once(':').ok_or(())?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok(Some(BasicCredentials {
        client_id: unescape(id),
        client_secret: unescape(secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn basic_credentials_are_form_decoded() {
        let mut headers = HeaderMap::new();
        let encoded = STANDARD.encode("svc%3Aa:s%2Bcret");
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        let creds = basic_credentials(&headers).unwrap().unwrap();
        assert_eq!(
            (creds.client_id.as_str(), creds.client_secret.as_str()),
            ("svc:a", "s+cret")
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert!(basic_credentials(&headers).is_err());
    }
}
