//! Endpoint handlers: parse, call the provider, map the result.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{Form, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use echo_crypto::secret::random_token;
use serde::Deserialize;
use serde_json::json;

use super::pages::{
    LoginPage, LogoutPage, SignedOutPage, add_cookies, cookie_name, error_as_page, error_page,
    render, see_other, set_cookie,
};
use super::request::{basic_credentials, bearer, client_request, cookie};
use crate::authorize::{AuthorizeAnswer, AuthorizeError, AuthorizeParams, AuthorizeRequest};
use crate::client_auth::BasicCredentials;
use crate::client_registration::ClientMetadata;
use crate::grant::ClientAuthParams;
use crate::grant::TokenParams;
use crate::introspect::TokenRequest;
use crate::login::{LoggedIn, LogoutParams};
use crate::{IdentityError, Provider};
use echo_edge::Origin;

type AppState = State<Arc<Provider>>;

const SSO_COOKIE: &str = "echo_sso";
const CSRF_COOKIE: &str = "echo_csrf";
/// The sealed login between its password and second-factor steps.
const PENDING_COOKIE: &str = "echo_mfa";

fn json_bytes(body: axum::body::Bytes, cache: &'static str) -> Response {
    (
        [(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, cache)],
        body,
    )
        .into_response()
}

pub async fn discovery(State(p): AppState) -> Response {
    json_bytes(p.discovery_json(), "public, max-age=300")
}

pub async fn jwks(State(p): AppState) -> Response {
    json_bytes(p.keys().jwks_json(), "public, max-age=60")
}

/// The CSRF cookie's nonce (a new one when absent) and the cookie to set.
pub(super) fn csrf_nonce(p: &Provider, headers: &HeaderMap) -> (String, Option<String>) {
    let secure = p.config().secure_cookies();
    let name = cookie_name(secure, CSRF_COOKIE);
    match cookie(headers, &name) {
        Some(nonce) if nonce.len() == 43 => (nonce.to_owned(), None),
        _ => {
            let nonce = random_token();
            let set = set_cookie(secure, &name, &nonce, "Strict", p.config().sso_session_ttl);
            (nonce, Some(set))
        }
    }
}

/// The refusal of a form whose CSRF token does not match this browser's
/// cookie, if it does not.
fn csrf_refusal(p: &Provider, headers: &HeaderMap, token: Option<&str>) -> Option<Response> {
    let name = cookie_name(p.config().secure_cookies(), CSRF_COOKIE);
    p.check_csrf(cookie(headers, &name), token)
        .err()
        .map(error_as_page)
}

/// A POSTed browser form, parsed and CSRF-checked (its token read by
/// `csrf`), or the page refusing it; `what` names the form in the refusal.
// The error is the handler's own answer, returned at once: boxing it would
// only add an allocation.
#[allow(clippy::result_large_err)]
pub(super) fn checked_form<T>(
    p: &Provider,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
    what: &str,
    csrf: impl Fn(&T) -> Option<&str>,
) -> Result<T, Response> {
    let Ok(Form(form)) = form else {
        return Err(error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            &format!("The {what} is malformed."),
        ));
    };
    match csrf_refusal(p, headers, csrf(&form)) {
        Some(refused) => Err(refused),
        None => Ok(form),
    }
}

/// The SSO session cookie's value, if the browser sent one.
pub(super) fn sso_cookie<'h>(p: &Provider, headers: &'h HeaderMap) -> Option<&'h str> {
    cookie(
        headers,
        &cookie_name(p.config().secure_cookies(), SSO_COOKIE),
    )
}

pub(super) fn authorize_failure(error: AuthorizeError) -> Response {
    match error {
        AuthorizeError::Untrusted(message) => {
            error_page(StatusCode::BAD_REQUEST, "Cannot continue", &message)
        }
        AuthorizeError::Redirect(location) => see_other(&location, &[]),
        AuthorizeError::Internal(e) => error_as_page(e),
    }
}

/// Request parameters carried through a form as hidden fields.
pub(super) fn hidden_fields(params: &impl serde::Serialize) -> Vec<(String, String)> {
    match serde_json::to_value(params) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter_map(|(name, value)| value.as_str().map(|v| (name, v.to_owned())))
            .collect(),
        _ => Vec::new(),
    }
}

