//! The admin console's domain: identity's admin API (`/admin/v1/…`, see
//! docs/admin-api.md) called as the signed-in admin.
//!
//! The gateway holds no administrative right of its own: each call carries
//! a token identity issued by token exchange (RFC 8693) for the admin's
//! session, with scope `echo.admin` and audience `identity`
//! ([`Gateway::admin_token`]), which identity grants only to an active
//! admin whose sign-in passed a second factor. The admin API audits every
//! change with that token's subject, the admin, as actor.
//!
//! Every change comes from a form: CSRF-checked ([`Gateway::check_form`]),
//! and, when it destroys or replaces something ([`ConsoleAction::destructive`]),
//! answered first with a question ([`Outcome::Confirm`]) that the admin
//! confirms by posting the same form again with `confirm=yes`. A refusal
//! of the API (an RFC 9457 problem) becomes [`GatewayError::AdminRefused`]
//! with the problem's words, which the page shows.

use axum::http::header::{AUTHORIZATION, ETAG, IF_MATCH};
use echo_edge::Origin;
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::{GatewayError, Result};

/// The role the console is for.
pub const ADMIN_ROLE: &str = "admin";
/// The longest problem detail a page repeats, in characters.
const DETAIL_CHARS: usize = 300;

/// A user as the admin API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminUser {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub state: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

/// A client as the admin API shows it (never its secret).
#[derive(Debug, Clone, Deserialize)]
pub struct AdminClient {
    pub id: String,
    pub auth: String,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    /// Whether the code flow goes without PKCE (old clients only).
    pub allow_no_pkce: bool,
    pub created_at: i64,
}

/// A signing key as the admin API shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct AdminKey {
    pub kid: String,
    pub alg: String,
    pub audience: Option<String>,
    pub state: String,
    pub created_at: i64,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
}

/// One page of a list, and the cursor of the next.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// A user's live SSO sessions and the applications holding their refresh
/// tokens.
#[derive(Debug, Clone, Deserialize)]
pub struct UserSessions {
    pub sessions: Vec<UserSession>,
    pub apps: Vec<UserApp>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserSession {
    pub user_agent: String,
    pub address: String,
    pub created_at: i64,
    pub last_seen_at: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct UserApp {
    pub client_id: String,
    pub tokens: i64,
    pub last_used_at: i64,
}

/// A resource and the ETag it was read with: a change sends it back as
/// `If-Match`, so an admin never overwrites what another changed since.
#[derive(Debug, Clone)]
pub struct Tagged<T> {
    pub value: T,
    pub etag: String,
}

/// What a client registration says, as the console edits it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    /// Sent with every save: the API replaces the whole registration, so
    /// a form without it would turn PKCE back on unasked.
    pub allow_no_pkce: bool,
}

impl Registration {
    fn json(&self) -> Value {
        json!({
            "redirect_uris": self.redirect_uris,
            "post_logout_redirect_uris": self.post_logout_redirect_uris,
            "grants": self.grants,
            "audiences": self.audiences,
            "scopes": self.scopes,
            "allow_no_pkce": self.allow_no_pkce,
        })
    }
}

/// A user state the console moves a user to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserState {
    Active,
    Suspended,
    Deleted,
}

/// What an admin asked the console to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleAction {
    CreateUser {
        username: String,
        password: String,
        email: Option<String>,
        roles: Vec<String>,
    },
    InviteUser {
        username: String,
        email: Option<String>,
        roles: Vec<String>,
    },
    SetUserState {
        name: String,
        to: UserState,
        etag: String,
    },
    SetRoles {
        name: String,
        roles: Vec<String>,
        etag: String,
    },
    Unlock {
        name: String,
    },
    ResetMfa {
        name: String,
    },
    CreateClient {
        id: String,
        /// `client_secret`, `public` (`private_key_jwt` clients need a
        /// JWK Set: the command line or the API registers those).
        auth: String,
        registration: Registration,
    },
    UpdateClient {
        id: String,
        registration: Registration,
        etag: String,
    },
    RotateSecret {
        id: String,
        overlap_seconds: i64,
    },
    DeleteClient {
        id: String,
    },
    RotateKeys {
        alg: Option<String>,
        audience: Option<String>,
    },
    RetireKey {
        kid: String,
    },
    RevokeKey {
        kid: String,
    },
}

