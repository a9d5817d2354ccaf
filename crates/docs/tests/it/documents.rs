//! Uploading, listing, downloading and deleting one's documents.

use std::sync::Arc;
use std::time::Duration;

use echo_crypto::TrustedRoots;
use echo_docs::{
    Blob, BlobStore, DocumentStore, Limits, PgBlobStore, PgDocumentStore, SearchIndex, TantivyIndex,
};
use echo_testkit::PgTestDb;
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};

use crate::{Fixture, sha256_hex};

#[tokio::test]
async fn several_files_in_one_multipart_request_become_documents() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let pdf = echo_testkit::files::pdf(&["Quarterly report", "Revenue grew."]);
    let docx = echo_testkit::files::docx("Minutes", &["The board met."]);
    let (status, body) = f
        .upload(
            &alice,
            &[
                ("report.pdf", &pdf),
                ("minutes.docx", &docx),
                ("notes.md", b"# Notes\n\nSome *markdown*.\n"),
            ],
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let documents = body["documents"].as_array().unwrap();
    let summary: Vec<(&str, &str, u64)> = documents
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap(),
                d["type"].as_str().unwrap(),
                d["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("report.pdf", "pdf", pdf.len() as u64),
            ("minutes.docx", "docx", docx.len() as u64),
            ("notes.md", "md", 26),
        ]
    );
    for d in documents {
        assert_eq!(d["status"], "queued");
        assert_eq!(d["progress"], 0);
        assert_eq!(d["error"], Value::Null);
        assert_eq!(d["id"].as_str().unwrap().len(), 32);
        assert!(d["created_at"].as_str().unwrap().ends_with('Z'), "{d}");
    }

    let (status, list) = f.get(&alice, "/v1/documents").await;
    assert_eq!(status, 200);
    assert_eq!(list["documents"].as_array().unwrap().len(), 3);
    let id = documents[0]["id"].as_str().unwrap();
    let (status, one) = f.get(&alice, &format!("/v1/documents/{id}")).await;
    assert_eq!((status, &one), (200, &documents[0]));
    assert_eq!(
        f.audit.actions(),
        ["document.upload", "document.upload", "document.upload"]
    );
    let event = &f.audit.events()[0];
    assert_eq!(event.actor.as_deref(), Some("alice"));
    assert_eq!(event.details["type"], "pdf");
}

