//! The first-party clients of identity that `echod up` registers (the
//! gateway, docs, the parser, the worker): where each keeps its secret,
//! bringing each registration up to date on every start, and the audit
//! writer a service records through as its own client.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use echo_audit_client::{AuditWriter, ClientCredentials, WriterConfig};
use echo_core::SystemClock;
use echo_core::audit::{AuditSink, LogAuditSink};
use echo_crypto::secret::{generate_client_secret, hash_client_secret, verify_client_secret};
use echo_identity::admin::{self, NewClient};
use echo_store::Store;

use crate::settings::{existing_secret_text, secret_text};

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

/// What a first-party client needs of its registration.
pub struct Registration<'a> {
    pub id: &'a str,
    pub secret: &'a str,
    pub grants: Vec<String>,
    pub audiences: Vec<String>,
    pub scopes: Vec<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// Registers the client, or brings an existing registration up to date:
/// the current secret (a changed one replaces the old at once) and at
/// least the grants, audiences and scopes it needs now (what an
/// administrator added stays). Redirect URIs are not changed in place:
/// the existing registration is returned for the caller to check them;
/// `None` means it was created now.
pub async fn register(
    store: &dyn Store,
    wanted: Registration<'_>,
) -> anyhow::Result<Option<echo_store::Client>> {
    let Some(existing) = store.client(wanted.id).await? else {
        let new = NewClient {
            id: wanted.id.into(),
            secret: admin::ClientSecret::Provided(wanted.secret.to_owned()),
            redirect_uris: wanted.redirect_uris,
            grants: wanted.grants,
            audiences: wanted.audiences,
            scopes: wanted.scopes,
            post_logout_redirect_uris: wanted.post_logout_redirect_uris,
            allow_no_pkce: false,
        };
        admin::add_client(store, &LogAuditSink, &SystemClock, new).await?;
        tracing::info!(client = wanted.id, "registered a client at identity");
        return Ok(None);
    };
    let current = existing
        .secret_hash
        .as_deref()
        .is_some_and(|stored| verify_client_secret(wanted.secret, stored));
    if !current {
        let now = echo_core::Clock::now(&SystemClock);
        store
            .rotate_client_secret(wanted.id, &hash_client_secret(wanted.secret), now)
            .await?;
        tracing::info!(client = wanted.id, "updated a client's secret at identity");
    }
    ensure_access(
        store,
        &existing,
        &wanted.grants,
        &wanted.audiences,
        &wanted.scopes,
    )
    .await?;
    Ok(Some(existing))
}

/// A service that only uses client credentials (docs, the worker).
pub async fn register_service(
    store: &dyn Store,
    id: &str,
    secret: &str,
    audiences: Vec<String>,
    scopes: Vec<String>,
) -> anyhow::Result<()> {
    register(
        store,
        Registration {
            id,
            secret,
            grants: vec![admin::GRANT_CLIENT_CREDENTIALS.to_owned()],
            audiences,
            scopes,
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
        },
    )
    .await?;
    Ok(())
}

/// Adds to `client`'s registration whatever of `grants`, `audiences` and
/// `scopes` it lacks (an older `echod up` registered it with fewer); what
/// an administrator added stays.
async fn ensure_access(
    store: &dyn Store,
    client: &echo_store::Client,
    grants: &[String],
    audiences: &[String],
    scopes: &[String],
) -> anyhow::Result<()> {
    let union = |have: &[String], want: &[String]| {
        let mut all = have.to_vec();
        all.extend(want.iter().filter(|w| !have.contains(w)).cloned());
        all
    };
    let (new_grants, new_audiences, new_scopes) = (
        union(&client.grant_types, grants),
        union(&client.audiences, audiences),
        union(&client.scopes, scopes),
    );
    if (&new_grants, &new_audiences, &new_scopes)
        == (&client.grant_types, &client.audiences, &client.scopes)
    {
        return Ok(());
    }
    store
        .update_client_access(&client.id, &new_grants, &new_audiences, &new_scopes)
        .await?;
    tracing::info!(
        client = %client.id,
        grants = ?new_grants,
        audiences = ?new_audiences,
        scopes = ?new_scopes,
        "updated a client's registration at identity"
    );
    Ok(())
}

/// Where a first-party service's audit events go (docs, the parser), and
/// the writer to flush at shutdown if it is one.
pub struct ServiceAudit {
    pub sink: Arc<dyn AuditSink>,
    pub writer: Option<Arc<AuditWriter>>,
}

impl ServiceAudit {
    /// The audit service at `url` with tokens for `audience`, as the
    /// service's own client of `issuer` (`client_id` with `secret`),
    /// spooled under `<data>/audit-spool/<client_id>`.
    pub fn writer(
        dir: &Path,
        (issuer, client_id, secret): (&str, &str, &str),
        url: &str,
        audience: &str,
    ) -> anyhow::Result<Self> {
        let token = ClientCredentials::new(
            format!("{}/token", issuer.trim_end_matches('/')),
            client_id.into(),
            secret.to_owned(),
            audience.into(),
        );
        let config = WriterConfig::new(
            url.trim_end_matches('/'),
            dir.join("audit-spool").join(client_id),
        );
        let writer = AuditWriter::start(config, Arc::new(token))
            .with_context(|| format!("cannot start the audit writer of {client_id}"))?;
        Ok(Self {
            sink: writer.clone(),
            writer: Some(writer),
        })
    }

    /// What a `serve` command records through: the audit service at `url`
    /// as the service's client (its secret from `place`, which must exist),
    /// or the log without a URL.
    pub fn for_serve(
        dir: &Path,
        (issuer, client_id, place): (&str, &str, &SecretPlace),
        url: Option<&str>,
        audience: &str,
    ) -> anyhow::Result<Self> {
        match url {
            Some(url) => {
                let secret = client_secret(dir, place, false)?;
                Self::writer(dir, (issuer, client_id, &secret), url, audience)
            }
            None => Ok(Self::log()),
        }
    }

    /// Events to the log.
    pub fn log() -> Self {
        Self {
            sink: Arc::new(LogAuditSink),
            writer: None,
        }
    }

    /// Sends what is still buffered (the rest stays spooled on disk).
    pub async fn shutdown(self) {
        if let Some(writer) = self.writer {
            writer.shutdown().await;
        }
    }
}
