//! One `index_document` job: the document's bytes from docs, its text from
//! the parser, its chunks back to docs' index. Every call is HTTP with the
//! worker's own service token for the service called.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use echo_edge::TokenSource;
use echo_queue::{JobQueue, Leased};
use reqwest::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use url::Url;

use crate::error::{Result, WorkerError, parser_refusal};
use crate::progress::Progress;
use crate::{Tokens, WorkerConfig};

/// The job kind the docs service enqueues for every upload.
pub const INDEX_DOCUMENT: &str = "index_document";

/// How a job ended well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed, chunked and indexed, with this many chunks.
    Indexed(usize),
    /// The document was deleted before (or while) it was indexed: nothing
    /// to do.
    Deleted,
}

#[derive(Deserialize)]
struct Payload {
    document_id: String,
}

/// The upload's `traceparent`, which docs puts in the payload.
pub(crate) fn traceparent(job: &Leased) -> Option<&str> {
    job.payload.get("traceparent").and_then(|t| t.as_str())
}

/// The part of the parser's answer the worker uses.
#[derive(Deserialize)]
struct Parsed {
    text: String,
}

#[derive(Serialize)]
struct IndexBody<'a> {
    chunks: &'a [echo_text::Chunk],
}

/// What a job needs: the HTTP client, the services and the tokens.
pub(crate) struct Pipeline {
    pub http: reqwest::Client,
    pub docs: Url,
    pub parser: Url,
    pub tokens: Tokens,
    pub queue: Arc<dyn JobQueue>,
    /// How long a call waits out a service's 503s ([`send`]).
    pub patience: Duration,
}

impl Pipeline {
    pub fn new(queue: Arc<dyn JobQueue>, tokens: Tokens, config: &WorkerConfig) -> Result<Self> {
        let base = |url: &str| {
            Url::parse(url.trim_end_matches('/'))
                .map_err(|e| WorkerError::Config(format!("URL {url:?}: {e}")))
        };
        let http = config.tls.http_client(config.request_timeout);
        Ok(Self {
            http,
            docs: base(&config.docs_url)?,
            parser: base(&config.parser_url)?,
            tokens,
            queue,
            patience: config.unavailable_patience,
        })
    }

