//! Black-box tests of the docs service over real HTTP on 127.0.0.1:0, with
//! a real SQLite store and queue in a temporary directory, tokens signed by
//! a key standing in for identity, and the worker played by the test (it
//! `PUT`s chunks the way the worker does).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use echo_core::audit::MemoryAuditSink;
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_docs::{
    BlobStore, DirBlobStore, Docs, DocsApp, DocumentStore, Limits, LlmClient, SearchIndex,
    SqliteDocumentStore, TantivyIndex,
};
use echo_edge::SharedCounters;
use echo_queue::{JobQueue, QueueConfig, SqliteQueue};
use echo_testkit::TempDir;
use echo_text::{DEFAULT_CHUNK_CHARS, chunk_text};
use echo_verify::{JwksSource, StaticJwks, Verifier, VerifierOptions};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

mod access;
mod blob_stores;
mod build;
mod documents;
mod llm;
mod quota;
mod search;
mod search_backends;
mod search_quality;
mod status;
mod store;

const ISSUER: &str = "http://127.0.0.1:8081";

/// The RFC 9457 problem body docs answers with `status`, `code` and
/// `detail`.
pub fn problem(status: u16, code: &str, detail: &str) -> (u16, Value) {
    let title = reqwest::StatusCode::from_u16(status)
        .unwrap()
        .canonical_reason()
        .unwrap();
    (
        status,
        json!({"type": format!("urn:echo:problem:{code}"), "title": title, "status": status, "detail": detail}),
    )
}

/// A record store, a search index and a blob store.
type Backends = (
    Arc<dyn DocumentStore>,
    Arc<dyn SearchIndex>,
    Arc<dyn BlobStore>,
);

