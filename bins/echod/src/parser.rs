//! `echod serve parser` and the hidden `echod parse-worker` processes it
//! runs the parses in (see `echo_parser::isolate`).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_parser::{Isolation, Limits};

use crate::platform::{announce_ready, shutdown_signal};

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

pub async fn serve(args: &ServeParserArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let app = echo_parser::build(
        &args.issuer,
        &args.audience,
        args.limits.limits(),
        isolation()?,
    );
    tracing::info!(issuer = %args.issuer, "parser listening");
    announce_ready(&listener)?;
    echo_parser::serve(listener, app, shutdown_signal()).await?;
    Ok(())
}

/// `echod parse-worker`: parses the jobs on stdin, answers on stdout
/// (the protocol is in `echo_parser::isolate`).
pub fn worker() -> anyhow::Result<()> {
    echo_parser::run_worker().context("parse worker")
}