/// A request to the admin API: method, path under `/admin/v1`, body and
/// `If-Match`.
struct ApiRequest<'a> {
    method: Method,
    path: String,
    body: Option<Value>,
    if_match: Option<&'a str>,
}

impl ApiRequest<'_> {
    fn post(path: String, body: Value) -> Self {
        ApiRequest {
            method: Method::POST,
            path,
            body: Some(body),
            if_match: None,
        }
    }
}

impl ConsoleAction {
    /// Whether the action deletes, disables or replaces something: those
    /// are confirmed first.
    pub fn destructive(&self) -> bool {
        matches!(
            self,
            ConsoleAction::SetUserState {
                to: UserState::Suspended | UserState::Deleted,
                ..
            } | ConsoleAction::ResetMfa { .. }
                | ConsoleAction::RotateSecret { .. }
                | ConsoleAction::DeleteClient { .. }
                | ConsoleAction::RotateKeys { .. }
                | ConsoleAction::RetireKey { .. }
                | ConsoleAction::RevokeKey { .. }
        )
    }

    /// The question a confirmation page asks.
    pub fn question(&self) -> String {
        match self {
            ConsoleAction::SetUserState { name, to, .. } => match to {
                UserState::Suspended => format!(
                    "Suspend user {name}? Their sessions and tokens end, and they cannot sign in until activated."
                ),
                UserState::Deleted => format!(
                    "Delete user {name}? Their sessions and tokens end; the account cannot be used again."
                ),
                UserState::Active => format!("Activate user {name}?"),
            },
            ConsoleAction::ResetMfa { name } => format!(
                "Remove the second factor and recovery codes of {name}? They enrol again at their next sign-in if their role requires it."
            ),
            ConsoleAction::RotateSecret {
                id,
                overlap_seconds,
            } => format!(
                "Give client {id} a new secret? The current one keeps working for {overlap_seconds} seconds."
            ),
            ConsoleAction::DeleteClient { id } => {
                format!("Delete client {id}? Its tokens stop working at once.")
            }
            ConsoleAction::RotateKeys { .. } => "Rotate the signing keys? Successors are published now and sign once they are active; the current keys retire.".to_owned(),
            ConsoleAction::RetireKey { kid } => format!(
                "Retire key {kid}? It stops signing and stays published until the tokens it signed expired."
            ),
            ConsoleAction::RevokeKey { kid } => format!(
                "Revoke key {kid}? It is unpublished at once: every token it signed stops verifying."
            ),
            // Never a form's fields: a new user's password is one.
            _ => "Carry this out?".to_owned(),
        }
    }

