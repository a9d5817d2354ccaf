//! `echod`: runs Echo's services and administers them.
//!
//! This binary is the composition root: it reads configuration (flags, then
//! `ECHO_*` environment variables, then defaults), chooses the storage
//! backend, loads the master key, and wires the library crates together.
//! Everything else lives in the crates under `crates/`.

mod account_policy;
mod admin;
mod audit;
mod docs;
mod first_party;
mod gateway;
mod keys;
mod parser;
mod platform;
mod queue;
mod settings;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "echod",
    version,
    about = "Echo: a self-hosted identity platform for microservices"
)]
struct Cli {
    /// Directory for the database, keys and other state.
    #[arg(
        long,
        global = true,
        env = "ECHO_DATA_DIR",
        default_value = "./echo-data"
    )]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one service.
    Serve {
        #[command(subcommand)]
        service: Service,
    },
    /// Run every service, each on its own port; bootstrap on first run.
    Up(Box<UpArgs>),
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
enum Service {
    /// The OAuth 2.0 / OpenID Connect provider.
    Identity(ServeIdentityArgs),
    /// The tamper-evident audit log.
    Audit(AuditArgs),
    /// The gateway: browser sessions (BFF), the bearer-token API, the web UI.
    Gateway(ServeGatewayArgs),
    /// Text extraction from uploaded files, for other services.
    Parser(parser::ServeParserArgs),
    /// Users' documents: upload, status, download, questions.
    Docs(docs::ServeDocsArgs),
    /// The pipeline's worker: parses, chunks and indexes uploaded documents.
    Worker(worker::ServeWorkerArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeGatewayArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_GATEWAY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,
    /// Identity's issuer URL: where users sign in, whose JWKS verifies tokens.
    #[arg(long, env = "ECHO_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,
    /// The gateway's external base URL, for its redirect URIs (default:
    /// http://<listen address>).
    #[arg(long, env = "ECHO_GATEWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    #[command(flatten)]
    pub session: GatewaySessionArgs,
    /// The audit service the gateway records its events to; without it
    /// they go to the log.
    #[arg(long, env = "ECHO_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// Audience of the audit service's tokens.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audit_audience: String,
}

/// The gateway's sessions and configuration file (`serve gateway` and `up`).
#[derive(Debug, Clone, Args)]
pub struct GatewaySessionArgs {
    /// A gateway session unused this long ends (e.g. `30m`).
    #[arg(long = "gateway-session-idle", env = "ECHO_GATEWAY_SESSION_IDLE", default_value = "30m", value_parser = humantime::parse_duration)]
    pub session_idle: std::time::Duration,
    /// No gateway session outlives its login by more than this (e.g. `12h`).
    #[arg(long = "gateway-session-max", env = "ECHO_GATEWAY_SESSION_MAX", default_value = "12h", value_parser = humantime::parse_duration)]
    pub session_max: std::time::Duration,
    /// The gateway's TOML file: routes, rate limits, trusted proxies.
    #[arg(long = "config", env = "ECHO_CONFIG")]
    pub config: Option<std::path::PathBuf>,
    /// Keep gateway sessions in this Redis (`redis://host:port[/db]`)
    /// instead of `<data>/gateway.db`.
    #[arg(long = "redis-url", env = "ECHO_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Prefix of the gateway's keys in Redis.
    #[arg(long = "redis-prefix", env = "ECHO_REDIS_PREFIX", default_value = echo_gateway::DEFAULT_REDIS_PREFIX)]
    pub redis_prefix: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeIdentityArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// The audit service identity records its events to (e.g.
    /// http://127.0.0.1:8082); without it they go to the log.
    #[arg(long, env = "ECHO_AUDIT_URL")]
    pub audit_url: Option<String>,
    /// Audience of the audit service's tokens.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audit_audience: String,
}

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub identity: IdentityArgs,
    /// Address of the audit service.
    #[arg(long, env = "ECHO_AUDIT_LISTEN", default_value = "127.0.0.1:8082")]
    pub audit_listen: String,
    /// Audience of tokens the audit service accepts.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audit_audience: String,
    /// Seconds between signed audit checkpoints (when the log grew).
    #[arg(long, env = "ECHO_AUDIT_CHECKPOINT_SECONDS", default_value_t = 60)]
    pub audit_checkpoint_seconds: u64,
    /// Prune audit events older than this (e.g. `90d`), at each checkpoint;
    /// without it events are kept forever.
    #[arg(long, env = "ECHO_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub audit_retention: Option<std::time::Duration>,
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
    /// Audience of tokens the docs service accepts.
    #[arg(long, env = "ECHO_DOCS_AUDIENCE", default_value = "docs")]
    pub docs_audience: String,
    #[command(flatten)]
    pub docs: docs::DocsOptions,
    /// Address of the parser.
    #[arg(long, env = "ECHO_PARSER_LISTEN", default_value = "127.0.0.1:8084")]
    pub parser_listen: String,
    /// Audience of tokens the parser accepts.
    #[arg(long, env = "ECHO_PARSER_AUDIENCE", default_value = "parser")]
    pub parser_audience: String,
    #[command(flatten)]
    pub parser_limits: parser::ParserLimitArgs,
    #[command(flatten)]
    pub queue: queue::QueueArgs,
    /// Jobs the worker works on at once (see
    /// `worker::DEFAULT_CONCURRENCY`).
    #[arg(long, env = "ECHO_WORKER_CONCURRENCY", default_value_t = worker::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_concurrency: u16,
    /// Run no worker in this process: documents wait for an `echod serve
    /// worker` elsewhere.
    #[arg(long)]
    pub no_worker: bool,
}

