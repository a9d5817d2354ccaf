//! `echod user … --server URL` and `echod client … --server URL`: the same
//! commands through identity's admin API (docs/admin-api.md), so an
//! operator needs neither the database nor the master key.
//!
//! The command authenticates as a client registered for the API (`--audience
//! identity --scope echo.admin`): its id from `ECHO_ADMIN_CLIENT_ID`, its
//! secret from `ECHO_ADMIN_CLIENT_SECRET` or the file named by
//! `ECHO_ADMIN_CLIENT_SECRET_FILE`, never from a flag (flags show in `ps`
//! and shell history).

use std::time::Duration;

use anyhow::Context;
use echo_crypto::TrustedRoots;
use echo_edge::ServiceTokens;
use echo_identity::admin::{ADMIN_SCOPE, Registration};
use echo_identity::grant::IDENTITY_SERVICE;
use echo_identity::lockout::LockoutStatus;
use echo_identity::mfa::MfaState;
use echo_tls::ClientTls;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::{
    ClientAddArgs, ClientCommand, ClientUpdateArgs, ShownUser, UserCommand, list_or_dash,
    print_registration, print_user, read_stdin_line,
};
use crate::settings::secret_var;

pub const CLIENT_ID_VAR: &str = "ECHO_ADMIN_CLIENT_ID";
pub const CLIENT_SECRET_VAR: &str = "ECHO_ADMIN_CLIENT_SECRET";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Items per page when a command lists everything.
const PAGE: u32 = 200;

