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
//! service's audience, verified locally by the edge's [`Gate`]; refused
//! callers are recorded in the audit service's own chain
//! (`access.denied`). Errors are RFC 9457 problems.

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
use echo_edge::{Caller, Check, EdgeLayer, Gate, HasGate, Problem, Service, TrustedProxies};
use echo_verify::Verifier;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::chain::ChainedEvent;
use crate::event::Level;
use crate::service::{AuditError, AuditService, READ_RIGHT, WRITE_RIGHT, may_read, may_write};
use crate::store::{Cursor, EventQuery, search_words};

/// Largest request body accepted (a full batch of large events).
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the HTTP layer needs.
pub struct AuditApp {
    pub service: AuditService,
    gate: Arc<Gate>,
}

impl AuditApp {
    /// The service taking tokens for `audience` checked by `verifier`; its
    /// refused callers are recorded in its own chain.
    pub fn new(service: AuditService, verifier: Arc<Verifier>, audience: &str) -> Self {
        let gate = Gate::new("audit", audience, verifier, service.own_sink());
        Self {
            service,
            gate: Arc::new(gate),
        }
    }
}

impl HasGate for AuditApp {
    fn gate(&self) -> &Gate {
        &self.gate
    }
}

type AppState = State<Arc<AuditApp>>;

pub fn router(app: Arc<AuditApp>) -> Router {
    Router::new()
        .route("/v1/events", post(ingest).get(query))
        .route("/log", post(log))
        .route("/v1/checkpoint", get(checkpoint))
        .route("/ping", get(|| async { "pong" }))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

/// The audit service on `listener`, with the refusal counts' job (the
/// checkpoints are `echod`'s, which knows their interval).
pub fn service(listener: tokio::net::TcpListener, app: Arc<AuditApp>) -> Service {
    let refusal_counts = app.gate.refusal_job();
    let chain = app.clone();
    let database = Check::new("database", move || {
        let app = chain.clone();
        async move { app.service.database_ready().await }
    });
    let issuer_keys = Check::issuer_keys(app.gate.verifier().clone());
    let gate = app.gate.clone();
    Service::http("audit", listener, EdgeLayer::api(), router(app))
        .with_job(refusal_counts)
        .with_checks([database, issuer_keys])
        .with_metrics_gate(gate, TrustedProxies::default())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<AuditApp>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, app).run(shutdown).await
}

impl IntoResponse for AuditError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            AuditError::InvalidEvent { .. } | AuditError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            AuditError::ClientTimeAhead { .. } => (StatusCode::BAD_REQUEST, "time_ahead"),
            AuditError::BatchTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AuditError::Impersonation { .. } => (StatusCode::FORBIDDEN, "impersonation"),
            AuditError::Store(cause) if cause.is_unavailable() => {
                tracing::warn!(error = %self, "audit storage unavailable");
                return Problem::unavailable().into_response();
            }
            AuditError::Store(_) | AuditError::ChainBroken(_) | AuditError::Unextended { .. } => {
                tracing::error!(error = %self, "audit storage failure");
                return Problem::internal().into_response();
            }
        };
        Problem::new(status, code, self.to_string()).into_response()
    }
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

async fn ingest(State(app): AppState, writer: Caller, body: Bytes) -> Response {
    if !may_write(&writer.claims) {
        return app.gate.insufficient(&writer, WRITE_RIGHT).into_response();
    }
    let result = async {
        app.service
            .ingest(&writer.claims, parse_batch(&body)?)
            .await
    }
    .await;
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
/// Its callers hold a client-credentials token like every writer, so it
/// needs scope `audit.write` too.
async fn log(State(app): AppState, writer: Caller, body: Bytes) -> Response {
    if !may_write(&writer.claims) {
        return app.gate.insufficient(&writer, WRITE_RIGHT).into_response();
    }
    let request: LogRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return Problem::bad_request(format!("malformed JSON: {e}")).into_response(),
    };
    let Some(level) = Level::from_writer(&request.level) else {
        return Problem::bad_request(format!(
            "unknown level {:?} (debug, info, warn, error or critical, any case)",
            request.level
        ))
        .into_response();
    };
    let mut event = json!({
        "level": level.as_str(),
        "action": format!("log.{level}"),
        "message": request.message,
        "context": request.context,
    });
    if let Some(service) = request.service {
        event["service"] = service.into();
    }
    match app.service.ingest(&writer.claims, vec![event]).await {
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
    reader: Caller,
    headers: HeaderMap,
    params: Result<Query<QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if !may_read(&reader.claims) {
        return app.gate.insufficient(&reader, READ_RIGHT).into_response();
    }
    let Ok(Query(p)) = params else {
        return Problem::bad_request("malformed query parameters").into_response();
    };
    let before = match p.cursor.as_deref().map(str::parse::<Cursor>) {
        None => None,
        Some(Ok(cursor)) => Some(cursor),
        Some(Err(())) => {
            return Problem::bad_request("cursor: not a next_cursor value").into_response();
        }
    };
    let words = search_words(p.q.as_deref().unwrap_or_default());
    if p.q.as_deref().is_some_and(|q| !q.trim().is_empty()) && words.is_empty() {
        return Problem::bad_request("q: free text needs a letter or digit").into_response();
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
    match app.service.query(query).await {
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
        Err(e) => e.into_response(),
    }
}

async fn checkpoint(State(app): AppState, _caller: Caller) -> Response {
    match app.service.checkpoint().await {
        Ok(note) => Json(json!({"checkpoint": note, "verifier_key": app.service.verifier_key()}))
            .into_response(),
        Err(e) => e.into_response(),
    }
}