pub(super) fn login_page(
    p: &Provider,
    headers: &HeaderMap,
    request: &AuthorizeRequest,
    status: StatusCode,
    username: &str,
    error: Option<&'static str>,
) -> Response {
    let (nonce, set) = csrf_nonce(p, headers);
    let page = LoginPage {
        client_id: &request.client.id,
        csrf: p.csrf_token(&nonce),
        hidden: hidden_fields(&request.params),
        username,
        error,
        sign_up: p.check_sign_up_open().is_ok(),
    };
    let mut response = render(status, &page);
    add_cookies(&mut response, &set.into_iter().collect::<Vec<_>>());
    response
}

/// GET /authorize: reuse the SSO session, or show the login form.
pub async fn authorize(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    params: Result<Query<AuthorizeParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The authorization request is malformed.",
        );
    };
    let request = match p.validate_authorize(params).await {
        Ok(request) => request,
        Err(e) => return authorize_failure(e),
    };
    match p
        .answer_authorize(&request, sso_cookie(&p, &headers), &meta)
        .await
    {
        Ok(AuthorizeAnswer::Redirect(location)) => see_other(&location, &[]),
        Ok(AuthorizeAnswer::Login) => login_page(&p, &headers, &request, StatusCode::OK, "", None),
        Err(e) => error_as_page(e),
    }
}

/// `page` with the pending-login cookie set: Strict, as short-lived as the
/// pending login itself.
pub(super) fn with_pending_cookie(p: &Provider, mut page: Response, pending: &str) -> Response {
    let secure = p.config().secure_cookies();
    let name = cookie_name(secure, PENDING_COOKIE);
    add_cookies(
        &mut page,
        &[set_cookie(secure, &name, pending, "Strict", 300)],
    );
    page
}

/// The pending-login cookie's value, if the browser sent one.
pub(super) fn pending_cookie<'h>(p: &Provider, headers: &'h HeaderMap) -> Option<&'h str> {
    cookie(
        headers,
        &cookie_name(p.config().secure_cookies(), PENDING_COOKIE),
    )
}

/// Cookies that set the SSO session of `logged_in` and drop any pending
/// login.
pub(super) fn session_cookies(p: &Provider, logged_in: &LoggedIn) -> Vec<String> {
    let secure = p.config().secure_cookies();
    vec![
        set_cookie(
            secure,
            &cookie_name(secure, SSO_COOKIE),
            &logged_in.session_token,
            "Lax",
            p.config().sso_session_ttl,
        ),
        set_cookie(
            secure,
            &cookie_name(secure, PENDING_COOKIE),
            "",
            "Strict",
            0,
        ),
    ]
}

/// A completed login answers the authorization request: a code, and the
/// SSO session cookie.
pub(super) async fn finish_login(
    p: &Provider,
    request: &AuthorizeRequest,
    logged_in: LoggedIn,
    meta: &echo_edge::Origin,
) -> Response {
    match p
        .issue_code(
            request,
            &logged_in.user,
            logged_in.auth_time,
            &logged_in.amr,
            meta,
        )
        .await
    {
        Ok(location) => see_other(&location, &session_cookies(p, &logged_in)),
        Err(e) => error_as_page(e),
    }
}

/// Runs a client-authenticated endpoint: reads the form and any Basic
/// credentials, calls `run`, and answers uncacheably (RFC 6749 §5.1, and
/// RFC 7662 §2.2 by reference).
async fn client_endpoint<T, R: IntoResponse>(
    form: Result<Form<T>, FormRejection>,
    headers: &HeaderMap,
    run: impl AsyncFnOnce(T, Option<BasicCredentials>) -> Result<R, IdentityError>,
) -> Response {
    let result = async {
        let (params, basic) = client_request(form, headers)?;
        run(params, basic).await
    };
    uncacheable(match result.await {
        Ok(answer) => answer.into_response(),
        Err(e) => e.into_response(),
    })
}

/// `response` marked never to be stored: it may carry credentials.
fn uncacheable(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    headers.insert(PRAGMA, axum::http::HeaderValue::from_static("no-cache"));
    response
}

/// POST /oauth2/register (RFC 7591), routed only when turned on: 201 and
/// the client, with its secret this once. A body over the bound is 413;
/// one that is not the metadata's JSON is `invalid_client_metadata`.
pub async fn register_client(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    json: Result<Json<ClientMetadata>, JsonRejection>,
) -> Response {
    let metadata = match json {
        Ok(Json(metadata)) => Ok(metadata),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return rejection.into_response();
        }
        Err(rejection) => Err(IdentityError::InvalidClientMetadata(rejection.body_text())),
    };
    uncacheable(
        match p.register_client(bearer(&headers), metadata, &meta).await {
            Ok(client) => (StatusCode::CREATED, Json(client)).into_response(),
            Err(e) => e.into_response(),
        },
    )
}

