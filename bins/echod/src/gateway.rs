//! The gateway's composition: its secret, its registration at identity
//! (by `echod up`), its session database and verifier.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_audit_client::{AuditWriter, ClientCredentials, WriterConfig};
use echo_core::SystemClock;
use echo_core::audit::{AuditSink, LogAuditSink};
use echo_gateway::{
    ClientSecret, Gateway, GatewayConfig, GatewayFile, RedisSessionStore, SessionStore,
    SqliteSessionStore,
};
use echo_identity::admin;
use echo_identity::exchange::GRANT_TOKEN_EXCHANGE;
use echo_store::Store;
use echo_verify::{HttpJwks, Verifier, VerifierOptions};

use crate::GatewaySessionArgs;
use crate::first_party::{self, Registration, SecretPlace};
use crate::settings::{ensure_data_dir, master_key};

/// The gateway's client id at identity (and the audience of its API).
pub const CLIENT_ID: &str = "gateway";
/// Code flow with refresh tokens for browsers, client credentials for its
/// own audit writes and reads, token exchange for its routes' upstreams.
const GRANTS: [&str; 4] = [
    admin::GRANT_AUTHORIZATION_CODE,
    admin::GRANT_REFRESH_TOKEN,
    admin::GRANT_CLIENT_CREDENTIALS,
    GRANT_TOKEN_EXCHANGE,
];
const SCOPES: [&str; 4] = ["openid", "profile", "offline_access", "audit.read"];
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

/// The gateway's configuration file (`--config`, `ECHO_CONFIG`), parsed
/// and validated; none is an empty file (no routes, default limits).
pub fn load_file(path: Option<&Path>) -> anyhow::Result<GatewayFile> {
    let Some(path) = path else {
        return Ok(GatewayFile::default());
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = GatewayFile::parse(&text).with_context(|| format!("in {}", path.display()))?;
    // Validate now, so a bad route stops the start with its name.
    file.route_table()
        .and_then(|_| file.rate_limits())
        .with_context(|| format!("in {}", path.display()))?;
    Ok(file)
}

/// The audiences the gateway may ask identity for: its own, the audit
/// service's, and every route's upstream.
fn audiences(audit_audience: &str, file: &GatewayFile) -> Vec<String> {
    let mut all = vec![CLIENT_ID.to_owned(), audit_audience.to_owned()];
    for spec in &file.routes {
        if !all.contains(&spec.audience) {
            all.push(spec.audience.clone());
        }
    }
    all
}

/// `<public URL>` given, or `http://<listen address>`.
pub fn public_url(
    given: Option<&str>,
    listener: &tokio::net::TcpListener,
) -> anyhow::Result<String> {
    Ok(match given {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => format!("http://{}", listener.local_addr()?),
    })
}

/// Registers the gateway at identity as a first-party confidential client
/// (bootstrap of `echod up`): code flow with refresh tokens for browsers,
/// client credentials for its own audit writes and reads, token exchange
/// (RFC 8693) for the upstreams of its routes. An existing registration
/// gets the current secret and whatever grants, audiences (a new route's)
/// and scopes it lacks; redirect URIs are not changed in place, so a moved
/// gateway is reported.
pub async fn register_client(
    store: &dyn Store,
    url: &str,
    secret: &ClientSecret,
    audit_audience: &str,
    file: &GatewayFile,
) -> anyhow::Result<()> {
    let audiences = audiences(audit_audience, file);
    let redirect_uri = format!("{url}/callback");
    let signed_out = format!("{url}/signed-out");
    let registered = first_party::register(
        store,
        Registration {
            id: CLIENT_ID,
            secret: secret.expose(),
            grants: GRANTS.map(String::from).to_vec(),
            audiences,
            scopes: SCOPES.map(String::from).to_vec(),
            redirect_uris: vec![redirect_uri.clone()],
            post_logout_redirect_uris: vec![signed_out.clone()],
        },
    )
    .await?;
    let Some(client) = registered else {
        println!("registered the gateway as client {CLIENT_ID} of identity");
        return Ok(());
    };
    if !client.redirect_uris.contains(&redirect_uri)
        || !client.post_logout_redirect_uris.contains(&signed_out)
    {
        tracing::warn!(
            client = CLIENT_ID,
            registered = ?client.redirect_uris,
            wanted = %redirect_uri,
            "the gateway client is registered for another address: sign-in through the gateway \
             will fail until its redirect URIs are updated"
        );
    }
    Ok(())
}

/// Where the gateway's audit events go, and the writer to flush at
/// shutdown if it is one.
pub struct GatewayAudit {
    pub sink: Arc<dyn AuditSink>,
    pub writer: Option<Arc<AuditWriter>>,
}

/// The audit service at `audit` (URL, audience), as client `gateway` with
/// client credentials, spooled under `<data>/audit-spool/gateway`; else
/// the log.
pub fn audit_sink(
    dir: &Path,
    issuer: &str,
    secret: &ClientSecret,
    audit: Option<(&str, &str)>,
) -> anyhow::Result<GatewayAudit> {
    let Some((url, audience)) = audit else {
        return Ok(GatewayAudit {
            sink: Arc::new(LogAuditSink),
            writer: None,
        });
    };
    let token = ClientCredentials::new(
        format!("{}/token", issuer.trim_end_matches('/')),
        CLIENT_ID.into(),
        secret.expose().to_owned(),
        audience.into(),
    );
    let config = WriterConfig::new(
        url.trim_end_matches('/'),
        dir.join("audit-spool").join("gateway"),
    );
    let writer = AuditWriter::start(config, Arc::new(token))
        .context("cannot start the gateway's audit writer")?;
    Ok(GatewayAudit {
        sink: writer.clone(),
        writer: Some(writer),
    })
}

/// The audit service the gateway records to and reads from: URL and
/// audience.
pub struct AuditService<'a> {
    pub url: Option<&'a str>,
    pub audience: &'a str,
}

