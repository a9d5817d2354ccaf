//! `echod serve gateway` (and the gateway inside `echod up`): its options,
//! its secret, its session store and verifier. Its routes come from the
//! configuration file (`config.rs`).
//! Its registration at identity is `bootstrap.rs`'s.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use echo_core::SystemClock;
use echo_crypto::TrustedRoots;
use echo_edge::{Service, ServiceTokens, SharedCounters};
use echo_gateway::{
    ClientSecret, Gateway, GatewayConfig, GatewayFile, RedisSessionStore, SessionStore,
    SqliteSessionStore,
};
use echo_verify::Verifier;
use tokio::net::TcpListener;

use crate::args::{AuditTargetArgs, IssuerArg, RateLimitArgs, TlsArgs};
use crate::first_party::{self, SecretPlace, ServiceAudit};
use crate::settings::{ensure_data_dir, master_key, url_setting};
use crate::tls::ServiceTls;

#[derive(Debug, Clone, Args)]
pub struct ServeGatewayArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// Identity: where users sign in, whose JWKS verifies tokens.
    #[command(flatten)]
    pub issuer: IssuerArg,
    /// The gateway's external base URL, for its redirect URIs (default:
    /// http://<listen address>, https:// with `--tls-cert`).
    #[arg(long, env = "ECHO_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub session: GatewaySessionArgs,
    /// The audit service the gateway records its events to and reads the
    /// logs pages from, as client `gateway`.
    #[command(flatten)]
    pub audit: AuditTargetArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: RateLimitArgs,
}

/// The gateway's sessions (`serve gateway` and `up`).
#[derive(Debug, Clone, Args)]
pub struct GatewaySessionArgs {
    /// A gateway session unused this long ends (e.g. `30m`).
    #[arg(long = "gateway-session-idle", env = "ECHO_GATEWAY_SESSION_IDLE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub session_idle: std::time::Duration,
    /// No gateway session outlives its login by more than this (e.g. `12h`).
    #[arg(long = "gateway-session-max", env = "ECHO_GATEWAY_SESSION_MAX", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_max: std::time::Duration,
    /// Keep gateway sessions in this Redis (`redis://host:port[/db]`, or
    /// `rediss://…` for TLS; one with a password by `ECHO_REDIS_URL` or
    /// `ECHO_REDIS_URL_FILE`)
    /// instead of `<data>/gateway.db`.
    #[arg(long = "redis-url", env = "ECHO_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of the gateway's keys in Redis.
    #[arg(long = "redis-prefix", env = "ECHO_REDIS_PREFIX", default_value = echo_gateway::DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
}

/// The gateway's client id at identity (and the audience of its API).
pub const CLIENT_ID: &str = "gateway";
/// Its client secret (`echod up` creates the file on first run).
pub const SECRET: SecretPlace = SecretPlace {
    var: "ECHO_GATEWAY_CLIENT_SECRET",
    file: "gateway-client.secret",
    service: "the gateway",
};

/// The gateway's client secret (see [`SECRET`]).
pub fn client_secret(dir: &Path, create: bool) -> anyhow::Result<ClientSecret> {
    first_party::client_secret(dir, &SECRET, create).map(ClientSecret::new)
}

/// `<public URL>` given, or `http(s)://<listen address>` as it serves.
pub fn public_url(
    given: Option<&str>,
    listener: &TcpListener,
    tls: &ServiceTls,
) -> anyhow::Result<String> {
    Ok(match given {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => tls.url_of(listener)?,
    })
}

/// Where sessions live: Redis if `--redis-url` (or `ECHO_REDIS_URL_FILE`)
/// names one, else
/// `<data>/gateway.db`.
async fn session_store(
    (dir, roots): (&Path, &TrustedRoots),
    session: &GatewaySessionArgs,
    idle_ttl: i64,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    if let Some(url) = url_setting(session.redis_url.as_deref(), "ECHO_REDIS_URL")? {
        let store = RedisSessionStore::open(&url, roots, &session.redis_prefix, idle_ttl)
            .await
            .context("cannot connect to the gateway's Redis (ECHO_REDIS_URL)")?;
        return Ok(Arc::new(store));
    }
    let path = dir.join("gateway.db");
    let store = SqliteSessionStore::open(&path)
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    Ok(Arc::new(store))
}

