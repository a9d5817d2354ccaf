//! The document store's suite, run on SQLite and on PostgreSQL
//! (the machine's, or `ECHO_TEST_POSTGRES_URL`; each test its own database).

use std::sync::Arc;

use echo_docs::{Document, DocumentStore, PgDocumentStore, SqliteDocumentStore};
use echo_testkit::{PgTestDb, TempDir};
use echo_text::Kind;

enum Cleanup {
    Dir(TempDir),
    Pg(PgTestDb),
}

/// A fresh store.
async fn open(postgres: bool, test: &str) -> (Arc<dyn DocumentStore>, Cleanup) {
    if postgres {
        let db = PgTestDb::create(test).await;
        let store = PgDocumentStore::connect(&db.url, &echo_crypto::TrustedRoots::system())
            .await
            .expect("open PostgreSQL store");
        (Arc::new(store), Cleanup::Pg(db))
    } else {
        let dir = echo_testkit::data_dir();
        let store = SqliteDocumentStore::open(&dir.path().join("docs.db"))
            .await
            .expect("open SQLite store");
        (Arc::new(store), Cleanup::Dir(dir))
    }
}

async fn close(cleanup: Cleanup) {
    match cleanup {
        Cleanup::Dir(dir) => drop(dir),
        Cleanup::Pg(db) => db.drop_db().await,
    }
}

fn document(id: &str, owner: &str, sha256: &str, created_at: i64) -> Document {
    Document {
        id: id.into(),
        owner: owner.into(),
        name: format!("{id}.pdf"),
        kind: Kind::Pdf,
        size: 1234,
        sha256: sha256.into(),
        job_id: None,
        created_at,
    }
}

macro_rules! on_both {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() { super::$test(false).await; })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() { super::$test(true).await; })*
        }
    };
}

on_both!(
    records_round_trip,
    lists_are_per_owner_newest_first,
    deletes_and_blob_references
);

async fn records_round_trip(postgres: bool) {
    let (store, cleanup) = open(postgres, "records_round_trip").await;
    let mut d = document("d1", "alice", "aa", 100);
    store.insert(&d).await.unwrap();
    assert_eq!(store.get("d1").await.unwrap(), Some(d.clone()));
    store.set_job("d1", "job-1").await.unwrap();
    d.job_id = Some("job-1".into());
    assert_eq!(store.get("d1").await.unwrap(), Some(d.clone()));
    assert_eq!(store.get("missing").await.unwrap(), None);
    assert!(store.insert(&d).await.is_err(), "ids are unique");
    close(cleanup).await;
}

async fn lists_are_per_owner_newest_first(postgres: bool) {
    let (store, cleanup) = open(postgres, "lists_are_per_owner_newest_first").await;
    for d in [
        document("a1", "alice", "h1", 100),
        document("b1", "bob", "h2", 150),
        document("a2", "alice", "h3", 200),
        // Same second as a2, inserted later: newer.
        document("a3", "alice", "h4", 200),
    ] {
        store.insert(&d).await.unwrap();
    }
    let ids = |docs: Vec<Document>| docs.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list(Some("alice")).await.unwrap()),
        ["a3", "a2", "a1"]
    );
    assert_eq!(ids(store.list(Some("bob")).await.unwrap()), ["b1"]);
    assert!(store.list(Some("carol")).await.unwrap().is_empty());
    assert_eq!(
        ids(store.list(None).await.unwrap()),
        ["a3", "a2", "b1", "a1"]
    );
    close(cleanup).await;
}

async fn deletes_and_blob_references(postgres: bool) {
    let (store, cleanup) = open(postgres, "deletes_and_blob_references").await;
    store
        .insert(&document("x", "alice", "shared", 1))
        .await
        .unwrap();
    store
        .insert(&document("y", "bob", "shared", 2))
        .await
        .unwrap();
    assert!(store.references("shared").await.unwrap());
    assert!(!store.references("other").await.unwrap());
    assert!(store.delete("x").await.unwrap());
    assert!(!store.delete("x").await.unwrap());
    assert!(store.references("shared").await.unwrap());
    assert!(store.delete("y").await.unwrap());
    assert!(!store.references("shared").await.unwrap());
    close(cleanup).await;
}
