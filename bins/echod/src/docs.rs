//! `echod serve docs` (and the docs service inside `echod up`): its
//! options, its audit writer as client `docs` of identity, the model that
//! answers questions.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_crypto::TrustedRoots;
use echo_docs::{DocsConfig, LlmClient, SearchBackend};
use echo_edge::{Service, SharedCounters};
use echo_queue::JobQueue;
use tokio::net::TcpListener;

use echo_verify::Verifier;

use crate::args::{AuditTargetArgs, IssuerArg, RateLimitArgs, TlsArgs};
use crate::first_party::{SecretPlace, ServiceAudit};
use crate::queue::QueueArgs;
use crate::settings::{ensure_data_dir, existing_secret_text, url_setting};
use crate::tls::ServiceTls;

/// The docs service's client id at identity, for its audit writes.
pub const CLIENT_ID: &str = "docs";
/// Its client secret (`echod up` creates the file on first run).
pub const SECRET: SecretPlace = SecretPlace {
    var: "ECHO_DOCS_CLIENT_SECRET",
    file: "docs-client.secret",
    service: "docs",
};
pub const LLM_KEY_VAR: &str = "ECHO_LLM_API_KEY";
const DATABASE_URL_VAR: &str = "ECHO_DOCS_DATABASE_URL";
const BLOB_URL_VAR: &str = "ECHO_DOCS_BLOB_URL";
const LLM_KEY_FILE: &str = "llm-api.key";

#[derive(Debug, Clone, Args)]
pub struct ServeDocsArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_DOCS_LISTEN",
        default_value = "127.0.0.1:8083"
    )]
    pub listen: String,
    #[command(flatten)]
    pub issuer: IssuerArg,
    /// Audience of tokens the docs service accepts.
    #[arg(long, env = "ECHO_DOCS_AUDIENCE", default_value = "docs")]
    pub audience: String,
    /// The audit service docs records its events to is the client `docs`'s
    /// (secret `ECHO_DOCS_CLIENT_SECRET` or `<data>/docs-client.secret`).
    #[command(flatten)]
    pub audit: AuditTargetArgs,
    #[command(flatten)]
    pub options: DocsOptions,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Users' upload rates counted with every replica's.
    #[command(flatten)]
    pub limits: RateLimitArgs,
}

/// The docs service's settings (`serve docs` and `up`).
#[derive(Debug, Clone, Args)]
pub struct DocsOptions {
    /// Largest document accepted, in bytes (413 above).
    #[arg(long = "max-upload-bytes", env = "ECHO_DOCS_MAX_UPLOAD_BYTES", default_value_t = echo_docs::Limits::default().max_upload_bytes)]
    pub max_upload_bytes: usize,
    /// Bytes one user may store in all (413 above).
    #[arg(long = "docs-quota-bytes", env = "ECHO_DOCS_QUOTA_BYTES", default_value_t = echo_docs::Limits::default().quota_bytes)]
    pub quota_bytes: u64,
    /// Documents one user may have (413 above).
    #[arg(long = "docs-quota-files", env = "ECHO_DOCS_QUOTA_FILES", default_value_t = echo_docs::Limits::default().quota_files)]
    pub quota_files: u64,
    /// Files one user may upload a minute (429 above).
    #[arg(long = "docs-uploads-per-minute", env = "ECHO_DOCS_UPLOADS_PER_MINUTE", default_value_t = echo_docs::Limits::default().uploads_per_minute, value_parser = clap::value_parser!(u32).range(1..))]
    pub uploads_per_minute: u32,
    /// PostgreSQL database of the document records (`postgres://…`, or
    /// read from the file `ECHO_DOCS_DATABASE_URL_FILE` names); without it
    /// SQLite `<data>/docs.db`.
    #[arg(long = "docs-database-url", env = "ECHO_DOCS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where document bytes are kept: `nats://host:port` (or `tls://…`:
    /// JetStream's object store, bucket `ECHO_DOCS`) or `postgres://…` (a
    /// table of that database), or read from the file
    /// `ECHO_DOCS_BLOB_URL_FILE` names; without it `<data>/docs/blobs`,
    /// which only one docs process may use.
    #[arg(long = "blob-url", env = BLOB_URL_VAR)]
    pub blob_url: Option<String>,
    /// The search backend: `tantivy` (`<data>/docs/index`, one docs
    /// process) or `postgres` (full-text search in the docs database,
    /// shared by replicas; needs `--docs-database-url`).
    #[arg(long = "search", env = "ECHO_DOCS_SEARCH", default_value = "tantivy")]
    pub search: SearchBackend,
    /// An OpenAI-compatible chat completions endpoint that writes answers
    /// from the passages found (a base URL ending in `/v1`, or the full
    /// `…/chat/completions` URL); its key is `ECHO_LLM_API_KEY`,
    /// `ECHO_LLM_API_KEY_FILE` or `<data>/llm-api.key`. Without it answers
    /// are extractive.
    #[arg(long = "llm-url", env = "ECHO_LLM_URL")]
    pub llm_url: Option<String>,
    /// The model asked.
    #[arg(long = "llm-model", env = "ECHO_LLM_MODEL", default_value = "llama3.2")]
    pub llm_model: String,
    /// How long the model may take to answer (e.g. `60s`).
    #[arg(long = "llm-timeout", env = "ECHO_LLM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub llm_timeout: Duration,
}

