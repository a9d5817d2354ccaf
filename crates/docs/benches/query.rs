//! Search latency: `SearchIndex::search(owner, question, 5)` over an index
//! of 10,000 small synthetic documents (3 chunks each, 20 owners), on each
//! backend: tantivy on disk in a temporary directory, and PostgreSQL (the
//! machine's, or `ECHO_TEST_POSTGRES_URL`; a database of its own, dropped
//! after). Measured by criterion, then p50/p99 over 2,000 timed queries
//! printed to stdout. Searches go through the trait, as the service calls
//! it (tantivy's in `spawn_blocking`).
//!
//! cargo bench -p echo-docs --bench query
//!
//! Without `--bench` (e.g. `cargo test --benches`) it is a smoke run on a
//! small index.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use echo_crypto::TrustedRoots;
use echo_docs::{
    Document, DocumentStore, PgDocumentStore, PgSearchIndex, SearchIndex, SqliteDocumentStore,
    TantivyIndex,
};
use echo_testkit::{PgTestDb, Xorshift};
use echo_text::{Chunk, Kind};
use tokio::runtime::Runtime;

const DOCUMENTS: usize = 10_000;
const SMOKE_DOCUMENTS: usize = 200;
const CHUNKS_PER_DOCUMENT: usize = 3;
const WORDS_PER_CHUNK: usize = 45;
const OWNERS: usize = 20;
const VOCABULARY: usize = 5_000;
const TIMED_QUERIES: usize = 2_000;
/// Concurrent indexers: their `replace` calls share tantivy's commits.
const INDEXING_TASKS: usize = 16;

/// Deterministic pseudo-random numbers.
struct Random(Xorshift);

impl Random {
    fn below(&mut self, bound: usize) -> usize {
        self.0.below(bound)
    }

    /// A word index skewed towards small indexes (common words), roughly
    /// like word frequencies in text.
    fn word(&mut self) -> usize {
        let a = self.below(VOCABULARY);
        let b = self.below(VOCABULARY);
        a * b / VOCABULARY
    }
}

/// Pronounceable made-up words: syllables from the word's index.
fn vocabulary() -> Vec<String> {
    const SYLLABLES: [&str; 20] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "dan", "mer", "lin", "qua",
        "bor", "sel", "tri", "ost", "gar", "fen",
    ];
    (0..VOCABULARY)
        .map(|index| {
            let mut word = String::new();
            let mut rest = index + SYLLABLES.len();
            while rest > 0 {
                word.push_str(SYLLABLES[rest % SYLLABLES.len()]);
                rest /= SYLLABLES.len();
            }
            word
        })
        .collect()
}

fn sentence(random: &mut Random, words: &[String], count: usize) -> String {
    let mut text = String::new();
    for index in 0..count {
        if index > 0 {
            text.push(if random.below(12) == 0 { '.' } else { ' ' });
            text.push(' ');
        }
        text.push_str(&words[random.word()]);
    }
    text.push('.');
    text
}

fn owner(index: usize) -> String {
    format!("user-{:02}", index % OWNERS)
}

