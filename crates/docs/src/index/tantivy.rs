//! The tantivy search backend (the default): every document's chunks in one
//! tantivy index in a local directory, searched with BM25 and always
//! filtered to one owner. One process only may open a directory (tantivy's
//! writer lock), so this backend serves one docs replica.
//!
//! One document = many index entries (one per [`Chunk`]), each carrying the
//! document's id (to replace or remove them all at once), its owner (a raw
//! term: the MUST filter of every search, so another user's chunks can never
//! come back) and its name (for citations).
//!
//! Writes are group-committed: [`Tantivy::replace`] and
//! [`Tantivy::remove`] put their operations in a pending list and wait
//! for the commit that carries them. When no commit is running, one waiter
//! becomes the committer: it takes the whole list (its own operations and
//! everyone else's), applies and commits it, reloads the reader and wakes
//! the others. Operations keep arriving in the list while a commit runs, so
//! under load each commit carries the work of every caller that came during
//! the previous one, instead of each caller paying a commit. The committer
//! also holds the list open for [`COMMIT_WINDOW`] before it takes it, so
//! callers that arrive just after an idle moment share a commit too: a
//! commit's fixed cost (a new segment, its files, merges of small segments,
//! the reader's reload) is most of the cost of indexing a small document.
//! Every call returns once its changes are committed and the reader
//! reloaded: a search right after sees them.
//!
//! The functions block (tantivy is synchronous): [`TantivyIndex`], the
//! [`SearchIndex`] of this backend, runs them in `spawn_blocking`.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use echo_core::sync::{lock, wait};
use tantivy::collector::{Count, TopDocs};
use tantivy::directory::MmapDirectory;
use tantivy::indexer::UserOperation;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use echo_text::Chunk;

use super::{Passage, SearchIndex};
use crate::{DocsError, Result, blocking};

/// The name the text analyzer is registered under. Tokenizers are not stored
/// in the index, so every open registers it again.
const TEXT_ANALYZER: &str = "echo_en";

/// Memory the writer may buffer before it flushes a segment on its own.
const WRITER_MEMORY_BYTES: usize = 50_000_000;

/// One indexing thread: the machines are small and documents are indexed a
/// few chunks at a time, so more threads would only mean more segments.
const WRITER_THREADS: usize = 1;

/// How long a committer waits for more callers before it takes the pending
/// list: a document becomes searchable up to this much later, and under
/// load each commit carries several times more documents.
pub const COMMIT_WINDOW: Duration = Duration::from_millis(20);

/// The fields of the index's schema.
#[derive(Clone, Copy)]
struct Fields {
    document_id: Field,
    owner: Field,
    name: Field,
    position: Field,
    start: Field,
    text: Field,
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut builder = Schema::builder();
        let text_options = TextOptions::default()
            .set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer(TEXT_ANALYZER)
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions),
            )
            .set_stored();
        let fields = Fields {
            document_id: builder.add_text_field("document_id", STRING | STORED),
            owner: builder.add_text_field("owner", STRING),
            name: builder.add_text_field("name", STORED),
            position: builder.add_u64_field("position", STORED),
            start: builder.add_u64_field("start", STORED),
            text: builder.add_text_field("text", text_options),
        };
        (builder.build(), fields)
    }
}

/// English text analysis shared by the index and the extractive answers:
/// words, lowercased, stop words dropped, stemmed ("parsers" → "parser").
pub(crate) fn text_analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder
            .filter(stop_words)
            .filter(Stemmer::new(Language::English))
            .build(),
        // tantivy always ships English stop words; without them we only lose
        // the filter, not correctness.
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// The terms `text` is indexed under (lowercased, stemmed, no stop words).
pub(crate) fn analyzed_terms(text: &str) -> Vec<String> {
    let mut analyzer = text_analyzer();
    let mut stream = analyzer.token_stream(text);
    let mut terms = Vec::new();
    while stream.advance() {
        terms.push(stream.token().text.clone());
    }
    terms
}

