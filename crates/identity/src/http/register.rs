//! Opening an account: `/register` (sign-up, when the policy is `open`)
//! and `/invitation` (an invitation from an administrator, followed).
//! Thin: the logic is in `registration.rs`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_edge::Origin;
use serde::Deserialize;

use super::account::form_page;
use super::email::{TokenQuery, invalid_email_link};
use super::extract::{CheckedForm, csrf_forms};
use super::pages::{InvitationPage, NoticePage, RegisterPage, error_as_page, render};
use crate::password_policy::MIN_PASSWORD_LEN;
use crate::registration::SignUp;
use crate::{IdentityError, Provider};

csrf_forms!(InvitationForm, RegisterForm);

type AppState = State<Arc<Provider>>;

/// What `/register` answers for every sign-up that passed the form's
/// checks, whatever exists already.
const CHECK_YOUR_EMAIL: &str = "A message is on its way to the address you gave. Open the link \
                                in it within 24 hours to activate your account.";

fn register_page(
    p: &Provider,
    headers: &HeaderMap,
    form: (&str, &str),
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    if let Err(closed) = p.check_sign_up_open() {
        return error_as_page(closed);
    }
    form_page(p, headers, |csrf| {
        render(
            status,
            &RegisterPage {
                csrf,
                username: form.0,
                email: form.1,
                min_len: MIN_PASSWORD_LEN,
                error,
            },
        )
    })
}

/// GET /register: the form (403 unless the policy is `open`).
pub async fn register_form(State(p): AppState, headers: HeaderMap) -> Response {
    register_page(&p, &headers, ("", ""), StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct RegisterForm {
    csrf: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

/// POST /register: the same answer whether or not the username or the
/// address exists; the account, if any, is opened in the background.
pub async fn register(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<RegisterForm>,
) -> Response {
    let typed = (form.username.clone(), form.email.clone());
    let sign_up = SignUp {
        username: form.username,
        email: form.email,
        password: form.password,
    };
    match p.register(sign_up, &meta).await {
        Ok(_opening) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Check your email",
                message: CHECK_YOUR_EMAIL,
                link: None,
            },
        ),
        Err(IdentityError::BadInput(why) | IdentityError::WeakPassword(why)) => register_page(
            &p,
            &headers,
            (&typed.0, &typed.1),
            StatusCode::BAD_REQUEST,
            Some(&why),
        ),
        Err(e) => error_as_page(e),
    }
}

fn invitation_page(
    p: &Provider,
    headers: &HeaderMap,
    username: &str,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    form_page(p, headers, |csrf| {
        render(
            status,
            &InvitationPage {
                csrf,
                username,
                token,
                min_len: MIN_PASSWORD_LEN,
                error,
            },
        )
    })
}

/// GET /invitation?token=…: the password form, for a live invitation.
pub async fn invitation_form(
    State(p): AppState,
    headers: HeaderMap,
    query: Result<Query<TokenQuery>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return invalid_email_link();
    };
    match p.invitation_username(&query.token).await {
        Ok(username) => {
            invitation_page(&p, &headers, &username, &query.token, StatusCode::OK, None)
        }
        Err(IdentityError::LinkInvalid) => invalid_email_link(),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct InvitationForm {
    csrf: Option<String>,
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
}

/// POST /invitation: sets the password and activates the account.
pub async fn accept_invitation(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<InvitationForm>,
) -> Response {
    match p
        .accept_invitation(&form.token, form.new_password, &meta)
        .await
    {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Your account is ready",
                message: "Sign in with your username and new password from your application.",
                link: None,
            },
        ),
        Err(IdentityError::WeakPassword(why)) => match p.invitation_username(&form.token).await {
            Ok(username) => invitation_page(
                &p,
                &headers,
                &username,
                &form.token,
                StatusCode::BAD_REQUEST,
                Some(&why),
            ),
            Err(_) => invalid_email_link(),
        },
        Err(IdentityError::LinkInvalid) => invalid_email_link(),
        Err(e) => error_as_page(e),
    }
}
