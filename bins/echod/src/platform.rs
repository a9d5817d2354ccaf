//! Running services: `echod serve <service>` and `echod up`.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use echo_audit_client::{AuditWriter, TokenSource, WriterConfig};
use echo_core::SystemClock;
use echo_core::audit::{AuditSink, LogAuditSink};
use echo_crypto::secret::random_token;
use echo_identity::admin::{self, NewUser};
use echo_identity::{IdentityConfig, Provider};
use echo_store::Store;
use tokio::net::TcpListener;

use crate::first_party::{self, ServiceAudit};
use crate::settings::{master_key, open_store};
use crate::{
    AuditArgs, IdentityArgs, ServeGatewayArgs, ServeIdentityArgs, UpArgs, audit, docs, gateway,
    parser, worker,
};

/// Prints the line scripts wait for, once the socket accepts connections.
pub(crate) fn announce_ready(listener: &TcpListener) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {addr}")?;
    stdout.flush()?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Binds identity's socket and builds its provider.
async fn start_identity(
    data_dir: &Path,
    args: &IdentityArgs,
    store: Arc<dyn Store>,
    audit: Arc<dyn AuditSink>,
) -> anyhow::Result<(TcpListener, Arc<Provider>)> {
    let listener = TcpListener::bind(&args.identity_listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.identity_listen))?;
    let issuer = match &args.issuer {
        Some(issuer) => issuer.clone(),
        None => format!("http://{}", listener.local_addr()?),
    };
    url::Url::parse(&issuer).with_context(|| format!("issuer {issuer:?} is not a URL"))?;
    let mut config = IdentityConfig::new(&issuer);
    config.access_token_alg = args.access_token_alg.into();
    config.keys.publish_delay = args.key_publish_delay.seconds()?;
    config.keys.rotation_interval =
        i64::try_from(args.key_rotation.as_secs()).context("the key rotation is too long")?;
    args.account_policy.apply(&mut config)?;
    let master = master_key(data_dir)?;
    let provider = Provider::new(config, store, &master, audit, Arc::new(SystemClock)).await?;
    Ok((listener, Arc::new(provider)))
}

pub async fn serve_identity(data_dir: &Path, args: &ServeIdentityArgs) -> anyhow::Result<()> {
    let store = open_store(data_dir).await?;
    let writer = match &args.audit_url {
        Some(url) => Some(identity_audit_writer(data_dir, url, &args.audit_audience)?),
        None => None,
    };
    let sink: Arc<dyn AuditSink> = match &writer {
        Some((writer, _)) => writer.clone(),
        None => Arc::new(LogAuditSink),
    };
    let (listener, provider) = start_identity(data_dir, &args.identity, store, sink).await?;
    if let Some((_, own_token)) = &writer {
        let _ = own_token.provider.set(provider.clone());
    }
    tracing::info!(issuer = %provider.config().issuer, "identity listening");
    announce_ready(&listener)?;
    let served = echo_identity::serve(listener, provider, shutdown_signal()).await;
    if let Some((writer, _)) = writer {
        writer.shutdown().await;
    }
    Ok(served?)
}

/// Identity's audit writer to the audit service at `url`, spooling under
/// `<data>/audit-spool/identity`, with the token source that identity will
/// feed once it runs.
fn identity_audit_writer(
    data_dir: &Path,
    url: &str,
    audience: &str,
) -> anyhow::Result<(Arc<AuditWriter>, Arc<OwnToken>)> {
    let own_token = Arc::new(OwnToken {
        provider: OnceLock::new(),
        audience: audience.to_owned(),
    });
    let config = WriterConfig::new(
        url.trim_end_matches('/'),
        data_dir.join("audit-spool").join("identity"),
    );
    let writer =
        AuditWriter::start(config, own_token.clone()).context("cannot start the audit writer")?;
    Ok((writer, own_token))
}

/// First run: a bootstrap admin with a random password, printed once.
async fn bootstrap(store: &dyn Store) -> anyhow::Result<()> {
    if !store.list_users().await?.is_empty() {
        return Ok(());
    }
    let password = random_token();
    let admin = NewUser {
        username: "admin".into(),
        password: password.clone(),
        email: None,
        roles: vec!["admin".into()],
    };
    admin::add_user(store, &LogAuditSink, &SystemClock, admin).await?;
    println!("created bootstrap admin: username admin, password {password}");
    println!("(shown once: store it now)");
    Ok(())
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
            .own_service_token(&self.audience, "audit.write")
            .map_err(|e| e.to_string())
    }
}

