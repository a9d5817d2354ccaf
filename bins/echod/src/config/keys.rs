//! Every key of the configuration file, one line each: its section, its
//! type, the `ECHO_*` variable it stands for, what it means. The file is
//! read into these structs (`deny_unknown_fields`, so a misspelt key is an
//! error with its line); each key then becomes its variable (`config.rs`).
//! Secrets are never written in the file: a secret's key names the file
//! that holds it (`…_file`).

use std::path::PathBuf;

use echo_gateway::{GatewayFile, RateLimitSpec, RouteSpec};
use serde::Deserialize;

use super::values::{Address, LogFormat, Mode, Span, Url, Value};
use crate::args::TokenAlg;
use crate::tls::{ListenerCert, ListenerCerts};

/// One key of the file.
pub struct Key {
    /// `""` for the top level.
    pub section: &'static str,
    pub name: &'static str,
    /// The variable it sets (when the variable is not set already).
    pub var: &'static str,
    pub doc: &'static str,
    /// A value for the example, shown commented (where the default is
    /// not one value, or there is none).
    pub example: Option<&'static str>,
    /// The TOML text of the variable's value (a URL's password redacted).
    pub toml: fn(&str) -> String,
}

/// A section (or the top level): a struct of optional keys, each mapped to
/// its variable, and the section's structured fields (tables with no
/// variable), declared as they are.
macro_rules! section {
    (
        $(#[$meta:meta])*
        $name:ident $section:literal {
            $( $(#[doc = $doc:literal])+ $key:ident : $ty:ty = $var:literal $(, e.g. $example:literal)? ; )*
        }
        $( structured { $( $(#[$fmeta:meta])* $field:ident : $fty:ty , )* } )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            $( pub $key: Option<$ty>, )*
            $( $( $(#[$fmeta])* pub $field: $fty, )* )?
        }

        impl $name {
            pub const KEYS: &[Key] = &[$(
                Key {
                    section: $section,
                    name: stringify!($key),
                    var: $var,
                    doc: concat!($($doc),+),
                    example: section!(@example $($example)?),
                    toml: <$ty as Value>::toml,
                },
            )*];

            /// (variable, value) of each key the section sets.
            pub fn vars(&self) -> Vec<(&'static str, String)> {
                let mut vars = Vec::new();
                $( if let Some(value) = &self.$key {
                    vars.push(($var, Value::to_env(value)));
                } )*
                vars
            }
        }
    };
    (@example $example:literal) => { Some($example) };
    (@example) => { None };
}

section! {
    /// The file as written: shared keys at the top, a section per service.
    Platform "" {
        /// `development` (the default) or `production`: production refuses
        /// to start on development defaults (docs/configuration.md).
        mode: Mode = "ECHO_MODE";
        /// Directory for the databases, keys and other state.
        data_dir: PathBuf = "ECHO_DATA_DIR";
        /// Identity's issuer URL: identity's own (default
        /// `http://<identity listen address>`), and the one the other
        /// services trust.
        issuer: Url = "ECHO_ISSUER", e.g. "https://id.example.com";
        /// Age after which a service refetches the issuer's keys.
        jwks_max_age: Span = "ECHO_JWKS_MAX_AGE";
        /// Which log lines are written (a tracing filter).
        log: String = "ECHO_LOG", e.g. "info";
        /// `text` (the default) or `json` lines.
        log_format: LogFormat = "ECHO_LOG_FORMAT", e.g. "json";
        /// The file holding the master key that seals signing keys and
        /// sessions (default `<data>/master.key`, created on first run).
        master_key_file: PathBuf = "ECHO_MASTER_KEY_FILE", e.g. "/etc/echo/master.key";
        /// Production mode only: accept the master key inside the data
        /// directory, next to what it protects.
        master_key_in_data_dir: bool = "ECHO_MASTER_KEY_IN_DATA_DIR", e.g. "false";
        /// The certificate (PEM chain) services serve HTTPS with.
        tls_cert: PathBuf = "ECHO_TLS_CERT", e.g. "/etc/echo/tls/cert.pem";
        /// Its private key (PEM).
        tls_key: PathBuf = "ECHO_TLS_KEY", e.g. "/etc/echo/tls/key.pem";
        /// CA certificates a listener requires client certificates from
        /// (mutual TLS between services).
        client_ca: PathBuf = "ECHO_CLIENT_CA", e.g. "/etc/echo/tls/clients.pem";
        /// CA certificates trusted, besides the system's, when services
        /// call each other over https.
        ca_file: PathBuf = "ECHO_CA_FILE", e.g. "/etc/echo/tls/ca.pem";
        /// The certificate (PEM chain) services present when a service
        /// they call asks for one (default: `tls_cert`).
        client_cert: PathBuf = "ECHO_CLIENT_CERT", e.g. "/etc/echo/tls/client.pem";
        /// Its private key (PEM).
        client_key: PathBuf = "ECHO_CLIENT_KEY", e.g. "/etc/echo/tls/client-key.pem";
        /// `echod up`: a local CA in `<data>/tls` certifies every service.
        dev_tls: bool = "ECHO_DEV_TLS", e.g. "false";
        /// `serve identity`, `serve gateway`, `serve docs` and `up`: count
        /// rate limits in this Redis, shared by every replica, without a
        /// password (default: identity's PostgreSQL if `serve identity` runs
        /// on one, else each process).
        rate_limit_url: Url = "ECHO_RATE_LIMIT_URL", e.g. "redis://127.0.0.1:6379/1";
        /// A file holding the whole rate-limit Redis URL, password included.
        rate_limit_url_file: PathBuf = "ECHO_RATE_LIMIT_URL_FILE", e.g. "/run/secrets/echo-rate-limit-url";
        /// Prefix of the rate limits' keys in Redis.
        rate_limit_prefix: String = "ECHO_RATE_LIMIT_PREFIX";
    }
    structured {
        identity: Option<Identity>,
        audit: Option<Audit>,
        gateway: Option<Gateway>,
        docs: Option<Docs>,
        parser: Option<Parser>,
        worker: Option<Worker>,
        queue: Option<Queue>,
        /// The gateway's file before this one: its keys at the top level.
        trusted_proxies: Option<Vec<String>>,
        rate_limit: Option<RateLimitSpec>,
        routes: Option<Vec<RouteSpec>>,
    }
}

section! {
    /// `echod serve identity`, identity inside `up`, and the admin commands.
    Identity "identity" {
        /// Address to listen on.
        listen: Address = "ECHO_IDENTITY_LISTEN";
        /// Algorithm of access tokens: `EdDSA`, `ES256` or `RS256`.
        access_token_alg: TokenAlg = "ECHO_ACCESS_TOKEN_ALG";
        /// Replace each signing key once it is this old; `0s` turns
        /// automatic rotation off.
        key_rotation: Span = "ECHO_KEY_ROTATION";
        /// How long a new signing key is published before it signs.
        key_publish_delay: Span = "ECHO_KEY_PUBLISH_DELAY";
        /// A refresh token unused this long expires.
        refresh_idle: Span = "ECHO_REFRESH_IDLE";
        /// No refresh token outlives its first login by more than this.
        refresh_max: Span = "ECHO_REFRESH_MAX";
        /// How long a spent refresh token may be presented again by the
        /// same client (at most 60s; 0s: any reuse revokes its family).
        refresh_grace: Span = "ECHO_REFRESH_GRACE";
        /// Consecutive failed logins that lock an account.
        lockout_after: i64 = "ECHO_LOCKOUT_AFTER";
        /// How long a lockout lasts.
        lockout_duration: Span = "ECHO_LOCKOUT_DURATION";
        /// Roles that must use a second factor.
        mfa_required_roles: Vec<String> = "ECHO_MFA_REQUIRED_ROLES";
        /// Scopes only services get (client credentials).
        service_scopes: Vec<String> = "ECHO_SERVICE_SCOPES";
        /// Who may open an account: `closed`, `invite` (by mail from
        /// administrators) or `open` (`/register`).
        registration: String = "ECHO_REGISTRATION", e.g. "invite";
        /// Domains whose addresses may sign up at `/register` (empty: any).
        registration_domains: Vec<String> = "ECHO_REGISTRATION_DOMAINS";
        /// Reverse proxies in front of identity (addresses or CIDR blocks):
        /// from these peers only, `X-Forwarded-For` names the client.
        trusted_proxies: Vec<String> = "ECHO_TRUSTED_PROXIES";
        /// SMTP server of identity's mail (password-reset links):
        /// `smtp://host:port` (STARTTLS when offered; `?tls=required`
        /// insists) or `smtps://host:port` (TLS from the start).
        smtp_url: Url = "ECHO_SMTP_URL", e.g. "smtp://echo@mail.internal:587?tls=required";
        /// The sender of identity's mail.
        smtp_from: String = "ECHO_SMTP_FROM", e.g. "Echo <echo@example.com>";
        /// A file holding the SMTP password of `smtp_url`'s user.
        smtp_password_file: PathBuf = "ECHO_SMTP_PASSWORD_FILE", e.g. "/run/secrets/echo-smtp-password";
        /// RFC 7591 dynamic client registration at `/oauth2/register`,
        /// for holders of the initial access token (off by default).
        client_registration: bool = "ECHO_CLIENT_REGISTRATION", e.g. "false";
        /// A file holding that initial access token (at least 32
        /// characters).
        client_registration_token_file: PathBuf = "ECHO_CLIENT_REGISTRATION_TOKEN_FILE", e.g. "/run/secrets/echo-client-registration-token";
        /// Identity's PostgreSQL database, without a password (default:
        /// SQLite in the data directory).
        database_url: Url = "ECHO_DATABASE_URL", e.g. "postgres://echo@db.internal/echo";
        /// A file holding the whole database URL, password included.
        database_url_file: PathBuf = "ECHO_DATABASE_URL_FILE", e.g. "/run/secrets/echo-database-url";
    }
    structured {
        /// This service's own listener certificate (docs/tls.md).
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    }
}

section! {
    /// `echod serve audit`, the audit service inside `up`, and where the
    /// other services record their events.
    Audit "audit" {
        /// Address to listen on.
        listen: Address = "ECHO_AUDIT_LISTEN";
        /// The audit service a `serve` command records its events to
        /// (without it: the log).
        url: Url = "ECHO_AUDIT_URL", e.g. "http://127.0.0.1:8082";
        /// Audience of the audit service's tokens.
        audience: String = "ECHO_AUDIT_AUDIENCE";
        /// Seconds between signed checkpoints (when the log grew).
        checkpoint_seconds: u64 = "ECHO_AUDIT_CHECKPOINT_SECONDS";
        /// Prune events older than this, at each checkpoint (default: keep
        /// them forever).
        retention: Span = "ECHO_AUDIT_RETENTION", e.g. "90d";
        /// The log's name in its checkpoints (default `echo-audit`).
        origin: String = "ECHO_AUDIT_ORIGIN", e.g. "echo-audit";
        /// The audit log's PostgreSQL database, without a password
        /// (default: `<data>/audit.db`).
        database_url: Url = "ECHO_AUDIT_DATABASE_URL", e.g. "postgres://echo@db.internal/echo_audit";
        /// A file holding the whole database URL, password included.
        database_url_file: PathBuf = "ECHO_AUDIT_DATABASE_URL_FILE", e.g. "/run/secrets/echo-audit-database-url";
        /// The file holding the checkpoint signing key (default
        /// `<data>/audit-signing.key`).
        signing_key_file: PathBuf = "ECHO_AUDIT_SIGNING_KEY_FILE", e.g. "/etc/echo/audit-signing.key";
    }
    structured {
        /// This service's own listener certificate (docs/tls.md).
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    }
}

section! {
    /// `echod serve gateway` and the gateway inside `up`.
    Gateway "gateway" {
        /// Address to listen on.
        listen: Address = "ECHO_GATEWAY_LISTEN";
        /// The gateway's external base URL (default `http://<listen
        /// address>`).
        public_url: Url = "ECHO_GATEWAY_PUBLIC_URL", e.g. "https://echo.example.com";
        /// A session unused this long ends.
        session_idle: Span = "ECHO_GATEWAY_SESSION_IDLE";
        /// No session outlives its login by more than this.
        session_max: Span = "ECHO_GATEWAY_SESSION_MAX";
        /// Keep sessions in this Redis, without a password (default
        /// `<data>/gateway.db`).
        redis_url: Url = "ECHO_REDIS_URL", e.g. "redis://127.0.0.1:6379/0";
        /// A file holding the whole Redis URL, password included.
        redis_url_file: PathBuf = "ECHO_REDIS_URL_FILE", e.g. "/run/secrets/echo-redis-url";
        /// Prefix of the gateway's keys in Redis.
        redis_prefix: String = "ECHO_REDIS_PREFIX";
        /// The file holding the gateway's client secret (default
        /// `<data>/gateway-client.secret`).
        client_secret_file: PathBuf = "ECHO_GATEWAY_CLIENT_SECRET_FILE", e.g. "/run/secrets/echo-gateway-client";
    }
    structured {
        /// Peers whose `X-Forwarded-For` the gateway reads.
        trusted_proxies: Option<Vec<String>>,
        rate_limit: Option<RateLimitSpec>,
        routes: Option<Vec<RouteSpec>>,
        /// The gateway's own listener certificate (docs/tls.md).
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    }
}

section! {
    /// `echod serve docs` and docs inside `up`.
    Docs "docs" {
        /// Address to listen on.
        listen: Address = "ECHO_DOCS_LISTEN";
        /// The docs service's base URL, as the worker calls it.
        url: Url = "ECHO_DOCS_URL";
        /// Audience of the docs service's tokens.
        audience: String = "ECHO_DOCS_AUDIENCE";
        /// Largest document accepted, in bytes.
        max_upload_bytes: usize = "ECHO_DOCS_MAX_UPLOAD_BYTES";
        /// Bytes one user may store in all.
        quota_bytes: u64 = "ECHO_DOCS_QUOTA_BYTES";
        /// Documents one user may have.
        quota_files: u64 = "ECHO_DOCS_QUOTA_FILES";
        /// Files one user may upload a minute.
        uploads_per_minute: u32 = "ECHO_DOCS_UPLOADS_PER_MINUTE";
        /// The document records' PostgreSQL database, without a password
        /// (default `<data>/docs.db`).
        database_url: Url = "ECHO_DOCS_DATABASE_URL", e.g. "postgres://echo@db.internal/echo_docs";
        /// A file holding the whole database URL, password included.
        database_url_file: PathBuf = "ECHO_DOCS_DATABASE_URL_FILE", e.g. "/run/secrets/echo-docs-database-url";
        /// Where document bytes are kept, without a password: `nats://…`
        /// (JetStream's object store, bucket `ECHO_DOCS`) or `postgres://…`
        /// (default the directory `<data>/docs/blobs`).
        blob_url: Url = "ECHO_DOCS_BLOB_URL", e.g. "nats://nats.internal:4222";
        /// A file holding the whole blob store URL, password included.
        blob_url_file: PathBuf = "ECHO_DOCS_BLOB_URL_FILE", e.g. "/run/secrets/echo-docs-blob-url";
        /// The search backend: `tantivy` (default) or `postgres` (in the
        /// docs database).
        search: String = "ECHO_DOCS_SEARCH", e.g. "postgres";
        /// An OpenAI-compatible chat completions endpoint that writes
        /// answers (without it answers are extractive).
        llm_url: Url = "ECHO_LLM_URL", e.g. "http://127.0.0.1:11434/v1";
        /// The model asked.
        llm_model: String = "ECHO_LLM_MODEL";
        /// How long the model may take to answer.
        llm_timeout: Span = "ECHO_LLM_TIMEOUT";
        /// The file holding the model's API key (default
        /// `<data>/llm-api.key`, if it exists).
        llm_api_key_file: PathBuf = "ECHO_LLM_API_KEY_FILE", e.g. "/run/secrets/echo-llm-key";
        /// The file holding docs' client secret (default
        /// `<data>/docs-client.secret`).
        client_secret_file: PathBuf = "ECHO_DOCS_CLIENT_SECRET_FILE", e.g. "/run/secrets/echo-docs-client";
    }
    structured {
        /// This service's own listener certificate (docs/tls.md).
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    }
}

section! {
    /// `echod serve parser` and the parser inside `up`.
    Parser "parser" {
        /// Address to listen on.
        listen: Address = "ECHO_PARSER_LISTEN";
        /// The parser's base URL, as the worker calls it.
        url: Url = "ECHO_PARSER_URL";
        /// Audience of the parser's tokens.
        audience: String = "ECHO_PARSER_AUDIENCE";
        /// Largest file accepted, in bytes.
        max_input_bytes: usize = "ECHO_PARSER_MAX_INPUT_BYTES";
        /// Longest text returned, in characters.
        max_chars: usize = "ECHO_PARSER_MAX_CHARS";
        /// Longest one parse may take.
        timeout: Span = "ECHO_PARSER_TIMEOUT";
        /// Address space of each parse worker process, in bytes.
        worker_memory_bytes: u64 = "ECHO_PARSER_WORKER_MEMORY_BYTES";
        /// The file holding the parser's client secret (default
        /// `<data>/parser-client.secret`).
        client_secret_file: PathBuf = "ECHO_PARSER_CLIENT_SECRET_FILE", e.g. "/run/secrets/echo-parser-client";
    }
    structured {
        /// This service's own listener certificate (docs/tls.md).
        tls_cert: Option<PathBuf>,
        tls_key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    }
}

section! {
    /// `echod serve worker` and the worker inside `up`.
    Worker "worker" {
        /// The worker's client id at identity.
        client_id: String = "ECHO_WORKER_CLIENT_ID";
        /// Jobs worked on at once.
        concurrency: u16 = "ECHO_WORKER_CONCURRENCY";
        /// The file holding the worker's client secret (default
        /// `<data>/worker-client.secret`).
        client_secret_file: PathBuf = "ECHO_WORKER_CLIENT_SECRET_FILE", e.g. "/run/secrets/echo-worker-client";
        /// Address of the worker's health listener (`/healthz`, `/readyz`).
        health_listen: Address = "ECHO_WORKER_HEALTH_LISTEN", e.g. "127.0.0.1:8085";
    }
}

section! {
    /// The job queue docs, the worker and `up` share.
    Queue "queue" {
        /// NATS JetStream server of the queue, without a password (wins
        /// over `url`).
        nats_url: Url = "ECHO_NATS_URL", e.g. "nats://127.0.0.1:4222";
        /// A file holding the whole NATS URL, credentials included.
        nats_url_file: PathBuf = "ECHO_NATS_URL_FILE", e.g. "/run/secrets/echo-nats-url";
        /// The queue's PostgreSQL database, without a password (default
        /// `<data>/queue.db`).
        url: Url = "ECHO_QUEUE_URL", e.g. "postgres://echo@db.internal/echo_queue";
        /// A file holding the whole queue URL, password included.
        url_file: PathBuf = "ECHO_QUEUE_URL_FILE", e.g. "/run/secrets/echo-queue-url";
        /// NATS only: the stream's name.
        name: String = "ECHO_QUEUE_NAME";
        /// How long a worker holds a job without renewing it (on NATS the
        /// consumer's ack wait: docs and workers must agree).
        lease: Span = "ECHO_WORKER_LEASE";
    }
}

/// Every key, section by section, in the file's order.
pub fn all() -> impl Iterator<Item = &'static Key> {
    [
        Platform::KEYS,
        Identity::KEYS,
        Audit::KEYS,
        Gateway::KEYS,
        Docs::KEYS,
        Parser::KEYS,
        Worker::KEYS,
        Queue::KEYS,
    ]
    .into_iter()
    .flatten()
}

/// A section's own listener certificate (`tls_cert`, `tls_key`,
/// `client_ca`), the three fields of its structured part.
macro_rules! listener_cert {
    ($section:expr) => {
        $section.as_ref().map(|s| ListenerCert {
            cert: s.tls_cert.clone(),
            key: s.tls_key.clone(),
            client_ca: s.client_ca.clone(),
        })
    };
}

impl Platform {
    /// Each service's own listener certificate, by the name of its
    /// section: `tls_cert` and `tls_key` go together.
    pub fn listener_certs(&self) -> Result<ListenerCerts, String> {
        let sections = [
            ("identity", listener_cert!(self.identity)),
            ("audit", listener_cert!(self.audit)),
            ("gateway", listener_cert!(self.gateway)),
            ("docs", listener_cert!(self.docs)),
            ("parser", listener_cert!(self.parser)),
        ];
        let mut certs = ListenerCerts::new();
        for (name, cert) in sections {
            let Some(cert) = cert.filter(|c| !c.is_empty()) else {
                continue;
            };
            if cert.cert.is_some() != cert.key.is_some() {
                return Err(format!("[{name}] needs both `tls_cert` and `tls_key`"));
            }
            certs.insert(name, cert);
        }
        Ok(certs)
    }

    /// (variable, value) of every key the file sets, for a command that
    /// runs `services`. For `echod serve <service>` its section's
    /// certificate keys come last, as `ECHO_TLS_CERT`, `ECHO_TLS_KEY` and
    /// `ECHO_CLIENT_CA`, so they win over the top level's; `echod up`
    /// reads each section's certificate itself ([`Platform::listener_certs`]).
    pub fn all_vars(&self, services: &[&str]) -> Result<Vec<(&'static str, String)>, String> {
        let mut vars = self.vars_of_keys();
        let certs = self.listener_certs()?;
        if let [one] = services
            && let Some(own) = certs.get(*one)
        {
            vars.extend(own.vars());
        }
        Ok(vars)
    }

    /// (variable, value) of every key (not structured table) the file sets.
    pub fn vars_of_keys(&self) -> Vec<(&'static str, String)> {
        let mut vars = self.vars();
        let sections = [
            self.identity.as_ref().map(Identity::vars),
            self.audit.as_ref().map(Audit::vars),
            self.gateway.as_ref().map(Gateway::vars),
            self.docs.as_ref().map(Docs::vars),
            self.parser.as_ref().map(Parser::vars),
            self.worker.as_ref().map(Worker::vars),
            self.queue.as_ref().map(Queue::vars),
        ];
        vars.extend(sections.into_iter().flatten().flatten());
        vars
    }

    /// The gateway's routes, rate limits and trusted proxies: from
    /// `[gateway]`, or from the top level as the gateway's own file had
    /// them (one place or the other, not both).
    pub fn gateway_file(self) -> Result<GatewayFile, String> {
        fn pick<T>(name: &str, top: Option<T>, section: Option<T>) -> Result<Option<T>, String> {
            match (top, section) {
                (Some(_), Some(_)) => Err(format!(
                    "`{name}` is given at the top level and in [gateway]: keep one"
                )),
                (top, section) => Ok(top.or(section)),
            }
        }
        let gateway = self.gateway.unwrap_or_default();
        Ok(GatewayFile {
            trusted_proxies: pick(
                "trusted_proxies",
                self.trusted_proxies,
                gateway.trusted_proxies,
            )?
            .unwrap_or_default(),
            rate_limit: pick("rate_limit", self.rate_limit, gateway.rate_limit)?,
            routes: pick("routes", self.routes, gateway.routes)?.unwrap_or_default(),
        })
    }
}