/// Group commit state: the operations waiting for a commit and the
/// outcomes of the commit attempts. (Our own attempt numbers, not tantivy's
/// opstamps: those restart after a rollback.)
#[derive(Default)]
struct Commits {
    /// Operations queued since the running (or last) commit took the list.
    pending: Vec<UserOperation>,
    /// The number of the attempt that will carry `pending`.
    next_attempt: u64,
    /// Attempts `0..finished` are over.
    finished: u64,
    /// The attempts among them that failed (their operations were rolled
    /// back). Disk failures only, so this stays tiny.
    failed: Vec<u64>,
    /// Whether a committer is at work (then `finished + 1 == next_attempt`).
    committing: bool,
}

/// The tantivy backend as a [`SearchIndex`].
#[derive(Debug, Clone)]
pub struct TantivyIndex(Arc<Tantivy>);

impl TantivyIndex {
    /// The index in `dir` (see [`Tantivy::open`]).
    pub fn open(dir: &Path) -> Result<Self> {
        Tantivy::open(dir).map(|index| Self(Arc::new(index)))
    }

    /// An index held in memory only (tests, benchmarks).
    pub fn in_memory() -> Result<Self> {
        Tantivy::in_memory().map(|index| Self(Arc::new(index)))
    }
}

#[async_trait]
impl SearchIndex for TantivyIndex {
    async fn replace(
        &self,
        document_id: &str,
        owner: &str,
        name: &str,
        chunks: Vec<Chunk>,
    ) -> Result<()> {
        let index = Arc::clone(&self.0);
        let (id, owner, name) = (document_id.to_owned(), owner.to_owned(), name.to_owned());
        blocking(move || index.replace(&id, &owner, &name, &chunks)).await
    }

    async fn remove(&self, document_id: &str) -> Result<()> {
        let index = Arc::clone(&self.0);
        let id = document_id.to_owned();
        blocking(move || index.remove(&id)).await
    }

    async fn search(&self, owner: &str, question: &str, limit: usize) -> Result<Vec<Passage>> {
        let index = Arc::clone(&self.0);
        let (owner, question) = (owner.to_owned(), question.to_owned());
        blocking(move || index.search(&owner, &question, limit)).await
    }

    async fn chunk_count(&self, document_id: &str) -> Result<u64> {
        let index = Arc::clone(&self.0);
        let id = document_id.to_owned();
        blocking(move || index.chunk_count(&id)).await
    }
}

/// The search index over every document's chunks (blocking).
pub struct Tantivy {
    fields: Fields,
    /// Used by the committer only (one at a time).
    writer: Mutex<IndexWriter>,
    commits: Mutex<Commits>,
    /// Signalled when a commit attempt is over.
    commit_finished: Condvar,
    commit_window: Duration,
    reader: IndexReader,
}

impl std::fmt::Debug for Tantivy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tantivy").finish_non_exhaustive()
    }
}

fn index_error(context: &str) -> impl FnOnce(tantivy::TantivyError) -> DocsError + '_ {
    move |error| DocsError::Index(format!("{context}: {error}"))
}

