//! `echod serve identity` (and identity inside `echod up`): its options,
//! and the audit writer identity feeds its own tokens to.

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_core::SystemClock;
use echo_core::audit::AuditSink;
use echo_crypto::TrustedRoots;
use echo_edge::{Service, SharedCounters, TokenSource, TrustedProxies};
use echo_identity::mail::{Mailer, Outbox, SmtpSettings};
use echo_identity::{DatabaseCounters, IdentityConfig, InitialAccessToken, Provider};
use echo_identity_store::Store;
use echo_queue::{QueueConfig, SqliteQueue};
use tokio::net::TcpListener;

use crate::args::{AuditTargetArgs, RateLimitArgs, TlsArgs, TokenAlg};
use crate::first_party::{AUDIT_WRITE, ServiceAudit};
use crate::settings::{
    CLIENT_REGISTRATION_TOKEN_VAR, DATABASE_URL_VAR, master_key, open_store, secret_var,
};
use crate::tls::ServiceTls;
use crate::{account_policy, keys};

#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_IDENTITY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub identity_listen: String,
    /// Public issuer URL (default: http://<listen address>).
    #[arg(long, env = "ECHO_ISSUER")]
    pub issuer: Option<String>,
    /// Algorithm of access tokens.
    #[arg(long, env = "ECHO_ACCESS_TOKEN_ALG", value_enum, default_value_t = TokenAlg::EdDsa)]
    pub access_token_alg: TokenAlg,
    /// Replace each signing key once it is this old (e.g. `30d`); `0s`
    /// turns automatic rotation off.
    #[arg(long, env = "ECHO_KEY_ROTATION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub key_rotation: std::time::Duration,
    #[command(flatten)]
    pub key_publish_delay: keys::PublishDelayArg,
    #[command(flatten)]
    pub account_policy: account_policy::AccountPolicyArgs,
    /// Reverse proxies in front of identity, as comma-separated addresses or
    /// CIDR blocks: from these peers only, `X-Forwarded-For` names the
    /// client for per-address limits and audit events. None by default
    /// (the peer is the client).
    #[arg(long, env = "ECHO_TRUSTED_PROXIES", default_value = "", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,
    #[command(flatten)]
    pub smtp: SmtpArgs,
    /// Let clients register themselves (RFC 7591) at /oauth2/register with
    /// the initial access token of ECHO_CLIENT_REGISTRATION_TOKEN (or the
    /// file ECHO_CLIENT_REGISTRATION_TOKEN_FILE names). Off by default.
    #[arg(long, env = "ECHO_CLIENT_REGISTRATION")]
    pub client_registration: bool,
}

impl IdentityArgs {
    /// The initial access token when registration is on; on without one
    /// is an error, not an open endpoint.
    fn client_registration(&self) -> anyhow::Result<Option<InitialAccessToken>> {
        if !self.client_registration {
            return Ok(None);
        }
        let token = secret_var(CLIENT_REGISTRATION_TOKEN_VAR)?.with_context(|| {
            format!(
                "--client-registration needs {CLIENT_REGISTRATION_TOKEN_VAR} or \
                 {CLIENT_REGISTRATION_TOKEN_VAR}_FILE"
            )
        })?;
        let token = InitialAccessToken::new(&token)
            .map_err(|e| anyhow::anyhow!("{CLIENT_REGISTRATION_TOKEN_VAR}: {e}"))?;
        Ok(Some(token))
    }
}

/// Where identity sends mail from (password-reset links). Without
/// `--smtp-url` no mail is sent and `/password/forgot` says so. The
/// password of the URL's user is never a flag: `ECHO_SMTP_PASSWORD_FILE`
/// names the file that holds it (or `ECHO_SMTP_PASSWORD` holds it).
#[derive(Debug, Clone, Args)]
pub struct SmtpArgs {
    /// SMTP server: `smtp://[user@]host:port` (STARTTLS when the server
    /// offers it; `?tls=required` refuses one that does not) or
    /// `smtps://[user@]host:port` (TLS from the first byte).
    #[arg(long = "smtp-url", env = "ECHO_SMTP_URL")]
    pub smtp_url: Option<String>,
    /// The sender of identity's mail, e.g. `Echo <echo@example.com>`.
    #[arg(long = "smtp-from", env = "ECHO_SMTP_FROM")]
    pub smtp_from: Option<String>,
}

/// How identity's outbox retries: a message waits out a mail server that
/// is down for up to about an hour (back-off doubling from 2 s to 10 min).
const MAIL_RETRIES: QueueConfig = QueueConfig {
    max_attempts: 12,
    backoff_base: Duration::from_secs(2),
    backoff_cap: Duration::from_secs(600),
    nats_lease: Duration::from_secs(30),
    nats_name: String::new(),
};

