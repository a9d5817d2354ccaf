//! `echod keys …`: signing keys, on the same database as running servers,
//! which pick changes up at their next key reload (every 10 s by default).

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::{Args, Subcommand};
use echo_core::SystemClock;
use echo_core::audit::LogAuditSink;
use echo_crypto::TrustedRoots;
use echo_identity::{IdentityConfig, KeyAdmin, KeyInfo};

use crate::args::TokenAlg;
use crate::settings::{master_key, open_store};

/// How long a new key is published before it signs; shared by `echod keys
/// rotate` and the servers' own rotation.
#[derive(Debug, Clone, Args)]
pub struct PublishDelayArg {
    /// How long a new signing key is in the JWKS before it signs (e.g.
    /// `10m`); at least the verifiers' JWKS refresh bound.
    #[arg(long = "key-publish-delay", env = "ECHO_KEY_PUBLISH_DELAY", default_value = "10m", value_parser = humantime::parse_duration)]
    pub key_publish_delay: Duration,
}

impl PublishDelayArg {
    pub fn seconds(&self) -> anyhow::Result<i64> {
        i64::try_from(self.key_publish_delay.as_secs()).context("the publish delay is too long")
    }
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List signing keys: kid, algorithm, audience, state and times.
    List,
    /// Create the next key: published now, signing after the publish
    /// delay, when the key it replaces retires.
    Rotate {
        /// Algorithm of the new key (default: every algorithm with an
        /// active general key).
        #[arg(long, value_enum)]
        alg: Option<TokenAlg>,
        /// Scope the key to one audience: tokens for it are signed with it.
        #[arg(long)]
        audience: Option<String>,
        #[command(flatten)]
        delay: PublishDelayArg,
    },
    /// Stop signing with a key now; it stays published until the last
    /// token it signed has expired.
    Retire {
        /// The key's id (`echod keys list`).
        kid: String,
    },
    /// Unpublish a key now: every token it signed stops verifying.
    Revoke {
        /// The key's id (`echod keys list`).
        kid: String,
    },
}

/// Unix seconds as RFC 3339 (UTC).
fn time(seconds: i64) -> String {
    u64::try_from(seconds).map_or_else(
        |_| seconds.to_string(),
        |s| humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(s)).to_string(),
    )
}

fn print_keys(keys: &[KeyInfo]) {
    println!(
        "{:<20} {:<6} {:<16} {:<8} {:<21} {:<21} {:<21} UNPUBLISHED",
        "KID", "ALG", "AUDIENCE", "STATE", "CREATED", "ACTIVATED", "RETIRED"
    );
    let or_dash = |t: Option<i64>| t.map_or_else(|| "-".to_owned(), time);
    for k in keys {
        println!(
            "{:<20} {:<6} {:<16} {:<8} {:<21} {:<21} {:<21} {}",
            k.kid,
            k.alg,
            k.audience.as_deref().unwrap_or("*"),
            k.state,
            time(k.created_at),
            time(k.activates_at),
            or_dash(k.retires_at),
            or_dash(k.unpublished_at),
        );
    }
}

/// `echod keys …`.
pub async fn keys_command(
    dir: &Path,
    roots: &TrustedRoots,
    command: KeysCommand,
) -> anyhow::Result<()> {
    let store = open_store(dir, roots).await?;
    let master = master_key(dir)?;
    let mut config = IdentityConfig::new("");
    if let KeysCommand::Rotate { delay, .. } = &command {
        config.keys.publish_delay = delay.seconds()?;
    }
    let admin = KeyAdmin::new(
        &*store,
        &master,
        &LogAuditSink,
        &SystemClock,
        &config,
        "cli",
    );
    match command {
        KeysCommand::List => print_keys(&admin.list().await?),
        KeysCommand::Rotate { alg, audience, .. } => {
            let created = admin
                .rotate(alg.map(Into::into), audience.as_deref())
                .await?;
            for key in &created {
                println!(
                    "created key {} ({}), published now, signing from {}",
                    key.kid,
                    key.alg,
                    time(key.activates_at)
                );
            }
        }
        KeysCommand::Retire { kid } => {
            let key = admin.retire(&kid).await?;
            println!(
                "retired key {kid}: signs no more, published until {}",
                key.unpublished_at.map_or_else(|| "-".to_owned(), time)
            );
        }
        KeysCommand::Revoke { kid } => {
            let revocation = admin.revoke(&kid).await?;
            println!("revoked key {kid}: unpublished, its tokens no longer verify");
            if let Some(next) = revocation.takeover {
                println!("key {} ({}) signs from now", next.kid, next.alg);
            }
        }
    }
    Ok(())
}