impl Tantivy {
    /// Opens the index in `dir`, creating the directory and the index when
    /// missing. Only one `SearchIndex` may be open per directory (tantivy's
    /// writer lock): a second open fails.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|error| {
            DocsError::Index(format!("cannot create {}: {error}", dir.display()))
        })?;
        let directory = MmapDirectory::open(dir)
            .map_err(|error| DocsError::Index(format!("cannot open {}: {error}", dir.display())))?;
        let (schema, fields) = Fields::schema();
        let index = Index::open_or_create(directory, schema)
            .map_err(index_error("cannot open the search index"))?;
        Self::with_index(index, fields)
    }

    /// An index held in memory only (tests, benchmarks).
    pub fn in_memory() -> Result<Self> {
        let (schema, fields) = Fields::schema();
        Self::with_index(Index::create_in_ram(schema), fields)
    }

    fn with_index(index: Index, fields: Fields) -> Result<Self> {
        index.tokenizers().register(TEXT_ANALYZER, text_analyzer());
        let writer = index
            .writer_with_num_threads(WRITER_THREADS, WRITER_MEMORY_BYTES)
            .map_err(index_error("cannot open the index writer"))?;
        // Manual: we reload right after each commit, so a caller's own writes
        // are visible when `replace` returns (no reload lag).
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(index_error("cannot open the index reader"))?;
        Ok(Self {
            fields,
            writer: Mutex::new(writer),
            commits: Mutex::new(Commits::default()),
            commit_finished: Condvar::new(),
            commit_window: COMMIT_WINDOW,
            reader,
        })
    }

    /// Sets how long a committer collects operations before committing
    /// (default [`COMMIT_WINDOW`]; zero commits at once).
    #[cfg(test)]
    fn with_commit_window(mut self, window: Duration) -> Self {
        self.commit_window = window;
        self
    }

    /// Replaces the document's chunks: deletes every chunk indexed for
    /// `document_id`, then adds `chunks` with the given owner and name.
    /// Committed and searchable on return; running it twice indexes once.
    pub fn replace(
        &self,
        document_id: &str,
        owner: &str,
        name: &str,
        chunks: &[Chunk],
    ) -> Result<()> {
        let mut operations = Vec::with_capacity(chunks.len() + 1);
        operations.push(UserOperation::Delete(self.document_term(document_id)));
        for chunk in chunks {
            let mut document = TantivyDocument::default();
            document.add_text(self.fields.document_id, document_id);
            document.add_text(self.fields.owner, owner);
            document.add_text(self.fields.name, name);
            document.add_u64(self.fields.position, u64::from(chunk.position));
            document.add_u64(self.fields.start, chunk.start as u64);
            document.add_text(self.fields.text, &chunk.text);
            operations.push(UserOperation::Add(document));
        }
        self.apply(operations)
    }

    /// Removes every chunk of the document. Committed on return; removing an
    /// unknown document is not an error.
    pub fn remove(&self, document_id: &str) -> Result<()> {
        self.apply(vec![UserOperation::Delete(self.document_term(document_id))])
    }

    /// The `limit` best passages of `owner`'s documents for `question`
    /// (BM25), best first. The question is user text, taken as words: its
    /// analysed terms, any of which matches (no query syntax, so nothing in
    /// it is an error: tantivy's lenient parser still turned `<->:*` into a
    /// query on a field that does not exist, which failed the search); a
    /// question without a searchable word (empty, punctuation, stop words
    /// only) finds nothing.
    pub fn search(&self, owner: &str, question: &str, limit: usize) -> Result<Vec<Passage>> {
        let words: Vec<(Occur, Box<dyn Query>)> = analyzed_terms(question)
            .into_iter()
            .map(|word| {
                let term = Term::from_field_text(self.fields.text, &word);
                let query = TermQuery::new(term, IndexRecordOption::WithFreqs);
                (Occur::Should, Box::new(query) as Box<dyn Query>)
            })
            .collect();
        if limit == 0 || words.is_empty() {
            return Ok(Vec::new());
        }
        let owner_filter = TermQuery::new(
            Term::from_field_text(self.fields.owner, owner),
            IndexRecordOption::Basic,
        );
        // Both MUST: only this owner's chunks can match, whatever the words.
        let query = BooleanQuery::new(vec![
            (Occur::Must, Box::new(owner_filter) as Box<dyn Query>),
            (Occur::Must, Box::new(BooleanQuery::new(words))),
        ]);
        let searcher = self.reader.searcher();
        let top = searcher
            .search(&query, &TopDocs::with_limit(limit).order_by_score())
            .map_err(index_error("search failed"))?;
        let mut passages = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher
                .doc(address)
                .map_err(index_error("cannot read a found chunk"))?;
            passages.push(self.passage(&document, score));
        }
        Ok(passages)
    }

    /// How many chunks are indexed (and committed) for the document.
    pub fn chunk_count(&self, document_id: &str) -> Result<u64> {
        let query = TermQuery::new(self.document_term(document_id), IndexRecordOption::Basic);
        // Count, not the term's doc frequency: that one still counts deleted
        // chunks until their segment is merged.
        let count = self
            .reader
            .searcher()
            .search(&query, &Count)
            .map_err(index_error("count failed"))?;
        Ok(count as u64)
    }

    fn document_term(&self, document_id: &str) -> Term {
        Term::from_field_text(self.fields.document_id, document_id)
    }

    fn passage(&self, document: &TantivyDocument, score: f32) -> Passage {
        let text = |field| {
            document
                .get_first(field)
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let number = |field| {
            document
                .get_first(field)
                .and_then(|value| value.as_u64())
                .unwrap_or_default()
        };
        Passage {
            document_id: text(self.fields.document_id),
            name: text(self.fields.name),
            position: u32::try_from(number(self.fields.position)).unwrap_or(u32::MAX),
            start: usize::try_from(number(self.fields.start)).unwrap_or(usize::MAX),
            text: text(self.fields.text),
            score,
        }
    }

    /// Queues `operations` for the next commit, then returns once that
    /// commit is made (by this caller or another).
    fn apply(&self, operations: Vec<UserOperation>) -> Result<()> {
        let attempt = self.enqueue(operations)?;
        self.wait_for_commit(attempt)
    }

    /// Adds `operations` to the pending list (kept in order: a document's
    /// delete comes before its adds, and all land in one commit); returns
    /// the attempt that will carry them.
    fn enqueue(&self, operations: Vec<UserOperation>) -> Result<u64> {
        let mut commits = lock(&self.commits);
        commits.pending.extend(operations);
        Ok(commits.next_attempt)
    }

    /// Waits until attempt `attempt` is over and returns its outcome; if no
    /// commit is running and the attempt is not made yet, makes it.
    fn wait_for_commit(&self, attempt: u64) -> Result<()> {
        let mut commits = lock(&self.commits);
        loop {
            if commits.finished > attempt {
                return match commits.failed.contains(&attempt) {
                    true => Err(DocsError::Index("commit failed".to_owned())),
                    false => Ok(()),
                };
            }
            if !commits.committing {
                break;
            }
            commits = wait(&self.commit_finished, commits);
        }
        // Not finished and none running: `finished == next_attempt`, and
        // `finished <= attempt <= next_attempt`, so the next attempt is ours.
        commits.committing = true;
        // Ends the attempt even if the commit panics, so waiters never hang.
        let mut attempt_guard = AttemptGuard {
            index: self,
            attempt,
            succeeded: false,
        };
        // The window: operations queued meanwhile still get `next_attempt`,
        // which is this one, and wait for `commit_finished` like any other.
        if !self.commit_window.is_zero() {
            drop(commits);
            std::thread::sleep(self.commit_window);
            // As in `AttemptGuard`: the attempt must be taken whatever
            // panicked elsewhere, or `next_attempt` would fall behind.
            commits = lock(&self.commits);
        }
        let operations = std::mem::take(&mut commits.pending);
        commits.next_attempt += 1;
        drop(commits);
        self.commit_and_reload(operations)?;
        attempt_guard.succeeded = true;
        Ok(())
    }

    /// Applies `operations` (one batch, contiguous opstamps), commits and
    /// reloads the reader.
    fn commit_and_reload(&self, operations: Vec<UserOperation>) -> Result<()> {
        {
            // A writer a panic left half-way is rolled back below when its
            // commit fails.
            let mut writer = lock(&self.writer);
            let committed = writer.run(operations).and_then(|_| writer.commit());
            if let Err(error) = committed {
                // Drop the half-committed batch so the next attempt starts
                // clean; its callers get the error and their jobs retry.
                let _ = writer.rollback();
                return Err(DocsError::Index(format!("commit failed: {error}")));
            }
        }
        // A failed reload fails the attempt too (its changes are committed
        // but not yet visible): a retried `replace` is harmless.
        self.reader
            .reload()
            .map_err(index_error("cannot reload the index reader"))
    }
}

