//! The disk queue: batches the service has not acknowledged yet.
//!
//! One file per batch, NDJSON, named `{seq:020}-{events}.ndjson`. The
//! sequence number is zero-padded to the width of `u64::MAX`, so the
//! lexical order of names is the order batches were spooled in, and the
//! event count in the name lets a restarted process know how many events
//! wait without reading them.
//!
//! A file is written under a temporary name (`.tmp-` and the final name),
//! fsync'ed, renamed, and the directory fsync'ed: a reader never sees a
//! half-written batch, and after a crash a spooled batch is either there
//! whole or, if the crash came before the rename, found under its temporary
//! name and kept only if every line is a complete JSON object.
//!
//! Events the service refuses for good (400/413) even alone, once the batch
//! they came in has been halved around them (see [`crate::split`]), are
//! written to `poison/`, one per file, numbered from the same sequence;
//! they are never retried, only kept for an operator. They count against
//! the spool's byte limit like batches do (a writer sending large bad events
//! would otherwise fill the disk through `poison/`); the limit counts them
//! afresh from the directory whenever it is reached, so an operator who
//! clears `poison/` frees the space at once.
//!
//! Events that found the writer's queue full are appended by
//! [`AuditSink::record`](echo_core::audit::AuditSink::record) to
//! [`OVERFLOW_FILE`] and adopted whole as the next batch
//! ([`Spool::adopt_overflow`]); one left behind by a crash is adopted at the
//! next [`Spool::open`], its complete lines only.
//!
//! A spool directory belongs to one writer at a time: [`Spool::open`] takes
//! an exclusive advisory lock on its `.lock` file, held until the spool is
//! dropped. Two writers sharing a directory would send, delete and salvage
//! each other's files.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::journal;

/// Subdirectory holding the events the service refused for good.
pub const POISON_DIR: &str = "poison";
/// Where events go while the writer's queue is full (see the crate docs).
pub const OVERFLOW_FILE: &str = "overflow.ndjson";
/// The overflow file while it is being adopted into the spool.
pub const ADOPTING_FILE: &str = ".overflow-adopting";
/// Locked by the writer that owns the directory. Left in place when it is
/// released: deleting it would race with a writer opening it.
const LOCK_FILE: &str = ".lock";
/// Prefix of a batch being written; never read as a batch.
const TMP_PREFIX: &str = ".tmp-";
const SUFFIX: &str = ".ndjson";
/// Digits of `u64::MAX`, so every sequence number has the same width.
const SEQ_WIDTH: usize = 20;

/// The name of the spool file for batch `seq` of `events` events.
pub fn file_name(seq: u64, events: u64) -> String {
    format!("{seq:0SEQ_WIDTH$}-{events}{SUFFIX}")
}

/// `(seq, events)` of a spool file name; `None` for anything else (the
/// poison directory, the lock file, temporary files, files an operator left
/// there).
pub fn parse_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(SUFFIX)?;
    let (seq, events) = stem.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if seq.len() != SEQ_WIDTH || !digits(seq) || !digits(events) {
        return None;
    }
    Some((seq.parse().ok()?, events.parse().ok()?))
}

/// One spooled batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolFile {
    pub seq: u64,
    pub events: u64,
    pub bytes: u64,
}

impl SpoolFile {
    pub fn name(&self) -> String {
        file_name(self.seq, self.events)
    }
}

/// Why a batch was not spooled.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// Writing it would take the spool past its limit.
    #[error("spool full: {used} of {limit} bytes used, batch needs {needed}")]
    Full { used: u64, limit: u64, needed: u64 },
    #[error("spool write failed: {0}")]
    Io(#[from] io::Error),
}

/// The spool directory and an index of its batches, oldest first.
///
/// Only the writer's background task touches it, so the index is plain
/// data; file I/O runs on Tokio's blocking pool so an fsync never stalls the
/// runtime.
#[derive(Debug)]
pub struct Spool {
    /// Holds the directory's lock for as long as the spool lives.
    _lock: File,
    dir: PathBuf,
    max_bytes: u64,
    files: VecDeque<SpoolFile>,
    bytes: u64,
    events: u64,
    /// Bytes in `poison/`, which count against `max_bytes` too.
    poison_bytes: u64,
    /// Bytes of the overflow file not yet adopted, which share the limit.
    overflow_bytes: u64,
    next_seq: u64,
}

