//! The queue on NATS JetStream.
//!
//! - Jobs are messages on `<name>.jobs` in the work-queue stream `<name>`,
//!   consumed by one durable pull consumer (`workers`) with explicit acks.
//!   The consumer's `ack_wait` is the lease: a job not acked, nak'ed or
//!   extended (`+WPI`) within it is redelivered to the next taker.
//! - Attempts are deliveries. A transient failure naks the message with the
//!   backoff as its delay; `max_deliver` is `max_attempts + 1`, and the one
//!   extra delivery exists only so that a job whose worker died during its
//!   last attempt comes back once, to be dead-lettered instead of lingering.
//! - Dead letters are published to `<name>.dead` (stream `<name>_DEAD`,
//!   JSON: id, kind, attempts, error) and the message is terminated.
//! - Status lives in the KV bucket `<name>_STATUS`, one entry per job id,
//!   written with compare-and-set on its revision. The entry names the
//!   current delivery (its ack subject): that is how a stale lease is
//!   refused, and how a redelivery of a job already done is dropped.
//! - The connection uses TLS for a `tls://` URL, or when the server
//!   requires it, trusting the roots it is given (the system's and
//!   `ECHO_CA_FILE`'s).

use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, kv, stream};
use echo_crypto::TrustedRoots;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    Failed, Failure, JobId, JobQueue, JobState, JobStatus, LAST_LEASE_EXPIRED, Lease, Leased,
    QueueConfig, QueueDepth, QueueError, Result,
};

const CONSUMER: &str = "workers";
/// How long `take` waits for the server to answer a fetch.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long the calls made while a request waits (`enqueue`, `status`)
/// wait for the server in all: while NATS is away, async-nats would wait
/// for each JetStream answer its own 5 s (an enqueue makes two or three),
/// where the caller should be told at once that the queue is unavailable,
/// as it is told when PostgreSQL's pools wait for a connection.
const REQUEST_WAIT: Duration = echo_sql::postgres::ACQUIRE_TIMEOUT;
/// The jobs stream's duplicate window (the server's default, stated): a
/// job's message published again within it, as a re-enqueue does while
/// the job is still waiting, is dropped by its `Nats-Msg-Id`.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// `call`'s outcome, or the queue unavailable if NATS did not answer
/// within [`REQUEST_WAIT`].
async fn within_request_wait<T>(
    what: &str,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(REQUEST_WAIT, call)
        .await
        .unwrap_or_else(|_| {
            Err(QueueError::Nats(format!(
                "{what}: no answer within {REQUEST_WAIT:?}"
            )))
        })
}

/// The queue on a NATS server with JetStream.
#[derive(Debug, Clone)]
pub struct NatsQueue {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    consumer: consumer::Consumer<consumer::pull::Config>,
    status: kv::Store,
    config: QueueConfig,
}

/// A job as published.
#[derive(Serialize, Deserialize)]
struct Envelope {
    id: JobId,
    kind: String,
    payload: serde_json::Value,
}

/// A dead letter as published on `<name>.dead`.
#[derive(Serialize)]
struct DeadLetter<'a> {
    id: &'a JobId,
    kind: &'a str,
    attempts: u32,
    error: &'a str,
}

/// A job's KV status entry.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    kind: String,
    state: JobState,
    attempts: u32,
    last_error: Option<String>,
    progress: u8,
    /// The ack subject of the delivery holding the lease, while processing.
    delivery: Option<String>,
    /// Who took the latest attempt.
    worker: Option<String>,
}

fn nats(e: impl std::fmt::Display) -> QueueError {
    QueueError::Nats(e.to_string())
}

