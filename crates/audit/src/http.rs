//! The audit service's HTTP face.
//!
//! - `POST /v1/events`: a batch, as a JSON array or NDJSON.
//! - `POST /log`: the original design's single event
//!   `{"service","level","message","context"}`.
//! - `GET /v1/events`: filtered, newest first, keyset-paginated
//!   (`cursor`), or NDJSON with `Accept: application/x-ndjson`.
//! - `GET /v1/checkpoint`: the newest signed checkpoint and the key that
//!   verifies it.
//!
//! Every request needs a bearer JWT from identity whose `aud` is the audit
//! service's audience, verified locally with the shared verifier.

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use echo_verify::{Claims, Expectations, Verifier, VerifyError};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chain::ChainedEvent;
use crate::service::{AuditError, AuditService};
use crate::store::{Cursor, EventQuery, search_words};

/// Largest request body accepted (a full batch of large events).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the HTTP layer needs.
pub struct AuditApp {
    pub service: AuditService,
    pub verifier: Arc<Verifier>,
    /// The `aud` writers' and readers' tokens must carry.
    pub audience: String,
}

type AppState = State<Arc<AuditApp>>;

pub fn router(app: Arc<AuditApp>) -> Router {
    Router::new()
        .route("/v1/events", post(ingest).get(query))
        .route("/log", post(log))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/ping", get(|| async { "pong" }))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<AuditApp>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    echo_web::serve(listener, router(app), shutdown).await
}

fn problem(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({"error": message}))).into_response()
}

impl IntoResponse for AuditError {
    fn into_response(self) -> Response {
        let status = match &self {
            AuditError::InvalidEvent { .. } | AuditError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AuditError::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            AuditError::Impersonation { .. } | AuditError::Forbidden => StatusCode::FORBIDDEN,
            AuditError::Store(_) | AuditError::ChainBroken(_) => {
                tracing::error!(error = %self, "audit storage failure");
                return problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            }
        };
        problem(status, &self.to_string())
    }
}

/// The caller's verified claims, or the 401/503 to answer.
async fn caller(app: &AuditApp, headers: &HeaderMap) -> Result<Arc<Claims>, Response> {
    let Some(token) = echo_web::bearer(headers) else {
        return Err(unauthorized("missing bearer token", None));
    };
    app.verifier
        .verify(token, &Expectations::access_token(&app.audience))
        .await
        .map_err(|e| match e {
            VerifyError::KeysUnavailable(_) => {
                problem(StatusCode::SERVICE_UNAVAILABLE, "signing keys unavailable")
            }
            other => unauthorized(other.code(), Some(other.code())),
        })
}

/// 401 with the RFC 6750 challenge; `refused` names why a token was refused.
fn unauthorized(message: &str, refused: Option<&str>) -> Response {
    let mut response = problem(StatusCode::UNAUTHORIZED, message);
    echo_web::bearer_challenge(&mut response, refused);
    response
}

/// A JSON array, one JSON object, or NDJSON (one object per line).
fn parse_batch(body: &[u8]) -> Result<Vec<Value>, AuditError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| AuditError::BadRequest("body is not UTF-8".into()))?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        return serde_json::from_str(trimmed)
            .map_err(|e| AuditError::BadRequest(format!("malformed JSON: {e}")));
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str(line)
                .map_err(|e| AuditError::BadRequest(format!("line {}: malformed JSON: {e}", n + 1)))
        })
        .collect()
}

async fn ingest(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let writer = match caller(&app, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let result = async { app.service.ingest(&writer, parse_batch(&body)?).await }.await;
    match result {
        Ok(appended) => (
            StatusCode::OK,
            Json(json!({"stored": appended.stored, "duplicates": appended.duplicates, "size": appended.head.size})),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LogRequest {
    #[serde(default)]
    service: Option<String>,
    level: String,
    message: String,
    #[serde(default)]
    context: Value,
}

/// The original design's endpoint: one message, action `log.<level>`.
async fn log(State(app): AppState, headers: HeaderMap, body: Bytes) -> Response {
    let writer = match caller(&app, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let request: LogRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return problem(StatusCode::BAD_REQUEST, &format!("malformed JSON: {e}")),
    };
    let mut event = json!({
        "level": request.level,
        "action": format!("log.{}", request.level.to_ascii_lowercase()),
        "message": request.message,
        "context": request.context,
    });
    if let Some(service) = request.service {
        event["service"] = service.into();
    }
    match app.service.ingest(&writer, vec![event]).await {
        Ok(appended) => (StatusCode::OK, Json(json!({"stored": appended.stored}))).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct QueryParams {
    service: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    level: Option<String>,
    outcome: Option<String>,
    since: Option<i64>,
    until: Option<i64>,
    q: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn event_json(row: &ChainedEvent) -> Value {
    let mut value = serde_json::to_value(&row.event).unwrap_or(Value::Null);
    value["seq"] = row.seq.into();
    value
}

async fn query(
    State(app): AppState,
    headers: HeaderMap,
    params: Result<Query<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let reader = match caller(&app, &headers).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let Ok(Query(p)) = params else {
        return problem(StatusCode::BAD_REQUEST, "malformed query parameters");
    };
    let before = match p.cursor.as_deref().map(str::parse::<Cursor>) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(())) => {
            return problem(StatusCode::BAD_REQUEST, "cursor: not a next_cursor value");
        }
    };
    let words = search_words(p.q.as_deref().unwrap_or_default());
    if p.q.as_deref().is_some_and(|q| !q.trim().is_empty()) && words.is_empty() {
        return problem(
            StatusCode::BAD_REQUEST,
            "q: free text needs a letter or digit",
        );
    }
    let query = EventQuery {
        service: p.service,
        action: p.action,
        actor: p.actor,
        level: p.level,
        outcome: p.outcome,
        since: p.since,
        until: p.until,
        words,
        before,
        limit: p.limit.unwrap_or(100),
    };
    let limit = query.limit;
    match app.service.query(&reader, query).await {
        Ok(rows) => {
            let ndjson = headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("ndjson"));
            if ndjson {
                let mut body = String::new();
                for row in &rows {
                    body.push_str(&event_json(row).to_string());
                    body.push('\n');
                }
                return ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response();
            }
            let next = (rows.len() as i64 >= limit.clamp(1, crate::service::MAX_LIMIT))
                .then(|| rows.last().map(|r| Cursor::of(r).to_string()))
                .flatten();
            Json(json!({"events": rows.iter().map(event_json).collect::<Vec<_>>(), "next_cursor": next})).into_response()
        }
        Err(AuditError::Forbidden) => {
            app.service.record_denied(&reader).await;
            AuditError::Forbidden.into_response()
        }
        Err(e) => e.into_response(),
    }
}

async fn checkpoint(State(app): AppState, headers: HeaderMap) -> Response {
    if let Err(response) = caller(&app, &headers).await {
        return response;
    }
    match app.service.checkpoint().await {
        Ok(note) => Json(json!({"checkpoint": note, "verifier_key": app.service.verifier_key()}))
            .into_response(),
        Err(e) => e.into_response(),
    }
}
