//! Answers to a question from the passages a search found.
//!
//! Two ways, same result type:
//! - [`extractive`]: no model; the answer is the passages' sentences that
//!   share the most words with the question (compared as the index compares
//!   them: lowercased, stemmed, stop words ignored).
//! - [`LlmClient`]: an OpenAI-compatible chat completions server writes the
//!   answer from the passages, and only from them: the prompt holds nothing
//!   but the numbered passages given and the question.
//!
//! Either way the citations name the passages behind the answer, each with a
//! snippet: its sentence(s) most relevant to the question, at most
//! [`SNIPPET_CHARS`] chars.

use std::collections::HashSet;
use std::time::Duration;

use echo_tls::ClientTls;
use serde::{Deserialize, Serialize};

use crate::index::analyzed_terms;
use crate::{DocsError, Passage, Result};

/// The answer when no passage was found.
pub const NO_ANSWER: &str = "No passage in your documents answers this question.";

/// At most this many chars in a citation's snippet (and in each sentence of
/// an extractive answer).
pub const SNIPPET_CHARS: usize = 300;

/// The model asked when none is configured.
pub const DEFAULT_LLM_MODEL: &str = "llama3.2";

/// How many of the best passages an extractive answer draws from, and how
/// many sentences it has at most (one per passage).
const EXTRACTIVE_PASSAGES: usize = 3;
const EXTRACTIVE_SENTENCES: usize = 2;

/// The answer to a question, with the passages it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
}

/// A passage an answer is drawn from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub document_id: String,
    /// The document's name.
    pub name: String,
    /// The passage's sentence(s) most relevant to the question.
    pub snippet: String,
    /// The passage's chunk position in its document.
    pub position: u32,
}

fn no_answer() -> Answer {
    Answer {
        answer: NO_ANSWER.to_owned(),
        citations: Vec::new(),
    }
}

/// Answers from the passages alone: the best-matching sentence of each of
/// the top passages, best first (at most [`EXTRACTIVE_SENTENCES`]), citing
/// the passages they come from. `passages` are expected best first, as
/// [`crate::SearchIndex::search`] returns them.
pub fn extractive(question: &str, passages: &[Passage]) -> Answer {
    let question_terms = term_set(question);
    // (matching terms, rank of the passage, its best sentence)
    let mut candidates: Vec<(usize, usize, String)> = passages
        .iter()
        .take(EXTRACTIVE_PASSAGES)
        .enumerate()
        .filter_map(|(rank, passage)| {
            best_sentence(&question_terms, &passage.text)
                .map(|(matches, sentence)| (matches, rank, sentence))
        })
        .collect();
    // Most matching terms first; among equals, the better-ranked passage.
    candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));

    let mut answer_sentences = Vec::new();
    let mut citations = Vec::new();
    for (index, (matches, rank, sentence)) in candidates.into_iter().enumerate() {
        // The best sentence always answers (the search matched its passage);
        // a further one only when it shares words with the question.
        if index >= EXTRACTIVE_SENTENCES || (index > 0 && matches == 0) {
            break;
        }
        let snippet = shorten(&sentence, SNIPPET_CHARS);
        answer_sentences.push(snippet.clone());
        citations.push(citation(&passages[rank], snippet));
    }
    if citations.is_empty() {
        return no_answer();
    }
    Answer {
        answer: answer_sentences.join(" "),
        citations,
    }
}

fn citation(passage: &Passage, snippet: String) -> Citation {
    Citation {
        document_id: passage.document_id.clone(),
        name: passage.name.clone(),
        snippet,
        position: passage.position,
    }
}

/// The passage's snippet for a question: its most relevant sentence, short.
fn snippet(question_terms: &HashSet<String>, passage: &Passage) -> String {
    let sentence = best_sentence(question_terms, &passage.text)
        .map(|(_, sentence)| sentence)
        .unwrap_or_default();
    shorten(&sentence, SNIPPET_CHARS)
}

fn term_set(text: &str) -> HashSet<String> {
    analyzed_terms(text).into_iter().collect()
}

