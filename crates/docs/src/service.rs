//! The docs domain: who may do what with which document. Knows nothing of
//! HTTP; `http.rs` authenticates the caller and hands over a [`Caller`] (a
//! user) or a [`Worker`] (the indexing service).
//!
//! Ownership: a user sees, downloads and deletes their own documents; an
//! admin any. Anything else is [`DocsError::NotFound`], whether the
//! document exists or not, and is audited as `document.denied`. Questions
//! search only the caller's own documents, admins included.
//!
//! Quotas: a user's documents may hold at most `quota_bytes` and number at
//! most `quota_files`, and a user uploads at most `uploads_per_minute`
//! files (a token bucket, bursts up to that many). One user's uploads are
//! serialised by a lock on the owner, so parallel uploads cannot each see
//! room that only one of them has.
//!
//! Two kinds of race are closed with striped locks within one process:
//! - a delete and an upload of the same bytes: storing a blob and inserting
//!   its row, and deleting a row and removing its blob when no row is left,
//!   each hold the blob's lock, so a blob is never removed under a new row;
//! - a delete and the worker's index write: both hold the document's lock,
//!   and the index write checks the row exists under it, so no chunk of a
//!   deleted document stays in the index.
//!
//! Across replicas (shared records, blob store and search) the database
//! closes both: the blob's put and its record's insert, and the check for
//! records left and the blob's removal, each run in a transaction holding
//! the blob ([`DocumentStore::insert_with_blob`]: an advisory lock on
//! PostgreSQL); and a chunk references its document's record and goes
//! with it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use echo_core::Clock;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_edge::{Limit, Limiter, Origin, SharedCounters, SharedLimiter};
use echo_queue::{JobId, JobQueue, JobState, JobStatus};
use echo_text::{Chunk, Kind};
use serde::Serialize;
use serde_json::json;
use tokio::sync::{Mutex, MutexGuard};

use crate::blobs::{Blob, BlobStore, hex};
use crate::store::{Document, DocumentStore, Usage};
use crate::{Answer, DocsError, LlmClient, Quota, Result, SearchIndex, blocking, extractive};

/// The job kind the worker runs for every upload.
pub const INDEX_JOB: &str = "index_document";

/// The longest display name kept, in characters.
const MAX_NAME_CHARS: usize = 255;

/// The bounds on what callers send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest document accepted (413 above).
    pub max_upload_bytes: usize,
    /// Documents one upload request may carry (413 above).
    pub max_files_per_request: usize,
    /// Largest body of the worker's index write: the chunks of one
    /// document's text as JSON.
    pub max_index_bytes: usize,
    /// Longest question, in characters (400 above).
    pub max_question_chars: usize,
    /// Passages an answer is drawn from.
    pub passages: usize,
    /// Bytes one user may store in all (413 above).
    pub quota_bytes: u64,
    /// Documents one user may have (413 above).
    pub quota_files: u64,
    /// Files one user may upload a minute, all at once if need be (429
    /// above).
    pub uploads_per_minute: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_upload_bytes: 25 * 1024 * 1024,
            max_files_per_request: 20,
            max_index_bytes: 64 * 1024 * 1024,
            max_question_chars: 1000,
            passages: 5,
            quota_bytes: 1 << 30,
            quota_files: 10_000,
            uploads_per_minute: 60,
        }
    }
}

/// A user acting on their documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: the owner of what the caller uploads.
    pub subject: String,
    /// May see and delete every user's documents.
    pub admin: bool,
    /// Where the request came from, for the audit trail.
    pub origin: Origin,
}

/// The indexing service (a service token with scope `docs.index`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub client_id: String,
}

/// One file of an upload.
#[derive(Debug)]
pub struct Upload {
    /// The name the user gave it; only displayed, after [`display_name`].
    pub name: String,
    pub bytes: Vec<u8>,
}

/// The files of one upload request, read one at a time so that only one
/// is held in memory.
pub trait Uploads: Send {
    /// The next file, `None` after the last, or why the request is refused
    /// (a file above the size limit, a malformed body).
    fn next_file(&mut self) -> impl Future<Output = Result<Option<Upload>>> + Send;
}

