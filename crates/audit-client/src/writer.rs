//! [`AuditWriter`]: the non-blocking intake and the background task that
//! batches, sends, spools and resends.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use echo_core::audit::{AuditEvent, AuditSink};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::journal::Journal;
use crate::overflow::{Overflow, OverflowError};
use crate::sender::{Backoff, Sender};
use crate::split::{self, Delivery, Refused};
use crate::spool::{PushError, Spool};
use crate::wire::{WireEvent, now_ms, write_ndjson_line};
use echo_edge::TokenSource;
use echo_tls::ClientTls;

/// Most events the audit service takes in one request; a larger batch
/// would be refused (413) and have to be halved, so `batch_size` is capped
/// here.
pub const MAX_BATCH_EVENTS: usize = 1000;
/// A batch is closed once its NDJSON reaches this size, well under the
/// service's 8 MiB body limit, so a few large events cannot make a batch
/// the service refuses.
pub const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// How long [`AuditWriter::shutdown`] keeps trying to deliver before it
/// spools what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// At most one "events lost" error per reason per this period, each with
/// the count lost since the previous one: loud, without flooding the log.
const LOSS_LOG_PERIOD: Duration = Duration::from_secs(1);

/// How an [`AuditWriter`] batches, spools and retries.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// The audit service's base URL (`…/v1/events` is appended).
    pub endpoint: String,
    /// Where undelivered batches wait, across restarts. One writer per
    /// directory: [`AuditWriter::start`] locks it.
    pub spool_dir: PathBuf,
    /// Events per request (default 100; capped at [`MAX_BATCH_EVENTS`]).
    pub batch_size: usize,
    /// How long the first event of a partial batch waits for company
    /// (default 200 ms): the most an event is delayed when all is well.
    pub flush_interval: Duration,
    /// Events waiting in memory (default 10 000). When full, `record`
    /// appends the event to the spool directory's overflow file instead,
    /// which the writer adopts into the spool: a burst costs disk, not
    /// events, and the caller never waits for an fsync.
    pub queue_capacity: usize,
    /// The spool's limit (default 256 MiB), counting spooled batches, the
    /// overflow file and poisoned events. What would pass it is dropped
    /// (counted, logged), so an outage cannot fill the disk.
    pub max_spool_bytes: u64,
    /// One request's limit, connecting included (default 5 s).
    pub request_timeout: Duration,
    /// The longest wait between retries (default 30 s).
    pub max_backoff: Duration,
    /// Whom the writer trusts, and the certificate it presents (default:
    /// the system's roots, none).
    pub tls: ClientTls,
}

impl WriterConfig {
    pub fn new(endpoint: impl Into<String>, spool_dir: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into(),
            spool_dir: spool_dir.into(),
            batch_size: 100,
            flush_interval: Duration::from_millis(200),
            queue_capacity: 10_000,
            max_spool_bytes: 256 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(30),
            tls: ClientTls::default(),
        }
    }
}

/// What a writer has done since it started, in events.
///
/// Once the writer is shut down, `recorded == sent + spooled + dropped +
/// poisoned` for a writer that started with an empty spool (a restarted
/// writer also sends, and counts in `sent`, what an earlier process
/// spooled). Each counter is read atomically, but not all at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterMetrics {
    /// Events handed to [`AuditSink::record`], kept or not.
    pub recorded: u64,
    /// Events the audit service acknowledged (including ones it already had
    /// from an attempt whose answer was lost).
    pub sent: u64,
    /// Events in the spool now, waiting to be resent.
    pub spooled: u64,
    /// Bytes of the spooled batches now (the limit also counts poisoned
    /// events and the overflow file).
    pub spool_bytes: u64,
    /// Events lost: the writer was shut down, or the spool (overflow file
    /// included) was full or unwritable. Every loss is also logged as an
    /// error.
    pub dropped: u64,
    /// Events the service refused as malformed even alone, each kept in a
    /// file of its own in `spool_dir/poison/` and never retried.
    pub poisoned: u64,
}

