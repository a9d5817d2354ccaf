//! `echod up`: every service in one process, each on its own port, each
//! checking every token it receives, stopped together.
//!
//! The order: bind every listener (each service needs the others'
//! addresses), bootstrap (`bootstrap.rs`), then start the services —
//! identity, audit, gateway, docs, parser and the pipeline's worker — and
//! run them as one list. Identity records to the audit service over HTTP
//! with its own token; the gateway, docs, the parser and the worker are
//! first-party clients with client credentials.
//!
//! TLS (`tls.rs`): `--tls-cert` serves every listener with one
//! certificate; `--dev-tls` gives each service its own from a local CA in
//! `<data>/tls`, which every service trusts; a service's section of the
//! configuration file may give its listener a certificate of its own
//! (`[gateway] tls_cert = …`), which wins over both; `--client-ca` makes
//! audit, docs and the parser require client certificates (services
//! present theirs).

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use clap::Args;
use echo_crypto::TrustedRoots;
use echo_edge::{ServiceTokens, bind, run_all, shutdown_signal};
use echo_gateway::GatewayFile;

use crate::args::{AuditAudienceArg, JwksArg, PipelineAudiences, RateLimitArgs, TlsArgs};
use crate::audit::CheckpointArgs;
use crate::config::values::Mode;
use crate::docs::DocsOptions;
use crate::first_party::ServiceAudit;
use crate::gateway::GatewaySessionArgs;
use crate::identity::IdentityArgs;
use crate::parser::ParserLimitArgs;
use crate::queue::QueueArgs;
use crate::settings::open_store;
use crate::tls::{ListenerCerts, PlatformTls, ServiceTls};
use crate::{audit, bootstrap, docs, gateway, identity, parser, worker};

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Address of the audit service.
    #[arg(long, env = "ECHO_AUDIT_LISTEN", default_value = "127.0.0.1:8082")]
    pub audit_listen: String,
    #[command(flatten)]
    pub audit_audience: AuditAudienceArg,
    #[command(flatten)]
    pub audit_schedule: CheckpointArgs,
    /// Address of the gateway.
    #[arg(long, env = "ECHO_GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub gateway_listen: String,
    /// The gateway's external base URL (default: http://<gateway address>).
    #[arg(long, env = "ECHO_GATEWAY_PUBLIC_URL")]
    pub gateway_public_url: Option<String>,
    #[command(flatten)]
    pub gateway_session: GatewaySessionArgs,
    /// Address of the docs service.
    #[arg(long, env = "ECHO_DOCS_LISTEN", default_value = "127.0.0.1:8083")]
    pub docs_listen: String,
    #[command(flatten)]
    pub audiences: PipelineAudiences,
    #[command(flatten)]
    pub docs: DocsOptions,
    /// Address of the parser.
    #[arg(long, env = "ECHO_PARSER_LISTEN", default_value = "127.0.0.1:8084")]
    pub parser_listen: String,
    #[command(flatten)]
    pub parser_limits: ParserLimitArgs,
    #[command(flatten)]
    pub queue: QueueArgs,
    /// Jobs the worker works on at once (see
    /// `worker::DEFAULT_CONCURRENCY`).
    #[arg(long, env = "ECHO_WORKER_CONCURRENCY", default_value_t = worker::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,
    /// Run no worker in this process: documents wait for an `echod serve
    /// worker` elsewhere.
    #[arg(long)]
    pub no_worker: bool,
    #[command(flatten)]
    pub jwks: JwksArg,
    /// Where identity, the gateway and docs count their rate limits: in
    /// the process, or in the Redis named (shared with replicas elsewhere).
    #[command(flatten)]
    pub limits: RateLimitArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Run every service on https with certificates of a local CA,
    /// `<data>/tls/ca.pem` (made on first run, its key `ca.key` beside it):
    /// trust that file to call Echo (docs/tls.md).
    #[arg(long = "dev-tls", env = "ECHO_DEV_TLS", conflicts_with_all = ["tls_cert", "tls_key", "client_cert", "client_key"])]
    pub dev_tls: bool,
}

