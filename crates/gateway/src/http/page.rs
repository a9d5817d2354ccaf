//! [`SignedInPage`]: what every page of a signed-in user starts from.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, OriginalUri, Query};
use axum::http::request::Parts;
use axum::response::Response;
use echo_edge::Origin;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::page_error;
use super::handlers::{here, signed_in};
use crate::{Gateway, GatewayError, Principal};

/// The `Ok` of an extraction that cannot fail.
fn infallible<T>(never: Infallible) -> T {
    match never {}
}

/// A malformed query or form, named.
pub fn malformed(what: &str) -> GatewayError {
    GatewayError::BadRequest(format!("malformed {what}"))
}

/// A page request of a signed-in browser: its query, the user (the page's
/// calls check their roles) and where it was asked for, which a failure
/// leads back to (or, signed out, to sign-in and back). A malformed query
/// or no session is refused before the handler runs.
pub struct SignedInPage<Q = AnyQuery> {
    pub user: Principal,
    pub query: Q,
    here: String,
}

/// The query of a page that reads none (whatever it is, it is ignored).
#[derive(Debug, Default, Deserialize)]
pub struct AnyQuery {}

impl<Q: DeserializeOwned + Send> FromRequestParts<Arc<Gateway>> for SignedInPage<Q> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, g: &Arc<Gateway>) -> Result<Self, Response> {
        let uri = OriginalUri::from_request_parts(parts, g)
            .await
            .unwrap_or_else(infallible);
        let here = here(&uri);
        let fail = |e| page_error(g, e, &here);
        let Query(query) = Query::<Q>::from_request_parts(parts, g)
            .await
            .map_err(|_| fail(malformed("query")))?;
        let meta = Origin::from_request_parts(parts, g)
            .await
            .unwrap_or_else(infallible);
        let user = signed_in(g, &meta, &parts.headers).await.map_err(fail)?;
        Ok(SignedInPage { user, query, here })
    }
}

impl<Q> SignedInPage<Q> {
    /// The page rendered, or the error page of what failed.
    pub fn answer(&self, g: &Gateway, page: Result<Response, GatewayError>) -> Response {
        page.unwrap_or_else(|e| page_error(g, e, &self.here))
    }
}
