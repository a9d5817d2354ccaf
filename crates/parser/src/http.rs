//! The parser's HTTP face.
//!
//! - `POST /v1/parse[?filename=NAME]`: the file's raw bytes in the body;
//!   answers [`Parsed`] as JSON. 401 without a valid token for the
//!   parser's audience, 403 for a user's token, 503 when identity's keys
//!   cannot be fetched, 413 above the size limit, 415 for a kind it does
//!   not read, 422 for a corrupt or hostile file; every error an RFC 9457
//!   problem whose `detail` says why.
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`: the edge's
//!   (`echo_edge::Service`).
//!
//! Callers are services: the token must name the calling client as its
//! subject (`sub` = `client_id`, what client credentials issue), so a user's
//! access token is refused even with the right audience. Callers are
//! authenticated, and refusals audited, by the edge's [`Gate`]. Every parse
//! of an admitted caller is audited as `document.parse` (success with the
//! type and sizes, failure with the problem code), in the caller's trace.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::http::header::CONTENT_LENGTH;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use echo_core::audit::{AuditEvent, AuditSink};
use echo_edge::{Check, EdgeLayer, Gate, HasGate, Service, ServiceCaller, TrustedProxies};
use echo_verify::Verifier;
use futures_util::StreamExt;
use serde::Deserialize;

use crate::isolate::Isolator;
use echo_text::sniff;

use crate::{Isolation, Limits, ParseError, Parsed};

/// What the HTTP layer needs.
pub struct ParserApp {
    gate: Arc<Gate>,
    limits: Limits,
    isolator: Isolator,
    audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for ParserApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParserApp")
            .field("gate", &self.gate)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ParserApp {
    /// A parser accepting tokens for `audience` checked by `verifier`,
    /// running at most one parse per CPU at once, auditing parses and
    /// refusals to `audit`.
    pub fn new(
        verifier: Arc<Verifier>,
        audience: &str,
        limits: Limits,
        isolation: Isolation,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        let concurrency = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            gate: Arc::new(Gate::new("parser", audience, verifier, audit.clone())),
            limits,
            isolator: Isolator::new(isolation, concurrency),
            audit,
        }
    }
}

impl HasGate for ParserApp {
    fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// The parser for tokens `verifier` accepts with audience `audience`: what
/// `echod serve parser` and `echod up` run.
pub fn build(
    verifier: Arc<Verifier>,
    audience: &str,
    limits: Limits,
    isolation: Isolation,
    audit: Arc<dyn AuditSink>,
) -> Arc<ParserApp> {
    Arc::new(ParserApp::new(verifier, audience, limits, isolation, audit))
}

type AppState = State<Arc<ParserApp>>;

pub fn router(app: Arc<ParserApp>) -> Router {
    Router::new()
        .route("/v1/parse", post(parse))
        .with_state(app)
}

/// The parser on `listener`, with its periodic jobs.
pub fn service(listener: tokio::net::TcpListener, app: Arc<ParserApp>) -> Service {
    let refusal_counts = app.gate.refusal_job();
    let issuer_keys = Check::issuer_keys(app.gate.verifier().clone());
    let gate = app.gate.clone();
    Service::http("parser", listener, EdgeLayer::api(), router(app))
        .with_job(refusal_counts)
        .with_check(issuer_keys)
        .with_metrics_gate(gate, TrustedProxies::default())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<ParserApp>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, app).run(shutdown).await
}

#[derive(Debug, Deserialize)]
struct ParseParams {
    /// A hint between plain text, Markdown and CSV; never trusted for more.
    filename: Option<String>,
}

async fn parse(
    State(app): AppState,
    ServiceCaller(caller): ServiceCaller,
    Query(params): Query<ParseParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let mut size = 0;
    let result = async {
        let bytes = read_body(&headers, body, app.limits.max_input_bytes).await?;
        size = bytes.len();
        let kind = sniff(&bytes, params.filename.as_deref()).ok_or_else(|| {
            ParseError::Unsupported("unsupported or binary content: expected pdf, docx, html, md, txt, csv or json".into())
        })?;
        let parsed = app.isolator.run(kind, bytes, &app.limits).await;
        tracing::debug!(caller = %caller.subject, ?kind, size, elapsed = ?started.elapsed(), ok = parsed.is_ok(), "parse");
        parsed
    }
    .await;
    let event = match &result {
        Ok(parsed) => AuditEvent::success("document.parse")
            .detail(
                "type",
                serde_json::to_value(parsed.kind).unwrap_or_default(),
            )
            .detail("chars", parsed.chars)
            .detail("truncated", parsed.truncated),
        Err(e) => AuditEvent::failure("document.parse").detail("reason", e.code()),
    };
    app.audit.record(
        caller
            .origin
            .stamp(event.actor(caller.subject.as_str()).detail("bytes", size)),
    );
    match result {
        Ok(parsed) => Json::<Parsed>(parsed).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The body, refused as soon as it (or its declared length) passes `max`.
async fn read_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes, ParseError> {
    let too_large = || ParseError::TooLarge { max };
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(too_large());
    }
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ParseError::Invalid(format!("cannot read the body: {e}")))?;
        if bytes.len() + chunk.len() > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}
