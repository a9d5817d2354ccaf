//! The blob stores' suite, run on each implementation: a directory,
//! JetStream's object store (the machine's NATS or `ECHO_TEST_NATS_URL`, a
//! bucket of each test's own, deleted after) and PostgreSQL (the machine's
//! or `ECHO_TEST_POSTGRES_URL`, a database of each test's own). One more
//! test opens a `nats://` URL as docs does, in the fixed bucket `ECHO_DOCS`.

use std::io;
use std::sync::Arc;

use echo_crypto::TrustedRoots;
use echo_docs::{Blob, BlobStore, DirBlobStore, DocsError, NatsBlobStore, PgBlobStore, open_blobs};
use echo_testkit::{PgTestDb, TempDir};

#[derive(Clone, Copy)]
enum Place {
    Dir,
    Nats,
    Postgres,
}

/// Where a test's blobs live: removed by [`Opened::close`].
enum Opened {
    Dir(TempDir),
    /// The bucket's name.
    Nats(String),
    Pg(PgTestDb),
}

impl Opened {
    async fn new(place: Place, test: &str) -> Self {
        match place {
            Place::Dir => Opened::Dir(echo_testkit::data_dir()),
            Place::Nats => Opened::Nats(format!(
                "ECHO_TEST_{}_{}_{}",
                test.to_uppercase(),
                std::process::id(),
                echo_testkit::Xorshift(nanos()).next_u64()
            )),
            Place::Postgres => Opened::Pg(PgTestDb::create(test).await),
        }
    }

    /// A handle on the blobs, as each replica opens them.
    async fn store(&self) -> Arc<dyn BlobStore> {
        let roots = TrustedRoots::system();
        match self {
            Opened::Dir(dir) => Arc::new(DirBlobStore::open(dir.path()).unwrap()),
            Opened::Nats(bucket) => Arc::new(
                NatsBlobStore::connect(&echo_testkit::nats_url(), &roots, bucket)
                    .await
                    .expect("NATS with JetStream at ECHO_TEST_NATS_URL or 127.0.0.1:4222"),
            ),
            Opened::Pg(db) => Arc::new(PgBlobStore::connect(&db.url, &roots).await.unwrap()),
        }
    }

    async fn close(self) {
        match self {
            Opened::Dir(dir) => drop(dir),
            Opened::Nats(bucket) => {
                let client = async_nats::connect(echo_testkit::nats_url().as_str())
                    .await
                    .unwrap();
                async_nats::jetstream::new(client)
                    .delete_object_store(&bucket)
                    .await
                    .unwrap();
            }
            Opened::Pg(db) => db.drop_db().await,
        }
    }
}

fn nanos() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(1, |d| u64::from(d.subsec_nanos()) | 1)
}

macro_rules! on_each_place {
    ($($test:ident),* $(,)?) => {
        mod dir {
            $(#[tokio::test]
            async fn $test() { super::$test(super::Place::Dir, stringify!($test)).await; })*
        }
        mod nats {
            $(#[tokio::test]
            async fn $test() { super::$test(super::Place::Nats, stringify!($test)).await; })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() { super::$test(super::Place::Postgres, stringify!($test)).await; })*
        }
    };
}

on_each_place!(
    a_blob_is_stored_once_read_back_and_removed,
    large_blobs_round_trip,
    only_digests_name_blobs,
    every_handle_on_the_store_sees_the_same_blobs,
);

fn error_kind(error: DocsError) -> io::ErrorKind {
    match error {
        DocsError::Blob(e) => e.kind(),
        other => panic!("expected a blob error, got {other:?}"),
    }
}