#[tokio::test]
async fn each_upload_queues_one_index_job() {
    let f = Fixture::start().await;
    let id = f.upload_text(&f.user("alice"), "a.txt", "hello").await;
    let job = f
        .queue
        .take("w", std::time::Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a job");
    assert_eq!(job.kind, "index_document");
    assert_eq!(job.payload["document_id"], id.as_str());
    // The upload's trace goes with its job, for the worker to continue.
    let traceparent = job.payload["traceparent"].as_str().unwrap();
    let (trace_id, _, _) = echo_edge::trace::parse_traceparent(traceparent).unwrap();
    let upload = &f.audit.events()[0];
    assert_eq!(upload.action, "document.upload");
    assert_eq!(upload.trace_id.as_deref(), Some(trace_id));
    assert!(
        f.queue
            .take("w", std::time::Duration::from_secs(30))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_raw_body_with_a_name_is_one_document() {
    let f = Fixture::start().await;
    let (status, body) = f
        .upload_raw(&f.user("alice"), "table.csv", b"a,b\n1,2\n")
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["documents"][0]["type"], "csv");
    assert_eq!(body["documents"][0]["name"], "table.csv");
    // The type comes from the content: a PDF named .txt is a PDF.
    let pdf = echo_testkit::files::pdf(&["x"]);
    let (status, body) = f.upload_raw(&f.user("alice"), "notes.txt", &pdf).await;
    assert_eq!(
        (status, body["documents"][0]["type"].as_str()),
        (201, Some("pdf"))
    );
}

#[tokio::test]
async fn too_large_is_413_and_unknown_types_415() {
    let limits = Limits {
        max_upload_bytes: 1000,
        ..Limits::default()
    };
    let f = Fixture::with(limits, None).await;
    let alice = f.user("alice");
    let big = vec![b'a'; 1001];
    let (status, body) = f.upload(&alice, &[("big.txt", &big)]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("1000 bytes"),
        "{body}"
    );
    let (status, body) = f.upload_raw(&alice, "big.txt", &big).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(f.upload(&alice, &[("ok.txt", &big[..1000])]).await.0, 201);

    let binary = echo_testkit::files::noise(500, 7);
    let (status, body) = f.upload(&alice, &[("photo.png", &binary)]).await;
    assert_eq!(status, 415, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("photo.png: not a supported type"),
        "{body}"
    );
    let (status, body) = f.upload_raw(&alice, "empty.txt", b"").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn one_refused_file_refuses_the_whole_request() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let binary = echo_testkit::files::noise(500, 3);
    let (status, _) = f
        .upload(&alice, &[("a.txt", b"first"), ("b.bin", &binary)])
        .await;
    assert_eq!(status, 415);
    let (_, list) = f.get(&alice, "/v1/documents").await;
    assert_eq!(list["documents"], serde_json::json!([]));
    assert!(
        std::fs::read_dir(&f.blobs_dir)
            .unwrap()
            .all(|d| std::fs::read_dir(d.unwrap().path())
                .unwrap()
                .next()
                .is_none()),
        "the first file's blob was removed"
    );
}

#[tokio::test]
async fn too_many_files_or_none_are_refused() {
    let limits = Limits {
        max_files_per_request: 2,
        ..Limits::default()
    };
    let f = Fixture::with(limits, None).await;
    let alice = f.user("alice");
    let files: [(&str, &[u8]); 3] = [("a.txt", b"a"), ("b.txt", b"b"), ("c.txt", b"c")];
    assert_eq!(f.upload(&alice, &files).await.0, 413);
    assert_eq!(f.upload(&alice, &files[..2]).await.0, 201);
    let (status, body) = f.upload(&alice, &[]).await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_original_bytes_come_back_as_an_attachment() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let pdf = echo_testkit::files::pdf(&["Hello"]);
    let (_, body) = f
        .upload_raw(&alice, "../../etc/Résumé \"v2\".pdf", &pdf)
        .await;
    let document = &body["documents"][0];
    assert_eq!(document["name"], "Résumé \"v2\".pdf");
    let id = document["id"].as_str().unwrap();
    let (status, headers, bytes) = f
        .download(&alice, &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(bytes, pdf);
    assert_eq!(headers["content-type"], "application/pdf");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(
        headers["content-disposition"],
        "attachment; filename=\"R_sum_ _v2_.pdf\"; filename*=UTF-8''R%C3%A9sum%C3%A9%20%22v2%22.pdf"
    );
}

#[tokio::test]
async fn blobs_are_content_addressed_and_removed_with_their_last_document() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let bob = f.user("bob");
    let text = b"The same bytes, uploaded twice.";
    let blob = f.blob_path(&sha256_hex(text));
    let first = f
        .upload_text(&alice, "one.txt", std::str::from_utf8(text).unwrap())
        .await;
    let second = f
        .upload_text(&bob, "two.txt", std::str::from_utf8(text).unwrap())
        .await;
    assert_eq!(std::fs::read(&blob).unwrap(), text);

    assert_eq!(f.delete(&alice, &first).await.0, 204);
    assert!(blob.exists(), "still bob's document");
    let (status, _, bytes) = f
        .download(&bob, &format!("/v1/documents/{second}/content"))
        .await;
    assert_eq!((status, bytes.as_slice()), (200, &text[..]));

    assert_eq!(f.delete(&bob, &second).await.0, 204);
    assert!(!blob.exists(), "no document holds the blob");
    assert_eq!(f.get(&bob, &format!("/v1/documents/{second}")).await.0, 404);
    assert_eq!(f.delete(&bob, &second).await.0, 404);
    assert!(f.audit.actions().contains(&"document.delete"));
}

#[tokio::test]
async fn the_list_is_newest_first() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let old = f.upload_text(&alice, "old.txt", "old").await;
    // created_at has whole seconds; the order within one second is the
    // upload order too.
    let new = f.upload_text(&alice, "new.txt", "new").await;
    let (_, list) = f.get(&alice, "/v1/documents").await;
    let ids: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [new.as_str(), old.as_str()]);
}

