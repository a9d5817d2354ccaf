//! `/sessions`: the signed-in user's gateway sessions, each with a form
//! that signs it out (their own: `/logout`). Thin: the logic is in
//! `browser_sessions.rs`.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_edge::words::{ago, browser};
use echo_edge::{Origin, render, see_other};
use serde::Deserialize;

use super::error::page_error;
use super::handlers::signed_in;
use super::page::{SignedInPage, malformed};
use super::pages::{nav, utc};
use crate::{Gateway, GatewayError};

type AppState = State<Arc<Gateway>>;

/// Where the sessions page is, and where its forms come back to.
const PAGE: &str = "/sessions";

#[derive(Template)]
#[template(path = "sessions.html")]
struct SessionsPage<'a> {
    nav: String,
    csrf: &'a str,
    sessions: Vec<SessionRow>,
    /// Identity's sessions page (the SSO sessions).
    sso_sessions: String,
}

struct SessionRow {
    id: String,
    current: bool,
    browser: String,
    address: String,
    signed_in: String,
    last_seen: String,
}

/// GET /sessions.
pub async fn list(State(g): AppState, page: SignedInPage) -> Response {
    let answer = async {
        let user = &page.user;
        let now = g.clock.now();
        let sessions = g
            .browser_sessions(user)
            .await?
            .into_iter()
            .map(|s| SessionRow {
                browser: browser(&s.user_agent),
                address: s.address,
                signed_in: utc(s.created_at),
                last_seen: ago(now, s.last_seen_at),
                current: s.current,
                id: s.id,
            })
            .collect();
        Ok::<_, GatewayError>(render(
            StatusCode::OK,
            &SessionsPage {
                nav: nav(g.config(), Some(user), "portal-sessions"),
                csrf: user.session.as_ref().map_or("", |s| s.csrf.as_str()),
                sessions,
                sso_sessions: format!("{}/account/sessions", g.config().issuer),
            },
        ))
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

#[derive(Debug, Deserialize)]
pub struct EndForm {
    csrf: Option<String>,
    #[serde(default)]
    session: String,
}

/// POST /sessions/end: signs one of the user's sessions out.
pub async fn end(
    State(g): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<EndForm>, FormRejection>,
) -> Response {
    let ended = async {
        let Form(form) = form.map_err(|_| malformed("form"))?;
        let user = signed_in(&g, &meta, &headers).await?;
        let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
        g.end_browser_session(&user, &form.session, (form.csrf.as_deref(), origin), &meta)
            .await
    };
    match ended.await {
        Ok(()) => see_other(PAGE, &[]),
        Err(e) => page_error(&g, e, PAGE),
    }
}