/// Indexes `documents` documents through `index` from [`INDEXING_TASKS`]
/// tasks, each with its record in `store` first (PostgreSQL's chunks
/// reference it).
async fn build_index(
    index: &Arc<dyn SearchIndex>,
    store: &Arc<dyn DocumentStore>,
    documents: usize,
    words: &Arc<Vec<String>>,
) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..INDEXING_TASKS)
        .map(|task| {
            let (index, store, words) = (Arc::clone(index), Arc::clone(store), Arc::clone(words));
            tokio::spawn(async move {
                let mut random = Random(Xorshift(0x9e37_79b9_7f4a_7c15 ^ (task as u64 + 1)));
                for document in (task..documents).step_by(INDEXING_TASKS) {
                    let mut start = 0;
                    let chunks: Vec<Chunk> = (0..CHUNKS_PER_DOCUMENT)
                        .map(|position| {
                            let text = sentence(&mut random, &words, WORDS_PER_CHUNK);
                            let chunk = Chunk {
                                position: position as u32,
                                start,
                                text,
                            };
                            start += chunk.text.chars().count() + 2;
                            chunk
                        })
                        .collect();
                    let id = format!("doc-{document}");
                    let name = format!("document {document}.txt");
                    store
                        .insert(&record(&id, &owner(document), &name))
                        .await
                        .expect("insert a record");
                    index
                        .replace(&id, &owner(document), &name, chunks)
                        .await
                        .expect("index a document");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("an indexing task panicked");
    }
    println!(
        "indexed {documents} documents ({} chunks) in {:.1?}",
        documents * CHUNKS_PER_DOCUMENT,
        started.elapsed()
    );
}

fn record(id: &str, owner: &str, name: &str) -> Document {
    Document {
        id: id.to_owned(),
        owner: owner.to_owned(),
        name: name.to_owned(),
        kind: Kind::Txt,
        size: 1,
        sha256: "0".repeat(64),
        job_id: None,
        created_at: 0,
    }
}

/// Questions of 2–5 words, with their owners.
fn questions(words: &[String], count: usize) -> Vec<(String, String)> {
    let mut random = Random(Xorshift(0x2545_f491_4f6c_dd1d));
    (0..count)
        .map(|index| {
            let length = 2 + random.below(4);
            let question = (0..length)
                .map(|_| words[random.word()].as_str())
                .collect::<Vec<_>>()
                .join(" ");
            (owner(index), format!("{question}?"))
        })
        .collect()
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Builds the index on `index`, then measures its searches.
fn measure(
    runtime: &Runtime,
    criterion: &mut Criterion,
    backend: &str,
    (index, store): (Arc<dyn SearchIndex>, Arc<dyn DocumentStore>),
    full_run: bool,
) {
    let documents = if full_run { DOCUMENTS } else { SMOKE_DOCUMENTS };
    let words = Arc::new(vocabulary());
    runtime.block_on(build_index(&index, &store, documents, &words));
    let questions = questions(&words, TIMED_QUERIES);
    let mut next = 0;
    criterion.bench_function(
        &format!("{backend}: search top 5 of {documents} documents"),
        |bench| {
            bench.iter(|| {
                let (owner, question) = &questions[next % questions.len()];
                next += 1;
                runtime
                    .block_on(index.search(owner, question, 5))
                    .expect("search")
            });
        },
    );

    let timed = if full_run { TIMED_QUERIES } else { 50 };
    let mut latencies = Vec::with_capacity(timed);
    let mut found = 0;
    for (owner, question) in questions.iter().take(timed) {
        let started = Instant::now();
        found += runtime
            .block_on(index.search(owner, question, 5))
            .expect("search")
            .len();
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!(
        "{backend}: search latency over {timed} questions ({documents} documents, {OWNERS} owners): \
         p50 {:.1?}, p99 {:.1?}, max {:.1?}; {:.1} passages per question",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
        found as f64 / timed as f64,
    );
}

fn main() {
    let full_run = std::env::args().any(|argument| argument == "--bench");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut criterion = Criterion::default().configure_from_args();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let tantivy = runtime.block_on(async {
        let index = TantivyIndex::open(&dir.path().join("index")).expect("open the index");
        let store = SqliteDocumentStore::open(&dir.path().join("docs.db"))
            .await
            .expect("open the records");
        (
            Arc::new(index) as Arc<dyn SearchIndex>,
            Arc::new(store) as Arc<dyn DocumentStore>,
        )
    });
    measure(&runtime, &mut criterion, "tantivy", tantivy, full_run);

    let db = runtime.block_on(PgTestDb::create("bench_query"));
    let roots = TrustedRoots::system();
    let postgres = runtime.block_on(async {
        let index = PgSearchIndex::connect(&db.url, &roots)
            .await
            .expect("connect the index");
        let store = PgDocumentStore::connect(&db.url, &roots)
            .await
            .expect("connect the records");
        (
            Arc::new(index) as Arc<dyn SearchIndex>,
            Arc::new(store) as Arc<dyn DocumentStore>,
        )
    });
    measure(&runtime, &mut criterion, "postgres", postgres, full_run);
    runtime.block_on(db.drop_db());
    criterion.final_summary();
}