impl SmtpArgs {
    /// The outbox these settings name: its queue is SQLite
    /// `<data>/mail-queue.db`, identity's own. `None` without a server.
    pub(crate) async fn outbox(
        &self,
        data_dir: &Path,
        roots: &TrustedRoots,
    ) -> anyhow::Result<Option<Outbox>> {
        let Some(url) = self.smtp_url.as_deref().filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let from = self
            .smtp_from
            .clone()
            .context("ECHO_SMTP_URL is set but not ECHO_SMTP_FROM, the sender's address")?;
        let password = secret_var("ECHO_SMTP_PASSWORD")?;
        let settings = SmtpSettings {
            url: url.to_owned(),
            from,
            password,
        };
        let mailer = Mailer::new(&settings, roots)?;
        let queue = SqliteQueue::open(&data_dir.join("mail-queue.db"), MAIL_RETRIES)
            .await
            .context("cannot open identity's mail queue")?;
        Ok(Some(Outbox::new(Arc::new(queue), mailer)))
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServeIdentityArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    #[command(flatten)]
    pub audit: AuditTargetArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub limits: RateLimitArgs,
}

/// Identity on `listener` with `tls`, over `store`, recording its events
/// to the audit service at `audit` (URL, audience) or to the log, counting
/// its rate limits in `limits` (shared with other replicas) or in itself;
/// its account pages' navigation bar leads to the gateway at `portal`.
pub async fn start(
    (data_dir, roots): (&Path, &TrustedRoots),
    listener: TcpListener,
    args: &IdentityArgs,
    (store, limits): (Arc<dyn Store>, Option<Arc<dyn SharedCounters>>),
    audit: Option<(&str, &str)>,
    (tls, portal): (&ServiceTls, Option<&str>),
) -> anyhow::Result<(Service, Arc<Provider>)> {
    let issuer = match &args.issuer {
        Some(issuer) => issuer.clone(),
        None => tls.url_of(&listener)?,
    };
    url::Url::parse(&issuer).with_context(|| format!("issuer {issuer:?} is not a URL"))?;
    let mut config = IdentityConfig::new(&issuer);
    config.access_token_alg = args.access_token_alg.into();
    config.keys.publish_delay = args.key_publish_delay.seconds()?;
    config.keys.rotation_interval =
        i64::try_from(args.key_rotation.as_secs()).context("the key rotation is too long")?;
    args.account_policy.apply(&mut config)?;
    config.trusted_proxies = args.trusted_proxies.clone();
    config.client_registration = args.client_registration()?;
    config.portal_url = portal.map(str::to_owned);
    let own_token = Arc::new(OwnToken {
        provider: OnceLock::new(),
        audience: audit
            .map(|(_, audience)| audience.to_owned())
            .unwrap_or_default(),
    });
    let writer = match audit {
        Some((url, _)) => {
            ServiceAudit::start(data_dir, "identity", (url, &tls.client), own_token.clone())?
        }
        None => ServiceAudit::log(),
    };
    let master = master_key(data_dir)?;
    let sink: Arc<dyn AuditSink> = writer.sink.clone();
    let mut provider = Provider::new(config, store, &master, sink, Arc::new(SystemClock)).await?;
    if let Some(counters) = limits {
        provider = provider.share_limits(counters);
    }
    if let Some(outbox) = args.smtp.outbox(data_dir, roots).await? {
        provider = provider.with_outbox(outbox);
    }
    let provider = Arc::new(provider);
    let _ = own_token.provider.set(provider.clone());
    tracing::info!(issuer = %provider.config().issuer, "identity listening");
    let service = tls.apply(
        echo_identity::http::service(listener, provider.clone())
            .with_checks(writer.check())
            .on_stop(writer.shutdown()),
    );
    Ok((service, provider))
}

pub async fn serve(
    data_dir: &Path,
    roots: &TrustedRoots,
    args: &ServeIdentityArgs,
) -> anyhow::Result<()> {
    let store = open_store(data_dir, roots).await?;
    let limits = shared_limits(&args.limits, roots, &store).await?;
    let tls = ServiceTls::from_args(&args.tls, roots)?;
    let listener = echo_edge::bind(&args.identity.identity_listen).await?;
    let audit = args
        .audit
        .audit_url
        .as_deref()
        .map(|url| (url, args.audit.audience.audit_audience.as_str()));
    let (service, _) = start(
        (data_dir, roots),
        listener,
        &args.identity,
        (store, limits),
        audit,
        // Alone, identity does not know where the gateway is.
        (&tls, None),
    )
    .await?;
    echo_edge::run_until_signalled(service).await?;
    Ok(())
}

/// Where replicas count identity's rate limits together: the Redis of
/// `--rate-limit-url`, else the PostgreSQL identity runs on; on SQLite
/// (one process) nowhere but in the process.
async fn shared_limits(
    args: &RateLimitArgs,
    roots: &TrustedRoots,
    store: &Arc<dyn Store>,
) -> anyhow::Result<Option<Arc<dyn SharedCounters>>> {
    if let Some(redis) = args.redis(roots).await? {
        return Ok(Some(redis));
    }
    let on_postgres = secret_var(DATABASE_URL_VAR)?.is_some();
    Ok(on_postgres.then(|| Arc::new(DatabaseCounters(store.clone())) as Arc<dyn SharedCounters>))
}

/// Identity's token for its own audit writes, minted by identity itself
/// once it runs (the writer starts before the provider exists).
struct OwnToken {
    provider: OnceLock<Arc<Provider>>,
    audience: String,
}

#[async_trait::async_trait]
impl TokenSource for OwnToken {
    async fn token(&self) -> Result<String, String> {
        let provider = self.provider.get().ok_or("identity is not running yet")?;
        provider
            .own_service_token(&self.audience, AUDIT_WRITE)
            .map_err(|e| e.to_string())
    }
}