    fn request(&self) -> ApiRequest<'_> {
        match self {
            ConsoleAction::CreateUser {
                username,
                password,
                email,
                roles,
            } => ApiRequest::post(
                "users".into(),
                json!({"username": username, "password": password, "email": email, "roles": roles}),
            ),
            ConsoleAction::InviteUser {
                username,
                email,
                roles,
            } => ApiRequest::post(
                "invitations".into(),
                json!({"username": username, "email": email, "roles": roles}),
            ),
            ConsoleAction::SetUserState {
                name,
                to: UserState::Deleted,
                ..
            } => ApiRequest {
                method: Method::DELETE,
                path: format!("users/{}", segment(name)),
                body: None,
                if_match: None,
            },
            ConsoleAction::SetUserState { name, to, etag } => ApiRequest {
                method: Method::PATCH,
                path: format!("users/{}", segment(name)),
                body: Some(json!({"state": match to {
                    UserState::Active => "active",
                    _ => "suspended",
                }})),
                if_match: Some(etag),
            },
            ConsoleAction::SetRoles { name, roles, etag } => ApiRequest {
                method: Method::PATCH,
                path: format!("users/{}", segment(name)),
                body: Some(json!({ "roles": roles })),
                if_match: Some(etag),
            },
            ConsoleAction::Unlock { name } => {
                ApiRequest::post(format!("users/{}/unlock", segment(name)), json!({}))
            }
            ConsoleAction::ResetMfa { name } => {
                ApiRequest::post(format!("users/{}/reset-mfa", segment(name)), json!({}))
            }
            ConsoleAction::CreateClient {
                id,
                auth,
                registration,
            } => {
                let mut body = registration.json();
                body["id"] = json!(id);
                body["auth"] = json!(auth);
                ApiRequest::post("clients".into(), body)
            }
            ConsoleAction::UpdateClient {
                id,
                registration,
                etag,
            } => ApiRequest {
                method: Method::PUT,
                path: format!("clients/{}", segment(id)),
                body: Some(registration.json()),
                if_match: Some(etag),
            },
            ConsoleAction::RotateSecret {
                id,
                overlap_seconds,
            } => ApiRequest::post(
                format!("clients/{}/secret", segment(id)),
                json!({ "overlap_seconds": overlap_seconds }),
            ),
            ConsoleAction::DeleteClient { id } => ApiRequest {
                method: Method::DELETE,
                path: format!("clients/{}", segment(id)),
                body: None,
                if_match: None,
            },
            ConsoleAction::RotateKeys { alg, audience } => ApiRequest::post(
                "keys/rotate".into(),
                json!({"alg": alg, "audience": audience}),
            ),
            ConsoleAction::RetireKey { kid } => {
                ApiRequest::post(format!("keys/{}/retire", segment(kid)), json!({}))
            }
            ConsoleAction::RevokeKey { kid } => {
                ApiRequest::post(format!("keys/{}/revoke", segment(kid)), json!({}))
            }
        }
    }

    /// The console page to go to afterwards, with what was done.
    fn after(&self) -> String {
        let user = |name: &str, done: &str| format!("/admin/users/{}?done={done}", segment(name));
        let client = |id: &str, done: &str| format!("/admin/clients/{}?done={done}", segment(id));
        match self {
            ConsoleAction::CreateUser { username, .. } => user(username, "created"),
            ConsoleAction::InviteUser { username, .. } => user(username, "invited"),
            ConsoleAction::SetUserState {
                to: UserState::Deleted,
                ..
            } => "/admin/users?done=deleted".into(),
            ConsoleAction::SetUserState { name, to, .. } => match to {
                UserState::Active => user(name, "activated"),
                _ => user(name, "suspended"),
            },
            ConsoleAction::SetRoles { name, .. } => user(name, "roles"),
            ConsoleAction::Unlock { name } => user(name, "unlocked"),
            ConsoleAction::ResetMfa { name } => user(name, "mfa-reset"),
            ConsoleAction::CreateClient { id, .. } => client(id, "created"),
            ConsoleAction::UpdateClient { id, .. } => client(id, "updated"),
            ConsoleAction::RotateSecret { id, .. } => client(id, "rotated"),
            ConsoleAction::DeleteClient { .. } => "/admin/clients?done=deleted".into(),
            ConsoleAction::RotateKeys { .. } => "/admin/keys?done=rotated".into(),
            ConsoleAction::RetireKey { .. } => "/admin/keys?done=retired".into(),
            ConsoleAction::RevokeKey { .. } => "/admin/keys?done=revoked".into(),
        }
    }
}

/// What a console form led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not done yet: the question to confirm.
    Confirm { question: String },
    /// Done: the page to go to.
    Done { location: String },
    /// Done, and a client secret to show this once.
    Secret {
        client_id: String,
        secret: String,
        /// A rotation: how long the previous secret keeps working.
        previous_valid_for: Option<i64>,
    },
}