    /// Runs `job` to its end (progress 10 / 50 / 90 on the way); the caller
    /// completes or fails it.
    pub async fn run(&self, job: &Leased, progress: &Progress) -> Result<Outcome> {
        if job.kind != INDEX_DOCUMENT {
            return Err(WorkerError::UnknownKind(job.kind.clone()));
        }
        let payload: Payload = serde_json::from_value(job.payload.clone())
            .map_err(|e| WorkerError::Payload(e.to_string()))?;
        let id = payload.document_id;
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(WorkerError::Payload(format!("document id {id:?}")));
        }
        let Some((bytes, filename)) = self.content(&id).await? else {
            return Ok(Outcome::Deleted);
        };
        progress.set(10);
        let text = self.parse(bytes, filename.as_deref()).await?;
        progress.set(50);
        let chunks = echo_text::chunk_text(&text, echo_text::DEFAULT_CHUNK_CHARS);
        progress.set(90);
        if !self.index(&id, &chunks).await? {
            return Ok(Outcome::Deleted);
        }
        Ok(Outcome::Indexed(chunks.len()))
    }

    /// `GET <docs>/v1/documents/{id}/content`: the bytes and the file name
    /// docs gives them, or `None` when the document is gone (404).
    async fn content(&self, id: &str) -> Result<Option<(Bytes, Option<String>)>> {
        let url = document_url(&self.docs, id, "content");
        let response = send("docs", &*self.tokens.docs, self.patience, |token| {
            self.http
                .get(url.clone())
                .headers(echo_edge::trace::headers())
                .bearer_auth(token)
        })
        .await?;
        match response.status() {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => return Ok(None),
            status => {
                return Err(WorkerError::Status {
                    service: "docs",
                    status: status.as_u16(),
                });
            }
        }
        let filename = response
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(disposition_filename);
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unreachable("docs", &e))?;
        Ok(Some((bytes, filename)))
    }

    /// `POST <parser>/v1/parse?filename=NAME`: the document's text.
    async fn parse(&self, bytes: Bytes, filename: Option<&str>) -> Result<String> {
        let mut url = self.parser.clone();
        url.path_segments_mut()
            .map_err(|()| WorkerError::Config("the parser URL cannot have a path".into()))?
            .extend(["v1", "parse"]);
        if let Some(name) = filename {
            url.query_pairs_mut().append_pair("filename", name);
        }
        let response = send("parser", &*self.tokens.parser, self.patience, |token| {
            // `Bytes` clones cheaply, so a retried request resends the body.
            self.http
                .post(url.clone())
                .headers(echo_edge::trace::headers())
                .bearer_auth(token)
                .body(bytes.clone())
        })
        .await?;
        let status = response.status();
        let answer = response
            .bytes()
            .await
            .map_err(|e| unreachable("parser", &e))?;
        if status != StatusCode::OK {
            return Err(parser_refusal(status.as_u16(), &answer));
        }
        let parsed: Parsed = serde_json::from_slice(&answer).map_err(|e| {
            tracing::warn!(error = %e, "the parser's answer is not the promised JSON");
            WorkerError::Malformed("parser")
        })?;
        Ok(parsed.text)
    }

    /// `PUT <docs>/v1/documents/{id}/index`: `false` when the document is
    /// gone (404).
    async fn index(&self, id: &str, chunks: &[echo_text::Chunk]) -> Result<bool> {
        let url = document_url(&self.docs, id, "index");
        let body = IndexBody { chunks };
        let response = send("docs", &*self.tokens.docs, self.patience, |token| {
            self.http
                .put(url.clone())
                .headers(echo_edge::trace::headers())
                .bearer_auth(token)
                .json(&body)
        })
        .await?;
        match response.status() {
            status if status.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(WorkerError::Status {
                service: "docs",
                status: status.as_u16(),
            }),
        }
    }
}

/// The wait after a `503` without a usable `Retry-After`.
const UNAVAILABLE_WAIT: Duration = Duration::from_secs(1);
/// The bounds of the wait a `Retry-After` asks for.
const UNAVAILABLE_WAIT_BOUNDS: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(10));

/// Sends the request `build` makes with a token from `tokens`.
///
/// - A 401 drops that token and tries once more with a fresh one (the
///   cached token may have been revoked or its keys rotated).
/// - A 503 (the service's engine away for now: PostgreSQL, NATS, no
///   replica ready) is waited out, as its `Retry-After` says (bounded),
///   within `patience`, so an outage shorter than that does not spend one
///   of the job's attempts; the 503 that `patience` does not leave time to
///   wait out is the answer (the attempt fails, and the job is retried).
async fn send(
    service: &'static str,
    tokens: &dyn TokenSource,
    patience: Duration,
    build: impl Fn(&str) -> reqwest::RequestBuilder,
) -> Result<Response> {
    let give_up = Instant::now() + patience;
    let mut retried = false;
    loop {
        let token = tokens.token().await.map_err(|e| {
            tracing::warn!(service, error = %e, "cannot get a service token");
            WorkerError::Token(service)
        })?;
        let response = build(&token)
            .send()
            .await
            .map_err(|e| unreachable(service, &e))?;
        match response.status() {
            StatusCode::UNAUTHORIZED if !retried => {
                tokens.invalidate(&token).await;
                retried = true;
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                let wait = retry_after(response.headers());
                if Instant::now() + wait > give_up {
                    return Ok(response);
                }
                tracing::info!(service, ?wait, "service unavailable; waiting");
                tokio::time::sleep(wait).await;
            }
            _ => return Ok(response),
        }
    }
}

