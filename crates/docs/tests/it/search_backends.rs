//! The search backends' suite, run on tantivy (in memory, records in
//! SQLite) and on PostgreSQL (records and chunks in a database of each
//! test's own): the same questions find the same documents, and never
//! another owner's.

use std::sync::Arc;

use echo_crypto::TrustedRoots;
use echo_docs::{
    DirBlobStore, DocsError, Document, DocumentStore, PgDocumentStore, PgSearchIndex, SearchIndex,
    SqliteDocumentStore, TantivyIndex,
};
use echo_testkit::{PgTestDb, TempDir};
use echo_text::{Chunk, Kind, chunk_text};

use crate::Fixture;

/// A search backend with the record store its documents are in.
pub struct Backend {
    store: Arc<dyn DocumentStore>,
    pub index: Arc<dyn SearchIndex>,
    dir: TempDir,
    db: Option<PgTestDb>,
}

impl Backend {
    pub async fn open(postgres: bool, test: &str) -> Self {
        let dir = echo_testkit::data_dir();
        if postgres {
            let db = PgTestDb::create(test).await;
            let roots = TrustedRoots::system();
            Self {
                store: Arc::new(PgDocumentStore::connect(&db.url, &roots).await.unwrap()),
                index: Arc::new(PgSearchIndex::connect(&db.url, &roots).await.unwrap()),
                dir,
                db: Some(db),
            }
        } else {
            Self {
                store: Arc::new(
                    SqliteDocumentStore::open(&dir.path().join("docs.db"))
                        .await
                        .unwrap(),
                ),
                index: Arc::new(TantivyIndex::in_memory().unwrap()),
                dir,
                db: None,
            }
        }
    }

    /// Indexes `texts` as the chunks of document `id`.
    async fn add(&self, id: &str, owner: &str, name: &str, texts: &[&str]) {
        self.add_chunks(id, owner, name, chunks(texts)).await;
    }

    /// Indexes `chunks` as document `id`'s, its record made first as an
    /// upload does.
    pub async fn add_chunks(&self, id: &str, owner: &str, name: &str, chunks: Vec<Chunk>) {
        if self.store.get(id).await.unwrap().is_none() {
            self.store.insert(&record(id, owner, name)).await.unwrap();
        }
        self.index.replace(id, owner, name, chunks).await.unwrap();
    }

    async fn search(&self, owner: &str, question: &str) -> Vec<echo_docs::Passage> {
        self.index.search(owner, question, 10).await.unwrap()
    }

    pub async fn close(self) {
        if let Some(db) = self.db {
            db.drop_db().await;
        }
    }
}

fn record(id: &str, owner: &str, name: &str) -> Document {
    Document {
        id: id.into(),
        owner: owner.into(),
        name: name.into(),
        kind: Kind::Txt,
        size: 1,
        sha256: "0".repeat(64),
        job_id: None,
        created_at: 0,
    }
}

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

fn ids(passages: &[echo_docs::Passage]) -> Vec<&str> {
    passages.iter().map(|p| p.document_id.as_str()).collect()
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod tantivy {
            $(#[tokio::test]
            async fn $test() { super::$test(false, stringify!($test)).await; })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() { super::$test(true, stringify!($test)).await; })*
        }
    };
}

on_both!(
    finds_the_owners_passage_with_its_attributes,
    another_owner_never_gets_the_passages_even_for_the_exact_words,
    replacing_twice_indexes_once,
    removing_deletes_every_chunk_and_unknown_is_fine,
    other_forms_of_a_word_match,
    the_most_relevant_passage_comes_first,
    unicode_text_is_found_by_its_words,
    any_question_text_is_words_never_an_error,
    a_question_without_a_searchable_word_finds_nothing,
    answers_and_refusals_are_the_same_over_http,
);

async fn finds_the_owners_passage_with_its_attributes(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add(
        "doc-1",
        "alice",
        "notes.txt",
        &["Cats sleep all day.", "The parser reads PDF files."],
    )
    .await;
    let found = b.search("alice", "which parser reads PDF?").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let passage = &found[0];
    assert_eq!(passage.document_id, "doc-1");
    assert_eq!(passage.name, "notes.txt");
    assert_eq!(passage.position, 1);
    assert_eq!(passage.start, 20);
    assert_eq!(passage.text, "The parser reads PDF files.");
    assert!(passage.score > 0.0);
    b.close().await;
}

