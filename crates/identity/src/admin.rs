//! Registering users and clients: what `echod user …`, `echod client …`
//! and the admin API (`http/admin_api.rs`) do, with every operator input
//! validated before anything is stored.
//!
//! Events are audited with actor `cli`; the admin API wraps its sink in
//! [`ActingAs`] so that they name the caller instead.

use std::sync::Arc;

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_crypto::password::hash_password;
use echo_crypto::secret::{
    MIN_CLIENT_SECRET_LEN, b64url, generate_client_secret, hash_client_secret, random_bytes,
};
use echo_edge::{Origin, Reason};
use echo_identity_store::{Client, Store, User};
use url::Url;

use crate::client_auth::parse_client_jwks;
use crate::grant::{GRANT_AUTHORIZATION_CODE, GRANT_CLIENT_CREDENTIALS, Grant, IDENTITY_SERVICE};
use crate::user_state::{UserState, change_state, find_user, state_of};
use crate::{IdentityError, Provider, Result};

/// How a new client authenticates.
#[derive(Debug, Clone)]
pub enum ClientSecret {
    /// The operator supplied one (at least [`MIN_CLIENT_SECRET_LEN`] long).
    Provided(String),
    /// Generate 256 random bits and show them once.
    Generate,
    /// A public client (a SPA or native app): no secret, PKCE only.
    Public,
    /// No secret: the client signs `private_key_jwt` assertions (RFC 7523
    /// §2.2) with a private key whose public half is in this JWK Set (or
    /// single JWK), as JSON.
    PrivateKeyJwt(String),
}

#[derive(Debug, Clone)]
pub struct NewClient {
    pub id: String,
    pub secret: ClientSecret,
    pub redirect_uris: Vec<String>,
    /// Empty: `authorization_code` if there are redirect URIs, else
    /// `client_credentials`.
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub allow_no_pkce: bool,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub password: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
}

fn check_name(kind: &str, value: &str, extra: &[char]) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(&c));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::BadInput(format!(
            "invalid {kind} {value:?}: use 1-64 letters, digits, '.', '_' or '-'"
        )))
    }
}

/// An absolute URI without fragment, over http(s) or a private-use scheme
/// (RFC 8252 §7.1, e.g. `com.example.app:/cb`); never `javascript:` and kin.
pub(crate) fn check_redirect_uri(uri: &str) -> Result<()> {
    let bad = |why: &str| IdentityError::BadInput(format!("malformed redirect URI {uri:?}: {why}"));
    let parsed = Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
    // Compared as written at /authorize but redirected to as parsed: the two
    // must be the same URL (`http:///x` would otherwise send users to `x`).
    if parsed.as_str() != uri {
        return Err(bad(&format!("write it in normal form: {parsed}")));
    }
    if parsed.fragment().is_some() {
        return Err(bad("a fragment is not allowed"));
    }
    match parsed.scheme() {
        "http" | "https" if parsed.host_str().is_some() => Ok(()),
        "http" | "https" => Err(bad("no host")),
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(bad("use http, https or a reverse-domain private scheme")),
    }
}

