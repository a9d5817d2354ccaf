//! The parser's HTTP face.
//!
//! - `POST /v1/parse[?filename=NAME]`: the file's raw bytes in the body;
//!   answers [`Parsed`] as JSON. 401 without a service token for the
//!   parser's audience, 503 when identity's keys cannot be fetched, 413 above
//!   the size limit, 415 for a kind it does not read, 422 for a corrupt or
//!   hostile file (with `{"error": "…"}` saying why).
//! - `GET /healthz`.
//!
//! Callers are services: the token must name the calling client as its
//! subject (`sub` = `client_id`, what client credentials issue), so a user's
//! access token is refused even with the right audience. Every refused
//! token is audited (`parse.denied`, with the reason and the caller's
//! address; the subject too when the token itself was valid).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_LENGTH;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use echo_core::audit::{AuditEvent, AuditSink};
use echo_verify::{Claims, Expectations, HttpJwks, Verifier, VerifierOptions, VerifyError};
use echo_web::{Peer, SecurityHeaders};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::error::problem;
use crate::isolate::Isolator;
use crate::{Isolation, Limits, ParseError, Parsed, sniff};

/// What the HTTP layer needs.
pub struct ParserApp {
    verifier: Arc<Verifier>,
    audience: String,
    limits: Limits,
    isolator: Isolator,
    audit: Arc<dyn AuditSink>,
}

impl std::fmt::Debug for ParserApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParserApp")
            .field("audience", &self.audience)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl ParserApp {
    /// A parser accepting tokens for `audience` checked by `verifier`,
    /// running at most one parse per CPU at once, auditing refusals to
    /// `audit`.
    pub fn new(
        verifier: Arc<Verifier>,
        audience: &str,
        limits: Limits,
        isolation: Isolation,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        let concurrency = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            verifier,
            audience: audience.to_owned(),
            limits,
            isolator: Isolator::new(isolation, concurrency),
            audit,
        }
    }

    /// Records a refused caller.
    fn denied(&self, peer: Peer, reason: &str, subject: Option<&str>) {
        self.audit.record(
            AuditEvent::refused("parse.denied", reason, subject).origin(peer.ip, peer.user_agent),
        );
    }
}

/// The parser for `issuer`'s tokens (keys from its `/jwks`) with audience
/// `audience`: what `echod serve parser` and `echod up` run.
pub fn build(
    issuer: &str,
    audience: &str,
    limits: Limits,
    isolation: Isolation,
    audit: Arc<dyn AuditSink>,
) -> Arc<ParserApp> {
    let jwks = HttpJwks::new(format!("{}/jwks", issuer.trim_end_matches('/')));
    let verifier = Verifier::new(issuer, Arc::new(jwks), VerifierOptions::default());
    Arc::new(ParserApp::new(
        Arc::new(verifier),
        audience,
        limits,
        isolation,
        audit,
    ))
}

type AppState = State<Arc<ParserApp>>;

pub fn router(app: Arc<ParserApp>) -> Router {
    let headers = SecurityHeaders {
        csp: HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        https: false,
    };
    let router = Router::new()
        .route("/v1/parse", post(parse))
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }));
    headers.wrap(router).with_state(app)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<ParserApp>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    echo_web::serve(listener, router(app), shutdown).await
}

/// The calling service's verified claims, or the 401/503 to answer (a
/// 401 audited).
async fn caller(app: &ParserApp, headers: &HeaderMap, peer: Peer) -> Result<Arc<Claims>, Response> {
    const MISSING: &str = "missing bearer token";
    const NOT_A_SERVICE: &str = "not_a_service_token";
    let Some(token) = echo_web::bearer(headers) else {
        app.denied(peer, MISSING, None);
        return Err(unauthorized(None));
    };
    let claims = match app
        .verifier
        .verify(token, &Expectations::access_token(&app.audience))
        .await
    {
        Ok(claims) => claims,
        // Our own trouble, not the caller's: nothing to audit.
        Err(VerifyError::KeysUnavailable(_)) => {
            return Err(problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "signing keys unavailable",
            ));
        }
        Err(other) => {
            app.denied(peer, other.code(), None);
            return Err(unauthorized(Some(other.code())));
        }
    };
    if claims.client_id.as_deref() != Some(claims.sub.as_str()) {
        app.denied(peer, NOT_A_SERVICE, Some(&claims.sub));
        return Err(unauthorized(Some(NOT_A_SERVICE)));
    }
    Ok(claims)
}

fn unauthorized(refused: Option<&str>) -> Response {
    let mut response = problem(
        StatusCode::UNAUTHORIZED,
        refused.unwrap_or("missing bearer token"),
    );
    echo_web::bearer_challenge(&mut response, refused);
    response
}

#[derive(Debug, Deserialize)]
struct ParseParams {
    /// A hint between plain text, Markdown and CSV; never trusted for more.
    filename: Option<String>,
}

async fn parse(
    State(app): AppState,
    Query(params): Query<ParseParams>,
    peer: Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let claims = match caller(&app, &headers, peer).await {
        Ok(claims) => claims,
        Err(response) => return response,
    };
    let started = Instant::now();
    let result = async {
        let bytes = read_body(&headers, body, app.limits.max_input_bytes).await?;
        let size = bytes.len();
        let kind = sniff(&bytes, params.filename.as_deref()).ok_or_else(|| {
            ParseError::Unsupported("unsupported or binary content: expected pdf, docx, html, md, txt, csv or json".into())
        })?;
        let parsed = app.isolator.run(kind, bytes, &app.limits).await;
        tracing::debug!(caller = %claims.sub, ?kind, size, elapsed = ?started.elapsed(), ok = parsed.is_ok(), "parse");
        parsed
    }
    .await;
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