#[derive(Debug, Default)]
struct Counters {
    recorded: AtomicU64,
    sent: AtomicU64,
    spooled: AtomicU64,
    spool_bytes: AtomicU64,
    /// What the spool's limit counts on disk besides the overflow file:
    /// batches and poisoned events.
    limit_used: AtomicU64,
    dropped: AtomicU64,
    poisoned: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterMetrics {
        WriterMetrics {
            recorded: self.recorded.load(Relaxed),
            sent: self.sent.load(Relaxed),
            spooled: self.spooled.load(Relaxed),
            spool_bytes: self.spool_bytes.load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            poisoned: self.poisoned.load(Relaxed),
        }
    }
}

/// Rate limit for "events lost" errors: losses are summed, and reported at
/// most once per [`LOSS_LOG_PERIOD`]. Lock-free, as `record` must be.
#[derive(Debug)]
struct LossLog {
    epoch: Instant,
    /// Milliseconds since `epoch` before which nothing is reported.
    quiet_until_ms: AtomicU64,
    unreported: AtomicU64,
}

impl LossLog {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            quiet_until_ms: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
        }
    }

    /// Counts `lost` events; returns how many to report if it is time to.
    fn lost(&self, lost: u64) -> Option<u64> {
        self.unreported.fetch_add(lost, Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let quiet_until = self.quiet_until_ms.load(Relaxed);
        let period = LOSS_LOG_PERIOD.as_millis() as u64;
        if now < quiet_until
            || self
                .quiet_until_ms
                .compare_exchange(quiet_until, now.saturating_add(period), Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.unreported.swap(0, Relaxed))
    }

    /// Losses counted but not yet reported.
    fn take_unreported(&self) -> u64 {
        self.unreported.swap(0, Relaxed)
    }
}

/// Sends audit events to the audit service; see the crate documentation.
///
/// Start it once per process with [`AuditWriter::start`], hand it to the
/// code that audits as an [`AuditSink`], and call
/// [`shutdown`](AuditWriter::shutdown) before the process exits.
#[derive(Debug)]
pub struct AuditWriter {
    intake: mpsc::Sender<Queued>,
    /// Where each queued event is written first.
    journal: Arc<Journal>,
    /// Where events go while the queue is full.
    overflow: Arc<Overflow>,
    max_spool_bytes: u64,
    counters: Arc<Counters>,
    intake_losses: LossLog,
    stop: watch::Sender<bool>,
    done: watch::Receiver<bool>,
}