/// The gateway's routes to docs (`/api/documents`, `/api/query`), added to
/// the table of its file unless the file routes those prefixes itself.
fn add_docs_routes(file: &mut echo_gateway::GatewayFile, docs_url: &str, audience: &str) {
    for (prefix, path) in [
        ("/api/documents", "/v1/documents"),
        ("/api/query", "/v1/query"),
    ] {
        if file.routes.iter().any(|r| r.prefix == prefix) {
            continue;
        }
        file.routes.push(echo_gateway::RouteSpec {
            prefix: prefix.to_owned(),
            upstream: format!("{docs_url}{path}"),
            audience: audience.to_owned(),
            roles: Vec::new(),
            scopes: Vec::new(),
            strip_prefix: true,
            // Long enough for an upload of many large files to be stored.
            timeout: Some("120s".to_owned()),
            rate_limit: None,
        });
    }
}

/// Every service, each on its own port, stopped together: identity,
/// audit, gateway, docs and parser, and the pipeline's worker (unless
/// `--no-worker`). Identity sends its audit events to the audit service,
/// over HTTP with its own service token, through the writer's disk spool;
/// the gateway, docs and the worker are first-party clients registered
/// here, with client credentials.
pub async fn up(data_dir: &Path, args: &UpArgs) -> anyhow::Result<()> {
    let store = open_store(data_dir).await?;
    bootstrap(&*store).await?;
    let audit_listener = audit::bind(&args.audit_listen).await?;
    let audit_url = format!("http://{}", audit_listener.local_addr()?);
    let gateway_listener = audit::bind(&args.gateway_listen).await?;
    let gateway_url = gateway::public_url(args.gateway_public_url.as_deref(), &gateway_listener)?;
    let docs_listener = audit::bind(&args.docs_listen).await?;
    let docs_url = format!("http://{}", docs_listener.local_addr()?);
    let parser_listener = audit::bind(&args.parser_listen).await?;
    let parser_url = format!("http://{}", parser_listener.local_addr()?);
    let gateway_secret = gateway::client_secret(data_dir, true)?;
    let mut gateway_file = gateway::load_file(args.gateway_session.config.as_deref())?;
    add_docs_routes(&mut gateway_file, &docs_url, &args.docs_audience);
    gateway::register_client(
        &*store,
        &gateway_url,
        &gateway_secret,
        &args.audit_audience,
        &gateway_file,
    )
    .await?;
    let worker_secret = first_party::client_secret(data_dir, &worker::SECRET, true)?;
    first_party::register_service(
        &*store,
        worker::CLIENT_ID,
        &worker_secret,
        vec![
            args.parser_audience.clone(),
            args.docs_audience.clone(),
            args.audit_audience.clone(),
        ],
        worker::SCOPES.map(String::from).to_vec(),
    )
    .await?;
    let docs_secret = first_party::client_secret(data_dir, &docs::SECRET, true)?;
    let parser_secret = first_party::client_secret(data_dir, &parser::SECRET, true)?;
    for (client_id, secret) in [
        (docs::CLIENT_ID, &docs_secret),
        (parser::CLIENT_ID, &parser_secret),
    ] {
        first_party::register_service(
            &*store,
            client_id,
            secret,
            vec![args.audit_audience.clone()],
            vec!["audit.write".into()],
        )
        .await?;
    }
    let (writer, own_token) = identity_audit_writer(data_dir, &audit_url, &args.audit_audience)?;
    let (identity_listener, provider) =
        start_identity(data_dir, &args.identity, store, writer.clone()).await?;
    let _ = own_token.provider.set(provider.clone());
    let issuer = provider.config().issuer.clone();
    let audit_app = audit::build(data_dir, &issuer, &args.audit_audience).await?;
    audit::spawn_checkpointer(
        audit_app.clone(),
        Duration::from_secs(args.audit_checkpoint_seconds.max(1)),
        args.audit_retention,
    );
    let gateway_audit = gateway::audit_sink(
        data_dir,
        &issuer,
        &gateway_secret,
        Some((&audit_url, &args.audit_audience)),
    )?;
    let gateway_app = gateway::build(
        data_dir,
        &issuer,
        &gateway_url,
        gateway_secret,
        &args.gateway_session,
        &gateway_file,
        gateway::AuditService {
            url: Some(&audit_url),
            audience: &args.audit_audience,
        },
        gateway_audit.sink.clone(),
    )
    .await?;
    let queue = args.queue.open(data_dir).await?;
    let docs_audit = ServiceAudit::writer(
        data_dir,
        (&issuer, docs::CLIENT_ID, &docs_secret),
        &audit_url,
        &args.audit_audience,
    )?;
    let docs_app = docs::build(
        data_dir,
        (&issuer, &args.docs_audience),
        &args.docs,
        queue.clone(),
        docs_audit.sink.clone(),
    )
    .await?;
    let parser_audit = ServiceAudit::writer(
        data_dir,
        (&issuer, parser::CLIENT_ID, &parser_secret),
        &audit_url,
        &args.audit_audience,
    )?;
    let parser_app = echo_parser::build(
        &issuer,
        &args.parser_audience,
        args.parser_limits.limits(),
        parser::isolation()?,
        parser_audit.sink.clone(),
    );
    let worker = if args.no_worker {
        None
    } else {
        Some(worker::build(
            queue,
            &worker::WorkerSetup {
                issuer: &issuer,
                client_id: worker::CLIENT_ID,
                secret: &worker_secret,
                docs: (&docs_url, &args.docs_audience),
                parser: (&parser_url, &args.parser_audience),
                lease: args.queue.lease,
                concurrency: args.worker_concurrency,
            },
        )?)
    };
    for listener in [
        &identity_listener,
        &audit_listener,
        &gateway_listener,
        &docs_listener,
        &parser_listener,
    ] {
        announce_ready(listener)?;
    }
    println!("up {gateway_url}");
    std::io::stdout().flush()?;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.recv().await;
        }
    };
    let identity = echo_identity::serve(identity_listener, provider, stopped(&stop));
    let audit = echo_audit::http::serve(audit_listener, audit_app, stopped(&stop));
    let gateway = echo_gateway::serve(gateway_listener, gateway_app, stopped(&stop));
    let docs = echo_docs::serve(docs_listener, docs_app, stopped(&stop));
    let parser = echo_parser::serve(parser_listener, parser_app, stopped(&stop));
    let worker = {
        let stopped = stopped(&stop);
        async move {
            if let Some(worker) = worker {
                worker.run(stopped).await;
            }
        }
    };
    let signal = async {
        shutdown_signal().await;
        let _ = stop.send(());
    };
    let (identity, audit, gateway, docs, parser, (), ()) =
        tokio::join!(identity, audit, gateway, docs, parser, worker, signal);
    // Whatever the audit service did not take before it stopped is spooled
    // to disk and sent on the next start.
    writer.shutdown().await;
    if let Some(writer) = gateway_audit.writer {
        writer.shutdown().await;
    }
    docs_audit.shutdown().await;
    parser_audit.shutdown().await;
    identity?;
    audit?;
    gateway?;
    docs?;
    parser?;
    Ok(())
}

