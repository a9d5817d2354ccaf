//! Who may call what: a user only their own documents, an admin all, the
//! worker only with its scope, and nobody without a valid token.

use std::sync::Arc;

use async_trait::async_trait;
use echo_core::audit::Outcome;
use echo_crypto::JwkSet;
use echo_docs::Limits;
use echo_verify::{JwksSource, VerifyError};
use serde_json::json;

use echo_testkit::refusals::{REASONS, assert_refused_alike, bad_tokens};

use crate::{Fixture, problem};

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
        let expected = problem(404, "not_found", "document not found");
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

/// A 403 of the edge's for a token lacking `needed`.
fn forbidden(reason: &str, needed: &str, detail: &str) -> (u16, serde_json::Value) {
    let (status, mut body) = problem(403, "forbidden", detail);
    body["reason"] = json!(reason);
    body["needed"] = json!(needed);
    (status, body)
}

#[tokio::test]
async fn worker_endpoints_need_a_service_token_with_docs_index() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let id = f.upload_text(&alice, "a.txt", "alpha").await;
    let chunks = json!([{"position": 0, "start": 0, "text": "alpha"}]);
    let user_token = forbidden(
        "wrong_kind",
        "a service token",
        "this token cannot be used here",
    );
    let unscoped =
        f.token(json!({"sub": "reporter", "client_id": "reporter", "scope": "audit.write"}));
    for token in [&alice, &f.admin("root")] {
        assert_eq!(
            f.put_index(token, &id, chunks.clone()).await,
            user_token.clone()
        );
    }
    let no_scope = forbidden(
        "insufficient_scope",
        "docs.index",
        "the token lacks the scope this needs",
    );
    assert_eq!(f.put_index(&unscoped, &id, chunks.clone()).await, no_scope);
    assert_eq!(
        f.get(&unscoped, &format!("/v1/documents/{id}/content"))
            .await,
        no_scope
    );
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 0);
    // Each refusal is audited with the token's subject; the repeat of the
    // same refusal (address, reason, subject) is only counted.
    let denied = access_denied(&f);
    let refused: Vec<_> = denied
        .iter()
        .map(|e| {
            (
                e.actor.as_deref().unwrap(),
                e.details["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("alice", "wrong_kind"),
            ("root", "wrong_kind"),
            ("reporter", "insufficient_scope")
        ]
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
    let refused = forbidden(
        "wrong_kind",
        "a user token",
        "this token cannot be used here",
    );
    assert_eq!(f.get(&worker, "/v1/documents").await, refused);
    assert_eq!(f.upload(&worker, &[("a.txt", b"a")]).await, refused);
    assert_eq!(f.query(&worker, "anything?").await, refused);
    let id = f.upload_text(&f.user("alice"), "a.txt", "alpha").await;
    assert_eq!(
        f.get(&worker, &format!("/v1/documents/{id}")).await,
        refused
    );
    assert_eq!(f.delete(&worker, &id).await, refused);
    // Five refusals of one kind from one address: one event now, the
    // other four counted into the window's summary.
    let denied = access_denied(&f);
    assert_eq!(denied.len(), 1);
    let event = &denied[0];
    assert_eq!(event.actor.as_deref(), Some("worker"));
    assert_eq!(event.details["reason"], "wrong_kind");
    assert_eq!(event.details["client_id"], "worker");
    assert_eq!(event.ip.as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn bad_tokens_are_refused_alike_and_audited_once_each() {
    let f = Fixture::start().await;
    let claims =
        json!({"iss": crate::ISSUER, "aud": "docs", "sub": "alice", "client_id": "gateway"});
    let url = format!("{}/v1/documents", f.url);
    assert_refused_alike(bad_tokens(f.key(), &claims), |token| {
        let mut request = reqwest::Client::new().get(&url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    })
    .await;
    let denied = access_denied(&f);
    let reasons: Vec<_> = denied
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, REASONS);
    assert!(denied.iter().all(|e| e.actor.is_none()
        && e.outcome == Outcome::Failure
        && e.details["service"] == "docs"));
}

/// The `access.denied` events recorded so far, in order.
fn access_denied(f: &Fixture) -> Vec<echo_core::audit::AuditEvent> {
    f.audit
        .events()
        .into_iter()
        .filter(|e| e.action == "access.denied")
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
        problem(
            503,
            "keys_unavailable",
            "the signing keys cannot be fetched; try again shortly"
        )
    );
}