/// The sentence of `text` sharing the most distinct terms with the question
/// (the first of equals), with that number; `None` when `text` is blank.
fn best_sentence(question_terms: &HashSet<String>, text: &str) -> Option<(usize, String)> {
    let mut best: Option<(usize, String)> = None;
    for sentence in sentences(text) {
        let matches = term_set(&sentence)
            .iter()
            .filter(|term| question_terms.contains(*term))
            .count();
        if best.as_ref().is_none_or(|(most, _)| matches > *most) {
            best = Some((matches, sentence));
        }
    }
    best
}

/// Splits text into sentences: at `.`, `!`, `?` or `…` before whitespace, at
/// CJK full stops, and at paragraph breaks (blank lines). A single line
/// break is not a boundary (extracted PDF text wraps lines mid-sentence);
/// whitespace runs become one space.
fn sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let finish = |current: &mut String, sentences: &mut Vec<String>| {
        let sentence = current.trim();
        if !sentence.is_empty() {
            sentences.push(sentence.to_owned());
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            // Consume the whole run; two line feeds in it end a paragraph.
            let mut line_feeds = usize::from(c == '\n');
            while let Some(&next) = chars.peek().filter(|next| next.is_whitespace()) {
                line_feeds += usize::from(next == '\n');
                chars.next();
            }
            if line_feeds >= 2 {
                finish(&mut current, &mut sentences);
            } else {
                current.push(' ');
            }
            continue;
        }
        current.push(c);
        let ends_sentence = match c {
            '。' | '！' | '？' => true,
            '.' | '!' | '?' | '…' => chars.peek().is_none_or(|next| next.is_whitespace()),
            _ => false,
        };
        if ends_sentence {
            finish(&mut current, &mut sentences);
        }
    }
    finish(&mut current, &mut sentences);
    sentences
}

/// `text` cut to at most `max_chars` chars (on a char boundary, at a word
/// boundary when one is near), ending in "…" when cut.
fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_owned();
    }
    let keep = max_chars.saturating_sub(1);
    let end = text
        .char_indices()
        .nth(keep)
        .map_or(text.len(), |(index, _)| index);
    let mut head = &text[..end];
    if let Some(space) = head.rfind(char::is_whitespace)
        && head[..space].chars().count() >= keep * 3 / 4
    {
        head = &head[..space];
    }
    format!("{}…", head.trim_end())
}

/// What the model is told: the rules, before the passages and the question.
const SYSTEM_PROMPT: &str = "You answer questions about the user's documents using only the \
numbered passages in the user's message. Cite the passages you use as [n], where n is the \
passage's number. If the passages do not contain the answer, say so plainly; do not guess \
and do not use outside knowledge.";

/// A client of an OpenAI-compatible chat completions server (OpenAI,
/// Ollama, llama.cpp, vLLM, ...).
///
/// The URL given to [`LlmClient::new`] may be either the API's base (e.g.
/// `http://127.0.0.1:11434/v1`, the usual `ECHO_LLM_URL`), to which
/// `/chat/completions` is appended, or the full endpoint ending in
/// `/chat/completions`, used as is.
#[derive(Clone)]
pub struct LlmClient {
    endpoint: String,
    api_key: Option<String>,
    model: String,
    timeout: Duration,
    http: reqwest::Client,
}

/// Never prints the API key.
impl std::fmt::Debug for LlmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmClient")
            .field("endpoint", &self.endpoint)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("model", &self.model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [ChatMessage<'a>; 2],
    temperature: f32,
    stream: bool,
}

#[derive(Serialize)]
struct ChatMessage<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<ChatChoice>,
}

#[derive(Deserialize)]
struct ChatChoice {
    message: ChatResponseMessage,
}

#[derive(Deserialize)]
struct ChatResponseMessage {
    content: Option<String>,
}

