//! The hash chain over stored events, and its streaming verifier.
//!
//! Each stored row carries `hash = SHA-256(prev_hash ‖ canonical event)`
//! ([`link`]), where `prev_hash` is the previous row's hash, or [`GENESIS`]
//! for the first row. Editing, removing, inserting or reordering a row then
//! breaks every later link unless the attacker recomputes them all; signed
//! checkpoints (see [`crate::checkpoint`]) pin the head at known sizes so that
//! a full recomputation, or cutting off the tail, is caught too.
//!
//! # What the verifier can and cannot tell apart
//!
//! [`ChainVerifier`] reports the *first* row where verification fails, with a
//! [`BreakKind`] that is a best guess from one row of look-ahead and one of
//! look-behind. The event it names is always the first one that cannot be
//! accepted (or, for [`BreakKind::Inserted`] found by look-behind, the
//! accepted row the chain proves does not belong). The kind is exact for the
//! tampering each describes when it is the only tampering nearby; otherwise:
//!
//! - **Removed** is reported only from a gap in `seq`. A deletion whose later
//!   rows were renumbered looks exactly like an edit of the row after the gap
//!   (that row's stored hash chains from a hash that is nowhere any more), so
//!   it is reported as **Changed** at that row.
//! - **Changed** covers an edited event whose stored hash was left alone, a
//!   corrupted stored hash, a renumbered deletion, and anything the look-ahead
//!   does not explain. If the attacker also recomputed the edited row's hash,
//!   the break shows one row later (that row verifies, the next does not);
//!   without an anchor nothing can place it more precisely.
//! - **Inserted**: a row that does not chain, while the next row chains
//!   straight from the previous one; or a row that chains correctly (its hash
//!   was forged from its predecessor) but is skipped over by the following
//!   row, which chains from the row before it. A duplicated row is Inserted
//!   too, as is a row whose `seq` is not above the previous one.
//! - **Reordered**: two adjacent rows swapped (with their seqs put back in
//!   order): the later-stored one chains from the previous row and the
//!   earlier-stored one from it. Longer permutations show as Inserted or
//!   Changed.
//! - **Truncated**: only an anchor can reveal a missing tail; without anchors
//!   a cut chain is a valid shorter chain.
//! - A chain rewritten from some point with every hash recomputed verifies
//!   link by link; only an anchor inside the rewritten part catches it, as
//!   **Changed** at the anchor's row: the edit itself lies somewhere after the
//!   previous matching anchor and at or before that row.

use aws_lc_rs::digest::{Context, SHA256};

use crate::event::Event;

/// A SHA-256 chain hash.
pub type Hash = [u8; 32];

/// The hash the first row of a whole chain chains from.
pub const GENESIS: Hash = [0u8; 32];

/// SHA-256(prev ‖ canonical bytes of event): the hash stored with `event`
/// when it follows a row whose hash is `prev`.
pub fn link(prev: &Hash, event: &Event) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(prev);
    ctx.update(&event.canonical_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// One stored row: its position in the chain (1-based, contiguous when
/// intact), the event and the hash stored with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainedEvent {
    pub seq: i64,
    pub event: Event,
    pub hash: Hash,
}

/// What a signed checkpoint commits to (see [`crate::checkpoint`]): the
/// chain's length and head hash at that time. Also the retained start of a
/// pruned chain: the seq and hash of the last row pruned away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub size: i64,
    pub head: Hash,
}

/// How the chain was found broken; see the [module docs](self) for what each
/// kind can and cannot distinguish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BreakKind {
    Changed,
    Removed,
    Inserted,
    Reordered,
    Truncated,
}

/// The first point where the chain stops verifying, naming an event id: the
/// changed/inserted/reordered event itself, for Removed the first event after
/// the gap, for Truncated the last event still present (or `""` if none).
///
/// `""` is also named when an anchor at exactly the verifier's start size
/// disagrees with the start hash (the retained start itself is wrong: there
/// is no row to name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} at event {event_id}")]
pub struct ChainBreak {
    pub kind: BreakKind,
    pub event_id: String,
}

