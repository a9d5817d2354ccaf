//! Per-user quotas and upload rate (issue 14 §18): a user cannot fill the
//! disk or keep the parser busy for everyone.

use std::sync::Arc;

use echo_docs::Limits;
use echo_edge::{RedisCounters, SharedCounters};

use crate::Fixture;

fn quota(bytes: u64, files: u64) -> Limits {
    Limits {
        quota_bytes: bytes,
        quota_files: files,
        ..Limits::default()
    }
}

#[tokio::test]
async fn stored_bytes_are_capped_per_user_with_a_problem_naming_the_limit() {
    let f = Fixture::with(quota(1000, 100), None).await;
    let (alice, bob) = (f.user("alice"), f.user("bob"));
    assert_eq!(f.upload(&alice, &[("a.txt", &[b'a'; 600])]).await.0, 201);
    let (status, body) = f.upload(&alice, &[("b.txt", &[b'b'; 401])]).await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["type"], "urn:echo:problem:quota_exceeded");
    assert_eq!(body["limit"], "ECHO_DOCS_QUOTA_BYTES");
    assert_eq!(
        (body["max"].as_u64(), body["used"].as_u64()),
        (Some(1000), Some(600))
    );
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("ECHO_DOCS_QUOTA_BYTES"),
        "{body}"
    );
    // Exactly up to the quota is fine; another user has their own.
    assert_eq!(f.upload(&alice, &[("b.txt", &[b'b'; 400])]).await.0, 201);
    assert_eq!(f.upload(&bob, &[("c.txt", &[b'c'; 1000])]).await.0, 201);

    // A request whose later file goes over stores none of its files.
    let (status, _) = f
        .upload(&bob, &[("d.txt", b"small"), ("e.txt", &[b'e'; 1000])])
        .await;
    assert_eq!(status, 413);
    let (_, list) = f.get(&bob, "/v1/documents").await;
    assert_eq!(list["documents"].as_array().unwrap().len(), 1);

    // Deleting frees room.
    let id = list["documents"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(f.delete(&bob, &id).await.0, 204);
    assert_eq!(f.upload(&bob, &[("f.txt", &[b'f'; 1000])]).await.0, 201);
    assert!(
        f.audit
            .events()
            .iter()
            .any(|e| e.action == "document.upload"
                && e.details.get("reason").is_some_and(|r| r == "quota_bytes")),
        "refusals are audited"
    );
}

#[tokio::test]
async fn documents_are_counted_per_user() {
    let f = Fixture::with(quota(1 << 30, 3), None).await;
    let alice = f.user("alice");
    let (status, _) = f
        .upload(&alice, &[("1.txt", b"one"), ("2.txt", b"two")])
        .await;
    assert_eq!(status, 201);
    let (status, body) = f
        .upload(&alice, &[("3.txt", b"three"), ("4.txt", b"four")])
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["limit"], "ECHO_DOCS_QUOTA_FILES");
    assert_eq!(f.upload_raw(&alice, "3.txt", b"three").await.0, 201);
    let (status, body) = f.upload_raw(&alice, "4.txt", b"four").await;
    assert_eq!(
        (status, &body["limit"]),
        (413, &"ECHO_DOCS_QUOTA_FILES".into())
    );

    let (_, list) = f.get(&alice, "/v1/documents").await;
    assert_eq!(
        list["usage"],
        serde_json::json!({"bytes": 11, "files": 3, "quota_bytes": 1u64 << 30, "quota_files": 3})
    );
}

/// Parallel uploads cannot each see the room only one of them has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_uploads_cannot_overrun_the_quota() {
    let f = Fixture::with(quota(1 << 30, 5), None).await;
    let alice = f.user("alice");
    let uploads = (0..20).map(|i| {
        let (f, alice) = (&f, &alice);
        async move { f.upload_raw(alice, &format!("{i}.txt"), b"hello").await.0 }
    });
    let statuses = futures_util::future::join_all(uploads).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        5,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 413),
        "{statuses:?}"
    );
    let (_, list) = f.get(&alice, "/v1/documents").await;
    assert_eq!(list["usage"]["files"], 5);
}

#[tokio::test]
async fn uploads_are_rate_limited_per_user() {
    let limits = Limits {
        uploads_per_minute: 3,
        ..Limits::default()
    };
    let f = Fixture::with(limits, None).await;
    let (alice, bob) = (f.user("alice"), f.user("bob"));
    for i in 0..3 {
        assert_eq!(f.upload_raw(&alice, &format!("{i}.txt"), b"x").await.0, 201);
    }
    let (status, body) = f.upload_raw(&alice, "3.txt", b"x").await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["type"], "urn:echo:problem:rate_limited");
    assert_eq!(f.upload_raw(&bob, "b.txt", b"x").await.0, 201, "per user");
    // A flood is audited once per window, not per request.
    for _ in 0..10 {
        assert_eq!(f.upload_raw(&alice, "x.txt", b"x").await.0, 429);
    }
    let audited = f
        .audit
        .events()
        .iter()
        .filter(|e| e.details.get("reason").is_some_and(|r| r == "rate_limited"))
        .count();
    assert_eq!(audited, 1);
}

/// Two replicas counting in one Redis: a user's uploads through both meet
/// the limit at their combined count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_counters_limit_uploads_together() {
    let keys = echo_testkit::RedisKeys::new();
    let counters: Arc<dyn SharedCounters> = Arc::new(
        RedisCounters::open(
            &keys.url,
            &echo_crypto::TrustedRoots::system(),
            &keys.prefix,
        )
        .await
        .unwrap(),
    );
    let limits = Limits {
        uploads_per_minute: 4,
        ..Limits::default()
    };
    let a = Fixture::with_shared_limits(limits.clone(), counters.clone()).await;
    let b = Fixture::with_shared_limits(limits, counters).await;
    // Fixed one-minute windows: start early enough in one to count in it.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
    for (i, replica) in [&a, &b, &a, &b].into_iter().enumerate() {
        let status = replica
            .upload_raw(&replica.user("alice"), &format!("{i}.txt"), b"x")
            .await
            .0;
        assert_eq!(status, 201, "upload {i}");
    }
    for replica in [&a, &b] {
        let (status, body) = replica
            .upload_raw(&replica.user("alice"), "over.txt", b"x")
            .await;
        assert_eq!(status, 429, "{body}");
    }
    assert_eq!(b.upload_raw(&b.user("bob"), "b.txt", b"x").await.0, 201);
}
