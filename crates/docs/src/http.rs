//! The docs service's HTTP face: authenticate, call one [`Docs`] method,
//! map the result. Every error answer is an RFC 9457 problem
//! (`application/problem+json`), from [`DocsError`]'s one mapping below;
//! callers are authenticated, and refusals audited, by the edge's [`Gate`].
//!
//! User endpoints (a user's access token for the docs audience; the owner is
//! its `sub`, an admin has the role `admin`):
//! - `POST /v1/documents`: multipart/form-data, every field named `file` one
//!   document, or the file as the raw body with `?name=NAME`. 201
//!   `{"documents": [view…]}`.
//! - `GET /v1/documents`, `GET /v1/documents/{id}`,
//!   `GET /v1/documents/{id}/content`, `DELETE /v1/documents/{id}`.
//! - `POST /v1/query` `{"question"}` → `{"answer", "citations"}`.
//!
//! Worker endpoints (a service token, `sub` = `client_id`, with scope
//! `docs.index`):
//! - `GET /v1/documents/{id}/content` (any document).
//! - `PUT /v1/documents/{id}/index` `{"chunks": [{"position", "start", "text"}]}`.
//!
//! A user token on a worker endpoint, or a service token on a user
//! endpoint, is 403.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use echo_core::audit::AuditSink;
use echo_crypto::TrustedRoots;
use echo_edge::{
    Check, EdgeLayer, Gate, HasGate, Problem, Refusal, Service, SharedCounters, TrustedProxies,
    UserCaller,
};
use echo_queue::JobQueue;
use echo_text::{Chunk, Kind};
use echo_verify::Verifier;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use crate::service::{Caller, Content, Docs, Limits, Upload, Uploads, Worker};
use crate::store::open_store;
use crate::{DocsError, LlmClient, Result, SearchBackend, open_blobs, open_index};

/// The scope a service token needs for the worker endpoints.
pub const INDEX_SCOPE: &str = "docs.index";

/// What `echod` configures.
#[derive(Clone)]
pub struct DocsConfig {
    /// The `aud` tokens must carry (`docs`).
    pub audience: String,
    /// The data directory: records in `docs.db` (unless `database_url`),
    /// blobs under `docs/blobs/` (unless `blob_url`), the tantivy index in
    /// `docs/index/`.
    pub data_dir: PathBuf,
    /// A `postgres://` URL for the records instead of SQLite.
    pub database_url: Option<String>,
    /// Where blobs are kept instead of the directory: `nats://…` or
    /// `postgres://…` ([`crate::open_blobs`]).
    pub blob_url: Option<String>,
    /// The search backend; PostgreSQL's requires `database_url`.
    pub search: SearchBackend,
    /// Whom TLS to the database and the blob store trusts
    /// (`sslmode=verify-full`, `tls://`).
    pub database_roots: TrustedRoots,
    pub limits: Limits,
    /// Where every replica counts users' upload rates
    /// (`ECHO_RATE_LIMIT_URL`); without it, each process counts its own.
    pub shared_limits: Option<Arc<dyn SharedCounters>>,
}

/// What the HTTP layer needs.
#[derive(Debug)]
pub struct DocsApp {
    gate: Arc<Gate>,
    docs: Docs,
}

impl DocsApp {
    /// The service accepting tokens for `audience` checked by `verifier`;
    /// refusals are audited to `audit`.
    pub fn new(
        verifier: Arc<Verifier>,
        audience: &str,
        docs: Docs,
        audit: Arc<dyn AuditSink>,
    ) -> Self {
        Self {
            gate: Arc::new(Gate::new("docs", audience, verifier, audit)),
            docs,
        }
    }
}

impl HasGate for DocsApp {
    fn gate(&self) -> &Gate {
        &self.gate
    }
}