/// Where sessions live: Redis if `--redis-url` names one, else
/// `<data>/gateway.db`.
async fn session_store(
    dir: &Path,
    session: &GatewaySessionArgs,
    idle_ttl: i64,
) -> anyhow::Result<Arc<dyn SessionStore>> {
    if let Some(url) = &session.redis_url {
        let store = RedisSessionStore::open(url, &session.redis_prefix, idle_ttl)
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

/// The gateway over its session store (`<data>/gateway.db` or Redis), verifying `issuer`'s tokens, with
/// the routes of `file`.
#[allow(clippy::too_many_arguments)]
pub async fn build(
    dir: &Path,
    issuer: &str,
    public_url: &str,
    secret: ClientSecret,
    session: &GatewaySessionArgs,
    file: &GatewayFile,
    audit_service: AuditService<'_>,
    audit: Arc<dyn AuditSink>,
) -> anyhow::Result<Arc<Gateway>> {
    ensure_data_dir(dir)?;
    let seconds = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let mut config = GatewayConfig::new(public_url, issuer, secret)?;
    config.session_idle_ttl = seconds(session.session_idle).max(1);
    config.session_absolute_ttl = seconds(session.session_max).max(1);
    config.apply_file(file)?;
    config.audit_url = audit_service
        .url
        .map(|u| u.trim_end_matches('/').to_owned());
    config.audit_audience = audit_service.audience.to_owned();
    let store = session_store(dir, session, config.session_idle_ttl).await?;
    let jwks = HttpJwks::new(format!("{}/jwks", config.issuer));
    let verifier = Verifier::new(&config.issuer, Arc::new(jwks), VerifierOptions::default());
    let master = master_key(dir)?;
    Ok(Arc::new(Gateway::new(
        config,
        store,
        &master,
        Arc::new(verifier),
        audit,
        Arc::new(SystemClock),
    )))
}