#[tokio::test]
async fn multipart_fields_other_than_file_are_ignored() {
    let f = Fixture::start().await;
    let boundary = "b0undary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"comment\"\r\n\r\nnot a document\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"kept.txt\"\r\n\r\nkept\r\n\
         --{boundary}--\r\n"
    );
    let (status, body) = f.post_multipart(&f.user("alice"), boundary, body).await;
    assert_eq!(status, 201, "{body}");
    let names: Vec<&str> = body["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kept.txt"]);
}

/// A blob store that takes its time to store a blob, as a remote one under
/// load does: the window in which another replica's delete of the same
/// bytes used to remove the blob under the record being inserted.
#[derive(Debug)]
struct SlowPuts(Arc<dyn BlobStore>);

#[async_trait::async_trait]
impl BlobStore for SlowPuts {
    async fn put(&self, blob: Blob) -> echo_docs::Result<()> {
        self.0.put(blob).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(())
    }

    async fn read(&self, digest: &str) -> echo_docs::Result<Vec<u8>> {
        self.0.read(digest).await
    }

    async fn remove(&self, digest: &str) -> echo_docs::Result<()> {
        self.0.remove(digest).await
    }
}

/// Two replicas on one PostgreSQL (records and blobs): a delete of a
/// document through one while the very same bytes are uploaded through the
/// other, run together again and again, leave the new document its blob,
/// and once it is deleted too, no blob behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_and_an_upload_of_the_same_bytes_on_two_replicas_keep_blob_and_record_together() {
    let db = PgTestDb::create("delete_and_upload_of_the_same_bytes_on_two_replicas").await;
    let roots = TrustedRoots::system();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn DocumentStore> =
            Arc::new(PgDocumentStore::connect(&db.url, &roots).await.unwrap());
        let blobs: Arc<dyn BlobStore> = Arc::new(SlowPuts(Arc::new(
            PgBlobStore::connect(&db.url, &roots).await.unwrap(),
        )));
        let index: Arc<dyn SearchIndex> = Arc::new(TantivyIndex::in_memory().unwrap());
        replicas.push(Fixture::with_backends(store, index, blobs).await);
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let mut records = PgConnection::connect(&db.url).await.unwrap();
    for round in 0..5 {
        let text = format!("Round {round}: the same bytes through both replicas.");
        let first = a.upload_text(&a.user("alice"), "first.txt", &text).await;
        let alice = a.user("alice");
        let bob = b.user("bob");
        let (deleted, second) = tokio::join!(
            async {
                // The delete lands while the upload's put is under way.
                tokio::time::sleep(Duration::from_millis(30)).await;
                a.delete(&alice, &first).await
            },
            b.upload_text(&bob, "second.txt", &text),
        );
        assert_eq!(deleted.0, 204, "round {round}: {deleted:?}");
        let (status, _, bytes) = b
            .download(&bob, &format!("/v1/documents/{second}/content"))
            .await;
        assert_eq!(
            (status, bytes.as_slice()),
            (200, text.as_bytes()),
            "round {round}: the new document lost its blob"
        );
        assert_eq!(b.delete(&bob, &second).await.0, 204);
        let (blobs,): (i64,) = sqlx::query_as("SELECT count(*) FROM docs_blobs")
            .fetch_one(&mut records)
            .await
            .unwrap();
        assert_eq!(blobs, 0, "round {round}: a blob without a record");
    }
    drop(replicas);
    records.close().await.unwrap();
    db.drop_db().await;
}
