//! `echod serve audit` and `echod audit verify`.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_audit::checkpoint::NoteSigner;
use echo_audit::http::AuditApp;
use echo_audit::service::AuditService;
use echo_audit::store::AuditStore;
use echo_audit::verify::{VerifyError, verify_chain};
use echo_core::SystemClock;
use echo_crypto::secret::{b64url, b64url_decode, random_bytes};
use echo_verify::{HttpJwks, Verifier, VerifierOptions};
use tokio::net::TcpListener;

use crate::settings::{ensure_data_dir, existing_secret_text, secret_text};

pub const AUDIT_DATABASE_URL_VAR: &str = "ECHO_AUDIT_DATABASE_URL";
pub const AUDIT_SIGNING_KEY_VAR: &str = "ECHO_AUDIT_SIGNING_KEY";
const SIGNING_KEY_FILE: &str = "audit-signing.key";
/// Rows read per page while verifying, so memory stays flat.
const VERIFY_PAGE: i64 = 10_000;

/// The audit store: `ECHO_AUDIT_DATABASE_URL`, else `<data>/audit.db`. The
/// audit log has a database of its own, apart from identity's.
pub async fn open_audit_store(dir: &Path) -> anyhow::Result<Arc<dyn AuditStore>> {
    ensure_data_dir(dir)?;
    let url = std::env::var(AUDIT_DATABASE_URL_VAR)
        .ok()
        .filter(|u| !u.is_empty());
    echo_audit::store::open(url.as_deref(), dir)
        .await
        .with_context(|| {
            format!(
                "cannot open the audit database (set by {AUDIT_DATABASE_URL_VAR} or {}/audit.db)",
                dir.display()
            )
        })
}

/// The checkpoint signing key: `ECHO_AUDIT_SIGNING_KEY` or
/// `audit-signing.key` (0600), never the database, so whoever can rewrite
/// the database still cannot sign a checkpoint for the rewritten chain.
pub fn checkpoint_signer(dir: &Path, origin: &str) -> anyhow::Result<NoteSigner> {
    let text = secret_text(dir, AUDIT_SIGNING_KEY_VAR, SIGNING_KEY_FILE, || {
        b64url(&random_bytes::<32>())
    })?;
    let seed: [u8; 32] = b64url_decode(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .with_context(|| {
            format!("{AUDIT_SIGNING_KEY_VAR} or audit-signing.key must be 32 bytes, base64url")
        })?;
    Ok(NoteSigner::from_seed(origin, &seed)?)
}

pub const AUDIT_ORIGIN_VAR: &str = "ECHO_AUDIT_ORIGIN";

/// The name of this log in its checkpoints (C2SP: unique per log, stable
/// for its life): `ECHO_AUDIT_ORIGIN`, default `echo-audit`.
pub fn origin() -> String {
    std::env::var(AUDIT_ORIGIN_VAR)
        .ok()
        .filter(|o| !o.is_empty())
        .unwrap_or_else(|| "echo-audit".to_owned())
}

/// The audit service over the data directory's store and signing key.
async fn service(dir: &Path) -> anyhow::Result<AuditService> {
    let store = open_audit_store(dir).await?;
    let signer = checkpoint_signer(dir, &origin())?;
    Ok(AuditService::new(store, signer, Arc::new(SystemClock)))
}

/// Builds the audit service for `issuer`'s tokens with audience `audience`.
pub async fn build(dir: &Path, issuer: &str, audience: &str) -> anyhow::Result<Arc<AuditApp>> {
    let service = service(dir).await?;
    let jwks = HttpJwks::new(format!("{}/jwks", issuer.trim_end_matches('/')));
    let verifier = Arc::new(Verifier::new(
        issuer,
        Arc::new(jwks),
        VerifierOptions::default(),
    ));
    Ok(Arc::new(AuditApp {
        service,
        verifier,
        audience: audience.to_owned(),
    }))
}

pub async fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}

/// Signs a checkpoint over the head every `every`, when the head moved, so
/// that each interval's history is pinned by a signature handed out; prunes
/// events older than `retention`, if set; and refreshes the query planner's
/// statistics.
pub fn spawn_checkpointer(
    app: Arc<AuditApp>,
    every: std::time::Duration,
    retention: Option<std::time::Duration>,
) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = app.service.checkpoint().await {
                tracing::error!(error = %e, "could not sign an audit checkpoint");
            }
            if let Some(retention) = retention
                && let Err(e) = app.service.prune(cutoff_ms(retention)).await
            {
                tracing::error!(error = %e, "could not prune the audit log");
            }
            if let Err(e) = app.service.optimize().await {
                tracing::warn!(error = %e, "could not refresh audit query statistics");
            }
        }
    });
}

/// Unix milliseconds `age` ago.
fn cutoff_ms(age: std::time::Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(i64::MAX)
}

/// `echod audit prune --older-than AGE`.
pub async fn prune(dir: &Path, older_than: std::time::Duration) -> anyhow::Result<()> {
    let deleted = service(dir).await?.prune(cutoff_ms(older_than)).await?;
    println!("pruned {deleted} events");
    Ok(())
}

/// `echod audit tail`: prints the newest `last` events as JSON lines, then
/// (with `follow`) every new one as it arrives.
pub async fn tail(dir: &Path, last: i64, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let store = open_audit_store(dir).await?;
    let head = store.head().await?.size;
    let mut after = (head - last).max(0);
    loop {
        let rows = store.rows(after, VERIFY_PAGE).await?;
        let mut out = std::io::stdout().lock();
        for row in &rows {
            let mut line = serde_json::to_value(&row.event)?;
            line["seq"] = row.seq.into();
            writeln!(out, "{line}")?;
            after = row.seq;
        }
        out.flush()?;
        drop(out);
        if !follow {
            return Ok(());
        }
        if rows.is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
}

/// `echod audit verify`: walks the whole chain and checks every checkpoint
/// signature; prints `ok <count> events, head <hash>` or names the first
/// changed, removed, inserted, reordered or truncated event. Refuses to run
/// without the signing key rather than create one (a new key would verify
/// no checkpoint).
pub async fn verify(dir: &Path) -> anyhow::Result<bool> {
    if existing_secret_text(dir, AUDIT_SIGNING_KEY_VAR, SIGNING_KEY_FILE)?.is_none() {
        anyhow::bail!(
            "no audit signing key: set {AUDIT_SIGNING_KEY_VAR} or put {SIGNING_KEY_FILE} in {}",
            dir.display()
        );
    }
    let service = service(dir).await?;
    let anchors = match service.signed_anchors().await {
        Ok(anchors) => anchors,
        Err(e) => {
            println!("broken: a stored checkpoint does not verify ({e})");
            return Ok(false);
        }
    };
    match verify_chain(service.store(), anchors).await {
        Ok(verified) => {
            let head: String = verified
                .summary
                .head
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("ok {} events, head {head}", verified.events());
            if verified.start.size > 0 {
                println!(
                    "events 1 to {} were pruned; the rest chains from the signed checkpoint at that size",
                    verified.start.size
                );
            }
            Ok(true)
        }
        Err(VerifyError::Broken(broken)) => {
            println!("broken: {:?} at event {}", broken.kind, broken.event_id);
            Ok(false)
        }
        Err(VerifyError::Store(e)) => Err(e.into()),
    }
}