/// The docs service as `echod serve docs` and `echod up` run it: opens the
/// record store, the blob store and the search index `config` names, and
/// checks tokens with `verifier`.
/// `llm` answers questions when set (else answers are extractive).
pub async fn build(
    config: &DocsConfig,
    verifier: Arc<Verifier>,
    queue: Arc<dyn JobQueue>,
    llm: Option<LlmClient>,
    audit: Arc<dyn AuditSink>,
) -> Result<Arc<DocsApp>> {
    let store = open_store(
        config.database_url.as_deref(),
        &config.database_roots,
        &config.data_dir.join("docs.db"),
    )
    .await?;
    let dir = config.data_dir.join("docs");
    let roots = &config.database_roots;
    let blobs = open_blobs(config.blob_url.as_deref(), roots, &dir.join("blobs")).await?;
    let index = open_index(
        config.search,
        &dir.join("index"),
        config.database_url.as_deref(),
        roots,
    )
    .await?;
    let mut docs = Docs::new(store, blobs, index, queue, audit.clone())
        .with_limits(config.limits.clone())
        .with_llm(llm);
    if let Some(counters) = &config.shared_limits {
        docs = docs.share_limits(counters.clone());
    }
    Ok(Arc::new(DocsApp::new(
        verifier,
        &config.audience,
        docs,
        audit,
    )))
}

type AppState = State<Arc<DocsApp>>;

pub fn router(app: Arc<DocsApp>) -> Router {
    let limits = app.docs.limits();
    // Multipart bodies are capped per file while they stream (`next_file`);
    // this only bounds the request as a whole.
    let upload_limit = DefaultBodyLimit::max(
        limits
            .max_upload_bytes
            .saturating_add(64 * 1024)
            .saturating_mul(limits.max_files_per_request),
    );
    let index_limit = DefaultBodyLimit::max(limits.max_index_bytes);
    Router::new()
        .route("/v1/documents", post(upload).get(list).layer(upload_limit))
        .route("/v1/documents/{id}", get(get_one).delete(delete))
        .route("/v1/documents/{id}/content", get(content))
        .route("/v1/documents/{id}/index", put(index).layer(index_limit))
        .route("/v1/query", post(query))
        .with_state(app)
}

/// An API's edge, with `sandbox` in its CSP: a downloaded HTML document
/// opened in place runs nothing.
fn edge() -> EdgeLayer {
    let mut edge = EdgeLayer::api();
    edge.security_headers.csp =
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'; sandbox");
    edge
}

/// The docs service on `listener`, with its periodic jobs.
pub fn service(listener: tokio::net::TcpListener, app: Arc<DocsApp>) -> Service {
    let refusal_counts = app.gate.refusal_job();
    let records = app.clone();
    let database = Check::new("database", move || {
        let app = records.clone();
        async move { app.docs.database_ready().await }
    });
    let issuer_keys = Check::issuer_keys(app.gate.verifier().clone());
    let gate = app.gate.clone();
    Service::http("docs", listener, edge(), router(app))
        .with_job(refusal_counts)
        .with_checks([database, issuer_keys])
        .with_metrics_gate(gate, TrustedProxies::default())
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<DocsApp>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    service(listener, app).run(shutdown).await
}

/// The user a verified token speaks for, as the domain takes it.
fn user(caller: echo_edge::Caller) -> Caller {
    Caller {
        admin: caller.has_role("admin"),
        subject: caller.subject,
        origin: caller.origin,
    }
}

impl DocsApp {
    /// The indexing service: a service token with [`INDEX_SCOPE`].
    fn indexer(&self, caller: echo_edge::Caller) -> std::result::Result<Worker, Refusal> {
        self.gate.require_service(&caller)?;
        self.gate.require_scope(&caller, INDEX_SCOPE)?;
        Ok(Worker {
            client_id: caller.subject,
        })
    }
}

#[derive(Debug, Deserialize)]
struct UploadParams {
    /// The raw body's file name (for display, and to tell txt, md and csv
    /// apart).
    name: Option<String>,
}

async fn upload(
    State(app): AppState,
    UserCaller(caller): UserCaller,
    params: std::result::Result<Query<UploadParams>, QueryRejection>,
    request: Request,
) -> Result<Response> {
    let caller = user(caller);
    let max = app.docs.limits().max_upload_bytes;
    let documents = if is_multipart(request.headers()) {
        let multipart = Multipart::from_request(request, &())
            .await
            .map_err(|e| DocsError::BadRequest(e.body_text()))?;
        let mut files = MultipartFiles { multipart, max };
        uncancelled(async move { app.docs.upload(&caller, &mut files).await }).await?
    } else {
        let Query(params) = params.map_err(|e| DocsError::BadRequest(e.body_text()))?;
        let mut file = RawFile {
            name: params.name.unwrap_or_default(),
            declared: declared_length(request.headers()),
            body: Some(request.into_body()),
            max,
        };
        uncancelled(async move { app.docs.upload(&caller, &mut file).await }).await?
    };
    Ok((StatusCode::CREATED, Json(json!({"documents": documents}))).into_response())
}

