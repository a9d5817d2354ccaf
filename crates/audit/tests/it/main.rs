//! Black-box tests of the audit service over real HTTP: writers' identity,
//! bad input, idempotent retries, reading rights, checkpoints, and the same
//! store suite on SQLite and PostgreSQL.

use std::sync::Arc;

use echo_audit::checkpoint::{NoteSigner, verify_note};
use echo_audit::http::AuditApp;
use echo_audit::service::AuditService;
use echo_audit::store::AuditStore;
use echo_core::SystemClock;
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_testkit::PgTestDb;
use echo_testkit::refusals::{REASONS, assert_refused_alike, bad_tokens};
use echo_verify::{StaticJwks, Verifier, VerifierOptions};
use serde_json::{Value, json};

mod retention;
mod verify;

const ISSUER: &str = "http://127.0.0.1:8081";

/// Event `n` as a store receives it, at `time` (ms): id `ev-<n>`, message
/// `event ev-<n>`.
fn stored_event(n: usize, time: i64) -> echo_audit::event::Event {
    echo_audit::event::Event {
        id: format!("ev-{n}"),
        time,
        service: "identity".into(),
        level: echo_audit::event::Level::Info,
        action: "auth.login.success".into(),
        actor: Some(format!("user-{}", n % 7)),
        outcome: Some("success".into()),
        ip: None,
        user_agent: None,
        trace_id: None,
        message: format!("event ev-{n}"),
        context: json!({"n": n}),
    }
}

/// An audit service on an ephemeral port, and the key that signs its
/// callers' tokens (standing in for identity).
struct Fixture {
    url: String,
    key: SigningKey,
    store: Arc<dyn AuditStore>,
    vkey: String,
    _dir: echo_testkit::TempDir,
}

fn now() -> i64 {
    use echo_core::Clock;
    SystemClock.now()
}

