//! Echo's own services as clients of identity (the gateway, docs, the
//! parser, the worker): where each keeps its secret, and the audit writer
//! a service records through as its own client. Their registrations are
//! `bootstrap.rs`'s.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_audit_client::{AuditWriter, WriterConfig};
use echo_core::audit::{AuditSink, LogAuditSink};
use echo_crypto::secret::generate_client_secret;
use echo_edge::{Check, ServiceTokens, TokenSource};
use echo_tls::ClientTls;

use crate::settings::{existing_secret_text, secret_text};

/// The scope a service's audit writes need.
pub const AUDIT_WRITE: &str = echo_audit::service::WRITE_SCOPE;

/// Where a service's client secret lives: the variable `var`, else
/// `<data>/<file>` (0600).
pub struct SecretPlace {
    pub var: &'static str,
    pub file: &'static str,
    /// The service, as error messages name it ("the gateway").
    pub service: &'static str,
}

/// The secret at `place`, created on first run when `create` (`echod up`);
/// a missing one is an error that says where to put it. Never printed or
/// logged.
pub fn client_secret(dir: &Path, place: &SecretPlace, create: bool) -> anyhow::Result<String> {
    let text = if create {
        secret_text(dir, place.var, place.file, generate_client_secret)?
    } else {
        existing_secret_text(dir, place.var, place.file)?.with_context(|| {
            format!(
                "{} needs its client secret: set {} or put it in {}",
                place.service,
                place.var,
                dir.join(place.file).display()
            )
        })?
    };
    Ok(text.trim().to_owned())
}

/// The client-credentials tokens of the first-party client `client_id`
/// of `issuer`, whose secret must exist at `place` (a `serve` command).
pub fn service_tokens(
    dir: &Path,
    issuer: &str,
    client_id: &str,
    place: &SecretPlace,
    tls: &ClientTls,
) -> anyhow::Result<Arc<ServiceTokens>> {
    let secret = client_secret(dir, place, false)?;
    Ok(Arc::new(ServiceTokens::new(
        issuer, client_id, &secret, tls,
    )))
}

/// Where a first-party service's audit events go (docs, the parser), and
/// the writer to flush at shutdown if it is one.
pub struct ServiceAudit {
    pub sink: Arc<dyn AuditSink>,
    pub writer: Option<Arc<AuditWriter>>,
}

impl ServiceAudit {
    /// The audit service at `url` (reached with `tls`), with tokens from
    /// `token`, spooled under `<data>/audit-spool/<client_id>`.
    pub fn start(
        dir: &Path,
        client_id: &str,
        (url, tls): (&str, &ClientTls),
        token: Arc<dyn TokenSource>,
    ) -> anyhow::Result<Self> {
        let mut config = WriterConfig::new(
            url.trim_end_matches('/'),
            dir.join("audit-spool").join(client_id),
        );
        config.tls = tls.clone();
        let writer = AuditWriter::start(config, token)
            .with_context(|| format!("cannot start the audit writer of {client_id}"))?;
        Ok(Self {
            sink: writer.clone(),
            writer: Some(writer),
        })
    }

    /// The audit service at `url` with tokens for `audience` and scope
    /// `audit.write` from the service's own `tokens`.
    pub fn writer(
        dir: &Path,
        tokens: &Arc<ServiceTokens>,
        (url, tls): (&str, &ClientTls),
        audience: &str,
    ) -> anyhow::Result<Self> {
        let source = tokens.source(audience, AUDIT_WRITE);
        Self::start(dir, tokens.client_id(), (url, tls), source)
    }

    /// What a `serve` command records through: the audit service at `url`
    /// as the service's client of `issuer` (its secret at `place`, which
    /// must exist), or the log without a URL.
    pub fn for_serve(
        dir: &Path,
        (issuer, client_id, place): (&str, &str, &SecretPlace),
        url: Option<&str>,
        audience: &str,
        tls: &ClientTls,
    ) -> anyhow::Result<Self> {
        match url {
            Some(url) => {
                let tokens = service_tokens(dir, issuer, client_id, place, tls)?;
                Self::writer(dir, &tokens, (url, tls), audience)
            }
            None => Ok(Self::log()),
        }
    }

    /// The writer's readiness check, if it is one: `ok`, or `spooling`
    /// while the audit service is away (still ready: events wait on disk).
    pub fn check(&self) -> Option<Check> {
        let writer = self.writer.clone()?;
        Some(Check::new("audit", move || {
            let state = writer.state();
            async move { Ok(state) }
        }))
    }

    /// Events to the log.
    pub fn log() -> Self {
        Self {
            sink: Arc::new(LogAuditSink),
            writer: None,
        }
    }

    /// Sends what is still buffered (the rest stays spooled on disk); what
    /// a service runs when it stops.
    pub async fn shutdown(self) {
        if let Some(writer) = self.writer {
            writer.shutdown().await;
        }
    }
}
