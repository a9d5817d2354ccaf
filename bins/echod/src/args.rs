//! The flags several services share, declared once and flattened into each
//! subcommand that takes them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use echo_crypto::TrustedRoots;
use echo_edge::{RedisCounters, SharedCounters};
use echo_tls::ClientTls;
use echo_verify::{Verifier, VerifierOptions};

use crate::settings::{RATE_LIMIT_URL_VAR, url_setting};

/// Identity's issuer URL, as services that trust it take it.
#[derive(Debug, Clone, Args)]
pub struct IssuerArg {
    /// Identity's issuer URL: whose JWKS verifies callers' tokens and whose
    /// `/token` gives this service its own.
    #[arg(long, env = "ECHO_ISSUER", default_value = "http://127.0.0.1:8081")]
    pub issuer: String,
    #[command(flatten)]
    pub jwks: JwksArg,
}

impl IssuerArg {
    /// The verifier of the issuer's tokens, fetching its keys with `tls`.
    pub fn verifier(&self, tls: &ClientTls) -> Arc<Verifier> {
        self.jwks.verifier(&self.issuer, tls)
    }
}

/// How a service holds the issuer's signing keys.
#[derive(Debug, Clone, Args)]
pub struct JwksArg {
    /// Age after which the issuer's keys are refetched (e.g. `5m`): the
    /// longest a revoked key is still honoured. A slow or unreachable
    /// issuer delays no request: the cached keys keep verifying.
    #[arg(long = "jwks-max-age", env = "ECHO_JWKS_MAX_AGE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub jwks_max_age: Duration,
}

impl JwksArg {
    pub fn verifier(&self, issuer: &str, tls: &ClientTls) -> Arc<Verifier> {
        let options = VerifierOptions {
            max_key_age: self.jwks_max_age,
            tls: tls.clone(),
            ..VerifierOptions::default()
        };
        Arc::new(Verifier::for_issuer(issuer, options))
    }
}

/// The audit service's audience.
#[derive(Debug, Clone, Args)]
pub struct AuditAudienceArg {
    /// Audience of the audit service's tokens.
    #[arg(long, env = "ECHO_AUDIT_AUDIENCE", default_value = "audit")]
    pub audit_audience: String,
}

/// Where a service records its audit events.
#[derive(Debug, Clone, Args)]
pub struct AuditTargetArgs {
    /// The audit service this service records its events to (e.g.
    /// http://127.0.0.1:8082), as its own client of identity; without it
    /// they go to the log.
    #[arg(long, env = "ECHO_AUDIT_URL")]
    pub audit_url: Option<String>,
    #[command(flatten)]
    pub audience: AuditAudienceArg,
}

/// The audiences of the document pipeline's services, as their callers
/// (the worker, `up`) name them.
#[derive(Debug, Clone, Args)]
pub struct PipelineAudiences {
    /// Audience of the docs service's tokens.
    #[arg(long, env = "ECHO_DOCS_AUDIENCE", default_value = "docs")]
    pub docs_audience: String,
    /// Audience of the parser's tokens.
    #[arg(long, env = "ECHO_PARSER_AUDIENCE", default_value = "parser")]
    pub parser_audience: String,
}

/// An algorithm access tokens can be signed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
pub enum TokenAlg {
    #[value(name = "ES256")]
    #[serde(rename = "ES256")]
    Es256,
    #[value(name = "EdDSA")]
    #[serde(rename = "EdDSA")]
    EdDsa,
    #[value(name = "RS256")]
    #[serde(rename = "RS256")]
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

/// A listener's TLS, and what the service shows and trusts when it calls
/// others (every `serve` with a listener, and `up`).
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Serve HTTPS with this PEM certificate chain (leaf first), reloaded
    /// when the file changes; needs `--tls-key`.
    #[arg(long = "tls-cert", env = "ECHO_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--tls-cert`, reloaded with it.
    #[arg(long = "tls-key", env = "ECHO_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require of every caller a client certificate signed by a CA of this
    /// PEM file (mutual TLS, in addition to tokens); needs `--tls-cert`.
    #[arg(long = "client-ca", env = "ECHO_CLIENT_CA")]
    pub client_ca: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub client: ClientCertArgs,
}

/// The certificate a service presents when a service it calls asks for one
/// (mutual TLS).
#[derive(Debug, Clone, Args)]
pub struct ClientCertArgs {
    /// PEM client certificate chain presented on calls to other services,
    /// reloaded when the file changes (default: `--tls-cert`, which must
    /// then allow client authentication); needs `--client-key`.
    #[arg(
        long = "client-cert",
        env = "ECHO_CLIENT_CERT",
        requires = "client_key"
    )]
    pub client_cert: Option<std::path::PathBuf>,
    /// The PEM private key of `--client-cert`.
    #[arg(long = "client-key", env = "ECHO_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<std::path::PathBuf>,
}

/// Certificate authorities trusted for outgoing TLS.
#[derive(Debug, Clone, Args)]
pub struct CaFileArg {
    /// A PEM file of certificate authorities trusted for outgoing TLS
    /// (services, PostgreSQL, Redis, NATS), beside the system's roots.
    #[arg(long = "ca-file", env = "ECHO_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
}

/// Where replicas count their rate limits together (`serve identity`,
/// `serve gateway`).
#[derive(Debug, Clone, Args)]
pub struct RateLimitArgs {
    /// Count rate limits in this Redis, shared by every replica
    /// (`redis://host:port[/db]`, or `rediss://…` for TLS; one with a
    /// password by `ECHO_RATE_LIMIT_URL` or `ECHO_RATE_LIMIT_URL_FILE`).
    /// Without it identity counts in its PostgreSQL when it runs on one,
    /// and otherwise each process counts its own.
    #[arg(long = "rate-limit-url", env = "ECHO_RATE_LIMIT_URL")]
    pub rate_limit_url: Option<String>,
    /// Prefix of the rate limits' keys in Redis.
    #[arg(long = "rate-limit-prefix", env = "ECHO_RATE_LIMIT_PREFIX", default_value = echo_edge::DEFAULT_RATE_LIMIT_PREFIX)]
    pub rate_limit_prefix: String,
}

impl RateLimitArgs {
    /// The counters in the Redis named, if one is (its TLS trusting
    /// `roots`).
    pub async fn redis(
        &self,
        roots: &TrustedRoots,
    ) -> anyhow::Result<Option<Arc<dyn SharedCounters>>> {
        let Some(url) = url_setting(self.rate_limit_url.as_deref(), RATE_LIMIT_URL_VAR)? else {
            return Ok(None);
        };
        let counters = RedisCounters::open(&url, roots, &self.rate_limit_prefix)
            .await
            .with_context(|| {
                format!("cannot connect to the rate limits' Redis ({RATE_LIMIT_URL_VAR})")
            })?;
        Ok(Some(Arc::new(counters)))
    }
}
