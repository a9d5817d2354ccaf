//! What identity's page handlers start from: the signed-in user
//! ([`signed_in_user`]) and posted forms as extractors, [`CheckedForm`]
//! (parsed and CSRF-checked) and [`UserForm`] (that, then the signed-in
//! user), so a handler starts from what it needs and every refusal is the
//! same page.

use std::sync::Arc;

use axum::extract::{Form, FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_identity_store::User;
use serde::de::DeserializeOwned;

use super::handlers::{checked_form, sso_cookie};
use super::pages::{error_as_page, error_page};
use crate::Provider;

/// A form carrying identity's CSRF token (in its field `csrf`).
pub trait CsrfToken {
    fn csrf(&self) -> Option<&str>;
}

/// Implements [`CsrfToken`] for forms whose `csrf` field holds the token.
macro_rules! csrf_forms {
    ($($form:ty),+ $(,)?) => {
        $(
            impl $crate::http::extract::CsrfToken for $form {
                fn csrf(&self) -> Option<&str> {
                    self.csrf.as_deref()
                }
            }
        )+
    };
}
pub(super) use csrf_forms;

/// A posted form, parsed and CSRF-checked; refused with the page that
/// says why (a malformed form: 400; a wrong or missing token: 403).
pub struct CheckedForm<T>(pub T);

impl<T> FromRequest<Arc<Provider>> for CheckedForm<T>
where
    T: DeserializeOwned + CsrfToken + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, p: &Arc<Provider>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let form = Form::<T>::from_request(request, p).await;
        checked_form(p, &headers, form, "form", T::csrf).map(CheckedForm)
    }
}

/// A [`CheckedForm`] of the signed-in user's: the form first (a forged
/// post learns nothing of the session), then the user of the browser's
/// SSO session (401 page without one).
pub struct UserForm<T> {
    pub user: User,
    pub form: T,
}

impl<T> FromRequest<Arc<Provider>> for UserForm<T>
where
    T: DeserializeOwned + CsrfToken + Send,
{
    type Rejection = Response;

    async fn from_request(request: Request, p: &Arc<Provider>) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let CheckedForm(form) = CheckedForm::from_request(request, p).await?;
        let user = signed_in_user(p, &headers).await?;
        Ok(UserForm { user, form })
    }
}

/// The user of the browser's SSO session, or the page that says why not.
pub async fn signed_in_user(p: &Provider, headers: &HeaderMap) -> Result<User, Response> {
    match p.session_user(sso_cookie(p, headers)).await {
        Ok(Some((user, _))) => Ok(user),
        Ok(None) => Err(error_page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            "Sign in through an application first, then come back to this page.",
        )),
        Err(e) => Err(error_as_page(e)),
    }
}
