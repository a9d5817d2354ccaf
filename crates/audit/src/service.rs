//! The audit service's domain: who may write and read, and what is stored.
//!
//! A writer's identity is its token's `sub`, never the body: an event that
//! names another service is refused (the whole batch, before anything is
//! written), so no service can write as another. Every event is validated and
//! redacted before the batch is appended, so a batch is stored whole or not
//! at all.
//!
//! Writing needs scope `audit.write`. The service, not the writer, dates
//! each event: `time` is when the service received it, so no writer can
//! date an event into the future and hold retention (which stops at the
//! first event not old enough) for good. The time a writer sent is kept
//! as `context.client_time`, and refused when more than [`MAX_CLIENT_AHEAD_MS`]
//! ahead of the service's clock (a writer's clock that far off is broken,
//! and its claimed order of events with it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink, Outcome};
use echo_core::sync::lock;
use echo_crypto::secret::random_token;
use echo_verify::Claims;

use crate::chain::{Anchor, ChainBreak};
use crate::checkpoint::{Checkpoint, NoteSigner, verify_note};
use crate::event::{Event, EventError, Level};
use crate::redact::redact;
use crate::store::{Appended, AuditStore, AuditStoreError, EventQuery};
use crate::verify::{VerifyError, checkpoints_from_notes, extends, verify_through};

/// Most events in one batch.
pub const MAX_BATCH: usize = 1000;
/// Most events one query returns.
pub const MAX_LIMIT: i64 = 1000;
/// Rows deleted per transaction while pruning.
pub const PRUNE_BATCH: i64 = 1000;
/// Most words in a free-text query.
pub const MAX_WORDS: usize = 16;
/// How far ahead of the service's clock a writer's `time` may be.
pub const MAX_CLIENT_AHEAD_MS: i64 = 5 * 60 * 1000;
/// Where the writer's own `time` is kept in a stored event's context.
pub const CLIENT_TIME: &str = "client_time";

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
    #[error(
        "event {index}: time {client_time} is {ahead_ms} ms ahead of the audit service's clock \
         (at most {MAX_CLIENT_AHEAD_MS} ms allowed); the service dates events itself and keeps \
         the writer's time as context.client_time"
    )]
    ClientTimeAhead {
        index: usize,
        client_time: i64,
        ahead_ms: i64,
    },
    #[error("a batch holds at most {MAX_BATCH} events")]
    BatchTooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error("the audit chain does not verify: {0}")]
    ChainBroken(ChainBreak),
    /// The stored chain no longer holds, or no longer leads from, a head
    /// signed before: it was cut or rewritten below it.
    #[error(
        "refusing to sign the head at size {to}: the stored chain does not extend the checkpoint signed at size {from}"
    )]
    Unextended { from: i64, to: i64 },
    #[error(transparent)]
    Store(#[from] AuditStoreError),
}

/// The audit service: store, checkpoint signer and clock.
pub struct AuditService {
    store: Arc<dyn AuditStore>,
    /// Signs checkpoints; its name is the log's origin.
    signer: NoteSigner,
    clock: Arc<dyn Clock>,
    /// The largest head this process signed: kept out of the database, so
    /// deleting the stored checkpoints does not make the service sign a
    /// chain cut or rewritten below it.
    last_signed: Mutex<Option<Anchor>>,
}

