//! The command line: every subcommand and its arguments. Each service's
//! own arguments live beside it (`identity.rs`, `gateway.rs`, …), the
//! shared ones in `args.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::admin::{ClientCommand, UserCommand};
use crate::args::CaFileArg;
use crate::config::values::Mode;
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
    /// The configuration file (TOML): a section per service, each key an
    /// `ECHO_*` variable; variables win over it, flags over both
    /// (docs/configuration.md).
    #[arg(long, global = true, env = "ECHO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// `production` refuses to start on development defaults (plain http
    /// off loopback, the master key beside the data, …).
    #[arg(long, global = true, env = "ECHO_MODE", value_enum, default_value_t = Mode::Development)]
    pub mode: Mode,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one service.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve {
        #[command(subcommand)]
        service: Box<Serve>,
    },
    /// Run every service, each on its own port; bootstrap on first run.
    #[command(after_help = UP_EXAMPLES)]
    Up(Box<up::UpArgs>),
    /// Inspect the audit log.
    #[command(after_help = AUDIT_EXAMPLES)]
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Manage users.
    #[command(after_help = SERVER_HELP)]
    User {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Manage OAuth clients.
    #[command(after_help = SERVER_HELP)]
    Client {
        #[command(flatten)]
        server: ServerArg,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Manage signing keys.
    #[command(after_help = KEYS_EXAMPLES)]
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Print a shell completion script.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell the script is for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), or write one page per command.
    #[command(after_help = MAN_EXAMPLES)]
    Man {
        /// Write echod.1, echod-serve.1, … into this directory instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Check the configuration, or print an example of it.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Parse one file from stdin in isolation (run by the parser service).
    #[command(hide = true)]
    ParseWorker,
}

/// Where `echod user …` and `echod client …` work: the database, or an
/// identity's admin API.
#[derive(Debug, clap::Args)]
pub struct ServerArg {
    /// Work through the admin API of the identity at this URL instead of
    /// the database (client id from ECHO_ADMIN_CLIENT_ID, secret from
    /// ECHO_ADMIN_CLIENT_SECRET or ECHO_ADMIN_CLIENT_SECRET_FILE).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
}

const SERVER_HELP: &str = "\
Without --server the command works on the database in --data-dir (or ECHO_DATABASE_URL).
With --server it works through identity's admin API (docs/admin-api.md) as a client
registered for it:
  echod client add ops --generate-secret --grant client_credentials --audience identity --scope echo.admin
  ECHO_ADMIN_CLIENT_ID=ops ECHO_ADMIN_CLIENT_SECRET_FILE=/run/secrets/ops \\
    echod user list --server https://id.example.test";

const UP_EXAMPLES: &str = "\
Examples:
  echod up
  echod --data-dir /var/lib/echod --config /etc/echod/echod.toml up
  ECHO_DATABASE_URL=postgres://echo@db/identity echod up --no-worker";

const SERVE_EXAMPLES: &str = "\
Examples:
  echod serve identity --listen 0.0.0.0:8081 --issuer https://id.example.test
  ECHO_GATEWAY_CLIENT_SECRET=… echod serve gateway --issuer https://id.example.test \\
    --public-url https://gw.example.test --audit-url http://127.0.0.1:8082
  echod serve worker --docs-url http://docs:8083 --parser-url http://parser:8084";

const AUDIT_EXAMPLES: &str = "\
Examples:
  echod audit checkpoint >> /backup/echo-checkpoints.txt
  echod audit verify --trusted-checkpoint /backup/echo-checkpoints.txt
  echod audit tail -n 50 --follow
  echod audit prune --older-than 365d";

const KEYS_EXAMPLES: &str = "\
Examples:
  echod keys list
  echod keys rotate --alg ES256
  echod keys revoke 3f2a…";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  echod completions bash > /etc/bash_completion.d/echod
  echod completions zsh > \"${fpath[1]}/_echod\"
  echod completions fish > ~/.config/fish/completions/echod.fish";

const MAN_EXAMPLES: &str = "\
Examples:
  echod man | man -l -
  echod man --out-dir /usr/local/share/man/man1";

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
pub enum ConfigCommand {
    /// Validate the configuration (file, variables, secrets' files,
    /// production mode) as `up` and every `serve` read it, and print the
    /// effective one with secrets redacted; exit 1 with the reason when
    /// it is invalid.
    Check,
    /// Print a commented example of every key.
    Example,
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every subcommand says what it does and every argument what it is,
    /// so `--help`, the manual page and the completions describe them all:
    /// an argument added without a doc comment fails here, with its path.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if command.get_about().is_none() {
                missing.push(format!("{path}: no about"));
            }
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {id}: no help"));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "echod", &mut missing);
        assert!(missing.is_empty(), "without help:\n{}", missing.join("\n"));
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