/// POST /token.
pub async fn token(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<TokenParams>, FormRejection>,
) -> Response {
    client_endpoint(form, &headers, async |params, basic| {
        p.token(params, basic, &meta).await.map(Json)
    })
    .await
}

/// POST /revoke (RFC 7009): 200 with an empty body whatever the token was.
pub async fn revoke(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    client_endpoint(form, &headers, async |request, basic| {
        p.revoke(&request, basic, &meta)
            .await
            .map(|()| StatusCode::OK)
    })
    .await
}

/// POST /introspect (RFC 7662).
pub async fn introspect(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, FormRejection>,
) -> Response {
    client_endpoint(form, &headers, async |request, basic| {
        p.introspect(&request, basic, &meta).await.map(Json)
    })
    .await
}

/// GET or POST /userinfo with a bearer access token.
pub async fn userinfo(State(p): AppState, meta: Origin, headers: HeaderMap) -> Response {
    match p.userinfo(bearer(&headers), &meta).await {
        Ok(info) => Json(info).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct VerifyRequest {
    token: String,
    aud: String,
    /// A client may authenticate in the body instead of with Basic.
    #[serde(flatten)]
    client: ClientAuthParams,
}

/// POST /verify `{"token","aud"}` by an authenticated confidential client:
/// the original design's helper for services that cannot verify JWTs
/// themselves.
pub async fn verify(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    body: Result<Json<VerifyRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(request)) = body else {
        let e =
            IdentityError::InvalidRequest("body must be JSON {\"token\": …, \"aud\": …}".into());
        return e.into_response();
    };
    let Ok(basic) = basic_credentials(&headers) else {
        return IdentityError::InvalidClient { basic: true }.into_response();
    };
    match p
        .verify_for_client(&request.client, basic, &request.token, &request.aud, &meta)
        .await
    {
        Ok(claims) => Json(json!({"valid": true, "claims": &*claims})).into_response(),
        Err(e) => match e.rejection_code() {
            Some(code) => Json(json!({"valid": false, "error": code})).into_response(),
            None => e.into_response(),
        },
    }
}

/// Ends the SSO session and goes where the plan says.
async fn sign_out(
    p: &Provider,
    headers: &HeaderMap,
    meta: &echo_edge::Origin,
    redirect: Option<String>,
) -> Response {
    let secure = p.config().secure_cookies();
    let name = cookie_name(secure, SSO_COOKIE);
    if let Err(e) = p.end_session(cookie(headers, &name), meta).await {
        return error_as_page(e);
    }
    let expired = set_cookie(secure, &name, "", "Lax", 0);
    match redirect {
        Some(location) => see_other(&location, &[expired]),
        None => {
            let mut response = render(StatusCode::OK, &SignedOutPage);
            add_cookies(&mut response, &[expired]);
            response
        }
    }
}

/// GET /logout: with a valid `id_token_hint` the client asked for it, so
/// sign out at once; otherwise ask the user to confirm (CSRF-protected).
pub async fn logout(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    params: Result<Query<LogoutParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(params)) = params else {
        return error_page(
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The logout request is malformed.",
        );
    };
    let sso = sso_cookie(&p, &headers);
    let session_user = match p.session_user(sso).await {
        Ok(session) => session.map(|(user, _)| user.id),
        Err(e) => return error_as_page(e),
    };
    let plan = match p.plan_logout(&params, session_user.as_deref()).await {
        Ok(plan) => plan,
        Err(e) => return error_as_page(e),
    };
    if plan.confirmed {
        return sign_out(&p, &headers, &meta, plan.redirect).await;
    }
    let (nonce, set) = csrf_nonce(&p, &headers);
    let mut response = render(
        StatusCode::OK,
        &LogoutPage {
            csrf: p.csrf_token(&nonce),
            hidden: hidden_fields(&params),
        },
    );
    add_cookies(&mut response, &set.into_iter().collect::<Vec<_>>());
    response
}

#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    csrf: Option<String>,
    #[serde(flatten)]
    params: LogoutParams,
}

/// POST /logout: the confirmation form.
pub async fn logout_confirmed(
    State(p): AppState,
    meta: Origin,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    let form = match checked_form(&p, &headers, form, "logout form", |f| f.csrf.as_deref()) {
        Ok(form) => form,
        Err(refused) => return refused,
    };
    // The user confirmed with a CSRF-checked form: whoever the hint names.
    match p.plan_logout(&form.params, None).await {
        Ok(plan) => sign_out(&p, &headers, &meta, plan.redirect).await,
        Err(e) => error_as_page(e),
    }
}