/// What a notice key in a console URL (`?done=…`) says.
pub fn notice(done: &str) -> Option<&'static str> {
    Some(match done {
        "created" => "Created.",
        "invited" => "Invited.",
        "deleted" => "Deleted.",
        "activated" => "Activated.",
        "suspended" => "Suspended.",
        "roles" => "Roles saved.",
        "unlocked" => "Unlocked: failed sign-ins forgotten.",
        "mfa-reset" => "Second factor removed.",
        "updated" => "Saved.",
        "rotated" => "Rotated.",
        "retired" => "Retired.",
        "revoked" => "Revoked.",
        _ => return None,
    })
}

/// A path segment, percent-encoded (RFC 3986 §3.3: unreserved characters
/// kept), so a name from a form cannot reach another path of the API.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The problem body of an API refusal (RFC 9457).
#[derive(Deserialize)]
struct Problem {
    title: Option<String>,
    detail: Option<String>,
}

impl Gateway {
    /// Refuses anyone but an admin.
    fn console_user(&self, principal: &Principal) -> Result<()> {
        if principal.has_any_role(&[ADMIN_ROLE]) {
            Ok(())
        } else {
            Err(GatewayError::Forbidden(
                "the console is for admins".to_owned(),
            ))
        }
    }

    /// Reads `path` (under `/admin/v1/`, with its query) as `principal`.
    pub async fn console_read<T: DeserializeOwned>(
        &self,
        principal: &Principal,
        path: &str,
    ) -> Result<Tagged<T>> {
        self.console_user(principal)?;
        let response = self
            .admin_api(
                principal,
                ApiRequest {
                    method: Method::GET,
                    path: path.to_owned(),
                    body: None,
                    if_match: None,
                },
            )
            .await?;
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let value = response
            .json()
            .await
            .map_err(|e| GatewayError::Identity(format!("admin API: unreadable answer: {e}")))?;
        Ok(Tagged { value, etag })
    }