impl AuditWriter {
    /// Starts the background task (tokio::spawn); resends anything already
    /// in the spool directory (from an earlier process) first.
    ///
    /// Fails if the spool directory cannot be created or read, or when
    /// called outside a Tokio runtime: a service should not start without a
    /// working audit trail.
    ///
    /// Also fails, with [`io::ErrorKind::ResourceBusy`], if another writer
    /// (in this process or another) holds the spool directory. A writer holds
    /// it until its background task ends: by the time
    /// [`shutdown`](Self::shutdown) returns, or shortly after the last handle
    /// is dropped.
    pub fn start(config: WriterConfig, token: Arc<dyn TokenSource>) -> io::Result<Arc<Self>> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
            io::Error::other(format!("AuditWriter::start needs a Tokio runtime: {e}"))
        })?;
        let spool = Spool::open(&config.spool_dir, config.max_spool_bytes)?;
        let counters = Arc::new(Counters::default());
        counters.spooled.store(spool.events(), Relaxed);
        counters.spool_bytes.store(spool.bytes(), Relaxed);
        counters.limit_used.store(spool.used(), Relaxed);
        if !spool.is_empty() {
            tracing::info!(
                events = spool.events(),
                bytes = spool.bytes(),
                spool_dir = %config.spool_dir.display(),
                "resending audit events spooled by an earlier process"
            );
        }
        let (intake, rx) = mpsc::channel(
            config
                .queue_capacity
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        );
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = watch::channel(false);
        let overflow = Arc::new(Overflow::new(&config.spool_dir));
        let journal = Arc::new(Journal::new(&config.spool_dir));
        let task = Task {
            rx,
            overflow: overflow.clone(),
            journal: journal.clone(),
            stop: stop_rx,
            sender: Arc::new(Sender::new(
                &config.endpoint,
                &config.tls.http_client(config.request_timeout),
                token,
            )),
            spool,
            counters: counters.clone(),
            spool_losses: LossLog::new(),
            batch: Batch::default(),
            batch_size: config.batch_size.clamp(1, MAX_BATCH_EVENTS),
            flush_interval: config.flush_interval,
            backoff: Backoff::new(config.max_backoff),
            retry_at: Instant::now(),
            in_flight: None,
        };
        runtime.spawn(async move {
            task.run().await;
            let _ = done_tx.send(true);
        });
        runtime.spawn(publish_metrics(
            writer_name(&config.spool_dir),
            intake.downgrade(),
            counters.clone(),
            done.clone(),
        ));
        Ok(Arc::new(Self {
            intake,
            journal,
            overflow,
            max_spool_bytes: config.max_spool_bytes,
            counters,
            intake_losses: LossLog::new(),
            stop,
            done,
        }))
    }

    /// Stops taking events, sends what it can within a few seconds and
    /// spools the rest; returns when done. Events recorded afterwards are
    /// dropped (counted and logged). Calling it again returns at once.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut done = self.done.clone();
        // An error means the task is gone (its runtime stopped): nothing to wait for.
        let _ = done.wait_for(|done| *done).await;
    }

    pub fn metrics(&self) -> WriterMetrics {
        self.counters.snapshot()
    }

    /// Its readiness: `spooling` while the audit service is unreachable
    /// (events are kept on disk, so the service stays ready), else `ok`.
    pub fn state(&self) -> &'static str {
        if self.counters.spooled.load(Relaxed) > 0 {
            "spooling"
        } else {
            "ok"
        }
    }
}

/// How often a writer's gauges are brought up to date.
const METRICS_PERIOD: Duration = Duration::from_secs(1);

/// The writer's label: its spool directory's name, which is its client id
/// (`<data>/audit-spool/<client_id>`), so the writers of `echod up` tell
/// apart.
fn writer_name(spool_dir: &std::path::Path) -> String {
    spool_dir
        .file_name()
        .map_or_else(|| "audit".to_owned(), |n| n.to_string_lossy().into_owned())
}

/// Publishes the writer's counters as metrics (docs/operations.md) every
/// [`METRICS_PERIOD`] until its task ends.
async fn publish_metrics(
    writer: String,
    intake: mpsc::WeakSender<Queued>,
    counters: Arc<Counters>,
    mut done: watch::Receiver<bool>,
) {
    let label = [("writer", writer)];
    loop {
        let queued = intake
            .upgrade()
            .map_or(0, |intake| intake.max_capacity() - intake.capacity());
        let now = counters.snapshot();
        metrics::gauge!("echo_audit_writer_queue_depth", &label).set(queued as f64);
        metrics::gauge!("echo_audit_writer_spooled_events", &label).set(now.spooled as f64);
        metrics::gauge!("echo_audit_writer_spool_bytes", &label).set(now.spool_bytes as f64);
        metrics::counter!("echo_audit_writer_events_sent_total", &label).absolute(now.sent);
        metrics::counter!("echo_audit_writer_events_dropped_total", &label).absolute(now.dropped);
        if tokio::time::timeout(METRICS_PERIOD, done.wait_for(|done| *done))
            .await
            .is_ok()
        {
            return;
        }
    }
}

