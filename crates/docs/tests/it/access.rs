//! Who may call what: a user only their own documents, an admin all, the
//! worker only with its scope, and nobody without a valid token.

use std::sync::Arc;

use async_trait::async_trait;
use echo_core::audit::Outcome;
use echo_crypto::JwkSet;
use echo_docs::Limits;
use echo_verify::{JwksSource, VerifyError};
use serde_json::json;

use crate::Fixture;

#[tokio::test]
async fn another_users_documents_are_invisible_and_look_unknown() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let bob = f.user("bob");
    let id = f
        .upload_text(&alice, "secret.txt", "The launch code is aardvark.")
        .await;
    f.index_as_worker(&id).await;
    let unknown = "0123456789abcdef0123456789abcdef";

    let (_, list) = f.get(&bob, "/v1/documents").await;
    assert_eq!(list["documents"], json!([]));
    for target in [id.as_str(), unknown] {
        let get = f.get(&bob, &format!("/v1/documents/{target}")).await;
        let content = f
            .get(&bob, &format!("/v1/documents/{target}/content"))
            .await;
        let delete = f.delete(&bob, target).await;
        let expected = (404, json!({"error": "document not found"}));
        assert_eq!(get, expected, "get {target}");
        assert_eq!(content, expected, "content {target}");
        assert_eq!(delete, expected, "delete {target}");
    }
    let (status, answer) = f.query(&bob, "What is the launch code?").await;
    assert_eq!(status, 200);
    assert_eq!(answer["citations"], json!([]), "{answer}");
    assert!(!answer.to_string().contains("aardvark"), "{answer}");

    // Alice still has it, whole.
    assert_eq!(f.get(&alice, &format!("/v1/documents/{id}")).await.0, 200);
    let denied: Vec<_> = f
        .audit
        .events()
        .into_iter()
        .filter(|e| e.action == "document.denied")
        .collect();
    assert_eq!(denied.len(), 6);
    assert!(denied.iter().all(|e| e.actor.as_deref() == Some("bob")));
    assert_eq!(denied[0].details["document_id"], id.as_str());
}

#[tokio::test]
async fn an_admin_sees_and_deletes_everyones_documents() {
    let f = Fixture::start().await;
    let a = f.upload_text(&f.user("alice"), "a.txt", "alpha").await;
    let b = f.upload_text(&f.user("bob"), "b.txt", "bravo").await;
    let root = f.admin("root");
    let (_, list) = f.get(&root, "/v1/documents").await;
    let mut ids: Vec<&str> = list["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = [a.as_str(), b.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    let (status, _, bytes) = f
        .download(&root, &format!("/v1/documents/{a}/content"))
        .await;
    assert_eq!((status, bytes.as_slice()), (200, &b"alpha"[..]));
    assert_eq!(f.delete(&root, &b).await.0, 204);
    let (_, list) = f.get(&f.user("bob"), "/v1/documents").await;
    assert_eq!(list["documents"], json!([]));
    let delete = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "document.delete")
        .unwrap();
    assert_eq!(delete.actor.as_deref(), Some("root"));
    assert_eq!(delete.details["owner"], "bob");
}

#[tokio::test]
async fn worker_endpoints_need_a_service_token_with_docs_index() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let id = f.upload_text(&alice, "a.txt", "alpha").await;
    let chunks = json!([{"position": 0, "start": 0, "text": "alpha"}]);
    let refused = json!({"error": "a service token with scope docs.index is required"});
    let unscoped =
        f.token(json!({"sub": "reporter", "client_id": "reporter", "scope": "audit.write"}));
    for token in [&alice, &f.admin("root"), &unscoped] {
        assert_eq!(
            f.put_index(token, &id, chunks.clone()).await,
            (403, refused.clone())
        );
    }
    assert_eq!(
        f.get(&unscoped, &format!("/v1/documents/{id}/content"))
            .await,
        (403, refused)
    );
    assert_eq!(f.index.chunk_count(&id).unwrap(), 0);
    // Each refusal is audited with the token's subject.
    let denied = access_denied(&f);
    let subjects: Vec<_> = denied.iter().map(|e| e.actor.as_deref().unwrap()).collect();
    assert_eq!(subjects, ["alice", "root", "reporter", "reporter"]);
    assert!(
        denied
            .iter()
            .all(|e| e.details["reason"] == "a service token with scope docs.index is required")
    );
    // The worker reads any document, and indexes it.
    let (status, _, bytes) = f
        .download(&f.worker(), &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!((status, bytes.as_slice()), (200, &b"alpha"[..]));
    assert_eq!(f.put_index(&f.worker(), &id, chunks).await.0, 204);
}

#[tokio::test]
async fn service_tokens_are_refused_on_user_endpoints() {
    let f = Fixture::start().await;
    let worker = f.worker();
    let refused = (403, json!({"error": "a user token is required"}));
    assert_eq!(f.get(&worker, "/v1/documents").await, refused);
    assert_eq!(f.upload(&worker, &[("a.txt", b"a")]).await, refused);
    assert_eq!(f.query(&worker, "anything?").await, refused);
    let id = f.upload_text(&f.user("alice"), "a.txt", "alpha").await;
    assert_eq!(
        f.get(&worker, &format!("/v1/documents/{id}")).await,
        refused
    );
    assert_eq!(f.delete(&worker, &id).await, refused);
    let denied = access_denied(&f);
    assert_eq!(denied.len(), 5);
    assert!(denied.iter().all(|e| e.actor.as_deref() == Some("worker")
        && e.details["reason"] == "a user token is required"
        && e.ip.as_deref() == Some("127.0.0.1")));
}

#[tokio::test]
async fn missing_or_invalid_tokens_are_401_with_a_challenge() {
    let f = Fixture::start().await;
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/v1/documents", f.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        r#"Bearer realm="echo""#
    );
    for token in [
        f.token(json!({"aud": "parser"})),
        f.token(json!({"exp": 1_000_000})),
    ] {
        let response = client
            .get(format!("{}/v1/documents", f.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(body["error"].is_string());
    }
    let denied = access_denied(&f);
    let reasons: Vec<_> = denied.iter().map(|e| e.details["reason"].clone()).collect();
    assert_eq!(
        reasons,
        [
            json!("missing bearer token"),
            json!("wrong_audience"),
            json!("expired")
        ]
    );
    assert!(
        denied
            .iter()
            .all(|e| e.actor.is_none() && e.outcome == Outcome::Failure)
    );
}

/// The `docs.access.denied` events recorded so far, in order.
fn access_denied(f: &Fixture) -> Vec<echo_core::audit::AuditEvent> {
    f.audit
        .events()
        .into_iter()
        .filter(|e| e.action == "docs.access.denied")
        .collect()
}

#[tokio::test]
async fn without_identitys_keys_requests_are_503() {
    struct Down;
    #[async_trait]
    impl JwksSource for Down {
        async fn fetch(&self) -> Result<JwkSet, VerifyError> {
            Err(VerifyError::KeysUnavailable("identity is down".into()))
        }
    }
    let f = Fixture::with_keys(Limits::default(), None, Some(Arc::new(Down))).await;
    let (status, body) = f.get(&f.user("alice"), "/v1/documents").await;
    assert_eq!(
        (status, body),
        (503, json!({"error": "signing keys unavailable"}))
    );
}