async fn list(State(app): AppState, UserCaller(caller): UserCaller) -> Result<Response> {
    let caller = user(caller);
    let documents = app.docs.list(&caller).await?;
    let usage = app.docs.usage(&caller).await?;
    Ok(Json(json!({"documents": documents, "usage": usage})).into_response())
}

async fn get_one(
    State(app): AppState,
    UserCaller(caller): UserCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    Ok(Json(app.docs.get(&user(caller), &id).await?).into_response())
}

async fn delete(
    State(app): AppState,
    UserCaller(caller): UserCaller,
    Path(id): Path<String>,
) -> Result<Response> {
    let caller = user(caller);
    uncancelled(async move { app.docs.delete(&caller, &id).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A user's own document, or any for the worker.
async fn content(
    State(app): AppState,
    caller: echo_edge::Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let content = if caller.is_service() {
        app.docs.worker_content(&app.indexer(caller)?, &id).await?
    } else {
        app.docs.content(&user(caller), &id).await?
    };
    Ok(download(content))
}

#[derive(Debug, Deserialize)]
struct IndexBody {
    chunks: Vec<Chunk>,
}

async fn index(
    State(app): AppState,
    caller: echo_edge::Caller,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response> {
    let worker = app.indexer(caller)?;
    let body: IndexBody = json_body(request, app.docs.limits().max_index_bytes).await?;
    uncancelled(async move { app.docs.index_document(&worker, &id, body.chunks).await }).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct QueryBody {
    question: String,
}

async fn query(
    State(app): AppState,
    UserCaller(caller): UserCaller,
    request: Request,
) -> Result<Response> {
    let caller = user(caller);
    // The default body limit (2 MB) is ample for a question.
    let body: QueryBody = json_body(request, 2 * 1024 * 1024).await?;
    Ok(Json(app.docs.query(&caller, &body.question).await?).into_response())
}

/// Runs a write to completion even if the client goes away mid-request: a
/// dropped request must not stop it halfway (a record without its job,
/// chunks written after their document's delete). Its own errors still
/// undo what it did. It stays in the request's trace.
async fn uncancelled<T: Send + 'static>(
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(echo_edge::trace::carry(work))
        .await
        .map_err(|e| DocsError::Internal(format!("request task failed: {e}")))?
}

/// The JSON body of `request`, read only once the caller is known (413
/// above `max`, which is the route's body limit; 400 if malformed).
async fn json_body<T: serde::de::DeserializeOwned>(request: Request, max: usize) -> Result<T> {
    let Json(body) = Json::<T>::from_request(request, &())
        .await
        .map_err(|e| json_rejection(e, max))?;
    Ok(body)
}

/// The files of a multipart body: every field named `file`, each read up
/// to `max` bytes; other fields are skipped.
struct MultipartFiles {
    multipart: Multipart,
    max: usize,
}

impl Uploads for MultipartFiles {
    async fn next_file(&mut self) -> Result<Option<Upload>> {
        let max = self.max;
        let refused = |e: axum::extract::multipart::MultipartError| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                DocsError::TooLarge { max }
            } else {
                DocsError::BadRequest(format!("malformed multipart body: {}", e.body_text()))
            }
        };
        while let Some(mut field) = self.multipart.next_field().await.map_err(refused)? {
            if field.name() != Some("file") {
                continue;
            }
            let name = field.file_name().unwrap_or_default().to_owned();
            let mut bytes = Vec::new();
            while let Some(chunk) = field.chunk().await.map_err(refused)? {
                if bytes.len() + chunk.len() > max {
                    return Err(DocsError::TooLarge { max });
                }
                bytes.extend_from_slice(&chunk);
            }
            return Ok(Some(Upload { name, bytes }));
        }
        Ok(None)
    }
}

/// A raw body: one file, read up to `max` bytes (refused at once when its
/// declared length is larger).
struct RawFile {
    name: String,
    declared: Option<u64>,
    body: Option<Body>,
    max: usize,
}

impl Uploads for RawFile {
    async fn next_file(&mut self) -> Result<Option<Upload>> {
        let Some(body) = self.body.take() else {
            return Ok(None);
        };
        let max = self.max;
        if self.declared.is_some_and(|len| len > max as u64) {
            return Err(DocsError::TooLarge { max });
        }
        let mut stream = body.into_data_stream();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| DocsError::BadRequest(format!("cannot read the body: {e}")))?;
            if bytes.len() + chunk.len() > max {
                return Err(DocsError::TooLarge { max });
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Some(Upload {
            name: std::mem::take(&mut self.name),
            bytes,
        }))
    }
}

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// A JSON body refused by axum, as ours: 413 above `max`, else 400.
fn json_rejection(e: JsonRejection, max: usize) -> DocsError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        DocsError::TooLarge { max }
    } else {
        DocsError::BadRequest(e.body_text())
    }
}

