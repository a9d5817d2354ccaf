//! `echod user …` and `echod client …`: they work on the same database as
//! a running server, so they can be used while it runs (a server sees a
//! changed client within its 2 s registration cache, and at once when a
//! client's authentication would otherwise fail).

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use echo_core::SystemClock;
use echo_core::audit::LogAuditSink;
use echo_identity::admin::{self, ClientSecret, NewClient, NewUser};
use echo_identity::user_state::{UserState, change_state};
use echo_identity::{IdentityConfig, lockout, mfa};

use crate::settings::open_store;
use crate::{ClientAddArgs, Grant, UserCommand};

/// One line of standard input, without its line ending.
fn read_stdin_line(what: &str) -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let line = text.lines().next().unwrap_or("").to_owned();
    anyhow::ensure!(!line.is_empty(), "no {what} on standard input");
    Ok(line)
}

async fn user_add(
    store: &dyn echo_store::Store,
    name: String,
    email: Option<String>,
    roles: Vec<String>,
) -> anyhow::Result<()> {
    let password = read_stdin_line("password")?;
    let user = admin::add_user(
        store,
        &LogAuditSink,
        &SystemClock,
        NewUser {
            username: name,
            password,
            email,
            roles,
        },
    )
    .await?;
    println!("added user {} (id {})", user.username, user.id);
    Ok(())
}

/// `echod user …`.
pub async fn user_command(dir: &Path, command: UserCommand) -> anyhow::Result<()> {
    let store = open_store(dir).await?;
    let (store, audit, clock) = (&*store, &LogAuditSink, &SystemClock);
    match command {
        UserCommand::Add {
            name, email, roles, ..
        } => user_add(store, name, email, roles).await?,
        UserCommand::List => user_list(store).await?,
        UserCommand::Invite { name, email, roles } => {
            let user = admin::invite_user(store, audit, clock, name, email, roles).await?;
            println!("invited user {} (id {})", user.username, user.id);
        }
        UserCommand::Activate {
            name,
            password_stdin,
        } => {
            let password = password_stdin
                .then(|| read_stdin_line("password"))
                .transpose()?;
            let from = admin::activate_user(store, audit, clock, &name, password).await?;
            println!("user {name}: {from} → active");
        }
        UserCommand::Suspend { name } => {
            let from = change_state(store, audit, clock, &name, UserState::Suspended).await?;
            println!("user {name}: {from} → suspended (sessions and refresh tokens revoked)");
        }
        UserCommand::Delete { name } => {
            let from = change_state(store, audit, clock, &name, UserState::Deleted).await?;
            println!("user {name}: {from} → deleted (sessions and refresh tokens revoked)");
        }
        UserCommand::Show { name } => {
            let user = admin::find_user(store, &name).await?;
            let policy = IdentityConfig::new("").lockout;
            println!("username  {}", user.username);
            println!("id        {}", user.id);
            println!("email     {}", user.email.as_deref().unwrap_or("-"));
            println!("state     {}", user.state);
            println!("roles     {}", list_or_dash(&user.roles));
            println!("mfa       {}", mfa::mfa_state(store, &user.id).await?);
            println!(
                "lockout   {}",
                lockout::lockout_status(store, &policy, clock, &user.id).await?
            );
        }
        UserCommand::SetRoles { name, roles } => {
            let roles = admin::set_roles(store, audit, &name, roles).await?;
            println!("user {name}: roles {}", list_or_dash(&roles));
        }
        UserCommand::Unlock { name } => {
            lockout::unlock_user(store, audit, &name).await?;
            println!("user {name}: unlocked");
        }
        UserCommand::ResetMfa { name } => {
            if mfa::reset_mfa(store, audit, &name).await? {
                println!("user {name}: TOTP and recovery codes removed");
            } else {
                println!("user {name}: had no second factor");
            }
        }
    }
    Ok(())
}

fn list_or_dash(list: &[String]) -> String {
    if list.is_empty() {
        "-".to_owned()
    } else {
        list.join(",")
    }
}

async fn user_list(store: &dyn echo_store::Store) -> anyhow::Result<()> {
    println!("{:<24} {:<24} {:<32} ROLES", "USERNAME", "ID", "EMAIL");
    for user in store.list_users().await? {
        println!(
            "{:<24} {:<24} {:<32} {}",
            user.username,
            user.id,
            user.email.as_deref().unwrap_or("-"),
            user.roles.join(",")
        );
    }
    Ok(())
}

pub async fn client_add(dir: &Path, args: ClientAddArgs) -> anyhow::Result<()> {
    let secret = if args.public {
        ClientSecret::Public
    } else if let Some(path) = &args.jwks_file {
        ClientSecret::PrivateKeyJwt(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        )
    } else if args.generate_secret {
        ClientSecret::Generate
    } else {
        ClientSecret::Provided(read_stdin_line("client secret")?)
    };
    let grants = args
        .grants
        .iter()
        .map(|g| match g {
            Grant::AuthorizationCode => admin::GRANT_AUTHORIZATION_CODE,
            Grant::RefreshToken => admin::GRANT_REFRESH_TOKEN,
            Grant::ClientCredentials => admin::GRANT_CLIENT_CREDENTIALS,
            Grant::TokenExchange => echo_identity::exchange::GRANT_TOKEN_EXCHANGE,
        })
        .map(str::to_owned)
        .collect();
    let new = NewClient {
        id: args.id.clone(),
        secret,
        redirect_uris: args.redirect_uris,
        grants,
        audiences: args.audiences,
        scopes: args.scopes,
        post_logout_redirect_uris: args.post_logout_redirect_uris,
        allow_no_pkce: args.allow_no_pkce,
    };
    let store = open_store(dir).await?;
    let generated = admin::add_client(&*store, &LogAuditSink, &SystemClock, new).await?;
    println!("added client {}", args.id);
    if let Some(secret) = generated {
        println!("client secret (shown once, store it now): {secret}");
    }
    Ok(())
}

pub async fn client_list(dir: &Path) -> anyhow::Result<()> {
    let store = open_store(dir).await?;
    println!(
        "{:<24} {:<15} {:<40} {:<24} REDIRECT URIS",
        "ID", "TYPE", "GRANTS", "AUDIENCES"
    );
    for client in store.list_clients().await? {
        println!(
            "{:<24} {:<15} {:<40} {:<24} {}",
            client.id,
            if client.jwks.is_some() {
                "private_key_jwt"
            } else if client.is_public() {
                "public"
            } else {
                "confidential"
            },
            client.grant_types.join(","),
            if client.audiences.is_empty() {
                "-".to_owned()
            } else {
                client.audiences.join(",")
            },
            client.redirect_uris.join(" ")
        );
    }
    Ok(())
}

pub async fn client_rotate_secret(
    dir: &Path,
    id: &str,
    overlap: std::time::Duration,
) -> anyhow::Result<()> {
    let seconds = i64::try_from(overlap.as_secs()).context("the overlap is too long")?;
    let store = open_store(dir).await?;
    let secret =
        admin::rotate_client_secret(&*store, &LogAuditSink, &SystemClock, id, seconds).await?;
    println!("rotated the secret of client {id}");
    println!("new client secret (shown once, store it now): {secret}");
    println!(
        "the old secret keeps working for {}",
        humantime::format_duration(overlap)
    );
    Ok(())
}