impl ChainBreak {
    fn new(kind: BreakKind, event_id: &str) -> Self {
        ChainBreak {
            kind,
            event_id: event_id.to_owned(),
        }
    }

    /// The retained start of a pruned chain has no signed checkpoint at its
    /// size: rows were cut from the front without the anchor pruning signs.
    pub fn unanchored_start() -> Self {
        ChainBreak::new(BreakKind::Removed, "")
    }
}

/// A verified chain: `count` is its length, i.e. the seq of its last row
/// (`start.size` plus the rows verified; for a whole chain, the number of
/// rows), and `head` the hash of its last row, so the pair is exactly what the
/// next checkpoint should sign ([`Anchor`] with `size = count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    pub count: i64,
    pub head: Hash,
}

/// Incremental verifier, so a million rows can stream through it without
/// being held in memory: it keeps the last accepted row's hash, the hash
/// before it, at most one row of look-ahead, and the anchors.
///
/// Once a break is found every later [`push`](Self::push) and
/// [`finish`](Self::finish) returns that same break.
pub struct ChainVerifier {
    /// Anchors above the start, ascending by size, not yet reached.
    anchors: std::vec::IntoIter<Anchor>,
    next_anchor: Option<Anchor>,
    /// Hash of the last accepted row (initially the start head).
    prev_hash: Hash,
    /// The hash the last accepted row chained from; `None` before any row.
    before_prev: Option<Hash>,
    prev_seq: i64,
    /// Id of the last accepted row, `""` before any.
    prev_id: String,
    /// A row that failed to link, waiting for the next row to classify it.
    pending: Option<ChainedEvent>,
    broken: Option<ChainBreak>,
}

impl ChainVerifier {
    /// `start`: the hash the first row chains from and the seq before the
    /// first row — `Anchor { size: 0, head: GENESIS }` for a whole chain, or a
    /// pruned chain's retained start. `anchors`: signed checkpoints already
    /// verified for their signatures, any order. Anchors below the start
    /// cover pruned rows and are ignored; one at exactly the start size must
    /// match the start head.
    pub fn new(start: Anchor, mut anchors: Vec<Anchor>) -> Self {
        let broken = anchors
            .iter()
            .any(|a| a.size == start.size && a.head != start.head)
            .then(|| ChainBreak::new(BreakKind::Changed, ""));
        anchors.retain(|a| a.size > start.size);
        anchors.sort_by_key(|a| a.size);
        let mut anchors = anchors.into_iter();
        let next_anchor = anchors.next();
        ChainVerifier {
            anchors,
            next_anchor,
            prev_hash: start.head,
            before_prev: None,
            prev_seq: start.size,
            prev_id: String::new(),
            pending: None,
            broken,
        }
    }

    /// Feeds the next row, in ascending seq order. Needs one row of
    /// look-ahead to tell kinds apart, so a row that fails to link is only
    /// reported (always as the break) when the following row arrives or at
    /// [`finish`](Self::finish); the break still names the right event.
    pub fn push(&mut self, row: ChainedEvent) -> Result<(), ChainBreak> {
        if let Some(b) = &self.broken {
            return Err(b.clone());
        }
        let result = match self.pending.take() {
            Some(failed) => Err(self.classify(&failed, Some(&row))),
            None => self.check(row),
        };
        if let Err(b) = &result {
            self.broken = Some(b.clone());
        }
        result
    }

    /// After the last row: flushes the look-ahead, then checks the anchors
    /// beyond the last row (an anchor whose size exceeds the chain ⇒
    /// Truncated, naming the last row still present). Anchors within the
    /// chain were already checked as their rows went by (a head that differs
    /// from the stored hash at that seq ⇒ Changed at that event).
    pub fn finish(mut self) -> Result<ChainSummary, ChainBreak> {
        if let Some(b) = self.broken.take() {
            return Err(b);
        }
        if let Some(failed) = self.pending.take() {
            return Err(self.classify(&failed, None));
        }
        if self.next_anchor.is_some() {
            return Err(ChainBreak::new(BreakKind::Truncated, &self.prev_id));
        }
        Ok(ChainSummary {
            count: self.prev_seq,
            head: self.prev_hash,
        })
    }