#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_AUDIT_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub audit_listen: String,
    /// Identity's issuer URL, whose JWKS verifies writers' tokens.
    #[arg(long, env = "ECHO_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,
    /// Audience of tokens the audit service accepts.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audience: String,
    /// Seconds between signed checkpoints (when the log grew).
    #[arg(long, env = "ECHO_AUDIT_CHECKPOINT_SECONDS", default_value_t = 60)]
    pub checkpoint_seconds: u64,
    /// Prune events older than this (e.g. `90d`), at each checkpoint;
    /// without it events are kept forever.
    #[arg(long, env = "ECHO_AUDIT_RETENTION", value_parser = humantime::parse_duration)]
    pub retention: Option<std::time::Duration>,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verify the whole chain and every checkpoint signature.
    Verify,
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

#[derive(Debug, Clone, Args)]
pub struct IdentityArgs {
    /// Address to listen on.
    #[arg(
        long = "listen",
        env = "ECHO_IDENTITY_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub identity_listen: String,
    /// Public issuer URL (default: http://<listen address>).
    #[arg(long, env = "ECHO_ISSUER")]
    pub issuer: Option<String>,
    /// Algorithm of access tokens.
    #[arg(long, env = "ECHO_ACCESS_TOKEN_ALG", value_enum, default_value_t = TokenAlg::EdDsa)]
    pub access_token_alg: TokenAlg,
    /// Replace each signing key once it is this old (e.g. `30d`); `0s`
    /// turns automatic rotation off.
    #[arg(long, env = "ECHO_KEY_ROTATION", default_value = "30d", value_parser = humantime::parse_duration)]
    pub key_rotation: std::time::Duration,
    #[command(flatten)]
    pub key_publish_delay: keys::PublishDelayArg,
    #[command(flatten)]
    pub account_policy: account_policy::AccountPolicyArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenAlg {
    #[value(name = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    EdDsa,
    #[value(name = "RS256")]
    Rs256,
}

impl From<TokenAlg> for echo_crypto::Algorithm {
    fn from(alg: TokenAlg) -> Self {
        match alg {
            TokenAlg::Es256 => Self::ES256,
            TokenAlg::EdDsa => Self::EdDSA,
            TokenAlg::Rs256 => Self::RS256,
        }
    }
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Add a user; the password is read from standard input.
    Add {
        name: String,
        /// Read the password from standard input (required).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        email: Option<String>,
        /// A role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// List users.
    List,
    /// Register a user who cannot log in until activated.
    Invite {
        name: String,
        #[arg(long)]
        email: Option<String>,
        /// A role to grant (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
    },
    /// Make an invited or suspended user active.
    Activate {
        name: String,
        /// Read a new password from standard input (an invited user needs one).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Suspend an active user: no login, sessions and refresh tokens revoked.
    Suspend { name: String },
    /// Delete a user for good (the record stays, unusable).
    Delete { name: String },
    /// Show a user's state, roles, second factor and lockout.
    Show { name: String },
    /// Replace a user's roles (none clears them).
    SetRoles { name: String, roles: Vec<String> },
    /// Lift a lockout: forget the user's failed attempts.
    Unlock { name: String },
    /// Remove a user's TOTP and recovery codes (a lost authenticator).
    ResetMfa { name: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Grant {
    #[value(name = "authorization_code")]
    AuthorizationCode,
    #[value(name = "refresh_token")]
    RefreshToken,
    #[value(name = "client_credentials")]
    ClientCredentials,
    /// RFC 8693 token exchange.
    #[value(name = "token_exchange")]
    TokenExchange,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Register a client.
    Add(ClientAddArgs),
    /// List clients.
    List,
    /// Give a client a new generated secret (printed once); the old one
    /// keeps working during the overlap.
    RotateSecret {
        id: String,
        /// How long the old secret keeps working, e.g. `24h`, `30m`, `0s`.
        #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
        overlap: std::time::Duration,
    },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["secret_stdin", "generate_secret", "public", "jwks_file"])))]
struct ClientAddArgs {
    id: String,
    /// Read the client secret from standard input (at least 32 characters).
    #[arg(long)]
    secret_stdin: bool,
    /// Generate a 256-bit secret and print it once.
    #[arg(long)]
    generate_secret: bool,
    /// A public client (no secret; PKCE required).
    #[arg(long)]
    public: bool,
    /// Authenticate with private_key_jwt (RFC 7523) instead of a secret:
    /// the client's public key(s), a JWK Set or one JWK, in this file.
    #[arg(long, value_name = "PATH")]
    jwks_file: Option<PathBuf>,
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    #[arg(long = "grant", value_enum)]
    grants: Vec<Grant>,
    #[arg(long = "audience")]
    audiences: Vec<String>,
    #[arg(long = "scope")]
    scopes: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    /// Let this confidential client skip PKCE (legacy apps only).
    #[arg(long)]
    allow_no_pkce: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    settings::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let data_dir = cli.data_dir;
    match cli.command {
        Command::Serve {
            service: Service::Identity(args),
        } => platform::serve_identity(&data_dir, &args).await,
        Command::Serve {
            service: Service::Audit(args),
        } => platform::serve_audit(&data_dir, &args).await,
        Command::Serve {
            service: Service::Gateway(args),
        } => platform::serve_gateway(&data_dir, &args).await,
        Command::Serve {
            service: Service::Parser(args),
        } => parser::serve(&data_dir, &args).await,
        Command::Serve {
            service: Service::Docs(args),
        } => docs::serve(&data_dir, &args).await,
        Command::Serve {
            service: Service::Worker(args),
        } => worker::serve(&data_dir, &args).await,
        Command::ParseWorker => parser::worker(),
        Command::Up(args) => platform::up(&data_dir, &args).await,
        Command::Audit {
            command: AuditCommand::Tail { lines, follow },
        } => audit::tail(&data_dir, lines, follow).await,
        Command::Audit {
            command: AuditCommand::Prune { older_than },
        } => audit::prune(&data_dir, older_than).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => {
            if audit::verify(&data_dir).await? {
                Ok(())
            } else {
                anyhow::bail!("the audit chain does not verify")
            }
        }
        Command::User { command } => admin::user_command(&data_dir, command).await,
        Command::Client {
            command: ClientCommand::Add(args),
        } => admin::client_add(&data_dir, args).await,
        Command::Client {
            command: ClientCommand::List,
        } => admin::client_list(&data_dir).await,
        Command::Client {
            command: ClientCommand::RotateSecret { id, overlap },
        } => admin::client_rotate_secret(&data_dir, &id, overlap).await,
        Command::Keys { command } => keys::keys_command(&data_dir, command).await,
    }
}
