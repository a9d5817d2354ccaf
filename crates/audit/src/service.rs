//! The audit service's domain: who may write and read, and what is stored.
//!
//! A writer's identity is its token's `sub`, never the body: an event that
//! names another service is refused (the whole batch, before anything is
//! written), so no service can write as another. Every event is validated and
//! redacted before the batch is appended, so a batch is stored whole or not
//! at all.

use std::sync::Arc;

use echo_core::Clock;
use echo_crypto::secret::random_token;
use echo_verify::Claims;

use crate::chain::Anchor;
use crate::checkpoint::{Checkpoint, NoteSigner};
use crate::event::{Event, EventError};
use crate::redact::redact;
use crate::store::{Appended, AuditStore, AuditStoreError, EventQuery};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Most events one query returns.
pub const MAX_LIMIT: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("event {index}: {source}")]
    InvalidEvent { index: usize, source: EventError },
    #[error("event {index} names service {named:?} but the token is {writer:?}'s")]
    Impersonation {
        index: usize,
        named: String,
        writer: String,
    },
    #[error("a batch holds at most {MAX_BATCH} events")]
    BatchTooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error("reading the audit log needs role auditor or admin, or scope audit.read")]
    Forbidden,
    #[error(transparent)]
    Store(#[from] AuditStoreError),
}

/// The audit service: store, checkpoint signer and clock.
pub struct AuditService {
    store: Arc<dyn AuditStore>,
    /// Signs checkpoints; its name is the log's origin.
    signer: NoteSigner,
    clock: Arc<dyn Clock>,
}

impl AuditService {
    pub fn new(store: Arc<dyn AuditStore>, signer: NoteSigner, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            signer,
            clock,
        }
    }

    /// Validates, attributes and redacts a batch, then appends it.
    pub async fn ingest(
        &self,
        writer: &Claims,
        batch: Vec<serde_json::Value>,
    ) -> Result<Appended, AuditError> {
        if batch.len() > MAX_BATCH {
            return Err(AuditError::BatchTooLarge);
        }
        let now_ms = self.clock.now() * 1000;
        let mut events = Vec::with_capacity(batch.len());
        for (index, mut raw) in batch.into_iter().enumerate() {
            let object = raw.as_object_mut().ok_or_else(|| {
                AuditError::BadRequest(format!("event {index} is not a JSON object"))
            })?;
            match object.get("service").and_then(|s| s.as_str()) {
                Some(named) if named != writer.sub => {
                    return Err(AuditError::Impersonation {
                        index,
                        named: named.to_owned(),
                        writer: writer.sub.clone(),
                    });
                }
                _ => {
                    object.insert("service".into(), writer.sub.clone().into());
                }
            }
            object.entry("time").or_insert(now_ms.into());
            object.entry("id").or_insert_with(|| random_token().into());
            let mut event: Event = serde_json::from_value(raw)
                .map_err(|e| AuditError::BadRequest(format!("event {index}: {e}")))?;
            event
                .validate()
                .map_err(|source| AuditError::InvalidEvent { index, source })?;
            redact(&mut event);
            events.push(event);
        }
        Ok(self.store.append(&events).await?)
    }

    /// Events matching `query`, newest first; only for readers.
    pub async fn query(
        &self,
        reader: &Claims,
        mut query: EventQuery,
    ) -> Result<Vec<crate::chain::ChainedEvent>, AuditError> {
        if !may_read(reader) {
            return Err(AuditError::Forbidden);
        }
        query.limit = query.limit.clamp(1, MAX_LIMIT);
        Ok(self.store.query(&query).await?)
    }

    /// Signs the current head if it moved since the last checkpoint, and
    /// returns the newest signed note.
    pub async fn checkpoint(&self) -> Result<String, AuditError> {
        let Anchor { size, head } = self.store.head().await?;
        if let Some((last_size, note)) = self.store.latest_checkpoint().await?
            && last_size == size
        {
            return Ok(note);
        }
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size,
            head,
            time: self.clock.now(),
        };
        let note = self.signer.sign(&checkpoint);
        self.store.insert_checkpoint(&checkpoint, &note).await?;
        Ok(note)
    }

    /// Refreshes the store's planner statistics (run with each checkpoint).
    pub async fn optimize(&self) -> Result<(), AuditError> {
        Ok(self.store.optimize().await?)
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }
}

/// Users with role `auditor` or `admin`, services with scope `audit.read`.
pub fn may_read(claims: &Claims) -> bool {
    claims.roles.iter().any(|r| r == "auditor" || r == "admin") || claims.has_scope("audit.read")
}

impl AuditService {
    /// A refused read is itself audited, as the audit service's own event.
    pub async fn record_denied(&self, reader: &Claims) {
        let event = Event {
            id: random_token(),
            time: self.clock.now() * 1000,
            service: "audit".into(),
            level: crate::event::Level::Warn,
            action: "audit.query.denied".into(),
            actor: Some(reader.sub.clone()),
            outcome: Some("failure".into()),
            ip: None,
            user_agent: None,
            trace_id: None,
            message: "read of the audit log refused".into(),
            context: serde_json::Value::Null,
        };
        if let Err(e) = self.store.append(&[event]).await {
            tracing::error!(error = %e, "could not record a refused audit read");
        }
    }
}
