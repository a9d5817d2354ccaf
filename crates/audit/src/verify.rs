//! Verifying the chain as stored: `echod audit verify`, and retention's
//! check of the rows it is about to prune.
//!
//! Two passes. The fast one reads rows without building events (see
//! [`AuditStore::scan`]), checks each row's link from the previous row's
//! stored hash and each anchor on the way, and splits the chain into parts
//! verified in parallel: a part starts from the stored hash of the row
//! before it, which the previous part checks in turn. It can only say
//! "intact" or "not intact". When it says "not intact", the precise pass
//! ([`ChainVerifier`], one row at a time) walks the chain again to name the
//! first changed, removed, inserted, reordered or truncated event; tampering
//! is rare, so the slow pass costs only when it has something to report.

use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};

use crate::chain::{Anchor, ChainBreak, ChainSummary, ChainVerifier, Hash, link};
use crate::checkpoint::{Checkpoint, verify_note};
use crate::event::Event;
use crate::store::{AuditStore, AuditStoreError, ScannedRow};

/// Parts verified in parallel (the fast pass). More parts than cores buys
/// nothing; a small chain is one part.
const PARTS: i64 = 2;
const MIN_PART_ROWS: i64 = 10_000;
/// Rows per page of the precise pass, so memory stays flat.
const PAGE: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Broken(#[from] ChainBreak),
    #[error(transparent)]
    Store(#[from] AuditStoreError),
}

/// How a chain that verifies link by link is not pinned by checkpoints in
/// time (see [`check_pinned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnpinnedKind {
    /// Events after the newest checkpoint are older than two checkpoint
    /// intervals: checkpoints over them were deleted (with the tail they
    /// pinned, perhaps), or the service has been down since.
    Unpinned,
    /// The events between two consecutive checkpoints span more than two
    /// checkpoint intervals: checkpoints between them were deleted.
    Gap,
}

/// The first event a checkpoint should pin but none does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} at event {event_id} ({detail})")]
pub struct Unpinned {
    pub kind: UnpinnedKind,
    pub event_id: String,
    pub detail: String,
}

/// A verified stretch of the chain: where it starts (the retained start)
/// and its summary (`count` is the seq of its last row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub start: Anchor,
    pub summary: ChainSummary,
}

impl Verified {
    /// Events present and verified.
    pub fn events(&self) -> i64 {
        self.summary.count - self.start.size
    }
}

/// The checkpoints of signed notes, each signature checked against
/// `verifier_key`.
pub fn checkpoints_from_notes(
    notes: &[String],
    verifier_key: &str,
) -> Result<Vec<Checkpoint>, crate::checkpoint::CheckpointError> {
    notes
        .iter()
        .map(|note| verify_note(note, verifier_key))
        .collect()
}

/// The first event that signed `checkpoints` do not pin in time, if any: the
/// service signs one every `interval_secs` while the log grows, so
///
/// - no event after the newest checkpoint may be older than two intervals
///   at `now_ms` ([`UnpinnedKind::Unpinned`]): cutting the tail and the
///   checkpoints over it leaves such events behind, and so does deleting
///   every checkpoint to hide a rewrite;
/// - the events between two consecutive checkpoints may not span more than
///   two intervals ([`UnpinnedKind::Gap`]): checkpoints in between were
///   deleted. The audit service signs one when it starts, so the events
///   before a crash and after the restart fall on either side of it.
///
/// Event times are the service's receive times. Reads two rows per pair of
/// checkpoints more than two intervals apart (rarely more than a few: the
/// log was idle or the service down), plus one.
pub async fn check_pinned(
    store: &dyn AuditStore,
    verified: &Verified,
    checkpoints: &[Checkpoint],
    interval_secs: i64,
    now_ms: i64,
) -> Result<Option<Unpinned>, AuditStoreError> {
    let (start, head) = (verified.start.size, verified.summary.count);
    let most_ms = interval_secs.saturating_mul(2_000);
    let mut pins: Vec<(i64, i64)> = checkpoints
        .iter()
        .filter(|c| c.size >= start && c.size <= head)
        .map(|c| (c.size, c.time))
        .collect();
    // By size; of two at one size (a copy kept elsewhere), the earlier.
    pins.sort_unstable();
    pins.dedup_by_key(|(size, _)| *size);
    let mut after: (i64, Option<i64>) = (start, None);
    for &(size, time) in &pins {
        let (from, from_time) = after;
        after = (size, Some(time));
        // Events after a checkpoint came after it was signed, so a short
        // stretch between two cannot span long enough to need a look.
        let short = from_time.is_some_and(|t| (time - t + 1).saturating_mul(1000) <= most_ms);
        if size == from || short {
            continue;
        }
        let (Some(first), Some(last)) = (
            row_after(store, from).await?,
            row_after(store, size - 1).await?,
        ) else {
            continue;
        };
        if last.event.time - first.event.time > most_ms {
            return Ok(Some(Unpinned {
                kind: UnpinnedKind::Gap,
                event_id: first.event.id,
                detail: format!(
                    "no checkpoint between sizes {from} and {size}, whose events span {} s, more than two checkpoint intervals of {interval_secs} s: checkpoints were deleted",
                    (last.event.time - first.event.time) / 1000
                ),
            }));
        }
    }
    let (pinned, _) = after;
    if pinned < head
        && let Some(first) = row_after(store, pinned).await?
        && first.event.time < now_ms.saturating_sub(most_ms)
    {
        return Ok(Some(Unpinned {
            kind: UnpinnedKind::Unpinned,
            event_id: first.event.id,
            detail: format!(
                "{} events after the newest checkpoint (size {pinned}) are older than two checkpoint intervals of {interval_secs} s: checkpoints over them were deleted, or the audit service has not run since",
                head - pinned
            ),
        }));
    }
    Ok(None)
}