impl AuditSink for AuditWriter {
    /// Appends the event to the journal and queues it, without waiting on
    /// the network or an fsync: from then on a crash of the process does
    /// not lose it (the next start resends the journal). If the queue is
    /// full (or events are going to the overflow file already, to keep
    /// their order) the event is appended to the spool directory's
    /// overflow file instead; if that would pass the spool's limit, or the
    /// writer is shut down, it is dropped, counted and reported as an
    /// error. An event without a trace id gets the current request's or
    /// job's ([`echo_edge::trace::stamp`]).
    fn record(&self, event: AuditEvent) {
        self.counters.recorded.fetch_add(1, Relaxed);
        let event = WireEvent::from_audit(echo_edge::trace::stamp(event), now_ms());
        let mut line = Vec::new();
        if let Err(e) = write_ndjson_line(&event, &mut line) {
            return self.lose(&event, Loss::Encoding(e.to_string()));
        }
        if self.intake.is_closed() {
            return self.lose(&event, Loss::ShutDown);
        }
        if !self.overflow.is_active() && self.intake.capacity() > 0 {
            let queued = self.journal.append(line, |number, line| {
                self.intake.try_send(Queued { number, line })
            });
            line = match queued {
                Ok(Ok(())) => return,
                // Filled by other threads since: journaled, but the
                // overflow file keeps it (a crash may resend it twice).
                Ok(Err(TrySendError::Full(queued))) => queued.line,
                Ok(Err(TrySendError::Closed(_))) => return self.lose(&event, Loss::ShutDown),
                Err((e, line)) => {
                    tracing::warn!(error = %e, "audit journal cannot be written; the event goes to the overflow file");
                    line
                }
            };
        }
        let spooled = self.counters.limit_used.load(Relaxed);
        match self.overflow.append(&line, spooled, self.max_spool_bytes) {
            Ok(()) => {}
            Err(OverflowError::Full { used, limit }) => {
                self.lose(&event, Loss::SpoolFull { used, limit })
            }
            Err(OverflowError::Io(e)) => self.lose(&event, Loss::Io(e)),
        }
    }
}

/// An event in the queue: its number in the journal and its NDJSON line.
#[derive(Debug)]
struct Queued {
    number: u64,
    line: Vec<u8>,
}

/// Why `record` lost an event.
enum Loss {
    ShutDown,
    SpoolFull { used: u64, limit: u64 },
    Io(io::Error),
    Encoding(String),
}

impl AuditWriter {
    /// Counts a lost event, and reports it (at most once a period).
    fn lose(&self, event: &WireEvent, loss: Loss) {
        let total = self.counters.dropped.fetch_add(1, Relaxed) + 1;
        let Some(lost) = self.intake_losses.lost(1) else {
            return;
        };
        let action = &event.action;
        match loss {
            Loss::ShutDown => tracing::error!(
                lost,
                total_dropped = total,
                last_action = %action,
                "audit writer is shut down: audit events are being lost"
            ),
            Loss::SpoolFull { used, limit } => tracing::error!(
                lost,
                total_dropped = total,
                used,
                limit,
                last_action = %action,
                "audit queue and spool are full: audit events are being lost"
            ),
            Loss::Io(e) => tracing::error!(
                lost,
                total_dropped = total,
                error = %e,
                last_action = %action,
                "audit queue is full and its overflow file cannot be written: audit events are being lost"
            ),
            Loss::Encoding(e) => tracing::error!(
                lost,
                total_dropped = total,
                error = %e,
                last_action = %action,
                "audit event could not be encoded and is lost"
            ),
        }
    }
}

/// Events gathered for one request, as NDJSON.
#[derive(Debug, Default)]
struct Batch {
    ndjson: Vec<u8>,
    events: u64,
    /// The journal number of its last event.
    through: Option<u64>,
    /// When it goes even if not full; `None` when empty (or never).
    due: Option<Instant>,
}

impl Batch {
    fn is_full(&self, batch_size: usize) -> bool {
        self.events >= batch_size as u64 || self.ndjson.len() >= MAX_BATCH_BYTES
    }

    fn take(&mut self) -> Batch {
        std::mem::take(self)
    }