impl LlmClient {
    /// A client of the server at `url` (the base ending in `/v1`, or the
    /// full `/chat/completions` endpoint), sending `api_key` as a bearer
    /// token when given, asking `model`, giving up after `timeout`,
    /// trusting what `tls` trusts.
    pub fn new(
        url: &str,
        api_key: Option<String>,
        model: &str,
        timeout: Duration,
        tls: &ClientTls,
    ) -> Result<Self> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(DocsError::Llm(
                "the model's URL must start with http:// or https://".to_owned(),
            ));
        }
        let endpoint = if url.ends_with("/chat/completions") {
            url.to_owned()
        } else {
            format!("{url}/chat/completions")
        };
        let http = tls.http_client(timeout);
        Ok(Self {
            endpoint,
            api_key: api_key.filter(|key| !key.is_empty()),
            model: model.to_owned(),
            timeout,
            http,
        })
    }

    /// The chat completions URL requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    /// The model's answer from `passages` (and nothing else), citing all of
    /// them, each with its sentence most relevant to the question. With no
    /// passages the model is not asked: the answer says nothing was found.
    pub async fn answer(&self, question: &str, passages: &[Passage]) -> Result<Answer> {
        if passages.is_empty() {
            return Ok(no_answer());
        }
        let user_message = user_message(question, passages);
        let request = ChatRequest {
            model: &self.model,
            messages: [
                ChatMessage {
                    role: "system",
                    content: SYSTEM_PROMPT,
                },
                ChatMessage {
                    role: "user",
                    content: &user_message,
                },
            ],
            // Low: the answer should restate the passages, not improvise.
            temperature: 0.2,
            stream: false,
        };
        let mut builder = self.http.post(&self.endpoint).json(&request);
        if let Some(key) = &self.api_key {
            builder = builder.bearer_auth(key);
        }
        let response = builder
            .send()
            .await
            .map_err(|error| self.send_error(&error))?;
        let status = response.status();
        if !status.is_success() {
            return Err(DocsError::Llm(format!(
                "the model's server answered HTTP {}",
                status.as_u16()
            )));
        }
        let completion: ChatResponse = response.json().await.map_err(|error| {
            if error.is_timeout() {
                self.send_error(&error)
            } else {
                DocsError::Llm("the model's server sent no chat completion".to_owned())
            }
        })?;
        let answer = completion
            .choices
            .into_iter()
            .next()
            .and_then(|choice| choice.message.content)
            .map(|content| content.trim().to_owned())
            .filter(|content| !content.is_empty())
            .ok_or_else(|| DocsError::Llm("the model's answer is empty".to_owned()))?;

        let question_terms = term_set(question);
        let citations = passages
            .iter()
            .map(|passage| citation(passage, snippet(&question_terms, passage)))
            .collect();
        Ok(Answer { answer, citations })
    }

    /// A short message for a failed request (no URL: it may carry secrets).
    fn send_error(&self, error: &reqwest::Error) -> DocsError {
        if error.is_timeout() {
            DocsError::Llm(format!(
                "the model did not answer within {}s",
                self.timeout.as_secs_f32()
            ))
        } else {
            DocsError::Llm("cannot reach the model's server".to_owned())
        }
    }
}