/// Records the end of a commit attempt (success or not) and wakes the
/// callers waiting for it.
struct AttemptGuard<'a> {
    index: &'a Tantivy,
    attempt: u64,
    succeeded: bool,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        // The state stays consistent whatever panicked: recover it.
        let mut commits = lock(&self.index.commits);
        commits.finished += 1;
        if !self.succeeded {
            commits.failed.push(self.attempt);
        }
        commits.committing = false;
        drop(commits);
        self.index.commit_finished.notify_all();
    }
}

/// What every backend does is tested by the backends' shared suite
/// (`tests/it/search_backends.rs`); these are tantivy's own: group commits
/// and its directory.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use echo_text::chunk_text;

    fn chunks(texts: &[&str]) -> Vec<Chunk> {
        let mut start = 0;
        texts
            .iter()
            .enumerate()
            .map(|(position, text)| {
                let chunk = Chunk {
                    position: position as u32,
                    start,
                    text: (*text).to_owned(),
                };
                start += text.chars().count() + 1;
                chunk
            })
            .collect()
    }

    #[test]
    fn concurrent_replaces_are_all_visible_on_return() {
        let index = Arc::new(Tantivy::in_memory().unwrap());
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let index = Arc::clone(&index);
                std::thread::spawn(move || {
                    for n in 0..10 {
                        let id = format!("doc-{thread}-{n}");
                        let word = format!("token{thread}x{n}");
                        let text = format!("shared words and {word} in a sentence.");
                        index
                            .replace(&id, "alice", "c.txt", &chunk_text(&text, 800))
                            .unwrap();
                        // Visible at once to the caller, no reload lag.
                        let found = index.search("alice", &word, 5).unwrap();
                        assert_eq!(found.len(), 1, "{word}");
                        assert_eq!(found[0].document_id, id);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        for thread in 0..8 {
            for n in 0..10 {
                assert_eq!(index.chunk_count(&format!("doc-{thread}-{n}")).unwrap(), 1);
            }
        }
        assert_eq!(index.search("alice", "shared", 100).unwrap().len(), 80);
    }

    #[test]
    fn callers_queued_before_a_commit_share_it() {
        let index = Tantivy::in_memory().unwrap();
        let add = |document_id: &str| {
            let mut document = TantivyDocument::default();
            document.add_text(index.fields.document_id, document_id);
            document.add_text(index.fields.owner, "alice");
            document.add_text(index.fields.text, "shared commit");
            vec![UserOperation::Add(document)]
        };
        let finished = || index.commits.lock().unwrap().finished;
        // Two callers queue their operations (what `apply` does first)...
        let first = index.enqueue(add("doc-1")).unwrap();
        let second = index.enqueue(add("doc-2")).unwrap();
        assert_eq!(first, second);
        // ...the first one to wait commits both; the second finds it done.
        index.wait_for_commit(first).unwrap();
        assert_eq!(finished(), 1);
        index.wait_for_commit(second).unwrap();
        assert_eq!(finished(), 1);
        assert_eq!(index.search("alice", "shared", 5).unwrap().len(), 2);
        // A later caller needs a new attempt.
        index.remove("doc-1").unwrap();
        assert_eq!(finished(), 2);
    }

    #[test]
    fn callers_within_the_commit_window_share_a_commit() {
        let window = Duration::from_millis(300);
        let index = Arc::new(Tantivy::in_memory().unwrap().with_commit_window(window));
        let first = {
            let index = Arc::clone(&index);
            std::thread::spawn(move || {
                index
                    .replace("doc-1", "alice", "a.txt", &chunks(&["window one"]))
                    .unwrap()
            })
        };
        // The first caller's commit is open for 300 ms; the second arrives
        // well inside it and rides along.
        std::thread::sleep(window / 6);
        index
            .replace("doc-2", "alice", "b.txt", &chunks(&["window two"]))
            .unwrap();
        first.join().unwrap();
        assert_eq!(index.commits.lock().unwrap().finished, 1);
        assert_eq!(index.search("alice", "window", 5).unwrap().len(), 2);
        // Without a window the same two callers pay a commit each.
        let eager = Tantivy::in_memory()
            .unwrap()
            .with_commit_window(Duration::ZERO);
        eager
            .replace("doc-1", "alice", "a.txt", &chunks(&["window one"]))
            .unwrap();
        eager
            .replace("doc-2", "alice", "b.txt", &chunks(&["window two"]))
            .unwrap();
        assert_eq!(eager.commits.lock().unwrap().finished, 2);
    }

    #[test]
    fn reopening_a_directory_keeps_the_chunks() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = Tantivy::open(&dir.path().join("index")).unwrap();
            index
                .replace("doc-1", "alice", "a.txt", &chunks(&["persistent words"]))
                .unwrap();
            // A second writer on the same directory is refused, not corrupting.
            assert!(Tantivy::open(&dir.path().join("index")).is_err());
        }
        let index = Tantivy::open(&dir.path().join("index")).unwrap();
        assert_eq!(index.chunk_count("doc-1").unwrap(), 1);
        assert_eq!(index.search("alice", "persistent", 5).unwrap().len(), 1);
    }
}