    /// The batch of a request that did not go through, to spool.
    fn of(ndjson: Arc<Vec<u8>>, events: u64, through: Option<u64>) -> Batch {
        Batch {
            ndjson: Arc::unwrap_or_clone(ndjson),
            events,
            through,
            due: None,
        }
    }
}

/// A batch being delivered (in one request, or several if it has to be
/// halved), and where it lives if delivery fails.
struct InFlight {
    source: Source,
    events: u64,
    /// The journal number of its last event (a batch from memory).
    through: Option<u64>,
    future: Pin<Box<dyn Future<Output = io::Result<Delivery>> + Send>>,
}

enum Source {
    /// Straight from the queue: spooled if delivery fails. Shared with the
    /// future, which needs the events to halve the batch.
    Memory(Arc<Vec<u8>>),
    /// The spool file with this sequence number: deleted once delivered.
    Spool(u64),
}

/// The background task; owns everything but the counters.
struct Task {
    rx: mpsc::Receiver<Queued>,
    /// Events `record` found no room for in `rx`, which came after its own.
    overflow: Arc<Overflow>,
    /// Told which events are delivered or spooled, so it can forget them.
    journal: Arc<Journal>,
    stop: watch::Receiver<bool>,
    sender: Arc<Sender>,
    spool: Spool,
    counters: Arc<Counters>,
    spool_losses: LossLog,
    batch: Batch,
    batch_size: usize,
    flush_interval: Duration,
    backoff: Backoff,
    /// When the oldest spool file may be tried again.
    retry_at: Instant,
    /// At most one request at a time, so batches arrive in order and memory
    /// holds at most the queue, the batch being built and this one.
    in_flight: Option<InFlight>,
}

impl Task {
    async fn run(mut self) {
        self.serve().await;
        self.finish().await;
    }

    /// Until shutdown: batch, send, spool, resend.
    ///
    /// While the spool holds anything, new batches join it rather than
    /// overtake it, and only the oldest spool file is sent: order is kept
    /// and a long outage costs disk, not memory. While a batch from memory
    /// is in flight the next one waits (the queue absorbs the wait).
    async fn serve(&mut self) {
        loop {
            if *self.stop.borrow() {
                return;
            }
            // A batch from memory in flight would, if it failed, be spooled
            // behind the overflow's events, which came after it: wait for it.
            let memory_in_flight = matches!(
                self.in_flight,
                Some(InFlight {
                    source: Source::Memory(_),
                    ..
                })
            );
            if self.overflow.is_active() && !memory_in_flight {
                self.adopt_overflow().await;
            }
            let now = Instant::now();
            let ready = self.batch.events > 0
                && (self.batch.is_full(self.batch_size)
                    || self.batch.due.is_some_and(|d| d <= now));
            if ready && !self.spool.is_empty() {
                let batch = self.batch.take();
                self.spool_batch(batch).await;
            } else if ready && self.in_flight.is_none() {
                let batch = self.batch.take();
                self.send_from_memory(batch);
            }
            if self.in_flight.is_none() && Instant::now() >= self.retry_at {
                self.resend_oldest();
            }

            let receiving = !self.batch.is_full(self.batch_size);
            // A due batch can only go if nothing blocks it; otherwise waking
            // for it would spin.
            let flush_at = self
                .batch
                .due
                .filter(|_| self.in_flight.is_none() || !self.spool.is_empty());
            let retry_at =
                (self.in_flight.is_none() && !self.spool.is_empty()).then_some(self.retry_at);
            let overflow = self.overflow.clone();
            tokio::select! {
                () = overflow.notify.notified() => {}
                event = self.rx.recv(), if receiving => match event {
                    Some(event) => self.add(event),
                    // Every handle to the writer is gone.
                    None => return,
                },
                // Err: the writer itself is gone; stop all the same.
                _ = self.stop.changed() => return,
                result = in_flight(&mut self.in_flight) => self.settle(result).await,
                () = sleep_until_some(flush_at) => {}
                () = sleep_until_some(retry_at) => {}
            }
        }
    }

