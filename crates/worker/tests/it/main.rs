//! The worker against fake docs and parser services (one axum app) and a
//! SQLite queue: what each answer of the services does to a job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use echo_edge::TokenSource;
use echo_queue::{JobId, JobQueue, JobState, JobStatus, QueueConfig, SqliteQueue};
use echo_worker::{INDEX_DOCUMENT, Tokens, Worker, WorkerConfig};
use serde_json::{Value, json};

/// A token source that always gives the same token.
struct Fixed(&'static str);

#[async_trait::async_trait]
impl TokenSource for Fixed {
    async fn token(&self) -> Result<String, String> {
        Ok(self.0.to_owned())
    }
}

/// What the fake services saw.
#[derive(Default)]
struct Seen {
    /// Document id → the chunks PUT to its index.
    indexed: HashMap<String, Vec<Value>>,
    /// The `filename` of every parse.
    filenames: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Seen>>;

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

/// Docs: a document's content is its id (`gone` is deleted).
async fn content(headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&headers, "docs-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if id == "gone" {
        return (StatusCode::NOT_FOUND, r#"{"detail":"document not found"}"#).into_response();
    }
    let disposition = format!("attachment; filename=\"{id}.txt\"");
    ([("content-disposition", disposition)], id).into_response()
}

/// Parser: `corrupt` is refused, `flaky` is a 503, anything else is its
/// own text.
async fn parse(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if !authorized(&headers, "parser-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    seen.lock()
        .unwrap()
        .filenames
        .push(query.get("filename").cloned());
    let text = String::from_utf8_lossy(&body).into_owned();
    match text.as_str() {
        "corrupt" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": "the PDF is truncated"})),
        )
            .into_response(),
        "flaky" => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"detail": "signing keys unavailable"})),
        )
            .into_response(),
        _ => axum::Json(json!({"type": "txt", "text": format!("The {text} document."), "metadata": {}, "truncated": false, "chars": 0}))
            .into_response(),
    }
}

async fn index(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> StatusCode {
    if !authorized(&headers, "docs-token") {
        return StatusCode::UNAUTHORIZED;
    }
    let chunks = body["chunks"].as_array().cloned().unwrap_or_default();
    seen.lock().unwrap().indexed.insert(id, chunks);
    StatusCode::NO_CONTENT
}

async fn services(seen: Shared) -> String {
    let app = Router::new()
        .route("/v1/documents/{id}/content", get(content))
        .route("/v1/documents/{id}/index", put(index))
        .route("/v1/parse", post(parse))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

async fn wait_until_ended(queue: &dyn JobQueue, ids: &[JobId]) -> Vec<JobStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut statuses = Vec::new();
        for id in ids {
            statuses.push(queue.status(id).await.unwrap().unwrap());
        }
        if statuses
            .iter()
            .all(|s| matches!(s.state, JobState::Done | JobState::Failed))
        {
            return statuses;
        }
        assert!(Instant::now() < deadline, "{statuses:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_answer_of_the_services_ends_the_job_as_it_should() {
    let dir = echo_testkit::data_dir();
    let config = QueueConfig {
        max_attempts: 2,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    let queue: Arc<dyn JobQueue> = Arc::new(
        SqliteQueue::open(&dir.path().join("queue.db"), config)
            .await
            .unwrap(),
    );
    let seen = Shared::default();
    let url = services(seen.clone()).await;

    let mut ids = Vec::new();
    for document in ["alpha", "gone", "corrupt", "flaky"] {
        let payload = json!({ "document_id": document });
        ids.push(
            queue
                .enqueue(INDEX_DOCUMENT, &payload, Some(document))
                .await
                .unwrap(),
        );
    }
    ids.push(
        queue
            .enqueue("resize_image", &json!({}), None)
            .await
            .unwrap(),
    );
    ids.push(
        queue
            .enqueue(INDEX_DOCUMENT, &json!({"document_id": "../etc"}), None)
            .await
            .unwrap(),
    );

    let tokens = Tokens {
        docs: Arc::new(Fixed("docs-token")),
        parser: Arc::new(Fixed("parser-token")),
    };
    let mut worker_config = WorkerConfig::new(&url, &url, "test-worker");
    worker_config.idle_poll = Duration::from_millis(20);
    worker_config.lease = Duration::from_secs(5);
    let worker = Worker::new(queue.clone(), tokens, worker_config).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));

    let statuses = wait_until_ended(&*queue, &ids).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the worker stops when asked")
        .unwrap();

    let [alpha, gone, corrupt, flaky, unknown, bad_id] = &statuses[..] else {
        panic!("{statuses:?}");
    };
    assert_eq!(
        (alpha.state, alpha.progress, alpha.attempts),
        (JobState::Done, 100, 1)
    );
    assert_eq!(
        (gone.state, gone.attempts),
        (JobState::Done, 1),
        "deleted: nothing to do"
    );
    assert_eq!(
        (
            corrupt.state,
            corrupt.attempts,
            corrupt.last_error.as_deref()
        ),
        (JobState::Failed, 1, Some("the PDF is truncated")),
        "refused at once, in the parser's words"
    );
    assert_eq!(
        (flaky.state, flaky.attempts, flaky.last_error.as_deref()),
        (JobState::Failed, 2, Some("the parser service answered 503")),
        "retried, then dead-lettered"
    );
    assert_eq!((unknown.state, unknown.attempts), (JobState::Failed, 1));
    assert!(
        unknown
            .last_error
            .as_deref()
            .unwrap()
            .contains("unknown job kind")
    );
    assert_eq!((bad_id.state, bad_id.attempts), (JobState::Failed, 1));

    let seen = seen.lock().unwrap();
    assert_eq!(seen.indexed.keys().collect::<Vec<_>>(), ["alpha"]);
    let chunks = &seen.indexed["alpha"];
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["text"], "The alpha document.");
    assert_eq!(chunks[0]["position"], 0);
    assert!(
        seen.filenames.contains(&Some("alpha.txt".to_owned())),
        "the name from Content-Disposition: {:?}",
        seen.filenames
    );
}