/// Registers a client; returns the generated secret, shown once.
pub async fn add_client(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    new: NewClient,
) -> Result<Option<String>> {
    check_name("client id", &new.id, &[])?;
    // Tokens of a client carry its id as `sub`; a client named like identity
    // or the audit service could write to other services (and the audit
    // log) as one of Echo's own.
    if [IDENTITY_SERVICE, "audit"].contains(&new.id.as_str()) {
        return Err(IdentityError::BadInput(format!(
            "client id {:?} is reserved",
            new.id
        )));
    }
    let public = matches!(new.secret, ClientSecret::Public);
    let mut registration = Registration {
        redirect_uris: new.redirect_uris,
        post_logout_redirect_uris: new.post_logout_redirect_uris,
        grants: new.grants,
        audiences: new.audiences,
        scopes: new.scopes,
        allow_no_pkce: new.allow_no_pkce,
    };
    if registration.grants.is_empty() {
        registration.grants.push(
            if registration.redirect_uris.is_empty() {
                GRANT_CLIENT_CREDENTIALS
            } else {
                GRANT_AUTHORIZATION_CODE
            }
            .to_owned(),
        );
    }
    let registration = checked_registration(registration, public)?;
    let (mut jwks, mut secret_hash, mut generated) = (None, None, None);
    match new.secret {
        ClientSecret::Provided(secret) if secret.chars().count() < MIN_CLIENT_SECRET_LEN => {
            return Err(IdentityError::BadInput(format!(
                "client secret too short: at least {MIN_CLIENT_SECRET_LEN} characters (or use --generate-secret)"
            )));
        }
        ClientSecret::Provided(secret) => secret_hash = Some(hash_client_secret(&secret)),
        ClientSecret::Generate => {
            let secret = generate_client_secret();
            secret_hash = Some(hash_client_secret(&secret));
            generated = Some(secret);
        }
        ClientSecret::Public => {}
        ClientSecret::PrivateKeyJwt(text) => {
            let set = parse_client_jwks(&text)?;
            jwks = Some(
                serde_json::to_string(&set).map_err(|e| IdentityError::BadInput(e.to_string()))?,
            );
        }
    }
    let client = Client {
        id: new.id,
        secret_hash,
        redirect_uris: registration.redirect_uris,
        grant_types: registration.grants,
        audiences: registration.audiences,
        scopes: registration.scopes,
        post_logout_redirect_uris: registration.post_logout_redirect_uris,
        allow_no_pkce: registration.allow_no_pkce,
        created_at: clock.now(),
        jwks,
        previous_secret_hash: None,
        previous_secret_expires_at: None,
    };
    store.insert_client(&client).await?;
    audit.record(
        AuditEvent::success("admin.client.created")
            .actor("cli")
            .detail("client_id", client.id.as_str())
            .detail("grants", client.grant_types.clone())
            .detail("audiences", client.audiences.clone()),
    );
    Ok(generated)
}

/// What a client may ask for and where users may be sent back to: the part
/// of a registration an operator edits after creating it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub allow_no_pkce: bool,
}

impl Registration {
    /// The registration `client` has now.
    pub fn of(client: &Client) -> Self {
        Registration {
            redirect_uris: client.redirect_uris.clone(),
            post_logout_redirect_uris: client.post_logout_redirect_uris.clone(),
            grants: client.grant_types.clone(),
            audiences: client.audiences.clone(),
            scopes: client.scopes.clone(),
            allow_no_pkce: client.allow_no_pkce,
        }
    }
}

/// Checks a registration for a client (`public`: one without a secret or
/// keys) and returns it with repeated grants removed.
fn checked_registration(mut r: Registration, public: bool) -> Result<Registration> {
    if r.grants.is_empty() {
        return Err(IdentityError::BadInput(
            "a client needs at least one grant".into(),
        ));
    }
    for grant in &r.grants {
        if Grant::parse(grant).is_none() {
            let known: Vec<&str> = Grant::ALL.iter().map(|g| g.as_str()).collect();
            return Err(IdentityError::BadInput(format!(
                "unknown grant {grant:?}: use one of {}",
                known.join(", ")
            )));
        }
    }
    for uri in r.redirect_uris.iter().chain(&r.post_logout_redirect_uris) {
        check_redirect_uri(uri)?;
    }
    for audience in &r.audiences {
        if audience.is_empty() || audience.len() > 256 || audience.contains(char::is_whitespace) {
            return Err(IdentityError::BadInput(format!(
                "invalid audience {audience:?}"
            )));
        }
    }
    for scope in &r.scopes {
        if scope.is_empty()
            || scope.len() > 256
            || scope.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\')
        {
            return Err(IdentityError::BadInput(format!("invalid scope {scope:?}")));
        }
    }
    let lists = [
        &r.redirect_uris,
        &r.post_logout_redirect_uris,
        &r.audiences,
        &r.scopes,
    ];
    if lists.iter().any(|list| list.len() > MAX_REGISTRATION_ITEMS) {
        return Err(IdentityError::BadInput(format!(
            "at most {MAX_REGISTRATION_ITEMS} redirect URIs, audiences or scopes each"
        )));
    }
    let mut seen = Vec::with_capacity(r.grants.len());
    r.grants.retain(|g| {
        let new = !seen.contains(g);
        seen.push(g.clone());
        new
    });
    if r.grants.iter().any(|g| g == GRANT_AUTHORIZATION_CODE) && r.redirect_uris.is_empty() {
        return Err(IdentityError::BadInput(
            "grant authorization_code needs at least one --redirect-uri".into(),
        ));
    }
    if public && r.grants.iter().any(|g| g == GRANT_CLIENT_CREDENTIALS) {
        return Err(IdentityError::BadInput(
            "a public client cannot use client_credentials".into(),
        ));
    }
    if public && r.allow_no_pkce {
        return Err(IdentityError::BadInput(
            "--allow-no-pkce is only for confidential clients".into(),
        ));
    }
    Ok(r)
}

