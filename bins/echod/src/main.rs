//! `echod`: runs Echo's services and administers them.
//!
//! This binary is the composition root: it reads configuration (flags, then
//! `ECHO_*` environment variables, then the configuration file, then
//! defaults: `config.rs`), chooses the storage backend, loads the master
//! key, and wires the library crates together.
//! Everything else lives in the crates under `crates/`.
//!
//! The map: `cli.rs` is the command line; one module per service builds
//! that service (`identity.rs`, `audit.rs`, `gateway.rs`, `docs.rs`,
//! `parser.rs`, `worker.rs`) for `echod serve <service>` and for
//! `up.rs`, which runs them all as one list; `bootstrap.rs` is what `up`
//! sets up on every start (the bootstrap admin, the first-party clients);
//! `first_party.rs` holds those clients' secrets and audit writers;
//! `admin.rs` and `keys.rs` are the administration commands; `settings.rs`
//! where state and secrets live; `telemetry.rs` the logs and the traces;
//! `config.rs` the configuration file and `echod config`; `production.rs`
//! what production mode refuses.

mod account_policy;
mod admin;
mod admin_remote;
mod args;
mod audit;
mod bootstrap;
mod cli;
mod config;
mod docs;
mod first_party;
mod gateway;
mod identity;
mod keys;
mod manual;
#[cfg(test)]
mod packaging;
mod parser;
mod production;
mod queue;
mod settings;
mod telemetry;
mod tls;
mod up;
mod worker;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches};
use echo_crypto::TrustedRoots;

use crate::admin::ClientCommand;
use crate::cli::{AuditCommand, Cli, Command, ConfigCommand, Serve};
use crate::config::FileOnly;
use crate::config::values::Mode;

/// mimalloc: per-thread free lists instead of glibc's arenas. Each request
/// allocates and frees dozens of small buffers (headers, ids, labels); in the
/// gateway's profile under load glibc's `malloc`/`free` were about a fifth of
/// user time (BENCHMARKS.md, issue 18).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Everything echod creates (databases and their WAL files, keys,
    // secrets, spools, blobs, the index) is its own: files 0600,
    // directories 0700, whatever the caller's umask.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // No runtime, no logging, no configuration: a parse worker is
    // single-threaded and closes every descriptor it inherited first; the
    // generated texts need none of it.
    match &cli.command {
        Command::ParseWorker => return exit_code(parser::worker()),
        Command::Completions { shell } => return exit_code(manual::completions(*shell)),
        Command::Man { out_dir } => return exit_code(manual::man(out_dir.as_deref())),
        Command::Config {
            command: ConfigCommand::Example,
        } => {
            print!("{}", config::example());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // The file's keys become variables (which may run this program again
    // with them); every command then reads them as it always has.
    let file_only = match config::apply(cli.config.as_deref(), services(&cli.command))
        .and_then(|file| config::refuse_secret_flags(&Cli::command(), &matches).map(|()| file))
    {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let telemetry = match telemetry::init(services(&cli.command)) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ran = runtime.block_on(run(cli, file_only));
    drop(runtime);
    telemetry.shutdown();
    exit_code(ran)
}

/// The async runtime, sized to the cores this process may run on (its
/// `sched_getaffinity` mask and cgroup CPU quota, as
/// `available_parallelism` reads them), not the machine's: one worker per
/// core, and on a single core one thread that runs every task itself, with
/// no scheduler handing work between threads (issue 18: a pinned gateway).
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let mut builder = if cores == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(cores);
        builder
    };
    builder.enable_all().build()
}

/// Success, or the error and its causes on stderr and a failure.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The services `command` runs (each its own resource in exported traces).
fn services(command: &Command) -> &'static [&'static str] {
    match command {
        Command::Up(_) => &["identity", "audit", "gateway", "docs", "parser", "worker"],
        Command::Serve { service } => match service.as_ref() {
            Serve::Identity(_) => &["identity"],
            Serve::Audit(_) => &["audit"],
            Serve::Gateway(_) => &["gateway"],
            Serve::Parser(_) => &["parser"],
            Serve::Docs(_) => &["docs"],
            Serve::Worker(_) => &["worker"],
        },
        _ => &[],
    }
}

async fn run(cli: Cli, file: FileOnly) -> anyhow::Result<()> {
    // Installed first, so that nothing recorded while services start is lost.
    echo_edge::metrics::handle();
    let data_dir = cli.data_dir;
    if cli.mode == Mode::Production {
        production::check_command(&cli.command, &data_dir, &file.listener_certs)?;
    }
    // Read once, so a bad CA file stops any command before it connects.
    let roots = &TrustedRoots::load(cli.ca.ca_file.as_deref())
        .context("cannot load the CA file (ECHO_CA_FILE, --ca-file)")?;
    match cli.command {
        Command::Serve { service } => match *service {
            Serve::Identity(args) => identity::serve(&data_dir, roots, &args).await,
            Serve::Audit(args) => audit::serve(&data_dir, roots, &args).await,
            Serve::Gateway(args) => gateway::serve(&data_dir, roots, &args, &file.gateway).await,
            Serve::Parser(args) => parser::serve(&data_dir, roots, &args).await,
            Serve::Docs(args) => docs::serve(&data_dir, roots, &args).await,
            Serve::Worker(args) => worker::serve(&data_dir, roots, &args).await,
        },
        Command::ParseWorker
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Config {
            command: ConfigCommand::Example,
        } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Up(args) => {
            let FileOnly {
                gateway,
                listener_certs,
            } = file;
            up::up(&data_dir, roots, &args, cli.mode, gateway, listener_certs).await
        }
        Command::Audit { command } => match command {
            AuditCommand::Tail { lines, follow } => {
                audit::tail(&data_dir, roots, lines, follow).await
            }
            AuditCommand::Prune { older_than } => audit::prune(&data_dir, roots, older_than).await,
            AuditCommand::Checkpoint => audit::checkpoint(&data_dir, roots).await,
            AuditCommand::Verify(args) => {
                if audit::verify(&data_dir, roots, &args).await? {
                    Ok(())
                } else {
                    anyhow::bail!("the audit chain does not verify")
                }
            }
        },
        Command::User {
            server: cli::ServerArg {
                server: Some(server),
            },
            command,
        } => {
            let api = admin_remote::AdminApi::connect(&server, roots).await?;
            admin_remote::user_command(&api, command).await
        }
        Command::Client {
            server: cli::ServerArg {
                server: Some(server),
            },
            command,
        } => {
            let api = admin_remote::AdminApi::connect(&server, roots).await?;
            admin_remote::client_command(&api, command).await
        }
        Command::User { command, .. } => admin::user_command(&data_dir, roots, command).await,
        Command::Client { command, .. } => match command {
            ClientCommand::Add(args) => admin::client_add(&data_dir, roots, args).await,
            ClientCommand::List => admin::client_list(&data_dir, roots).await,
            ClientCommand::Update(args) => admin::client_update(&data_dir, roots, args).await,
            ClientCommand::Delete { id } => admin::client_delete(&data_dir, roots, &id).await,
            ClientCommand::RotateSecret { id, overlap } => {
                admin::client_rotate_secret(&data_dir, roots, &id, overlap).await
            }
        },
        Command::Keys { command } => keys::keys_command(&data_dir, roots, command).await,
        Command::Config {
            command: ConfigCommand::Check,
        } => config::check(&data_dir, cli.mode, &file),
    }
}