async fn row_after(
    store: &dyn AuditStore,
    after: i64,
) -> Result<Option<crate::chain::ChainedEvent>, AuditStoreError> {
    Ok(store.rows(after, 1).await?.into_iter().next())
}

/// Whether the stored chain still holds `from` (the row at its size has its
/// head, or it is the retained start or the empty chain) and its rows after
/// it chain from there up to `to`'s size and head: what the service checks
/// before signing a new head, so that it never signs a chain cut or
/// rewritten below a checkpoint it signed before.
pub async fn extends(
    store: &Arc<dyn AuditStore>,
    from: Anchor,
    to: Anchor,
) -> Result<bool, AuditStoreError> {
    if to.size < from.size {
        return Ok(false);
    }
    let start = store.retained_start().await?;
    let holds = if from.size < start.size {
        // Pruned away: nothing left to compare; pruning checked it.
        true
    } else if from.size == start.size {
        from.head == start.head
    } else {
        store.row_hash(from.size).await? == Some(from.head)
    };
    if !holds {
        return Ok(false);
    }
    let from = if from.size < start.size { start } else { from };
    let summary = check_part(store.as_ref(), from.size, to.size, from.head, &[]).await?;
    Ok(summary.is_some_and(|s| s.count == to.size && s.head == to.head))
}

/// Verifies the retained chain, every row after the retained start, against
/// `anchors` (signed checkpoints whose signatures the caller checked).
pub async fn verify_chain(
    store: Arc<dyn AuditStore>,
    anchors: Vec<Anchor>,
) -> Result<Verified, VerifyError> {
    verify_through(store, anchors, i64::MAX).await
}

/// Verifies the retained chain up to and including row `through` only.
pub async fn verify_through(
    store: Arc<dyn AuditStore>,
    anchors: Vec<Anchor>,
    through: i64,
) -> Result<Verified, VerifyError> {
    let mut anchors = anchors;
    anchors.retain(|a| a.size <= through);
    let start = store.retained_start().await?;
    // A pruned start is only as good as the signed checkpoint at its size.
    let anchored = start.size == 0 || anchors.contains(&start);
    if anchored && let Some(summary) = fast_pass(&store, start, &anchors, through).await? {
        return Ok(Verified { start, summary });
    }
    let summary = precise_pass(&store, start, anchors, through, anchored).await?;
    Ok(Verified { start, summary })
}

