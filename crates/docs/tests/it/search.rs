//! The worker's index writes and questions over them.

use serde_json::json;

use crate::Fixture;

#[tokio::test]
async fn an_indexed_document_answers_questions_with_citations() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let manual = f
        .upload_text(
            &alice,
            "manual.txt",
            "The espresso machine needs descaling every three months. Use citric acid.",
        )
        .await;
    let other = f
        .upload_text(
            &alice,
            "garden.txt",
            "Tomatoes need full sun and regular watering.",
        )
        .await;
    f.index_as_worker(&manual).await;
    f.index_as_worker(&other).await;

    let (status, answer) = f
        .query(
            &alice,
            "How often does the espresso machine need descaling?",
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let citations = answer["citations"].as_array().unwrap();
    assert!(!citations.is_empty(), "{answer}");
    assert_eq!(citations[0]["document_id"], manual.as_str());
    assert_eq!(citations[0]["name"], "manual.txt");
    assert_eq!(citations[0]["position"], 0);
    assert!(
        answer["answer"].as_str().unwrap().contains("three months"),
        "{answer}"
    );

    let query = f
        .audit
        .events()
        .into_iter()
        .find(|e| e.action == "query")
        .unwrap();
    assert_eq!(query.actor.as_deref(), Some("alice"));
    assert_eq!(query.details["question_chars"], 51);
    assert!(
        !format!("{query:?}").contains("espresso"),
        "no question text in the audit"
    );
}

#[tokio::test]
async fn indexing_twice_indexes_once() {
    let f = Fixture::start().await;
    let id = f
        .upload_text(
            &f.user("alice"),
            "a.txt",
            "One paragraph.\n\nAnother paragraph.",
        )
        .await;
    let chunks = json!([
        {"position": 0, "start": 0, "text": "One paragraph."},
        {"position": 1, "start": 16, "text": "Another paragraph."},
    ]);
    assert_eq!(f.put_index(&f.worker(), &id, chunks.clone()).await.0, 204);
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 2);
    assert_eq!(f.put_index(&f.worker(), &id, chunks).await.0, 204);
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 2);
}

#[tokio::test]
async fn deleting_a_document_removes_its_chunks() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let id = f.upload_text(&alice, "a.txt", "Zebras are striped.").await;
    f.index_as_worker(&id).await;
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 1);
    assert_eq!(f.delete(&alice, &id).await.0, 204);
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 0);
    let (_, answer) = f.query(&alice, "zebras").await;
    assert_eq!(answer["citations"], json!([]));
}

#[tokio::test]
async fn indexing_a_deleted_document_is_404_and_leaves_nothing() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    let id = f.upload_text(&alice, "a.txt", "Ephemeral words.").await;
    assert_eq!(f.delete(&alice, &id).await.0, 204);
    let chunks = json!([{"position": 0, "start": 0, "text": "Ephemeral words."}]);
    let (status, body) = f.put_index(&f.worker(), &id, chunks).await;
    assert_eq!(
        (status, body),
        crate::problem(404, "not_found", "document not found")
    );
    assert_eq!(f.index.chunk_count(&id).await.unwrap(), 0);
    let (status, _, _) = f
        .download(&f.worker(), &format!("/v1/documents/{id}/content"))
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn deletes_racing_index_writes_leave_no_chunks() {
    let f = std::sync::Arc::new(Fixture::start().await);
    let alice = f.user("alice");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            f.upload_text(&alice, "r.txt", &format!("Race number {i}."))
                .await,
        );
    }
    let mut tasks = Vec::new();
    for id in &ids {
        let (f1, f2) = (f.clone(), f.clone());
        let (id1, id2, alice) = (id.clone(), id.clone(), alice.clone());
        tasks.push(tokio::spawn(async move {
            let chunks = json!([{"position": 0, "start": 0, "text": "Race."}]);
            f1.put_index(&f1.worker(), &id1, chunks).await.0
        }));
        tasks.push(tokio::spawn(async move { f2.delete(&alice, &id2).await.0 }));
    }
    for task in tasks {
        assert!([204, 404].contains(&task.await.unwrap()));
    }
    for id in &ids {
        assert_eq!(f.index.chunk_count(id).await.unwrap(), 0, "{id}");
    }
}

#[tokio::test]
async fn questions_must_have_1_to_1000_characters() {
    let f = Fixture::start().await;
    let alice = f.user("alice");
    for question in ["", "   ", &"x".repeat(1001)] {
        let (status, body) = f.query(&alice, question).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("1 to 1000"),
            "{body}"
        );
    }
    assert_eq!(f.query(&alice, &"é".repeat(1000)).await.0, 200);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/query", f.url))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(body["detail"].is_string());
}