    /// Shutdown: no more intake; the request in flight and then every queued
    /// event get [`SHUTDOWN_GRACE`] to be delivered, in order; the rest is
    /// spooled for the next start.
    async fn finish(&mut self) {
        self.rx.close();
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        self.settle_by(deadline).await;
        loop {
            while !self.batch.is_full(self.batch_size) {
                match self.rx.recv().await {
                    Some(event) => self.add(event),
                    None => break,
                }
            }
            if self.batch.events == 0 {
                break;
            }
            let batch = self.batch.take();
            if self.spool.is_empty() && Instant::now() < deadline {
                self.send_from_memory(batch);
                self.settle_by(deadline).await;
            } else {
                self.spool_batch(batch).await;
            }
        }
        self.adopt_overflow().await;
        // Everything recorded is delivered, spooled or counted as lost.
        self.journal.settled(u64::MAX);
        let m = self.counters.snapshot();
        let unreported = self.spool_losses.take_unreported();
        if m.dropped > 0 {
            tracing::error!(
                dropped = m.dropped,
                unreported_spool_losses = unreported,
                "audit writer stopped; audit events were lost while it ran"
            );
        }
        tracing::info!(
            sent = m.sent,
            spooled = m.spooled,
            dropped = m.dropped,
            poisoned = m.poisoned,
            "audit writer stopped"
        );
    }

    /// Waits for the request in flight until `deadline`; if it has not
    /// finished by then it is abandoned and its batch spooled (should it
    /// have arrived after all, the service will recognise the resend).
    async fn settle_by(&mut self, deadline: Instant) {
        if self.in_flight.is_none() {
            return;
        }
        match timeout_at(deadline, in_flight(&mut self.in_flight)).await {
            Ok(result) => self.settle(result).await,
            Err(_) => {
                if let Some(InFlight {
                    source: Source::Memory(ndjson),
                    events,
                    through,
                    ..
                }) = self.in_flight.take()
                {
                    self.spool_batch(Batch::of(ndjson, events, through)).await;
                }
            }
        }
    }

