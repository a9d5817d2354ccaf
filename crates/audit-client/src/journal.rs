//! The write-ahead journal: every event [`AuditSink::record`] queues in
//! memory is first appended to a journal file in the spool directory, so a
//! process killed outright (SIGKILL, a panic that aborts, the OOM killer)
//! loses none of the events it had not yet delivered or spooled. The next
//! [`Spool::open`](crate::spool::Spool::open) adopts what the journal holds
//! as spool batches, and the service recognises the events it already has
//! by their ids.
//!
//! - The journal is a run of segment files, `journal-{first:020}.ndjson`,
//!   each holding the events numbered from `first` on (numbers count the
//!   events this writer journaled). A segment is closed after
//!   [`SEGMENT_EVENTS`] events.
//! - An event's number and its place in the writer's queue are taken under
//!   one lock, so the queue holds events in the order of their numbers and
//!   the task settles them in that order: once the events up to `n` are
//!   delivered or spooled, every closed segment ending at or before `n` is
//!   deleted, and so is the open one once all of it is settled (the common
//!   case: a writer that keeps up deletes its segment at each batch).
//! - Appends go to the page cache, not synced: that survives the death of
//!   the process, which is what the journal is for; not a power cut (an
//!   fsync per event would cost the caller a disk flush).

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use echo_core::sync::lock;

/// Events per segment: what a restart may resend twice at most, besides
/// the open segment.
pub const SEGMENT_EVENTS: u64 = 4096;

const PREFIX: &str = "journal-";
const SUFFIX: &str = ".ndjson";

/// Whether `name` is a journal segment's file name.
pub fn is_segment(name: &str) -> bool {
    name.strip_prefix(PREFIX)
        .and_then(|rest| rest.strip_suffix(SUFFIX))
        .is_some_and(|seq| !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The open segment, if any.
    file: Option<File>,
    /// The number of the open segment's first event.
    first: u64,
    /// The number the next event gets.
    next: u64,
    /// Closed segments, oldest first: each one's first number and path
    /// (it ends where the next one, or the open one, begins).
    closed: VecDeque<(u64, PathBuf)>,
}

impl Journal {
    /// A journal in `dir`, empty: [`Spool::open`](crate::spool::Spool::open)
    /// has adopted and removed what an earlier process left.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            state: Mutex::new(State::default()),
        }
    }

    /// Appends `line`, then hands its number and the line to `queue`, both
    /// under the journal's lock (so numbers reach the queue in order); what
    /// `queue` answers. A line that cannot be written is handed back.
    pub fn append<R>(
        &self,
        line: Vec<u8>,
        queue: impl FnOnce(u64, Vec<u8>) -> R,
    ) -> Result<R, (io::Error, Vec<u8>)> {
        let mut state = lock(&self.state);
        if state.next - state.first >= SEGMENT_EVENTS
            && let Some(file) = state.file.take()
        {
            drop(file);
            let first = state.first;
            state.closed.push_back((first, self.segment(first)));
        }
        if state.file.is_none() {
            let first = state.next;
            let opened = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.segment(first));
            match opened {
                Ok(file) => state.file = Some(file),
                Err(e) => return Err((e, line)),
            }
            state.first = first;
        }
        if let Some(file) = state.file.as_mut()
            && let Err(e) = file.write_all(&line)
        {
            return Err((e, line));
        }
        let number = state.next;
        state.next += 1;
        Ok(queue(number, line))
    }

    /// Events numbered up to `through` are delivered or spooled: deletes
    /// the segments that hold nothing else.
    pub fn settled(&self, through: u64) {
        let mut state = lock(&self.state);
        let mut removed = Vec::new();
        while let Some((_, path)) = state.closed.front() {
            let end = state.closed.get(1).map_or(state.first, |(first, _)| *first);
            if end > through.saturating_add(1) {
                break;
            }
            removed.push(path.clone());
            state.closed.pop_front();
        }
        if state.closed.is_empty()
            && state.file.is_some()
            && state.next <= through.saturating_add(1)
        {
            state.file = None;
            removed.push(self.segment(state.first));
            state.first = state.next;
        }
        for path in removed {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(error = %e, path = %path.display(), "a settled audit journal segment could not be deleted; a restart will resend its events, recognised as duplicates");
            }
        }
    }

    fn segment(&self, first: u64) -> PathBuf {
        self.dir.join(format!("{PREFIX}{first:020}{SUFFIX}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| is_segment(name))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn events_are_numbered_in_order_and_settled_segments_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let numbers: Vec<u64> = (0..SEGMENT_EVENTS + 2)
            .map(|_| journal.append(b"{}\n".to_vec(), |n, _| n).unwrap())
            .collect();
        assert_eq!(numbers, (0..SEGMENT_EVENTS + 2).collect::<Vec<_>>());
        assert_eq!(segments(dir.path()).len(), 2);
        let first = fs::read(dir.path().join(&segments(dir.path())[0])).unwrap();
        assert_eq!(first.len() as u64, 3 * SEGMENT_EVENTS);

        // The first segment holds 0..SEGMENT_EVENTS: not all settled yet.
        journal.settled(SEGMENT_EVENTS - 2);
        assert_eq!(segments(dir.path()).len(), 2);
        journal.settled(SEGMENT_EVENTS - 1);
        assert_eq!(segments(dir.path()).len(), 1);
        // The open segment goes once all of it is settled; the next event
        // opens a new one, numbered on.
        journal.settled(SEGMENT_EVENTS);
        assert_eq!(segments(dir.path()).len(), 1);
        journal.settled(SEGMENT_EVENTS + 1);
        assert!(segments(dir.path()).is_empty());
        let next = journal.append(b"{}\n".to_vec(), |n, _| n).unwrap();
        assert_eq!(next, SEGMENT_EVENTS + 2);
        assert_eq!(
            segments(dir.path()),
            [format!("journal-{:020}.ndjson", SEGMENT_EVENTS + 2)]
        );
    }

    #[test]
    fn segment_names_are_recognised() {
        assert!(is_segment("journal-00000000000000000042.ndjson"));
        assert!(!is_segment("journal-.ndjson"));
        assert!(!is_segment("journal-4x.ndjson"));
        assert!(!is_segment("00000000000000000042-3.ndjson"));
    }
}
