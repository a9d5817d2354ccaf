//! The login steps (`/login`, `/login/mfa`) and the account page
//! (`/account`: the address and the second factor; `/account/totp`, where a
//! signed-in user sets up TOTP). Thin, like every
//! handler: the logic is in `login.rs` and `mfa.rs`; the pages and cookies
//! they share with the other endpoints are `handlers.rs`'.

use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use super::extract::{CheckedForm, UserForm, csrf_forms, signed_in_user};
use super::handlers::{
    authorize_failure, checked_form, csrf_nonce, finish_login, hidden_fields, login_page,
    pending_cookie, session_cookies, with_pending_cookie,
};
use super::pages::{
    AccountPage, EnrolPage, MfaPage, NoticePage, RecoveryPage, account_nav, add_cookies,
    error_as_page, error_page, render, see_other,
};
use crate::authorize::{AuthorizeParams, AuthorizeRequest};
use crate::login::{PasswordOutcome, PendingStep};
use crate::mfa::{Enrolment, MfaChange, MfaChanged, MfaState};
use echo_edge::Origin;

use crate::{IdentityError, Provider};

csrf_forms!(ConfirmForm, MfaForm, SecondStepForm);

type AppState = State<Arc<Provider>>;

const INVALID_CODE: &str = "Invalid code.";

/// A page with a CSRF-protected form, and the CSRF cookie it may need.
pub(super) fn form_page(
    p: &Provider,
    headers: &HeaderMap,
    page: impl FnOnce(String) -> Response,
) -> Response {
    let (nonce, set) = csrf_nonce(p, headers);
    let mut response = page(p.csrf_token(&nonce));
    add_cookies(&mut response, &set.into_iter().collect::<Vec<_>>());
    response
}

fn status_for(error: Option<&str>) -> StatusCode {
    if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    }
}

/// The enrolment page: the QR code, the secret in text, a code field.
fn enrol_page(
    p: &Provider,
    headers: &HeaderMap,
    (nav, action): (String, &'static str),
    hidden: Vec<(String, String)>,
    enrolment: &Enrolment,
    error: Option<&'static str>,
) -> Response {
    let status = status_for(error);
    form_page(p, headers, |csrf| {
        render(
            status,
            &EnrolPage {
                nav,
                action,
                csrf,
                hidden,
                secret: &enrolment.secret,
                uri: &enrolment.uri,
                qr_svg: &enrolment.qr_svg,
                error,
            },
        )
    })
}

/// The second login step's page for `request`: an enrolment when one is
/// given, else the code form.
pub(super) fn second_step_page(
    p: &Provider,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    enrolment: Option<&Enrolment>,
    error: Option<&'static str>,
) -> Response {
    let hidden = hidden_fields(&request.params);
    if let Some(enrolment) = enrolment {
        return enrol_page(
            p,
            headers,
            (String::new(), "/login/mfa"),
            hidden,
            enrolment,
            error,
        );
    }
    let status = status_for(error);
    form_page(p, headers, |csrf| {
        render(
            status,
            &MfaPage {
                csrf,
                hidden,
                error,
            },
        )
    })
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    csrf: Option<String>,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(flatten)]
    authorize: AuthorizeParams,
}