/// Bounds each list of a registration, so one request cannot store an
/// unbounded row.
pub const MAX_REGISTRATION_ITEMS: usize = 64;

/// A client's registration, or [`IdentityError::NotFound`].
pub async fn find_client(store: &dyn Store, client_id: &str) -> Result<Client> {
    store
        .client(client_id)
        .await?
        .ok_or_else(|| IdentityError::NotFound(format!("client {client_id:?}")))
}

/// `echod client update` and `PUT /admin/v1/clients/{id}`: replaces the
/// client's registration with `registration`, checked as at registration.
/// Its secret and keys stay. A running server sees the change within its
/// registration cache's 2 s.
pub async fn update_client(
    store: &dyn Store,
    audit: &dyn AuditSink,
    client_id: &str,
    registration: Registration,
) -> Result<Client> {
    let current = find_client(store, client_id).await?;
    let registration = checked_registration(registration, current.is_public())?;
    let client = Client {
        redirect_uris: registration.redirect_uris,
        post_logout_redirect_uris: registration.post_logout_redirect_uris,
        grant_types: registration.grants,
        audiences: registration.audiences,
        scopes: registration.scopes,
        allow_no_pkce: registration.allow_no_pkce,
        ..current
    };
    if !store.update_client(&client).await? {
        return Err(IdentityError::NotFound(format!("client {client_id:?}")));
    }
    audit.record(
        AuditEvent::success("admin.client.updated")
            .actor("cli")
            .detail("client_id", client_id)
            .detail("grants", client.grant_types.clone())
            .detail("audiences", client.audiences.clone())
            .detail("scopes", client.scopes.clone())
            .detail("redirect_uris", client.redirect_uris.clone()),
    );
    Ok(client)
}

/// `echod client delete` and `DELETE /admin/v1/clients/{id}`: removes the
/// client and revokes its refresh tokens and the access tokens issued with
/// them or its codes. (Its client-credentials tokens are not stored; they
/// end at their `exp`, at most 15 minutes on.)
pub async fn delete_client(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    client_id: &str,
) -> Result<()> {
    if !store.delete_client(client_id, clock.now()).await? {
        return Err(IdentityError::NotFound(format!("client {client_id:?}")));
    }
    audit.record(
        AuditEvent::success("admin.client.deleted")
            .actor("cli")
            .detail("client_id", client_id),
    );
    Ok(())
}

/// The most items one page of a listing holds.
pub const MAX_PAGE_SIZE: u32 = 200;

/// One page of a listing and the cursor of the next, if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Opaque: give it back to get the page after this one.
    pub next: Option<String>,
}

/// The key a cursor stands for (`""` for none): the last key of the
/// previous page, base64url-encoded so that callers treat it as opaque.
fn cursor_key(cursor: Option<&str>) -> Result<String> {
    let Some(cursor) = cursor else {
        return Ok(String::new());
    };
    let bad = || IdentityError::BadInput("malformed cursor".into());
    let bytes = echo_crypto::secret::b64url_decode(cursor).ok_or_else(bad)?;
    String::from_utf8(bytes).map_err(|_| bad())
}