/// The original bytes as an attachment, typed by what sniffing found.
fn download(content: Content) -> Response {
    let disposition = HeaderValue::from_str(&attachment(&content.name))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    (
        [
            (
                CONTENT_TYPE,
                HeaderValue::from_static(media_type(content.kind)),
            ),
            (CONTENT_DISPOSITION, disposition),
            (CACHE_CONTROL, HeaderValue::from_static("private, no-store")),
        ],
        content.bytes,
    )
        .into_response()
}

fn media_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Pdf => "application/pdf",
        Kind::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        Kind::Html => "text/html",
        Kind::Md => "text/markdown",
        Kind::Txt => "text/plain",
        Kind::Csv => "text/csv",
        Kind::Json => "application/json",
    }
}

/// `Content-Disposition: attachment` naming the file twice (RFC 6266 §4.3):
/// `filename` in plain ASCII (anything else, quotes and backslashes become
/// `_`) for old clients, and `filename*` with the exact name in UTF-8,
/// percent-encoded (RFC 8187).
fn attachment(name: &str) -> String {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            '"' | '\\' => '_',
            c if c == ' ' || c.is_ascii_graphic() => c,
            _ => '_',
        })
        .collect();
    let mut encoded = String::new();
    for byte in name.bytes() {
        // RFC 8187 §3.2.1 attr-char.
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// The one mapping of errors to HTTP, as RFC 9457 problems: the caller's
/// mistakes with their message, refused tokens as the edge answers them,
/// ours as an opaque 500 (or 502 for the language model) with the cause
/// logged here.
impl IntoResponse for DocsError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            DocsError::Refused(refusal) => return refusal.clone().into_response(),
            DocsError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            DocsError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            DocsError::TooLarge { .. } | DocsError::TooManyFiles { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
            }
            DocsError::Unsupported { .. } => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported"),
            DocsError::QuotaExceeded { quota, max, used } => {
                return Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "quota_exceeded",
                    self.to_string(),
                )
                .with("limit", quota.setting())
                .with("max", *max)
                .with("used", *used)
                .into_response();
            }
            DocsError::RateLimited { retry_after } => {
                return Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    self.to_string(),
                )
                .retry_after(*retry_after)
                .into_response();
            }
            DocsError::Llm(_) => {
                tracing::error!(error = %self, "language model failure");
                return Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "llm_unavailable",
                    "the language model could not answer; try again later",
                )
                .into_response();
            }
            DocsError::Database(_) | DocsError::Queue(_) if self.is_unavailable() => {
                tracing::warn!(error = %self, "docs storage unavailable");
                return Problem::unavailable().into_response();
            }
            DocsError::Index(_)
            | DocsError::Database(_)
            | DocsError::Migrate(_)
            | DocsError::Corrupt(_)
            | DocsError::Blob(_)
            | DocsError::Queue(_)
            | DocsError::Config(_)
            | DocsError::Internal(_) => {
                tracing::error!(error = %self, "docs failure");
                return Problem::internal().into_response();
            }
        };
        Problem::new(status, code, self.to_string()).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachment_names_are_ascii_and_utf8() {
        assert_eq!(
            attachment("été \"x\".pdf"),
            "attachment; filename=\"_t_ _x_.pdf\"; filename*=UTF-8''%C3%A9t%C3%A9%20%22x%22.pdf"
        );
        assert!(HeaderValue::from_str(&attachment("a\\b;c=d.txt")).is_ok());
    }
}
