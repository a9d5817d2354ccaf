//! The worker against fake docs and parser services (one axum app) and a
//! SQLite queue: what each answer of the services does to a job, and how
//! each job's trace goes on to the services and into its audit event.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use echo_core::audit::{MemoryAuditSink, Outcome};
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
    /// The trace id of each call's `traceparent`: (`content`, `parse` or
    /// `index`, the document's text or id, trace id).
    traces: Vec<(&'static str, String, String)>,
    /// The `503`s docs answered for the document `outage`.
    outage_refusals: u32,
}

/// How many times docs answers `503` for `outage`'s content before it
/// serves it: its PostgreSQL away for a while.
const OUTAGE_REFUSALS: u32 = 3;

/// Records the trace id of the call's `traceparent` (which must be valid).
fn saw_trace(seen: &Shared, headers: &HeaderMap, call: &'static str, document: &str) {
    let traceparent = headers["traceparent"].to_str().unwrap();
    let (trace_id, _, _) = echo_edge::trace::parse_traceparent(traceparent).unwrap();
    seen.lock()
        .unwrap()
        .traces
        .push((call, document.to_owned(), trace_id.to_owned()));
}

type Shared = Arc<Mutex<Seen>>;

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {token}"))
}

/// Docs: a document's content is its id (`gone` is deleted; `outage` is
/// unavailable, `Retry-After: 1`, for its first [`OUTAGE_REFUSALS`] asks).
async fn content(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if !authorized(&headers, "docs-token") {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    saw_trace(&seen, &headers, "content", &id);
    if id == "gone" {
        return (StatusCode::NOT_FOUND, r#"{"detail":"document not found"}"#).into_response();
    }
    if id == "outage" {
        let mut seen = seen.lock().unwrap();
        if seen.outage_refusals < OUTAGE_REFUSALS {
            seen.outage_refusals += 1;
            return (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")]).into_response();
        }
    }
    let disposition = format!("attachment; filename=\"{id}.txt\"");
    ([("content-disposition", disposition)], id).into_response()
}

/// Parser: `corrupt` is refused, `flaky` is a 503 (`Retry-After: 0`)
/// every time, anything else is its own text.
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
    saw_trace(&seen, &headers, "parse", &text);
    match text.as_str() {
        "corrupt" => (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"detail": "the PDF is truncated"})),
        )
            .into_response(),
        "flaky" => (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "0")],
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
    saw_trace(&seen, &headers, "index", &id);
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

/// A SQLite queue in `dir` that retries within milliseconds, up to
/// `max_attempts`.
async fn quick_queue(dir: &tempfile::TempDir, max_attempts: u32) -> Arc<dyn JobQueue> {
    let config = QueueConfig {
        max_attempts,
        backoff_base: Duration::from_millis(20),
        backoff_cap: Duration::from_millis(50),
        ..QueueConfig::default()
    };
    Arc::new(
        SqliteQueue::open(&dir.path().join("queue.db"), config)
            .await
            .unwrap(),
    )
}

/// A worker of the fake services at `url` that looks for jobs every 20 ms.
fn quick_worker(url: &str) -> WorkerConfig {
    let mut config = WorkerConfig::new(url, url, "test-worker");
    config.idle_poll = Duration::from_millis(20);
    config.lease = Duration::from_secs(5);
    config
}

/// The worker of `config` running on `queue` with fixed tokens, auditing
/// into `audit`: what stops it, and its task.
fn start_worker(
    queue: &Arc<dyn JobQueue>,
    config: WorkerConfig,
    audit: &Arc<MemoryAuditSink>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let tokens = Tokens {
        docs: Arc::new(Fixed("docs-token")),
        parser: Arc::new(Fixed("parser-token")),
    };
    let worker = Worker::new(queue.clone(), tokens, config, audit.clone()).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(worker.run(async {
        let _ = stopped.await;
    }));
    (stop, running)
}

