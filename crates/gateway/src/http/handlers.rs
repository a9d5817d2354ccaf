//! Endpoint handlers: read the request, call the gateway, map the result.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Json;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, OriginalUri, Query, Request, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use echo_edge::{Origin, TrustedProxies, bearer, cookie, render, see_other};
use serde::Deserialize;
use serde_json::json;

use super::error::{api_error, page_error, respond};
use super::pages::{
    AccountPage, AskPage, DocumentsPage, EventRow, HomePage, LogsPage, SignedOutPage, UploadPage,
    login_cookie, login_cookie_name, nav, session_cookie, session_cookie_name, utc,
};
use crate::{
    CSRF_HEADER, Callback, Gateway, GatewayError, LogFilters, Presented, Principal, Surface,
    normalise,
};

type AppState = State<Arc<Gateway>>;

/// An error for the request at `uri`: answered by the request's surface.
fn error_for(g: &Gateway, error: GatewayError, uri: &axum::http::Uri) -> Response {
    let here = uri.path_and_query().map_or("/", |pq| pq.as_str());
    respond(g, Surface::of(uri.path()), error, here)
}

/// Middleware: phase 0 (the per-IP rate limit) for everything but static
/// files and `/ping`, which neither count nor are refused (a page's
/// stylesheet and script take no share of its caller's allowance; the
/// edge's `/healthz`, `/readyz` and `/metrics` are not behind it). The
/// edge's layer has put the request's [`Origin`] on it; it is read in
/// place, not copied.
pub async fn admit(State(g): AppState, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path.starts_with("/static/") || path == "/ping" {
        return next.run(request).await;
    }
    let admitted = match request.extensions().get::<Origin>() {
        Some(meta) => g.admit(meta).await,
        None => {
            let peer = request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip());
            let meta = Origin::of(peer, request.headers(), &TrustedProxies::default());
            g.admit(&meta).await
        }
    };
    match admitted {
        Err(e) => error_for(&g, e, request.uri()),
        Ok(()) => next.run(request).await,
    }
}

/// A request under a route's prefix, taken before the router (see
/// `Routed` in `http/mod.rs`): phase 0, then the route's phases.
pub(super) async fn routed(g: &Gateway, request: Request, meta: &Origin) -> Response {
    if let Err(e) = g.admit(meta).await {
        return error_for(g, e, request.uri());
    }
    proxied(g, request, meta).await
}

/// The router's fallback: everything the gateway does not answer itself
/// (phase 0 done by [`admit`]).
pub async fn proxy(State(g): AppState, meta: Origin, request: Request) -> Response {
    proxied(&g, request, &meta).await
}

/// The route table's upstreams, else 404. The path is normalised first
/// (`path.rs`): routes, roles and the upstream all see the same path.
async fn proxied(g: &Gateway, mut request: Request, meta: &Origin) -> Response {
    let dotted = match normalise(request.uri().path()) {
        Ok(normal) if normal.path == request.uri().path() => None,
        Ok(normal) => {
            let sent = request.uri();
            let dotted = normal.had_dot_segments.then(|| sent.path().to_owned());
            match with_path(sent, &normal.path) {
                Some(uri) => *request.uri_mut() = uri,
                None => {
                    return error_for(g, GatewayError::BadRequest("unusable path".into()), sent);
                }
            }
            dotted
        }
        Err(bad) => {
            let bad = GatewayError::BadRequest(bad.message().into());
            return error_for(g, bad, request.uri());
        }
    };
    let admitted = {
        let surface = Surface::of(request.uri().path());
        let presented = presented(g, request.headers(), surface);
        let target = (request.method(), request.uri().path());
        g.admit_to_route(&presented, target, dotted.as_deref(), meta)
            .await
    };
    let uri = request.uri().clone();
    let forwarded = match admitted {
        Ok(admitted) => g.forward(admitted, request, meta).await,
        Err(e) => Err(e),
    };
    forwarded.unwrap_or_else(|e| error_for(g, e, &uri))
}

/// `uri` with its path replaced by `path` (the query kept).
fn with_path(uri: &axum::http::Uri, path: &str) -> Option<axum::http::Uri> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    axum::http::Uri::from_parts(parts).ok()
}

fn presented<'h>(g: &Gateway, headers: &'h HeaderMap, surface: Surface) -> Presented<'h> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    Presented {
        surface,
        bearer: bearer(headers),
        session: cookie(headers, &session_cookie_name(g.config())),
        csrf_header: header(CSRF_HEADER) == Some("1"),
        origin: header(ORIGIN.as_str()),
        fetch_site: header("sec-fetch-site"),
    }
}