/// The gateway on `listener` at `public_url`, in front of the issuer whose
/// tokens `verifier` checks, with
/// the routes of `file`; it records to and reads from the audit service
/// at `audit` (URL, audience), or records to the log. Its rate limits
/// count in `limits` (shared with other replicas) or in itself.
#[allow(clippy::too_many_arguments)]
pub async fn start(
    (dir, roots): (&Path, &TrustedRoots),
    (listener, tls): (TcpListener, &ServiceTls),
    verifier: Arc<Verifier>,
    public_url: &str,
    secret: ClientSecret,
    (session, limits): (&GatewaySessionArgs, Option<Arc<dyn SharedCounters>>),
    file: &GatewayFile,
    (audit_url, audit_audience): (Option<&str>, &str),
) -> anyhow::Result<Service> {
    ensure_data_dir(dir)?;
    let issuer = &verifier.issuer().to_owned();
    let seconds = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let mut config = GatewayConfig::new(public_url, issuer, secret.clone())?;
    config.session_idle_ttl = seconds(session.session_idle).max(1);
    config.session_absolute_ttl = seconds(session.session_max).max(1);
    config.audit_url = audit_url.map(|u| u.trim_end_matches('/').to_owned());
    config.audit_audience = audit_audience.to_owned();
    config.apply_file(file)?;
    config.tls = tls.client.clone();
    let audit = match audit_url {
        Some(url) => {
            let tokens = Arc::new(ServiceTokens::new(
                issuer,
                CLIENT_ID,
                secret.expose(),
                &tls.client,
            ));
            ServiceAudit::writer(dir, &tokens, (url, &tls.client), audit_audience)?
        }
        None => ServiceAudit::log(),
    };
    let store = session_store((dir, roots), session, config.session_idle_ttl).await?;
    let master = master_key(dir)?;
    let mut gateway = Gateway::new(
        config,
        store,
        &master,
        verifier,
        audit.sink.clone(),
        Arc::new(SystemClock),
    );
    if let Some(counters) = limits {
        gateway = gateway.share_limits(counters);
    }
    let gateway = Arc::new(gateway);
    tracing::info!(public_url, issuer, "gateway listening");
    Ok(tls.apply(
        echo_gateway::http::service(listener, gateway)
            .with_checks(audit.check())
            .on_stop(audit.shutdown()),
    ))
}

/// The gateway alone, in front of the identity at `--issuer`, with the
/// routes of `file` (the configuration file's). Its client registration and
/// secret must exist (`echod up` creates both; elsewhere `echod client add
/// gateway …` and `ECHO_GATEWAY_CLIENT_SECRET` or its `_FILE`).
pub async fn serve(
    data_dir: &Path,
    roots: &TrustedRoots,
    args: &ServeGatewayArgs,
    file: &GatewayFile,
) -> anyhow::Result<()> {
    let tls = ServiceTls::from_args(&args.tls, roots)?;
    let listener = echo_edge::bind(&args.listen).await?;
    let url = public_url(args.public_url.as_deref(), &listener, &tls)?;
    let secret = client_secret(data_dir, false)?;
    let limits = args.limits.redis(roots).await?;
    let service = start(
        (data_dir, roots),
        (listener, &tls),
        args.issuer.verifier(&tls.client),
        &url,
        secret,
        (&args.session, limits),
        file,
        (
            args.audit.audit_url.as_deref(),
            &args.audit.audience.audit_audience,
        ),
    )
    .await?;
    echo_edge::run_until_signalled(service).await?;
    Ok(())
}
