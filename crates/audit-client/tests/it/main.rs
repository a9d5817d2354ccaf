//! Black-box tests of the audit writer against a real audit service over
//! HTTP on 127.0.0.1: delivery, durability across an outage and a restart,
//! the spool limit, refused events split out of their batches, token
//! refresh, a full queue and the spool directory's lock.

use std::collections::HashSet;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use echo_audit::checkpoint::NoteSigner;
use echo_audit::event::Level;
use echo_audit::http::AuditApp;
use echo_audit::service::AuditService;
use echo_audit::store::AuditStore;
use echo_audit_client::{AuditWriter, POISON_DIR, WriterConfig, WriterMetrics};
use echo_core::audit::{AuditEvent, AuditSink};
use echo_core::{Clock, SystemClock};
use echo_crypto::{Algorithm, JwkSet, SigningKey};
use echo_edge::{ServiceTokens, TokenSource};
use echo_verify::{StaticJwks, Verifier, VerifierOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ISSUER: &str = "http://127.0.0.1:8081";
/// Longest any test waits for something to happen.
const DEADLINE: Duration = Duration::from_secs(30);

/// Stands in for identity: signs the writers' tokens.
struct Issuer {
    key: SigningKey,
}

impl Issuer {
    fn new() -> Self {
        Self {
            key: SigningKey::generate(Algorithm::EdDSA, "k1").unwrap(),
        }
    }

    /// An access token for the audit service, for `service`, valid for
    /// `ttl` seconds (negative: already expired).
    fn token(&self, service: &str, ttl: i64) -> String {
        let now = SystemClock.now();
        let claims = json!({"iss": ISSUER, "aud": "audit", "sub": service, "client_id": service,
            "scope": "audit.write", "iat": now, "exp": now + ttl});
        self.key.sign("at+jwt", &claims).unwrap()
    }
}

/// The audit service on `127.0.0.1`, trusting `issuer`'s key.
struct Audit {
    url: String,
    store: Arc<dyn AuditStore>,
    _dir: echo_testkit::TempDir,
}

impl Audit {
    async fn start(issuer: &Issuer) -> Self {
        Self::start_on(issuer, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(issuer: &Issuer, addr: SocketAddr) -> Self {
        let dir = echo_testkit::data_dir();
        let store = echo_audit::store::open(None, &echo_crypto::TrustedRoots::system(), dir.path())
            .await
            .unwrap();
        let verifier = Verifier::new(
            ISSUER,
            Arc::new(StaticJwks(JwkSet {
                keys: vec![issuer.key.public_jwk()],
            })),
            VerifierOptions::default(),
        );
        let signer = NoteSigner::generate("test/echo-audit").unwrap();
        let app = Arc::new(AuditApp::new(
            AuditService::new(store.clone(), signer, Arc::new(SystemClock)),
            Arc::new(verifier),
            "audit",
        ));
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(echo_audit::http::serve(
            listener,
            app,
            std::future::pending(),
        ));
        Self {
            url,
            store,
            _dir: dir,
        }
    }

    /// The events writers stored (not the audit service's own records of
    /// the tokens it refused).
    async fn count(&self) -> i64 {
        let own = self
            .store
            .query(&echo_audit::store::EventQuery {
                service: Some("audit".into()),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len();
        self.store.head().await.unwrap().size - own as i64
    }

    async fn wait_for_count(&self, n: i64) {
        wait_until(&format!("the store to hold {n} events"), || async {
            self.count().await >= n
        })
        .await;
        assert_eq!(self.count().await, n, "no more than {n} events stored");
    }
}

struct StaticToken(String);

#[async_trait]
impl TokenSource for StaticToken {
    async fn token(&self) -> Result<String, String> {
        Ok(self.0.clone())
    }
}

/// A fixed token, counting how often it is asked for: once per request.
struct CountingToken(String, AtomicUsize);

#[async_trait]
impl TokenSource for CountingToken {
    async fn token(&self) -> Result<String, String> {
        self.1.fetch_add(1, Ordering::SeqCst);
        Ok(self.0.clone())
    }
}

/// The `n` detail of each stored event, in chain order.
fn stored_order(rows: &[echo_audit::chain::ChainedEvent]) -> Vec<usize> {
    rows.iter()
        .map(|r| r.event.context["n"].as_u64().unwrap() as usize)
        .collect()
}

/// Polls `check` until it holds, failing the test after [`DEADLINE`].
async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An address nothing listens on (the audit service is "down"), which the
/// service can bind later.
fn unused_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Test timings: quick flushes and retries, so no test waits long.
fn config(endpoint: &str, spool: &Path) -> WriterConfig {
    let mut config = WriterConfig::new(endpoint, spool);
    config.flush_interval = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(500);
    config.request_timeout = Duration::from_secs(2);
    config
}

/// The batch files in the spool directory (not the poison directory, not
/// the lock file, not the journal).
fn spool_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "ndjson"))
        .filter(|p| {
            !p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("journal-")
        })
        .collect();
    files.sort();
    files
}

/// Every event in these NDJSON files.
fn events_in(files: &[std::path::PathBuf]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect::<Vec<Value>>()
        })
        .collect()
}

