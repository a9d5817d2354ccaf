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

use crate::settings::open_store;
use crate::{ClientAddArgs, Grant};

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

pub async fn user_add(
    dir: &Path,
    name: String,
    email: Option<String>,
    roles: Vec<String>,
) -> anyhow::Result<()> {
    let password = read_stdin_line("password")?;
    let store = open_store(dir).await?;
    let user = admin::add_user(
        &*store,
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

pub async fn user_list(dir: &Path) -> anyhow::Result<()> {
    let store = open_store(dir).await?;
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
