//! The admin console's pages (the dashboard `/admin`, `/admin/users`,
//! `/admin/clients`, `/admin/keys`): thin handlers over `console.rs` (and
//! `audit_log.rs` for the dashboard). Reads are GETs; every
//! change is a form post answered with a redirect to the page it changed,
//! a confirmation page, or (a new client secret) a page that shows the
//! secret this once.

use std::sync::Arc;

use askama::Template;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, OriginalUri, Path, State};
use axum::http::header::ORIGIN;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use echo_edge::{Origin, render, see_other};
use serde::Deserialize;

use super::error::{console_section, page_error};
use super::handlers::{here, signed_in};
use super::page::{SignedInPage, malformed};
use super::pages::{DashboardPage, EventRow, utc};
use crate::console::{
    AdminClient, AdminKey, AdminUser, ConsoleAction, Listed, Outcome, Registration, UserSessions,
    UserState, notice,
};
use crate::{Gateway, GatewayError, LogFilters, Principal};

type AppState = State<Arc<Gateway>>;

/// The largest console form, in bytes: far above any registration.
pub const FORM_LIMIT: usize = 16 * 1024;
/// Default overlap of a rotated client secret (seconds): a day.
const DEFAULT_OVERLAP: i64 = 24 * 60 * 60;
/// The buttons of a user's page: path, label, and whether it destroys
/// something (styled as a danger; the action asks first).
const USER_ACTIONS: [(&str, &str, bool); 5] = [
    ("activate", "Activate", false),
    ("suspend", "Suspend", true),
    ("unlock", "Unlock", false),
    ("reset-mfa", "Reset second factor", true),
    ("delete", "Delete", true),
];
/// A user's recent events on their page.
const USER_EVENTS: usize = 20;

/// A list page's query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    search: Option<String>,
    cursor: Option<String>,
    done: Option<String>,
}

/// The query of a page that only shows what was done.
#[derive(Debug, Default, Deserialize)]
pub struct DoneQuery {
    done: Option<String>,
}

#[derive(Template)]
#[template(path = "console_users.html")]
struct UsersPage<'a> {
    nav: String,
    csrf: &'a str,
    search: &'a str,
    users: Vec<UserRow>,
    next: Option<String>,
    notice: Option<&'static str>,
}

struct UserRow {
    user: AdminUser,
    link: String,
}

#[derive(Template)]
#[template(path = "console_user.html")]
struct UserPage<'a> {
    nav: String,
    csrf: &'a str,
    shown: AdminUser,
    etag: String,
    base: String,
    created: String,
    actions: &'static [(&'static str, &'static str, bool)],
    /// The log filtered to the user's own events.
    log_link: String,
    sessions: Option<UserSessions>,
    events: Option<Vec<EventRow>>,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console_clients.html")]
struct ClientsPage<'a> {
    nav: String,
    csrf: &'a str,
    clients: Vec<AdminClient>,
    next: Option<String>,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console_client.html")]
struct ClientPage<'a> {
    nav: String,
    csrf: &'a str,
    client: AdminClient,
    etag: String,
    base: String,
    created: String,
    notice: Option<&'static str>,
}

#[derive(Template)]
#[template(path = "console_keys.html")]
struct KeysPage<'a> {
    nav: String,
    csrf: &'a str,
    keys: Vec<KeyRow>,
    notice: Option<&'static str>,
}

struct KeyRow {
    key: AdminKey,
    created: String,
    activates: String,
    retires: String,
}

#[derive(Template)]
#[template(path = "console_confirm.html")]
struct ConfirmPage<'a> {
    nav: String,
    question: String,
    action: &'a str,
    csrf: &'a str,
    /// The form's other fields, posted again.
    fields: Vec<(String, String)>,
    back: &'a str,
}

#[derive(Template)]
#[template(path = "console_secret.html")]
struct SecretPage {
    nav: String,
    client_id: String,
    link: String,
    secret: String,
    previous_valid_for: Option<i64>,
}

/// The navigation bar of a console page whose own link is `current`.
fn nav(g: &Gateway, user: &Principal, current: &str) -> String {
    super::pages::nav(g.config(), Some(user), current)
}

/// The signed-in admin's session CSRF token (a session always has one).
fn csrf_of(user: &Principal) -> &str {
    user.session.as_ref().map_or("", |s| s.csrf.as_str())
}