impl Spool {
    /// Opens (creating) `dir`, locks it, and indexes the batches an earlier
    /// process left there.
    ///
    /// Fails with [`io::ErrorKind::ResourceBusy`] if another spool, in this
    /// process or another, holds the directory.
    pub fn open(dir: &Path, max_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        // Before the scan: salvaging would delete the temporary files of a
        // writer still running.
        let lock = lock(dir)?;
        let mut files = Vec::new();
        let mut journal = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if journal::is_segment(&name) {
                journal.push(name);
                continue;
            }
            let name = match name.strip_prefix(TMP_PREFIX) {
                Some(final_name) => match salvage(dir, &name, final_name) {
                    Some(final_name) => final_name,
                    None => continue,
                },
                None => name,
            };
            if let Some((seq, events)) = parse_file_name(&name) {
                let bytes = fs::metadata(dir.join(&name))?.len();
                files.push(SpoolFile { seq, events, bytes });
            }
        }
        files.sort_by_key(|f| f.seq);
        // Poisoned events are numbered from the same sequence, and a new
        // poison file must not replace an old one.
        let poisoned_max = fs::read_dir(dir.join(POISON_DIR))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str().and_then(parse_file_name))
            .map(|(seq, _)| seq)
            .max();
        let next_seq = files
            .last()
            .map(|f| f.seq)
            .max(poisoned_max)
            .map_or(0, |s| s.saturating_add(1));
        let mut spool = Self {
            _lock: lock,
            dir: dir.to_owned(),
            max_bytes,
            bytes: files.iter().map(|f| f.bytes).sum(),
            events: files.iter().map(|f| f.events).sum(),
            poison_bytes: poison_bytes(dir),
            overflow_bytes: 0,
            files: files.into(),
            next_seq,
        };
        // Events a crashed writer had journaled (some of them delivered
        // already: the service keeps one of each), then those it had put in
        // overflow, newest of all, in the order they were written.
        journal.sort();
        for name in journal {
            spool.salvage(&dir.join(name), "journal")?;
        }
        for name in [ADOPTING_FILE, OVERFLOW_FILE] {
            let path = dir.join(name);
            if path.exists() {
                spool.salvage(&path, "overflow file")?;
            }
        }
        Ok(spool)
    }

    /// Adopts a journal segment or an overflow file (`what`) a stopped
    /// writer left: its complete lines become the newest batch.
    fn salvage(&mut self, path: &Path, what: &str) -> io::Result<()> {
        let data = fs::read(path)?;
        let mut kept = Vec::with_capacity(data.len());
        let mut events = 0;
        for line in data.split_inclusive(|&b| b == b'\n') {
            let whole = line.ends_with(b"\n")
                && serde_json::from_slice::<serde_json::Value>(line).is_ok_and(|v| v.is_object());
            if whole {
                kept.extend_from_slice(line);
                events += 1;
            }
        }
        if events > 0 {
            let file = SpoolFile {
                seq: self.take_seq(),
                events,
                bytes: kept.len() as u64,
            };
            write_durably(&self.dir, &file.name(), &kept)?;
            self.add(file);
            tracing::warn!(
                events,
                "recovered audit events a stopped writer had put in its {what}"
            );
        }
        fs::remove_file(path)?;
        sync_dir(&self.dir)
    }

    /// Makes the overflow file at `path` (renamed there from
    /// [`OVERFLOW_FILE`] by the writer, who no longer appends to it) the
    /// newest batch, durably: fsync, rename, directory fsync. It is on disk
    /// already and counted against the limit when written, so it is not
    /// refused here.
    pub async fn adopt_overflow(&mut self, path: PathBuf, events: u64) -> io::Result<()> {
        let file = SpoolFile {
            seq: self.take_seq(),
            events,
            bytes: fs::metadata(&path)?.len(),
        };
        let (dir, name) = (self.dir.clone(), file.name());
        blocking(move || {
            File::open(&path)?.sync_all()?;
            fs::rename(&path, dir.join(name))?;
            sync_dir(&dir)
        })
        .await?;
        self.add(file);
        Ok(())
    }

    fn add(&mut self, file: SpoolFile) {
        self.bytes += file.bytes;
        self.events += file.events;
        self.files.push_back(file);
    }

    /// Bytes the limit counts: the batches and the poisoned events (the
    /// overflow file's are added by [`room_for`](Self::room_for)).
    pub fn used(&self) -> u64 {
        self.bytes.saturating_add(self.poison_bytes)
    }

    /// Tells the spool how large the overflow file waiting for adoption is.
    pub fn set_overflow_bytes(&mut self, bytes: u64) {
        self.overflow_bytes = bytes;
    }

    /// Whether `needed` more bytes fit; when they do not, the poison
    /// directory is counted afresh first (an operator may have cleared it).
    async fn room_for(&mut self, needed: u64) -> Result<(), PushError> {
        let used = |s: &Self| s.used().saturating_add(s.overflow_bytes);
        if used(self).saturating_add(needed) > self.max_bytes {
            let dir = self.dir.clone();
            self.poison_bytes = blocking(move || Ok(poison_bytes(&dir))).await?;
        }
        if used(self).saturating_add(needed) > self.max_bytes {
            return Err(PushError::Full {
                used: used(self),
                limit: self.max_bytes,
                needed,
            });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Bytes of all spooled batches.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events in all spooled batches.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The batch to resend next.
    pub fn oldest(&self) -> Option<&SpoolFile> {
        self.files.front()
    }

    pub fn path(&self, file: &SpoolFile) -> PathBuf {
        self.dir.join(file.name())
    }

    /// Writes a batch durably at the end of the queue, unless that would
    /// exceed the size limit.
    pub async fn push(&mut self, ndjson: Vec<u8>, events: u64) -> Result<(), PushError> {
        let needed = ndjson.len() as u64;
        self.room_for(needed).await?;
        let file = SpoolFile {
            seq: self.take_seq(),
            events,
            bytes: needed,
        };
        let (dir, name) = (self.dir.clone(), file.name());
        blocking(move || write_durably(&dir, &name, &ndjson)).await?;
        self.add(file);
        Ok(())
    }

    /// Deletes a batch the service acknowledged. It leaves the index even if
    /// the delete fails: resending it later would only be a duplicate,
    /// which the service recognises by the events' ids.
    pub async fn remove(&mut self, seq: u64) -> io::Result<()> {
        let Some(file) = self.forget(seq) else {
            return Ok(());
        };
        let path = self.path(&file);
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    /// Writes one event the service refused for good (its NDJSON line) into
    /// `poison/`, in a file of its own, unless that would pass the limit.
    pub async fn poison_event(&mut self, ndjson: Vec<u8>) -> Result<(), PushError> {
        let needed = ndjson.len() as u64;
        self.room_for(needed).await?;
        let name = file_name(self.take_seq(), 1);
        let poison = self.dir.join(POISON_DIR);
        blocking(move || {
            fs::create_dir_all(&poison)?;
            write_durably(&poison, &name, &ndjson)
        })
        .await?;
        self.poison_bytes += needed;
        Ok(())
    }

    /// Drops a batch from the index (its file is gone or being moved).
    pub fn forget(&mut self, seq: u64) -> Option<SpoolFile> {
        let index = self.files.iter().position(|f| f.seq == seq)?;
        let file = self.files.remove(index)?;
        self.bytes -= file.bytes;
        self.events -= file.events;
        Some(file)
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.saturating_add(1);
        seq
    }
}

/// Bytes of the poisoned events in `dir`'s poison directory.
fn poison_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir.join(POISON_DIR))
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            parse_file_name(e.file_name().to_str()?)?;
            Some(e.metadata().ok()?.len())
        })
        .sum()
}