fn sample(i: usize) -> AuditEvent {
    let event = if i.is_multiple_of(5) {
        AuditEvent::failure("auth.login.failure")
    } else {
        AuditEvent::success("auth.login.success")
    };
    event
        .actor(format!("user{i}"))
        .origin(Some("127.0.0.1".into()), Some("test".into()))
        .detail("n", i)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_events_reach_the_service() {
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let token = Arc::new(CountingToken(
        issuer.token("svc-a", 300),
        AtomicUsize::new(0),
    ));
    let writer = AuditWriter::start(config(&audit.url, spool.path()), token.clone()).unwrap();
    for i in 0..250 {
        writer.record(sample(i));
    }
    audit.wait_for_count(250).await;
    let requests = token.1.load(Ordering::SeqCst);
    assert!(requests < 25, "batched: {requests} requests for 250 events");

    let rows = audit.store.rows(0, 1000).await.unwrap();
    assert_eq!(
        stored_order(&rows),
        (0..250).collect::<Vec<_>>(),
        "in order"
    );
    let ids: HashSet<&str> = rows.iter().map(|r| r.event.id.as_str()).collect();
    assert_eq!(ids.len(), 250);
    for row in &rows {
        let e = &row.event;
        assert_eq!(e.service, "svc-a", "attributed to the token's subject");
        let n = e.context["n"].as_u64().unwrap() as usize;
        assert_eq!(e.actor.as_deref(), Some(format!("user{n}").as_str()));
        assert_eq!(e.ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(e.user_agent.as_deref(), Some("test"));
        assert_eq!(e.message, e.action);
        let expected = if n.is_multiple_of(5) {
            (Level::Warn, "failure", "auth.login.failure")
        } else {
            (Level::Info, "success", "auth.login.success")
        };
        assert_eq!(
            (e.level, e.outcome.as_deref().unwrap(), e.action.as_str()),
            expected
        );
        assert!((e.time - now_ms()).abs() < 60_000);
    }

    writer.shutdown().await;
    let m = writer.metrics();
    assert_eq!(
        m,
        WriterMetrics {
            recorded: 250,
            sent: 250,
            ..Default::default()
        }
    );
    assert!(spool_files(spool.path()).is_empty());
}

fn now_ms() -> i64 {
    SystemClock.now() * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_what_is_still_queued() {
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&audit.url, spool.path());
    config.flush_interval = Duration::from_secs(3600);
    let writer =
        AuditWriter::start(config, Arc::new(StaticToken(issuer.token("svc-a", 300)))).unwrap();
    for i in 0..555 {
        writer.record(sample(i));
    }
    writer.shutdown().await;
    assert_eq!(
        audit.count().await,
        555,
        "delivered before shutdown returned"
    );
    assert_eq!(writer.metrics().sent, 555);
    assert!(spool_files(spool.path()).is_empty());
    // Calling it again is harmless.
    writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_survive_an_outage_and_a_restart_and_are_stored_once() {
    const N: usize = 10_000;
    let issuer = Issuer::new();
    let token: Arc<dyn TokenSource> = Arc::new(StaticToken(issuer.token("svc-a", 300)));
    let addr = unused_addr();
    let url = format!("http://{addr}");
    let spool = tempfile::tempdir().unwrap();

    // The audit service is down: everything ends up in the spool.
    let first = AuditWriter::start(config(&url, spool.path()), token.clone()).unwrap();
    for i in 0..N {
        first.record(sample(i));
    }
    first.shutdown().await;
    let files = spool_files(spool.path());
    assert!(!files.is_empty());
    let on_disk: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    let spooled = events_in(&files);
    let spooled_ids: HashSet<String> = spooled
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!((spooled.len(), spooled_ids.len()), (N, N));
    assert_eq!(
        first.metrics(),
        WriterMetrics {
            recorded: N as u64,
            spooled: N as u64,
            spool_bytes: on_disk,
            ..Default::default()
        }
    );

    // The process restarts with the service still down...
    let second = AuditWriter::start(config(&url, spool.path()), token).unwrap();
    assert_eq!(second.metrics().spooled, N as u64);
    assert_eq!(second.metrics().spool_bytes, on_disk);
    // ...which then comes back on the same address.
    let audit = Audit::start_on(&issuer, addr).await;
    audit.wait_for_count(N as i64).await;
    wait_until("the spool to drain", || async {
        second.metrics().spooled == 0 && spool_files(spool.path()).is_empty()
    })
    .await;

    let rows = audit.store.rows(0, 2 * N as i64).await.unwrap();
    let stored_ids: HashSet<String> = rows.iter().map(|r| r.event.id.clone()).collect();
    assert_eq!(rows.len(), N);
    assert_eq!(
        stored_ids, spooled_ids,
        "each spooled event stored exactly once"
    );
    assert_eq!(stored_order(&rows), (0..N).collect::<Vec<_>>(), "in order");
    assert_eq!(audit.store.head().await.unwrap().size, N as i64);
    second.shutdown().await;
    let m = second.metrics();
    assert_eq!(
        (m.sent, m.recorded, m.spooled, m.spool_bytes),
        (N as u64, 0, 0, 0)
    );
    assert_eq!((m.dropped, m.poisoned), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_drops_and_counts_instead_of_growing() {
    const LIMIT: u64 = 20 * 1024;
    let issuer = Issuer::new();
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&format!("http://{}", unused_addr()), spool.path());
    config.max_spool_bytes = LIMIT;
    config.batch_size = 10;
    let writer =
        AuditWriter::start(config, Arc::new(StaticToken(issuer.token("svc-a", 300)))).unwrap();
    for i in 0..2000 {
        writer.record(sample(i));
    }
    writer.shutdown().await;
    let m = writer.metrics();
    let on_disk: u64 = spool_files(spool.path())
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(m.dropped > 0, "{m:?}");
    assert!(m.spooled > 0, "{m:?}");
    assert!(m.spool_bytes <= LIMIT && on_disk == m.spool_bytes, "{m:?}");
    assert_eq!(
        m.recorded,
        m.spooled + m.dropped,
        "every event accounted for"
    );
    assert_eq!(
        events_in(&spool_files(spool.path())).len() as u64,
        m.spooled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_is_poisoned_and_the_rest_still_arrives() {
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let writer = AuditWriter::start(
        config(&audit.url, spool.path()),
        Arc::new(StaticToken(issuer.token("svc-a", 300))),
    )
    .unwrap();
    writer.record(AuditEvent::success("Bad Action!"));
    wait_until("the bad batch to be poisoned", || async {
        writer.metrics().poisoned == 1
    })
    .await;
    let poisoned = spool_files(&spool.path().join(POISON_DIR));
    assert_eq!(poisoned.len(), 1);
    assert_eq!(events_in(&poisoned)[0]["action"], "Bad Action!");

    for i in 0..5 {
        writer.record(sample(i));
    }
    audit.wait_for_count(5).await;
    writer.shutdown().await;
    let m = writer.metrics();
    assert_eq!((m.sent, m.poisoned, m.spooled, m.dropped), (5, 1, 0, 0));
    assert!(spool_files(spool.path()).is_empty());
}

/// Records `n` sample events, the `bad`-th with an action the service
/// refuses.
fn record_with_one_bad(writer: &AuditWriter, n: usize, bad: usize) {
    for i in 0..n {
        writer.record(if i == bad {
            AuditEvent::success("Bad Action!").detail("n", i)
        } else {
            sample(i)
        });
    }
}

/// Waits for the writer to settle the batch `record_with_one_bad` made,
/// then checks that the service holds every other event, in order, and
/// that the bad one alone is in the poison directory.
async fn only_the_bad_event_is_poisoned(
    writer: &AuditWriter,
    audit: &Audit,
    spool: &Path,
    n: usize,
    bad: usize,
) {
    wait_until("the batch to be settled", || async {
        writer.metrics().sent == n as u64 - 1
    })
    .await;
    audit.wait_for_count(n as i64 - 1).await;
    let rows = audit.store.rows(0, 2 * n as i64).await.unwrap();
    let good: Vec<usize> = (0..n).filter(|&i| i != bad).collect();
    assert_eq!(stored_order(&rows), good, "the rest of the batch, in order");
    let poisoned = spool_files(&spool.join(POISON_DIR));
    assert_eq!(poisoned.len(), 1, "{poisoned:?}");
    let events = events_in(&poisoned);
    assert_eq!(events.len(), 1, "alone in its poison file");
    assert_eq!(
        (&events[0]["action"], &events[0]["context"]["n"]),
        (&json!("Bad Action!"), &json!(bad))
    );
    assert!(spool_files(spool).is_empty());
    writer.shutdown().await;
    assert_eq!(
        writer.metrics(),
        WriterMetrics {
            recorded: n as u64,
            sent: n as u64 - 1,
            poisoned: 1,
            ..Default::default()
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_refused_event_is_poisoned_alone_and_the_rest_of_its_batch_delivered() {
    const N: usize = 100;
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let token = Arc::new(CountingToken(
        issuer.token("svc-a", 300),
        AtomicUsize::new(0),
    ));
    let mut config = config(&audit.url, spool.path());
    // All N events in one batch, sent when full.
    config.batch_size = N;
    config.flush_interval = Duration::from_secs(3600);
    let writer = AuditWriter::start(config, token.clone()).unwrap();
    record_with_one_bad(&writer, N, 37);
    only_the_bad_event_is_poisoned(&writer, &audit, spool.path(), N, 37).await;
    // The batch, then two halves for each of the ⌈log₂ 100⌉ = 7 halvings.
    let requests = token.1.load(Ordering::SeqCst);
    assert!(requests <= 1 + 2 * 7, "{requests} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_batch_refused_on_resend_is_split_too() {
    const N: usize = 100;
    let issuer = Issuer::new();
    let addr = unused_addr();
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&format!("http://{addr}"), spool.path());
    config.batch_size = N;
    config.flush_interval = Duration::from_secs(3600);
    let writer =
        AuditWriter::start(config, Arc::new(StaticToken(issuer.token("svc-a", 300)))).unwrap();
    // The service is down: the batch is spooled whole.
    record_with_one_bad(&writer, N, N - 1);
    wait_until("the batch to be spooled", || async {
        writer.metrics().spooled == N as u64
    })
    .await;
    assert_eq!(spool_files(spool.path()).len(), 1);
    // It comes back and refuses the spooled batch.
    let audit = Audit::start_on(&issuer, addr).await;
    only_the_bad_event_is_poisoned(&writer, &audit, spool.path(), N, N - 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_on_the_same_spool_is_refused_until_the_first_is_gone() {
    let spool = tempfile::tempdir().unwrap();
    let url = format!("http://{}", unused_addr());
    let token: Arc<dyn TokenSource> = Arc::new(StaticToken("unused".into()));
    let open = || AuditWriter::start(config(&url, spool.path()), token.clone());

    let first = open().unwrap();
    let refused = open().unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ResourceBusy);
    let message = refused.to_string();
    assert!(
        message.contains(&spool.path().display().to_string())
            && message.contains("another audit writer"),
        "{message}"
    );

    first.shutdown().await;
    let second = open().expect("free once the first writer is shut down");
    assert_eq!(second.metrics().spooled, 0, "the lock file is not a batch");

    // Dropping the last handle ends the task, which lets go of the lock as
    // it ends, shortly after.
    drop(second);
    let dropped_at = Instant::now();
    let third = loop {
        match open() {
            Ok(writer) => break writer,
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                assert!(dropped_at.elapsed() < DEADLINE, "never released: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    third.shutdown().await;
}

/// Hands out an expired token first, then good ones.
struct ExpiredFirst {
    calls: AtomicUsize,
    expired: String,
    good: String,
}

#[async_trait]
impl TokenSource for ExpiredFirst {
    async fn token(&self) -> Result<String, String> {
        Ok(match self.calls.fetch_add(1, Ordering::SeqCst) {
            0 => self.expired.clone(),
            _ => self.good.clone(),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_replaced_and_the_batch_retried_at_once() {
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let source = Arc::new(ExpiredFirst {
        calls: AtomicUsize::new(0),
        expired: issuer.token("svc-a", -3600),
        good: issuer.token("svc-a", 300),
    });
    let mut config = config(&audit.url, spool.path());
    // Had the batch gone to the spool instead of being retried at once, it
    // would have been dropped.
    config.max_spool_bytes = 0;
    let writer = AuditWriter::start(config, source.clone()).unwrap();
    for i in 0..20 {
        writer.record(sample(i));
    }
    audit.wait_for_count(20).await;
    writer.shutdown().await;
    assert!(source.calls.load(Ordering::SeqCst) >= 2);
    let m = writer.metrics();
    assert_eq!((m.sent, m.dropped, m.spooled), (20, 0, 0));
}

/// A token endpoint on 127.0.0.1 answering each request with the next of
/// `tokens` (the last one repeated), keeping the request bodies.
async fn token_endpoint(tokens: Vec<String>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then as much body as Content-Length says.
            let body = loop {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "request cut short");
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).into_owned();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            let (name, value) = l.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break text.clone();
                    }
                }
            };
            let index = {
                let mut seen = seen.lock().unwrap();
                seen.push(body);
                seen.len() - 1
            };
            let token = &tokens[index.min(tokens.len() - 1)];
            let answer = json!({"access_token": token, "token_type": "Bearer", "expires_in": 300})
                .to_string();
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
            socket.write_all(response.as_bytes()).await.unwrap();
            let _ = socket.shutdown().await;
        }
    });
    (url, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_are_cached_and_refreshed_after_a_401() {
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let (token_url, requests) = token_endpoint(vec![
        issuer.token("svc-a", -3600),
        issuer.token("svc-a", 300),
    ])
    .await;
    let tokens = Arc::new(ServiceTokens::new(
        &token_url,
        "svc-a",
        "svc-a-secret",
        &Default::default(),
    ));
    let credentials = tokens.source("audit", "audit.write");
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&audit.url, spool.path());
    config.max_spool_bytes = 0;
    config.batch_size = 10;
    let writer = AuditWriter::start(config, credentials.clone()).unwrap();
    for i in 0..100 {
        writer.record(sample(i));
    }
    audit.wait_for_count(100).await;
    writer.shutdown().await;
    assert_eq!(writer.metrics().dropped, 0);
    // The cached token is served again without asking the endpoint.
    let cached = credentials.token().await.unwrap();
    assert_eq!(credentials.token().await.unwrap(), cached);
    let requests = requests.lock().unwrap().clone();
    assert_eq!(
        requests.len(),
        2,
        "one token, refused; one fresh token, cached for every later batch"
    );
    // RFC 6749 §2.3.1: the client authenticates with HTTP Basic.
    assert!(requests[0].starts_with("POST /token "), "{}", requests[0]);
    let basic = format!("Basic {}", STANDARD.encode("svc-a:svc-a-secret"));
    for field in [
        basic.as_str(),
        "grant_type=client_credentials",
        "audience=audit",
        "scope=audit.write",
    ] {
        assert!(requests[0].contains(field), "{field} in {}", requests[0]);
    }
    assert!(!requests[0].contains("svc-a-secret"), "never in the clear");
}

/// Issue 14 §2: a burst larger than the queue (10,000 by default) used to
/// lose every event past it. Now the queue's overflow goes to disk and
/// reaches the service, in order, when it is back.
#[tokio::test]
async fn a_full_queue_spools_instead_of_dropping() {
    const N: usize = 1000;
    let issuer = Issuer::new();
    let addr = unused_addr();
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&format!("http://{addr}"), spool.path());
    config.queue_capacity = 10;
    config.batch_size = 1000;
    config.flush_interval = Duration::from_secs(3600);
    let token = Arc::new(StaticToken(issuer.token("svc-a", 300)));
    let writer = AuditWriter::start(config.clone(), token.clone()).unwrap();
    // On this single-threaded runtime the writer's task cannot run until the
    // test yields: all but the queue's 10 events find it full.
    let start = Instant::now();
    for i in 0..N {
        writer.record(sample(i));
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "record never waits"
    );
    let m = writer.metrics();
    assert_eq!((m.recorded, m.dropped), (N as u64, 0));

    writer.shutdown().await;
    let m = writer.metrics();
    assert_eq!((m.recorded, m.dropped, m.spooled), (N as u64, 0, N as u64));
    let spooled = events_in(&spool_files(spool.path()));
    let order: Vec<u64> = spooled
        .iter()
        .map(|e| e["context"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(order, (0..N as u64).collect::<Vec<_>>(), "in order");
    // After shutdown, events are still lost loudly.
    writer.record(sample(0));
    assert_eq!(writer.metrics().dropped, 1);
    drop(writer);

    // The service comes back; a new writer on the spool delivers them all.
    let audit = Audit::start_on(&issuer, addr).await;
    let again = wait_for_lock(|| AuditWriter::start(config.clone(), token.clone())).await;
    audit.wait_for_count(N as i64).await;
    let rows = audit.store.rows(0, 2 * N as i64).await.unwrap();
    assert_eq!(stored_order(&rows), (0..N).collect::<Vec<_>>());
    again.shutdown().await;
}

/// A process killed outright (SIGKILL: its writer never shut down) loses
/// none of the events `record` took, though some were only in memory, in a
/// batch waiting for company: the next writer on the spool directory
/// resends its journal, and the service keeps each event once.
#[test]
fn events_recorded_before_the_process_dies_are_delivered_after_its_restart() {
    const N: usize = 550;
    let issuer = Issuer::new();
    let token: Arc<dyn TokenSource> = Arc::new(StaticToken(issuer.token("svc-a", 300)));
    let spool = tempfile::tempdir().unwrap();
    let service = tokio::runtime::Runtime::new().unwrap();
    let audit = service.block_on(Audit::start(&issuer));
    let mut config = config(&audit.url, spool.path());
    config.flush_interval = Duration::from_secs(3600);

    // The process that dies: a runtime of its own, torn down without the
    // writer's shutdown, its task dropped where it stands.
    let dying = tokio::runtime::Runtime::new().unwrap();
    let writer = dying
        .block_on(async { AuditWriter::start(config.clone(), token.clone()) })
        .unwrap();
    for i in 0..N {
        writer.record(sample(i));
    }
    // Five full batches delivered; the last 50 wait in memory.
    service.block_on(wait_until("five batches delivered", || async {
        audit.count().await == 500
    }));
    // Nothing of the writer runs again: no shutdown, and dropping the
    // last handle (which stops its task) comes after the task is gone.
    dying.shutdown_background();
    std::mem::forget(writer);

    let restarted = tokio::runtime::Runtime::new().unwrap();
    let again = restarted.block_on(wait_for_lock(|| {
        AuditWriter::start(config.clone(), token.clone())
    }));
    service.block_on(audit.wait_for_count(N as i64));
    restarted.block_on(again.shutdown());
    let rows = service.block_on(audit.store.rows(0, 2 * N as i64)).unwrap();
    let mut stored = stored_order(&rows);
    stored.sort_unstable();
    assert_eq!(stored, (0..N).collect::<Vec<_>>(), "each event once");
}

/// Retries `start` while an earlier writer still holds the spool's lock
/// (its task ends shortly after its last handle is dropped).
async fn wait_for_lock(
    mut start: impl FnMut() -> io::Result<Arc<AuditWriter>>,
) -> Arc<AuditWriter> {
    let begun = Instant::now();
    loop {
        match start() {
            Ok(writer) => return writer,
            Err(e) if e.kind() == io::ErrorKind::ResourceBusy => {
                assert!(begun.elapsed() < DEADLINE, "never released: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// The overflow is bounded by the spool's limit like the rest: past it,
/// events are lost, counted and never block the caller.
#[tokio::test]
async fn a_full_queue_and_a_full_spool_drop_and_count_without_blocking() {
    const LIMIT: u64 = 8 * 1024;
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&format!("http://{}", unused_addr()), spool.path());
    config.queue_capacity = 10;
    config.batch_size = 1000;
    config.max_spool_bytes = LIMIT;
    config.flush_interval = Duration::from_secs(3600);
    let writer = AuditWriter::start(config, Arc::new(StaticToken("unused".into()))).unwrap();
    for i in 0..1000 {
        writer.record(sample(i));
    }
    let m = writer.metrics();
    assert!(m.dropped > 900, "{m:?}");
    writer.shutdown().await;
    let m = writer.metrics();
    assert_eq!(m.recorded, m.sent + m.spooled + m.dropped + m.poisoned);
    let on_disk: u64 = spool_files(spool.path())
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(on_disk <= LIMIT, "{on_disk} bytes on disk");
}

/// Issue 14 §2: events the service refuses (here: a message over its
/// 64 KiB limit) used to be poisoned without counting against the spool's
/// limit, so a writer of large bad events could fill the disk. Now poison
/// files count; past the limit the event is lost, counted; clearing the
/// poison directory makes room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poisoned_events_count_against_the_spool_limit() {
    const LIMIT: u64 = 200 * 1024;
    let issuer = Issuer::new();
    let audit = Audit::start(&issuer).await;
    let spool = tempfile::tempdir().unwrap();
    let mut config = config(&audit.url, spool.path());
    config.max_spool_bytes = LIMIT;
    let writer =
        AuditWriter::start(config, Arc::new(StaticToken(issuer.token("svc-a", 300)))).unwrap();
    let huge = |i: usize| sample(i).detail("blob", "x".repeat(70 * 1024));
    for i in 0..5 {
        writer.record(huge(i));
    }
    wait_until("the bad events to be settled", || async {
        let m = writer.metrics();
        m.poisoned + m.dropped == 5
    })
    .await;
    let poison_dir = spool.path().join(POISON_DIR);
    let poisoned: u64 = spool_files(&poison_dir)
        .iter()
        .map(|f| f.metadata().unwrap().len())
        .sum();
    let m = writer.metrics();
    assert_eq!((m.poisoned, m.dropped), (2, 3), "{m:?}");
    assert!(poisoned <= LIMIT, "{poisoned} bytes poisoned");

    // An operator clears the poison directory: there is room again.
    for file in spool_files(&poison_dir) {
        std::fs::remove_file(file).unwrap();
    }
    writer.record(huge(5));
    wait_until("the next bad event to be poisoned", || async {
        writer.metrics().poisoned == 3
    })
    .await;
    // Good events still arrive.
    writer.record(sample(6));
    audit.wait_for_count(1).await;
    writer.shutdown().await;
}