/// `/admin/<what>?search=…&cursor=…`: the link to a list's next page.
fn next_link(what: &str, search: Option<&str>, cursor: Option<String>) -> Option<String> {
    let cursor = cursor?;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(search) = search.filter(|s| !s.is_empty()) {
        query.append_pair("search", search);
    }
    query.append_pair("cursor", &cursor);
    Some(format!("/admin/{what}?{}", query.finish()))
}

fn encoded(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// GET /admin: the dashboard, logins per hour as an SVG chart and the
/// latest failures, named as on the logs page (admins).
pub async fn dashboard(State(g): AppState, page: SignedInPage) -> Response {
    let answer = async {
        let user = &page.user;
        let chart = g.login_chart(user).await?;
        let failures = LogFilters {
            outcome: Some("failure".to_owned()),
            ..LogFilters::default()
        };
        let mut events = g.logs(user, &failures).await?.events;
        events.truncate(DashboardPage::FAILURES);
        let rows = EventRow::read(&g, user, events).await;
        let nav = nav(&g, user, "dashboard");
        Ok::<_, GatewayError>(render(
            StatusCode::OK,
            &DashboardPage::of(&chart, rows, nav),
        ))
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// GET /admin/users: search and page through the users.
pub async fn users(State(g): AppState, page: SignedInPage<ListQuery>) -> Response {
    let answer = async {
        let (user, query) = (&page.user, &page.query);
        let listed: Listed<AdminUser> = g
            .console_list(
                user,
                "users",
                query.search.as_deref(),
                query.cursor.as_deref(),
            )
            .await?;
        let users = listed
            .items
            .into_iter()
            .map(|user| UserRow {
                link: format!("/admin/users/{}", encoded(&user.username)),
                user,
            })
            .collect();
        let next = next_link("users", query.search.as_deref(), listed.next_cursor);
        Ok::<_, GatewayError>(
            UsersPage {
                nav: nav(&g, user, "users"),
                csrf: csrf_of(user),
                search: query.search.as_deref().unwrap_or(""),
                users,
                next,
                notice: query.done.as_deref().and_then(notice),
            }
            .render_page(),
        )
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// GET /admin/users/{name}: a user, their sessions and recent events.
pub async fn user(
    State(g): AppState,
    name: Path<String>,
    page: SignedInPage<DoneQuery>,
) -> Response {
    let answer = async {
        let (user, query) = (&page.user, &page.query);
        let shown = g.console_user_named(user, &name).await?;
        // The user's sessions and events are extras: the page stands
        // without them.
        let sessions = g
            .console_user_sessions(user, &name)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "a user's sessions unavailable"))
            .ok();
        let filters = LogFilters {
            actor: Some(shown.value.id.clone()),
            ..LogFilters::default()
        };
        let events = g
            .logs(user, &filters)
            .await
            .inspect_err(|e| tracing::warn!(error = %e, "a user's events unavailable"))
            .ok()
            .map(|page| EventRow::all(page.events.into_iter().take(USER_EVENTS).collect()));
        Ok::<_, GatewayError>(
            UserPage {
                nav: nav(&g, user, "users"),
                csrf: csrf_of(user),
                base: format!("/admin/users/{}", encoded(&shown.value.username)),
                created: utc(shown.value.created_at),
                actions: &USER_ACTIONS,
                log_link: format!("/logs?actor={}", encoded(&shown.value.id)),
                shown: shown.value,
                etag: shown.etag,
                sessions,
                events,
                notice: query.done.as_deref().and_then(notice),
            }
            .render_page(),
        )
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// GET /admin/clients: the clients, a page at a time.
pub async fn clients(State(g): AppState, page: SignedInPage<ListQuery>) -> Response {
    let answer = async {
        let (user, query) = (&page.user, &page.query);
        let listed: Listed<AdminClient> = g
            .console_list(user, "clients", None, query.cursor.as_deref())
            .await?;
        Ok::<_, GatewayError>(
            ClientsPage {
                nav: nav(&g, user, "clients"),
                csrf: csrf_of(user),
                clients: listed.items,
                next: next_link("clients", None, listed.next_cursor),
                notice: query.done.as_deref().and_then(notice),
            }
            .render_page(),
        )
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// GET /admin/clients/{id}: a client, its registration in an edit form.
pub async fn client(
    State(g): AppState,
    id: Path<String>,
    page: SignedInPage<DoneQuery>,
) -> Response {
    let answer = async {
        let (user, query) = (&page.user, &page.query);
        let client = g.console_client(user, &id).await?;
        Ok::<_, GatewayError>(
            ClientPage {
                nav: nav(&g, user, "clients"),
                csrf: csrf_of(user),
                base: format!("/admin/clients/{}", encoded(&client.value.id)),
                created: utc(client.value.created_at),
                client: client.value,
                etag: client.etag,
                notice: query.done.as_deref().and_then(notice),
            }
            .render_page(),
        )
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// GET /admin/keys: the signing keys with their state and audience.
pub async fn keys(State(g): AppState, page: SignedInPage<DoneQuery>) -> Response {
    let answer = async {
        let (user, query) = (&page.user, &page.query);
        let listed: Listed<AdminKey> = g.console_read(user, "keys").await?.value;
        let keys = listed
            .items
            .into_iter()
            .map(|key| KeyRow {
                created: utc(key.created_at),
                activates: utc(key.activates_at),
                retires: key.retires_at.map(utc).unwrap_or_default(),
                key,
            })
            .collect();
        Ok::<_, GatewayError>(
            KeysPage {
                nav: nav(&g, user, "keys"),
                csrf: csrf_of(user),
                keys,
                notice: query.done.as_deref().and_then(notice),
            }
            .render_page(),
        )
    };
    let answer = answer.await;
    page.answer(&g, answer)
}

/// A posted console form, its fields in order.
struct Fields(Vec<(String, String)>);

impl Fields {
    /// The field's value, trimmed; `None` when absent or empty.
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<String, GatewayError> {
        self.get(name)
            .map(str::to_owned)
            .ok_or_else(|| GatewayError::BadRequest(format!("{name} is required")))
    }

    /// A list typed as words separated by spaces, commas or lines.
    fn list(&self, name: &str) -> Vec<String> {
        self.get(name)
            .unwrap_or("")
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn registration(&self) -> Registration {
        Registration {
            redirect_uris: self.list("redirect_uris"),
            post_logout_redirect_uris: self.list("post_logout_redirect_uris"),
            grants: self.list("grants"),
            audiences: self.list("audiences"),
            scopes: self.list("scopes"),
            // A checkbox: sent only when ticked.
            allow_no_pkce: self.get("allow_no_pkce") == Some("yes"),
        }
    }
}

fn unknown_action() -> GatewayError {
    GatewayError::NotFound
}

/// Which console form was posted, and to what.
enum Posting {
    NewUser,
    Invitation,
    User(String, String),
    NewClient,
    Client(String, String),
    RotateKeys,
    Key(String, String),
}

impl Posting {
    fn action(self, fields: &Fields) -> Result<ConsoleAction, GatewayError> {
        let roles = || fields.list("roles");
        let email = || fields.get("email").map(str::to_owned);
        Ok(match self {
            Posting::NewUser => ConsoleAction::CreateUser {
                username: fields.required("username")?,
                password: fields.required("password")?,
                email: email(),
                roles: roles(),
            },
            Posting::Invitation => ConsoleAction::InviteUser {
                username: fields.required("username")?,
                email: email(),
                roles: roles(),
            },
            Posting::User(name, verb) => {
                let etag = || fields.get("etag").unwrap_or("").to_owned();
                let state = |to| ConsoleAction::SetUserState {
                    name: name.clone(),
                    to,
                    etag: etag(),
                };
                match verb.as_str() {
                    "suspend" => state(UserState::Suspended),
                    "activate" => state(UserState::Active),
                    "delete" => state(UserState::Deleted),
                    "roles" => ConsoleAction::SetRoles {
                        name,
                        roles: roles(),
                        etag: etag(),
                    },
                    "unlock" => ConsoleAction::Unlock { name },
                    "reset-mfa" => ConsoleAction::ResetMfa { name },
                    _ => return Err(unknown_action()),
                }
            }
            Posting::NewClient => ConsoleAction::CreateClient {
                id: fields.required("id")?,
                auth: fields.get("auth").unwrap_or("client_secret").to_owned(),
                registration: fields.registration(),
            },
            Posting::Client(id, verb) => match verb.as_str() {
                "update" => ConsoleAction::UpdateClient {
                    id,
                    registration: fields.registration(),
                    etag: fields.get("etag").unwrap_or("").to_owned(),
                },
                "rotate-secret" => ConsoleAction::RotateSecret {
                    id,
                    overlap_seconds: match fields.get("overlap_seconds") {
                        Some(text) => text.parse().map_err(|_| {
                            GatewayError::BadRequest(
                                "the overlap is a number of seconds".to_owned(),
                            )
                        })?,
                        None => DEFAULT_OVERLAP,
                    },
                },
                "delete" => ConsoleAction::DeleteClient { id },
                _ => return Err(unknown_action()),
            },
            Posting::RotateKeys => ConsoleAction::RotateKeys {
                alg: fields.get("alg").map(str::to_owned),
                audience: fields.get("audience").map(str::to_owned),
            },
            Posting::Key(kid, verb) => match verb.as_str() {
                "retire" => ConsoleAction::RetireKey { kid },
                "revoke" => ConsoleAction::RevokeKey { kid },
                _ => return Err(unknown_action()),
            },
        })
    }
}

/// A console form: parsed, carried out (or asked about), answered.
async fn act(
    g: &Gateway,
    meta: &Origin,
    uri: &OriginalUri,
    headers: &HeaderMap,
    form: Result<Form<Vec<(String, String)>>, FormRejection>,
    which: Posting,
) -> Response {
    let here = here(uri);
    let answered = async {
        let user = signed_in(g, meta, headers).await?;
        let Form(pairs) = form.map_err(|_| malformed("form"))?;
        let fields = Fields(pairs);
        let action = which.action(&fields)?;
        let origin = headers.get(ORIGIN).and_then(|v| v.to_str().ok());
        let confirmed = fields.get("confirm") == Some("yes");
        let outcome = g
            .console_act(
                &user,
                (fields.get("csrf"), origin),
                confirmed,
                &action,
                meta,
            )
            .await?;
        Ok::<_, GatewayError>(match outcome {
            Outcome::Done { location } => see_other(&location, &[]),
            Outcome::Confirm { question } => {
                let fields = fields
                    .0
                    .into_iter()
                    .filter(|(name, _)| name != "csrf" && name != "confirm")
                    .collect();
                ConfirmPage {
                    nav: nav(g, &user, ""),
                    question,
                    action: &here,
                    csrf: csrf_of(&user),
                    fields,
                    back: console_section(&here),
                }
                .render_page()
            }
            Outcome::Secret {
                client_id,
                secret,
                previous_valid_for,
            } => SecretPage {
                nav: nav(g, &user, "clients"),
                link: format!("/admin/clients/{}", encoded(&client_id)),
                client_id,
                secret,
                previous_valid_for,
            }
            .render_page(),
        })
    };
    answered
        .await
        .unwrap_or_else(|e| page_error(g, e, console_section(&here)))
}

type Posted = Result<Form<Vec<(String, String)>>, FormRejection>;

/// POST /admin/users: a new active user with a password.
pub async fn create_user(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::NewUser).await
}

/// POST /admin/invitations: a new user who sets their password from the
/// invitation.
pub async fn invite(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::Invitation).await
}

/// POST /admin/users/{name}/{suspend|activate|delete|roles|unlock|reset-mfa}
pub async fn user_action(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((name, verb)): Path<(String, String)>,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::User(name, verb)).await
}

/// POST /admin/clients: a new client; a generated secret is shown once.
pub async fn create_client(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::NewClient).await
}

/// POST /admin/clients/{id}/{update|rotate-secret|delete}
pub async fn client_action(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((id, verb)): Path<(String, String)>,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::Client(id, verb)).await
}

/// POST /admin/keys/rotate
pub async fn rotate_keys(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::RotateKeys).await
}

/// POST /admin/keys/{kid}/{retire|revoke}
pub async fn key_action(
    State(g): AppState,
    meta: Origin,
    uri: OriginalUri,
    headers: HeaderMap,
    Path((kid, verb)): Path<(String, String)>,
    form: Posted,
) -> Response {
    act(&g, &meta, &uri, &headers, form, Posting::Key(kid, verb)).await
}

/// Renders a console page with 200.
trait RenderPage: Template + Sized {
    fn render_page(&self) -> Response {
        render(StatusCode::OK, self)
    }
}

impl<T: Template> RenderPage for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_typed_as_words() {
        let fields = Fields(vec![
            ("roles".into(), " admin, auditor\nops ".into()),
            ("empty".into(), "  ".into()),
        ]);
        assert_eq!(fields.list("roles"), ["admin", "auditor", "ops"]);
        assert_eq!(fields.get("empty"), None);
        assert!(fields.required("empty").is_err());
    }
}
