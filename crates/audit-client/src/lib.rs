//! The client every Echo service sends its audit events with.
//!
//! [`AuditWriter`] is an [`AuditSink`](echo_core::audit::AuditSink): code
//! that audits calls `record(event)` and carries on. Delivery to the audit
//! service (`POST {endpoint}/v1/events`) happens in a background task.
//!
//! # Data flow
//!
//! ```text
//! record ──append──▶ spool_dir/journal-{n:020}.ndjson (deleted once its events are delivered or spooled)
//!   │
//!   └──try_send──▶ bounded queue ──▶ batch (size / time) ──▶ POST /v1/events ──200──▶ done
//!   │ full                                      │ spool non-empty        │ 5xx, timeout, refused connection,
//!   ▼                                           ▼                        ▼ 401 twice, 403
//! spool_dir/overflow.ndjson ──adopted──▶ spool_dir/{seq:020}-{n}.ndjson ◀──┘
//!                                               │ oldest first, exponential backoff with full jitter
//!                                               └──▶ POST ──200──▶ file deleted
//!
//! either POST ──400/413──▶ halves, first half first ──▶ POST ──200──▶ delivered
//!                            ▲                              │ 400/413
//!                            └──── more than one event ◀────┤
//!                                                           └── one event ──▶ spool_dir/poison/{seq:020}-1.ndjson
//!                                                                             (never retried)
//! ```
//!
//! 1. [`record`](echo_core::audit::AuditSink::record) turns the event into
//!    the service's wire form ([`WireEvent`]) with a fresh random `id` and
//!    the current time, appends it to the write-ahead journal (a write to
//!    the page cache) and `try_send`s it on a bounded channel. It never
//!    blocks on the network or an fsync and never fails the caller. When
//!    the queue is full it appends the event to `spool_dir/overflow.ndjson`
//!    instead (a write to the page cache), and so does every later event
//!    until the task has spooled the queue and adopted the file as the next
//!    spool batch: a burst larger than the queue costs disk, not events.
//! 2. The task gathers events into a batch, sent when it holds
//!    `batch_size` events or its first event has waited `flush_interval`.
//! 3. A batch the service does not acknowledge for a reason that may pass
//!    (connection refused, timeout, 5xx, a token refused even after a fresh
//!    one, 403) is written to the spool directory. While the spool holds
//!    anything, new batches go there too, behind it, and the oldest spool
//!    file is resent with exponential backoff (100 ms, doubling, capped at
//!    `max_backoff`, full jitter) until the service takes it.
//! 4. A batch the service refuses as malformed (400, 413) will never be
//!    accepted whole, but one bad event is enough for that. So it is halved
//!    and each half sent again, first half first, and so on down to single
//!    events: each event the service refuses even alone is written to
//!    `spool_dir/poison/`, in a file of its own, for an operator; every
//!    other event of the batch is delivered, in order. This holds for
//!    batches from memory and from the spool alike. A batch of n events is
//!    halved at most ⌈log₂ n⌉ times on the way to a bad event, so one bad
//!    event costs at most 2·⌈log₂ n⌉ extra requests (14 for 100 events) and
//!    a batch of nothing but bad events 2n − 2. A failure that may pass
//!    part-way through counts for the whole batch (step 3): it is halved
//!    afresh when resent, the halves already delivered are recognised as
//!    duplicates, and nothing is poisoned before the batch is settled, so
//!    a failure part-way poisons nothing twice.
//! 5. [`AuditWriter::shutdown`] stops intake, gives the queued events a
//!    couple of seconds to reach the service and spools the rest; the next
//!    [`AuditWriter::start`] on the same directory resends them first.
//!
//! One writer per spool directory: [`AuditWriter::start`] takes an
//! exclusive advisory lock on `spool_dir/.lock` ([`File::try_lock`]) and its
//! background task holds it until it ends. A second writer on the same
//! directory, in this process or another, fails to start with
//! [`ErrorKind::ResourceBusy`] instead of sending and deleting the first
//! one's files.
//!
//! [`File::try_lock`]: std::fs::File::try_lock
//! [`ErrorKind::ResourceBusy`]: std::io::ErrorKind::ResourceBusy
//!
//! # Guarantees
//!
//! - **Exactly once in the log, at least once on the wire.** Ids are chosen
//!   here, once per event, and kept in the spool; the service stores a
//!   resent event once. A batch is deleted from the spool only after a 200,
//!   so a crash or a lost answer means a resend, not a loss.
//! - **Durable once spooled.** Spool files are written under a temporary
//!   name, fsync'ed, renamed and the directory fsync'ed; a partially
//!   written file is never read as a batch.
//! - **Bounded memory, whatever the outage**: the queue, the batch being
//!   built and the one request in flight. An outage grows the spool, not the
//!   heap.
//! - **Bounded disk**: the spooled batches, the overflow file and the
//!   poisoned events together never pass `max_spool_bytes` (give or take
//!   the overflow lines written while a batch was being spooled).
//! - **Loss is never silent.** Events are lost only after shutdown, or when
//!   the spool is full or unwritable; each is counted
//!   in [`WriterMetrics::dropped`] and logged with `tracing::error!` (at most
//!   once a second per cause, with the count lost).
//! - **In order.** One request at a time, spool files oldest first, new
//!   batches never overtake spooled ones, and the halves of a refused batch
//!   go first half first.
//!
//! - **Write-ahead.** Once `record` returns, the event is in the journal
//!   (or the overflow file): a process killed before delivering it (SIGKILL
//!   included) loses nothing, as the next [`AuditWriter::start`] on the
//!   directory adopts the journal into the spool and resends it; events
//!   the service already had are recognised by their ids. The journal is
//!   written to the page cache and deleted segment by segment as its
//!   events are delivered or spooled.
//!
//! What is not guaranteed: anything recorded after shutdown is lost; the
//! journal's and the overflow file's lines survive the death of the
//! process but not a power cut before they were delivered or spooled (they
//! are not fsync'ed: a disk flush per event would be the caller's to wait
//! for).
//!
//! # Authentication
//!
//! Each request carries a bearer token from a [`TokenSource`](echo_edge::TokenSource), normally
//! the service's [`echo_edge::ServiceTokens`] for the audit service's
//! audience and scope `audit.write`. The service attributes events to the token's `sub`,
//! so events carry no `service` field. On 401 the source is told the token
//! was refused and the batch is retried once at once with a fresh token.

mod journal;
mod overflow;
mod sender;
mod split;
mod spool;
mod wire;
mod writer;

pub use sender::BACKOFF_BASE;
pub use spool::POISON_DIR;
pub use wire::WireEvent;
pub use writer::{
    AuditWriter, MAX_BATCH_BYTES, MAX_BATCH_EVENTS, SHUTDOWN_GRACE, WriterConfig, WriterMetrics,
};