#[tokio::test]
async fn each_answer_of_the_services_ends_the_job_as_it_should() {
    let dir = echo_testkit::data_dir();
    let queue = quick_queue(&dir, 2).await;
    let seen = Shared::default();
    let url = services(seen.clone()).await;

    // The upload's trace comes with alpha's job; gone's is malformed (so
    // it gets a trace of its own), the others have none.
    let upload_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut ids = Vec::new();
    for document in ["alpha", "gone", "corrupt", "flaky"] {
        let traceparent = match document {
            "alpha" => format!("00-{upload_trace}-00f067aa0ba902b7-01"),
            "gone" => format!("00-{upload_trace}-00f067aa0ba902b7-01-junk"),
            _ => String::new(),
        };
        let payload = match traceparent.as_str() {
            "" => json!({ "document_id": document }),
            _ => json!({ "document_id": document, "traceparent": traceparent }),
        };
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

    let mut worker_config = quick_worker(&url);
    // flaky's 503s are waited out for a while, then fail the attempt.
    worker_config.unavailable_patience = Duration::from_millis(300);
    let audit = Arc::new(MemoryAuditSink::default());
    let (stop, running) = start_worker(&queue, worker_config, &audit);

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
        "a 503 outlasting the patience: retried, then dead-lettered"
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

    // Every call of alpha's job went on in the upload's trace.
    let trace_of = |call: &str, document: &str| {
        seen.traces
            .iter()
            .filter(|(c, d, _)| *c == call && d == document)
            .map(|(_, _, t)| t.clone())
            .collect::<HashSet<_>>()
    };
    let upload = HashSet::from([upload_trace.to_owned()]);
    for call in ["content", "parse", "index"] {
        assert_eq!(trace_of(call, "alpha"), upload, "{call}");
    }
    let gone_trace = trace_of("content", "gone");
    assert_eq!(gone_trace.len(), 1);
    assert!(
        !gone_trace.contains(upload_trace),
        "a malformed traceparent starts a new trace"
    );
    // Each run is audited once, in its trace; flaky's two runs are two.
    let events = audit.events();
    let runs_of = |document: &str| {
        events
            .iter()
            .filter(|e| e.details.get("document_id").and_then(Value::as_str) == Some(document))
            .collect::<Vec<_>>()
    };
    let alpha_runs = runs_of("alpha");
    assert_eq!(alpha_runs.len(), 1, "{events:?}");
    let alpha_run = alpha_runs[0];
    assert_eq!(
        (alpha_run.action, alpha_run.outcome),
        ("document.index", Outcome::Success)
    );
    assert_eq!(alpha_run.trace_id.as_deref(), Some(upload_trace));
    assert_eq!(alpha_run.actor.as_deref(), Some("test-worker"));
    assert_eq!(alpha_run.details["chunks"], 1);
    assert_eq!(runs_of("gone")[0].details["deleted"], true);
    assert_eq!(
        runs_of("gone")[0].trace_id.as_ref(),
        gone_trace.iter().next()
    );
    let corrupt_runs = runs_of("corrupt");
    assert_eq!(corrupt_runs[0].outcome, Outcome::Failure);
    assert_eq!(corrupt_runs[0].details["error"], "the PDF is truncated");
    assert_eq!(runs_of("flaky").len(), 2);
    assert!(
        events
            .iter()
            .all(|e| e.action == "document.index"
                && e.trace_id.as_ref().is_some_and(|t| t.len() == 32)),
        "{events:?}"
    );
    assert_eq!(events.len(), 7, "six jobs, flaky run twice: {events:?}");
}

/// docs answering `503` for a while (its engine away) is waited out, as
/// its `Retry-After` says, within the same attempt: the job is done at its
/// first attempt, however many attempts the 503s would have spent.
#[tokio::test]
async fn a_503_is_waited_out_without_spending_an_attempt() {
    let dir = echo_testkit::data_dir();
    let queue = quick_queue(&dir, QueueConfig::default().max_attempts).await;
    let seen = Shared::default();
    let url = services(seen.clone()).await;
    let id = queue
        .enqueue(
            INDEX_DOCUMENT,
            &json!({ "document_id": "outage" }),
            Some("outage"),
        )
        .await
        .unwrap();
    let audit = Arc::new(MemoryAuditSink::default());
    let (stop, running) = start_worker(&queue, quick_worker(&url), &audit);

    let started = Instant::now();
    let statuses = wait_until_ended(&*queue, std::slice::from_ref(&id)).await;
    let took = started.elapsed();
    let _ = stop.send(());
    running.await.unwrap();

    assert_eq!(
        (statuses[0].state, statuses[0].attempts),
        (JobState::Done, 1),
        "{statuses:?}"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.outage_refusals, OUTAGE_REFUSALS);
    assert!(seen.indexed.contains_key("outage"));
    let asks = seen
        .traces
        .iter()
        .filter(|(call, document, _)| *call == "content" && document == "outage")
        .count();
    assert_eq!(asks, 4, "three 503s, then the content");
    assert!(
        took >= Duration::from_secs(3),
        "Retry-After: 1 after each 503, took {took:?}"
    );
}
