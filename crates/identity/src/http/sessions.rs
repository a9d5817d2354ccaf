//! `/account/sessions`: the user's SSO sessions and the applications
//! holding their refresh tokens, with a form to end each, and "Sign out
//! everywhere"; a link to the portal's own sessions page (the gateway
//! lists and ends its sessions itself). Thin: the logic is in
//! `account_sessions.rs`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_edge::Origin;
use echo_edge::words::{ago, browser};
use serde::Deserialize;

use super::account::form_page;
use super::email::CsrfForm;
use super::extract::{UserForm, csrf_forms, signed_in_user};
use super::handlers::sso_cookie;
use super::pages::{
    AppRow, NoticePage, SessionRow, SessionsPage, account_nav, error_as_page, render, see_other,
};
use crate::Provider;

csrf_forms!(EndForm, RevokeForm);

type AppState = State<Arc<Provider>>;

/// GET /account/sessions.
pub async fn sessions(State(p): AppState, headers: HeaderMap) -> Response {
    let user = match signed_in_user(&p, &headers).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let view = match p.account_sessions(&user, sso_cookie(&p, &headers)).await {
        Ok(view) => view,
        Err(e) => return error_as_page(e),
    };
    let sessions: Vec<SessionRow> = view
        .sessions
        .into_iter()
        .map(|s| SessionRow {
            browser: browser(&s.user_agent),
            address: s.address,
            last_seen: ago(view.now, s.last_seen_at),
            current: s.current,
            id: s.id,
        })
        .collect();
    let apps: Vec<AppRow> = view
        .apps
        .into_iter()
        .map(|a| AppRow {
            last_used: ago(view.now, a.last_used_at),
            client_id: a.client_id,
        })
        .collect();
    form_page(&p, &headers, |csrf| {
        render(
            StatusCode::OK,
            &SessionsPage {
                nav: account_nav(&p, &user, "sessions"),
                csrf,
                sessions: &sessions,
                apps: &apps,
                portal_sessions: p
                    .config()
                    .portal_url
                    .as_deref()
                    .map(|portal| format!("{}/sessions", portal.trim_end_matches('/'))),
            },
        )
    })
}

#[derive(Debug, Deserialize)]
pub struct EndForm {
    csrf: Option<String>,
    #[serde(default)]
    session: String,
}

/// POST /account/sessions/end: signs one other session out.
pub async fn end(
    State(p): AppState,
    meta: Origin,
    UserForm { user, form }: UserForm<EndForm>,
) -> Response {
    match p.end_account_session(&user, &form.session, &meta).await {
        Ok(()) => see_other("/account/sessions", &[]),
        Err(e) => error_as_page(e),
    }
}

/// POST /account/sessions/end-all: every session (this one too) and every
/// application's refresh tokens.
pub async fn end_all(
    State(p): AppState,
    meta: Origin,
    UserForm { user, .. }: UserForm<CsrfForm>,
) -> Response {
    match p.end_all_account_sessions(&user, &meta).await {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Signed out everywhere",
                message: "Every session has ended and no application keeps access. Sign in \
                          again from your application.",
                link: None,
            },
        ),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct RevokeForm {
    csrf: Option<String>,
    #[serde(default)]
    client_id: String,
}

/// POST /account/apps/revoke: one application's refresh tokens.
pub async fn revoke_app(
    State(p): AppState,
    meta: Origin,
    UserForm { user, form }: UserForm<RevokeForm>,
) -> Response {
    match p.revoke_app(&user, &form.client_id, &meta).await {
        Ok(_) => see_other("/account/sessions", &[]),
        Err(e) => error_as_page(e),
    }
}