/// An authenticated connection to one identity's admin API.
pub struct AdminApi {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An answer: its body (`Null` when empty) and its ETag.
struct Answer {
    body: Value,
    etag: Option<String>,
}

impl AdminApi {
    /// Gets an `echo.admin` token for `server` with the client of
    /// [`CLIENT_ID_VAR`] and [`CLIENT_SECRET_VAR`].
    pub async fn connect(server: &str, roots: &TrustedRoots) -> anyhow::Result<Self> {
        let id = std::env::var(CLIENT_ID_VAR)
            .ok()
            .filter(|id| !id.is_empty())
            .with_context(|| format!("--server needs {CLIENT_ID_VAR}"))?;
        let secret = secret_var(CLIENT_SECRET_VAR)?.with_context(|| {
            format!("--server needs {CLIENT_SECRET_VAR} or {CLIENT_SECRET_VAR}_FILE")
        })?;
        let base = server.trim_end_matches('/').to_owned();
        let tls = ClientTls::new(roots, None).context("TLS")?;
        let token = ServiceTokens::new(&base, &id, &secret, &tls)
            .token(IDENTITY_SERVICE, ADMIN_SCOPE)
            .await
            .map_err(|e| anyhow::anyhow!("cannot get an admin token from {base}: {e}"))?;
        Ok(Self {
            http: tls.http_client(REQUEST_TIMEOUT),
            base,
            token,
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}/admin/v1{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(tag) = if_match {
            request = request.header(reqwest::header::IF_MATCH, tag);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let etag = response
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            // A problem's `detail` says what went wrong.
            let detail = body["detail"].as_str().unwrap_or(text.as_str()).to_owned();
            anyhow::bail!("{detail} ({status})");
        }
        Ok(Answer { body, etag })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Answer> {
        self.send(Method::GET, path, None, None).await
    }

    /// Reads `path`, then sends `method` with `body` under `If-Match`.
    async fn change(&self, method: Method, path: &str, body: Value) -> anyhow::Result<Value> {
        let current = self.get(path).await?;
        Ok(self
            .send(method, path, Some(body), current.etag.as_deref())
            .await?
            .body)
    }

    /// Every item of a list, page by page.
    async fn all(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Vec<Value>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = url::Url::parse("http://x/").expect("static URL");
            {
                let mut pairs = url.query_pairs_mut();
                pairs.append_pair("limit", &PAGE.to_string());
                for (key, value) in query {
                    pairs.append_pair(key, value);
                }
                if let Some(cursor) = &cursor {
                    pairs.append_pair("cursor", cursor);
                }
            }
            let page = self
                .get(&format!("{path}?{}", url.query().unwrap_or("")))
                .await?
                .body;
            items.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(items),
            }
        }
    }
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| items.iter().map(|v| text(v).to_owned()).collect())
        .unwrap_or_default()
}

/// A user's second factor as the API answers it.
fn mfa_of(mfa: &Value) -> anyhow::Result<MfaState> {
    Ok(match mfa["state"].as_str() {
        Some("none") => MfaState::None,
        Some("pending") => MfaState::Pending,
        Some("totp") => MfaState::Totp {
            recovery_codes_left: mfa["recovery_codes_left"].as_i64().unwrap_or(0),
        },
        other => anyhow::bail!("unexpected second factor {other:?} from the server"),
    })
}

fn user_path(name: &str) -> String {
    format!("/users/{}", urlencoding(name))
}

fn client_path(id: &str) -> String {
    format!("/clients/{}", urlencoding(id))
}

fn urlencoding(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect()
}

/// `echod user … --server URL`.
pub async fn user_command(api: &AdminApi, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name, email, roles, ..
        } => {
            let password = read_stdin_line("password")?;
            let body =
                json!({"username": name, "password": password, "email": email, "roles": roles});
            let user = api
                .send(Method::POST, "/users", Some(body), None)
                .await?
                .body;
            println!(
                "added user {} (id {})",
                text(&user["username"]),
                text(&user["id"])
            );
        }
        UserCommand::List { search } => {
            let query: Vec<(&str, &str)> = search
                .as_deref()
                .map(|s| ("search", s))
                .into_iter()
                .collect();
            println!("{:<24} {:<24} {:<32} ROLES", "USERNAME", "ID", "EMAIL");
            for user in api.all("/users", &query).await? {
                println!(
                    "{:<24} {:<24} {:<32} {}",
                    text(&user["username"]),
                    text(&user["id"]),
                    text(&user["email"]),
                    strings(&user["roles"]).join(",")
                );
            }
        }
        UserCommand::Invite {
            name, email, roles, ..
        } => {
            let body = json!({"username": name, "email": email, "roles": roles});
            let user = api
                .send(Method::POST, "/invitations", Some(body), None)
                .await?
                .body;
            println!(
                "invited user {} (id {})",
                text(&user["username"]),
                text(&user["id"])
            );
            if user["invitation_mailed"].as_bool() == Some(true) {
                println!("invitation mailed to {}", text(&user["email"]));
            }
        }
        UserCommand::Activate {
            name,
            password_stdin,
        } => {
            let password = password_stdin
                .then(|| read_stdin_line("password"))
                .transpose()?;
            let body = json!({"state": "active", "password": password});
            api.change(Method::PATCH, &user_path(&name), body).await?;
            println!("user {name}: → active");
        }
        UserCommand::Suspend { name } => {
            let body = json!({"state": "suspended"});
            api.change(Method::PATCH, &user_path(&name), body).await?;
            println!("user {name}: → suspended (sessions and refresh tokens revoked)");
        }
        UserCommand::Delete { name } => {
            api.send(Method::DELETE, &user_path(&name), None, None)
                .await?;
            println!("user {name}: → deleted (sessions and refresh tokens revoked)");
        }
        UserCommand::Show { name } => {
            let user = api.get(&user_path(&name)).await?.body;
            let lockout = &user["lockout"];
            print_user(&ShownUser {
                username: text(&user["username"]),
                id: text(&user["id"]),
                email: text(&user["email"]),
                state: text(&user["state"]),
                roles: &strings(&user["roles"]),
                mfa: mfa_of(&user["mfa"])?,
                lockout: LockoutStatus {
                    failures: lockout["failures"].as_i64().unwrap_or(0),
                    locked_for: lockout["locked_for_seconds"].as_i64(),
                },
            });
        }
        UserCommand::SetRoles { name, roles } => {
            let user = api
                .change(Method::PATCH, &user_path(&name), json!({"roles": roles}))
                .await?;
            println!(
                "user {name}: roles {}",
                list_or_dash(&strings(&user["roles"]))
            );
        }
        UserCommand::Unlock { name } => {
            let path = format!("{}/unlock", user_path(&name));
            api.send(Method::POST, &path, None, None).await?;
            println!("user {name}: unlocked");
        }
        UserCommand::ResetMfa { name } => {
            let path = format!("{}/reset-mfa", user_path(&name));
            api.send(Method::POST, &path, None, None).await?;
            println!("user {name}: TOTP and recovery codes removed");
        }
    }
    Ok(())
}