/// The wait a 503's `Retry-After` asks for (seconds; the date form is not
/// used by Echo's services), within [`UNAVAILABLE_WAIT_BOUNDS`].
fn retry_after(headers: &reqwest::header::HeaderMap) -> Duration {
    let (least, most) = UNAVAILABLE_WAIT_BOUNDS;
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map_or(UNAVAILABLE_WAIT, Duration::from_secs)
        .clamp(least, most)
}

fn unreachable(service: &'static str, error: &reqwest::Error) -> WorkerError {
    // reqwest's errors name the URL, never the headers (so no token).
    tracing::warn!(service, error = %error, "request failed");
    WorkerError::Unreachable(service)
}

/// `<docs>/v1/documents/<id>/<tail>`.
fn document_url(docs: &Url, id: &str, tail: &str) -> Url {
    let mut url = docs.clone();
    if let Ok(mut segments) = url.path_segments_mut() {
        segments.extend(["v1", "documents", id, tail]);
    }
    url
}

/// The file name of a `Content-Disposition` header (RFC 6266): the
/// RFC 8187 `filename*=UTF-8''…` form first, else `filename="…"` or a bare
/// `filename=…`. It is only a hint for the parser (which sniffs the
/// content), never a path.
fn disposition_filename(header: &str) -> Option<String> {
    let params: Vec<(&str, &str)> = header
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let extended = params
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("filename*"))
        .and_then(|(_, v)| {
            let (charset, rest) = v.split_once('\'')?;
            let (_, encoded) = rest.split_once('\'')?;
            charset
                .eq_ignore_ascii_case("utf-8")
                .then(|| percent_decode(encoded))?
        });
    let plain = || {
        params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("filename"))
            .map(|(_, v)| {
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                v.replace("\\\"", "\"").replace("\\\\", "\\")
            })
    };
    extended
        .or_else(plain)
        .filter(|name| !name.trim().is_empty())
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_comes_from_content_disposition() {
        let cases = [
            (r#"attachment; filename="report.pdf""#, Some("report.pdf")),
            ("attachment; filename=notes.txt", Some("notes.txt")),
            (
                r#"attachment; filename="a.txt"; filename*=UTF-8''r%C3%A9sum%C3%A9.docx"#,
                Some("résumé.docx"),
            ),
            (
                r#"attachment; filename="say \"hi\".md""#,
                Some(r#"say "hi".md"#),
            ),
            ("attachment", None),
            (r#"attachment; filename="""#, None),
            ("attachment; filename*=UTF-8''bad%zz", None),
        ];
        for (header, expected) in cases {
            assert_eq!(
                disposition_filename(header).as_deref(),
                expected,
                "{header}"
            );
        }
    }

    #[test]
    fn a_503_is_waited_out_as_its_retry_after_says_within_bounds() {
        let wait = |value: Option<&str>| {
            let mut headers = reqwest::header::HeaderMap::new();
            if let Some(value) = value {
                headers.insert(reqwest::header::RETRY_AFTER, value.parse().unwrap());
            }
            retry_after(&headers)
        };
        let (least, most) = UNAVAILABLE_WAIT_BOUNDS;
        assert_eq!(wait(Some("2")), Duration::from_secs(2));
        assert_eq!(wait(Some("0")), least);
        assert_eq!(wait(Some("3600")), most);
        assert_eq!(wait(None), UNAVAILABLE_WAIT);
        assert_eq!(
            wait(Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            UNAVAILABLE_WAIT
        );
    }

    #[test]
    fn document_urls_keep_a_base_path_and_encode_the_id() {
        let docs = Url::parse("http://127.0.0.1:8083/base").unwrap();
        assert_eq!(
            document_url(&docs, "abc", "content").as_str(),
            "http://127.0.0.1:8083/base/v1/documents/abc/content"
        );
        let root = Url::parse("http://127.0.0.1:8083").unwrap();
        assert_eq!(
            document_url(&root, "a b", "index").as_str(),
            "http://127.0.0.1:8083/v1/documents/a%20b/index"
        );
    }
}
