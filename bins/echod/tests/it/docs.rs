//! The document pipeline inside `echod up`, through the gateway's API:
//! upload, indexing by the worker, questions, isolation between users; and
//! a worker killed (SIGKILL) in the middle of a job, on SQLite and on NATS.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use echo_testkit::files;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use super::{Hop, Server, echod, run_with_stdin, start_up, up_on_free_ports};

/// Adds user `name` with password `<name>'s long password`.
pub(crate) fn add_user(dir: &Path, name: &str) {
    let mut add = echod(dir);
    add.args(["user", "add", name, "--password-stdin"]);
    let out = run_with_stdin(add, &format!("{name}'s long password\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user signed in to the gateway of `server`, calling its `/api/...`
/// with the session cookie and the CSRF header.
pub(crate) struct User {
    pub(crate) hop: Hop,
    pub(crate) gateway: String,
}

impl User {
    pub(crate) async fn sign_in(server: &Server, name: &str) -> Self {
        Self::sign_in_with(server, name, Hop::default()).await
    }

    /// Signs in with `hop` (a client of its own, e.g. trusting a CA).
    pub(crate) async fn sign_in_with(server: &Server, name: &str, mut hop: Hop) -> Self {
        let gateway = server.up.clone().expect("up line");
        let (status, _) = hop
            .sign_in_through_gateway(server, &gateway, name, &format!("{name}'s long password"))
            .await;
        assert_eq!(status, 303, "signed in");
        Self { hop, gateway }
    }

    /// `method path` with an optional JSON body: (status, JSON answer).
    pub(super) async fn api(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .hop
            .http
            .request(method, format!("{}{path}", self.gateway))
            .header("x-echo-csrf", "1");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (status, _, text) = self.hop.send(request).await;
        (
            status.as_u16(),
            serde_json::from_str(&text).unwrap_or(Value::Null),
        )
    }

    /// `GET path`: (status, the body as text).
    pub(super) async fn download(&mut self, path: &str) -> (u16, String) {
        let request = self
            .hop
            .http
            .get(format!("{}{path}", self.gateway))
            .header("x-echo-csrf", "1");
        let (status, _, body) = self.hop.send(request).await;
        (status.as_u16(), body)
    }

    /// The cookies the gateway set.
    pub(super) fn cookies(&self) -> &std::collections::HashMap<String, String> {
        &self.hop.cookies
    }

    /// Uploads `files` (name, bytes) in one multipart request; the created
    /// documents' ids, in order.
    pub(super) async fn upload(&mut self, uploads: &[(&str, Vec<u8>)]) -> Vec<String> {
        let boundary = "echo-test-boundary-7f3a";
        let mut body = Vec::new();
        for (name, bytes) in uploads {
            body.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; \
                     filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        let request = self
            .hop
            .http
            .post(format!("{}/api/documents", self.gateway))
            .header("x-echo-csrf", "1")
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        let (status, _, text) = self.hop.send(request).await;
        assert_eq!(status, 201, "{text}");
        let created: Value = serde_json::from_str(&text).unwrap();
        let documents = created["documents"].as_array().unwrap();
        assert_eq!(documents.len(), uploads.len(), "{created}");
        documents
            .iter()
            .map(|d| {
                // The answer shows the job's live state: a worker may have
                // taken it (or even finished it) before the answer is made.
                assert!(
                    matches!(d["status"].as_str(), Some("queued" | "processing" | "done")),
                    "{d}"
                );
                d["id"].as_str().unwrap().to_owned()
            })
            .collect()
    }

    /// The document's view once its status is `done` or `failed`.
    pub(crate) async fn wait_for(&mut self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, view) = self
                .api(reqwest::Method::GET, &format!("/api/documents/{id}"), None)
                .await;
            assert_eq!(status, 200, "{view}");
            if view["status"] == "done" || view["status"] == "failed" {
                return view;
            }
            assert!(Instant::now() < deadline, "still {view} after {within:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub(super) async fn ask(&mut self, question: &str) -> Value {
        let (status, answer) = self
            .api(
                reqwest::Method::POST,
                "/api/query",
                Some(json!({ "question": question })),
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// The citations of `answer` from document `id`.
fn citations_of<'a>(answer: &'a Value, id: &str) -> Vec<&'a Value> {
    answer["citations"]
        .as_array()
        .expect("citations")
        .iter()
        .filter(|c| c["document_id"] == id)
        .collect()
}

#[tokio::test]
async fn uploads_are_indexed_and_answer_their_owner_only() {
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "alice");
    add_user(dir.path(), "bob");
    let server = start_up(up_on_free_ports(dir.path()));
    let mut alice = User::sign_in(&server, "alice").await;

    let pdf = files::pdf(&["The zephyr turbine delivers nine megawatts at dawn."]);
    let corrupt = pdf[..pdf.len() / 2].to_vec();
    let ids = alice
        .upload(&[
            (
                "notes.txt",
                b"Quarterly census: the valley keeps forty two alpacas.".to_vec(),
            ),
            ("turbine.pdf", pdf),
            ("broken.pdf", corrupt),
        ])
        .await;
    let (txt, pdf, broken) = (&ids[0], &ids[1], &ids[2]);

    for id in [txt, pdf] {
        let view = alice.wait_for(id, Duration::from_secs(60)).await;
        assert_eq!(view["status"], "done", "{view}");
        assert_eq!(view["progress"], 100, "{view}");
        assert_eq!(view["error"], Value::Null, "{view}");
    }
    let failed = alice.wait_for(broken, Duration::from_secs(60)).await;
    assert_eq!(failed["status"], "failed", "{failed}");
    let error = failed["error"].as_str().expect("an error in words");
    assert!(
        !error.is_empty() && !error.contains("answered"),
        "the parser's own message, not a status code: {error}"
    );

    let answer = alice.ask("How much does the zephyr turbine deliver?").await;
    let cited = citations_of(&answer, pdf);
    assert!(
        cited
            .iter()
            .any(|c| c["snippet"].as_str().unwrap().contains("zephyr turbine")),
        "{answer}"
    );
    assert_eq!(cited[0]["name"], "turbine.pdf");
    let (status, listed) = alice
        .api(reqwest::Method::GET, "/api/documents", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["documents"].as_array().unwrap().len(), 3, "{listed}");

    let mut bob = User::sign_in(&server, "bob").await;
    for path in [
        format!("/api/documents/{pdf}"),
        format!("/api/documents/{pdf}/content"),
    ] {
        let (status, body) = bob.api(reqwest::Method::GET, &path, None).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = bob
        .api(
            reqwest::Method::DELETE,
            &format!("/api/documents/{pdf}"),
            None,
        )
        .await;
    assert_eq!(status, 404, "bob cannot delete alice's document");
    let (_, listed) = bob.api(reqwest::Method::GET, "/api/documents", None).await;
    assert_eq!(listed["documents"], json!([]), "{listed}");
    let answer = bob.ask("How much does the zephyr turbine deliver?").await;
    assert_eq!(
        answer["citations"],
        json!([]),
        "nothing of alice's: {answer}"
    );
    assert!(!answer.to_string().contains("megawatts"), "{answer}");

    let (status, _) = alice
        .api(
            reqwest::Method::DELETE,
            &format!("/api/documents/{pdf}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let answer = alice.ask("How much does the zephyr turbine deliver?").await;
    assert!(citations_of(&answer, pdf).is_empty(), "deleted: {answer}");
    assert_private(dir.path());
}

/// Everything under the data directory (databases and their WAL files,
/// keys, secrets, spools, blobs, the index) is the server's alone: files
/// 0600, directories 0700, whatever the umask echod was started with
/// (usually 022).
fn assert_private(dir: &Path) {
    let mut seen = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            pending.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        if path != dir {
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
            seen += 1;
        }
    }
    assert!(seen > 20, "the walk saw the data directory: {seen}");
}

/// A TCP proxy to `upstream` that holds its first connection (never
/// forwarding it) until released, then passes every later one through.
struct HoldingProxy {
    addr: String,
    /// Fires once the first connection has sent its request.
    held: oneshot::Receiver<()>,
    /// Closes the held connection.
    release: oneshot::Sender<()>,
}

impl HoldingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (held_tx, held) = oneshot::channel();
        let (release, released) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let (mut first, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 512];
            let _ = first.read(&mut head).await;
            let _ = held_tx.send(());
            let _ = released.await;
            drop(first);
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            addr,
            held,
            release,
        }
    }
}

/// An `echod serve worker` process, killed on drop.
struct WorkerProcess(Child);

impl WorkerProcess {
    fn start(dir: &Path, server: &Server, parser: &str, queue_env: &[(&str, String)]) -> Self {
        let mut cmd: Command = echod(dir);
        cmd.args([
            "serve",
            "worker",
            "--issuer",
            &format!("http://{}", server.ready[0]),
            "--docs-url",
            &format!("http://{}", server.ready[3]),
            "--parser-url",
            &format!("http://{parser}"),
        ])
        .envs(queue_env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        Self(cmd.spawn().unwrap())
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `echod up --no-worker` (lease 2 s) and a worker process whose parser
/// calls go through a proxy that holds the first one; the worker is
/// SIGKILLed while the parse is in flight, a new one started: the job is
/// taken again once the lease expires and the document is indexed once.
async fn a_worker_killed_mid_job(dir: &Path, queue_env: &[(&str, String)]) {
    add_user(dir, "alice");
    let mut up = up_on_free_ports(dir);
    up.arg("--no-worker")
        .envs(queue_env.iter().map(|(k, v)| (k, v)));
    let server = start_up(up);
    let mut alice = User::sign_in(&server, "alice").await;
    let proxy = HoldingProxy::start(server.ready[4].clone()).await;

    let text = b"The lighthouse keeper logs seventeen ships each foggy evening.".to_vec();
    let id = alice.upload(&[("log.txt", text)]).await.remove(0);
    let mut first = WorkerProcess::start(dir, &server, &proxy.addr, queue_env);
    tokio::time::timeout(Duration::from_secs(60), proxy.held)
        .await
        .expect("the worker calls the parser")
        .unwrap();
    // The progress is written a moment after the fetch (PROGRESS_DELAY).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, view) = alice
            .api(reqwest::Method::GET, &format!("/api/documents/{id}"), None)
            .await;
        assert_eq!(view["status"], "processing", "{view}");
        if view["progress"] == 10 {
            break; // fetched, not parsed yet
        }
        assert_eq!(view["progress"], 0, "{view}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "no progress: {view}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    first.0.kill().unwrap(); // SIGKILL
    first.0.wait().unwrap();
    let _ = proxy.release.send(());
    let _second = WorkerProcess::start(dir, &server, &proxy.addr, queue_env);

    let view = alice.wait_for(&id, Duration::from_secs(60)).await;
    assert_eq!(view["status"], "done", "{view}");
    let answer = alice
        .ask("How many ships does the lighthouse keeper log?")
        .await;
    let cited = citations_of(&answer, &id);
    let positions: HashSet<u64> = cited
        .iter()
        .map(|c| c["position"].as_u64().unwrap())
        .collect();
    assert_eq!(cited.len(), 1, "indexed once: {answer}");
    assert_eq!(
        positions.len(),
        cited.len(),
        "no duplicate chunks: {answer}"
    );
    assert!(
        cited[0]["snippet"]
            .as_str()
            .unwrap()
            .contains("seventeen ships"),
        "{answer}"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_job_leaves_it_to_the_next_worker() {
    let dir = echo_testkit::data_dir();
    let env = [("ECHO_WORKER_LEASE", "2s".to_owned())];
    a_worker_killed_mid_job(dir.path(), &env).await;

    // The job ran twice: the killed attempt and the one that finished.
    let url = format!("sqlite://{}?mode=ro", dir.path().join("queue.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let (attempts, state): (i64, String) = sqlx::query_as("SELECT attempts, state FROM queue_jobs")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((attempts, state.as_str()), (2, "done"));
}

#[tokio::test]
async fn a_worker_killed_mid_job_on_nats_leaves_it_to_the_next_worker() {
    let url = echo_testkit::nats_url();
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let name = format!("echo_test_docs_{}_{started}", std::process::id());
    let lease = Duration::from_secs(2);
    let env = [
        ("ECHO_NATS_URL", url.clone()),
        ("ECHO_QUEUE_NAME", name.clone()),
        ("ECHO_WORKER_LEASE", "2s".to_owned()),
    ];
    let dir = echo_testkit::data_dir();
    a_worker_killed_mid_job(dir.path(), &env).await;
    assert!(
        !dir.path().join("queue.db").exists(),
        "no SQLite queue when NATS is configured"
    );
    let config = echo_queue::QueueConfig {
        nats_lease: lease,
        nats_name: name,
        ..echo_queue::QueueConfig::default()
    };
    echo_queue::NatsQueue::connect(&url, &echo_crypto::TrustedRoots::system(), config)
        .await
        .unwrap()
        .delete()
        .await
        .expect("delete the test's NATS streams");
}

#[tokio::test]
async fn up_registers_the_pipeline_clients_and_updates_an_older_gateway() {
    let dir = echo_testkit::data_dir();
    // The gateway as an `echod up` before the pipeline registered it.
    let mut old = echod(dir.path());
    old.args([
        "client",
        "add",
        "gateway",
        "--secret-stdin",
        "--redirect-uri",
        "http://127.0.0.1:1/callback",
        "--grant",
        "authorization_code",
        "--grant",
        "client_credentials",
        "--audience",
        "gateway",
        "--audience",
        "audit",
    ]);
    assert!(
        run_with_stdin(old, "0123456789abcdef0123456789abcdef\n")
            .status
            .success()
    );
    for _ in 0..2 {
        drop(start_up(up_on_free_ports(dir.path())));
    }
    let list = echod(dir.path()).args(["client", "list"]).output().unwrap();
    let listing = String::from_utf8_lossy(&list.stdout);
    let row = |id: &str| {
        listing
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("no client {id}: {listing}"))
            .to_owned()
    };
    let gateway = row("gateway");
    assert!(
        gateway.contains("gateway,audit,identity,docs") && gateway.contains("token-exchange"),
        "{gateway}"
    );
    let worker = row("worker");
    assert!(
        worker.contains("client_credentials") && worker.contains("parser,docs,audit"),
        "{worker}"
    );
    assert!(row("docs").contains("audit"), "{listing}");
    assert!(row("parser").contains("audit"), "{listing}");
    for secret in [
        "worker-client.secret",
        "docs-client.secret",
        "parser-client.secret",
    ] {
        let mode = std::fs::metadata(dir.path().join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret}");
    }
}

#[tokio::test]
async fn serve_docs_prints_ready_and_serve_worker_needs_its_secret() {
    let dir = echo_testkit::data_dir();
    let mut cmd = echod(dir.path());
    cmd.args(["serve", "docs", "--listen", "127.0.0.1:0"]);
    let server = super::start(cmd, 1);
    let health = reqwest::get(format!("http://{}/healthz", server.addr))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let anonymous = reqwest::get(format!("http://{}/v1/documents", server.addr))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert!(dir.path().join("queue.db").exists() && dir.path().join("docs.db").exists());

    let out = echod(dir.path())
        .args(["serve", "worker"])
        .env_remove("ECHO_WORKER_CLIENT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ECHO_WORKER_CLIENT_SECRET"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 14 §8: once a service's keys are stale and identity hangs
/// (SIGSTOP: it accepts connections and never answers), requests with a
/// valid token are still answered at once from the cached keys; before,
/// each waited for its own 5 s JWKS fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_identity_stalls_no_token_check() {
    let identity_dir = echo_testkit::data_dir();
    let mut cmd = echod(identity_dir.path());
    cmd.args(["serve", "identity", "--listen", "127.0.0.1:0"]);
    let identity = super::start(cmd, 1);
    let mut add = echod(identity_dir.path());
    add.args([
        "client",
        "add",
        "indexer",
        "--secret-stdin",
        "--grant",
        "client_credentials",
        "--audience",
        "docs",
        "--scope",
        "docs.index",
    ]);
    let out = run_with_stdin(add, &format!("{}\n", super::SECRET));
    assert!(out.status.success(), "{out:?}");

    let docs_dir = echo_testkit::data_dir();
    let mut cmd = echod(docs_dir.path());
    cmd.args(["serve", "docs", "--listen", "127.0.0.1:0", "--issuer"])
        .arg(format!("http://{}", identity.addr))
        .args(["--jwks-max-age", "1s"]);
    let docs = super::start(cmd, 1);

    let token: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/token", identity.addr))
        .basic_auth("indexer", Some(super::SECRET))
        .form(&[
            ("grant_type", "client_credentials"),
            ("scope", "docs.index"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().expect("a token").to_owned();
    let http = reqwest::Client::new();
    let content = format!("http://{}/v1/documents/unknown/content", docs.addr);
    let fetch = || http.get(&content).bearer_auth(&token).send();
    assert_eq!(
        fetch().await.unwrap().status(),
        404,
        "the token is accepted"
    );

    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let stop = |signal: &str| {
        let status = std::process::Command::new("kill")
            .args([signal, &identity.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    };
    stop("-STOP");
    let mut slowest = Duration::ZERO;
    for _ in 0..100 {
        let started = Instant::now();
        let status = fetch().await.unwrap().status();
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 404, "the cached keys verify");
    }
    stop("-CONT");
    assert!(
        slowest < Duration::from_secs(1),
        "a request waited {slowest:?} on the stalled identity"
    );
}

/// A chat-completions server that answers "Eleven gulls [1]." to every
/// request and records each request's `Authorization` header; its base URL.
async fn recording_llm() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                let head_end = loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                    if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
                        break end;
                    }
                };
                let head = String::from_utf8_lossy(&request[..head_end]).to_lowercase();
                let header = |name: &str| {
                    head.lines()
                        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                };
                let length: usize = header("content-length").map_or(0, |l| l.parse().unwrap());
                while request.len() < head_end + 4 + length {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    request.extend_from_slice(&buf[..n]);
                }
                // The header as sent (the head was lowered to find it).
                let raw = String::from_utf8_lossy(&request[..head_end]).into_owned();
                let authorization = raw
                    .lines()
                    .find(|l| l.to_lowercase().starts_with("authorization: "))
                    .map(|l| l["authorization: ".len()..].to_owned())
                    .unwrap_or_default();
                record.lock().unwrap().push(authorization);
                let body = json!({
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "model": "m",
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": "Eleven gulls [1]."},
                        "finish_reason": "stop"
                    }]
                })
                .to_string();
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    (url, seen)
}

/// Issue 15: the model's API key can come from the file
/// `ECHO_LLM_API_KEY_FILE` names; it is sent as the bearer token.
#[tokio::test]
async fn the_models_key_comes_from_the_file_its_variable_names() {
    let (llm, authorizations) = recording_llm().await;
    let dir = echo_testkit::data_dir();
    add_user(dir.path(), "carol");
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("llm.key");
    std::fs::write(&key_file, "llm-key-from-a-file\n").unwrap();
    let mut up = up_on_free_ports(dir.path());
    up.args(["--llm-url", &llm])
        .env_remove("ECHO_LLM_API_KEY")
        .env("ECHO_LLM_API_KEY_FILE", &key_file);
    let server = start_up(up);
    let mut carol = User::sign_in(&server, "carol").await;
    let ids = carol
        .upload(&[(
            "gulls.txt",
            b"The lighthouse keeper feeds eleven gulls every morning.".to_vec(),
        )])
        .await;
    let view = carol.wait_for(&ids[0], Duration::from_secs(60)).await;
    assert_eq!(view["status"], "done", "{view}");
    let answer = carol
        .ask("How many gulls does the lighthouse keeper feed?")
        .await;
    assert!(answer.to_string().contains("Eleven gulls"), "{answer}");
    assert_eq!(
        authorizations.lock().unwrap().as_slice(),
        ["Bearer llm-key-from-a-file"]
    );
}