    /// A row with no pending failure before it: accept, report, or hold.
    fn check(&mut self, row: ChainedEvent) -> Result<(), ChainBreak> {
        let expected = self.prev_seq.saturating_add(1);
        if row.seq > expected {
            return Err(ChainBreak::new(BreakKind::Removed, &row.event.id));
        }
        if row.seq < expected {
            // Its position is already taken: a duplicate or an extra row.
            return Err(ChainBreak::new(BreakKind::Inserted, &row.event.id));
        }
        if link(&self.prev_hash, &row.event) == row.hash {
            return self.accept(row);
        }
        // Look-behind: if this row chains from the hash before the previous
        // row, the previous row was slipped in (with a hash forged from its
        // predecessor) and is the first wrong one.
        if let Some(before) = &self.before_prev
            && link(before, &row.event) == row.hash
        {
            return Err(ChainBreak::new(BreakKind::Inserted, &self.prev_id));
        }
        self.pending = Some(row);
        Ok(())
    }

    fn accept(&mut self, row: ChainedEvent) -> Result<(), ChainBreak> {
        while let Some(anchor) = self.next_anchor.filter(|a| a.size <= row.seq) {
            // Accepted seqs are contiguous, so `anchor.size == row.seq`.
            if anchor.head != row.hash {
                return Err(ChainBreak::new(BreakKind::Changed, &row.event.id));
            }
            self.next_anchor = self.anchors.next();
        }
        self.before_prev = Some(self.prev_hash);
        self.prev_hash = row.hash;
        self.prev_seq = row.seq;
        self.prev_id = row.event.id;
        Ok(())
    }

