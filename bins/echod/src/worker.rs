//! `echod serve worker` (and the worker inside `echod up`): the pipeline's
//! worker as client `worker` of identity, with client credentials for the
//! docs and parser audiences, and for the audit service it records each
//! job's end to.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use echo_crypto::TrustedRoots;
use echo_edge::{Check, Service, ServiceTokens};
use echo_queue::JobQueue;
use echo_tls::ClientTls;
use echo_worker::{Tokens, Worker, WorkerConfig};

use crate::args::{AuditTargetArgs, ClientCertArgs, IssuerArg, PipelineAudiences};
use crate::first_party::{self, SecretPlace, ServiceAudit};
use crate::queue::QueueArgs;
use crate::tls::ServiceTls;

/// The worker's client id at identity (unless `--client-id`).
pub const CLIENT_ID: &str = "worker";
/// Its scope at docs' worker endpoints, and for its own audit writes.
pub const SCOPES: [&str; 2] = ["docs.index", "audit.write"];
/// Its client secret (`echod up` creates the file on first run).
pub const SECRET: SecretPlace = SecretPlace {
    var: "ECHO_WORKER_CLIENT_SECRET",
    file: "worker-client.secret",
    service: "the worker",
};

/// Jobs a worker works on at once by default. A job mostly waits (for a
/// parser permit, for the index commit it shares with the other jobs), and
/// every job waiting at the index joins the same commit: with 8 the pipeline
/// ran at 106–133 small documents/s, with 32 at 190–310 (BENCHMARKS.md). A
/// job holds its document while it runs, so memory is bounded by this many
/// documents (25 MiB each at most).
pub const DEFAULT_CONCURRENCY: u16 = 32;

#[derive(Debug, Clone, Args)]
pub struct ServeWorkerArgs {
    /// The docs service's base URL.
    #[arg(long, env = "ECHO_DOCS_URL", default_value = "http://127.0.0.1:8083")]
    pub docs_url: String,
    /// The parser's base URL.
    #[arg(long, env = "ECHO_PARSER_URL", default_value = "http://127.0.0.1:8084")]
    pub parser_url: String,
    #[command(flatten)]
    pub issuer: IssuerArg,
    /// The worker's client id at identity (secret: `ECHO_WORKER_CLIENT_SECRET`
    /// or `<data>/worker-client.secret`).
    #[arg(long, env = "ECHO_WORKER_CLIENT_ID", default_value = CLIENT_ID)]
    pub client_id: String,
    #[command(flatten)]
    pub audiences: PipelineAudiences,
    /// Jobs worked on at once (see [`DEFAULT_CONCURRENCY`]).
    #[arg(long, env = "ECHO_WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    #[command(flatten)]
    pub queue: QueueArgs,
    #[command(flatten)]
    pub client_cert: ClientCertArgs,
    /// Answer `/healthz`, `/readyz` and `/metrics` on this address (e.g.
    /// `127.0.0.1:9090`); without it the worker listens on nothing.
    #[arg(long, env = "ECHO_WORKER_HEALTH_LISTEN")]
    pub health_listen: Option<String>,
    /// The worker records each job's end (`document.index`) as its client.
    #[command(flatten)]
    pub audit: AuditTargetArgs,
}

/// Where the worker's services are (URL, audience) and how it works.
pub struct WorkerSetup<'a> {
    pub docs: (&'a str, &'a str),
    pub parser: (&'a str, &'a str),
    pub lease: std::time::Duration,
    pub concurrency: u16,
    /// Whom it trusts and what it presents when it calls them.
    pub tls: &'a ClientTls,
}

/// The worker over `queue`, calling the services of `setup` with tokens
/// of its client `tokens`, recording to `audit`: a service without a
/// socket.
pub fn start(
    queue: Arc<dyn JobQueue>,
    tokens: &Arc<ServiceTokens>,
    setup: &WorkerSetup<'_>,
    audit: ServiceAudit,
) -> anyhow::Result<Service> {
    let sources = Tokens {
        docs: tokens.source(setup.docs.1, ""),
        parser: tokens.source(setup.parser.1, ""),
    };
    let mut config = WorkerConfig::new(setup.docs.0, setup.parser.0, tokens.client_id());
    config.concurrency = usize::from(setup.concurrency);
    config.lease = setup.lease;
    config.tls = setup.tls.clone();
    let (queue_depth, queue_check) = crate::queue::observed(&queue);
    let worker = Worker::new(queue, sources, config, audit.sink.clone())
        .context("cannot start the worker")?;
    let upstreams = [("docs", setup.docs.0), ("parser", setup.parser.0)]
        .map(|(name, url)| answers(name, url, setup.tls));
    Ok(Service::task("worker", move |stop| worker.run(stop))
        .with_job(queue_depth)
        .with_check(queue_check)
        .with_checks(upstreams)
        .with_checks(audit.check())
        .on_stop(audit.shutdown()))
}

/// Readiness: the service at `url` answers its `/healthz`.
fn answers(name: &'static str, url: &str, tls: &ClientTls) -> Check {
    let health = format!("{}/healthz", url.trim_end_matches('/'));
    let http = tls.http_client(echo_edge::CHECK_TIMEOUT);
    Check::new(name, move || {
        let probe = http.get(&health).send();
        async move {
            match probe.await {
                Ok(answer) if answer.status().is_success() => Ok("ok"),
                Ok(answer) => Err(format!("answered {}", answer.status())),
                Err(e) => Err(e.to_string()),
            }
        }
    })
}

pub async fn serve(
    data_dir: &Path,
    roots: &TrustedRoots,
    args: &ServeWorkerArgs,
) -> anyhow::Result<()> {
    let tls = ServiceTls::client_only(&args.client_cert, roots)?;
    let tokens = first_party::service_tokens(
        data_dir,
        &args.issuer.issuer,
        &args.client_id,
        &SECRET,
        &tls.client,
    )?;
    let queue = args.queue.open(data_dir, roots).await?;
    let health = match &args.health_listen {
        Some(address) => Some(echo_edge::bind(address).await?),
        None => None,
    };
    let audit = match &args.audit.audit_url {
        Some(url) => ServiceAudit::writer(
            data_dir,
            &tokens,
            (url, &tls.client),
            &args.audit.audience.audit_audience,
        )?,
        None => ServiceAudit::log(),
    };
    let service = start(
        queue,
        &tokens,
        &WorkerSetup {
            docs: (&args.docs_url, &args.audiences.docs_audience),
            parser: (&args.parser_url, &args.audiences.parser_audience),
            lease: args.queue.lease,
            concurrency: args.concurrency,
            tls: &tls.client,
        },
        audit,
    )?;
    let service = match health {
        Some(listener) => service.with_health_listener(listener),
        None => service,
    };
    echo_edge::run_until_signalled(tls.apply(service)).await?;
    Ok(())
}