/// Every service, with the gateway's routes of `gateway_file` (and docs'),
/// each listener's own certificate of `listener_certs` (the configuration
/// file's), the bootstrap password kept as `mode` says
/// (`bootstrap::admin_user`).
pub async fn up(
    data_dir: &Path,
    roots: &TrustedRoots,
    args: &UpArgs,
    mode: Mode,
    mut gateway_file: GatewayFile,
    listener_certs: ListenerCerts,
) -> anyhow::Result<()> {
    let identity_listener = bind(&args.identity.identity_listen).await?;
    let audit_listener = bind(&args.audit_listen).await?;
    let gateway_listener = bind(&args.gateway_listen).await?;
    let docs_listener = bind(&args.docs_listen).await?;
    let parser_listener = bind(&args.parser_listen).await?;
    let platform = PlatformTls::new(data_dir, &args.tls, roots, args.dev_tls, listener_certs)?;
    let identity_tls = platform.service("identity", false)?;
    let audit_tls = platform.service("audit", true)?;
    let gateway_tls = platform.service(gateway::CLIENT_ID, false)?;
    let docs_tls = platform.service(docs::CLIENT_ID, true)?;
    let parser_tls = platform.service(parser::CLIENT_ID, true)?;
    let worker_tls = platform.service(worker::CLIENT_ID, false)?;
    let audit_url = audit_tls.url_of(&audit_listener)?;
    let gateway_url = gateway::public_url(
        args.gateway_public_url.as_deref(),
        &gateway_listener,
        &gateway_tls,
    )?;
    let docs_url = docs_tls.url_of(&docs_listener)?;
    let parser_url = parser_tls.url_of(&parser_listener)?;
    let audit_audience = args.audit_audience.audit_audience.as_str();
    let audiences = &args.audiences;

    let limits = args.limits.redis(roots).await?;
    let store = open_store(data_dir, roots).await?;
    bootstrap::admin_user(&*store, data_dir, mode).await?;
    bootstrap::add_docs_routes(&mut gateway_file, &docs_url, &audiences.docs_audience);
    let secrets = bootstrap::first_party_clients(
        &*store,
        data_dir,
        &gateway_url,
        audit_audience,
        audiences,
        &gateway_file,
    )
    .await?;

    let (identity, provider) = identity::start(
        (data_dir, roots),
        identity_listener,
        &args.identity,
        // In Redis if named, else in the process (never the database:
        // `up` is one process).
        (store, limits.clone()),
        Some((&audit_url, audit_audience)),
        (&identity_tls, Some(&gateway_url)),
    )
    .await?;
    let issuer = provider.config().issuer.clone();
    // One key cache for every service in the process.
    let verifier = args.jwks.verifier(&issuer, &identity_tls.client);
    let client_tokens = |client_id: &str, secret: &str, tls: &ServiceTls| {
        Arc::new(ServiceTokens::new(&issuer, client_id, secret, &tls.client))
    };
    let audit = audit_tls.apply(
        audit::start(
            (data_dir, roots),
            audit_listener,
            verifier.clone(),
            audit_audience,
            &args.audit_schedule,
        )
        .await?,
    );
    let gateway = gateway::start(
        (data_dir, roots),
        (gateway_listener, &gateway_tls),
        verifier.clone(),
        &gateway_url,
        secrets.gateway,
        (&args.gateway_session, limits.clone()),
        &gateway_file,
        (Some(&audit_url), audit_audience),
    )
    .await?;
    let queue = args.queue.open(data_dir, roots).await?;
    let docs_tokens = client_tokens(docs::CLIENT_ID, &secrets.docs, &docs_tls);
    let docs = docs::start(
        (data_dir, roots),
        (docs_listener, &docs_tls),
        (&verifier, &audiences.docs_audience),
        &args.docs,
        queue.clone(),
        (
            ServiceAudit::writer(
                data_dir,
                &docs_tokens,
                (&audit_url, &docs_tls.client),
                audit_audience,
            )?,
            limits,
        ),
    )
    .await?;
    let parser_tokens = client_tokens(parser::CLIENT_ID, &secrets.parser, &parser_tls);
    let parser = parser_tls.apply(parser::start(
        parser_listener,
        (&verifier, &audiences.parser_audience),
        &args.parser_limits,
        ServiceAudit::writer(
            data_dir,
            &parser_tokens,
            (&audit_url, &parser_tls.client),
            audit_audience,
        )?,
    )?);
    let mut services = vec![identity, audit, gateway, docs, parser];
    if !args.no_worker {
        let worker_tokens = client_tokens(worker::CLIENT_ID, &secrets.worker, &worker_tls);
        services.push(worker_tls.apply(worker::start(
            queue,
            &worker_tokens,
            &worker::WorkerSetup {
                docs: (&docs_url, &audiences.docs_audience),
                parser: (&parser_url, &audiences.parser_audience),
                lease: args.queue.lease,
                concurrency: args.worker_concurrency,
                tls: &worker_tls.client,
            },
            ServiceAudit::writer(
                data_dir,
                &worker_tokens,
                (&audit_url, &worker_tls.client),
                audit_audience,
            )?,
        )?));
    }
    let announce_up = || {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "up {gateway_url}")?;
        stdout.flush()
    };
    run_all(services, announce_up, shutdown_signal()).await?;
    Ok(())
}