impl AuditService {
    pub fn new(store: Arc<dyn AuditStore>, signer: NoteSigner, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            signer,
            clock,
            last_signed: Mutex::new(None),
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
            if let Some(sent) = object.get("level").and_then(|l| l.as_str()) {
                let level = Level::from_writer(sent).ok_or_else(|| {
                    AuditError::BadRequest(format!(
                        "event {index}: unknown level {sent:?} (debug, info, warn, error or critical, any case)"
                    ))
                })?;
                object.insert("level".into(), level.as_str().into());
            }
            stamp_time(object, index, now_ms)?;
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

    /// Events matching `query`, newest first; callers check [`may_read`]
    /// first.
    pub async fn query(
        &self,
        mut query: EventQuery,
    ) -> Result<Vec<crate::chain::ChainedEvent>, AuditError> {
        if query.words.len() > MAX_WORDS {
            return Err(AuditError::BadRequest(format!(
                "q: at most {MAX_WORDS} words"
            )));
        }
        query.limit = query.limit.clamp(1, MAX_LIMIT);
        Ok(self.store.query(&query).await?)
    }

    /// Readiness: the chain's database answers (reading the head is one
    /// small query).
    pub async fn database_ready(&self) -> Result<&'static str, String> {
        self.store
            .head()
            .await
            .map(|_| "ok")
            .map_err(|e| e.to_string())
    }

    /// Signs the current head if it moved since the last checkpoint, and
    /// returns the newest signed note.
    ///
    /// A new head is signed only if the stored chain extends both the newest
    /// stored checkpoint and the last head this process signed (the rows
    /// since then are read and chained, a minute's worth): a chain cut or
    /// rewritten below them is refused with [`AuditError::Unextended`]
    /// instead of being signed.
    pub async fn checkpoint(&self) -> Result<String, AuditError> {
        self.checkpoint_unless_since(None).await
    }

    /// The periodic checkpoint, run by every replica every `every`: time
    /// is cut into intervals of `every` (Unix seconds, from the epoch), and
    /// the first replica to find the head moved in an interval signs it,
    /// the others leave it, so the cluster signs one checkpoint per
    /// interval.
    pub async fn scheduled_checkpoint(&self, every: Duration) -> Result<(), AuditError> {
        let every = i64::try_from(every.as_secs().max(1)).unwrap_or(i64::MAX);
        let now = self.clock.now();
        self.checkpoint_unless_since(Some(now - now.rem_euclid(every)))
            .await
            .map(drop)
    }

    async fn checkpoint_unless_since(&self, since: Option<i64>) -> Result<String, AuditError> {
        let head = self.store.head().await?;
        let latest = self.store.latest_checkpoint().await?;
        let mut signed_before = Vec::new();
        if let Some((last_size, note)) = latest {
            if last_size == head.size {
                return Ok(note);
            }
            let checkpoint = verify_note(&note, &self.signer.verifier_key())
                .map_err(|e| AuditError::Store(AuditStoreError::Corrupt(e.to_string())))?;
            signed_before.push(checkpoint.anchor());
        }
        signed_before.extend(*lock(&self.last_signed));
        for from in signed_before {
            if !extends(&self.store, from, head).await? {
                return Err(AuditError::Unextended {
                    from: from.size,
                    to: head.size,
                });
            }
        }
        self.sign(head, since).await
    }

    /// Signs and stores a checkpoint over `anchor` (unless one was stored
    /// since `since`); returns the newest stored note.
    async fn sign(&self, anchor: Anchor, since: Option<i64>) -> Result<String, AuditError> {
        let checkpoint = Checkpoint {
            origin: self.signer.name().to_owned(),
            size: anchor.size,
            head: anchor.head,
            time: self.clock.now(),
        };
        let note = self.signer.sign(&checkpoint);
        if !self
            .store
            .insert_checkpoint(&checkpoint, &note, since)
            .await?
        {
            let newest = self.store.latest_checkpoint().await?;
            return Ok(newest.map_or(note, |(_, note)| note));
        }
        let mut last = lock(&self.last_signed);
        if last.is_none_or(|last| last.size < anchor.size) {
            *last = Some(anchor);
        }
        Ok(note)
    }

    /// Refreshes the store's planner statistics (run with each checkpoint).
    pub async fn optimize(&self) -> Result<(), AuditError> {
        Ok(self.store.optimize().await?)
    }