/// The gateway alone, in front of the identity at `--issuer`. Its client
/// registration and secret must exist (`echod up` creates both; elsewhere
/// `echod client add gateway …` and `ECHO_GATEWAY_CLIENT_SECRET`).
pub async fn serve_gateway(data_dir: &Path, args: &ServeGatewayArgs) -> anyhow::Result<()> {
    let listener = audit::bind(&args.listen).await?;
    let url = gateway::public_url(args.public_url.as_deref(), &listener)?;
    let secret = gateway::client_secret(data_dir, false)?;
    let file = gateway::load_file(args.session.config.as_deref())?;
    let audit_target = args
        .audit_url
        .as_deref()
        .map(|url| (url, args.audit_audience.as_str()));
    let audit = gateway::audit_sink(data_dir, &args.issuer, &secret, audit_target)?;
    let app = gateway::build(
        data_dir,
        &args.issuer,
        &url,
        secret,
        &args.session,
        &file,
        gateway::AuditService {
            url: args.audit_url.as_deref(),
            audience: &args.audit_audience,
        },
        audit.sink.clone(),
    )
    .await?;
    tracing::info!(public_url = %url, issuer = %args.issuer, "gateway listening");
    announce_ready(&listener)?;
    let served = echo_gateway::serve(listener, app, shutdown_signal()).await;
    if let Some(writer) = audit.writer {
        writer.shutdown().await;
    }
    Ok(served?)
}

pub async fn serve_audit(data_dir: &Path, args: &AuditArgs) -> anyhow::Result<()> {
    let listener = audit::bind(&args.audit_listen).await?;
    let app = audit::build(data_dir, &args.issuer, &args.audience).await?;
    audit::spawn_checkpointer(
        app.clone(),
        Duration::from_secs(args.checkpoint_seconds.max(1)),
        args.retention,
    );
    announce_ready(&listener)?;
    echo_audit::http::serve(listener, app, shutdown_signal()).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_routes_are_added_unless_the_file_routes_the_prefix() {
        let mut file = echo_gateway::GatewayFile::parse(
            "[[routes]]\nprefix = \"/api/query\"\nupstream = \"http://127.0.0.1:9\"\naudience = \"mine\"\n",
        )
        .unwrap();
        add_docs_routes(&mut file, "http://127.0.0.1:8083", "docs");
        let table = file.route_table().unwrap();
        let documents = table.find("/api/documents/abc").unwrap();
        assert_eq!(documents.audience, "docs");
        assert_eq!(
            documents.upstream_path("/api/documents/abc?x=1"),
            "/v1/documents/abc?x=1"
        );
        assert_eq!(documents.upstream_path("/api/documents"), "/v1/documents");
        assert_eq!(
            table.find("/api/query").unwrap().audience,
            "mine",
            "the file's own route wins"
        );
    }
}