impl NatsQueue {
    /// Connects to `url` (`nats://` or `tls://`, TLS trusting `roots`) and
    /// creates (or reuses) the streams, consumer and bucket named after
    /// `config.nats_name`.
    pub async fn connect(url: &str, roots: &TrustedRoots, config: QueueConfig) -> Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .tls_client_config(roots.client_config())
            .connect(url)
            .await
            .map_err(|e| nats(format!("cannot connect: {e}")))?;
        let jetstream = jetstream::new(client.clone());
        let name = &config.nats_name;
        let jobs = jetstream
            .get_or_create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.jobs")],
                retention: stream::RetentionPolicy::WorkQueue,
                duplicate_window: DUPLICATE_WINDOW,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(format!("stream {name}: {e}")))?;
        jetstream
            .get_or_create_stream(stream::Config {
                name: format!("{name}_DEAD"),
                subjects: vec![format!("{name}.dead")],
                ..Default::default()
            })
            .await
            .map_err(|e| nats(format!("dead-letter stream {name}: {e}")))?;
        let consumer = jobs
            .get_or_create_consumer(
                CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(CONSUMER.into()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ack_wait: config.nats_lease,
                    max_deliver: i64::from(config.max_attempts) + 1,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats(format!("consumer {name}: {e}")))?;
        // The bucket's stream as `create_key_value` would make it: that
        // call first reads the account info, whose NATS 2.9 form async-nats
        // cannot parse, so the stream is made here and opened as a bucket.
        let bucket = format!("{name}_STATUS");
        jetstream
            .get_or_create_stream(stream::Config {
                name: format!("KV_{bucket}"),
                subjects: vec![format!("$KV.{bucket}.>")],
                max_messages_per_subject: 1,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(format!("status bucket {bucket}: {e}")))?;
        let status = jetstream.get_key_value(&bucket).await.map_err(nats)?;
        Ok(Self {
            client,
            jetstream,
            consumer,
            status,
            config,
        })
    }

    /// Deletes the streams and the status bucket, with every job in them.
    pub async fn delete(self) -> Result<()> {
        let name = &self.config.nats_name;
        self.jetstream.delete_stream(name).await.map_err(nats)?;
        self.jetstream
            .delete_stream(format!("{name}_DEAD"))
            .await
            .map_err(nats)?;
        self.jetstream
            .delete_key_value(format!("{name}_STATUS"))
            .await
            .map_err(nats)?;
        Ok(())
    }

    async fn record(&self, id: &JobId) -> Result<Option<(Record, u64)>> {
        let Some(entry) = self.status.entry(id.as_str()).await.map_err(nats)? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&entry.value)
            .map_err(|e| QueueError::Corrupt(format!("status of job {id}: {e}")))?;
        Ok(Some((record, entry.revision)))
    }

    /// Writes `record` if the entry is still at `revision`; false if it
    /// changed meanwhile.
    async fn save(&self, id: &JobId, record: &Record, revision: u64) -> Result<bool> {
        let value = serde_json::to_vec(record).map_err(nats)?;
        match self
            .status
            .update(id.as_str(), value.into(), revision)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(e) => Err(nats(e)),
        }
    }

    /// Applies `change` to the job's record while `lease` holds it.
    async fn update_held(&self, lease: &Lease, change: impl Fn(&mut Record)) -> Result<Record> {
        loop {
            let stale = || QueueError::StaleLease(lease.job.clone());
            let (mut record, revision) = self.record(&lease.job).await?.ok_or_else(stale)?;
            if record.state != JobState::Processing
                || record.delivery.as_deref() != Some(&lease.token)
            {
                return Err(stale());
            }
            change(&mut record);
            if self.save(&lease.job, &record, revision).await? {
                return Ok(record);
            }
        }
    }

    /// Tells the server what became of a delivery.
    async fn ack(&self, delivery: &str, kind: AckKind) -> Result<()> {
        self.client
            .publish(delivery.to_owned(), kind.into())
            .await
            .map_err(nats)?;
        self.client.flush().await.map_err(nats)
    }

    async fn dead_letter(&self, id: &JobId, record: &Record, error: &str) -> Result<()> {
        let letter = DeadLetter {
            id,
            kind: &record.kind,
            attempts: record.attempts,
            error,
        };
        let body = serde_json::to_vec(&letter).map_err(nats)?;
        self.jetstream
            .publish(format!("{}.dead", self.config.nats_name), body.into())
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }

    /// Leases one delivery, or says why not: `None` if it must be skipped
    /// (the job already ended, or had its last attempt).
    async fn lease(&self, message: &jetstream::Message, worker: &str) -> Result<Option<Leased>> {
        let delivery = message
            .reply
            .as_ref()
            .ok_or_else(|| QueueError::Nats("a delivery without an ack subject".into()))?
            .to_string();
        let delivered = message.info().map_err(nats)?.delivered;
        let envelope: Envelope = serde_json::from_slice(&message.payload)
            .map_err(|e| QueueError::Corrupt(format!("job message: {e}")))?;
        let id = envelope.id;
        loop {
            let Some((mut record, revision)) = self.record(&id).await? else {
                return Err(QueueError::Corrupt(format!("job {id} has no status")));
            };
            if matches!(record.state, JobState::Done | JobState::Failed) {
                // A redelivery of a job that already ended (its ack was lost).
                self.ack(&delivery, AckKind::Term).await?;
                return Ok(None);
            }
            let attempt = u32::try_from(delivered).unwrap_or(u32::MAX);
            if attempt > self.config.max_attempts {
                record.state = JobState::Failed;
                record.last_error = Some(LAST_LEASE_EXPIRED.into());
                record.delivery = None;
                if self.save(&id, &record, revision).await? {
                    self.dead_letter(&id, &record, LAST_LEASE_EXPIRED).await?;
                    self.ack(&delivery, AckKind::Term).await?;
                    return Ok(None);
                }
                continue;
            }
            record.state = JobState::Processing;
            record.attempts = attempt;
            record.progress = 0;
            record.delivery = Some(delivery.clone());
            record.worker = Some(worker.into());
            if self.save(&id, &record, revision).await? {
                return Ok(Some(Leased {
                    kind: envelope.kind,
                    payload: envelope.payload,
                    lease: Lease {
                        job: id,
                        attempt,
                        token: delivery,
                        duration: self.config.nats_lease,
                    },
                }));
            }
        }
    }

    /// `enqueue`'s work: the status entry, then the job's message.
    async fn publish(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobId> {
        let id = idempotency_key.map_or_else(JobId::random, JobId::for_key);
        if !self.create_entry(&id, kind).await? {
            // The key was enqueued before. An enqueue cut short (by
            // REQUEST_WAIT, or the process dying) between the entry and the
            // message leaves the job queued with no message: a job never
            // taken is published again, and JetStream drops the copy if the
            // first message got through within DUPLICATE_WINDOW. A job taken
            // (attempts > 0, even if queued for a retry) has its message.
            let Some((record, _)) = self.record(&id).await? else {
                return Err(QueueError::Corrupt(format!("job {id} has no status")));
            };
            if record.state != JobState::Queued || record.attempts > 0 {
                return Ok(id);
            }
        }
        self.publish_message(&id, kind, payload).await?;
        Ok(id)
    }

    /// Creates job `id`'s status entry, queued; false if it exists already.
    async fn create_entry(&self, id: &JobId, kind: &str) -> Result<bool> {
        let record = Record {
            kind: kind.into(),
            state: JobState::Queued,
            attempts: 0,
            last_error: None,
            progress: 0,
            delivery: None,
            worker: None,
        };
        let value = serde_json::to_vec(&record).map_err(nats)?;
        match self.status.create(id.as_str(), value.into()).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(nats(e)),
        }
    }

    /// Publishes job `id`'s message, with the id as its `Nats-Msg-Id`.
    async fn publish_message(
        &self,
        id: &JobId,
        kind: &str,
        payload: &serde_json::Value,
    ) -> Result<()> {
        let envelope = Envelope {
            id: id.clone(),
            kind: kind.into(),
            payload: payload.clone(),
        };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let body = serde_json::to_vec(&envelope).map_err(nats)?;
        self.jetstream
            .publish_with_headers(
                format!("{}.jobs", self.config.nats_name),
                headers,
                body.into(),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobQueue for NatsQueue {
    async fn enqueue(
        &self,
        kind: &str,
        payload: &serde_json::Value,
        idempotency_key: Option<&str>,
    ) -> Result<JobId> {
        within_request_wait("enqueue", self.publish(kind, payload, idempotency_key)).await
    }

    async fn take(&self, worker: &str, lease: Duration) -> Result<Option<Leased>> {
        if lease != self.config.nats_lease {
            return Err(QueueError::Unsupported(format!(
                "on NATS the lease is the consumer's ack_wait ({:?}), not {lease:?}",
                self.config.nats_lease
            )));
        }
        loop {
            // A no-wait fetch can go unanswered by the server (seen with
            // NATS 2.9 under parallel load), so it is bounded: no answer
            // in time reads as an empty queue, and the caller polls again.
            let fetched = tokio::time::timeout(FETCH_WAIT, async {
                let mut batch = self
                    .consumer
                    .fetch()
                    .max_messages(1)
                    .messages()
                    .await
                    .map_err(nats)?;
                Ok::<_, QueueError>(batch.next().await)
            })
            .await;
            let Ok(fetched) = fetched else {
                return Ok(None);
            };
            let Some(message) = fetched? else {
                return Ok(None);
            };
            let message = message.map_err(nats)?;
            if let Some(leased) = self.lease(&message, worker).await? {
                return Ok(Some(leased));
            }
        }
    }

    async fn heartbeat(&self, lease: &Lease) -> Result<()> {
        self.update_held(lease, |_| {}).await?;
        self.ack(&lease.token, AckKind::Progress).await
    }

    async fn complete(&self, lease: &Lease) -> Result<()> {
        self.update_held(lease, |record| {
            record.state = JobState::Done;
            record.progress = 100;
            record.delivery = None;
        })
        .await?;
        self.ack(&lease.token, AckKind::Ack).await
    }

    async fn fail(&self, lease: &Lease, error: &str, failure: Failure) -> Result<Failed> {
        let outcome = self.config.after_failure(lease.attempt, failure);
        let record = self
            .update_held(lease, |record| {
                record.state = match outcome {
                    Failed::Retrying { .. } => JobState::Queued,
                    Failed::Dead => JobState::Failed,
                };
                record.last_error = Some(error.into());
                record.delivery = None;
            })
            .await?;
        match outcome {
            Failed::Retrying { after } => self.ack(&lease.token, AckKind::Nak(Some(after))).await?,
            Failed::Dead => {
                self.dead_letter(&lease.job, &record, error).await?;
                self.ack(&lease.token, AckKind::Term).await?;
            }
        }
        Ok(outcome)
    }

    async fn set_progress(&self, lease: &Lease, percent: u8) -> Result<()> {
        self.update_held(lease, |record| record.progress = percent.min(100))
            .await
            .map(drop)
    }

    async fn depth(&self) -> Result<QueueDepth> {
        let name = &self.config.nats_name;
        let messages = |stream: String| async move {
            let mut stream = self.jetstream.get_stream(&stream).await.map_err(nats)?;
            let info = stream.info().await.map_err(nats)?;
            Ok::<u64, QueueError>(info.state.messages)
        };
        Ok(QueueDepth {
            // A work-queue stream keeps a job until it is acknowledged.
            pending: messages(name.clone()).await?,
            dead: messages(format!("{name}_DEAD")).await?,
        })
    }

    async fn status(&self, id: &JobId) -> Result<Option<JobStatus>> {
        let record = within_request_wait("status", self.record(id)).await?;
        Ok(record.map(|(record, _)| JobStatus {
            id: id.clone(),
            kind: record.kind,
            state: record.state,
            attempts: record.attempts,
            last_error: record.last_error,
            progress: record.progress,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// An enqueue cut between the status entry and the message (as
    /// `REQUEST_WAIT` can cut it) is repaired by enqueueing the key again:
    /// the job is delivered once, however often the key is enqueued, and
    /// not again once done.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cut_enqueue_is_repaired_by_enqueueing_its_key_again() {
        let lease = Duration::from_secs(30);
        let config = QueueConfig {
            nats_lease: lease,
            nats_name: format!("echo_test_nats_cut_{}", std::process::id()),
            ..QueueConfig::default()
        };
        let queue = NatsQueue::connect(&echo_testkit::nats_url(), &TrustedRoots::system(), config)
            .await
            .expect("NATS at the test URL");
        let payload = json!({ "document_id": "d1" });
        let id = JobId::for_key("d1");
        // The cut: the entry is created, the message never published.
        assert!(queue.create_entry(&id, "index_document").await.unwrap());

        for _ in 0..2 {
            let again = queue
                .enqueue("index_document", &payload, Some("d1"))
                .await
                .unwrap();
            assert_eq!(again, id);
        }
        assert_eq!(queue.depth().await.unwrap().pending, 1, "one message");
        let job = queue.take("w", lease).await.unwrap().expect("the job");
        assert_eq!((job.id(), job.attempt()), (&id, 1));
        assert_eq!(job.payload, payload);
        // Taken: its message exists, so a re-enqueue publishes none.
        queue
            .enqueue("index_document", &payload, Some("d1"))
            .await
            .unwrap();
        queue.complete(&job.lease).await.unwrap();
        queue
            .enqueue("index_document", &payload, Some("d1"))
            .await
            .unwrap();
        assert_eq!(queue.depth().await.unwrap().pending, 0);
        assert!(queue.take("w", lease).await.unwrap().is_none());
        let status = queue.status(&id).await.unwrap().unwrap();
        assert_eq!((status.state, status.attempts), (JobState::Done, 1));
        queue.delete().await.unwrap();
    }
}