/// Takes `dir`'s lock without waiting: a second writer is a deployment
/// mistake to report, not a turn to wait for.
fn lock(dir: &Path) -> io::Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::ResourceBusy,
            format!(
                "audit spool directory {} is held by another audit writer (lock {}): each writer needs a spool directory of its own",
                dir.display(),
                path.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(io::Error::new(
            e.kind(),
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

/// Runs blocking file I/O off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(io::Error::other)?
}

/// Temp file, fsync, rename, directory fsync: the file appears whole or not
/// at all, and survives a power cut once this returns.
fn write_durably(dir: &Path, name: &str, data: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or delete in `dir` durable.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are durable enough
/// once the file itself is synced.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}

/// A temporary file from a process that died before renaming it: kept under
/// its final name if it holds the whole batch (every line a JSON object, the
/// count its name says), else deleted. Returns the final name if kept.
fn salvage(dir: &Path, tmp_name: &str, final_name: &str) -> Option<String> {
    let tmp = dir.join(tmp_name);
    let complete = parse_file_name(final_name).is_some_and(|(_, events)| {
        fs::read(&tmp).is_ok_and(|data| {
            let lines: Vec<&[u8]> = data
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            data.ends_with(b"\n")
                && lines.len() as u64 == events
                && lines.iter().all(|l| {
                    serde_json::from_slice::<serde_json::Value>(l).is_ok_and(|v| v.is_object())
                })
        })
    });
    if complete && fs::rename(&tmp, dir.join(final_name)).is_ok() {
        tracing::warn!(
            file = final_name,
            "recovered an audit batch whose spooling was interrupted"
        );
        return Some(final_name.to_owned());
    }
    tracing::warn!(
        file = tmp_name,
        "removing a partially written audit spool file left by an interrupted process"
    );
    let _ = fs::remove_file(&tmp);
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_lexically_in_sequence_order() {
        let seqs = [
            0,
            1,
            9,
            10,
            99,
            100,
            12_345,
            1 << 40,
            u64::MAX - 1,
            u64::MAX,
        ];
        let names: Vec<String> = seqs.iter().map(|&s| file_name(s, 100)).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names.iter().all(|n| n.len() == names[0].len()));
        // The event count does not disturb the order: the sequence comes first.
        assert!(file_name(1, 999) < file_name(2, 1));
    }

    #[test]
    fn names_round_trip_and_strangers_are_ignored() {
        assert_eq!(file_name(42, 7), "00000000000000000042-7.ndjson");
        for (seq, events) in [(0, 1), (42, 7), (u64::MAX, 1000)] {
            assert_eq!(
                parse_file_name(&file_name(seq, events)),
                Some((seq, events))
            );
        }
        for name in [
            "poison",
            ".lock",
            ".tmp-00000000000000000042-7.ndjson",
            "42-7.ndjson",
            "00000000000000000042-7.json",
            "00000000000000000042-.ndjson",
            "0000000000000000004x-7.ndjson",
            "00000000000000000042-7.ndjson.bak",
            "99999999999999999999-1.ndjson", // past u64::MAX
        ] {
            assert_eq!(parse_file_name(name), None, "{name}");
        }
    }

    #[tokio::test]
    async fn push_remove_and_reopen_keep_order_and_totals() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert!(spool.is_empty());
        for i in 0..12u64 {
            spool
                .push(format!("{{\"n\":{i}}}\n").into_bytes(), 1)
                .await
                .unwrap();
        }
        assert_eq!((spool.events(), spool.bytes()), (12, 8 * 10 + 9 * 2));
        spool.remove(0).await.unwrap();
        assert_eq!(spool.oldest().unwrap().seq, 1);
        let bytes = spool.bytes();
        drop(spool);

        let reopened = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(reopened.events(), 11);
        assert_eq!(reopened.bytes(), bytes);
        let seqs: Vec<u64> = reopened.files.iter().map(|f| f.seq).collect();
        assert_eq!(seqs, (1..12).collect::<Vec<_>>());
        assert_eq!(reopened.next_seq, 12);
        let oldest = reopened.oldest().unwrap();
        assert_eq!(fs::read(reopened.path(oldest)).unwrap(), b"{\"n\":1}\n");
    }

    #[tokio::test]
    async fn the_limit_is_never_exceeded() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 25).unwrap();
        spool.push(vec![b'x'; 20], 1).await.unwrap();
        assert!(matches!(
            spool.push(vec![b'x'; 6], 1).await,
            Err(PushError::Full {
                used: 20,
                limit: 25,
                needed: 6
            })
        ));
        spool.push(vec![b'x'; 5], 1).await.unwrap();
        assert_eq!(spool.bytes(), 25);
        let batches = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                parse_file_name(e.as_ref().unwrap().file_name().to_str().unwrap()).is_some()
            })
            .count();
        assert_eq!(batches, 2);
    }

    #[tokio::test]
    async fn poisoned_events_are_kept_aside_and_their_numbers_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 1 << 20).unwrap();
        spool.push(b"{}\n{}\n".to_vec(), 2).await.unwrap();
        spool.poison_event(b"{\"a\":1}\n".to_vec()).await.unwrap();
        spool.poison_event(b"{\"b\":2}\n".to_vec()).await.unwrap();
        spool.remove(0).await.unwrap();
        assert!(spool.is_empty());
        let mut poisoned: Vec<String> = fs::read_dir(dir.path().join(POISON_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        poisoned.sort();
        assert_eq!(poisoned, vec![file_name(1, 1), file_name(2, 1)]);
        let kept = dir.path().join(POISON_DIR).join(file_name(2, 1));
        assert_eq!(fs::read(kept).unwrap(), b"{\"b\":2}\n");
        drop(spool);
        // A restarted process does not reuse a poisoned event's number.
        assert_eq!(Spool::open(dir.path(), 1 << 20).unwrap().next_seq, 3);
    }

    #[tokio::test]
    async fn poison_counts_against_the_limit_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), 25).unwrap();
        spool.poison_event(vec![b'x'; 20]).await.unwrap();
        assert!(matches!(
            spool.push(vec![b'x'; 6], 1).await,
            Err(PushError::Full { used: 20, .. })
        ));
        assert!(spool.poison_event(vec![b'x'; 6]).await.is_err());
        drop(spool);
        // Counted again after a restart; cleared by an operator, freed.
        let mut spool = Spool::open(dir.path(), 25).unwrap();
        assert_eq!(spool.used(), 20);
        fs::remove_dir_all(dir.path().join(POISON_DIR)).unwrap();
        spool.push(vec![b'x'; 25], 1).await.unwrap();
    }

    #[test]
    fn an_overflow_file_left_by_a_crash_becomes_the_newest_batch() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(file_name(3, 1)), "{\"a\":1}\n").unwrap();
        fs::write(
            dir.path().join(OVERFLOW_FILE),
            "{\"b\":2}\n{\"c\":3}\n{\"d\":",
        )
        .unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.events(), 3);
        let newest = spool.files.back().unwrap();
        assert_eq!((newest.seq, newest.events), (4, 2));
        assert_eq!(
            fs::read(spool.path(newest)).unwrap(),
            b"{\"b\":2}\n{\"c\":3}\n"
        );
        assert!(!dir.path().join(OVERFLOW_FILE).exists());
    }

    #[test]
    fn interrupted_writes_are_salvaged_only_when_whole() {
        let dir = tempfile::tempdir().unwrap();
        let whole = file_name(3, 2);
        let torn = file_name(4, 2);
        fs::write(
            dir.path().join(format!(".tmp-{whole}")),
            "{\"a\":1}\n{\"b\":2}\n",
        )
        .unwrap();
        fs::write(
            dir.path().join(format!(".tmp-{torn}")),
            "{\"a\":1}\n{\"b\":",
        )
        .unwrap();
        fs::write(dir.path().join("README"), "not a batch").unwrap();
        let spool = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(spool.files.len(), 1);
        assert_eq!(spool.oldest().unwrap().name(), whole);
        assert_eq!(spool.events(), 2);
        assert!(!dir.path().join(format!(".tmp-{torn}")).exists());
        assert!(dir.path().join("README").exists());
        assert_eq!(spool.next_seq, 4);
    }
}
