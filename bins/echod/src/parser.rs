//! `echod serve parser` and the hidden `echod parse-worker` processes it
//! runs the parses in (see `echo_parser::isolate`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_parser::{Isolation, Limits};

use echo_edge::Service;
use echo_verify::Verifier;
use tokio::net::TcpListener;

use crate::args::{AuditTargetArgs, IssuerArg, TlsArgs};
use crate::first_party::{SecretPlace, ServiceAudit};
use crate::tls::ServiceTls;

/// The parser's client id at identity, for its audit writes.
pub const CLIENT_ID: &str = "parser";
/// Its client secret (`echod up` creates the file on first run).
pub const SECRET: SecretPlace = SecretPlace {
    var: "ECHO_PARSER_CLIENT_SECRET",
    file: "parser-client.secret",
    service: "the parser",
};

#[derive(Debug, Clone, Args)]
pub struct ServeParserArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_PARSER_LISTEN",
        default_value = "127.0.0.1:8084"
    )]
    pub listen: String,
    #[command(flatten)]
    pub issuer: IssuerArg,
    /// Audience of tokens the parser accepts.
    #[arg(long, env = "ECHO_PARSER_AUDIENCE", default_value = "parser")]
    pub audience: String,
    /// The parser records refused callers as client `parser` (secret
    /// `ECHO_PARSER_CLIENT_SECRET` or `<data>/parser-client.secret`).
    #[command(flatten)]
    pub audit: AuditTargetArgs,
    #[command(flatten)]
    pub limits: ParserLimitArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// The parser's limits (`serve parser` and `up`).
#[derive(Debug, Clone, Args)]
pub struct ParserLimitArgs {
    /// Largest file accepted, in bytes (413 above).
    #[arg(long = "parser-max-input-bytes", env = "ECHO_PARSER_MAX_INPUT_BYTES", default_value_t = Limits::default().max_input_bytes)]
    pub max_input_bytes: usize,
    /// Longest text returned, in characters (cut and marked `truncated`).
    #[arg(long = "parser-max-chars", env = "ECHO_PARSER_MAX_CHARS", default_value_t = Limits::default().max_output_chars)]
    pub max_output_chars: usize,
    /// Longest one parse may take (e.g. `10s`; 422 after).
    #[arg(long = "parser-timeout", env = "ECHO_PARSER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Address space of each parse worker process, in bytes.
    #[arg(long = "parser-worker-memory-bytes", env = "ECHO_PARSER_WORKER_MEMORY_BYTES", default_value_t = Limits::default().worker_memory_bytes)]
    pub worker_memory_bytes: u64,
}

impl ParserLimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            max_input_bytes: self.max_input_bytes,
            max_output_chars: self.max_output_chars,
            timeout: self.timeout,
            worker_memory_bytes: self.worker_memory_bytes,
            ..Limits::default()
        }
    }
}

/// Parses in child processes: this binary as `echod parse-worker`.
///
/// Its one variable: echod allocates with mimalloc (main.rs), which
/// reserves a 1 GiB arena at start, and allocations inside it would escape
/// the address-space limit the worker sets itself. Without the reservation
/// every region comes from the OS, under the limit.
pub fn isolation() -> anyhow::Result<Isolation> {
    let program = std::env::current_exe().context("cannot find the echod binary")?;
    Ok(Isolation::Process {
        program,
        args: vec!["parse-worker".into()],
        env: vec![("MIMALLOC_ARENA_RESERVE".into(), "0".into())],
    })
}

/// The parser on `listener`, accepting the tokens `verifier` passes for
/// `audience`, recording refused callers to `audit`.
pub fn start(
    listener: TcpListener,
    (verifier, audience): (&Arc<Verifier>, &str),
    limits: &ParserLimitArgs,
    audit: ServiceAudit,
) -> anyhow::Result<Service> {
    let issuer = verifier.issuer();
    let app = echo_parser::build(
        verifier.clone(),
        audience,
        limits.limits(),
        isolation()?,
        audit.sink.clone(),
    );
    tracing::info!(issuer, "parser listening");
    Ok(echo_parser::http::service(listener, app)
        .with_checks(audit.check())
        .on_stop(audit.shutdown()))
}

pub async fn serve(
    data_dir: &Path,
    roots: &echo_crypto::TrustedRoots,
    args: &ServeParserArgs,
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
    let verifier = args.issuer.verifier(&tls.client);
    let service = start(listener, (&verifier, &args.audience), &args.limits, audit)?;
    echo_edge::run_until_signalled(tls.apply(service)).await?;
    Ok(())
}

/// `echod parse-worker`: parses the jobs on stdin, answers on stdout
/// (the protocol is in `echo_parser::isolate`).
pub fn worker() -> anyhow::Result<()> {
    echo_parser::run_worker().context("parse worker")
}
