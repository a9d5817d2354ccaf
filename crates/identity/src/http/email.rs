//! The address pages: `/account/email` (change it, signed in),
//! `/account/email/resend` (a new link) and `/email/verify` (follow one).
//! Thin: the logic is in `registration.rs`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_edge::Origin;
use serde::Deserialize;

use super::account::form_page;
use super::extract::{CheckedForm, UserForm, csrf_forms, signed_in_user};
use super::pages::{ConfirmLinkPage, EmailPage, NoticePage, account_nav, error_as_page, render};
use crate::registration::LinkPurpose;
use crate::{IdentityError, Provider};
use echo_identity_store::User;

csrf_forms!(CsrfForm, EmailForm, TokenForm);

type AppState = State<Arc<Provider>>;

fn email_page(
    p: &Provider,
    headers: &HeaderMap,
    user: &User,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    form_page(p, headers, |csrf| {
        render(
            status,
            &EmailPage {
                nav: account_nav(p, user, "account"),
                email: user.email.as_deref(),
                mail_enabled: p.mail_enabled(),
                csrf,
                error,
            },
        )
    })
}

/// GET /account/email: the form.
pub async fn email_form(State(p): AppState, headers: HeaderMap) -> Response {
    match signed_in_user(&p, &headers).await {
        Ok(user) => email_page(&p, &headers, &user, StatusCode::OK, None),
        Err(refusal) => refusal,
    }
}

#[derive(Debug, Deserialize)]
pub struct EmailForm {
    csrf: Option<String>,
    #[serde(default)]
    email: String,
}

/// POST /account/email: sets the address, unverified, and sends a link.
pub async fn change_email(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    UserForm { user, form }: UserForm<EmailForm>,
) -> Response {
    match p.change_email(&user, &form.email, &meta).await {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Address changed",
                message: if p.mail_enabled() {
                    "A link to verify it is on its way to the new address."
                } else {
                    "It stays unverified: this server sends no mail."
                },
                link: Some(("/account", "Back to your account")),
            },
        ),
        Err(IdentityError::BadInput(why)) => {
            email_page(&p, &headers, &user, StatusCode::BAD_REQUEST, Some(&why))
        }
        Err(e) => error_as_page(e),
    }
}

/// A form that carries nothing but its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub(super) csrf: Option<String>,
}

/// POST /account/email/resend: a new link for the unverified address.
pub async fn resend(
    State(p): AppState,
    meta: Origin,
    UserForm { user, .. }: UserForm<CsrfForm>,
) -> Response {
    match p.resend_verification(&user, &meta).await {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Check your email",
                message: "A new link to verify your address is on its way.",
                link: Some(("/account", "Back to your account")),
            },
        ),
        Err(e) => error_as_page(e),
    }
}

/// The page of a link that does not work (any reason, the same words).
pub(super) fn invalid_email_link() -> Response {
    render(
        StatusCode::BAD_REQUEST,
        &NoticePage {
            title: "This link does not work",
            message: "It was used already, it expired, it was copied incompletely, or the \
                      address changed since it was sent.",
            link: None,
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    pub(super) token: String,
}

/// GET /email/verify?token=…: a button that verifies, for a live link.
pub async fn verify_form(
    State(p): AppState,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return invalid_email_link();
    };
    match p
        .check_email_link(&query.token, LinkPurpose::VerifyEmail)
        .await
    {
        Ok(()) => form_page(&p, &headers, |csrf| {
            render(
                StatusCode::OK,
                &ConfirmLinkPage {
                    title: "Verify your email address",
                    message: "Confirm that this address is yours.",
                    action: "/email/verify",
                    button: "Verify my address",
                    csrf,
                    token: &query.token,
                },
            )
        }),
        Err(IdentityError::LinkInvalid) => invalid_email_link(),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    csrf: Option<String>,
    #[serde(default)]
    token: String,
}

/// POST /email/verify: spends the link.
pub async fn verify(
    State(p): AppState,
    meta: Origin,
    CheckedForm(form): CheckedForm<TokenForm>,
) -> Response {
    match p.verify_email(&form.token, &meta).await {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Address verified",
                message: "Thank you: your email address is verified.",
                link: Some(("/account", "Go to your account")),
            },
        ),
        Err(IdentityError::LinkInvalid) => invalid_email_link(),
        Err(e) => error_as_page(e),
    }
}