/// The path and query a page request asked for, to come back to.
pub(super) fn here(uri: &OriginalUri) -> String {
    uri.0
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
}

/// GET /: who is signed in, their recent activity, and the way on.
pub async fn home(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let user = match g
        .authenticate(&presented(&g, &headers, Surface::Page), &meta)
        .await
    {
        Ok(user) => user,
        Err(e) => return page_error(&g, e, &here(&uri)),
    };
    let activity = match &user {
        Some(user) => g
            .recent_activity(user)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "recent activity unavailable"))
            .ok()
            .map(EventRow::all),
        None => None,
    };
    render(
        StatusCode::OK,
        &HomePage {
            nav: nav(g.config(), user.as_ref(), "home"),
            user: user.as_ref(),
            issuer: &g.config().issuer,
            activity,
        },
    )
}

/// The signed-in browser's principal; without a session, the way to
/// login and back.
pub(super) async fn signed_in(
    g: &Gateway,
    meta: &Origin,
    headers: &HeaderMap,
) -> Result<Principal, GatewayError> {
    g.authenticate(&presented(g, headers, Surface::Page), meta)
        .await?
        .filter(|user| user.session.is_some())
        .ok_or(GatewayError::SessionExpired)
}

/// GET /account: roles and session expiry; signing in first if needed.
pub async fn account(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    let user = match signed_in(&g, &meta, &headers).await {
        Ok(user) => user,
        Err(e) => return page_error(&g, e, &here(&uri)),
    };
    let Some(session) = &user.session else {
        return page_error(&g, GatewayError::SessionExpired, &here(&uri));
    };
    render(
        StatusCode::OK,
        &AccountPage {
            nav: nav(g.config(), Some(&user), "account"),
            user: &user,
            expires_at: utc(session.expires_at),
            idle_expires_at: utc(session.idle_expires_at),
            csrf: &session.csrf,
        },
    )
}

/// GET /logs: the audit log with filters and paging (auditors, admins).
pub async fn logs(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    query: Result<Query<LogFilters>, QueryRejection>,
) -> Response {
    let Ok(Query(filters)) = query else {
        return page_error(
            &g,
            GatewayError::BadRequest("malformed filters".into()),
            "/logs",
        );
    };
    let page = match signed_in(&g, &meta, &headers).await {
        Ok(user) => g.logs(&user, &filters).await.map(|page| (page, user)),
        Err(e) => Err(e),
    };
    match page {
        Ok((page, user)) => render(
            StatusCode::OK,
            &LogsPage {
                nav: nav(g.config(), Some(&user), "logs"),
                next: page
                    .next_cursor
                    .as_deref()
                    .map(|cursor| LogsPage::older_link(&filters, cursor)),
                filters: &filters,
                rows: EventRow::read(&g, &user, page.events).await,
            },
        ),
        Err(e) => page_error(&g, e, &here(&uri)),
    }
}

/// The page `page` makes of the navigation bar (on the link `current`)
/// for a signed-in browser; without a session, the way to login and back.
/// The document pages need nothing more from the server: their script
/// calls the docs service's routes itself.
async fn signed_in_page<T: Template>(
    g: &Gateway,
    (meta, uri, headers): (&Origin, &OriginalUri, &HeaderMap),
    current: &str,
    page: impl FnOnce(String) -> T,
) -> Response {
    match signed_in(g, meta, headers).await {
        Ok(user) => render(StatusCode::OK, &page(nav(g.config(), Some(&user), current))),
        Err(e) => page_error(g, e, &here(uri)),
    }
}

/// GET /upload: several files, one upload and one progress bar each.
pub async fn upload(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    signed_in_page(&g, (&meta, &uri, &headers), "upload", |nav| UploadPage {
        nav,
    })
    .await
}

/// GET /documents: the user's documents, with live status and progress.
pub async fn documents(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    signed_in_page(&g, (&meta, &uri, &headers), "documents", |nav| {
        DocumentsPage { nav }
    })
    .await
}

/// GET /ask: a question answered from the user's documents, with citations.
pub async fn ask(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
) -> Response {
    signed_in_page(&g, (&meta, &uri, &headers), "ask", |nav| AskPage { nav }).await
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
    meta: Origin,
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
    meta: Origin,
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
pub async fn me(State(g): AppState, meta: Origin, headers: HeaderMap) -> Response {
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
