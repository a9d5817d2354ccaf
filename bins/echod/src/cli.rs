//! The command line: every subcommand and its arguments. Each service's
//! own arguments live beside it (`identity.rs`, `gateway.rs`, …), the
//! shared ones in `args.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::{ClientCommand, UserCommand};
use crate::args::CaFileArg;
use crate::{audit, docs, gateway, identity, keys, parser, up, worker};

#[derive(Debug, Parser)]
#[command(
    name = "echod",
    version,
    about = "Echo: a self-hosted identity platform for microservices",
    // Every command may connect out (a database, Redis, NATS), so the CA
    // file is taken before or after the subcommand alike.
    mut_arg("ca_file", |arg| arg.global(true))
)]
pub struct Cli {
    /// Directory for the database, keys and other state.
    #[arg(
        long,
        global = true,
        env = "ECHO_DATA_DIR",
        default_value = "./echo-data"
    )]
    pub data_dir: PathBuf,
    #[command(flatten)]
    pub ca: CaFileArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one service.
    Serve {
        #[command(subcommand)]
        service: Serve,
    },
    /// Run every service, each on its own port; bootstrap on first run.
    Up(Box<up::UpArgs>),
    /// Inspect the audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage OAuth clients.
    Client {
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage signing keys.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Parse one file from stdin in isolation (run by the parser service).
    #[command(hide = true)]
    ParseWorker,
}

#[derive(Debug, Subcommand)]
pub enum Serve {
    /// The OAuth 2.0 / OpenID Connect provider.
    Identity(identity::ServeIdentityArgs),
    /// The tamper-evident audit log.
    Audit(audit::ServeAuditArgs),
    /// The gateway: browser sessions (BFF), the bearer-token API, the web UI.
    Gateway(gateway::ServeGatewayArgs),
    /// Text extraction from uploaded files, for other services.
    Parser(parser::ServeParserArgs),
    /// Users' documents: upload, status, download, questions.
    Docs(docs::ServeDocsArgs),
    /// The pipeline's worker: parses, chunks and indexes uploaded documents.
    Worker(worker::ServeWorkerArgs),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole chain and every checkpoint signature.
    Verify(audit::VerifyArgs),
    /// Print the newest signed checkpoint (signing the head first if it
    /// moved), a C2SP signed note: keep these elsewhere and give them to
    /// `verify --trusted-checkpoint`.
    Checkpoint,
    /// Delete events older than a duration, anchoring what remains with a
    /// signed checkpoint (what `--retention` does on a schedule).
    Prune {
        /// e.g. `90d`, `12h`.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: std::time::Duration,
    },
    /// Print the newest events as JSON lines.
    Tail {
        /// How many of the newest events to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        lines: i64,
        /// Keep printing new events as they arrive.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}