/// `echod client … --server URL`.
pub async fn client_command(api: &AdminApi, command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Add(args) => client_add(api, args).await?,
        ClientCommand::List => {
            println!(
                "{:<24} {:<15} {:<40} {:<24} REDIRECT URIS",
                "ID", "TYPE", "GRANTS", "AUDIENCES"
            );
            for client in api.all("/clients", &[]).await? {
                println!(
                    "{:<24} {:<15} {:<40} {:<24} {}",
                    text(&client["id"]),
                    text(&client["auth"]),
                    strings(&client["grants"]).join(","),
                    list_or_dash(&strings(&client["audiences"])),
                    strings(&client["redirect_uris"]).join(" ")
                );
            }
        }
        ClientCommand::Update(args) => client_update(api, args).await?,
        ClientCommand::Delete { id } => {
            api.send(Method::DELETE, &client_path(&id), None, None)
                .await?;
            println!("deleted client {id} (its refresh tokens and their access tokens revoked)");
        }
        ClientCommand::RotateSecret { id, overlap } => {
            let seconds = i64::try_from(overlap.as_secs()).context("the overlap is too long")?;
            let path = format!("{}/secret", client_path(&id));
            let body = json!({"overlap_seconds": seconds});
            let rotated = api.send(Method::POST, &path, Some(body), None).await?.body;
            println!("rotated the secret of client {id}");
            println!(
                "new client secret (shown once, store it now): {}",
                text(&rotated["client_secret"])
            );
            println!(
                "the old secret keeps working for {}",
                humantime::format_duration(overlap)
            );
        }
    }
    Ok(())
}

async fn client_add(api: &AdminApi, args: ClientAddArgs) -> anyhow::Result<()> {
    let (auth, jwks, secret) = if args.public {
        ("public", None, None)
    } else if let Some(path) = &args.jwks_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let jwks: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        ("private_key_jwt", Some(jwks), None)
    } else if args.generate_secret {
        ("client_secret", None, None)
    } else {
        (
            "client_secret",
            None,
            Some(read_stdin_line("client secret")?),
        )
    };
    let body = json!({
        "id": args.id,
        "auth": auth,
        "client_secret": secret,
        "jwks": jwks,
        "redirect_uris": args.redirect_uris,
        "post_logout_redirect_uris": args.post_logout_redirect_uris,
        "grants": args.grants.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "audiences": args.audiences,
        "scopes": args.scopes,
        "allow_no_pkce": args.allow_no_pkce,
    });
    let created = api
        .send(Method::POST, "/clients", Some(body), None)
        .await?
        .body;
    println!("added client {}", args.id);
    if let Some(secret) = created["client_secret"].as_str() {
        println!("client secret (shown once, store it now): {secret}");
    }
    Ok(())
}

async fn client_update(api: &AdminApi, args: ClientUpdateArgs) -> anyhow::Result<()> {
    let path = client_path(&args.id);
    let current = api.get(&path).await?;
    let wanted = args.apply(registration_of(&current.body));
    let body = json!({
        "redirect_uris": wanted.redirect_uris,
        "post_logout_redirect_uris": wanted.post_logout_redirect_uris,
        "grants": wanted.grants,
        "audiences": wanted.audiences,
        "scopes": wanted.scopes,
        "allow_no_pkce": wanted.allow_no_pkce,
    });
    let updated = api
        .send(Method::PUT, &path, Some(body), current.etag.as_deref())
        .await?
        .body;
    print_registration(&args.id, &registration_of(&updated));
    Ok(())
}

/// The registration in a client as the API answers it.
fn registration_of(client: &Value) -> Registration {
    Registration {
        redirect_uris: strings(&client["redirect_uris"]),
        post_logout_redirect_uris: strings(&client["post_logout_redirect_uris"]),
        grants: strings(&client["grants"]),
        audiences: strings(&client["audiences"]),
        scopes: strings(&client["scopes"]),
        allow_no_pkce: client["allow_no_pkce"].as_bool().unwrap_or(false),
    }
}