async fn another_owner_never_gets_the_passages_even_for_the_exact_words(
    postgres: bool,
    test: &str,
) {
    let b = Backend::open(postgres, test).await;
    let secret = "the launch code is zebra-4417 hidden in the vault";
    b.add("doc-a", "alice", "secret.txt", &[secret]).await;
    b.add("doc-b", "bob", "bob.txt", &["bob's shopping list: milk"])
        .await;
    for question in [
        secret,
        "zebra-4417",
        "launch code vault",
        "owner:alice",
        "owner:alice OR launch",
        "document_id:doc-a",
        "*",
        "launch' OR owner = 'alice",
        "launch | vault & !milk",
    ] {
        let found = b.search("bob", question).await;
        assert!(
            found.iter().all(|passage| passage.document_id == "doc-b"),
            "bob got alice's passage for {question:?}: {found:?}"
        );
    }
    assert_eq!(ids(&b.search("alice", "zebra-4417").await), ["doc-a"]);
    assert!(b.search("carol", "milk").await.is_empty());
    // An owner that looks like SQL or query syntax is only a name.
    assert!(b.search("alice' OR '1'='1", "launch").await.is_empty());
    b.close().await;
}

async fn replacing_twice_indexes_once(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    let texts = ["alpha beta", "gamma delta", "epsilon"];
    b.add("doc-1", "alice", "a.txt", &texts).await;
    b.add("doc-1", "alice", "a.txt", &texts).await;
    assert_eq!(b.index.chunk_count("doc-1").await.unwrap(), 3);
    assert_eq!(b.search("alice", "gamma").await.len(), 1);
    // A new version replaces the old one entirely.
    b.add("doc-1", "alice", "a.txt", &["zeta"]).await;
    assert_eq!(b.index.chunk_count("doc-1").await.unwrap(), 1);
    assert!(b.search("alice", "gamma").await.is_empty());
    b.close().await;
}

async fn removing_deletes_every_chunk_and_unknown_is_fine(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add("doc-1", "alice", "a.txt", &["alpha", "alpha beta"])
        .await;
    b.add("doc-2", "alice", "b.txt", &["alpha gamma"]).await;
    b.index.remove("doc-1").await.unwrap();
    assert_eq!(b.index.chunk_count("doc-1").await.unwrap(), 0);
    assert_eq!(ids(&b.search("alice", "alpha").await), ["doc-2"]);
    b.index.remove("never-indexed").await.unwrap();
    b.close().await;
}

async fn other_forms_of_a_word_match(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add("doc-1", "alice", "a.txt", &["The parser handles it."])
        .await;
    b.add("doc-2", "alice", "b.txt", &["Running quickly."])
        .await;
    assert_eq!(ids(&b.search("alice", "parsers").await), ["doc-1"]);
    assert_eq!(ids(&b.search("alice", "PARSER").await), ["doc-1"]);
    assert_eq!(ids(&b.search("alice", "runs").await), ["doc-2"]);
    b.close().await;
}

async fn the_most_relevant_passage_comes_first(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    for n in 0..10 {
        let text = if n == 7 {
            "kiwi kiwi kiwi kiwi".to_owned()
        } else {
            format!("kiwi and filler words number {n} with more filler text here")
        };
        b.add(&format!("doc-{n}"), "alice", "f.txt", &[&text]).await;
    }
    b.add(
        "manual",
        "alice",
        "manual.txt",
        &["The espresso machine needs descaling every three months with citric acid."],
    )
    .await;
    let found = b.index.search("alice", "kiwi", 3).await.unwrap();
    assert_eq!(found.len(), 3);
    assert_eq!(found[0].document_id, "doc-7");
    assert!(found.windows(2).all(|pair| pair[0].score >= pair[1].score));
    // Any word of a question finds, the passage with most of them first.
    let found = b
        .search(
            "alice",
            "how often does the espresso machine need descaling?",
        )
        .await;
    assert_eq!(ids(&found), ["manual"]);
    b.close().await;
}

async fn unicode_text_is_found_by_its_words(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add(
        "doc-1",
        "alice",
        "café.txt",
        &["Crème brûlée au café, Grüße aus München 🎉"],
    )
    .await;
    // A NUL in a chunk (PostgreSQL text cannot hold one) is a separator.
    b.add("doc-2", "alice", "nul.txt", &["lighthouse\0keeper"])
        .await;
    for question in ["brûlée", "Grüße", "MÜNCHEN", "café 🎉"] {
        assert_eq!(
            ids(&b.search("alice", question).await),
            ["doc-1"],
            "{question}"
        );
    }
    assert_eq!(ids(&b.search("alice", "keeper\0").await), ["doc-2"]);
    assert!(b.search("alice", "🎉").await.is_empty());
    b.close().await;
}

