//! Black-box tests of the parser service over real HTTP: each format from
//! files the tests generate, hostile files, limits, and who may call.

use std::sync::Arc;

use async_trait::async_trait;
use echo_core::audit::{MemoryAuditSink, Outcome};
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_parser::{Isolation, Limits, ParserApp};
use echo_testkit::refusals::{REASONS, assert_refused_alike, bad_tokens};
use echo_verify::{JwksSource, StaticJwks, Verifier, VerifierOptions, VerifyError};
use serde_json::{Value, json};

mod formats;
mod hostile;
mod properties;
mod samples;

const ISSUER: &str = "http://127.0.0.1:8081";

/// A parser on an ephemeral port, and the key that signs its callers'
/// tokens (standing in for identity).
pub struct Fixture {
    url: String,
    key: SigningKey,
    audit: Arc<MemoryAuditSink>,
}

impl Fixture {
    pub async fn start() -> Self {
        Self::with_limits(Limits::default()).await
    }

    pub async fn with_limits(limits: Limits) -> Self {
        let key = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
        let verifier = Verifier::new(
            ISSUER,
            Arc::new(StaticJwks(JwkSet {
                keys: vec![key.public_jwk()],
            })),
            VerifierOptions::default(),
        );
        let audit = Arc::new(MemoryAuditSink::default());
        let app = ParserApp::new(
            Arc::new(verifier),
            "parser",
            limits,
            Isolation::Thread,
            audit.clone(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(echo_parser::serve(
            listener,
            Arc::new(app),
            std::future::pending(),
        ));
        Self { url, key, audit }
    }

    pub fn token(&self, claims: Value) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut base = json!({"iss": ISSUER, "aud": "parser", "sub": "worker",
            "client_id": "worker", "exp": now + 300, "iat": now});
        for (k, v) in claims.as_object().unwrap() {
            base[k] = v.clone();
        }
        self.key.sign("at+jwt", &base).unwrap()
    }

    /// Posts `body` to `/v1/parse` with `token` (if any) and the optional
    /// `filename` hint.
    pub async fn post_as(
        &self,
        token: Option<&str>,
        filename: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .post(format!("{}/v1/parse", self.url))
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(filename) = filename {
            request = request.query(&[("filename", filename)]);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Parses `body` as the `worker` service.
    pub async fn parse(
        &self,
        filename: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let token = self.token(json!({}));
        self.post_as(Some(&token), filename, body).await
    }

    /// Panics unless the service still parses a small text file.
    pub async fn assert_alive(&self) {
        let (status, body) = self.parse(Some("ok.txt"), "still here").await;
        assert_eq!((status, body["text"].as_str()), (200, Some("still here")));
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_alike_and_audited_once_each() {
    let fixture = Fixture::start().await;
    let claims = json!({"iss": ISSUER, "aud": "parser", "sub": "worker", "client_id": "worker"});
    let url = format!("{}/v1/parse", fixture.url);
    assert_refused_alike(bad_tokens(&fixture.key, &claims), |token| {
        let mut request = reqwest::Client::new().post(&url).body("hello");
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    })
    .await;
    // A user's token, valid but of the wrong kind: 403.
    let user = fixture.token(json!({"sub": "alice", "client_id": "gateway"}));
    let (status, body) = fixture.post_as(Some(&user), None, "hello").await;
    assert_eq!(
        (status, &body["reason"]),
        (403, &json!("wrong_kind")),
        "{body}"
    );
    fixture.assert_alive().await;

    // One `access.denied` event per refusal, with its reason and the
    // caller's address; the subject only where the token itself was valid.
    // The one other event is the parse of `assert_alive`.
    let (denied, parsed): (Vec<_>, Vec<_>) = fixture
        .audit
        .events()
        .into_iter()
        .partition(|e| e.action == "access.denied");
    assert_eq!(parsed.len(), 1, "{parsed:?}");
    assert_eq!(parsed[0].action, "document.parse");
    let reasons: Vec<_> = denied
        .iter()
        .map(|e| e.details["reason"].as_str().unwrap().to_owned())
        .collect();
    let mut expected = REASONS.to_vec();
    expected.push("wrong_kind");
    assert_eq!(reasons, expected, "{denied:?}");
    assert!(denied.iter().all(|e| e.outcome == Outcome::Failure));
    assert!(denied.iter().all(|e| e.ip.as_deref() == Some("127.0.0.1")));
    assert!(denied.iter().all(|e| e.details["service"] == "parser"));
    let actors: Vec<_> = denied.iter().map(|e| e.actor.as_deref()).collect();
    assert_eq!(actors, [None, None, None, None, None, None, Some("alice")]);
    assert_eq!(denied[6].details["client_id"], "gateway");
}

#[tokio::test]
async fn every_parse_is_audited_in_the_callers_trace() {
    let fixture = Fixture::start().await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parsed = reqwest::Client::new()
        .post(format!("{}/v1/parse", fixture.url))
        .bearer_auth(fixture.token(json!({})))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .query(&[("filename", "a.txt")])
        .body("hello there")
        .send()
        .await
        .unwrap();
    assert_eq!(parsed.status(), 200);
    let zip = echo_testkit::files::zip(&[("a.txt", b"hi")]);
    let (status, _) = fixture.parse(None, zip.clone()).await;
    assert_eq!(status, 415);

    let events = fixture.audit.events();
    let [parsed, refused] = &events[..] else {
        panic!("{events:?}");
    };
    assert_eq!(
        (parsed.action, parsed.outcome),
        ("document.parse", Outcome::Success)
    );
    assert_eq!(parsed.actor.as_deref(), Some("worker"));
    assert_eq!(
        parsed.trace_id.as_deref(),
        Some(trace),
        "the caller's trace"
    );
    assert_eq!(parsed.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        (
            &parsed.details["type"],
            &parsed.details["bytes"],
            &parsed.details["chars"],
            &parsed.details["truncated"]
        ),
        (&json!("txt"), &json!(11), &json!(11), &json!(false))
    );
    assert_eq!(
        (refused.action, refused.outcome),
        ("document.parse", Outcome::Failure)
    );
    assert_eq!(refused.details["reason"], "unsupported");
    assert_eq!(refused.details["bytes"], zip.len());
    let fresh = refused.trace_id.as_deref().unwrap();
    assert!(
        fresh.len() == 32 && fresh != trace,
        "no traceparent: a trace of its own ({fresh})"
    );
}

#[tokio::test]
async fn a_flood_of_bad_tokens_makes_a_bounded_number_of_audit_events() {
    let fixture = Fixture::start().await;
    let client = reqwest::Client::new();
    for i in 0..1000 {
        let token = if i % 2 == 0 {
            "junk"
        } else {
            "also.junk.token"
        };
        let response = client
            .post(format!("{}/v1/parse", fixture.url))
            .bearer_auth(token)
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let events = fixture.audit.events();
    assert!(events.len() < 20, "{} events", events.len());
    assert_eq!(events.len(), 1, "one kind (malformed, one address) so far");
}

#[tokio::test]
async fn a_refusal_carries_the_bearer_challenge() {
    let fixture = Fixture::start().await;
    let response = reqwest::Client::new()
        .post(format!("{}/v1/parse", fixture.url))
        .bearer_auth(fixture.token(json!({"aud": "audit"})))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
}

#[tokio::test]
async fn unknown_keys_without_a_jwks_are_a_503() {
    struct Down;
    #[async_trait]
    impl JwksSource for Down {
        async fn fetch(&self) -> Result<JwkSet, VerifyError> {
            Err(VerifyError::KeysUnavailable("down".into()))
        }
    }
    let verifier = Verifier::new(ISSUER, Arc::new(Down), VerifierOptions::default());
    let audit = Arc::new(MemoryAuditSink::default());
    let app = ParserApp::new(
        Arc::new(verifier),
        "parser",
        Limits::default(),
        Isolation::Thread,
        audit.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(echo_parser::serve(
        listener,
        Arc::new(app),
        std::future::pending(),
    ));
    let fixture = Fixture::start().await;
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/parse"))
        .bearer_auth(fixture.token(json!({})))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
}