    /// Names the break at `failed`, a row in the expected position whose hash
    /// does not chain from the previous row, using the row after it if any.
    fn classify(&self, failed: &ChainedEvent, next: Option<&ChainedEvent>) -> ChainBreak {
        let kind = match next {
            Some(next) if link(&self.prev_hash, &next.event) == next.hash => {
                if link(&next.hash, &failed.event) == failed.hash {
                    BreakKind::Reordered
                } else {
                    BreakKind::Inserted
                }
            }
            // `next` chains from the failed row's stored hash: the failed
            // row's content was edited under an intact hash.
            Some(next) if link(&failed.hash, &next.event) == next.hash => BreakKind::Changed,
            _ => BreakKind::Changed,
        };
        ChainBreak::new(kind, &failed.event.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Level;
    use serde_json::json;

    fn event(i: u64) -> Event {
        Event {
            id: format!("evt-{i}"),
            time: 1_700_000_000_000 + i as i64,
            service: "svc".into(),
            level: Level::Info,
            action: "test.event".into(),
            actor: Some(format!("user:{}", i % 7)),
            outcome: None,
            ip: None,
            user_agent: None,
            trace_id: None,
            message: format!("event number {i}"),
            context: json!({ "n": i }),
        }
    }

    /// A correctly chained sequence of `n` rows starting at `start`.
    fn chain_from(start: Anchor, first_event: u64, n: u64) -> Vec<ChainedEvent> {
        let mut prev = start.head;
        (0..n)
            .map(|i| {
                let event = event(first_event + i);
                let hash = link(&prev, &event);
                prev = hash;
                ChainedEvent {
                    seq: start.size + 1 + i as i64,
                    event,
                    hash,
                }
            })
            .collect()
    }

    fn chain(n: u64) -> Vec<ChainedEvent> {
        chain_from(
            Anchor {
                size: 0,
                head: GENESIS,
            },
            1,
            n,
        )
    }

    fn whole() -> Anchor {
        Anchor {
            size: 0,
            head: GENESIS,
        }
    }

    fn anchor_at(rows: &[ChainedEvent], size: i64) -> Anchor {
        let head = rows
            .iter()
            .find(|r| r.seq == size)
            .map_or(GENESIS, |r| r.hash);
        Anchor { size, head }
    }

    fn verify_with(
        start: Anchor,
        rows: Vec<ChainedEvent>,
        anchors: Vec<Anchor>,
    ) -> Result<ChainSummary, ChainBreak> {
        let mut v = ChainVerifier::new(start, anchors);
        for row in rows {
            v.push(row)?;
        }
        v.finish()
    }

    fn verify(rows: Vec<ChainedEvent>, anchors: Vec<Anchor>) -> Result<ChainSummary, ChainBreak> {
        verify_with(whole(), rows, anchors)
    }

    fn brk(kind: BreakKind, id: &str) -> Result<ChainSummary, ChainBreak> {
        Err(ChainBreak::new(kind, id))
    }

    fn renumber(rows: &mut [ChainedEvent]) {
        for (i, row) in rows.iter_mut().enumerate() {
            row.seq = i as i64 + 1;
        }
    }

    #[test]
    fn link_is_sha256_of_prev_and_canonical_bytes() {
        let e = event(1);
        let mut data = vec![7u8; 32];
        data.extend(e.canonical_bytes());
        assert_eq!(link(&[7u8; 32], &e), echo_crypto::secret::sha256(&data));
        assert_ne!(link(&GENESIS, &e), link(&[7u8; 32], &e));
    }

    #[test]
    fn intact_chain_with_anchors() {
        let rows = chain(20);
        let head = rows[19].hash;
        let anchors = vec![
            anchor_at(&rows, 20),
            anchor_at(&rows, 1),
            anchor_at(&rows, 10),
            anchor_at(&rows, 10),
            whole(),
        ];
        assert_eq!(verify(rows, anchors), Ok(ChainSummary { count: 20, head }));
    }

    #[test]
    fn empty_chain() {
        assert_eq!(
            verify(vec![], vec![]),
            Ok(ChainSummary {
                count: 0,
                head: GENESIS
            })
        );
        assert_eq!(
            verify(
                vec![],
                vec![Anchor {
                    size: 1,
                    head: GENESIS
                }]
            ),
            brk(BreakKind::Truncated, "")
        );
    }

    #[test]
    fn changed_event() {
        for target in [0, 4, 9] {
            let mut rows = chain(10);
            rows[target].event.message.push('!');
            let id = rows[target].event.id.clone();
            assert_eq!(verify(rows, vec![]), brk(BreakKind::Changed, &id));
        }
        // Stored hash corrupted, content intact.
        let mut rows = chain(10);
        rows[3].hash[0] ^= 1;
        assert_eq!(verify(rows, vec![]), brk(BreakKind::Changed, "evt-4"));
    }

    #[test]
    fn removed_with_gap() {
        let mut rows = chain(10);
        rows.remove(4); // evt-5
        assert_eq!(verify(rows, vec![]), brk(BreakKind::Removed, "evt-6"));
        let mut rows = chain(10);
        rows.remove(0);
        assert_eq!(verify(rows, vec![]), brk(BreakKind::Removed, "evt-2"));
    }

    #[test]
    fn removed_and_renumbered() {
        let mut rows = chain(10);
        rows.remove(4);
        renumber(&mut rows);
        let err = verify(rows, vec![]).unwrap_err();
        assert_eq!(err.event_id, "evt-6");
        assert_eq!(err.kind, BreakKind::Changed);
    }

    #[test]
    fn inserted_with_forged_hash() {
        // The forger chains its row from the previous one and renumbers: the
        // forged row itself verifies, the next one proves it does not belong.
        for at in [0, 5, 10] {
            let mut rows = chain(10);
            let prev = if at == 0 { GENESIS } else { rows[at - 1].hash };
            let mut forged = event(999);
            forged.id = "forged".into();
            let hash = link(&prev, &forged);
            rows.insert(
                at,
                ChainedEvent {
                    seq: 0,
                    event: forged,
                    hash,
                },
            );
            renumber(&mut rows);
            let result = verify(rows, vec![]);
            if at == 10 {
                // Appended at the end it is a valid extension: only an
                // anchor or a signature over the new head can tell.
                assert!(result.is_ok());
            } else {
                assert_eq!(result, brk(BreakKind::Inserted, "forged"), "at {at}");
            }
        }
    }

    #[test]
    fn inserted_with_bad_hash() {
        let mut rows = chain(10);
        let mut forged = event(999);
        forged.id = "forged".into();
        rows.insert(
            3,
            ChainedEvent {
                seq: 0,
                event: forged,
                hash: [9; 32],
            },
        );
        renumber(&mut rows);
        assert_eq!(verify(rows, vec![]), brk(BreakKind::Inserted, "forged"));
    }

    #[test]
    fn inserted_before_anchor_is_refused() {
        let original = chain(10);
        let anchors = vec![anchor_at(&original, 10)];
        let mut rows = original.clone();
        let mut forged = event(999);
        forged.id = "forged".into();
        let hash = link(&rows[9].hash, &forged);
        rows.push(ChainedEvent {
            seq: 11,
            event: forged,
            hash,
        });
        // Appended after the anchor: fine, the anchor still matches.
        assert!(verify(rows, anchors.clone()).is_ok());
        // Forged at seq 10 by replacing the last row and recomputing.
        let mut rows = original;
        rows[9].event.message.push('!');
        rows[9].hash = link(&rows[8].hash, &rows[9].event);
        assert_eq!(verify(rows, anchors), brk(BreakKind::Changed, "evt-10"));
    }

    #[test]
    fn duplicated_row() {
        let mut rows = chain(10);
        let copy = rows[4].clone();
        rows.insert(5, copy.clone());
        // Same seq kept: its position is taken.
        assert_eq!(
            verify(rows.clone(), vec![]),
            brk(BreakKind::Inserted, "evt-5")
        );
        renumber(&mut rows);
        assert_eq!(verify(rows, vec![]), brk(BreakKind::Inserted, "evt-5"));
    }

    #[test]
    fn reordered_adjacent_swap() {
        for first in [0, 4, 8] {
            let mut rows = chain(10);
            rows.swap(first, first + 1);
            renumber(&mut rows);
            let id = rows[first].event.id.clone();
            assert_eq!(verify(rows, vec![]), brk(BreakKind::Reordered, &id));
        }
    }

    #[test]
    fn truncated_tail() {
        let original = chain(10);
        let anchors = vec![anchor_at(&original, 5), anchor_at(&original, 10)];
        let rows = original[..7].to_vec();
        assert_eq!(
            verify(rows, anchors.clone()),
            brk(BreakKind::Truncated, "evt-7")
        );
        assert_eq!(verify(vec![], anchors), brk(BreakKind::Truncated, ""));
    }

    #[test]
    fn rewritten_chain_caught_by_anchor() {
        let original = chain(10);
        let anchors = vec![anchor_at(&original, 3), anchor_at(&original, 8)];
        // Edit event 5 and recompute every hash after it.
        let mut rows = original.clone();
        rows[4].event.message.push('!');
        for i in 4..10 {
            rows[i].hash = link(&rows[i - 1].hash, &rows[i].event);
        }
        assert_eq!(verify(rows, anchors), brk(BreakKind::Changed, "evt-8"));
    }

    #[test]
    fn pruned_chain_from_retained_start() {
        let original = chain(10);
        let start = anchor_at(&original, 4);
        let rows = original[4..].to_vec();
        let head = rows[5].hash;
        let anchors = vec![anchor_at(&original, 2), start, anchor_at(&original, 9)];
        assert_eq!(
            verify_with(start, rows.clone(), anchors.clone()),
            Ok(ChainSummary { count: 10, head })
        );
        // A wrong retained start is caught against an anchor at its size…
        let wrong = Anchor {
            size: 4,
            head: [1; 32],
        };
        assert_eq!(
            verify_with(wrong, rows.clone(), anchors),
            brk(BreakKind::Changed, "")
        );
        // …and by the first row not chaining from it.
        assert_eq!(
            verify_with(wrong, rows.clone(), vec![]),
            brk(BreakKind::Changed, "evt-5")
        );
        // Rows before the start are refused as out of place.
        assert_eq!(
            verify_with(start, original, vec![]),
            brk(BreakKind::Inserted, "evt-1")
        );
        // Pruned and then a gap right after the start.
        assert_eq!(
            verify_with(start, rows[1..].to_vec(), vec![]),
            brk(BreakKind::Removed, "evt-6")
        );
    }

    #[test]
    fn break_is_sticky() {
        let mut rows = chain(5);
        rows[1].event.message.push('!');
        let mut v = ChainVerifier::new(whole(), vec![]);
        v.push(rows[0].clone()).unwrap();
        v.push(rows[1].clone()).unwrap(); // held for look-ahead
        let first = v.push(rows[2].clone()).unwrap_err();
        assert_eq!(first, ChainBreak::new(BreakKind::Changed, "evt-2"));
        assert_eq!(v.push(rows[3].clone()).unwrap_err(), first);
        assert_eq!(v.finish().unwrap_err(), first);
        assert_eq!(first.to_string(), "Changed at event evt-2");
    }

    /// Random chains and random single tamperings: each is refused and names
    /// the expected event (and kind, where the kind is determined).
    #[test]
    fn seeded_tampering() {
        let mut rng = echo_testkit::Xorshift(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            let n = 2 + rng.below(30);
            let original = chain(n as u64);
            let id = |i: usize| original[i].event.id.clone();
            let mut rows = original.clone();
            let target = rng.below(n);
            let op = rng.below(6);
            let (expected_kind, expected_id, anchors) = match op {
                0 => {
                    match rng.below(3) {
                        0 => rows[target].event.time += 1,
                        1 => rows[target].event.context = json!({"n": "x"}),
                        _ => rows[target].event.actor = None,
                    }
                    (Some(BreakKind::Changed), id(target), vec![])
                }
                1 => {
                    if target + 1 == n {
                        continue; // removing the last row is truncation
                    }
                    rows.remove(target);
                    (Some(BreakKind::Removed), id(target + 1), vec![])
                }
                2 => {
                    if target + 1 == n {
                        continue;
                    }
                    rows.remove(target);
                    renumber(&mut rows);
                    (None, id(target + 1), vec![])
                }
                3 => {
                    // Inserted before row `target` (appending after the last
                    // row is a valid extension, caught only by a checkpoint).
                    let prev = if target == 0 {
                        GENESIS
                    } else {
                        rows[target - 1].hash
                    };
                    let mut forged = event(10_000 + round);
                    forged.id = "forged".into();
                    let hash = if rng.below(2) == 0 {
                        link(&prev, &forged)
                    } else {
                        [round as u8; 32]
                    };
                    rows.insert(
                        target,
                        ChainedEvent {
                            seq: 0,
                            event: forged,
                            hash,
                        },
                    );
                    renumber(&mut rows);
                    (Some(BreakKind::Inserted), "forged".to_owned(), vec![])
                }
                4 => {
                    if target + 1 == n {
                        continue;
                    }
                    rows.swap(target, target + 1);
                    renumber(&mut rows);
                    (Some(BreakKind::Reordered), id(target + 1), vec![])
                }
                _ => {
                    let keep = target; // 0..n-1 rows kept
                    rows.truncate(keep);
                    let last = if keep == 0 {
                        String::new()
                    } else {
                        id(keep - 1)
                    };
                    let anchors = vec![
                        anchor_at(&original, n as i64),
                        anchor_at(&original, keep as i64),
                    ];
                    (Some(BreakKind::Truncated), last, anchors)
                }
            };
            let err = match verify(rows, anchors) {
                Ok(_) => panic!("round {round} op {op} target {target} n {n}: accepted"),
                Err(err) => err,
            };
            assert_eq!(err.event_id, expected_id, "round {round} op {op}");
            if let Some(kind) = expected_kind {
                assert_eq!(err.kind, kind, "round {round} op {op}");
            }
            // The untampered chain verifies with anchors everywhere.
            let all: Vec<Anchor> = (0..=n as i64).map(|s| anchor_at(&original, s)).collect();
            assert!(verify(original, all).is_ok());
        }
    }
}