impl Fixture {
    async fn start(store: Option<Arc<dyn AuditStore>>) -> Self {
        let dir = echo_testkit::data_dir();
        let store = match store {
            Some(store) => store,
            None => echo_audit::store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
                .await
                .unwrap(),
        };
        let key = SigningKey::generate(Algorithm::EdDSA, "k1").unwrap();
        let verifier = Verifier::new(
            ISSUER,
            Arc::new(StaticJwks(JwkSet {
                keys: vec![key.public_jwk()],
            })),
            VerifierOptions::default(),
        );
        let signer = NoteSigner::generate("test/echo-audit").unwrap();
        let vkey = signer.verifier_key();
        let service = AuditService::new(store.clone(), signer, Arc::new(SystemClock));
        let app = Arc::new(AuditApp::new(service, Arc::new(verifier), "audit"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(echo_audit::http::serve(
            listener,
            app,
            std::future::pending(),
        ));
        Self {
            url,
            key,
            store,
            vkey,
            _dir: dir,
        }
    }

    fn token(&self, claims: Value) -> String {
        let mut base = json!({"iss": ISSUER, "aud": "audit", "exp": now() + 300, "iat": now()});
        for (k, v) in claims.as_object().unwrap() {
            base[k] = v.clone();
        }
        self.key.sign("at+jwt", &base).unwrap()
    }

    fn service_token(&self, service: &str) -> String {
        self.token(json!({"sub": service, "client_id": service, "scope": "audit.write"}))
    }

    async fn post(&self, path: &str, token: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn count(&self) -> i64 {
        self.store.head().await.unwrap().size
    }

    /// The audit service's own `access.denied` events, once there are
    /// `n` (they are written by a task of their own), oldest first.
    async fn denied(&self, n: usize) -> Vec<echo_audit::chain::ChainedEvent> {
        for _ in 0..200 {
            let mut denied = self
                .store
                .query(&echo_audit::store::EventQuery {
                    action: Some("access.denied".into()),
                    limit: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            if denied.len() >= n {
                denied.reverse();
                return denied;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("fewer than {n} access.denied events");
    }
}

fn event(id: &str) -> Value {
    json!({"id": id, "level": "info", "action": "auth.login.success", "actor": "alice", "outcome": "success", "message": format!("event {id}")})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_as_json_or_ndjson_are_stored_once() {
    let f = Fixture::start(None).await;
    let token = f.service_token("identity");
    let batch = json!([event("a1"), event("a2")]).to_string();
    assert_eq!(
        f.post("/v1/events", &token, batch.clone()).await,
        (200, json!({"stored": 2, "duplicates": 0, "size": 2}))
    );
    // A retried batch is stored once.
    assert_eq!(
        f.post("/v1/events", &token, batch).await,
        (200, json!({"stored": 0, "duplicates": 2, "size": 2}))
    );
    let ndjson = format!("{}\n{}\n", event("a3"), event("a4"));
    assert_eq!(f.post("/v1/events", &token, ndjson).await.1["stored"], 2);
    let log = json!({"service": "identity", "level": "warn", "message": "disk almost full", "context": {"free": 3}});
    assert_eq!(f.post("/log", &token, log.to_string()).await.0, 200);
    assert_eq!(f.count().await, 5);
}

/// Issue 14 §14: the original design's services post
/// `{"service","level":"INFO","message"}` to `/log` and must keep working:
/// levels in any case, `WARNING` as `warn`, `CRITICAL` and `FATAL` as
/// `critical`, on `/log` and `/v1/events` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_services_log_with_upper_case_levels() {
    let f = Fixture::start(None).await;
    let token = f.service_token("careergpt");
    for (sent, stored) in [
        ("INFO", "info"),
        ("WARNING", "warn"),
        ("Warn", "warn"),
        ("ERROR", "error"),
        ("CRITICAL", "critical"),
        ("FATAL", "critical"),
        ("DEBUG", "debug"),
    ] {
        let log = json!({"service": "careergpt", "level": sent, "message": format!("resume parsed ({sent})")});
        let (status, body) = f.post("/log", &token, log.to_string()).await;
        assert_eq!(status, 200, "{sent}: {body}");
        let row = f.store.rows(f.count().await - 1, 1).await.unwrap();
        assert_eq!(row[0].event.level.as_str(), stored, "{sent}");
        assert_eq!(row[0].event.action, format!("log.{stored}"), "{sent}");
        assert_eq!(row[0].event.service, "careergpt");
    }
    let batch = json!([{"id": "up-1", "level": "Info", "action": "resume.parsed", "message": "m"}]);
    assert_eq!(f.post("/v1/events", &token, batch.to_string()).await.0, 200);
    let loud = json!({"service": "careergpt", "level": "LOUD", "message": "m"});
    let (status, body) = f.post("/log", &token, loud.to_string()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("unknown level"),
        "{body}"
    );
    let loud = json!([{"id": "up-2", "level": "LOUD", "action": "a.b", "message": "m"}]);
    assert_eq!(f.post("/v1/events", &token, loud.to_string()).await.0, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_cannot_write_as_another() {
    let f = Fixture::start(None).await;
    let token = f.service_token("svc-a");
    let forged = json!([event("ok-1"), {"id": "x", "service": "identity", "level": "info", "action": "auth.login.success"}]);
    let (status, body) = f.post("/v1/events", &token, forged.to_string()).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(f.count().await, 0, "nothing of the batch was stored");
    let (status, _) = f
        .post(
            "/log",
            &token,
            json!({"service": "identity", "level": "info", "message": "m"}).to_string(),
        )
        .await;
    assert_eq!(status, 403);
    // Without a service field the token's subject is the writer.
    assert_eq!(
        f.post("/v1/events", &token, json!([event("mine")]).to_string())
            .await
            .0,
        200
    );
    let rows = f.store.rows(0, 10).await.unwrap();
    assert_eq!(rows[0].event.service, "svc-a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_alike_and_recorded_in_the_chain_once_each() {
    let f = Fixture::start(None).await;
    let batch = json!([event("t1")]).to_string();
    let claims = json!({"iss": ISSUER, "sub": "svc-a", "client_id": "svc-a", "aud": "audit"});
    let url = format!("{}/v1/events", f.url);
    assert_refused_alike(bad_tokens(&f.key, &claims), |token| {
        let mut request = reqwest::Client::new().post(&url).body(batch.clone());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.unwrap() }
    })
    .await;
    let denied = f.denied(REASONS.len()).await;
    let reasons: Vec<_> = denied
        .iter()
        .map(|e| e.event.context["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, REASONS);
    assert!(denied.iter().all(|e| e.event.service == "audit"
        && e.event.actor.is_none()
        && e.event.ip.as_deref() == Some("127.0.0.1")));
    assert_eq!(
        f.count().await,
        REASONS.len() as i64,
        "nothing of the batch was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_nothing_of_the_batch_is_stored() {
    let f = Fixture::start(None).await;
    let token = f.service_token("identity");
    let huge = "x".repeat(1024 * 1024);
    let cases = [
        ("[{\"id\": ".to_owned(), 400),
        (
            json!([event("b1"), {"id": "b2", "level": "loud", "action": "a.b"}]).to_string(),
            400,
        ),
        (
            json!([event("b1"), {"id": "b3", "level": "info", "action": "a.b", "message": huge}])
                .to_string(),
            400,
        ),
        (json!([event("b1"), 5]).to_string(), 400),
        (
            Value::Array((0..1001).map(|i| event(&format!("n{i}"))).collect()).to_string(),
            413,
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = f.post("/v1/events", &token, body).await;
        assert_eq!(status, expected, "{answer}");
        assert!(answer["detail"].as_str().is_some_and(|e| !e.is_empty()));
    }
    assert_eq!(f.count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_redacted_before_storage() {
    let f = Fixture::start(None).await;
    let token = f.service_token("identity");
    let leaky = json!([{"id": "r1", "level": "info", "action": "auth.login.failure",
        "context": {"username": "alice", "password": "hunter2", "nested": {"access_token": "eyJhbGciOi.x.y"}}}]);
    assert_eq!(f.post("/v1/events", &token, leaky.to_string()).await.0, 200);
    let stored = serde_json::to_string(&f.store.rows(0, 1).await.unwrap()[0].event).unwrap();
    assert!(
        !stored.contains("hunter2") && !stored.contains("eyJhbGciOi.x.y"),
        "{stored}"
    );
    assert!(stored.contains("alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_auditors_admins_and_audit_read_services_may_read() {
    let f = Fixture::start(None).await;
    let writer = f.service_token("identity");
    let batch: Vec<Value> = (0..25).map(|i| event(&format!("q{i:02}"))).collect();
    f.post("/v1/events", &writer, Value::Array(batch).to_string())
        .await;

    let plain_user = f.token(json!({"sub": "bob", "roles": ["user"]}));
    assert_eq!(f.get("/v1/events", &plain_user).await.0, 403);
    assert_eq!(
        f.get("/v1/events", &writer).await.0,
        403,
        "writing does not grant reading"
    );
    let denied = f.denied(2).await;
    let refused: Vec<_> = denied
        .iter()
        .map(|e| {
            (
                e.event.actor.as_deref().unwrap(),
                e.event.context["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        refused,
        [
            ("bob", "insufficient_scope"),
            ("identity", "insufficient_scope")
        ],
        "each refusal is itself audited"
    );

    let auditor = f.token(json!({"sub": "carol", "roles": ["auditor"]}));
    let reader = f.token(json!({"sub": "siem", "client_id": "siem", "scope": "audit.read"}));
    let admin = f.token(json!({"sub": "root", "roles": ["admin"]}));
    for token in [&auditor, &reader, &admin] {
        assert_eq!(f.get("/v1/events?limit=1", token).await.0, 200);
    }
    // Issue 14 §6: `audit.read` on a user's token (say, added to a login
    // through a client registered with it) opens nothing.
    for escalated in [
        json!({"sub": "bob", "client_id": "gateway", "scope": "openid audit.read"}),
        json!({"sub": "bob", "scope": "audit.read"}),
    ] {
        let token = f.token(escalated);
        assert_eq!(f.get("/v1/events?limit=1", &token).await.0, 403);
    }
    // Keyset pagination, newest first, over the writer's events only.
    let mut seen = Vec::new();
    let mut path = "/v1/events?service=identity&limit=10".to_owned();
    loop {
        let (status, page) = f.get(&path, &auditor).await;
        assert_eq!(status, 200);
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/events?service=identity&limit=10&cursor={cursor}"),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).rev().map(|i| format!("q{i:02}")).collect();
    assert_eq!(seen, expected);
    let (_, filtered) = f.get("/v1/events?q=event%20q07", &auditor).await;
    assert_eq!(filtered["events"].as_array().unwrap().len(), 1);
    let (status, _) = f.get("/v1/events?cursor=12x", &auditor).await;
    assert_eq!(status, 400);
    let (status, _) = f.get("/v1/events?q=..", &auditor).await;
    assert_eq!(status, 400);
    // Newest first by event time, which is the service's receive time: an
    // event that arrives late claiming an old time (a writer's spool resent
    // after an outage) is the newest, its claimed time kept as client_time.
    let late = json!([{"id": "late", "time": 1_000, "level": "info", "action": "test.late", "message": "late"}]);
    f.post("/v1/events", &f.service_token("identity"), late.to_string())
        .await;
    let (_, page) = f
        .get("/v1/events?service=identity&limit=1000", &auditor)
        .await;
    let ids: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.first(), Some(&"late"));
    assert_eq!(ids.last(), Some(&"q00"));
    assert_eq!(page["events"][0]["context"]["client_time"], 1_000);
    let (_, capped) = f.get("/v1/events?limit=100000", &auditor).await;
    assert!(capped["events"].as_array().unwrap().len() <= 1000);
}

/// Issue 14 §13: a token without scope `audit.write` cannot write, on
/// `/v1/events` or on the original design's `/log`; the refusal is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writing_needs_scope_audit_write() {
    let f = Fixture::start(None).await;
    let log = json!({"service": "careergpt", "level": "INFO", "message": "hello"}).to_string();
    let batch = json!([event("w1")]).to_string();
    for claims in [
        json!({"sub": "careergpt", "client_id": "careergpt"}),
        json!({"sub": "careergpt", "client_id": "careergpt", "scope": "audit.read"}),
        json!({"sub": "alice", "roles": ["admin"]}),
    ] {
        let token = f.token(claims.clone());
        for (path, body) in [("/v1/events", &batch), ("/log", &log)] {
            let (status, problem) = f.post(path, &token, body.clone()).await;
            assert_eq!(status, 403, "{claims} on {path}: {problem}");
        }
    }
    // One event per subject: the rest of a window is counted (aggregated).
    let denied = f.denied(2).await;
    assert_eq!(
        f.count().await,
        denied.len() as i64,
        "nothing but the refusals is stored"
    );
    assert!(
        denied
            .iter()
            .all(|e| e.event.context["reason"] == "insufficient_scope")
    );
    let writer =
        f.token(json!({"sub": "careergpt", "client_id": "careergpt", "scope": "audit.write"}));
    assert_eq!(f.post("/log", &writer, log).await.0, 200);
    assert_eq!(f.post("/v1/events", &writer, batch).await.0, 200);
}

/// Issue 14 §13: the service dates events with its receive time. A writer's
/// `time` is kept as `context.client_time`; one more than five minutes
/// ahead (an event "from 2099", which would hold retention for good) is a
/// 400 problem and nothing of its batch is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_dates_events_and_refuses_writer_times_from_the_future() {
    let f = Fixture::start(None).await;
    let token = f.service_token("identity");
    let year_2099 = 4_102_444_800_000_i64;
    let batch = json!([event("fine"), {"id": "future", "time": year_2099, "level": "info", "action": "test.event", "message": "from 2099"}]);
    let response = reqwest::Client::new()
        .post(format!("{}/v1/events", f.url))
        .bearer_auth(&token)
        .body(batch.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("event 1") && detail.contains("ahead of the audit service's clock"),
        "{problem}"
    );
    assert_eq!(f.count().await, 0);

    let before = now() * 1000;
    let claimed = [1_000, before + 4 * 60 * 1000];
    let batch: Vec<Value> = claimed
        .iter()
        .enumerate()
        .map(|(i, time)| json!({"id": format!("t{i}"), "time": time, "level": "info", "action": "test.event", "message": "m", "context": {"client_time": 7}}))
        .chain([json!({"id": "untimed", "level": "info", "action": "test.event", "message": "m", "context": {"client_time": 7}})])
        .collect();
    assert_eq!(
        f.post("/v1/events", &token, Value::Array(batch).to_string())
            .await
            .0,
        200
    );
    let rows = f.store.rows(0, 10).await.unwrap();
    let after = now() * 1000;
    for (row, claimed) in rows.iter().zip([Some(claimed[0]), Some(claimed[1]), None]) {
        assert!(
            (before..=after).contains(&row.event.time),
            "{}: stored time {} is the receive time",
            row.event.id,
            row.event.time
        );
        assert_eq!(
            row.event.context.get("client_time").and_then(Value::as_i64),
            claimed,
            "{}: the writer's time, never one it put in the context",
            row.event.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_signed_notes_over_the_head() {
    let f = Fixture::start(None).await;
    let token = f.service_token("identity");
    f.post(
        "/v1/events",
        &token,
        json!([event("c1"), event("c2")]).to_string(),
    )
    .await;
    let (status, body) = f.get("/v1/checkpoint", &token).await;
    assert_eq!(status, 200);
    assert_eq!(body["verifier_key"], f.vkey);
    let checkpoint = verify_note(body["checkpoint"].as_str().unwrap(), &f.vkey).unwrap();
    let head = f.store.head().await.unwrap();
    assert_eq!((checkpoint.size, checkpoint.head), (head.size, head.head));
    let other = NoteSigner::generate("test/echo-audit")
        .unwrap()
        .verifier_key();
    assert!(verify_note(body["checkpoint"].as_str().unwrap(), &other).is_err());
}

async fn store_suite(store: Arc<dyn AuditStore>) {
    let f = Fixture::start(Some(store.clone())).await;
    let token = f.service_token("identity");
    let batch: Vec<Value> = (0..50).map(|i| event(&format!("s{i}"))).collect();
    assert_eq!(
        f.post(
            "/v1/events",
            &token,
            Value::Array(batch.clone()).to_string()
        )
        .await
        .1["stored"],
        50
    );
    assert_eq!(
        f.post("/v1/events", &token, Value::Array(batch).to_string())
            .await
            .1["stored"],
        0
    );
    // A retry mixing stored and new events (one repeated within the batch):
    // only the new ones are chained, once each.
    let mut mixed: Vec<Value> = (40..60).map(|i| event(&format!("s{i}"))).collect();
    mixed.push(event("s55"));
    let (_, answer) = f
        .post("/v1/events", &token, Value::Array(mixed).to_string())
        .await;
    assert_eq!(
        (answer["stored"].as_u64(), answer["duplicates"].as_u64()),
        (Some(10), Some(11))
    );
    // Concurrent writers all land, each once, in one unbroken chain.
    let writers = (0..4).map(|w| {
        let url = f.url.clone();
        let token = f.service_token(&format!("svc-{w}"));
        tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<Value> = (0..10).map(|i| event(&format!("w{w}-{b}-{i}"))).collect();
                let response = reqwest::Client::new()
                    .post(format!("{url}/v1/events"))
                    .bearer_auth(&token)
                    .body(Value::Array(batch).to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        })
    });
    for writer in writers {
        writer.await.unwrap();
    }
    let rows = store.rows(0, 1000).await.unwrap();
    assert_eq!(rows.len(), 260);
    let mut verifier = echo_audit::chain::ChainVerifier::new(
        echo_audit::chain::Anchor {
            size: 0,
            head: echo_audit::chain::GENESIS,
        },
        vec![store.head().await.unwrap()],
    );
    for row in rows {
        verifier.push(row).unwrap();
    }
    assert_eq!(verifier.finish().unwrap().count, 260);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_store_passes_the_suite() {
    let dir = echo_testkit::data_dir();
    store_suite(
        echo_audit::store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_suite() {
    let db = PgTestDb::create("audit postgres_store_passes_the_suite").await;
    let dir = echo_testkit::data_dir();
    store_suite(
        echo_audit::store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap(),
    )
    .await;
    db.drop_db().await;
}

/// Two replicas on one PostgreSQL, their checkpoint jobs ticking several
/// times an interval with events arriving between ticks: the cluster signs
/// one checkpoint per interval, not one per replica or per tick; an
/// explicit checkpoint still signs the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sign_one_checkpoint_per_interval() {
    use std::collections::BTreeSet;
    use std::time::Duration;

    let db = PgTestDb::create("audit replicas_sign_one_checkpoint_per_interval").await;
    let dir = echo_testkit::data_dir();
    let clock = Arc::new(echo_core::ManualClock::new(1_800_000_000));
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = echo_audit::store::open(
            Some(&db.url),
            &echo_crypto::TrustedRoots::system(),
            dir.path(),
        )
        .await
        .unwrap();
        let signer = NoteSigner::from_seed("test/echo-audit", &[7; 32]).unwrap();
        replicas.push(AuditService::new(store, signer, clock.clone()));
    }
    let every = Duration::from_secs(30);
    let mut n = 0;
    for _interval in 0..5 {
        for _tick in 0..3 {
            let event = stored_event(n, 1_800_000_000_000 + n as i64);
            replicas[n % 2].store().append(&[event]).await.unwrap();
            n += 1;
            let (a, b) = tokio::join!(
                replicas[0].scheduled_checkpoint(every),
                replicas[1].scheduled_checkpoint(every)
            );
            a.unwrap();
            b.unwrap();
            clock.advance(9);
        }
        clock.advance(3);
    }
    let signed = replicas[1].signed_checkpoints().await.unwrap();
    let intervals: BTreeSet<i64> = signed.iter().map(|c| c.time / 30).collect();
    assert_eq!(signed.len(), 5, "{signed:?}");
    assert_eq!(intervals.len(), 5, "one in each interval: {signed:?}");

    replicas[0]
        .store()
        .append(&[stored_event(n, 1_800_000_000_000 + n as i64)])
        .await
        .unwrap();
    replicas[0].checkpoint().await.unwrap();
    let signed = replicas[1].signed_checkpoints().await.unwrap();
    assert_eq!(signed.len(), 6);
    assert_eq!(signed.last().unwrap().size, n as i64 + 1);
    db.drop_db().await;
}
