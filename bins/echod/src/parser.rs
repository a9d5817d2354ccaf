//! `echod serve parser` and the hidden `echod parse-worker` processes it
//! runs the parses in (see `echo_parser::isolate`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_parser::{Isolation, Limits};

use crate::first_party::{SecretPlace, ServiceAudit};
use crate::platform::{announce_ready, shutdown_signal};

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
    /// Identity's issuer URL, whose JWKS verifies callers' tokens.
    #[arg(long, env = "ECHO_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,
    /// Audience of tokens the parser accepts.
    #[arg(long, env = "ECHO_PARSER_AUDIENCE", default_value = "parser")]
    pub audience: String,
    /// The audit service the parser records refused callers to (as client
    /// `parser`, secret `ECHO_PARSER_CLIENT_SECRET` or
    /// `<data>/parser-client.secret`); without it they go to the log.
    #[arg(long, env = "ECHO_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// Audience of the audit service's tokens.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audit_audience: String,
    #[command(flatten)]
    pub limits: ParserLimitArgs,
}

/// The parser's limits (`serve parser`, later `up`).
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
pub fn isolation() -> anyhow::Result<Isolation> {
    let program = std::env::current_exe().context("cannot find the echod binary")?;
    Ok(Isolation::Process {
        program,
        args: vec!["parse-worker".into()],
    })
}

pub async fn serve(data_dir: &Path, args: &ServeParserArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let audit = ServiceAudit::for_serve(
        data_dir,
        (&args.issuer, CLIENT_ID, &SECRET),
        args.audit_url.as_deref(),
        &args.audit_audience,
    )?;
    let app = echo_parser::build(
        &args.issuer,
        &args.audience,
        args.limits.limits(),
        isolation()?,
        audit.sink.clone(),
    );
    tracing::info!(issuer = %args.issuer, "parser listening");
    announce_ready(&listener)?;
    let served = echo_parser::serve(listener, app, shutdown_signal()).await;
    audit.shutdown().await;
    Ok(served?)
}

/// `echod parse-worker`: parses the jobs on stdin, answers on stdout
/// (the protocol is in `echo_parser::isolate`).
pub fn worker() -> anyhow::Result<()> {
    echo_parser::run_worker().context("parse worker")
}