    pub fn store(&self) -> Arc<dyn AuditStore> {
        self.store.clone()
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    pub fn verifier_key(&self) -> String {
        self.signer.verifier_key()
    }
}

/// Dates an event with the service's receive time `now_ms`, keeping the
/// writer's `time` (if any, and not too far ahead) as `context.client_time`;
/// a `client_time` the writer put in the context itself is dropped, so the
/// field always means what the service saw.
fn stamp_time(
    object: &mut serde_json::Map<String, serde_json::Value>,
    index: usize,
    now_ms: i64,
) -> Result<(), AuditError> {
    let client_time = match object.remove("time") {
        None | Some(serde_json::Value::Null) => None,
        Some(time) => Some(time.as_i64().ok_or_else(|| {
            AuditError::BadRequest(format!("event {index}: time must be Unix milliseconds"))
        })?),
    };
    if let Some(client_time) = client_time
        && client_time.saturating_sub(now_ms) > MAX_CLIENT_AHEAD_MS
    {
        return Err(AuditError::ClientTimeAhead {
            index,
            client_time,
            ahead_ms: client_time.saturating_sub(now_ms),
        });
    }
    object.insert("time".into(), now_ms.into());
    let context = object.entry("context").or_insert(serde_json::Value::Null);
    if context.is_null() && client_time.is_some() {
        *context = serde_json::Value::Object(serde_json::Map::new());
    }
    // A context that is not an object is refused by validation later.
    if let Some(context) = context.as_object_mut() {
        context.remove(CLIENT_TIME);
        if let Some(client_time) = client_time {
            context.insert(CLIENT_TIME.into(), client_time.into());
        }
    }
    Ok(())
}

/// Who may write to the log: services with scope `audit.write` (Echo's own
/// get it at bootstrap; `echod client add … --scope audit.write` for others).
pub fn may_write(claims: &Claims) -> bool {
    claims.has_scope(WRITE_SCOPE)
}

/// The scope writing needs.
pub const WRITE_SCOPE: &str = "audit.write";
/// What writing to the audit log needs, as a refusal names it.
pub const WRITE_RIGHT: &str = "scope audit.write";

/// Who may read the log: users with role `auditor` or `admin`, services
/// (`sub` = `client_id`) with scope `audit.read`. A user's token carrying
/// the scope is not enough: a scope registered for a client's own service
/// token must not open the log to whoever signs in through that client.
pub fn may_read(claims: &Claims) -> bool {
    let service = claims.client_id.as_deref() == Some(claims.sub.as_str());
    claims.roles.iter().any(|r| r == "auditor" || r == "admin")
        || (service && claims.has_scope("audit.read"))
}

/// What reading the audit log needs, as a refusal names it.
pub const READ_RIGHT: &str = "role auditor or admin, or a service token with scope audit.read";

impl AuditService {
    /// Where the audit service's own events go (its refused callers): into
    /// its own chain, in the order recorded, by a task of their own.
    pub fn own_sink(&self) -> Arc<dyn AuditSink> {
        let (send, mut events) = tokio::sync::mpsc::unbounded_channel::<AuditEvent>();
        let store = self.store.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                let event = own_event_of(event, clock.now() * 1000);
                if let Err(e) = store.append(&[event]).await {
                    tracing::error!(error = %e, "could not record an audit service event");
                }
            }
        });
        Arc::new(OwnSink(send))
    }

    /// An event of the audit service itself; callers fill in the rest.
    fn own_event(&self) -> Event {
        Event {
            id: random_token(),
            time: self.clock.now() * 1000,
            service: "audit".into(),
            level: Level::Info,
            action: String::new(),
            actor: None,
            outcome: None,
            ip: None,
            user_agent: None,
            trace_id: None,
            message: String::new(),
            context: serde_json::Value::Null,
        }
    }

    async fn record_own(&self, event: Event) {
        if let Err(e) = self.store.append(&[event]).await {
            tracing::error!(error = %e, "could not record an audit service event");
        }
    }

    /// The anchors of every checkpoint this service signed, each signature
    /// checked: a note that does not verify is an error, not skipped.
    pub async fn signed_anchors(&self) -> Result<Vec<Anchor>, AuditError> {
        Ok(self
            .signed_checkpoints()
            .await?
            .iter()
            .map(Checkpoint::anchor)
            .collect())
    }

    /// Every checkpoint stored, each signature checked: a note that does not
    /// verify is an error, not skipped.
    pub async fn signed_checkpoints(&self) -> Result<Vec<Checkpoint>, AuditError> {
        let notes = self.store.checkpoint_notes().await?;
        checkpoints_from_notes(&notes, &self.signer.verifier_key())
            .map_err(|e| AuditError::Store(AuditStoreError::Corrupt(e.to_string())))
    }

    /// Retention: deletes the events older than `cutoff_ms` (Unix ms) from
    /// the front of the chain, in transactions of [`PRUNE_BATCH`] rows so
    /// appends wait milliseconds at most. Pruning stops at the first event
    /// that is not old enough, so the retained chain stays contiguous.
    ///
    /// Before anything is deleted, the rows to go are verified (pruning must
    /// not launder tampering), and a checkpoint is signed at the last of them:
    /// that signed anchor is the retained chain's new start, from which
    /// `echod audit verify` checks what remains. Returns the rows deleted.
    pub async fn prune(&self, cutoff_ms: i64) -> Result<u64, AuditError> {
        let start = self.store.retained_start().await?;
        let through = match self.store.first_seq_since(cutoff_ms, start.size).await? {
            Some(seq) => seq - 1,
            None => self.store.head().await?.size,
        };
        if through <= start.size {
            return Ok(0);
        }
        let anchors = self.signed_anchors().await?;
        let verified = verify_through(self.store.clone(), anchors, through)
            .await
            .map_err(|e| match e {
                VerifyError::Broken(broken) => AuditError::ChainBroken(broken),
                VerifyError::Store(e) => AuditError::Store(e),
            })?;
        let anchor = Anchor {
            size: verified.summary.count,
            head: verified.summary.head,
        };
        self.sign(anchor, None).await?;
        self.store.set_retained_start(&anchor).await?;
        let mut deleted = 0;
        loop {
            let n = self.store.delete_oldest(anchor.size, PRUNE_BATCH).await?;
            if n == 0 {
                break;
            }
            deleted += n;
            tokio::task::yield_now().await;
        }
        self.record_own(Event {
            action: "audit.retention.pruned".into(),
            outcome: Some("success".into()),
            message: format!("pruned {deleted} events older than the retention period"),
            context: serde_json::json!({"through_seq": anchor.size, "deleted": deleted, "cutoff": cutoff_ms}),
            ..self.own_event()
        })
        .await;
        Ok(deleted)
    }
}

/// The audit service's own events, sent to its writing task.
struct OwnSink(tokio::sync::mpsc::UnboundedSender<AuditEvent>);

impl AuditSink for OwnSink {
    fn record(&self, event: AuditEvent) {
        if self.0.send(echo_edge::trace::stamp(event)).is_err() {
            tracing::error!("the audit service's own events can no longer be recorded");
        }
    }
}

/// An event of the audit service itself, from the shared audit vocabulary.
fn own_event_of(event: AuditEvent, time_ms: i64) -> Event {
    let (level, outcome) = match event.outcome {
        Outcome::Success => (Level::Info, "success"),
        Outcome::Failure => (Level::Warn, "failure"),
    };
    let mut own = Event {
        id: random_token(),
        time: time_ms,
        service: "audit".into(),
        level,
        action: event.action.into(),
        actor: event.actor,
        outcome: Some(outcome.into()),
        ip: event.ip,
        user_agent: event.user_agent,
        trace_id: event.trace_id,
        message: event.action.into(),
        context: serde_json::Value::Object(event.details),
    };
    redact(&mut own);
    own
}
