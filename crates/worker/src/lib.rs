//! The document pipeline's worker: takes `index_document` jobs from the
//! queue and has each document parsed, chunked and indexed.
//!
//! ```text
//!  queue ──take──► Worker ──GET /v1/documents/{id}/content──► docs   (progress 10)
//!                    │────POST /v1/parse?filename=NAME──────► parser (progress 50)
//!                    │  chunk_text                                    (progress 90)
//!                    └────PUT /v1/documents/{id}/index──────► docs   → complete
//! ```
//!
//! - [`Worker::run`] runs [`WorkerConfig::concurrency`] loops, each taking
//!   one job at a time for [`WorkerConfig::lease`] and renewing the lease
//!   every third of it (a spawned heartbeat) while the job runs. An idle
//!   loop asks again after [`WorkerConfig::idle_poll`].
//! - Every call is HTTP with the worker's own service token for the service
//!   called ([`Tokens`]: client credentials, audiences `docs` and `parser`);
//!   a 401 drops the cached token and tries once more. A 503 (the service's
//!   PostgreSQL or NATS away) is waited out, as its `Retry-After` says, for
//!   up to [`WorkerConfig::unavailable_patience`] (60 s) per call before it
//!   fails the attempt, so a short outage spends none of the job's attempts
//!   (the heartbeat keeps the lease meanwhile).
//! - Progress is written [`PROGRESS_DELAY`] after it changes, so a job
//!   that takes only milliseconds writes none (its completion sets 100).
//! - Failures ([`WorkerError::failure`]): the parser's 413/415/422 fail the
//!   job at once with the parser's message, which the user sees; so do an
//!   unknown job kind and a malformed payload. Anything that may pass next
//!   time (5xx, 401, a 503 outlasting the patience, timeouts, connection
//!   errors, no token) is a transient failure the queue retries with
//!   backoff. A document deleted meanwhile (docs answers 404) completes the
//!   job: nothing to do.
//! - Jobs run at least once (a worker that dies mid-job leaves its lease to
//!   expire and the job to be taken again): indexing is idempotent on docs'
//!   side (`PUT …/index` replaces the document's chunks). A worker whose
//!   lease was lost meanwhile finishes its run, and the queue refuses its
//!   completion (logged): the other worker's run is the one that counts.
//! - At shutdown a job in progress is abandoned, not failed: its lease
//!   expires and another worker (or this one, restarted) takes it again.
//! - Each run is traced: it continues the upload's trace (the payload's
//!   `traceparent`, else a new one) in a span `job` whose `trace_id` every
//!   log line of the run carries, sends it on to docs and the parser, and
//!   records its end as the audit event `document.index` (success, or
//!   failure with the error) under that trace id.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use echo_core::audit::{AuditEvent, AuditSink, bounded};
use echo_edge::{TokenSource, TraceContext};
use echo_queue::{Failed, JobQueue, Lease, Leased, QueueError};
use tokio::sync::watch;
use tokio::task::JoinSet;

mod error;
mod job;
mod progress;

pub use error::{Result, WorkerError};
pub use job::INDEX_DOCUMENT;
pub use progress::PROGRESS_DELAY;

use job::{Outcome, Pipeline};
use progress::Progress;

/// The worker's service tokens: one for docs' audience, one for the
/// parser's (two sources of one [`echo_edge::ServiceTokens`]).
#[derive(Clone)]
pub struct Tokens {
    pub docs: Arc<dyn TokenSource>,
    pub parser: Arc<dyn TokenSource>,
}

/// Where the services are and how the worker takes jobs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The docs service's base URL (e.g. `http://127.0.0.1:8083`).
    pub docs_url: String,
    /// The parser's base URL (e.g. `http://127.0.0.1:8084`).
    pub parser_url: String,
    /// Names this worker at the queue (each loop adds `-<n>`).
    pub name: String,
    /// Jobs worked on at once (≥ 1).
    pub concurrency: usize,
    /// How long a take holds a job without a heartbeat. On NATS it must be
    /// the queue's `nats_lease`.
    pub lease: Duration,
    /// How long an idle loop waits before asking the queue again.
    pub idle_poll: Duration,
    /// The longest one HTTP call may take (a download, a parse, an index).
    pub request_timeout: Duration,
    /// How long one call waits out a service's `503`s (its engine away)
    /// before the attempt fails: an outage shorter than this spends none
    /// of the job's attempts.
    pub unavailable_patience: Duration,
    /// Whom the worker trusts when it calls docs and the parser, and the
    /// certificate it presents (default: the system's roots, none).
    pub tls: echo_tls::ClientTls,
}

impl WorkerConfig {
    /// Defaults for a worker named `name` of the services at these URLs.
    pub fn new(docs_url: &str, parser_url: &str, name: &str) -> Self {
        Self {
            docs_url: docs_url.to_owned(),
            parser_url: parser_url.to_owned(),
            name: name.to_owned(),
            concurrency: 2,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(500),
            request_timeout: Duration::from_secs(120),
            unavailable_patience: Duration::from_secs(60),
            tls: echo_tls::ClientTls::default(),
        }
    }
}

/// Takes jobs from a queue and runs them (see the crate documentation).
pub struct Worker {
    pipeline: Pipeline,
    config: WorkerConfig,
    audit: Arc<dyn AuditSink>,
}