    /// A user and their ETag.
    pub async fn console_user_named(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Tagged<AdminUser>> {
        self.console_read(principal, &format!("users/{}", segment(name)))
            .await
    }

    /// A user's sessions and applications.
    pub async fn console_user_sessions(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<UserSessions> {
        let path = format!("users/{}/sessions", segment(name));
        Ok(self.console_read(principal, &path).await?.value)
    }

    /// A client and its ETag.
    pub async fn console_client(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Tagged<AdminClient>> {
        self.console_read(principal, &format!("clients/{}", segment(id)))
            .await
    }

    /// A page of users (`search` in username or email) or of clients,
    /// from `cursor`.
    pub async fn console_list<T: DeserializeOwned>(
        &self,
        principal: &Principal,
        what: &str,
        search: Option<&str>,
        cursor: Option<&str>,
    ) -> Result<Listed<T>> {
        let query = {
            // Not `Send`: gone before the request is awaited.
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            for (name, value) in [("search", search), ("cursor", cursor)] {
                if let Some(value) = value.filter(|v| !v.is_empty()) {
                    query.append_pair(name, value);
                }
            }
            query.finish()
        };
        let path = format!("{what}?{query}");
        Ok(self.console_read(principal, &path).await?.value)
    }

    /// Carries out `action` for `principal` after its CSRF proof
    /// (`csrf`, `origin`); a destructive one only once `confirmed`.
    pub async fn console_act(
        &self,
        principal: &Principal,
        (csrf, origin): (Option<&str>, Option<&str>),
        confirmed: bool,
        action: &ConsoleAction,
        meta: &Origin,
    ) -> Result<Outcome> {
        self.console_user(principal)?;
        self.check_session_form(principal, (csrf, origin), meta)?;
        if action.destructive() && !confirmed {
            return Ok(Outcome::Confirm {
                question: action.question(),
            });
        }
        let response = self.admin_api(principal, action.request()).await?;
        let secret = match action {
            ConsoleAction::CreateClient { .. } | ConsoleAction::RotateSecret { .. } => {
                let answer: Value = response.json().await.map_err(|e| {
                    GatewayError::Identity(format!("admin API: unreadable answer: {e}"))
                })?;
                answer["client_secret"].as_str().map(|secret| {
                    (
                        secret.to_owned(),
                        answer["previous_secret_valid_for"].as_i64(),
                    )
                })
            }
            _ => None,
        };
        Ok(match (action, secret) {
            (
                ConsoleAction::CreateClient { id, .. } | ConsoleAction::RotateSecret { id, .. },
                Some((secret, previous_valid_for)),
            ) => Outcome::Secret {
                client_id: id.clone(),
                secret,
                previous_valid_for,
            },
            _ => Outcome::Done {
                location: action.after(),
            },
        })
    }

    /// One call to identity's admin API with the admin's token; a refusal
    /// becomes an error with the problem's words.
    async fn admin_api(
        &self,
        principal: &Principal,
        request: ApiRequest<'_>,
    ) -> Result<reqwest::Response> {
        // Identity refuses the exchange once the admin's sign-in with a
        // second factor has ended there (or never happened): a fresh
        // sign-in, not a bare 403, is the way on.
        let token = self.admin_token(principal).await.map_err(|e| match e {
            GatewayError::Forbidden(_) => GatewayError::ConsoleSignIn,
            other => other,
        })?;
        let url = self
            .config
            .identity_endpoint(&format!("/admin/v1/{}", request.path));
        let mut call = self
            .http
            .request(request.method, url)
            .headers(echo_edge::trace::headers())
            .header(AUTHORIZATION, token);
        if let Some(body) = &request.body {
            call = call.json(body);
        }
        if let Some(etag) = request.if_match {
            call = call.header(IF_MATCH, etag);
        }
        let response = call
            .send()
            .await
            .map_err(|e| GatewayError::Identity(format!("admin API unreachable: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let problem: Option<Problem> = response.json().await.ok();
        let words = problem
            .and_then(|p| p.detail.filter(|d| !d.is_empty()).or(p.title))
            .unwrap_or_else(|| format!("the admin API answered {status}"));
        let words: String = words.chars().take(DETAIL_CHARS).collect();
        match status.as_u16() {
            401 | 403 => Err(GatewayError::Forbidden(format!(
                "identity refused the console's request: {words}"
            ))),
            code @ 400..=499 => Err(GatewayError::AdminRefused {
                status: code,
                message: words,
            }),
            _ => Err(GatewayError::Identity(format!(
                "admin API answered {status}: {words}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_their_path_segment() {
        assert_eq!(segment("alice.b-c_d~"), "alice.b-c_d~");
        assert_eq!(segment("../keys/rotate"), "..%2Fkeys%2Frotate");
        assert_eq!(segment("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn what_destroys_or_replaces_is_confirmed_first() {
        let name = "bob".to_owned();
        let state = |to| ConsoleAction::SetUserState {
            name: name.clone(),
            to,
            etag: String::new(),
        };
        assert!(state(UserState::Suspended).destructive());
        assert!(state(UserState::Deleted).destructive());
        assert!(!state(UserState::Active).destructive());
        assert!(ConsoleAction::ResetMfa { name: name.clone() }.destructive());
        assert!(!ConsoleAction::Unlock { name }.destructive());
        assert!(ConsoleAction::RevokeKey { kid: "k".into() }.destructive());
        assert!(
            ConsoleAction::RotateKeys {
                alg: None,
                audience: None
            }
            .destructive()
        );
        assert!(
            ConsoleAction::RotateSecret {
                id: "c".into(),
                overlap_seconds: 60
            }
            .question()
            .contains("60 seconds")
        );
    }

    #[test]
    fn notices_are_a_fixed_set() {
        assert_eq!(notice("suspended"), Some("Suspended."));
        assert_eq!(notice("<script>"), None);
    }
}