/// What users see of a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DocumentView {
    pub id: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    pub size: u64,
    /// The indexing job's state: `queued` (also while a retry waits),
    /// `processing`, `done` or `failed`.
    pub status: JobState,
    /// 0–100.
    pub progress: u8,
    /// Why indexing failed; only with status `failed`.
    pub error: Option<String>,
    /// RFC 3339, UTC, seconds.
    pub created_at: String,
}

/// A document's bytes, for download.
#[derive(Debug)]
pub struct Content {
    pub name: String,
    pub kind: Kind,
    pub bytes: Vec<u8>,
}

/// The docs service's domain.
pub struct Docs {
    store: Arc<dyn DocumentStore>,
    blobs: Arc<dyn BlobStore>,
    index: Arc<dyn SearchIndex>,
    queue: Arc<dyn JobQueue>,
    llm: Option<LlmClient>,
    limits: Limits,
    audit: Arc<dyn AuditSink>,
    clock: Arc<dyn Clock>,
    blob_locks: Stripes,
    document_locks: Stripes,
    owner_locks: Stripes,
    upload_rate: Limiter,
}

/// What a user stores and may store, for their documents page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsageView {
    pub bytes: u64,
    pub files: u64,
    pub quota_bytes: u64,
    pub quota_files: u64,
}

