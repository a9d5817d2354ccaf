//! Search quality on both backends: 50 questions over a small corpus
//! written for it (`tests/data/search_quality.json`: 25 documents that each
//! answer two questions, worded differently from the text, and 15 on
//! neighbouring subjects that answer none), recall@5 for each backend: the
//! share of questions whose answering document is among the five passages
//! found (and recall@1: the first passage is from it). Run with
//! `--nocapture` to see the figures (BENCHMARKS.md).

use std::collections::BTreeMap;

use echo_text::{DEFAULT_CHUNK_CHARS, chunk_text};
use serde::Deserialize;

use crate::search_backends::Backend;

#[derive(Deserialize)]
struct Corpus {
    documents: BTreeMap<String, String>,
    questions: Vec<(String, String)>,
}

/// Below this, a change made search worse: both backends do better.
const MIN_RECALL_AT_5: f64 = 0.9;

async fn recall_at_5(postgres: bool, test: &str) -> f64 {
    let corpus: Corpus = serde_json::from_str(include_str!("../data/search_quality.json")).unwrap();
    assert_eq!(corpus.questions.len(), 50);
    let backend = Backend::open(postgres, test).await;
    for (name, text) in &corpus.documents {
        let chunks = chunk_text(text, DEFAULT_CHUNK_CHARS);
        backend.add_chunks(name, "reader", name, chunks).await;
    }
    let (mut found, mut first) = (0, 0);
    for (question, answering) in &corpus.questions {
        assert!(corpus.documents.contains_key(answering), "{answering}");
        let passages = backend.index.search("reader", question, 5).await.unwrap();
        if passages
            .first()
            .is_some_and(|p| &p.document_id == answering)
        {
            first += 1;
        }
        if passages.iter().any(|p| &p.document_id == answering) {
            found += 1;
        } else {
            println!("missed: {question:?} (expected {answering})");
        }
    }
    backend.close().await;
    let total = corpus.questions.len();
    let recall = f64::from(found) / total as f64;
    println!(
        "{}: recall@5 {recall:.2} ({found}/{total}), recall@1 {:.2} ({first}/{total})",
        if postgres { "postgres" } else { "tantivy" },
        f64::from(first) / total as f64,
    );
    recall
}

#[tokio::test]
async fn tantivy_finds_the_answering_document_in_its_top_5() {
    let recall = recall_at_5(false, "tantivy_recall").await;
    assert!(recall >= MIN_RECALL_AT_5, "recall@5 {recall}");
}

#[tokio::test]
async fn postgres_finds_the_answering_document_in_its_top_5() {
    let recall = recall_at_5(true, "postgres_recall").await;
    assert!(recall >= MIN_RECALL_AT_5, "recall@5 {recall}");
}
