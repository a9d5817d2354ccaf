//! `echod serve worker` (and the worker inside `echod up`): the pipeline's
//! worker as client `worker` of identity, with client credentials for the
//! docs and parser audiences.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use echo_audit_client::ClientCredentials;
use echo_queue::JobQueue;
use echo_worker::{Tokens, Worker, WorkerConfig};

use crate::first_party::{self, SecretPlace};
use crate::platform::shutdown_signal;
use crate::queue::QueueArgs;

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
    /// Identity's issuer URL, whose `/token` gives the worker its tokens.
    #[arg(long, env = "ECHO_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,
    /// The worker's client id at identity (secret: `ECHO_WORKER_CLIENT_SECRET`
    /// or `<data>/worker-client.secret`).
    #[arg(long, env = "ECHO_WORKER_CLIENT_ID", default_value = CLIENT_ID)]
    pub client_id: String,
    /// Audience of the docs service's tokens.
    #[arg(long, env = "ECHO_DOCS_AUDIENCE", default_value = "docs")]
    pub docs_audience: String,
    /// Audience of the parser's tokens.
    #[arg(long, env = "ECHO_PARSER_AUDIENCE", default_value = "parser")]
    pub parser_audience: String,
    /// Jobs worked on at once (see [`DEFAULT_CONCURRENCY`]).
    #[arg(long, env = "ECHO_WORKER_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    #[command(flatten)]
    pub queue: QueueArgs,
}

/// Where the worker's services are and who it is there.
pub struct WorkerSetup<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub secret: &'a str,
    pub docs: (&'a str, &'a str),
    pub parser: (&'a str, &'a str),
    pub lease: std::time::Duration,
    pub concurrency: u16,
}

/// The worker over `queue`, with a client credentials token source per
/// service (URL, audience).
pub fn build(queue: Arc<dyn JobQueue>, setup: &WorkerSetup<'_>) -> anyhow::Result<Worker> {
    let token_endpoint = format!("{}/token", setup.issuer.trim_end_matches('/'));
    let source = |audience: &str| {
        Arc::new(ClientCredentials::new(
            token_endpoint.clone(),
            setup.client_id.to_owned(),
            setup.secret.to_owned(),
            audience.to_owned(),
        ))
    };
    let tokens = Tokens {
        docs: source(setup.docs.1),
        parser: source(setup.parser.1),
    };
    let mut config = WorkerConfig::new(setup.docs.0, setup.parser.0, setup.client_id);
    config.concurrency = usize::from(setup.concurrency);
    config.lease = setup.lease;
    Worker::new(queue, tokens, config).context("cannot start the worker")
}

pub async fn serve(data_dir: &Path, args: &ServeWorkerArgs) -> anyhow::Result<()> {
    let secret = first_party::client_secret(data_dir, &SECRET, false)?;
    let queue = args.queue.open(data_dir).await?;
    let worker = build(
        queue,
        &WorkerSetup {
            issuer: &args.issuer,
            client_id: &args.client_id,
            secret: &secret,
            docs: (&args.docs_url, &args.docs_audience),
            parser: (&args.parser_url, &args.parser_audience),
            lease: args.queue.lease,
            concurrency: args.concurrency,
        },
    )?;
    worker.run(shutdown_signal()).await;
    Ok(())
}