async fn a_blob_is_stored_once_read_back_and_removed(place: Place, test: &str) {
    let opened = Opened::new(place, test).await;
    let blobs = opened.store().await;
    let blob = Blob::new(b"hello".to_vec());
    let digest = blob.digest().to_owned();
    assert_eq!(
        digest,
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    blobs.put(blob).await.unwrap();
    // The same bytes again: a no-op, not an error.
    blobs.put(Blob::new(b"hello".to_vec())).await.unwrap();
    assert_eq!(blobs.read(&digest).await.unwrap(), b"hello");
    blobs.remove(&digest).await.unwrap();
    assert_eq!(
        error_kind(blobs.read(&digest).await.unwrap_err()),
        io::ErrorKind::NotFound
    );
    // Gone already: still fine.
    blobs.remove(&digest).await.unwrap();
    // Stored again after a removal.
    blobs.put(Blob::new(b"hello".to_vec())).await.unwrap();
    assert_eq!(blobs.read(&digest).await.unwrap(), b"hello");
    opened.close().await;
}

async fn large_blobs_round_trip(place: Place, test: &str) {
    let opened = Opened::new(place, test).await;
    let blobs = opened.store().await;
    // Several of the object store's 128 KiB chunks, not a multiple of one.
    let bytes = echo_testkit::files::noise(3 * 1024 * 1024 + 17, 7);
    let blob = Blob::new(bytes.clone());
    let digest = blob.digest().to_owned();
    blobs.put(blob).await.unwrap();
    assert_eq!(blobs.read(&digest).await.unwrap(), bytes);
    opened.close().await;
}

async fn only_digests_name_blobs(place: Place, test: &str) {
    let opened = Opened::new(place, test).await;
    let blobs = opened.store().await;
    for bad in [
        "../../etc/passwd",
        "",
        &"A".repeat(64),
        &"a/".repeat(32),
        &"a".repeat(63),
        &format!("{}.", "a".repeat(63)),
    ] {
        assert_eq!(
            error_kind(blobs.read(bad).await.unwrap_err()),
            io::ErrorKind::InvalidInput,
            "{bad:?}"
        );
        assert_eq!(
            error_kind(blobs.remove(bad).await.unwrap_err()),
            io::ErrorKind::InvalidInput,
            "{bad:?}"
        );
    }
    opened.close().await;
}

async fn every_handle_on_the_store_sees_the_same_blobs(place: Place, test: &str) {
    let opened = Opened::new(place, test).await;
    let (a, b) = (opened.store().await, opened.store().await);
    let blob = Blob::new(b"shared between replicas".to_vec());
    let digest = blob.digest().to_owned();
    a.put(blob).await.unwrap();
    assert_eq!(b.read(&digest).await.unwrap(), b"shared between replicas");
    b.remove(&digest).await.unwrap();
    assert!(a.read(&digest).await.is_err());
    opened.close().await;
}

/// `ECHO_DOCS_BLOB_URL=nats://…` as docs opens it: blobs go to JetStream's
/// bucket `ECHO_DOCS` (read here by that name, without Echo's code), none
/// to the directory. The bucket is the machine's, shared by every run, so
/// the test's blob holds bytes no other run has and is removed after.
#[tokio::test]
async fn a_nats_blob_url_keeps_blobs_in_the_echo_docs_bucket() {
    let url = echo_testkit::nats_url();
    let dir = echo_testkit::data_dir();
    let blobs = open_blobs(Some(&url), &TrustedRoots::system(), dir.path())
        .await
        .expect("NATS with JetStream at ECHO_TEST_NATS_URL or 127.0.0.1:4222");
    let bytes = format!(
        "a_nats_blob_url_keeps_blobs_in_the_echo_docs_bucket {} {}",
        std::process::id(),
        nanos()
    )
    .into_bytes();
    let blob = Blob::new(bytes.clone());
    let digest = blob.digest().to_owned();
    blobs.put(blob).await.unwrap();

    let client = async_nats::connect(url.as_str()).await.unwrap();
    let bucket = async_nats::jetstream::new(client)
        .get_object_store("ECHO_DOCS")
        .await
        .unwrap_or_else(|e| panic!("the bucket ECHO_DOCS: {e}"));
    let mut object = bucket.get(&digest).await.expect("the blob in ECHO_DOCS");
    let mut stored = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut object, &mut stored)
        .await
        .unwrap();
    assert_eq!(stored, bytes);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    blobs.remove(&digest).await.unwrap();
    assert!(bucket.get(&digest).await.is_err(), "removed from ECHO_DOCS");
}
