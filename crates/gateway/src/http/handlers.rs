//! Endpoint handlers: read the request, call the gateway, map the result.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, FromRequestParts, OriginalUri, Query, State};
use axum::http::header::ORIGIN;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use echo_web::{Peer, bearer, cookie, render, see_other};
use serde::Deserialize;
use serde_json::json;

use super::error::{api_error, page_error};
use super::pages::{
    AccountPage, HomePage, SignedOutPage, login_cookie, login_cookie_name, session_cookie,
    session_cookie_name, utc,
};
use crate::{Callback, Gateway, GatewayError, Presented, RequestMeta, Surface};

type AppState = State<Arc<Gateway>>;

/// The header a session call to `/api/...` carries as its CSRF proof.
pub const CSRF_HEADER: &str = "x-echo-csrf";

/// [`Peer`] as the gateway's [`RequestMeta`].
pub struct Meta(pub RequestMeta);

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Peer { ip, user_agent } = Peer::from_request_parts(parts, state).await?;
        Ok(Meta(RequestMeta { ip, user_agent }))
    }
}

fn presented<'h>(g: &Gateway, headers: &'h HeaderMap, surface: Surface) -> Presented<'h> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    Presented {
        surface,
        bearer: bearer(headers),
        session: cookie(headers, &session_cookie_name(g.config())),
        csrf_header: header(CSRF_HEADER) == Some("1"),
        origin: header(ORIGIN.as_str()),
    }
}

/// The path and query a page request asked for, to come back to.
fn here(uri: &OriginalUri) -> String {
    uri.0
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
}

/// GET /: who is signed in, and the way on.
pub async fn home(
    State(g): AppState,
    Meta(meta): Meta,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    match g
        .authenticate(&presented(&g, &headers, Surface::Page), &meta)
        .await
    {
        Ok(user) => render(
            StatusCode::OK,
            &HomePage {
                user: user.as_ref(),
                issuer: &g.config().issuer,
            },
        ),
        Err(e) => page_error(&g, e, &here(&uri)),
    }
}

/// GET /account: roles and session expiry; signing in first if needed.
pub async fn account(
    State(g): AppState,
    Meta(meta): Meta,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let user = g
        .authenticate(&presented(&g, &headers, Surface::Page), &meta)
        .await;
    match user {
        Ok(Some(user)) => {
            let Some(session) = &user.session else {
                return page_error(&g, GatewayError::SessionExpired, &here(&uri));
            };
            render(
                StatusCode::OK,
                &AccountPage {
                    user: &user,
                    expires_at: utc(session.expires_at),
                    idle_expires_at: utc(session.idle_expires_at),
                    csrf: &session.csrf,
                },
            )
        }
        Ok(None) => page_error(&g, GatewayError::SessionExpired, &here(&uri)),
        Err(e) => page_error(&g, e, &here(&uri)),
    }
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    return_to: Option<String>,
}

/// GET /login: off to identity.
pub async fn login(
    State(g): AppState,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return page_error(&g, GatewayError::BadRequest("malformed query".into()), "/");
    };
    let browser = cookie(&headers, &login_cookie_name(g.config()));
    match g.begin_login(query.return_to.as_deref(), browser).await {
        Ok(start) => see_other(
            &start.authorize_url,
            &[login_cookie(g.config(), &start.browser_binding)],
        ),
        Err(e) => page_error(&g, e, "/"),
    }
}

/// GET /callback: identity's answer; a new session on success.
pub async fn callback(
    State(g): AppState,
    Meta(meta): Meta,
    headers: HeaderMap,
    query: Result<Query<Callback>, QueryRejection>,
) -> Response {
    let Ok(Query(callback)) = query else {
        return page_error(&g, GatewayError::LoginState, "/");
    };
    let browser = cookie(&headers, &login_cookie_name(g.config()));
    let previous = cookie(&headers, &session_cookie_name(g.config()));
    match g.finish_login(&callback, browser, previous, &meta).await {
        Ok(signed_in) => see_other(
            &signed_in.return_to,
            &[session_cookie(g.config(), Some(&signed_in.session_token))],
        ),
        Err(e) => page_error(&g, e, "/"),
    }
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
}

/// POST /logout: ends the session here, then at identity.
pub async fn logout(
    State(g): AppState,
    Meta(meta): Meta,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let csrf = form.ok().and_then(|Form(form)| form.csrf);
    let p = presented(&g, &headers, Surface::Page);
    match g.logout(p.session, csrf.as_deref(), p.origin, &meta).await {
        Ok(location) => see_other(&location, &[session_cookie(g.config(), None)]),
        Err(e) => page_error(&g, e, "/"),
    }
}

/// GET /signed-out: where identity's logout lands.
pub async fn signed_out() -> Response {
    render(StatusCode::OK, &SignedOutPage)
}

/// GET /api/me: the caller, by bearer token or session.
pub async fn me(State(g): AppState, Meta(meta): Meta, headers: HeaderMap) -> Response {
    match g
        .authenticate(&presented(&g, &headers, Surface::Api), &meta)
        .await
    {
        Ok(Some(user)) => {
            Json(json!({"sub": user.subject, "name": user.name, "roles": user.roles}))
                .into_response()
        }
        Ok(None) => api_error(&g, GatewayError::NotSignedIn),
        Err(e) => api_error(&g, e),
    }
}

pub async fn api_not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "message": "no such API endpoint"})),
    )
        .into_response()
}

pub async fn not_found() -> Response {
    super::error::not_found_page()
}

pub async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}
