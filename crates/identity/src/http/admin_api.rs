//! The admin API, `/admin/v1/…`: users, clients, keys and invitations as
//! JSON, for operators' tools and `echod user|client … --server URL`.
//!
//! Every request carries a bearer access token for audience `identity`
//! with scope `echo.admin` ([`Provider::admin_caller`]); every change is
//! audited with the caller as actor. Errors are RFC 9457 problems. Lists
//! are paged (`limit`, at most [`admin::MAX_PAGE_SIZE`], and the opaque `cursor`
//! of the previous page's `next_cursor`). A user or client carries an
//! `ETag`; changing one needs `If-Match` with it (RFC 9110 §13.1.1):
//! 428 without, 412 when it changed since. Bearer tokens, never cookies,
//! authenticate here, so there is nothing for a cross-site form to ride on
//! (no CSRF token needed).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_MATCH};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use echo_crypto::Algorithm;
use echo_crypto::secret::{b64url, sha256};
use echo_edge::Origin;
use echo_identity_store::{Client, User};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::request::bearer;
use crate::admin::{self, ActingAs, ClientSecret, NewClient, NewUser, Page, Registration};
use crate::keys::{KeyAdmin, KeyInfo};
use crate::mfa::MfaState;
use crate::user_state::{UserState, change_state, find_user};
use crate::{IdentityError, Provider, lockout, mfa};

type AppState = State<Arc<Provider>>;
type ApiResult = Result<Response, ApiError>;

/// Page size when the caller names none.
const DEFAULT_PAGE_SIZE: u32 = 50;

/// An [`IdentityError`] answered as a problem.
pub struct ApiError(IdentityError);

impl<E: Into<IdentityError>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.0.into_problem_response()
    }
}

fn bad(what: &str, e: impl std::fmt::Display) -> IdentityError {
    IdentityError::BadInput(format!("malformed {what}: {e}"))
}

fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, IdentityError> {
    json.map(|Json(t)| t)
        .map_err(|e| bad("body", e.body_text()))
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, IdentityError> {
    q.map(|Query(t)| t).map_err(|e| bad("query", e.body_text()))
}

fn path(p: Result<Path<String>, PathRejection>) -> Result<String, IdentityError> {
    p.map(|Path(t)| t).map_err(|e| bad("path", e.body_text()))
}

/// The admin API's caller ([`Provider::admin_caller`]: a bearer token for
/// audience `identity` with scope `echo.admin`), the actor of what the
/// request changes. Extracted before anything else of the request is
/// read, so a refused caller learns nothing of the request's other
/// faults.
pub struct AdminCaller(pub ActingAs);

impl FromRequestParts<Arc<Provider>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        p: &Arc<Provider>,
    ) -> Result<Self, Self::Rejection> {
        let origin = Origin::from_request_parts(parts, p)
            .await
            .unwrap_or_else(|never| match never {});
        Ok(AdminCaller(
            p.admin_caller(bearer(&parts.headers), &origin).await?,
        ))
    }
}

/// An update's `If-Match` (RFC 9110 §13.1.1), checked against the
/// resource as it is now with [`IfMatch::check`].
pub struct IfMatch(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(IfMatch(parts.headers.get(IF_MATCH).cloned()))
    }
}

/// A strong ETag: the hash of the representation.
fn etag_of<T: Serialize>(view: &T) -> String {
    let json = serde_json::to_vec(view).unwrap_or_default();
    format!("\"{}\"", &b64url(&sha256(&json))[..22])
}

impl IfMatch {
    /// RFC 9110 §13.1.1: an update needs `If-Match` naming the current
    /// ETag (or `*`): 428 without, 412 when `current` changed since.
    fn check<T: Serialize>(&self, current: &T) -> Result<(), IdentityError> {
        let Some(value) = &self.0 else {
            return Err(IdentityError::PreconditionRequired);
        };
        let value = value
            .to_str()
            .map_err(|_| IdentityError::PreconditionFailed)?;
        let etag = etag_of(current);
        let matches = value
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag == etag);
        if matches {
            Ok(())
        } else {
            Err(IdentityError::PreconditionFailed)
        }
    }
}