    /// Spools every queued event (they came before the overflow file's),
    /// then adopts the overflow file as the next spool batch.
    async fn adopt_overflow(&mut self) {
        loop {
            while !self.batch.is_full(self.batch_size) {
                match self.rx.try_recv() {
                    Ok(event) => self.add(event),
                    Err(_) => break,
                }
            }
            if self.batch.events == 0 {
                break;
            }
            let batch = self.batch.take();
            self.spool_batch(batch).await;
        }
        match self.overflow.take() {
            Ok(Some((path, events))) => {
                if let Err(e) = self.spool.adopt_overflow(path, events).await {
                    tracing::error!(error = %e, events, "audit events from the overflow file could not be spooled; left on disk for the next start");
                } else {
                    tracing::warn!(
                        events,
                        "audit queue was full: its overflow is spooled and will be sent in order"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "audit overflow file could not be taken; left on disk for the next start")
            }
        }
        self.publish_spool();
    }

    fn add(&mut self, event: Queued) {
        self.batch.ndjson.extend_from_slice(&event.line);
        self.batch.events += 1;
        self.batch.through = Some(event.number);
        if self.batch.due.is_none() {
            self.batch.due = Instant::now().checked_add(self.flush_interval);
        }
    }

    fn send_from_memory(&mut self, batch: Batch) {
        let sender = self.sender.clone();
        let ndjson = Arc::new(batch.ndjson);
        let shared = ndjson.clone();
        self.in_flight = Some(InFlight {
            source: Source::Memory(ndjson),
            events: batch.events,
            through: batch.through,
            future: Box::pin(
                async move { Ok(split::deliver(&shared, |body| sender.send(body)).await) },
            ),
        });
    }

    fn resend_oldest(&mut self) {
        let Some(file) = self.spool.oldest() else {
            return;
        };
        let (path, seq, events) = (self.spool.path(file), file.seq, file.events);
        let sender = self.sender.clone();
        self.in_flight = Some(InFlight {
            source: Source::Spool(seq),
            events,
            through: None,
            future: Box::pin(async move {
                let ndjson = tokio::fs::read(&path).await?;
                Ok(split::deliver(&ndjson, |body| sender.send(body)).await)
            }),
        });
    }

    /// Acts on how the delivery in flight ended.
    async fn settle(&mut self, result: io::Result<Delivery>) {
        let Some(InFlight {
            source,
            events,
            through,
            ..
        }) = self.in_flight.take()
        else {
            return;
        };
        // Counters move only once the spool on disk agrees with them.
        match result {
            Ok(Delivery::Settled {
                sent,
                stored,
                duplicates,
                refused,
            }) => {
                // Poison first, then delete: a crash in between resends the
                // batch rather than lose its refused events.
                let all_kept = self.poison(refused, events).await;
                if let Source::Spool(seq) = source {
                    if !all_kept {
                        // Left on disk for the next start, which halves it
                        // again; carry on with the batches behind it.
                        self.spool.forget(seq);
                    } else if let Err(e) = self.spool.remove(seq).await {
                        tracing::warn!(error = %e, seq, "delivered audit batch could not be deleted from the spool; it will be resent and recognised as a duplicate");
                    }
                    if self.spool.is_empty() {
                        tracing::info!(
                            "audit spool drained: every spooled audit event is delivered"
                        );
                    }
                }
                self.counters.sent.fetch_add(sent, Relaxed);
                if self.backoff.failures() > 0 {
                    tracing::info!(
                        stored,
                        duplicates,
                        "audit service reachable again; resending spooled events"
                    );
                }
                self.backoff.reset();
                self.retry_at = Instant::now();
            }
            Ok(Delivery::Transient {
                reason,
                misconfigured,
            }) => {
                if misconfigured {
                    tracing::error!(%reason, events, "audit service refused this writer (misconfiguration?); audit events are spooled and retried");
                } else if self.backoff.failures() == 0 {
                    tracing::warn!(%reason, events, "audit service unavailable; spooling audit events and retrying with backoff");
                } else {
                    tracing::debug!(%reason, events, failures = self.backoff.failures(), "audit service still unavailable");
                }
                if let Source::Memory(ndjson) = source {
                    // The future is gone with `in_flight`: no copy is made.
                    self.spool_batch(Batch::of(ndjson, events, through)).await;
                }
                let delay = self.backoff.next_delay();
                self.retry_at = Instant::now().checked_add(delay).unwrap_or(self.retry_at);
            }
            Err(e) => {
                // Only a spool file's read fails this way. Leave the file
                // where it is for the next start; carry on with the others.
                if let Source::Spool(seq) = source {
                    self.spool.forget(seq);
                    if e.kind() == io::ErrorKind::NotFound {
                        tracing::warn!(
                            seq,
                            "a spooled audit batch disappeared before it was resent"
                        );
                    } else {
                        tracing::error!(error = %e, seq, events, "a spooled audit batch cannot be read; left in place for the next start");
                    }
                }
            }
        }
        if let Some(through) = through {
            self.journal.settled(through);
        }
        self.publish_spool();
    }

    /// Keeps the events the service refused, from a batch of `events`, in
    /// the poison directory; returns whether every one of them is there.
    async fn poison(&mut self, refused: Vec<Refused>, events: u64) -> bool {
        let mut all_kept = true;
        for Refused {
            ndjson,
            status,
            reason,
        } in refused
        {
            self.spool.set_overflow_bytes(self.overflow.bytes());
            match self.spool.poison_event(ndjson).await {
                Ok(()) => {
                    self.counters.poisoned.fetch_add(1, Relaxed);
                    tracing::error!(status, %reason, batch_events = events, "audit service refused an audit event for good; it is kept in the spool's poison directory and not retried, the rest of its batch is delivered")
                }
                // Poisoned events count against the spool's limit: a full
                // spool loses this one, as it would a batch.
                Err(PushError::Full { used, limit, .. }) => {
                    self.counters.dropped.fetch_add(1, Relaxed);
                    tracing::error!(status, %reason, used, limit, "audit service refused an audit event for good, and the spool is too full to keep it: it is lost")
                }
                Err(PushError::Io(e)) => {
                    self.counters.poisoned.fetch_add(1, Relaxed);
                    all_kept = false;
                    tracing::error!(status, %reason, batch_events = events, error = %e, "audit service refused an audit event for good, and it could not be written to the poison directory")
                }
            }
        }
        all_kept
    }

    /// Appends a batch from memory to the spool, or drops it (counted,
    /// logged) if the spool is full or cannot be written; either way its
    /// events are settled in the journal, unless a batch before it is
    /// still in flight (that one settles them when it ends).
    async fn spool_batch(&mut self, batch: Batch) {
        let Batch {
            ndjson,
            events,
            through,
            ..
        } = batch;
        self.spool.set_overflow_bytes(self.overflow.bytes());
        let pushed = self.spool.push(ndjson, events).await;
        let before_in_flight = self.in_flight.as_ref().is_some_and(|f| f.through.is_some());
        if let Some(through) = through
            && !before_in_flight
        {
            self.journal.settled(through);
        }
        if let Err(e) = pushed {
            let total = self.counters.dropped.fetch_add(events, Relaxed) + events;
            if let Some(lost) = self.spool_losses.lost(events) {
                match e {
                    PushError::Full { used, limit, .. } => tracing::error!(
                        lost,
                        total_dropped = total,
                        used,
                        limit,
                        "audit spool is full: audit events are being lost while the audit service is unreachable"
                    ),
                    PushError::Io(e) => tracing::error!(
                        lost,
                        total_dropped = total,
                        error = %e,
                        "audit spool cannot be written: audit events are being lost"
                    ),
                }
            }
        }
        self.publish_spool();
    }

    fn publish_spool(&self) {
        self.counters.spooled.store(self.spool.events(), Relaxed);
        self.counters.spool_bytes.store(self.spool.bytes(), Relaxed);
        self.counters.limit_used.store(self.spool.used(), Relaxed);
    }
}

/// The request in flight's result; pending forever when there is none.
async fn in_flight(in_flight: &mut Option<InFlight>) -> io::Result<Delivery> {
    match in_flight {
        Some(request) => request.future.as_mut().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = WriterConfig::new("http://audit", "/var/spool/audit");
        assert_eq!(c.batch_size, 100);
        assert_eq!(c.flush_interval, Duration::from_millis(200));
        assert_eq!(c.queue_capacity, 10_000);
        assert_eq!(c.max_spool_bytes, 256 * 1024 * 1024);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.max_backoff, Duration::from_secs(30));
    }

    #[tokio::test]
    async fn losses_are_reported_at_most_once_a_period_and_summed() {
        let log = LossLog::new();
        assert_eq!(log.lost(1), Some(1));
        assert_eq!(log.lost(5), None);
        assert_eq!(log.lost(2), None);
        log.quiet_until_ms.store(0, Relaxed);
        assert_eq!(log.lost(1), Some(8));
        assert_eq!(log.lost(3), None);
        assert_eq!(log.take_unreported(), 3);
    }

    #[test]
    fn batches_close_by_count_or_size() {
        let mut b = Batch::default();
        assert!(!b.is_full(2));
        b.events = 2;
        assert!(b.is_full(2) && !b.is_full(3));
        b.events = 1;
        b.ndjson = vec![b'x'; MAX_BATCH_BYTES];
        assert!(b.is_full(1000));
        let taken = b.take();
        assert_eq!((taken.events, b.events, b.ndjson.len()), (1, 0, 0));
    }
}
