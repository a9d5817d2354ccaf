//! `echod serve audit` (and the audit service inside `echod up`), and
//! `echod audit verify | checkpoint | tail | prune`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_audit::checkpoint::{Checkpoint, NoteSigner, split_notes, verify_note};
use echo_audit::http::AuditApp;
use echo_audit::service::AuditService;
use echo_audit::store::AuditStore;
use echo_audit::verify::{VerifyError, check_pinned, verify_chain};
use echo_core::SystemClock;
use echo_crypto::TrustedRoots;
use echo_crypto::secret::{b64url, b64url_decode, random_bytes};
use echo_edge::{Periodic, Service};
use echo_verify::Verifier;
use tokio::net::TcpListener;

use crate::args::{IssuerArg, TlsArgs};
use crate::tls::ServiceTls;

use crate::settings::{ensure_data_dir, existing_secret_text, secret_text, secret_var};

pub const AUDIT_DATABASE_URL_VAR: &str = "ECHO_AUDIT_DATABASE_URL";
pub const AUDIT_SIGNING_KEY_VAR: &str = "ECHO_AUDIT_SIGNING_KEY";
const SIGNING_KEY_FILE: &str = "audit-signing.key";
/// Rows read per page while verifying, so memory stays flat.
const VERIFY_PAGE: i64 = 10_000;

/// The audit store: `ECHO_AUDIT_DATABASE_URL` (or its `_FILE`; its TLS
/// trusting `roots`), else `<data>/audit.db`. The audit log has a database
/// of its own, apart from identity's.
pub async fn open_audit_store(
    dir: &Path,
    roots: &TrustedRoots,
) -> anyhow::Result<Arc<dyn AuditStore>> {
    ensure_data_dir(dir)?;
    let url = secret_var(AUDIT_DATABASE_URL_VAR)?;
    echo_audit::store::open(url.as_deref(), roots, dir)
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
async fn service(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<AuditService> {
    let store = open_audit_store(dir, roots).await?;
    let signer = checkpoint_signer(dir, &origin())?;
    Ok(AuditService::new(store, signer, Arc::new(SystemClock)))
}

#[derive(Debug, Clone, Args)]
pub struct ServeAuditArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_AUDIT_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub audit_listen: String,
    #[command(flatten)]
    pub issuer: IssuerArg,
    /// Audience of tokens the audit service accepts.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audience: String,
    #[command(flatten)]
    pub schedule: CheckpointArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// How often the log is pinned by a signed checkpoint, and how long it
/// keeps events (`serve audit` and `up`).
#[derive(Debug, Clone, Args)]
pub struct CheckpointArgs {
    /// Seconds between signed checkpoints (when the log grew).
    #[arg(
        long = "audit-checkpoint-seconds",
        visible_alias = "checkpoint-seconds",
        env = "ECHO_AUDIT_CHECKPOINT_SECONDS",
        default_value_t = 60
    )]
    pub checkpoint_seconds: u64,
    /// Prune events older than this (e.g. `90d`), at each checkpoint;
    /// without it events are kept forever.
    #[arg(long = "audit-retention", visible_alias = "retention", env = "ECHO_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
}

/// The audit service on `listener` for the tokens `verifier` passes with
/// audience `audience`, signing checkpoints (and pruning) on `schedule`.
pub async fn start(
    (dir, roots): (&Path, &TrustedRoots),
    listener: TcpListener,
    verifier: Arc<Verifier>,
    audience: &str,
    schedule: &CheckpointArgs,
) -> anyhow::Result<Service> {
    let service = service(dir, roots).await?;
    // Pins what an earlier run left unpinned (it stopped between two
    // ticks), so those events and the ones after the restart fall on either
    // side of a checkpoint rather than look like a deleted one to `verify`.
    if let Err(e) = service.checkpoint().await {
        tracing::error!(error = %e, "could not sign a checkpoint at start");
    }
    let app = Arc::new(AuditApp::new(service, verifier, audience));
    let checkpoints = checkpoint_job(
        app.clone(),
        Duration::from_secs(schedule.checkpoint_seconds.max(1)),
        schedule.retention,
    );
    Ok(echo_audit::http::service(listener, app).with_job(checkpoints))
}

pub async fn serve(dir: &Path, roots: &TrustedRoots, args: &ServeAuditArgs) -> anyhow::Result<()> {
    let tls = ServiceTls::from_args(&args.tls, roots)?;
    let listener = echo_edge::bind(&args.audit_listen).await?;
    let service = start(
        (dir, roots),
        listener,
        args.issuer.verifier(&tls.client),
        &args.audience,
        &args.schedule,
    )
    .await?;
    echo_edge::run_until_signalled(tls.apply(service)).await?;
    Ok(())
}

/// Signs a checkpoint over the head every `every`, when the head moved, so
/// that each interval's history is pinned by a signature handed out (one
/// per interval for all the replicas on one database); prunes
/// events older than `retention`, if set; and refreshes the query planner's
/// statistics.
fn checkpoint_job(app: Arc<AuditApp>, every: Duration, retention: Option<Duration>) -> Periodic {
    Periodic::every("audit checkpoint", every, move || {
        let app = app.clone();
        async move {
            app.service.scheduled_checkpoint(every).await?;
            if let Some(retention) = retention {
                app.service.prune(cutoff_ms(retention)).await?;
            }
            app.service.optimize().await
        }
    })
}

/// Unix milliseconds `age` ago.
fn cutoff_ms(age: Duration) -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.saturating_sub(age).as_millis()).unwrap_or(i64::MAX)
}