/// `view` as JSON with its ETag, not cached.
fn tagged<T: Serialize>(status: StatusCode, view: &T) -> Response {
    tagged_as(status, view, view)
}

/// `body` as JSON with the ETag of `resource`, the part of it that an
/// update changes (`body` adds what is answered once, or is not edited).
fn tagged_as<R: Serialize, B: Serialize>(status: StatusCode, resource: &R, body: &B) -> Response {
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(etag) = HeaderValue::from_str(&etag_of(resource)) {
        headers.insert(ETAG, etag);
    }
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A page of `T`s answered as views `V`, not cached.
fn listed<T, V: Serialize + From<T>>(page: Page<T>) -> Response {
    let list = List {
        items: page.items.into_iter().map(V::from).collect::<Vec<V>>(),
        next_cursor: page.next,
    };
    ([(CACHE_CONTROL, "no-store")], Json(list)).into_response()
}

/// One page of a list.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    pub items: Vec<T>,
    /// Give it as `cursor` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Users only: username or email contains this, in any case.
    #[param(max_length = 256)]
    search: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Items per page.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

/// A user as the API shows it (never the password hash).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub state: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            username: u.username,
            email: u.email,
            state: u.state,
            roles: u.roles,
            created_at: u.created_at,
        }
    }
}

/// A client as the API shows it (never a secret or its hash).
#[derive(Serialize, ToSchema)]
pub struct ClientView {
    pub id: String,
    /// `confidential`, `public` or `private_key_jwt`.
    pub auth: &'static str,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub allow_no_pkce: bool,
    pub created_at: i64,
}