async fn any_question_text_is_words_never_an_error(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add("doc-1", "alice", "a.txt", &["and the parser or not"])
        .await;
    for question in [
        "\"AND (",
        "parser AND (",
        "parser:",
        ":::",
        "((((",
        "[1 TO",
        "title:parser",
        "-",
        "+",
        "~2 ^3",
        "\\",
        "parser^",
        "\"unterminated parser",
        "parser & | ! <-> :*",
        "'parser'''",
        "$1 parser; DROP TABLE docs_chunks; --",
    ] {
        let found = b.index.search("alice", question, 5).await;
        assert!(found.is_ok(), "{question:?} failed: {found:?}");
    }
    assert_eq!(b.search("alice", "\"parser AND (").await.len(), 1);
    assert_eq!(
        b.search("alice", "$1 parser; DROP TABLE docs_chunks; --")
            .await
            .len(),
        1
    );
    b.close().await;
}

async fn a_question_without_a_searchable_word_finds_nothing(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    b.add("doc-1", "alice", "a.txt", &["the and of it is"])
        .await;
    for question in ["", "   ", "?!", "the and of", "*", "()"] {
        assert!(b.search("alice", question).await.is_empty(), "{question:?}");
    }
    assert!(
        b.index
            .search("alice", "anything", 0)
            .await
            .unwrap()
            .is_empty()
    );
    b.close().await;
}

/// The service over the backend: a document uploaded, indexed and
/// answered; empty and oversized questions refused with the same clear
/// message, before any search.
async fn answers_and_refusals_are_the_same_over_http(postgres: bool, test: &str) {
    let b = Backend::open(postgres, test).await;
    let blobs = Arc::new(DirBlobStore::open(&b.dir.path().join("blobs")).unwrap());
    let f = Fixture::with_backends(b.store.clone(), b.index.clone(), blobs).await;
    let alice = f.user("alice");
    let manual = f
        .upload_text(
            &alice,
            "manual.txt",
            "The espresso machine needs descaling every three months. Use citric acid.",
        )
        .await;
    let garden = f
        .upload_text(
            &alice,
            "garden.txt",
            "Tomatoes need full sun and regular watering.",
        )
        .await;
    f.index_as_worker(&manual).await;
    f.index_as_worker(&garden).await;
    let (status, answer) = f
        .query(
            &alice,
            "How often does the espresso machine need descaling?",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["citations"][0]["document_id"], manual.as_str());
    assert!(
        answer["answer"].as_str().unwrap().contains("three months"),
        "{answer}"
    );
    // Bob asks the same: nothing of alice's.
    let (status, answer) = f
        .query(
            &f.user("bob"),
            "How often does the espresso machine need descaling?",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["citations"], serde_json::json!([]), "{answer}");
    for question in ["", "  ", &"x".repeat(1001)] {
        let (status, body) = f.query(&alice, question).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(
            body["detail"], "the question must have 1 to 1000 characters",
            "{body}"
        );
    }
    // Deleting the document takes its chunks out of the index.
    assert_eq!(f.delete(&alice, &manual).await.0, 204);
    assert_eq!(b.index.chunk_count(&manual).await.unwrap(), 0);
    let (_, answer) = f.query(&alice, "espresso descaling").await;
    assert_eq!(answer["citations"], serde_json::json!([]), "{answer}");
    b.close().await;
}

/// PostgreSQL only: chunks go with their record, whichever replica deletes
/// it, and chunks of a document whose record is gone are refused.
#[tokio::test]
async fn postgres_chunks_go_with_their_record() {
    let b = Backend::open(true, "postgres_chunks_go_with_their_record").await;
    b.add("doc-1", "alice", "a.txt", &["orphan words", "more words"])
        .await;
    assert!(b.store.delete("doc-1").await.unwrap());
    assert_eq!(b.index.chunk_count("doc-1").await.unwrap(), 0);
    let late = b
        .index
        .replace("doc-1", "alice", "a.txt", chunk_text("late words", 800))
        .await;
    assert!(matches!(late, Err(DocsError::NotFound)), "{late:?}");
    assert!(b.search("alice", "words").await.is_empty());
    b.close().await;
}