/// POST /login: check CSRF and password, open the SSO session, and answer
/// the authorization request it came with.
pub async fn login(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let form = match checked_form(&p, &headers, form, "login form", |f| f.csrf.as_deref()) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    let request = match p.validate_authorize(form.authorize).await {
        Ok(request) => request,
        Err(e) => return authorize_failure(e),
    };
    match p.login(&form.username, &form.password, &meta).await {
        Ok(PasswordOutcome::LoggedIn(logged_in)) => {
            finish_login(&p, &request, logged_in, &meta).await
        }
        Ok(PasswordOutcome::SecondFactor { pending }) => {
            let page = second_step_page(&p, &headers, &request, None, None);
            with_pending_cookie(&p, page, &pending)
        }
        Ok(PasswordOutcome::Enrol { pending, enrolment }) => {
            let page = second_step_page(&p, &headers, &request, Some(&enrolment), None);
            with_pending_cookie(&p, page, &pending)
        }
        Err(IdentityError::LoginFailed) => login_page(
            &p,
            &headers,
            &request,
            StatusCode::UNAUTHORIZED,
            &form.username,
            Some("Invalid username or password."),
        ),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct SecondStepForm {
    csrf: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(flatten)]
    authorize: AuthorizeParams,
}

/// POST /login/mfa: the second factor (or the enrolment a role requires),
/// then the answer to the authorization request.
pub async fn login_mfa(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    CheckedForm(form): CheckedForm<SecondStepForm>,
) -> Response {
    let request = match p.validate_authorize(form.authorize).await {
        Ok(request) => request,
        Err(e) => return authorize_failure(e),
    };
    let pending = pending_cookie(&p, &headers);
    match p.second_factor(pending, &form.code, &meta).await {
        Ok(step) => match step.recovery_codes {
            None => finish_login(&p, &request, step.logged_in, &meta).await,
            Some(codes) => {
                // Shown once. Continuing re-enters /authorize, which the new
                // SSO session answers with a fresh code.
                let mut params = hidden_fields(&request.params);
                params.retain(|(name, _)| name != "prompt");
                let query: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(params)
                    .finish();
                let continue_to = format!("/authorize?{query}");
                let mut page = render(
                    StatusCode::OK,
                    &RecoveryPage {
                        codes: &codes,
                        continue_to: &continue_to,
                    },
                );
                add_cookies(&mut page, &session_cookies(&p, &step.logged_in));
                page
            }
        },
        Err(IdentityError::MfaFailed) => match p.pending_step(pending).await {
            Ok(PendingStep::Code) => {
                second_step_page(&p, &headers, &request, None, Some(INVALID_CODE))
            }
            Ok(PendingStep::Enrol(enrolment)) => {
                second_step_page(&p, &headers, &request, Some(&enrolment), Some(INVALID_CODE))
            }
            Err(e) => error_as_page(e),
        },
        Err(IdentityError::LoginFailed) => login_page(
            &p,
            &headers,
            &request,
            StatusCode::UNAUTHORIZED,
            "",
            Some("Please sign in again."),
        ),
        Err(e) => error_as_page(e),
    }
}

/// GET /account: the signed-in user's address and second factor.
pub async fn account(State(p): AppState, headers: HeaderMap) -> Response {
    let user = match signed_in_user(&p, &headers).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    let mfa = match p.mfa_summary(&user).await {
        Ok(mfa) => mfa,
        Err(e) => return error_as_page(e),
    };
    let recovery_codes_left = match mfa.state {
        MfaState::Totp {
            recovery_codes_left,
        } => Some(recovery_codes_left),
        MfaState::None | MfaState::Pending => None,
    };
    form_page(&p, &headers, |csrf| {
        render(
            StatusCode::OK,
            &AccountPage {
                nav: account_nav(&p, &user, "account"),
                username: &user.username,
                email: user.email.as_deref(),
                email_verified: user.email_verified,
                mail_enabled: p.mail_enabled(),
                csrf,
                recovery_codes_left,
                mfa_required: mfa.required,
            },
        )
    })
}

/// GET /account/totp: the enrolment (the one in progress, or a new one);
/// back to the account page when TOTP is on already.
pub async fn totp_form(State(p): AppState, headers: HeaderMap) -> Response {
    let user = match signed_in_user(&p, &headers).await {
        Ok(user) => user,
        Err(refusal) => return refusal,
    };
    match p.enrolment_for(&user).await {
        Ok(enrolment) => enrol_page(
            &p,
            &headers,
            (account_nav(&p, &user, "account"), "/account/totp"),
            Vec::new(),
            &enrolment,
            None,
        ),
        Err(IdentityError::BadInput(_)) => see_other("/account", &[]),
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    csrf: Option<String>,
    #[serde(default)]
    code: String,
}

/// POST /account/totp: confirms the enrolment; shows the recovery codes.
pub async fn account_totp(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    UserForm { user, form }: UserForm<ConfirmForm>,
) -> Response {
    match p.confirm_totp_enrolment(&user, &form.code, &meta).await {
        Ok(codes) => render(
            StatusCode::OK,
            &RecoveryPage {
                codes: &codes,
                continue_to: "/account",
            },
        ),
        Err(IdentityError::MfaFailed) => match p.pending_enrolment(&user).await {
            Ok(Some(enrolment)) => enrol_page(
                &p,
                &headers,
                (account_nav(&p, &user, "account"), "/account/totp"),
                Vec::new(),
                &enrolment,
                Some(INVALID_CODE),
            ),
            Ok(None) => error_page(
                StatusCode::CONFLICT,
                "Nothing to confirm",
                "Start the set-up again from your account page.",
            ),
            Err(e) => error_as_page(e),
        },
        Err(e) => error_as_page(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct MfaForm {
    csrf: Option<String>,
    #[serde(default)]
    code: String,
    #[serde(default)]
    action: String,
}

/// POST /account/mfa: new recovery codes, another authenticator, or TOTP
/// off, each proven by a current code or a recovery code.
pub async fn change_mfa(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    UserForm { user, form }: UserForm<MfaForm>,
) -> Response {
    let change = match form.action.parse::<MfaChange>() {
        Ok(change) => change,
        Err(e) => return error_as_page(e),
    };
    match p.change_mfa(&user, &form.code, change, &meta).await {
        Ok(MfaChanged::RecoveryCodes(codes)) => render(
            StatusCode::OK,
            &RecoveryPage {
                codes: &codes,
                continue_to: "/account",
            },
        ),
        Ok(MfaChanged::Replace(enrolment)) => enrol_page(
            &p,
            &headers,
            (account_nav(&p, &user, "account"), "/account/totp"),
            Vec::new(),
            &enrolment,
            None,
        ),
        Ok(MfaChanged::Removed) => render(
            StatusCode::OK,
            &NoticePage {
                title: "Two-step verification is off",
                message: "Signing in takes your password only. You can set it up again from \
                          your account page.",
                link: Some(("/account", "Back to your account")),
            },
        ),
        Err(IdentityError::MfaFailed) => error_page(
            StatusCode::UNAUTHORIZED,
            INVALID_CODE,
            "Enter a current code from your app, or one of your recovery codes.",
        ),
        Err(e) => error_as_page(e),
    }
}