/// `echod audit prune --older-than AGE`.
pub async fn prune(dir: &Path, roots: &TrustedRoots, older_than: Duration) -> anyhow::Result<()> {
    let deleted = service(dir, roots)
        .await?
        .prune(cutoff_ms(older_than))
        .await?;
    println!("pruned {deleted} events");
    Ok(())
}

/// `echod audit tail`: prints the newest `last` events as JSON lines, then
/// (with `follow`) every new one as it arrives.
pub async fn tail(dir: &Path, roots: &TrustedRoots, last: i64, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let store = open_audit_store(dir, roots).await?;
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
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// `echod audit verify`'s arguments.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// A file of signed checkpoints kept outside the database (what
    /// `echod audit checkpoint` printed, appended one after another); the
    /// chain must contain and extend every one. Repeatable.
    #[arg(long = "trusted-checkpoint", value_name = "FILE")]
    pub trusted_checkpoints: Vec<PathBuf>,
    /// The service's seconds between checkpoints: events older than two
    /// intervals must be pinned by a checkpoint, and the events between two
    /// checkpoints may not span more.
    #[arg(
        long = "audit-checkpoint-seconds",
        visible_alias = "checkpoint-seconds",
        env = "ECHO_AUDIT_CHECKPOINT_SECONDS",
        default_value_t = 60
    )]
    pub checkpoint_seconds: u64,
}

/// The audit service for a command that signs or checks signatures: refuses
/// to run without the signing key rather than create one (a new key would
/// verify no checkpoint).
async fn service_with_key(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<AuditService> {
    if existing_secret_text(dir, AUDIT_SIGNING_KEY_VAR, SIGNING_KEY_FILE)?.is_none() {
        anyhow::bail!(
            "no audit signing key: set {AUDIT_SIGNING_KEY_VAR} or put {SIGNING_KEY_FILE} in {}",
            dir.display()
        );
    }
    service(dir, roots).await
}

/// `echod audit checkpoint`: prints the newest signed checkpoint, signing
/// the head first if it moved (and only if the chain extends what was
/// signed before), for an operator to keep elsewhere.
pub async fn checkpoint(dir: &Path, roots: &TrustedRoots) -> anyhow::Result<()> {
    let note = service_with_key(dir, roots).await?.checkpoint().await?;
    print!("{note}");
    Ok(())
}

/// The checkpoints in `files`, each signature checked with `service`'s key;
/// `Err` with the line to print if one is unreadable as a checkpoint.
fn trusted_checkpoints(
    service: &AuditService,
    files: &[PathBuf],
) -> anyhow::Result<Result<Vec<Checkpoint>, String>> {
    let mut all = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read trusted checkpoint file {}", file.display()))?;
        let notes = split_notes(&text);
        if notes.is_empty() {
            return Ok(Err(format!(
                "broken: trusted checkpoint file {} holds no checkpoint",
                file.display()
            )));
        }
        for note in notes {
            match verify_note(note, &service.verifier_key()) {
                Ok(checkpoint) => all.push(checkpoint),
                Err(e) => {
                    return Ok(Err(format!(
                        "broken: a trusted checkpoint in {} does not verify with the audit signing key ({e})",
                        file.display()
                    )));
                }
            }
        }
    }
    Ok(Ok(all))
}

/// `echod audit verify`: walks the whole chain and checks every checkpoint
/// signature, stored or trusted; prints `ok <count> events, head <hash>` or
/// names the first changed, removed, inserted, reordered or truncated event,
/// or the first event no checkpoint pins in time (`Unpinned`, `Gap`).
pub async fn verify(dir: &Path, roots: &TrustedRoots, args: &VerifyArgs) -> anyhow::Result<bool> {
    let service = service_with_key(dir, roots).await?;
    let stored = match service.signed_checkpoints().await {
        Ok(checkpoints) => checkpoints,
        Err(e) => {
            println!("broken: a stored checkpoint does not verify ({e})");
            return Ok(false);
        }
    };
    let trusted = match trusted_checkpoints(&service, &args.trusted_checkpoints)? {
        Ok(trusted) => trusted,
        Err(line) => {
            println!("{line}");
            return Ok(false);
        }
    };
    let all: Vec<Checkpoint> = stored.into_iter().chain(trusted.iter().cloned()).collect();
    let anchors = all.iter().map(Checkpoint::anchor).collect();
    let verified = match verify_chain(service.store(), anchors).await {
        Ok(verified) => verified,
        Err(VerifyError::Broken(broken)) => {
            println!("broken: {:?} at event {}", broken.kind, broken.event_id);
            return Ok(false);
        }
        Err(VerifyError::Store(e)) => return Err(e.into()),
    };
    let interval = i64::try_from(args.checkpoint_seconds.max(1)).unwrap_or(i64::MAX);
    let unpinned = check_pinned(
        service.store().as_ref(),
        &verified,
        &all,
        interval,
        cutoff_ms(Duration::ZERO),
    )
    .await?;
    if let Some(unpinned) = unpinned {
        println!("broken: {unpinned}");
        return Ok(false);
    }
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
    if let Some(newest) = trusted.iter().map(|c| c.size).max() {
        let pruned = trusted
            .iter()
            .filter(|c| c.size < verified.start.size)
            .count();
        println!(
            "{} trusted checkpoints, the newest at size {newest}, are contained and extended ({pruned} of them lie in the pruned part, not compared)",
            trusted.len()
        );
    }
    Ok(true)
}
