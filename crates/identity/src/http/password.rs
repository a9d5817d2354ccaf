//! The password pages: `/account/password` (change, signed in),
//! `/password/forgot` (ask for a link) and `/password/reset` (use it).
//! Thin: the logic is in `self_service.rs`.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::account::form_page;
use super::extract::{CheckedForm, UserForm, csrf_forms, signed_in_user};
use super::handlers::{checked_form, sso_cookie};
use super::pages::{
    ForgotPage, NoticePage, PasswordPage, ResetPage, account_nav, error_as_page, render,
};
use crate::password_policy::MIN_PASSWORD_LEN;
use crate::self_service::{PasswordChange, RESET_TTL};
use crate::{IdentityError, Provider};
use echo_edge::Origin;
use echo_identity_store::User;

csrf_forms!(ChangeForm, ResetForm);

type AppState = State<Arc<Provider>>;

fn change_page(
    p: &Provider,
    headers: &HeaderMap,
    user: &User,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    form_page(p, headers, |csrf| {
        render(
            status,
            &PasswordPage {
                nav: account_nav(p, user, "account"),
                username: &user.username,
                csrf,
                min_len: MIN_PASSWORD_LEN,
                error,
            },
        )
    })
}

/// GET /account/password: the form.
pub async fn change_form(State(p): AppState, headers: HeaderMap) -> Response {
    match signed_in_user(&p, &headers).await {
        Ok(user) => change_page(&p, &headers, &user, StatusCode::OK, None),
        Err(refusal) => refusal,
    }
}

#[derive(Debug, Deserialize)]
pub struct ChangeForm {
    csrf: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    /// A checkbox: present when ticked.
    sign_out_elsewhere: Option<String>,
}

/// POST /account/password: changes the password.
pub async fn change(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    UserForm { user, form }: UserForm<ChangeForm>,
) -> Response {
    let session = sso_cookie(&p, &headers).unwrap_or_default();
    let change = PasswordChange {
        current: form.current_password,
        new: form.new_password,
        sign_out_elsewhere: form.sign_out_elsewhere.is_some(),
    };
    match p.change_password(&user, session, change, &meta).await {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Password changed",
                message: "Your new password works from now on.",
                link: Some(("/account", "Back to your account")),
            },
        ),
        Err(IdentityError::LoginFailed) => change_page(
            &p,
            &headers,
            &user,
            StatusCode::UNAUTHORIZED,
            Some("Your current password is not right."),
        ),
        Err(IdentityError::WeakPassword(why)) => {
            change_page(&p, &headers, &user, StatusCode::BAD_REQUEST, Some(&why))
        }
        Err(e) => error_as_page(e),
    }
}

fn forgot_page(
    p: &Provider,
    headers: &HeaderMap,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    if !p.mail_enabled() {
        return render(
            StatusCode::NOT_FOUND,
            &NoticePage {
                title: "Not available",
                message: "Password reset by email is not set up here: ask your administrator.",
                link: None,
            },
        );
    }
    form_page(p, headers, |csrf| {
        render(status, &ForgotPage { csrf, error })
    })
}

/// GET /password/forgot: the form (when mail is set up).
pub async fn forgot_form(State(p): AppState, headers: HeaderMap) -> Response {
    forgot_page(&p, &headers, StatusCode::OK, None)
}

#[derive(Debug, Deserialize)]
pub struct ForgotForm {
    csrf: Option<String>,
    #[serde(default)]
    email: String,
}

/// What `/password/forgot` answers for every address, known or not.
const LINK_ON_ITS_WAY: &str = "If an account has this address, a link to choose a new password \
                               is on its way to it. The link works once, for 30 minutes.";
const _: () = assert!(RESET_TTL == 30 * 60, "LINK_ON_ITS_WAY names the lifetime");

/// POST /password/forgot: the same answer whether or not the address has
/// an account; the link, if any, is sent in the background.
pub async fn forgot(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<ForgotForm>, FormRejection>,
) -> Response {
    if !p.mail_enabled() {
        return forgot_page(&p, &headers, StatusCode::NOT_FOUND, None);
    }
    let form = match checked_form(&p, &headers, form, "form", |f| f.csrf.as_deref()) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    match p.request_password_reset(&form.email, &meta).await {
        Ok(_sending) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Check your email",
                message: LINK_ON_ITS_WAY,
                link: None,
            },
        ),
        Err(IdentityError::BadInput(why)) => {
            forgot_page(&p, &headers, StatusCode::BAD_REQUEST, Some(&why))
        }
        Err(e) => error_as_page(e),
    }
}

fn reset_page(
    p: &Provider,
    headers: &HeaderMap,
    token: &str,
    status: StatusCode,
    error: Option<&str>,
) -> Response {
    form_page(p, headers, |csrf| {
        render(
            status,
            &ResetPage {
                csrf,
                token,
                min_len: MIN_PASSWORD_LEN,
                error,
            },
        )
    })
}

fn invalid_link() -> Response {
    render(
        StatusCode::BAD_REQUEST,
        &NoticePage {
            title: "This link does not work",
            message: "It was used already, it expired, or it was copied incompletely. \
                      Ask for a new one.",
            link: Some(("/password/forgot", "Ask for a new link")),
        },
    )
}

#[derive(Debug, Deserialize)]
pub struct ResetQuery {
    #[serde(default)]
    token: String,
}

/// GET /password/reset?token=…: the form, for a live link.
pub async fn reset_form(
    State(p): AppState,
    headers: HeaderMap,
    query: Result<Query<ResetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return invalid_link();
    };
    match p.check_reset_link(&query.token).await {
        Ok(()) => reset_page(&p, &headers, &query.token, StatusCode::OK, None),
        Err(IdentityError::LinkInvalid) => invalid_link(),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ResetForm {
    csrf: Option<String>,
    #[serde(default)]
    token: String,
    #[serde(default)]
    new_password: String,
}

/// POST /password/reset: spends the link and sets the password.
pub async fn reset(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<ResetForm>,
) -> Response {
    match p
        .reset_password(&form.token, form.new_password, &meta)
        .await
    {
        Ok(()) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Password changed",
                message: "Sign in with your new password from your application. \
                          Every session you had has ended.",
                link: None,
            },
        ),
        Err(IdentityError::WeakPassword(why)) => reset_page(
            &p,
            &headers,
            &form.token,
            StatusCode::BAD_REQUEST,
            Some(&why),
        ),
        Err(IdentityError::LinkInvalid) => invalid_link(),
        Err(e) => error_as_page(e),
    }
}
