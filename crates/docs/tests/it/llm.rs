//! Answers written by a language model: a small OpenAI-compatible server
//! started by the test records every prompt it is sent.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use echo_docs::{Limits, LlmClient};
use serde_json::{Value, json};

use crate::Fixture;

type Prompts = Arc<Mutex<Vec<String>>>;

/// A chat-completions server answering "Descale every three months [1]."
/// to everything; returns its base URL (ending in `/v1`) and the request
/// bodies it received.
async fn fake_llm() -> (String, Prompts) {
    async fn completions(State(prompts): State<Prompts>, Json(body): Json<Value>) -> Json<Value> {
        prompts.lock().unwrap().push(body.to_string());
        Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Descale every three months [1]."},
                "finish_reason": "stop"
            }]
        }))
    }
    let prompts = Prompts::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(completions))
        .with_state(prompts.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, prompts)
}

#[tokio::test]
async fn the_prompt_holds_only_the_callers_passages() {
    let (url, prompts) = fake_llm().await;
    let llm = LlmClient::new(
        &url,
        Some("sk-test".into()),
        "test-model",
        Duration::from_secs(5),
        &Default::default(),
    )
    .unwrap();
    let f = Fixture::with(Limits::default(), Some(llm)).await;
    let alice = f.user("alice");
    let bob = f.user("bob");
    let hers = f
        .upload_text(
            &alice,
            "alice.txt",
            "Alice's espresso machine: descale it every three months.",
        )
        .await;
    let his = f
        .upload_text(
            &bob,
            "bob.txt",
            "Bob's espresso machine: descale it weekly, secret-bob-detail.",
        )
        .await;
    f.index_as_worker(&hers).await;
    f.index_as_worker(&his).await;

    let (status, answer) = f
        .query(&alice, "How often should the espresso machine be descaled?")
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["answer"], "Descale every three months [1].");
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty());
    assert!(
        citations.iter().all(|c| c["document_id"] == hers.as_str()),
        "{answer}"
    );

    let prompts = prompts.lock().unwrap().clone();
    assert_eq!(prompts.len(), 1);
    assert!(
        prompts[0].contains("descale it every three months"),
        "{}",
        prompts[0]
    );
    assert!(!prompts[0].contains("secret-bob-detail"), "{}", prompts[0]);
    assert!(!prompts[0].contains("weekly"), "{}", prompts[0]);
    let query = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "query")
        .unwrap();
    assert_eq!(query.details["generated"], true);
}

#[tokio::test]
async fn without_passages_the_model_is_not_asked() {
    let (url, prompts) = fake_llm().await;
    let llm = LlmClient::new(
        &url,
        None,
        "test-model",
        Duration::from_secs(5),
        &Default::default(),
    )
    .unwrap();
    let f = Fixture::with(Limits::default(), Some(llm)).await;
    let (status, answer) = f.query(&f.user("alice"), "Anything at all?").await;
    assert_eq!(status, 200);
    assert_eq!(answer["citations"], json!([]));
    assert!(prompts.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_unreachable_model_is_a_502_without_details() {
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    drop(listener);
    let llm = LlmClient::new(
        &url,
        Some("sk-secret".into()),
        "m",
        Duration::from_secs(2),
        &Default::default(),
    )
    .unwrap();
    let f = Fixture::with(Limits::default(), Some(llm)).await;
    let alice = f.user("alice");
    let id = f
        .upload_text(&alice, "a.txt", "Kiwis are flightless birds.")
        .await;
    f.index_as_worker(&id).await;
    let (status, body) = f.query(&alice, "Can kiwis fly?").await;
    assert_eq!(status, 502, "{body}");
    let message = body["detail"].as_str().unwrap();
    assert!(
        !message.contains("127.0.0.1") && !message.contains("sk-secret"),
        "{message}"
    );
}