/// A docs service on an ephemeral port, its parts, and the key that signs
/// its callers' tokens.
pub struct Fixture {
    pub url: String,
    key: SigningKey,
    pub queue: Arc<dyn JobQueue>,
    pub index: Arc<dyn SearchIndex>,
    pub audit: Arc<MemoryAuditSink>,
    pub blobs_dir: PathBuf,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::with(Limits::default(), None).await
    }

    pub async fn with(limits: Limits, llm: Option<LlmClient>) -> Self {
        Self::with_keys(limits, llm, None).await
    }

    /// A fixture whose verifier gets its keys from `jwks` instead of the
    /// fixture's own key.
    pub async fn with_keys(
        limits: Limits,
        llm: Option<LlmClient>,
        jwks: Option<Arc<dyn JwksSource>>,
    ) -> Self {
        Self::with_parts(limits, llm, jwks, None).await
    }

    /// A fixture over the given record store, search index and blob store
    /// (another backend than the defaults: SQLite, tantivy in memory, a
    /// directory).
    pub async fn with_backends(
        store: Arc<dyn DocumentStore>,
        index: Arc<dyn SearchIndex>,
        blobs: Arc<dyn BlobStore>,
    ) -> Self {
        Self::with_parts(Limits::default(), None, None, Some((store, index, blobs))).await
    }

    /// A fixture counting upload rates in `counters`, as a replica
    /// sharing them with others does.
    pub async fn with_shared_limits(limits: Limits, counters: Arc<dyn SharedCounters>) -> Self {
        Self::with_parts_sharing(limits, None, None, None, Some(counters)).await
    }

    async fn with_parts(
        limits: Limits,
        llm: Option<LlmClient>,
        jwks: Option<Arc<dyn JwksSource>>,
        parts: Option<Backends>,
    ) -> Self {
        Self::with_parts_sharing(limits, llm, jwks, parts, None).await
    }

    async fn with_parts_sharing(
        limits: Limits,
        llm: Option<LlmClient>,
        jwks: Option<Arc<dyn JwksSource>>,
        parts: Option<Backends>,
        counters: Option<Arc<dyn SharedCounters>>,
    ) -> Self {
        let dir = echo_testkit::data_dir();
        let key = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
        let jwks = jwks.unwrap_or_else(|| {
            Arc::new(StaticJwks(JwkSet {
                keys: vec![key.public_jwk()],
            }))
        });
        let verifier = Verifier::new(ISSUER, jwks, VerifierOptions::default());
        let config = QueueConfig {
            max_attempts: 3,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(20),
            ..QueueConfig::default()
        };
        let queue: Arc<dyn JobQueue> = Arc::new(
            SqliteQueue::open(&dir.path().join("queue.db"), config)
                .await
                .unwrap(),
        );
        let blobs_dir = dir.path().join("blobs");
        let (store, index, blobs) = match parts {
            Some(parts) => parts,
            None => {
                let store: Arc<dyn DocumentStore> = Arc::new(
                    SqliteDocumentStore::open(&dir.path().join("docs.db"))
                        .await
                        .unwrap(),
                );
                let index: Arc<dyn SearchIndex> = Arc::new(TantivyIndex::in_memory().unwrap());
                let blobs: Arc<dyn BlobStore> = Arc::new(DirBlobStore::open(&blobs_dir).unwrap());
                (store, index, blobs)
            }
        };
        let audit = Arc::new(MemoryAuditSink::default());
        let docs = Docs::new(
            store,
            blobs,
            Arc::clone(&index),
            Arc::clone(&queue),
            audit.clone(),
        )
        .with_limits(limits)
        .with_llm(llm);
        let docs = match counters {
            Some(counters) => docs.share_limits(counters),
            None => docs,
        };
        let app = DocsApp::new(Arc::new(verifier), "docs", docs, audit.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(echo_docs::serve(
            listener,
            Arc::new(app),
            std::future::pending(),
        ));
        Self {
            url,
            key,
            queue,
            index,
            audit,
            blobs_dir,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The key standing in for identity's.
    pub fn key(&self) -> &SigningKey {
        &self.key
    }

    /// A token for the docs audience with `claims` over the defaults.
    pub fn token(&self, claims: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut base = json!({"iss": ISSUER, "aud": "docs", "sub": "alice",
            "client_id": "gateway", "exp": now + 300, "iat": now});
        for (k, v) in claims.as_object().unwrap() {
            base[k] = v.clone();
        }
        self.key.sign("at+jwt", &base).unwrap()
    }

    /// A user's access token (through the gateway's exchange).
    pub fn user(&self, sub: &str) -> String {
        self.token(json!({"sub": sub}))
    }

    pub fn admin(&self, sub: &str) -> String {
        self.token(json!({"sub": sub, "roles": ["admin"]}))
    }

    /// The worker's service token.
    pub fn worker(&self) -> String {
        self.token(
            json!({"sub": "worker", "client_id": "worker", "scope": "docs.index audit.write"}),
        )
    }

    /// Uploads `files` (name, bytes) as one multipart request.
    pub async fn upload(&self, token: &str, files: &[(&str, &[u8])]) -> (u16, Value) {
        let boundary = "echo-test-boundary-7d3f";
        let mut body = Vec::new();
        for (name, bytes) in files {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n\
                     Content-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.post_multipart(token, boundary, body).await
    }

    /// Posts a multipart `body` already built with `boundary`.
    pub async fn post_multipart(
        &self,
        token: &str,
        boundary: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/documents", self.url))
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    /// Uploads one file as a raw body with `?name=`.
    pub async fn upload_raw(&self, token: &str, name: &str, bytes: &[u8]) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/documents", self.url))
            .query(&[("name", name)])
            .bearer_auth(token)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    /// Uploads one text file and returns its id.
    pub async fn upload_text(&self, token: &str, name: &str, text: &str) -> String {
        let (status, body) = self.upload(token, &[(name, text.as_bytes())]).await;
        assert_eq!(status, 201, "{body}");
        body["documents"][0]["id"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        json_of(self.send_get(token, path).await).await
    }

    /// The raw answer of `GET {path}`.
    pub async fn download(&self, token: &str, path: &str) -> (u16, HeaderMap, Vec<u8>) {
        let response = self.send_get(token, path).await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.bytes().await.unwrap().to_vec())
    }

    async fn send_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn delete(&self, token: &str, id: &str) -> (u16, Value) {
        let response = self
            .http
            .delete(format!("{}/v1/documents/{id}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    pub async fn query(&self, token: &str, question: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/v1/query", self.url))
            .bearer_auth(token)
            .json(&json!({ "question": question }))
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    /// `PUT /v1/documents/{id}/index` with `chunks`.
    pub async fn put_index(&self, token: &str, id: &str, chunks: Value) -> (u16, Value) {
        let response = self
            .http
            .put(format!("{}/v1/documents/{id}/index", self.url))
            .bearer_auth(token)
            .json(&json!({ "chunks": chunks }))
            .send()
            .await
            .unwrap();
        json_of(response).await
    }

    /// Plays the worker for document `id`: downloads it with the worker's
    /// token, chunks its text and writes the chunks to the index.
    pub async fn index_as_worker(&self, id: &str) {
        let worker = self.worker();
        let (status, _, bytes) = self
            .download(&worker, &format!("/v1/documents/{id}/content"))
            .await;
        assert_eq!(status, 200);
        let text = String::from_utf8(bytes).unwrap();
        let chunks = serde_json::to_value(chunk_text(&text, DEFAULT_CHUNK_CHARS)).unwrap();
        let (status, body) = self.put_index(&worker, id, chunks).await;
        assert_eq!(status, 204, "{body}");
    }

    /// The path of blob `sha256` in the blob directory.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.blobs_dir.join(&sha256[..2]).join(sha256)
    }
}

/// Status and JSON body (`null` when there is none).
async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// SHA-256 of `bytes` in hex, as the blob store names blobs.
pub fn sha256_hex(bytes: &[u8]) -> String {
    echo_crypto::secret::sha256(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