/// The user message: the passages numbered [1]..[n] with their documents'
/// names, then the question.
fn user_message(question: &str, passages: &[Passage]) -> String {
    let mut message = String::from("Passages:\n\n");
    for (index, passage) in passages.iter().enumerate() {
        message.push_str(&format!(
            "[{}] (from \"{}\")\n{}\n\n",
            index + 1,
            passage.name,
            passage.text.trim()
        ));
    }
    message.push_str("Question: ");
    message.push_str(question.trim());
    message
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use axum::{Json, Router};
    use serde_json::{Value, json};

    use super::*;

    fn passage(document_id: &str, name: &str, position: u32, text: &str) -> Passage {
        Passage {
            document_id: document_id.to_owned(),
            name: name.to_owned(),
            position,
            start: 0,
            text: text.to_owned(),
            score: 1.0,
        }
    }

    #[test]
    fn no_passages_no_answer() {
        let answer = extractive("what is a parser?", &[]);
        assert_eq!(answer.answer, NO_ANSWER);
        assert!(answer.citations.is_empty());
    }

    #[test]
    fn extractive_picks_the_matching_sentences_and_cites_them() {
        let passages = [
            passage(
                "doc-1",
                "manual.pdf",
                3,
                "Echo stores documents. The parser reads PDF files and\nDOCX files quickly. \
                 Nothing else here.",
            ),
            passage(
                "doc-2",
                "notes.txt",
                0,
                "Unrelated words. Reading PDF files is slow!",
            ),
            passage(
                "doc-3",
                "other.txt",
                1,
                "Nothing matches in this passage at all.",
            ),
        ];
        let answer = extractive("Which parsers read PDF files?", &passages);
        assert_eq!(
            answer.answer,
            "The parser reads PDF files and DOCX files quickly. Reading PDF files is slow!"
        );
        assert_eq!(
            answer.citations,
            vec![
                Citation {
                    document_id: "doc-1".to_owned(),
                    name: "manual.pdf".to_owned(),
                    snippet: "The parser reads PDF files and DOCX files quickly.".to_owned(),
                    position: 3,
                },
                Citation {
                    document_id: "doc-2".to_owned(),
                    name: "notes.txt".to_owned(),
                    snippet: "Reading PDF files is slow!".to_owned(),
                    position: 0,
                },
            ]
        );
    }

    #[test]
    fn extractive_keeps_the_best_passage_even_without_overlap() {
        let passages = [passage("doc-1", "a.txt", 0, "First sentence. Second one.")];
        let answer = extractive("zzz", &passages);
        assert_eq!(answer.answer, "First sentence.");
        assert_eq!(answer.citations.len(), 1);
    }

    #[test]
    fn snippets_are_short_and_cut_on_char_boundaries() {
        let long_sentence = "é🦀 ".repeat(200) + "parser.";
        let passages = [passage("doc-1", "a.txt", 0, &long_sentence)];
        let answer = extractive("parser", &passages);
        let snippet = &answer.citations[0].snippet;
        assert!(
            snippet.chars().count() <= SNIPPET_CHARS,
            "{}",
            snippet.len()
        );
        assert!(snippet.ends_with('…'));

        let unbroken = "x".repeat(1000);
        let cut = shorten(&unbroken, 300);
        assert_eq!(cut.chars().count(), 300);
        assert_eq!(shorten("short", 300), "short");
    }

    #[test]
    fn sentences_split_at_ends_and_paragraphs_not_line_wraps() {
        assert_eq!(
            sentences("One two\nthree. Four?  Five…\n\nSix\n \nseven 日本。語 end"),
            [
                "One two three.",
                "Four?",
                "Five…",
                "Six",
                "seven 日本。",
                "語 end"
            ]
        );
        assert!(sentences(" \n ").is_empty());
    }

    /// What the fake model server saw.
    #[derive(Default)]
    struct Recorded {
        requests: Vec<(String, Option<String>, Value)>,
    }

    type Shared = Arc<Mutex<Recorded>>;

    async fn completions(
        State(recorded): State<Shared>,
        headers: HeaderMap,
        axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
        Json(body): Json<Value>,
    ) -> Json<Value> {
        let authorization = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        recorded
            .lock()
            .unwrap()
            .requests
            .push((uri.path().to_owned(), authorization, body));
        Json(json!({
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": " Parsers read PDFs [1]. "},
                "finish_reason": "stop"
            }]
        }))
    }

    async fn fake_model() -> (SocketAddr, Shared) {
        let recorded = Shared::default();
        let app = Router::new()
            .route("/v1/chat/completions", post(completions))
            .route(
                "/broken/chat/completions",
                post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "model crashed") }),
            )
            .route(
                "/garbage/chat/completions",
                post(|| async { "this is not json" }),
            )
            .route(
                "/empty/chat/completions",
                post(|| async { Json(json!({"choices": []})) }),
            )
            .route(
                "/slow/chat/completions",
                post(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .with_state(recorded.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (address, recorded)
    }

    fn client(url: &str, key: Option<&str>) -> LlmClient {
        LlmClient::new(
            url,
            key.map(str::to_owned),
            "test-model",
            Duration::from_secs(5),
            &Default::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn asks_the_model_with_only_the_given_passages_and_the_question() {
        let (address, recorded) = fake_model().await;
        let llm = client(&format!("http://{address}/v1"), Some("sk-secret-key"));
        let passages = [
            passage(
                "doc-1",
                "manual.pdf",
                2,
                "The parser reads PDF files. It is fast.",
            ),
            passage("doc-2", "notes.txt", 0, "Remember the milk."),
        ];
        let answer = llm
            .answer("Which parser reads PDFs?", &passages)
            .await
            .unwrap();
        assert_eq!(answer.answer, "Parsers read PDFs [1].");
        assert_eq!(answer.citations.len(), 2);
        assert_eq!(answer.citations[0].document_id, "doc-1");
        assert_eq!(answer.citations[0].snippet, "The parser reads PDF files.");
        assert_eq!(answer.citations[1].position, 0);

        let recorded = recorded.lock().unwrap();
        let (path, authorization, body) = &recorded.requests[0];
        assert_eq!(path, "/v1/chat/completions");
        assert_eq!(authorization.as_deref(), Some("Bearer sk-secret-key"));
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["messages"][0]["role"], "system");
        assert!(
            body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("only the numbered passages")
        );
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert_eq!(body["messages"][1]["role"], "user");
        assert_eq!(
            user,
            "Passages:\n\n[1] (from \"manual.pdf\")\nThe parser reads PDF files. It is fast.\n\n\
             [2] (from \"notes.txt\")\nRemember the milk.\n\nQuestion: Which parser reads PDFs?"
        );
    }

    #[tokio::test]
    async fn the_full_endpoint_url_is_used_as_is_and_no_key_no_header() {
        let (address, recorded) = fake_model().await;
        let llm = client(&format!("http://{address}/v1/chat/completions/"), None);
        assert_eq!(
            llm.endpoint(),
            format!("http://{address}/v1/chat/completions")
        );
        llm.answer("q", &[passage("d", "n", 0, "text")])
            .await
            .unwrap();
        let recorded = recorded.lock().unwrap();
        assert_eq!(recorded.requests[0].0, "/v1/chat/completions");
        assert_eq!(recorded.requests[0].1, None);
    }

    #[tokio::test]
    async fn no_passages_does_not_ask_the_model() {
        let (address, recorded) = fake_model().await;
        let llm = client(&format!("http://{address}/v1"), None);
        let answer = llm.answer("anything?", &[]).await.unwrap();
        assert_eq!(answer, extractive("anything?", &[]));
        assert!(recorded.lock().unwrap().requests.is_empty());
    }

    #[tokio::test]
    async fn failures_are_llm_errors() {
        let (address, _) = fake_model().await;
        let passages = [passage("d", "n", 0, "text")];
        for base in ["broken", "garbage", "empty"] {
            let llm = client(&format!("http://{address}/{base}"), Some("sk-secret-key"));
            match llm.answer("q", &passages).await {
                Err(DocsError::Llm(message)) => {
                    assert!(!message.contains("sk-secret-key"), "{message}");
                }
                other => panic!("{base}: {other:?}"),
            }
        }
        let slow = LlmClient::new(
            &format!("http://{address}/slow"),
            None,
            "m",
            Duration::from_millis(200),
            &Default::default(),
        )
        .unwrap();
        assert!(matches!(
            slow.answer("q", &passages).await,
            Err(DocsError::Llm(message)) if message.contains("did not answer")
        ));
        // A port just released: connection refused.
        let released = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = released.local_addr().unwrap().port();
        drop(released);
        let closed = client(&format!("http://127.0.0.1:{port}/v1"), None);
        assert!(matches!(
            closed.answer("q", &passages).await,
            Err(DocsError::Llm(_))
        ));
        assert!(
            LlmClient::new(
                "ftp://x",
                None,
                "m",
                Duration::from_secs(1),
                &Default::default()
            )
            .is_err()
        );
    }

    #[test]
    fn debug_never_prints_the_key() {
        let llm = client("http://127.0.0.1:1/v1", Some("sk-secret-key"));
        let printed = format!("{llm:?}");
        assert!(!printed.contains("sk-secret-key"), "{printed}");
        assert!(printed.contains("<redacted>"));
    }
}