/// The fast pass: `Some` if the chain is intact, `None` if not (or if it
/// cannot tell, say a row was removed under a part boundary).
async fn fast_pass(
    store: &Arc<dyn AuditStore>,
    start: Anchor,
    anchors: &[Anchor],
    through: i64,
) -> Result<Option<ChainSummary>, AuditStoreError> {
    let head = store.head().await?.size.min(through);
    let rows = head - start.size;
    let parts = (rows / MIN_PART_ROWS).clamp(1, PARTS);
    let mut bounds = Vec::new();
    for i in 0..parts {
        let after = start.size + rows * i / parts;
        // The last part reads past the head, so extra rows show.
        let last = if i + 1 == parts {
            through
        } else {
            start.size + rows * (i + 1) / parts
        };
        bounds.push((after, last));
    }
    let mut tasks = Vec::new();
    for (after, last) in bounds {
        let store = store.clone();
        let mut anchors: Vec<Anchor> = anchors
            .iter()
            .filter(|a| a.size > after && a.size <= last)
            .copied()
            .collect();
        anchors.sort_by_key(|a| a.size);
        tasks.push(tokio::spawn(async move {
            let prev = if after == start.size {
                start.head
            } else {
                match store.row_hash(after).await? {
                    Some(hash) => hash,
                    None => return Ok(None),
                }
            };
            check_part(store.as_ref(), after, last, prev, &anchors).await
        }));
    }
    let mut summary = None;
    for task in tasks {
        let Ok(part) = task.await else {
            return Ok(None);
        };
        match part? {
            Some(part) => summary = Some(part),
            None => return Ok(None),
        }
    }
    // Every anchor must lie within the chain read; one beyond it means the
    // tail was cut off.
    Ok(summary.filter(|s| anchors.iter().all(|a| a.size <= s.count)))
}

/// Checks rows `after < seq <= last`: contiguous seqs, each hash linking
/// from the previous one, each anchor matching.
async fn check_part(
    store: &dyn AuditStore,
    after: i64,
    last: i64,
    mut prev: Hash,
    anchors: &[Anchor],
) -> Result<Option<ChainSummary>, AuditStoreError> {
    let mut anchors = anchors.iter().peekable();
    let mut buffer = Vec::with_capacity(1024);
    let mut seq = after;
    loop {
        let page = store.scan(seq, last, PAGE).await?;
        if page.is_empty() {
            break;
        }
        for row in page.rows() {
            let Ok(hash) = Hash::try_from(row.hash) else {
                return Ok(None);
            };
            if row.seq != seq + 1 || !links(&prev, &row, hash, &mut buffer) {
                return Ok(None);
            }
            if let Some(anchor) = anchors.next_if(|a| a.size == row.seq)
                && anchor.head != hash
            {
                return Ok(None);
            }
            prev = hash;
            seq = row.seq;
        }
    }
    // An anchor left over lies beyond the last row: the tail was cut.
    Ok(anchors.peek().is_none().then_some(ChainSummary {
        count: seq,
        head: prev,
    }))
}

/// Whether `row` chains from `prev`. The stored context is hashed as it is;
/// a row written before contexts were stored canonically gets a second try
/// through a parsed [`Event`].
fn links(prev: &Hash, row: &ScannedRow<'_>, hash: Hash, buffer: &mut Vec<u8>) -> bool {
    row.fields.canonical_bytes_into(buffer);
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(buffer);
    if ctx.finish().as_ref() == hash {
        return true;
    }
    event_of(row).is_some_and(|event| link(prev, &event) == hash)
}

fn event_of(row: &ScannedRow<'_>) -> Option<Event> {
    let f = &row.fields;
    Some(Event {
        id: f.id.to_owned(),
        time: f.time,
        service: f.service.to_owned(),
        level: crate::event::Level::parse(f.level)?,
        action: f.action.to_owned(),
        actor: f.actor.map(str::to_owned),
        outcome: f.outcome.map(str::to_owned),
        ip: f.ip.map(str::to_owned),
        user_agent: f.user_agent.map(str::to_owned),
        trace_id: f.trace_id.map(str::to_owned),
        message: f.message.to_owned(),
        context: serde_json::from_str(f.context).ok()?,
    })
}

/// The precise pass: names the first break.
async fn precise_pass(
    store: &Arc<dyn AuditStore>,
    start: Anchor,
    anchors: Vec<Anchor>,
    through: i64,
    anchored: bool,
) -> Result<ChainSummary, VerifyError> {
    if !anchored {
        return Err(ChainBreak::unanchored_start().into());
    }
    let mut verifier = ChainVerifier::new(start, anchors);
    let mut after = start.size;
    while after < through {
        let rows = store.rows(after, PAGE).await?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in rows.into_iter().take_while(|r| r.seq <= through) {
            verifier.push(row)?;
        }
    }
    Ok(verifier.finish()?)
}