fn page_size(limit: u32) -> Result<u32> {
    if (1..=MAX_PAGE_SIZE).contains(&limit) {
        Ok(limit)
    } else {
        Err(IdentityError::BadInput(format!(
            "limit must be between 1 and {MAX_PAGE_SIZE}"
        )))
    }
}

/// Cuts one extra fetched item off into the next page's cursor.
fn paged<T>(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> &str) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next = if more {
        items.last().map(|last| b64url(key(last).as_bytes()))
    } else {
        None
    };
    Page { items, next }
}

/// Users in username order, `limit` at a time from `cursor`; with
/// `search`, those whose username or email contains it (ignoring case).
pub async fn list_users(
    store: &dyn Store,
    search: Option<&str>,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<User>> {
    let limit = page_size(limit)?;
    if search.is_some_and(|s| s.len() > 256) {
        return Err(IdentityError::BadInput("search text too long".into()));
    }
    let after = cursor_key(cursor)?;
    let users = store
        .users_page(search.filter(|s| !s.is_empty()), &after, limit + 1)
        .await?;
    Ok(paged(users, limit, |u| u.username.as_str()))
}

/// Pending invitations (users invited by an administrator who have not
/// chosen a password yet) in username order, `limit` at a time from
/// `cursor`.
pub async fn list_invitations(
    store: &dyn Store,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<User>> {
    let limit = page_size(limit)?;
    let after = cursor_key(cursor)?;
    let users = store.invitations_page(&after, limit + 1).await?;
    Ok(paged(users, limit, |u| u.username.as_str()))
}

/// Clients in id order, `limit` at a time from `cursor`.
pub async fn list_clients(
    store: &dyn Store,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Client>> {
    let limit = page_size(limit)?;
    let after = cursor_key(cursor)?;
    let clients = store.clients_page(&after, limit + 1).await?;
    Ok(paged(clients, limit, |c| c.id.as_str()))
}

/// An audit sink that records every event with `actor` as its actor, from
/// `origin`: the admin API's caller in place of the command line's `cli`.
pub struct ActingAs {
    pub sink: Arc<dyn AuditSink>,
    pub actor: String,
    pub origin: Origin,
}

impl AuditSink for ActingAs {
    fn record(&self, event: AuditEvent) {
        self.sink
            .record(self.origin.stamp(event.actor(self.actor.clone())));
    }
}

impl Provider {
    /// The caller of the admin API, from its bearer token: an unrevoked
    /// access token for audience `identity` with scope [`ADMIN_SCOPE`],
    /// of a service (a client still registered for it) or of a user who
    /// still is an active admin. Refusals are audited by the gate: 401 for a
    /// missing or invalid token, 403 for one without the right.
    pub async fn admin_caller(&self, bearer: Option<&str>, origin: &Origin) -> Result<ActingAs> {
        let Some(token) = bearer else {
            return Err(self.gate.refuse(Reason::Missing, None, origin).into());
        };
        let caller = self
            .verified_caller(token, IDENTITY_SERVICE, origin)
            .await?;
        if !caller.has_scope(ADMIN_SCOPE) {
            return Err(self.gate.insufficient(&caller, ADMIN_SCOPE).into());
        }
        if caller.is_service() {
            // Still registered for the scope: removing it (or the client)
            // ends the access within the registration cache's 2 s, not at
            // the token's expiry.
            let registered = self
                .clients
                .get(&*self.store, &caller.subject, self.clock.now())
                .await?
                .is_some_and(|c| c.scopes.iter().any(|s| s == ADMIN_SCOPE));
            if !registered {
                return Err(self.gate.insufficient(&caller, ADMIN_SCOPE).into());
            }
        } else {
            let user = self.store.user_by_id(&caller.subject).await?;
            let admin = user.is_some_and(|u| {
                u.state == UserState::Active.as_str() && u.roles.iter().any(|r| r == ADMIN_ROLE)
            });
            if !admin {
                return Err(self.gate.insufficient(&caller, "role admin").into());
            }
        }
        Ok(ActingAs {
            sink: self.audit.clone(),
            actor: caller.subject,
            origin: origin.clone(),
        })
    }
}

/// The scope of the admin API (`/admin/v1/…`, audience `identity`).
pub const ADMIN_SCOPE: &str = "echo.admin";
/// The role a user needs for [`ADMIN_SCOPE`].
pub const ADMIN_ROLE: &str = "admin";

fn has_admin_scope(scope: &str) -> bool {
    scope.split(' ').any(|s| s == ADMIN_SCOPE)
}

/// A user's token may carry [`ADMIN_SCOPE`] only for an admin whose login
/// passed a second factor (`amr`: the code's methods; `None` for a
/// refresh, whose login was checked when its family began — the role is
/// checked again, so removing it ends the scope at the next refresh).
/// A client registered for the scope is not enough: it would make every
/// user who signs in to it an administrator.
pub(crate) fn check_admin_scope(scope: &str, user: &User, amr: Option<&[String]>) -> Result<()> {
    if !has_admin_scope(scope) {
        return Ok(());
    }
    let admin = user.roles.iter().any(|r| r == ADMIN_ROLE);
    let second_factor = amr.is_none_or(|amr| amr.iter().any(|m| m == crate::login::AMR_OTP));
    if admin && second_factor {
        Ok(())
    } else {
        Err(IdentityError::InvalidScope(format!(
            "scope {ADMIN_SCOPE} is only for users with role {ADMIN_ROLE} who signed in with a second factor"
        )))
    }
}

/// Whether a token request's `scope` asks for [`ADMIN_SCOPE`].
pub(crate) fn asks_admin_scope(scope: Option<&str>) -> bool {
    scope.is_some_and(has_admin_scope)
}

impl Provider {
    /// RFC 8693 for the admin console: a client that holds an admin's
    /// access token (the gateway, for a signed-in admin) may trade it for
    /// a token with scope [`ADMIN_SCOPE`] alone, for audience `identity`
    /// (the admin API), when the user is an active admin now and the
    /// sign-in the token descends from (its `auth_time`) passed a second
    /// factor: a live SSO session of the user from that sign-in has `otp`
    /// among its methods, and the user's TOTP credential was confirmed no
    /// later (a credential reset and enrolled again since needs a new
    /// sign-in). The answer's scope, or `invalid_scope`.
    pub(crate) async fn exchanged_admin_scope(
        &self,
        subject: &echo_verify::Claims,
        audience: &str,
    ) -> Result<String> {
        let refused = || {
            IdentityError::InvalidScope(format!(
                "scope {ADMIN_SCOPE} is only exchanged for audience {IDENTITY_SERVICE}, for an \
                 active user with role {ADMIN_ROLE} who signed in with a second factor"
            ))
        };
        let is_user = subject.client_id.as_deref() != Some(subject.sub.as_str());
        let signed_in_at = subject.other.get("auth_time").and_then(|t| t.as_i64());
        let (Some(signed_in_at), true, true) =
            (signed_in_at, is_user, audience == IDENTITY_SERVICE)
        else {
            return Err(refused());
        };
        let Some(user) = self.store.user_by_id(&subject.sub).await? else {
            return Err(refused());
        };
        let admin =
            state_of(&user)? == UserState::Active && user.roles.iter().any(|r| r == ADMIN_ROLE);
        let confirmed_at = self
            .store
            .totp_credential(&user.id)
            .await?
            .and_then(|c| c.confirmed_at);
        let otp_sign_in = self
            .store
            .user_sessions(&user.id, self.clock.now())
            .await?
            .iter()
            .any(|s| {
                s.auth_time == signed_in_at && s.amr.iter().any(|m| m == crate::login::AMR_OTP)
            });
        match confirmed_at {
            Some(confirmed_at) if admin && otp_sign_in && confirmed_at <= signed_in_at => {
                Ok(ADMIN_SCOPE.to_owned())
            }
            _ => Err(refused()),
        }
    }
}

/// `scope` without [`ADMIN_SCOPE`]: what a token exchange may pass on (the
/// admin API acts for the one who holds the token, never for a delegate).
pub(crate) fn without_admin_scope(scope: &str) -> String {
    scope
        .split(' ')
        .filter(|s| !s.is_empty() && *s != ADMIN_SCOPE)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The longest overlap of a secret rotation: 90 days.
pub const MAX_SECRET_OVERLAP: i64 = 90 * 24 * 60 * 60;

/// Gives a client a new generated secret, returned to be shown once. The
/// old secret keeps working for `overlap_seconds` (so deployments can
/// switch without downtime), then only the new one does. Rotating again
/// during an overlap ends the older overlap: only the last two secrets work.
pub async fn rotate_client_secret(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    client_id: &str,
    overlap_seconds: i64,
) -> Result<String> {
    if !(0..=MAX_SECRET_OVERLAP).contains(&overlap_seconds) {
        return Err(IdentityError::BadInput(format!(
            "the overlap must be between 0 and {MAX_SECRET_OVERLAP} seconds"
        )));
    }
    let secret = generate_client_secret();
    let until = clock.now() + overlap_seconds;
    if !store
        .rotate_client_secret(client_id, &hash_client_secret(&secret), until)
        .await?
    {
        return Err(IdentityError::BadInput(format!(
            "client {client_id:?} does not exist or has no secret to rotate"
        )));
    }
    audit.record(
        AuditEvent::success("admin.client.secret_rotated")
            .actor("cli")
            .detail("client_id", client_id)
            .detail("previous_secret_valid_until", until),
    );
    Ok(secret)
}

/// Registers an active user with an argon2id password hash.
pub async fn add_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    new: NewUser,
) -> Result<User> {
    check_profile(&new.username, new.email.as_deref(), &new.roles)?;
    let password_hash = password_hash(new.password).await?;
    let user = user_record(clock, new.username, new.email, new.roles, password_hash);
    insert_user(store, audit, user).await
}

/// `echod user invite`: registers a user in state `invited`, without a
/// password; they cannot log in until activated with one.
pub async fn invite_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
) -> Result<User> {
    check_profile(&username, email.as_deref(), &roles)?;
    let user = User {
        state: UserState::Invited.as_str().to_owned(),
        ..user_record(clock, username, email, roles, String::new())
    };
    insert_user(store, audit, user).await
}

/// `echod user activate NAME [--password-stdin]`: an invited user needs a
/// password to become active; a suspended one keeps theirs unless given one.
pub async fn activate_user(
    store: &dyn Store,
    audit: &dyn AuditSink,
    clock: &dyn Clock,
    username: &str,
    password: Option<String>,
) -> Result<UserState> {
    let user = find_user(store, username).await?;
    state_of(&user)?.check_transition(UserState::Active)?;
    if let Some(password) = password {
        let hash = password_hash(password).await?;
        store.set_user_password(&user.id, &hash).await?;
    }
    change_state(store, audit, clock, username, UserState::Active).await
}

/// `echod user set-roles NAME R…`: replaces the user's roles (they appear
/// in tokens as `roles` from the next token on).
pub async fn set_roles(
    store: &dyn Store,
    audit: &dyn AuditSink,
    username: &str,
    roles: Vec<String>,
) -> Result<Vec<String>> {
    let user = find_user(store, username).await?;
    check_profile(username, None, &roles)?;
    let roles = normalised_roles(roles);
    store.set_user_roles(&user.id, &roles).await?;
    audit.record(
        AuditEvent::success("admin.user.roles_set")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", username)
            .detail("roles", roles.clone()),
    );
    Ok(roles)
}

pub(crate) fn check_profile(username: &str, email: Option<&str>, roles: &[String]) -> Result<()> {
    check_name("username", username, &['@'])?;
    for role in roles {
        check_name("role", role, &[])?;
    }
    if let Some(email) = email
        && (!email.contains('@') || email.contains(char::is_whitespace))
    {
        return Err(IdentityError::BadInput(format!("invalid email {email:?}")));
    }
    Ok(())
}

/// Checks a new password against the policy and hashes it off the async
/// runtime.
async fn password_hash(password: String) -> Result<String> {
    crate::password_policy::check(&password)?;
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| IdentityError::BadInput(e.to_string()))?
        .map_err(IdentityError::from)
}

fn normalised_roles(mut roles: Vec<String>) -> Vec<String> {
    roles.sort();
    roles.dedup();
    roles
}

/// A new active user's row.
pub(crate) fn user_record(
    clock: &dyn Clock,
    username: String,
    email: Option<String>,
    roles: Vec<String>,
    password_hash: String,
) -> User {
    User {
        id: b64url(&random_bytes::<16>()),
        username,
        email,
        password_hash,
        roles: normalised_roles(roles),
        created_at: clock.now(),
        state: UserState::Active.as_str().to_owned(),
        email_verified: false,
    }
}

async fn insert_user(store: &dyn Store, audit: &dyn AuditSink, user: User) -> Result<User> {
    store.insert_user(&user).await?;
    audit.record(
        AuditEvent::success("admin.user.created")
            .actor("cli")
            .detail("user_id", user.id.as_str())
            .detail("username", user.username.as_str())
            .detail("roles", user.roles.clone())
            .detail("state", user.state.as_str()),
    );
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_uris_must_be_absolute_safe_and_fragment_free() {
        for ok in [
            "https://app.test/cb",
            "http://127.0.0.1:8080/callback",
            "com.example.app:/cb",
        ] {
            assert!(check_redirect_uri(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/cb",
            "not a uri",
            "https://app.test/cb#x",
            "javascript:alert(1)",
            "data:text/html,x",
            "http:///x",
        ] {
            assert!(check_redirect_uri(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn echo_admin_needs_the_admin_role_and_a_second_factor() {
        let user = |roles: &[&str]| User {
            id: "u".into(),
            username: "u".into(),
            email: None,
            email_verified: false,
            password_hash: String::new(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            created_at: 0,
            state: "active".into(),
        };
        let otp = ["pwd".to_owned(), "otp".to_owned()];
        let pwd = ["pwd".to_owned()];
        let admin = user(&["admin"]);
        assert!(check_admin_scope("openid echo.admin", &admin, Some(&otp)).is_ok());
        assert!(check_admin_scope("openid echo.admin", &admin, Some(&pwd)).is_err());
        assert!(check_admin_scope("openid echo.admin", &user(&["auditor"]), Some(&otp)).is_err());
        assert!(
            check_admin_scope("openid echo.admin", &admin, None).is_ok(),
            "a refresh"
        );
        assert!(check_admin_scope("openid echo.admin", &user(&[]), None).is_err());
        assert!(check_admin_scope("openid echo.administer", &user(&[]), Some(&pwd)).is_ok());
        assert_eq!(
            without_admin_scope("openid echo.admin profile"),
            "openid profile"
        );
    }

    #[test]
    fn pages_end_with_a_cursor_only_when_more_follow() {
        let page = paged(vec!["a", "b", "c"], 2, |s| *s);
        assert_eq!(page.items, ["a", "b"]);
        let cursor = page.next.expect("more follow");
        assert_eq!(cursor_key(Some(&cursor)).unwrap(), "b");
        assert_eq!(paged(vec!["a", "b"], 2, |s| *s).next, None);
        assert_eq!(cursor_key(None).unwrap(), "");
        assert!(cursor_key(Some("!!")).is_err());
        assert!(page_size(0).is_err() && page_size(MAX_PAGE_SIZE + 1).is_err());
    }

    #[test]
    fn names_are_restricted() {
        assert!(check_name("client id", "svc-a.v2_1", &[]).is_ok());
        assert!(check_name("client id", "", &[]).is_err());
        assert!(check_name("client id", "a b", &[]).is_err());
        assert!(check_name("client id", "<script>", &[]).is_err());
        assert!(check_name("username", "alice@example.test", &['@']).is_ok());
    }
}