impl Worker {
    /// A worker of `queue` calling the services with `tokens`, recording
    /// each job's end to `audit`.
    pub fn new(
        queue: Arc<dyn JobQueue>,
        tokens: Tokens,
        config: WorkerConfig,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Self> {
        if config.concurrency == 0 || config.lease.is_zero() {
            return Err(WorkerError::Config(
                "the concurrency and the lease must be positive".into(),
            ));
        }
        Ok(Self {
            pipeline: Pipeline::new(queue, tokens, &config)?,
            config,
            audit,
        })
    }

    /// Works until `shutdown` resolves; a job in progress then is abandoned
    /// (its lease expires).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let worker = Arc::new(self);
        let (stop, stopped) = watch::channel(false);
        let mut loops = JoinSet::new();
        for slot in 0..worker.config.concurrency {
            let name = format!("{}-{slot}", worker.config.name);
            loops.spawn(worker.clone().work(name, stopped.clone()));
        }
        tracing::info!(
            worker = %worker.config.name,
            concurrency = worker.config.concurrency,
            lease = ?worker.config.lease,
            "worker started"
        );
        shutdown.await;
        let _ = stop.send(true);
        while loops.join_next().await.is_some() {}
        tracing::info!(worker = %worker.config.name, "worker stopped");
    }

    /// One loop: take a job, run it, again, until stopped.
    async fn work(self: Arc<Self>, name: String, mut stop: watch::Receiver<bool>) {
        let queue = self.pipeline.queue.clone();
        loop {
            let taken = tokio::select! {
                () = until_stopped(&mut stop) => return,
                taken = queue.take(&name, self.config.lease) => taken,
            };
            match taken {
                Ok(Some(job)) => {
                    tokio::select! {
                        () = until_stopped(&mut stop) => {
                            tracing::info!(job = %job.id(), "stopping: job abandoned, its lease will expire");
                            return;
                        }
                        () = self.handle(&job) => {}
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        () = until_stopped(&mut stop) => return,
                        () = tokio::time::sleep(self.config.idle_poll) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(worker = %name, error = %e, "cannot take a job");
                    tokio::select! {
                        () = until_stopped(&mut stop) => return,
                        () = tokio::time::sleep(self.config.idle_poll.max(Duration::from_secs(1))) => {}
                    }
                }
            }
        }
    }

    /// Runs one job in its trace: the upload's, continued from the
    /// payload's `traceparent`.
    async fn handle(&self, job: &Leased) {
        let span = tracing::info_span!(
            "job",
            service = "worker",
            trace_id = tracing::field::Empty,
            job = %job.id(),
            kind = %job.kind,
            attempt = job.attempt(),
        );
        let trace = TraceContext::begin(&span, job::traceparent(job));
        let trace_id = trace.trace_id.clone();
        trace.run(span, self.handle_traced(job, trace_id)).await;
    }

    /// Runs one job under a heartbeat, then completes or fails it and
    /// records how it ended.
    async fn handle_traced(&self, job: &Leased, trace_id: String) {
        let queue = &self.pipeline.queue;
        let _heartbeat = Heartbeat::start(queue.clone(), job.lease.clone());
        let progress = Progress::start(queue.clone(), job.lease.clone());
        let id = job.id().clone();
        let attempt = job.attempt();
        let started = std::time::Instant::now();
        let outcome = self.pipeline.run(job, &progress).await;
        let took = started.elapsed();
        // Stopped before the end is written; a progress write still in
        // flight then finds the job no longer processing and changes nothing.
        drop(progress);
        let event = match &outcome {
            Ok(Outcome::Indexed(chunks)) => {
                AuditEvent::success("document.index").detail("chunks", *chunks)
            }
            Ok(Outcome::Deleted) => AuditEvent::success("document.index").detail("deleted", true),
            Err(e) => AuditEvent::failure("document.index").detail("error", e.to_string()),
        };
        let (ended, result) = match &outcome {
            Ok(outcome) => {
                tracing::info!(job = %id, attempt, ?outcome, "job done");
                (queue.complete(&job.lease).await, "done")
            }
            Err(e) => match queue.fail(&job.lease, &e.to_string(), e.failure()).await {
                Ok(Failed::Retrying { after }) => {
                    tracing::warn!(job = %id, attempt, error = %e, retry_in = ?after, "job failed; retrying");
                    (Ok(()), "retrying")
                }
                Ok(Failed::Dead) => {
                    tracing::warn!(job = %id, attempt, error = %e, "job failed for good");
                    metrics::counter!("echo_worker_jobs_dead_lettered_total").increment(1);
                    (Ok(()), "dead")
                }
                Err(q) => (Err(q), "unrecorded"),
            },
        };
        metrics::counter!("echo_worker_jobs_total", "result" => result).increment(1);
        metrics::histogram!("echo_worker_job_duration_seconds", "result" => result)
            .record(took.as_secs_f64());
        if let Err(e) = ended {
            tracing::warn!(job = %id, attempt, error = %e, "cannot record the job's end");
        }
        let document = job.payload.get("document_id").and_then(|d| d.as_str());
        self.audit.record(
            event
                .actor(self.config.name.as_str())
                .trace(Some(trace_id))
                .detail("job_id", id.as_str())
                .detail("attempt", attempt)
                .detail("document_id", document.map(bounded)),
        );
    }
}

/// Resolves once the stop flag is set (or its sender is gone).
async fn until_stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Renews a lease every third of its duration until dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Heartbeat {
    fn start(queue: Arc<dyn JobQueue>, lease: Lease) -> Self {
        let every = (lease.duration() / 3).max(Duration::from_millis(10));
        Self(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match queue.heartbeat(&lease).await {
                    Ok(()) => {}
                    Err(e @ QueueError::StaleLease(_)) => {
                        tracing::warn!(job = %lease.job(), error = %e, "lease lost");
                        return;
                    }
                    Err(e) => tracing::warn!(job = %lease.job(), error = %e, "heartbeat failed"),
                }
            }
        }))
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}