impl Docs {
    /// The service over its parts, with default [`Limits`], the system
    /// clock and extractive answers.
    pub fn new(
        store: Arc<dyn DocumentStore>,
        blobs: Arc<dyn BlobStore>,
        index: Arc<dyn SearchIndex>,
        queue: Arc<dyn JobQueue>,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        Self {
            store,
            blobs,
            index,
            queue,
            llm: None,
            limits: Limits::default(),
            audit,
            clock: Arc::new(echo_core::SystemClock),
            blob_locks: Stripes::new(),
            document_locks: Stripes::new(),
            owner_locks: Stripes::new(),
            upload_rate: Limiter::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Counts users' upload rates in `counters`, which every docs replica
    /// shares, instead of in this process.
    pub fn share_limits(mut self, counters: Arc<dyn SharedCounters>) -> Self {
        self.upload_rate = Limiter::Shared(SharedLimiter::new(counters, "docs"));
        self
    }

    /// Answers questions with this model instead of extractively.
    pub fn with_llm(mut self, llm: Option<LlmClient>) -> Self {
        self.llm = llm;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Readiness: the database of the records answers.
    pub async fn database_ready(&self) -> std::result::Result<&'static str, String> {
        self.store
            .ping()
            .await
            .map(|()| "ok")
            .map_err(|e| e.to_string())
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Stores every file of `files` as a document of the caller's and
    /// queues it for indexing. All or nothing: when one file is refused,
    /// the ones stored before it are removed again.
    pub async fn upload(
        &self,
        caller: &Caller,
        files: &mut impl Uploads,
    ) -> Result<Vec<DocumentView>> {
        let mut created = Vec::new();
        let _owner = self.owner_locks.lock(&caller.subject).await;
        let mut usage = self.store.usage(&caller.subject).await?;
        let stored = async {
            while let Some(file) = files.next_file().await? {
                if created.len() == self.limits.max_files_per_request {
                    return Err(DocsError::TooManyFiles {
                        max: self.limits.max_files_per_request,
                    });
                }
                self.admit(caller, &usage, file.bytes.len() as u64).await?;
                let document = self.store_one(caller, file).await?;
                usage.files += 1;
                usage.bytes += document.size;
                created.push(document);
            }
            if created.is_empty() {
                return Err(DocsError::BadRequest(
                    "no file: send multipart/form-data fields named \"file\", or the file as the body".into(),
                ));
            }
            Ok(())
        }
        .await;
        if let Err(e) = stored {
            for document in &created {
                if let Err(cleanup) = self.remove(document).await {
                    tracing::error!(document = %document.id, error = %cleanup, "cannot undo a refused upload");
                }
            }
            return Err(e);
        }
        let mut views = Vec::with_capacity(created.len());
        for document in &created {
            self.audit.record(
                event(AuditEvent::success("document.upload"), caller)
                    .detail("document_id", document.id.as_str())
                    .detail("type", crate::store::kind_name(document.kind))
                    .detail("size", document.size),
            );
            views.push(self.view(document).await?);
        }
        Ok(views)
    }

    /// Whether one more file of `size` bytes may be stored for `caller`,
    /// who stores `usage`: within their upload rate and their quotas.
    /// Refusals are audited (the rate's once per window).
    async fn admit(&self, caller: &Caller, usage: &Usage, size: u64) -> Result<()> {
        let refused = |reason: &str| {
            self.audit.record(
                event(AuditEvent::failure("document.upload"), caller).detail("reason", reason),
            );
        };
        let rate = Limit::per_minute(self.limits.uploads_per_minute.max(1));
        if let Err(throttled) = self.upload_rate.check(&caller.subject, rate).await {
            if throttled.first_in_window {
                refused("rate_limited");
            }
            return Err(DocsError::RateLimited {
                retry_after: throttled.retry_after,
            });
        }
        let exceeded = [
            (Quota::Files, self.limits.quota_files, usage.files, 1),
            (Quota::Bytes, self.limits.quota_bytes, usage.bytes, size),
        ]
        .into_iter()
        .find(|(_, max, used, adding)| used.saturating_add(*adding) > *max);
        if let Some((quota, max, used, _)) = exceeded {
            refused(match quota {
                Quota::Files => "quota_files",
                Quota::Bytes => "quota_bytes",
            });
            return Err(DocsError::QuotaExceeded { quota, max, used });
        }
        Ok(())
    }

    /// What the caller stores, against their quotas.
    pub async fn usage(&self, caller: &Caller) -> Result<UsageView> {
        let usage = self.store.usage(&caller.subject).await?;
        Ok(UsageView {
            bytes: usage.bytes,
            files: usage.files,
            quota_bytes: self.limits.quota_bytes,
            quota_files: self.limits.quota_files,
        })
    }

    /// The caller's documents (an admin's: everyone's), newest first.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<DocumentView>> {
        let owner = (!caller.admin).then_some(caller.subject.as_str());
        let documents = self.store.list(owner).await?;
        let jobs: Vec<JobId> = documents
            .iter()
            .filter_map(|d| d.job_id.clone().map(JobId::from))
            .collect();
        let mut statuses: HashMap<JobId, JobStatus> = self
            .queue
            .statuses(&jobs)
            .await?
            .into_iter()
            .map(|status| (status.id.clone(), status))
            .collect();
        Ok(documents
            .iter()
            .map(|document| {
                let job = document
                    .job_id
                    .as_ref()
                    .and_then(|id| statuses.remove(&JobId::from(id.clone())));
                view(document, job)
            })
            .collect())
    }

    pub async fn get(&self, caller: &Caller, id: &str) -> Result<DocumentView> {
        let document = self.visible(caller, id, "get").await?;
        self.view(&document).await
    }

    pub async fn content(&self, caller: &Caller, id: &str) -> Result<Content> {
        let document = self.visible(caller, id, "content").await?;
        self.read(document).await
    }

    /// Any document's bytes, for the worker to parse.
    pub async fn worker_content(&self, worker: &Worker, id: &str) -> Result<Content> {
        let document = self.store.get(id).await?.ok_or(DocsError::NotFound)?;
        tracing::debug!(worker = %worker.client_id, document = id, "content for indexing");
        self.read(document).await
    }

    /// Deletes a document: its index entries, its record, and its blob
    /// unless another document has the same bytes.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<()> {
        let document = self.visible(caller, id, "delete").await?;
        self.remove(&document).await?;
        self.audit.record(
            event(AuditEvent::success("document.delete"), caller)
                .detail("document_id", document.id.as_str())
                .detail("owner", document.owner.as_str()),
        );
        Ok(())
    }

    /// The worker's result: `chunks` become the document's index entries,
    /// replacing any from an earlier run (a job run twice indexes once).
    /// The owner and name on every entry come from the record, never from
    /// the worker. [`DocsError::NotFound`] when the document was deleted.
    pub async fn index_document(
        &self,
        worker: &Worker,
        id: &str,
        chunks: Vec<Chunk>,
    ) -> Result<()> {
        let _held = self.document_locks.lock(id).await;
        let document = self.store.get(id).await?.ok_or(DocsError::NotFound)?;
        let count = chunks.len();
        self.index
            .replace(&document.id, &document.owner, &document.name, chunks)
            .await?;
        tracing::debug!(worker = %worker.client_id, document = id, chunks = count, "indexed");
        Ok(())
    }

    /// Answers `question` from the caller's own documents only.
    pub async fn query(&self, caller: &Caller, question: &str) -> Result<Answer> {
        let question = question.trim();
        let chars = question.chars().count();
        if chars == 0 || chars > self.limits.max_question_chars {
            return Err(DocsError::BadRequest(format!(
                "the question must have 1 to {} characters",
                self.limits.max_question_chars
            )));
        }
        let passages = self
            .index
            .search(&caller.subject, question, self.limits.passages)
            .await?;
        let answer = match &self.llm {
            // Without passages there is nothing to ground an answer in.
            Some(llm) if !passages.is_empty() => llm.answer(question, &passages).await?,
            _ => extractive(question, &passages),
        };
        // The question itself stays out of the trail: it may be sensitive.
        self.audit.record(
            event(AuditEvent::success("query"), caller)
                .detail("question_chars", chars)
                .detail("passages", passages.len())
                .detail("generated", self.llm.is_some() && !passages.is_empty()),
        );
        Ok(answer)
    }

    async fn store_one(&self, caller: &Caller, file: Upload) -> Result<Document> {
        let name = display_name(&file.name);
        let size = file.bytes.len();
        if size > self.limits.max_upload_bytes {
            return Err(DocsError::TooLarge {
                max: self.limits.max_upload_bytes,
            });
        }
        if size == 0 {
            return Err(DocsError::BadRequest(format!("{name}: the file is empty")));
        }
        let kind = echo_text::sniff(&file.bytes, Some(&name))
            .ok_or_else(|| DocsError::Unsupported { name: name.clone() })?;
        let bytes = file.bytes;
        let blob = blocking(move || Ok(Blob::new(bytes))).await?;
        let mut document = Document {
            id: hex(&echo_crypto::secret::random_bytes::<16>()),
            owner: caller.subject.clone(),
            name,
            kind,
            size: size as u64,
            sha256: blob.digest().to_owned(),
            job_id: None,
            created_at: self.clock.now(),
        };
        {
            let _held = self.blob_locks.lock(&document.sha256).await;
            // Stored and recorded in one hold on the blob (replicas').
            self.store
                .insert_with_blob(&document, self.blobs.put(blob))
                .await?;
        }
        // Queued after the insert, so the worker never looks for a record
        // that is not there yet; keyed by the id, so a retried enqueue is
        // one job. The upload's trace goes with it, for the worker's hops.
        let queued = async {
            let payload = json!({
                "document_id": document.id,
                "traceparent": caller.origin.trace.traceparent(),
            });
            let job = self
                .queue
                .enqueue(INDEX_JOB, &payload, Some(&document.id))
                .await?;
            self.store.set_job(&document.id, job.as_str()).await?;
            Ok::<_, DocsError>(job)
        }
        .await;
        match queued {
            Ok(job) => {
                document.job_id = Some(job.to_string());
                Ok(document)
            }
            Err(e) => {
                if let Err(cleanup) = self.remove(&document).await {
                    tracing::error!(document = %document.id, error = %cleanup, "cannot undo an upload");
                }
                Err(e)
            }
        }
    }

    /// The document `id` if the caller may see it; otherwise NotFound,
    /// audited.
    async fn visible(&self, caller: &Caller, id: &str, action: &str) -> Result<Document> {
        match self.store.get(id).await? {
            Some(document) if caller.admin || document.owner == caller.subject => Ok(document),
            _ => {
                self.audit.record(
                    event(AuditEvent::failure("document.denied"), caller)
                        .detail("document_id", id)
                        .detail("request", action),
                );
                Err(DocsError::NotFound)
            }
        }
    }

    async fn read(&self, document: Document) -> Result<Content> {
        let bytes = self.blobs.read(&document.sha256).await?;
        Ok(Content {
            name: document.name,
            kind: document.kind,
            bytes,
        })
    }

    /// Index entries, then the record (under the document's lock, see the
    /// module doc), then the blob if nothing else holds it.
    async fn remove(&self, document: &Document) -> Result<()> {
        {
            let _held = self.document_locks.lock(&document.id).await;
            self.index.remove(&document.id).await?;
            self.store.delete(&document.id).await?;
        }
        let _held = self.blob_locks.lock(&document.sha256).await;
        self.store
            .remove_unreferenced_blob(&document.sha256, self.blobs.remove(&document.sha256))
            .await?;
        Ok(())
    }

    async fn view(&self, document: &Document) -> Result<DocumentView> {
        let job = match &document.job_id {
            Some(id) => self.queue.status(&JobId::from(id.clone())).await?,
            None => None,
        };
        Ok(view(document, job))
    }
}

/// A document as its owner sees it, its status from its job's.
fn view(document: &Document, job: Option<JobStatus>) -> DocumentView {
    // No status yet (the job is being queued): queued.
    let (status, progress, error) = match job {
        Some(job) => {
            let error = if job.state == JobState::Failed {
                job.last_error
            } else {
                None
            };
            (job.state, job.progress, error)
        }
        None => (JobState::Queued, 0, None),
    };
    DocumentView {
        id: document.id.clone(),
        name: document.name.clone(),
        kind: document.kind,
        size: document.size,
        status,
        progress,
        error,
        created_at: rfc3339(document.created_at),
    }
}

impl std::fmt::Debug for Docs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Docs")
            .field("blobs", &self.blobs)
            .field("llm", &self.llm)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// A user-supplied file name made fit for display: its last path component,
/// without control and bidirectional-override characters (which could make
/// `cod.exe` look like `exe.doc`), at most [`MAX_NAME_CHARS`] characters;
/// `document` when nothing is left.
pub fn display_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let kept: String = last
        .chars()
        .filter(|c| {
            !c.is_control() && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .take(MAX_NAME_CHARS)
        .collect();
    match kept.trim() {
        "" | "." | ".." => "document".to_owned(),
        name => name.to_owned(),
    }
}

fn event(event: AuditEvent, caller: &Caller) -> AuditEvent {
    caller.origin.stamp(event.actor(caller.subject.as_str()))
}

fn rfc3339(unix_seconds: i64) -> String {
    let time = UNIX_EPOCH + Duration::from_secs(u64::try_from(unix_seconds).unwrap_or(0));
    humantime::format_rfc3339_seconds(time).to_string()
}

/// A fixed set of async locks, one chosen per key: mutual exclusion per key
/// without a lock per key to create and clean up (two keys may share a
/// lock, which only costs a little waiting).
struct Stripes([Mutex<()>; 64]);

impl Stripes {
    fn new() -> Self {
        Self(std::array::from_fn(|_| Mutex::new(())))
    }

    async fn lock(&self, key: &str) -> MutexGuard<'_, ()> {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        let stripe = (hasher.finish() % self.0.len() as u64) as usize;
        self.0[stripe].lock().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_are_last_components_without_controls() {
        assert_eq!(display_name("../../etc/passwd"), "passwd");
        assert_eq!(display_name(r"C:\Users\a\report.pdf"), "report.pdf");
        assert_eq!(display_name("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(display_name("cod\u{202e}cod.exe"), "codcod.exe");
        assert_eq!(display_name("dir/"), "document");
        assert_eq!(display_name(".."), "document");
        assert_eq!(display_name("  "), "document");
        assert_eq!(display_name(&"é".repeat(400)).chars().count(), 255);
        assert_eq!(display_name("notes — été.md"), "notes — été.md");
    }
}
