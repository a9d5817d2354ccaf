//! Where [`AuditSink::record`](echo_core::audit::AuditSink::record) puts
//! events the writer's queue has no room for: a file in the spool directory,
//! appended to by the recording thread and adopted whole into the spool by
//! the writer's task. A burst of security events larger than the queue then
//! costs disk, within the spool's limit, instead of the events.
//!
//! Order: once an event has gone to the overflow file, every later one goes
//! there too until the task has spooled the queue's events (which came
//! before) and then adopted the file, so events a thread records stay in the
//! order it recorded them.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use echo_core::sync::lock;
use tokio::sync::Notify;

use crate::spool::{ADOPTING_FILE, OVERFLOW_FILE};

#[derive(Debug)]
pub struct Overflow {
    path: PathBuf,
    adopting: PathBuf,
    state: Mutex<State>,
    /// Set while the file holds events: later events go there too.
    active: AtomicBool,
    /// Wakes the task when the file starts to fill.
    pub notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    file: Option<File>,
    events: u64,
    bytes: u64,
}

/// Why an event was not written to the overflow file.
#[derive(Debug)]
pub enum OverflowError {
    /// The spool's limit would be passed.
    Full {
        used: u64,
        limit: u64,
    },
    Io(io::Error),
}

impl Overflow {
    pub fn new(spool_dir: &Path) -> Self {
        Self {
            path: spool_dir.join(OVERFLOW_FILE),
            adopting: spool_dir.join(ADOPTING_FILE),
            state: Mutex::new(State::default()),
            active: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Whether events are going to the file (so the next one must too).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Appends one NDJSON line, unless `spooled` bytes already on disk plus
    /// the file would pass `limit`. A write to the page cache, not synced:
    /// adoption syncs the file, and a crash before that loses at most what
    /// the queue would have held in memory anyway.
    pub fn append(&self, line: &[u8], spooled: u64, limit: u64) -> Result<(), OverflowError> {
        let mut state = lock(&self.state);
        let used = spooled.saturating_add(state.bytes);
        if used.saturating_add(line.len() as u64) > limit {
            return Err(OverflowError::Full { used, limit });
        }
        if state.file.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(OverflowError::Io)?;
            state.file = Some(file);
        }
        if let Some(file) = state.file.as_mut() {
            file.write_all(line).map_err(OverflowError::Io)?;
        }
        state.events += 1;
        state.bytes += line.len() as u64;
        if !self.active.swap(true, Ordering::AcqRel) {
            self.notify.notify_one();
        }
        Ok(())
    }

    /// Bytes written to the file since it was last taken.
    pub fn bytes(&self) -> u64 {
        lock(&self.state).bytes
    }

    /// Hands the file over for adoption: renames it aside and starts afresh.
    /// Returns its path and event count, `None` if it holds nothing. Callers
    /// spool everything recorded before it first.
    ///
    /// Fails, keeping the file as it is (it fills on, and the next start
    /// adopts it), while an earlier adoption's file is still in the way.
    pub fn take(&self) -> io::Result<Option<(PathBuf, u64)>> {
        let mut state = lock(&self.state);
        if state.events == 0 {
            self.active.store(false, Ordering::Release);
            return Ok(None);
        }
        if self.adopting.exists() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is still being adopted", self.adopting.display()),
            ));
        }
        state.file = None;
        std::fs::rename(&self.path, &self.adopting)?;
        let events = std::mem::take(&mut *state).events;
        self.active.store(false, Ordering::Release);
        Ok(Some((self.adopting.clone(), events)))
    }
}