impl From<Client> for ClientView {
    fn from(c: Client) -> Self {
        ClientView {
            auth: if c.jwks.is_some() {
                "private_key_jwt"
            } else if c.is_public() {
                "public"
            } else {
                "confidential"
            },
            id: c.id,
            redirect_uris: c.redirect_uris,
            post_logout_redirect_uris: c.post_logout_redirect_uris,
            grants: c.grant_types,
            audiences: c.audiences,
            scopes: c.scopes,
            allow_no_pkce: c.allow_no_pkce,
            created_at: c.created_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct KeyView {
    pub kid: String,
    pub alg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    pub state: &'static str,
    pub created_at: i64,
    pub activates_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpublished_at: Option<i64>,
}

impl From<KeyInfo> for KeyView {
    fn from(k: KeyInfo) -> Self {
        KeyView {
            kid: k.kid,
            alg: k.alg,
            audience: k.audience,
            state: k.state.as_str(),
            created_at: k.created_at,
            activates_at: k.activates_at,
            retires_at: k.retires_at,
            unpublished_at: k.unpublished_at,
        }
    }
}

/// `params` of a list without search (only users have one).
fn unsearchable(params: ListParams) -> Result<ListParams, IdentityError> {
    match params.search {
        Some(_) => Err(IdentityError::BadInput("only users have a search".into())),
        None => Ok(params),
    }
}

fn page_limit(params: &ListParams) -> u32 {
    params.limit.unwrap_or(DEFAULT_PAGE_SIZE)
}

/// GET /admin/v1/users
#[utoipa::path(
    get, path = "/admin/v1/users", params(ListParams), responses(
        (status = 200, description = "a page of users", body = List<UserView>),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list_users(
    State(p): AppState,
    _caller: AdminCaller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    let params = query(params)?;
    let page = admin::list_users(
        &*p.store,
        params.search.as_deref(),
        params.cursor.as_deref(),
        page_limit(&params),
    )
    .await?;
    Ok(listed::<_, UserView>(page))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    username: String,
    password: String,
    email: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// POST /admin/v1/users: an active user with a password.
#[utoipa::path(
    post, path = "/admin/v1/users", request_body = NewUserBody, responses(
        (status = 201, description = "the user", body = UserView),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn create_user(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    json: Result<Json<NewUserBody>, JsonRejection>,
) -> ApiResult {
    let new = body(json)?;
    let user = admin::add_user(
        &*p.store,
        &audit,
        &*p.clock,
        NewUser {
            username: new.username,
            password: new.password,
            email: new.email,
            roles: new.roles,
        },
    )
    .await?;
    Ok(tagged(StatusCode::CREATED, &UserView::from(user)))
}

/// A user's second factor.
#[derive(Serialize, ToSchema)]
pub struct MfaView {
    /// `none`, `pending` (enrolment not confirmed) or `totp`.
    pub state: &'static str,
    /// With `totp`: recovery codes not used yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_codes_left: Option<i64>,
}

impl From<MfaState> for MfaView {
    fn from(state: MfaState) -> Self {
        let (state, recovery_codes_left) = match state {
            MfaState::None => ("none", None),
            MfaState::Pending => ("pending", None),
            MfaState::Totp {
                recovery_codes_left,
            } => ("totp", Some(recovery_codes_left)),
        };
        MfaView {
            state,
            recovery_codes_left,
        }
    }
}

/// A user's lockout now, under the server's policy.
#[derive(Serialize, ToSchema)]
pub struct LockoutView {
    /// Recent consecutive failed sign-ins.
    pub failures: i64,
    /// Seconds the account stays locked, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_for_seconds: Option<i64>,
}

/// One user with their second factor and lockout (not part of the ETag,
/// which covers what `PATCH` changes).
#[derive(Serialize, ToSchema)]
pub struct UserDetail {
    #[serde(flatten)]
    pub user: UserView,
    pub mfa: MfaView,
    pub lockout: LockoutView,
}

/// GET /admin/v1/users/{username}
#[utoipa::path(
    get, path = "/admin/v1/users/{name}", params(("name" = String, Path, description = "the username")), responses(
        (status = 200, description = "the user", body = UserDetail),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn get_user(
    State(p): AppState,
    _caller: AdminCaller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let user = find_user(&*p.store, &path(name)?).await?;
    let mfa = mfa::mfa_state(&*p.store, &user.id).await?;
    let lockout =
        lockout::lockout_status(&*p.store, &p.config().lockout, &*p.clock, &user.id).await?;
    let detail = UserDetail {
        user: user.into(),
        mfa: mfa.into(),
        lockout: LockoutView {
            failures: lockout.failures,
            locked_for_seconds: lockout.locked_for,
        },
    };
    Ok(tagged_as(StatusCode::OK, &detail.user, &detail))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChanges {
    /// Replaces the user's roles.
    roles: Option<Vec<String>>,
    /// `active`, `suspended` or `deleted`, as the user state machine allows.
    state: Option<String>,
    /// With `state: active`: the password an invited user starts with.
    password: Option<String>,
}

/// PATCH /admin/v1/users/{username} (If-Match): roles and state.
#[utoipa::path(
    patch, path = "/admin/v1/users/{name}", params(("name" = String, Path, description = "the username")), request_body = UserChanges, responses(
        (status = 200, description = "the user", body = UserView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "changed since read", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn update_user(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    if_match: IfMatch,
    name: Result<Path<String>, PathRejection>,
    json: Result<Json<UserChanges>, JsonRejection>,
) -> ApiResult {
    let name = path(name)?;
    let changes = body(json)?;
    let current = find_user(&*p.store, &name).await?;
    if_match.check(&UserView::from(current))?;
    let state = changes
        .state
        .as_deref()
        .map(str::parse::<UserState>)
        .transpose()?;
    if changes.password.is_some() && state != Some(UserState::Active) {
        return Err(
            IdentityError::BadInput("a password is only taken with state active".into()).into(),
        );
    }
    if let Some(roles) = changes.roles {
        admin::set_roles(&*p.store, &audit, &name, roles).await?;
    }
    match state {
        Some(UserState::Active) => {
            admin::activate_user(&*p.store, &audit, &*p.clock, &name, changes.password).await?;
        }
        Some(to) => {
            change_state(&*p.store, &audit, &*p.clock, &name, to).await?;
        }
        None => {}
    }
    let user = find_user(&*p.store, &name).await?;
    Ok(tagged(StatusCode::OK, &UserView::from(user)))
}

/// DELETE /admin/v1/users/{username}: the user moves to state `deleted`
/// (the record stays, unusable); sessions and refresh tokens end.
#[utoipa::path(
    delete, path = "/admin/v1/users/{name}", params(("name" = String, Path, description = "the username")), responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn delete_user(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let name = path(name)?;
    change_state(&*p.store, &audit, &*p.clock, &name, UserState::Deleted).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// POST /admin/v1/users/{username}/unlock: forgets failed sign-ins.
#[utoipa::path(
    post, path = "/admin/v1/users/{name}/unlock", params(("name" = String, Path, description = "the username")), responses(
        (status = 204, description = "unlocked"),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn unlock_user(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    lockout::unlock_user(&*p.store, &audit, &path(name)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// POST /admin/v1/users/{username}/reset-mfa: removes TOTP and recovery
/// codes.
#[utoipa::path(
    post, path = "/admin/v1/users/{name}/reset-mfa", params(("name" = String, Path, description = "the username")), responses(
        (status = 204, description = "removed"),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn reset_user_mfa(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    mfa::reset_mfa(&*p.store, &audit, &path(name)?).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// One live SSO session of a user, as the admin console lists it.
#[derive(Serialize, ToSchema)]
pub struct UserSessionView {
    pub user_agent: String,
    pub address: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

/// An application holding a user's refresh tokens.
#[derive(Serialize, ToSchema)]
pub struct UserAppView {
    pub client_id: String,
    pub tokens: i64,
    pub last_used_at: i64,
}

/// A user's live SSO sessions and the applications holding their refresh
/// tokens.
#[derive(Serialize, ToSchema)]
pub struct UserSessionsView {
    pub sessions: Vec<UserSessionView>,
    pub apps: Vec<UserAppView>,
}

/// GET /admin/v1/users/{username}/sessions
#[utoipa::path(
    get, path = "/admin/v1/users/{name}/sessions", params(("name" = String, Path, description = "the username")), responses(
        (status = 200, description = "the user's sessions and applications", body = UserSessionsView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn user_sessions(
    State(p): AppState,
    _caller: AdminCaller,
    name: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let user = find_user(&*p.store, &path(name)?).await?;
    let view = p.account_sessions(&user, None).await?;
    let sessions = UserSessionsView {
        sessions: view
            .sessions
            .into_iter()
            .map(|s| UserSessionView {
                user_agent: s.user_agent,
                address: s.address,
                created_at: s.created_at,
                last_seen_at: s.last_seen_at,
            })
            .collect(),
        apps: view
            .apps
            .into_iter()
            .map(|a| UserAppView {
                client_id: a.client_id,
                tokens: a.tokens,
                last_used_at: a.last_used_at,
            })
            .collect(),
    };
    Ok(([(CACHE_CONTROL, "no-store")], Json(sessions)).into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationBody {
    username: String,
    email: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// An invited user, and whether the invitation went out by mail.
#[derive(Serialize, ToSchema)]
struct InvitedUser {
    #[serde(flatten)]
    user: UserView,
    /// Mailed when the registration policy invites by mail, SMTP is set
    /// up and the user has an address; else the user waits for `PATCH`
    /// with `state: active` and a password.
    invitation_mailed: bool,
}

/// POST /admin/v1/invitations: a user in state `invited`, without a
/// password, mailed a link to choose one (when mail and the policy allow),
/// else activated later by an administrator.
#[utoipa::path(
    post, path = "/admin/v1/invitations", request_body = InvitationBody, responses(
        (status = 201, description = "the invited user", body = InvitedUser),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn invite(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    origin: Origin,
    json: Result<Json<InvitationBody>, JsonRejection>,
) -> ApiResult {
    let new = body(json)?;
    let user = admin::invite_user(
        &*p.store,
        &audit,
        &*p.clock,
        new.username,
        new.email,
        new.roles,
    )
    .await?;
    let mailed = p.send_invitation(&user, &audit.actor, &origin).await?;
    let invited = InvitedUser {
        user: user.into(),
        invitation_mailed: mailed,
    };
    Ok(tagged_as(StatusCode::CREATED, &invited.user, &invited))
}

/// GET /admin/v1/invitations: pending invitations (invited by an
/// administrator, no password chosen yet), in username order.
#[utoipa::path(
    get, path = "/admin/v1/invitations", params(ListParams), responses(
        (status = 200, description = "a page of invited users", body = List<UserView>),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list_invitations(
    State(p): AppState,
    _caller: AdminCaller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    let params = unsearchable(query(params)?)?;
    let page =
        admin::list_invitations(&*p.store, params.cursor.as_deref(), page_limit(&params)).await?;
    Ok(listed::<_, UserView>(page))
}

/// GET /admin/v1/clients
#[utoipa::path(
    get, path = "/admin/v1/clients", params(ListParams), responses(
        (status = 200, description = "a page of clients", body = List<ClientView>),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list_clients(
    State(p): AppState,
    _caller: AdminCaller,
    params: Result<Query<ListParams>, QueryRejection>,
) -> ApiResult {
    let params = unsearchable(query(params)?)?;
    let page =
        admin::list_clients(&*p.store, params.cursor.as_deref(), page_limit(&params)).await?;
    Ok(listed::<_, ClientView>(page))
}

/// The client fields a request sets.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationBody {
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_no_pkce: bool,
}

impl From<RegistrationBody> for Registration {
    fn from(b: RegistrationBody) -> Self {
        Registration {
            redirect_uris: b.redirect_uris,
            post_logout_redirect_uris: b.post_logout_redirect_uris,
            grants: b.grants,
            audiences: b.audiences,
            scopes: b.scopes,
            allow_no_pkce: b.allow_no_pkce,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewClientBody {
    id: String,
    /// `client_secret` (a generated secret, answered once, or the one
    /// given as `client_secret`), `public` or `private_key_jwt` (with
    /// `jwks`).
    auth: String,
    /// With `client_secret`: the secret to use (at least 32 characters)
    /// instead of a generated one; never answered back.
    #[schema(min_length = 32)]
    client_secret: Option<String>,
    /// The public keys of a `private_key_jwt` client: a JWK Set.
    #[schema(value_type = Option<Object>)]
    jwks: Option<serde_json::Value>,
    // The registration's fields, spelled out: serde cannot refuse unknown
    // fields beside a flattened struct.
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    post_logout_redirect_uris: Vec<String>,
    #[serde(default)]
    grants: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    allow_no_pkce: bool,
}

#[derive(Serialize, ToSchema)]
struct CreatedClient {
    #[serde(flatten)]
    client: ClientView,
    /// The generated secret: shown this once, stored only as a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
}

/// POST /admin/v1/clients
#[utoipa::path(
    post, path = "/admin/v1/clients", request_body = NewClientBody, responses(
        (status = 201, description = "the client, with a generated secret once", body = CreatedClient),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn create_client(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    json: Result<Json<NewClientBody>, JsonRejection>,
) -> ApiResult {
    let new = body(json)?;
    let secret = match (new.auth.as_str(), new.jwks) {
        ("client_secret", None) => match new.client_secret {
            Some(given) => ClientSecret::Provided(given),
            None => ClientSecret::Generate,
        },
        (_, _) if new.client_secret.is_some() => {
            return Err(IdentityError::BadInput(
                "client_secret is only for auth client_secret".into(),
            )
            .into());
        }
        ("public", None) => ClientSecret::Public,
        ("private_key_jwt", Some(jwks)) => ClientSecret::PrivateKeyJwt(jwks.to_string()),
        ("private_key_jwt", None) => {
            return Err(IdentityError::BadInput("private_key_jwt needs jwks".into()).into());
        }
        (_, Some(_)) => {
            return Err(IdentityError::BadInput("jwks is only for private_key_jwt".into()).into());
        }
        (other, None) => {
            return Err(IdentityError::BadInput(format!(
                "unknown auth {other:?}: use client_secret, public or private_key_jwt"
            ))
            .into());
        }
    };
    let generated = admin::add_client(
        &*p.store,
        &audit,
        &*p.clock,
        NewClient {
            id: new.id.clone(),
            secret,
            redirect_uris: new.redirect_uris,
            grants: new.grants,
            audiences: new.audiences,
            scopes: new.scopes,
            post_logout_redirect_uris: new.post_logout_redirect_uris,
            allow_no_pkce: new.allow_no_pkce,
        },
    )
    .await?;
    let client = admin::find_client(&*p.store, &new.id).await?;
    let created = CreatedClient {
        client: client.into(),
        client_secret: generated,
    };
    Ok(tagged_as(StatusCode::CREATED, &created.client, &created))
}

/// GET /admin/v1/clients/{id}
#[utoipa::path(
    get, path = "/admin/v1/clients/{id}", params(("id" = String, Path, description = "the client id")), responses(
        (status = 200, description = "the client", body = ClientView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn get_client(
    State(p): AppState,
    _caller: AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let client = admin::find_client(&*p.store, &path(id)?).await?;
    Ok(tagged(StatusCode::OK, &ClientView::from(client)))
}

/// PUT /admin/v1/clients/{id} (If-Match): replaces the registration.
#[utoipa::path(
    put, path = "/admin/v1/clients/{id}", params(("id" = String, Path, description = "the client id")), request_body = RegistrationBody, responses(
        (status = 200, description = "the client", body = ClientView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 412, description = "changed since read", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 428, description = "If-Match missing", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn update_client(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    if_match: IfMatch,
    id: Result<Path<String>, PathRejection>,
    json: Result<Json<RegistrationBody>, JsonRejection>,
) -> ApiResult {
    let id = path(id)?;
    let registration = body(json)?;
    let current = admin::find_client(&*p.store, &id).await?;
    if_match.check(&ClientView::from(current))?;
    let client = admin::update_client(&*p.store, &audit, &id, registration.into()).await?;
    p.clients.reload(&*p.store, &id, p.clock.now()).await?;
    Ok(tagged(StatusCode::OK, &ClientView::from(client)))
}

/// DELETE /admin/v1/clients/{id}: the client and its tokens.
#[utoipa::path(
    delete, path = "/admin/v1/clients/{id}", params(("id" = String, Path, description = "the client id")), responses(
        (status = 204, description = "deleted"),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn delete_client(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    id: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = path(id)?;
    admin::delete_client(&*p.store, &audit, &*p.clock, &id).await?;
    p.clients.reload(&*p.store, &id, p.clock.now()).await?;
    p.forget_revocation_answers();
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecretBody {
    /// How long the old secret keeps working (default a day).
    overlap_seconds: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct RotatedSecret {
    client_secret: String,
    previous_secret_valid_for: i64,
}

/// POST /admin/v1/clients/{id}/secret: a new generated secret, answered
/// once; the old one works for `overlap_seconds` more.
#[utoipa::path(
    post, path = "/admin/v1/clients/{id}/secret", params(("id" = String, Path, description = "the client id")), request_body = RotateSecretBody, responses(
        (status = 200, description = "the new secret, once", body = RotatedSecret),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn rotate_client_secret(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    id: Result<Path<String>, PathRejection>,
    json: Result<Json<RotateSecretBody>, JsonRejection>,
) -> ApiResult {
    let id = path(id)?;
    let overlap = body(json)?.overlap_seconds.unwrap_or(24 * 60 * 60);
    let secret = admin::rotate_client_secret(&*p.store, &audit, &*p.clock, &id, overlap).await?;
    p.clients.reload(&*p.store, &id, p.clock.now()).await?;
    let rotated = RotatedSecret {
        client_secret: secret,
        previous_secret_valid_for: overlap,
    };
    Ok(([(CACHE_CONTROL, "no-store")], Json(rotated)).into_response())
}

/// The key operations as `audit`'s actor.
fn key_admin<'a>(p: &'a Provider, audit: &'a ActingAs) -> KeyAdmin<'a> {
    KeyAdmin {
        audit,
        actor: &audit.actor,
        ..p.key_admin()
    }
}

/// GET /admin/v1/keys: every signing key, in order of activation.
#[utoipa::path(
    get, path = "/admin/v1/keys", responses(
        (status = 200, description = "every signing key", body = List<KeyView>),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn list_keys(State(p): AppState, _caller: AdminCaller) -> ApiResult {
    let keys = Page {
        items: p.key_admin().list().await?,
        next: None,
    };
    Ok(listed::<_, KeyView>(keys))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKeysBody {
    /// `EdDSA`, `ES256` or `RS256`; default every algorithm in use.
    alg: Option<String>,
    /// Scope the new key to this audience.
    audience: Option<String>,
}

/// POST /admin/v1/keys/rotate: successors, published before they sign.
#[utoipa::path(
    post, path = "/admin/v1/keys/rotate", request_body = RotateKeysBody, responses(
        (status = 201, description = "the new keys", body = Vec<KeyView>),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn rotate_keys(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    json: Result<Json<RotateKeysBody>, JsonRejection>,
) -> ApiResult {
    let request = body(json)?;
    let alg = request
        .alg
        .as_deref()
        .map(|name| {
            Algorithm::parse(name)
                .map_err(|_| IdentityError::BadInput(format!("unknown algorithm {name:?}")))
        })
        .transpose()?;
    let keys = key_admin(&p, &audit)
        .rotate(alg, request.audience.as_deref())
        .await?;
    p.keys.reload(&*p.store, p.clock.now()).await?;
    let keys: Vec<KeyView> = keys.into_iter().map(Into::into).collect();
    Ok((StatusCode::CREATED, Json(keys)).into_response())
}

/// POST /admin/v1/keys/{kid}/retire: stops signing, stays published until
/// its tokens expired.
#[utoipa::path(
    post, path = "/admin/v1/keys/{kid}/retire", params(("kid" = String, Path, description = "the key id")), responses(
        (status = 200, description = "the key", body = KeyView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn retire_key(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    kid: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let key = key_admin(&p, &audit).retire(&path(kid)?).await?;
    p.keys.reload(&*p.store, p.clock.now()).await?;
    Ok(Json(KeyView::from(key)).into_response())
}

/// POST /admin/v1/keys/{kid}/revoke: unpublished at once; tokens it signed
/// stop verifying.
#[utoipa::path(
    post, path = "/admin/v1/keys/{kid}/revoke", params(("kid" = String, Path, description = "the key id")), responses(
        (status = 200, description = "the key", body = KeyView),
        (status = 404, description = "not found", body = ProblemDoc, content_type = "application/problem+json"),
        (status = 409, description = "conflict", body = ProblemDoc, content_type = "application/problem+json"),
        Refusals
    ),
    security(("bearer" = []))
)]
pub async fn revoke_key(
    State(p): AppState,
    AdminCaller(audit): AdminCaller,
    kid: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let revocation = key_admin(&p, &audit).revoke(&path(kid)?).await?;
    p.keys.reload(&*p.store, p.clock.now()).await?;
    Ok(Json(KeyView::from(revocation.revoked)).into_response())
}

/// The refusals every operation may answer, before it looks at its
/// resource.
#[derive(utoipa::IntoResponses)]
#[expect(
    dead_code,
    reason = "describes answers for the OpenAPI document; they are built as Problem"
)]
pub enum Refusals {
    #[response(
        status = 400,
        description = "malformed request",
        content_type = "application/problem+json"
    )]
    Malformed(ProblemDoc),
    #[response(
        status = 401,
        description = "no valid token",
        content_type = "application/problem+json"
    )]
    Unauthenticated(ProblemDoc),
    #[response(
        status = 403,
        description = "the token lacks echo.admin",
        content_type = "application/problem+json"
    )]
    Forbidden(ProblemDoc),
}

/// An RFC 9457 problem, as every error of the API is answered.
#[derive(Serialize, ToSchema)]
pub struct ProblemDoc {
    /// `urn:echo:problem:<code>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

/// The admin API's OpenAPI 3.1 document apart from its paths: those come
/// from the handlers as [`router`] routes them.
#[derive(OpenApi)]
#[openapi(
    info(title = "Echo admin API", description = "docs/admin-api.md"),
    components(schemas(ProblemDoc)),
    modifiers(&BearerAuth)
)]
struct AdminApiDoc;

/// The bearer scheme every operation names.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The admin API's routes, each taken from its handler's
/// `#[utoipa::path]` by `routes!`, with the OpenAPI document gathered from
/// the same attributes: a handler is routed where its document says and
/// every route is in the document, so the two cannot drift.
fn documented_routes() -> OpenApiRouter<Arc<Provider>> {
    // One `routes!` per path: axum takes each path once, with its methods.
    OpenApiRouter::with_openapi(AdminApiDoc::openapi())
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(unlock_user))
        .routes(routes!(reset_user_mfa))
        .routes(routes!(user_sessions))
        .routes(routes!(list_invitations, invite))
        .routes(routes!(list_clients, create_client))
        .routes(routes!(get_client, update_client, delete_client))
        .routes(routes!(rotate_client_secret))
        .routes(routes!(list_keys))
        .routes(routes!(rotate_keys))
        .routes(routes!(retire_key))
        .routes(routes!(revoke_key))
}

/// The admin API, `/admin/v1/…`, and its document at
/// `GET /admin/v1/openapi.json` (public: it holds no data).
pub fn router() -> Router<Arc<Provider>> {
    let (routes, document) = documented_routes().split_for_parts();
    let json = Bytes::from(document.to_json().unwrap_or_default());
    let serve_document = move || {
        std::future::ready(([(CONTENT_TYPE, "application/json")], json.clone()).into_response())
    };
    routes
        .route("/admin/v1/openapi.json", get(serve_document))
        // Registrations and users are small: a bound far above them.
        .layer(DefaultBodyLimit::max(64 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation of the document, as `METHOD /path`.
    fn operations(document: &utoipa::openapi::OpenApi) -> Vec<String> {
        let json = serde_json::to_value(document).unwrap();
        let mut found = Vec::new();
        for (path, item) in json["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                found.push(format!("{} {path}", method.to_uppercase()));
            }
        }
        found.sort();
        found
    }

    #[test]
    fn the_document_names_every_admin_operation() {
        let (_, document) = documented_routes().split_for_parts();
        let expected = [
            "DELETE /admin/v1/clients/{id}",
            "DELETE /admin/v1/users/{name}",
            "GET /admin/v1/clients",
            "GET /admin/v1/clients/{id}",
            "GET /admin/v1/invitations",
            "GET /admin/v1/keys",
            "GET /admin/v1/users",
            "GET /admin/v1/users/{name}",
            "GET /admin/v1/users/{name}/sessions",
            "PATCH /admin/v1/users/{name}",
            "POST /admin/v1/clients",
            "POST /admin/v1/clients/{id}/secret",
            "POST /admin/v1/invitations",
            "POST /admin/v1/keys/rotate",
            "POST /admin/v1/keys/{kid}/retire",
            "POST /admin/v1/keys/{kid}/revoke",
            "POST /admin/v1/users",
            "POST /admin/v1/users/{name}/reset-mfa",
            "POST /admin/v1/users/{name}/unlock",
            "PUT /admin/v1/clients/{id}",
        ];
        assert_eq!(operations(&document), expected);
        assert!(
            document
                .components
                .unwrap()
                .security_schemes
                .contains_key("bearer")
        );
    }
}