/// The docs service on `listener` with `tls` over `queue`, accepting the
/// tokens `verifier` passes for `audience`, recording to `audit`, counting
/// upload rates in `shared_limits` (with other replicas) or in itself.
pub async fn start(
    (dir, roots): (&Path, &TrustedRoots),
    (listener, tls): (TcpListener, &ServiceTls),
    (verifier, audience): (&Arc<Verifier>, &str),
    options: &DocsOptions,
    queue: Arc<dyn JobQueue>,
    (audit, shared_limits): (ServiceAudit, Option<Arc<dyn SharedCounters>>),
) -> anyhow::Result<Service> {
    ensure_data_dir(dir)?;
    let config = DocsConfig {
        audience: audience.to_owned(),
        data_dir: dir.to_owned(),
        database_url: url_setting(options.database_url.as_deref(), DATABASE_URL_VAR)?,
        blob_url: url_setting(options.blob_url.as_deref(), BLOB_URL_VAR)?,
        search: options.search,
        database_roots: roots.clone(),
        limits: echo_docs::Limits {
            max_upload_bytes: options.max_upload_bytes,
            quota_bytes: options.quota_bytes,
            quota_files: options.quota_files,
            uploads_per_minute: options.uploads_per_minute,
            ..echo_docs::Limits::default()
        },
        shared_limits,
    };
    let llm = match options.llm_url.as_deref().filter(|u| !u.is_empty()) {
        Some(url) => {
            let key =
                existing_secret_text(dir, LLM_KEY_VAR, LLM_KEY_FILE)?.map(|k| k.trim().to_owned());
            let client = LlmClient::new(
                url,
                key,
                &options.llm_model,
                options.llm_timeout,
                &tls.client,
            )
            .context("ECHO_LLM_URL")?;
            tracing::info!(endpoint = client.endpoint(), model = %options.llm_model, "answers come from a language model");
            Some(client)
        }
        None => None,
    };
    let (queue_depth, queue_check) = crate::queue::observed(&queue);
    let app = echo_docs::build(&config, verifier.clone(), queue, llm, audit.sink.clone())
        .await
        .context("cannot start the docs service")?;
    tracing::info!(issuer = verifier.issuer(), "docs listening");
    Ok(tls.apply(
        echo_docs::http::service(listener, app)
            .with_job(queue_depth)
            .with_check(queue_check)
            .with_checks(audit.check())
            .on_stop(audit.shutdown()),
    ))
}

pub async fn serve(
    data_dir: &Path,
    roots: &TrustedRoots,
    args: &ServeDocsArgs,
) -> anyhow::Result<()> {
    let tls = ServiceTls::from_args(&args.tls, roots)?;
    let listener = echo_edge::bind(&args.listen).await?;
    let issuer = &args.issuer.issuer;
    let audit = ServiceAudit::for_serve(
        data_dir,
        (issuer, CLIENT_ID, &SECRET),
        args.audit.audit_url.as_deref(),
        &args.audit.audience.audit_audience,
        &tls.client,
    )?;
    let queue = args.queue.open(data_dir, roots).await?;
    let shared_limits = args.limits.redis(roots).await?;
    let service = start(
        (data_dir, roots),
        (listener, &tls),
        (&args.issuer.verifier(&tls.client), &args.audience),
        &args.options,
        queue,
        (audit, shared_limits),
    )
    .await?;
    echo_edge::run_until_signalled(service).await?;
    Ok(())
}
